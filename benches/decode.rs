//! Decode + validate throughput of typical events (the ingest hot path).
//!
//! The events come from the simulator's default mix (posture, decisions,
//! flows, findings, deployments, …), so the figure is per typical event.
//! Run: `cargo bench --bench decode`; criterion reports elements per second
//! on one core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::simulate::{ScenarioConfig, Simulator};

fn typical_lines() -> Vec<Vec<u8>> {
    let config = ScenarioConfig { assets: 300, days: 3, seed: 42, ..ScenarioConfig::default() };
    let mut simulator = Simulator::new(config, false);
    std::iter::from_fn(|| simulator.next_line()).map(|line| line.payload).take(20_000).collect()
}

fn decode(c: &mut Criterion) {
    let lines = typical_lines();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function(format!("validate {} typical events ({} bytes avg)", lines.len(), bytes / lines.len()), |b| {
        b.iter(|| lines.iter().filter(|line| schemas::decode(line).is_ok()).count())
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
