//! A processor restored from its snapshots, fed the same input again from the
//! start, ends exactly like one that never stopped: no row lost, none twice.

use ingest::simulate::{ScenarioConfig, SimLine, Simulator};
use processor::Processor;
use processor::config::ProcessorConfig;
use processor::rows::EpochRows;
use processor::task::TaskId;

const EPOCH: usize = 3_000;

fn feed(processor: &mut Processor, lines: &[SimLine], until: usize, out: &mut Vec<String>) {
    for (offset, line) in lines.iter().enumerate().take(until) {
        crate::common::take(processor, offset, line);
        if (offset + 1) % EPOCH == 0 {
            collect(processor, out);
        }
    }
}

fn collect(processor: &mut Processor, out: &mut Vec<String>) {
    for (id, epoch) in processor.flush() {
        let EpochRows {
            assets,
            cves,
            patches,
            exposures,
            patch_outcomes,
            canary_rollups,
            segment_drift,
            alerts,
            dead_letters,
            ..
        } = epoch;
        out.extend(assets.iter().map(|r| format!("{id} {r:?}")));
        out.extend(cves.iter().map(|r| format!("{id} {r:?}")));
        out.extend(patches.iter().map(|r| format!("{id} {r:?}")));
        out.extend(exposures.iter().map(|r| format!("{id} {r:?}")));
        out.extend(patch_outcomes.iter().map(|r| format!("{id} {r:?}")));
        out.extend(canary_rollups.iter().map(|r| format!("{id} {r:?}")));
        out.extend(segment_drift.iter().map(|r| format!("{id} {r:?}")));
        out.extend(alerts.iter().map(|r| format!("{id} {r:?}")));
        out.extend(dead_letters.iter().map(|r| format!("{id} {r:?}")));
    }
}

#[test]
fn restoring_snapshots_loses_and_repeats_nothing() {
    let config = ScenarioConfig {
        assets: 120,
        days: 6,
        seed: 8,
        late_ratio: 0.03,
        duplicate_ratio: 0.02,
        malformed_ratio: 0.01,
        ..ScenarioConfig::default()
    };
    let mut simulator = Simulator::new(config, false);
    let lines: Vec<SimLine> = std::iter::from_fn(|| simulator.next_line()).collect();
    let partitions = 2;

    let mut expected = Vec::new();
    let mut whole = Processor::new(ProcessorConfig::default(), partitions);
    feed(&mut whole, &lines, lines.len(), &mut expected);
    whole.finish_input();
    collect(&mut whole, &mut expected);

    for cut_epoch in [1, lines.len() / EPOCH / 2, lines.len() / EPOCH] {
        let cut = cut_epoch * EPOCH;
        let mut actual = Vec::new();
        let mut first = Processor::new(ProcessorConfig::default(), partitions);
        feed(&mut first, &lines, cut, &mut actual);
        let ids: Vec<TaskId> = first.tasks().map(|task| task.id()).collect();
        let snapshots: Vec<(TaskId, Vec<u8>)> =
            ids.iter().map(|&id| (id, first.snapshot(id).expect("a snapshot"))).collect();
        drop(first);

        let mut resumed = Processor::new(ProcessorConfig::default(), partitions);
        for (id, bytes) in &snapshots {
            resumed.restore(*id, bytes, "test").expect("restores");
        }
        feed(&mut resumed, &lines, lines.len(), &mut actual);
        resumed.finish_input();
        collect(&mut resumed, &mut actual);
        assert_eq!(actual.len(), expected.len(), "cut at line {cut}: rows emitted");
        for (ours, theirs) in actual.iter().zip(&expected) {
            assert_eq!(ours, theirs, "cut at line {cut}");
        }
    }
}

#[test]
fn a_snapshot_of_the_wrong_task_or_format_is_refused() {
    let mut processor = Processor::new(ProcessorConfig::default(), 1);
    let assets = processor.tasks().map(|t| t.id()).find(|id| id.topic == schemas::InputTopic::Assets).expect("task");
    let network = processor.tasks().map(|t| t.id()).find(|id| id.topic == schemas::InputTopic::Network).expect("task");
    let bytes = processor.snapshot(assets).expect("a snapshot");
    let error = processor.restore(network, &bytes, "x.state").expect_err("wrong task");
    assert!(error.to_string().contains("expected network-0"), "{error}");
    let error = processor.restore(assets, b"garbage", "x.state").expect_err("garbage");
    assert!(error.to_string().contains("x.state"), "{error}");
}
