//! The publisher of a running pipeline: a turn after which no task committed
//! reads no table log, and a commit after it is published at the next turn.

use ingest::simulate::{ScenarioConfig, SimLine, Simulator};
use processor::config::ProcessorConfig;
use processor::delta::PublishedUpTo;
use processor::lake::Lake;
use processor::pipeline::Pipeline;

fn feed(pipeline: &mut Pipeline, lines: &[SimLine], range: std::ops::Range<usize>) {
    for offset in range {
        crate::common::take(pipeline.processor(), offset, &lines[offset]);
    }
    pipeline.commit().expect("commits");
    pipeline.sync().expect("durable");
}

#[test]
fn an_idle_turn_reads_no_table_and_the_next_commit_is_published() {
    let dir = tempfile::tempdir().expect("temp dir");
    let location = dir.path().to_str().expect("UTF-8");
    let config = ScenarioConfig { assets: 40, days: 3, seed: 3, ..ScenarioConfig::default() };
    let mut simulator = Simulator::new(config, false);
    let lines: Vec<SimLine> = std::iter::from_fn(|| simulator.next_line()).collect();
    let half = lines.len() / 2;

    let mut pipeline =
        Pipeline::open(Lake::open(location).expect("lake"), ProcessorConfig::default(), 2).expect("opens");
    feed(&mut pipeline, &lines, 0..half);

    let lake = Lake::open(location).expect("lake");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut seen = PublishedUpTo::default();
    let first = runtime.block_on(lake.publish_after(&mut seen)).expect("publishes");
    assert!(first.epochs > 0 && first.files > 0, "{first:?}");

    // With the assets table's log moved away, a publication would create
    // the table again; a turn with no new commit does not look at it.
    let log = dir.path().join("assets").join("_delta_log");
    let aside = dir.path().join("assets-log-aside");
    std::fs::rename(&log, &aside).expect("moves the log");
    let idle = runtime.block_on(lake.publish_after(&mut seen)).expect("an idle turn");
    assert_eq!(idle, Default::default());
    assert!(!log.exists(), "an idle turn read or wrote the assets table");
    std::fs::remove_dir_all(&log).ok();
    std::fs::rename(&aside, &log).expect("puts the log back");

    feed(&mut pipeline, &lines, half..lines.len());
    let next = runtime.block_on(lake.publish_after(&mut seen)).expect("publishes");
    assert!(next.epochs > 0 && next.files > 0, "the commit after an idle turn is published: {next:?}");
    let again = runtime.block_on(lake.publish_after(&mut seen)).expect("an idle turn");
    assert_eq!(again, Default::default());
}

#[test]
fn a_reader_replays_at_most_a_checkpoint_interval_of_commits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let location = dir.path().to_str().expect("UTF-8");
    let config = ScenarioConfig { assets: 30, days: 3, seed: 4, ..ScenarioConfig::default() };
    let mut simulator = Simulator::new(config, false);
    let lines: Vec<SimLine> = std::iter::from_fn(|| simulator.next_line()).collect();
    let mut pipeline =
        Pipeline::open(Lake::open(location).expect("lake"), ProcessorConfig::default(), 1).expect("opens");
    let rounds = 3 * processor::delta::CHECKPOINT_INTERVAL as usize + 2;
    let step = lines.len() / rounds;
    for round in 0..rounds {
        feed(&mut pipeline, &lines, round * step..(round + 1) * step);
        pipeline.publish().expect("publishes");
    }
    let log = dir.path().join("exposures").join("_delta_log");
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(log.join("_last_checkpoint")).expect("a checkpoint")).expect("JSON");
    let at = checkpoint["version"].as_u64().expect("its version");
    let after = std::fs::read_dir(&log)
        .expect("the log")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".json")?.parse::<u64>().ok())
        .filter(|version| *version > at)
        .count();
    assert!(at >= u64::from(processor::delta::CHECKPOINT_INTERVAL), "checkpoint at {at}");
    assert!(after < processor::delta::CHECKPOINT_INTERVAL as usize, "{after} commits after the checkpoint");
}
