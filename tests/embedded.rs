//! The Kafka pipeline over the embedded broker (librdkafka's mock cluster in
//! this test process, on 127.0.0.1): the fast end-to-end check that needs no
//! external broker. The real-broker tests are in `kafka.rs`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ingest::kafka::EmbeddedBroker;
use support::*;

#[test]
fn run_over_the_embedded_broker_gives_the_lake_of_replay() {
    let broker = EmbeddedBroker::start().expect("the mock cluster starts");
    let brokers = broker.bootstrap_servers();
    // The mock cluster takes no admin requests: the topics are made here.
    let names = ingest::kafka::TopicNames::default();
    let mut specs: Vec<ingest::kafka::TopicSpec<'_>> = names
        .keyed()
        .iter()
        .copied()
        .chain([names.intel.as_str()])
        .map(|name| ingest::kafka::TopicSpec { name, partitions: 3, compacted: false })
        .collect();
    for name in [&names.alerts, &names.reevaluations, &names.dlq, &names.priorities] {
        specs.push(ingest::kafka::TopicSpec { name, partitions: 3, compacted: false });
    }
    broker.create_topics(&specs).expect("topics");
    let dir = tempfile::tempdir().expect("temp dir");
    let events = dir.path().join("events.jsonl");
    let common = ["simulate", "--assets", "300", "--days", "6", "--seed", "21", "--malformed-ratio", "0.01"];
    let output = patchtrail(&[&common[..], &["--out", path(&events)]].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = patchtrail(&[&common[..], &["--brokers", &brokers, "--partitions", "3"]].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("run.log")).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .args(["run", "--brokers", &brokers, "--lake", path(&lake), "--stop-at-end", "--metrics-listen", &metrics])
        .args(["--commit-interval-ms", "300"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawns");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("run did not finish: {}", std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default());
    let replayed = dir.path().join("replayed");
    replay(&events, &replayed, &["--partitions", "3"]);
    assert_same_tables(&lake, &replayed);
}
