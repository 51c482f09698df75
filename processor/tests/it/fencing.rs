//! Two writers that both believe they own a task (a consumer group
//! mid-rebalance): the one that claimed it last wins, the other is fenced at
//! its next commit and leaves no file behind.

use std::collections::BTreeSet;

use ingest::simulate::{ScenarioConfig, SimLine, Simulator};
use processor::config::ProcessorConfig;
use processor::lake::Lake;
use processor::pipeline::Pipeline;
use schemas::InputTopic;

fn lines() -> Vec<SimLine> {
    let config = ScenarioConfig { assets: 60, days: 4, seed: 5, ..ScenarioConfig::default() };
    let mut simulator = Simulator::new(config, false);
    std::iter::from_fn(|| simulator.next_line()).filter(|line| line.topic == InputTopic::Network).collect()
}

/// Applies `lines[range]` to the task of `pipeline` it routes to, if owned.
fn feed(pipeline: &mut Pipeline, lines: &[SimLine], range: std::ops::Range<usize>) {
    for offset in range {
        let line = &lines[offset];
        let id = pipeline.processor_ref().route_topic(line.topic, &line.key);
        if pipeline.owns(id) {
            crate::common::take(pipeline.processor(), offset, line);
        }
    }
}

/// Every Parquet file under the lake, relative to it.
/// The tasks' Parquet files under `root` (in date partitions: the current
/// rows the publisher keeps are not a task's).
fn parquet_files(root: &std::path::Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("lists") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet")
                && path
                    .parent()
                    .and_then(|dir| dir.file_name())
                    .is_some_and(|dir| dir.to_string_lossy().starts_with("date="))
            {
                found.insert(path.strip_prefix(root).expect("inside").to_string_lossy().into_owned());
            }
        }
    }
    found
}

#[test]
fn the_last_claimant_owns_the_task_and_the_other_is_fenced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let location = dir.path().to_str().expect("UTF-8");
    let lines = lines();
    assert!(lines.len() > 1_000, "{} network lines", lines.len());
    // One partition: every network line goes to one task.
    let open = || Pipeline::open_owning_none(Lake::open(location).expect("lake"), ProcessorConfig::default(), 1);
    let task = processor::task::TaskId { topic: InputTopic::Network, partition: 0 };
    let half = lines.len() / 2;

    let mut first = open().expect("opens");
    first.acquire(task).expect("acquires");
    feed(&mut first, &lines, 0..half / 2);
    first.commit().expect("commits");
    first.sync().expect("durable");
    assert!(first.take_fenced().is_empty());

    // A second instance is given the partition while the first still runs.
    let mut second = open().expect("opens");
    let (positions, _) = second.acquire(task).expect("acquires");
    assert_eq!(positions.get("sim"), Some(&(half as u64 / 2)), "resumes from the first's commit");

    // The first commits again: it is fenced, gives the task up, and its files are gone.
    feed(&mut first, &lines, half / 2..half);
    first.commit().expect("a fenced commit is not an error");
    first.sync().expect("durable");
    assert_eq!(first.take_fenced(), vec![task]);
    assert!(!first.owns(task));

    feed(&mut second, &lines, half / 2..lines.len());
    second.commit().expect("commits");
    second.sync().expect("durable");
    assert!(second.take_fenced().is_empty());

    let lake = Lake::open(location).expect("lake");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let records = runtime.block_on(lake.commit_records()).expect("records");
    let epochs: Vec<u64> = records.iter().filter(|r| r.task == task).map(|r| r.epoch).collect();
    // The first's commit (a task without commits has nothing to claim), the
    // second's claim, which fenced the first's next commit, and its commit.
    assert_eq!(epochs, vec![1, 2, 3]);
    let last = records.iter().rfind(|r| r.task == task).expect("a record");
    assert_eq!(last.positions.get("sim"), Some(&(lines.len() as u64)));
    let committed: BTreeSet<String> = records.iter().flat_map(|r| r.files.iter().map(|f| f.path.clone())).collect();
    assert_eq!(parquet_files(dir.path()), committed, "no file of the fenced epoch is left");
    // <table>_history/date=<d>/<task topic>-<partition>-<epoch>-<writer>-<n>.parquet
    let writers: BTreeSet<&str> =
        committed.iter().filter_map(|path| path.rsplit('/').next()?.split('-').nth(3)).collect();
    assert_eq!(writers.len(), 2, "each instance committed one epoch with files: {writers:?}");
}
