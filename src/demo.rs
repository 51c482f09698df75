//! `patchtrail demo`, preview edition: until the Kafka pipeline and query
//! server exist, it generates the default fleet in memory, runs every event
//! through the real event contract, and prints the figures a security lead
//! would ask for, taken from the simulator's own expected results (and says so).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use ingest::simulate::truth::Truth;
use ingest::simulate::{ScenarioConfig, Simulator};

use crate::cli::DemoArgs;

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let fleet = &args.fleet;
    let config =
        ScenarioConfig { assets: fleet.assets, days: fleet.days, seed: fleet.seed, ..ScenarioConfig::default() };
    let problems = config.problems();
    if !problems.is_empty() {
        for problem in problems {
            eprintln!("error: {problem}");
        }
        return Ok(ExitCode::from(2));
    }
    println!("patchtrail demo (preview): {} assets over {} days, seed {}", fleet.assets, fleet.days, fleet.seed);
    let started = Instant::now();
    let mut simulator = Simulator::new(config, true);
    let (mut valid, mut invalid) = (0u64, 0u64);
    while let Some(line) = simulator.next_line() {
        match schemas::decode(&line.payload) {
            Ok(_) => valid += 1,
            Err(_) => invalid += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "  generated and validated {valid} events ({invalid} invalid) in {elapsed:.1} s, {:.0} events/s",
        (valid + invalid) as f64 / elapsed.max(1e-9)
    );
    let Some(truth) = simulator.truth() else { anyhow::bail!("the simulator kept no expected results") };
    println!();
    println!("Expected results of this scenario, from the simulator's own generation.");
    println!("(`patchtrail replay` computes the same figures with the processor into a Parquet lake; the");
    println!(" embedded broker and query server that will run it all here are the next milestones.)");
    print_summary(&truth);
    println!();
    println!("Try: patchtrail simulate --assets 2000 --days 30 --seed 7 --out /tmp/e.jsonl --truth /tmp/t.json");
    println!("     patchtrail replay --input /tmp/e.jsonl --lake /tmp/lake");
    println!("     patchtrail sql --lake /tmp/lake \"SELECT * FROM priorities ORDER BY rank LIMIT 10\"");
    Ok(ExitCode::SUCCESS)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn print_summary(truth: &Truth) {
    let mut ttp_days: Vec<f64> =
        truth.patch_outcomes.iter().filter_map(|row| row.time_to_patch_s).map(|s| s / 86_400.0).collect();
    ttp_days.sort_by(f64::total_cmp);
    println!(
        "  time to patch    median {:.1} d, p90 {:.1} d over {} patched (asset, patch) pairs",
        percentile(&ttp_days, 0.5),
        percentile(&ttp_days, 0.9),
        ttp_days.len()
    );
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &truth.patch_outcomes {
        *outcomes.entry(row.outcome).or_default() += 1;
    }
    println!("  patch outcomes   {}", join(&outcomes));
    println!("  SLA compliance   (exposures remediated or still open within their deadline, suppressed excluded)");
    for severity in ["critical", "high", "medium", "low"] {
        let rows: Vec<_> =
            truth.exposures.iter().filter(|r| r.severity == Some(severity) && r.status != "suppressed").collect();
        let breached = rows.iter().filter(|r| r.breached).count();
        let open = rows.iter().filter(|r| r.status == "open").count();
        let compliance = 100.0 * (rows.len() - breached) as f64 / rows.len().max(1) as f64;
        println!(
            "    {severity:<9} {compliance:>6.1} %  of {:>6} exposures; {open:>5} open, {breached:>4} breached",
            rows.len()
        );
    }
    let mut gates: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &truth.canary_rollups {
        *gates.entry(row.gate).or_default() += 1;
    }
    println!("  canary gates     {}", join(&gates));
    for row in truth.canary_rollups.iter().filter(|r| r.gate != "promote").take(5) {
        println!(
            "    {:<8} {:<22} {:<8} {} of {} stages failed ({:.0} %)",
            row.rollout_id,
            row.patch_id,
            row.gate,
            row.failed,
            row.stages,
            100.0 * row.failure_rate
        );
    }
    let mut pairs: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for row in &truth.segment_drift {
        let cell = pairs.entry((&row.src_segment, &row.dst_segment)).or_default();
        cell.0 += row.connections;
        cell.1 += row.drift_connections;
    }
    let mut worst: Vec<_> = pairs.into_iter().filter(|(_, (_, drift))| *drift > 0).collect();
    worst.sort_by(|a, b| (b.1.1 * a.1.0).cmp(&(a.1.1 * b.1.0)));
    println!("  segmentation     worst drift (connections not enforced as intended):");
    for ((src, dst), (connections, drift)) in worst.into_iter().take(5) {
        println!(
            "    {src:>12} → {dst:<14} {:>5.1} % of {connections} connections",
            100.0 * drift as f64 / connections as f64
        );
    }
}

fn join(counts: &BTreeMap<&str, usize>) -> String {
    counts.iter().map(|(name, n)| format!("{name} {n}")).collect::<Vec<_>>().join(" · ")
}
