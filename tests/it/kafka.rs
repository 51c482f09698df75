//! The Kafka pipeline end to end against a real broker (tansu on 127.0.0.1):
//! `simulate --brokers` → `run --stop-at-end` gives the lake `replay` gives
//! and the simulator's truth; the dead-letter and alert topics hold what they
//! must; SIGKILL and restarts, and a second instance taking over, lose and
//! duplicate nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;

const FAULTS: [&str; 6] = ["--late-ratio", "0.03", "--duplicate-ratio", "0.02", "--malformed-ratio", "0.01"];

/// Produces a scenario to the broker and writes the same scenario to a file.
fn produce(broker: &Broker, dir: &Path, assets: &str, days: &str, seed: &str) -> (std::path::PathBuf, Value) {
    let events = dir.join("events.jsonl");
    let truth = dir.join("truth.json");
    let common = ["simulate", "--assets", assets, "--days", days, "--seed", seed];
    let mut to_file = common.to_vec();
    to_file.extend(["--out", path(&events), "--truth", path(&truth)]);
    to_file.extend(FAULTS);
    let output = patchtrail(&to_file);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut to_kafka = common.to_vec();
    to_kafka.extend(["--brokers", &broker.address, "--partitions", "3"]);
    to_kafka.extend(FAULTS);
    let output = patchtrail(&to_kafka);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let truth = serde_json::from_slice(&std::fs::read(truth).expect("truth")).expect("JSON");
    (events, truth)
}

fn run_args<'a>(broker: &'a Broker, lake: &'a Path, metrics: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--brokers",
        &broker.address,
        "--lake",
        path(lake),
        "--stop-at-end",
        "--commit-interval-ms",
        "300",
        "--epoch-messages",
        "5000",
        "--metrics-listen",
        metrics,
    ]
}

/// Starts the binary; its log goes to a file next to the lake (a pipe nobody
/// reads would block it once full).
fn spawn(args: &[&str]) -> Child {
    let lake = args.iter().position(|a| *a == "--lake").map(|i| args[i + 1]).expect("--lake");
    spawn_logging_to(args, Path::new(&format!("{lake}.log")))
}

fn spawn_logging_to(args: &[&str], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawns")
}

fn wait_success(mut child: Child, lake: &Path, limit: Duration) {
    let started = Instant::now();
    let log = || {
        let text = std::fs::read_to_string(format!("{}.log", path(lake))).unwrap_or_default();
        text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            assert!(status.success(), "run failed: {status}\n{}", log());
            return;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("run did not finish within {limit:?}\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something is committed to `lake` (a minute at most); returns when it started waiting.
fn wait_for_a_commit(lake: &Path) -> Instant {
    let started = Instant::now();
    while !lake.join("_commits").exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "nothing committed to {} within a minute", lake.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    started
}

/// How many messages `topic` holds (all partitions).
fn topic_size(broker: &Broker, topic: &str) -> i64 {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &broker.address).create().expect("consumer");
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) else { return 0 };
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len() as i32);
    (0..partitions)
        .filter_map(|partition| consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).ok())
        .map(|(low, high)| high - low)
        .sum()
}

/// Every message of `topic` (all partitions), read from the beginning.
fn read_topic(broker: &Broker, topic: &str) -> Vec<(Option<String>, Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "patchtrail-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0;
    for partition in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).expect("watermarks");
        remaining += high - low;
        tpl.add_partition_offset(topic, partition, Offset::Beginning).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let started = Instant::now();
    let mut last_message = Instant::now();
    // Up to the end offsets, then until the topic has been quiet for a while.
    while out.len() < remaining as usize || last_message.elapsed() < Duration::from_secs(2) {
        assert!(started.elapsed() < Duration::from_secs(60), "read {} of {remaining} from {topic}", out.len());
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            last_message = Instant::now();
            let message = message.expect("message");
            let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned());
            let value = serde_json::from_slice(message.payload().expect("value")).expect("JSON value");
            out.push((key, value));
        }
    }
    out
}

#[test]
fn run_from_kafka_gives_the_lake_of_replay_and_the_truth() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, truth) = produce(&broker, dir.path(), "300", "10", "21");
    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    wait_success(spawn(&run_args(&broker, &lake, &metrics)), &lake, Duration::from_secs(240));

    compare(&lake, &truth, "exposures", "asset_id, cve_id");
    compare(&lake, &truth, "patch_outcomes", "asset_id, patch_id");
    compare(&lake, &truth, "canary_rollups", "rollout_id");
    compare(&lake, &truth, "segment_drift", "window_start, src_segment, dst_segment");
    let replayed = dir.path().join("replayed");
    replay(&events, &replayed, &["--partitions", "3", "--epoch-lines", "20000"]);
    assert_same_tables(&lake, &replayed);

    // The dead-letter topic holds exactly the malformed messages, each with its envelope.
    let dead = read_topic(&broker, "patchtrail.dlq");
    assert_eq!(Value::from(dead.len()), truth["lines"]["invalid"], "dead letters");
    for (_, letter) in &dead {
        for field in ["topic", "partition", "offset", "error", "payload", "failed_at"] {
            assert!(letter.get(field).is_some(), "{field} in {letter}");
        }
        assert!(letter["topic"].as_str().is_some_and(|t| t.starts_with("patchtrail.")), "{letter}");
    }
    let offsets: BTreeSet<(String, i64, i64)> = dead
        .iter()
        .map(|(_, l)| {
            (
                l["topic"].as_str().unwrap_or("").to_owned(),
                l["partition"].as_i64().unwrap_or(-1),
                l["offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(offsets.len(), dead.len(), "one dead letter per malformed message");

    // The alert topic holds the lake's alerts as OCSF 1.8.0, keyed by alert id.
    let alerts = read_topic(&broker, "patchtrail.alerts");
    let in_lake = sql(&lake, "SELECT count(*) AS n FROM alerts");
    assert_eq!(Value::from(alerts.len()), in_lake[0]["n"], "alerts published");
    for (key, alert) in &alerts {
        let class = alert["class_uid"].as_i64().expect("class_uid");
        assert!((2001..=2007).contains(&class), "a Findings class: {alert}");
        let activity = alert["activity_id"].as_i64().expect("activity_id");
        assert_eq!(alert["type_uid"].as_i64(), Some(class * 100 + activity), "{alert}");
        assert!(alert["severity_id"].as_i64().is_some_and(|s| (1..=6).contains(&s)), "{alert}");
        assert_eq!(alert["metadata"]["version"], "1.8.0", "{alert}");
        assert_eq!(alert["finding_info"]["uid"].as_str(), key.as_deref(), "{alert}");
    }
    let requests = read_topic(&broker, "patchtrail.reevaluations");
    assert!(!requests.is_empty(), "re-evaluation requests");
    for (key, request) in &requests {
        assert_eq!(request["asset_id"].as_str(), key.as_deref(), "{request}");
    }
}

#[test]
fn optimize_vacuum_and_another_publisher_during_run_lose_and_double_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = produce(&broker, dir.path(), "200", "8", "23");
    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("lake.log")).expect("log file");
    // Publishing every second, so compaction and vacuum meet publications in flight.
    let child = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .args(run_args(&broker, &lake, &metrics))
        .env("PATCHTRAIL__LAKE__PUBLISH_INTERVAL_SECS", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawns");
    let mut child = child;
    wait_for_a_commit(&lake);
    let mut rounds = 0;
    while child.try_wait().expect("waits").is_none() {
        for command in [&["lake", "optimize"][..], &["lake", "vacuum", "--retain-hours", "0"], &["lake", "publish"]] {
            let mut args = command.to_vec();
            args.extend(["--lake", path(&lake)]);
            let output = patchtrail(&args);
            assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        rounds += 1;
    }
    assert!(child.wait().expect("waits").success(), "run failed");
    eprintln!("{rounds} rounds of optimize, vacuum and publish during run");
    assert!(rounds >= 2, "only {rounds} rounds while run was running");
    // Readers never read the task commit log, and it stays short: once every
    // epoch is published, each task keeps its latest records only.
    for topic in std::fs::read_dir(lake.join("_commits")).expect("the commit log") {
        for task in std::fs::read_dir(topic.expect("a topic").path()).expect("tasks") {
            let task = task.expect("a task").path();
            let records = std::fs::read_dir(&task).expect("records").count();
            assert!((1..=4).contains(&records), "{}: {records} commit records", task.display());
        }
    }
    let replayed = dir.path().join("replayed");
    replay(&events, &replayed, &["--partitions", "3", "--epoch-lines", "20000"]);
    assert_same_tables(&lake, &replayed);
}

// tansu 0.6 evicts a SIGKILLed member after its session timeout but never tells
// the live members to rejoin; `run`'s stall watch (src/run.rs) makes them rejoin
// when nobody commits a partition with unread messages for 30 s. The tests below
// therefore take about a minute.
#[test]
fn sigkill_and_restart_lose_and_duplicate_nothing() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = produce(&broker, dir.path(), "600", "12", "33");
    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut kills = 0;
    for delay_ms in [700u64, 1200, 1700, 2200, 2700, 3200] {
        kills += usize::from(kill_after(spawn(&run_args(&broker, &lake, &metrics)), Duration::from_millis(delay_ms)));
    }
    eprintln!("killed mid-run {kills} times");
    assert!(kills >= 5, "killed mid-run {kills} times");
    wait_success(spawn(&run_args(&broker, &lake, &metrics)), &lake, Duration::from_secs(240));
    let replayed = dir.path().join("replayed");
    replay(&events, &replayed, &["--partitions", "3", "--epoch-lines", "20000"]);
    assert_same_tables(&lake, &replayed);
}

// The instance killed is the one that joined second: tansu 0.6 keeps a dead
// *leader* in the group when it evicts it from a formed group (the leader is
// only cleared when a forming group evicts it, coordinator/group/administrator.rs),
// so a group whose leader dies never forms again there. Apache Kafka elects a
// new leader; the takeover path on our side is the same either way.
#[test]
fn a_surviving_instance_takes_over_the_partitions_of_a_killed_one() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = produce(&broker, dir.path(), "2000", "12", "44");
    let lake = dir.path().join("lake");
    let (metrics_a, metrics_b) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let first = spawn(&run_args(&broker, &lake, &metrics_a));
    let started = wait_for_a_commit(&lake);
    let second_log = dir.path().join("second.log");
    let mut second = spawn_logging_to(&run_args(&broker, &lake, &metrics_b), &second_log);
    // Kill it once the group has given it partitions (and it has worked on them a little).
    let holds_partitions = || {
        let log = std::fs::read_to_string(&second_log).unwrap_or_default();
        log.lines().any(|line| line.contains("partitions assigned") && line.contains("patchtrail."))
    };
    while !holds_partitions() {
        assert!(started.elapsed() < Duration::from_secs(60), "the second instance was given no partition");
        assert!(second.try_wait().expect("waits").is_none(), "the second instance stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(700));
    let killed = second.try_wait().expect("waits").is_none();
    second.kill().expect("SIGKILL");
    second.wait().expect("reaped");
    assert!(killed, "the second instance was still running when killed");
    wait_success(first, &lake, Duration::from_secs(240));
    let replayed = dir.path().join("replayed");
    replay(&events, &replayed, &["--partitions", "3", "--epoch-lines", "20000"]);
    assert_same_tables(&lake, &replayed);
}

#[test]
fn sigterm_commits_and_exits_zero() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, truth) = produce(&broker, dir.path(), "300", "10", "55");
    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = run_args(&broker, &lake, &metrics);
    args.retain(|a| *a != "--stop-at-end");
    let mut child = spawn(&args);
    wait_for_a_commit(&lake);
    // Once everything is consumed, the counters hold the truth's line counts.
    let lines = &truth["lines"];
    let (total, invalid) = (lines["total"].as_f64().expect("total"), lines["invalid"].as_f64().expect("invalid"));
    let started = Instant::now();
    let mut exposition = http_get(&metrics, "/metrics");
    while sum_of(&exposition, "patchtrail_events_consumed_total") != total - invalid {
        assert!(started.elapsed() < Duration::from_secs(120), "not everything consumed:\n{exposition}");
        std::thread::sleep(Duration::from_millis(200));
        exposition = http_get(&metrics, "/metrics");
    }
    assert_eq!(sum_of(&exposition, "patchtrail_events_dead_lettered_total"), invalid, "{exposition}");
    assert!(sum_of(&exposition, "patchtrail_commits_total") >= 1.0, "{exposition}");
    assert!(sum_of(&exposition, "patchtrail_commit_duration_seconds_count") >= 1.0, "{exposition}");
    // While run stays up with nothing more to read, the last epoch's
    // committed dead letters reach their topic within seconds, not at SIGTERM.
    while committed_messages(&lake) as f64 != total {
        assert!(started.elapsed() < Duration::from_secs(120), "not everything committed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let committed = Instant::now();
    while (topic_size(&broker, "patchtrail.dlq") as f64) < invalid {
        let waited = committed.elapsed();
        assert!(waited < Duration::from_secs(10), "{waited:?} after the last commit: dead letters still held back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.try_wait().expect("waits").is_none(), "run is still up");
    let (status, _) = terminate(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    // SIGTERM committed what was consumed: the tasks' latest commit records
    // account for every message of the input topics.
    assert_eq!(committed_messages(&lake) as f64, total, "messages the lake's commit records cover");
}

/// The messages the lake's commit records say were applied or dead-lettered:
/// the next offsets of each task's latest record, summed over the tasks.
fn committed_messages(lake: &Path) -> u64 {
    let mut total = 0;
    let commits = lake.join("_commits");
    for topic in std::fs::read_dir(&commits).expect("_commits") {
        for partition in std::fs::read_dir(topic.expect("entry").path()).expect("a topic's records") {
            let latest = std::fs::read_dir(partition.expect("entry").path())
                .expect("a task's records")
                .map(|entry| entry.expect("entry").path())
                .filter(|path| path.extension().is_some_and(|e| e == "json"))
                .max_by_key(|path| {
                    path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
                });
            let Some(latest) = latest else { continue };
            let record: Value = serde_json::from_slice(&std::fs::read(&latest).expect("a record")).expect("JSON");
            let positions = record["positions"].as_object().expect("positions");
            total += positions.values().map(|next| next.as_u64().expect("an offset")).sum::<u64>();
        }
    }
    total
}

#[test]
fn a_broker_outage_is_waited_out_and_nothing_is_lost() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = produce(&broker, dir.path(), "1500", "12", "66");
    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    let child = spawn(&run_args(&broker, &lake, &metrics));
    wait_for_a_commit(&lake);
    broker.stop();
    wait_not_ready(&metrics);
    let mut child = child;
    std::thread::sleep(Duration::from_secs(3));
    assert!(child.try_wait().expect("waits").is_none(), "run gave up during the outage");
    broker.restart();
    wait_success(child, &lake, Duration::from_secs(240));
    let log = std::fs::read_to_string(format!("{}.log", path(&lake))).expect("log");
    assert!(log.contains("broker"), "a log line names the outage:\n{log}");
    let replayed = dir.path().join("replayed");
    replay(&events, &replayed, &["--partitions", "3", "--epoch-lines", "20000"]);
    assert_same_tables(&lake, &replayed);
}

#[test]
fn sigterm_during_a_broker_outage_exits_within_the_deadline_and_keeps_every_commit() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = produce(&broker, dir.path(), "1500", "12", "77");
    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = run_args(&broker, &lake, &metrics);
    args.retain(|a| *a != "--stop-at-end");
    args.extend(["--shutdown-timeout-secs", "6"]);
    let mut child = spawn(&args);
    wait_for_a_commit(&lake);
    broker.stop();
    wait_not_ready(&metrics);
    // Let a commit round meet the outage (epochs wait for the previous outbox to be delivered).
    std::thread::sleep(Duration::from_secs(2));
    let (status, took) = terminate(&mut child, Duration::from_secs(8));
    eprintln!("exited after {took:?} with {status}");
    assert!(status.code().is_some(), "exited by itself, not killed: {status}");
    // Everything committed is safe: the next instance finishes to the lake replay gives.
    broker.restart();
    wait_success(spawn(&run_args(&broker, &lake, &metrics)), &lake, Duration::from_secs(240));
    let replayed = dir.path().join("replayed");
    replay(&events, &replayed, &["--partitions", "3", "--epoch-lines", "20000"]);
    assert_same_tables(&lake, &replayed);
}

/// Waits until `run`'s readiness on `metrics` says the brokers are away.
fn wait_not_ready(metrics: &str) {
    let stopped = Instant::now();
    while http_get(metrics, "/readyz") != "not ready" {
        assert!(stopped.elapsed() < Duration::from_secs(60), "still ready a minute into the outage");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGTERM and waits for the exit, `limit` at most; the status and how long it took.
fn terminate(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    let signalled = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            return (status, signalled.elapsed());
        }
        assert!(signalled.elapsed() < limit, "no exit within {limit:?} of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sum of every series of `metric` in a Prometheus exposition.
fn sum_of(exposition: &str, metric: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(metric) && line[metric.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP/1.1 GET; the body.
fn http_get(address: &str, route: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    write!(stream, "GET {route} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// What `import` writes to the input topics (the intel keys of the one-feed
/// types included) `run` reads into the lake `replay` makes of the same events.
#[test]
fn imported_records_reach_the_lake_through_kafka_as_replay_takes_them() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let formats = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/formats");
    let sample = |name: &str| formats.join(name).to_str().expect("UTF-8").to_owned();
    let imports: Vec<Vec<String>> = vec![
        vec!["kev".into(), sample("kev/known_exploited_vulnerabilities.json")],
        vec!["epss".into(), sample("epss/vunnel-example-1.csv")],
        vec!["nvd".into(), sample("nvd/grype-cve-2022-0543-record.json")],
        vec!["trivy".into(), sample("trivy/alpine-310.json"), "--asset".into(), "web-1".into()],
        vec!["grype".into(), sample("grype/defectdojo-busybox-epss.json"), "--asset".into(), "edge-1".into()],
    ];
    let events = dir.path().join("events.jsonl");
    let mut all = String::new();
    for (n, import) in imports.iter().enumerate() {
        let mut args: Vec<&str> = vec!["import"];
        args.extend(import.iter().map(String::as_str));
        let mut to_kafka = args.clone();
        to_kafka.extend(["--brokers", &broker.address, "--partitions", "3"]);
        let output = patchtrail(&to_kafka);
        assert!(output.status.success(), "{to_kafka:?}: {}", String::from_utf8_lossy(&output.stderr));
        let file = dir.path().join(format!("{n}.jsonl"));
        args.extend(["--out", path(&file)]);
        let output = patchtrail(&args);
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        all.push_str(&std::fs::read_to_string(&file).expect("events"));
    }
    std::fs::write(&events, &all).expect("writes");
    let intel = read_topic(&broker, "patchtrail.intel");
    let kev_keys = intel.iter().filter(|(key, value)| {
        value["type"] == "vuln.kev.v1"
            && key.as_deref() == Some(&*format!("kev/{}", value["subject"].as_str().unwrap_or("")))
    });
    assert_eq!(kev_keys.count(), 1404, "every KEV record keyed kev/<cve>");

    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    wait_success(spawn(&run_args(&broker, &lake, &metrics)), &lake, Duration::from_secs(120));
    let dead = sql(&lake, "SELECT count(*) AS n FROM dead_letters");
    assert_eq!(dead[0]["n"], 0, "{:?}", sql(&lake, "SELECT error FROM dead_letters LIMIT 3"));
    let replayed = dir.path().join("replayed");
    replay(&events, &replayed, &["--partitions", "3"]);
    assert_same_tables(&lake, &replayed);
    let kev = sql(&lake, "SELECT count(*) AS n FROM cves WHERE kev");
    assert_eq!(kev[0]["n"], 1404);
}

/// Raw Hubble lines on a topic of their own, as a log shipper writes them:
/// `import hubble --from-topic` and `run` both running give drift rows in the
/// lake; SIGTERM stops the importer with status 0, its offset committed at the
/// first message an open window holds, with the window watermark beside it.
#[test]
fn raw_hubble_lines_on_a_topic_reach_the_lake_through_import_from_topic() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = "raw.hubble";
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &broker.address).create().expect("admin");
    let created = futures::executor::block_on(
        admin.create_topics(&[NewTopic::new(raw, 2, TopicReplication::Fixed(1))], &AdminOptions::new()),
    )
    .expect("creates");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    // The real exporter lines, and the same connection seen in audit mode, then
    // forwarded later (written from the real line: no open-licence AUDIT sample exists).
    let formats = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/formats");
    let dropped = std::fs::read_to_string(formats.join("hubble/cilium-docs-export-dropped.jsonl")).expect("sample");
    let denied: Value = serde_json::from_str(dropped.lines().nth(1).expect("line 2").trim()).expect("JSON");
    let at = |verdict: &str, time: &str| {
        let mut flow = denied.clone();
        flow["flow"]["verdict"] = verdict.into();
        flow["flow"]["time"] = time.into();
        flow["time"] = time.into();
        flow.to_string()
    };
    let otel = std::fs::read_to_string(formats.join("hubble/hubble-otel-basic-sample-10-flows.jsonl")).expect("sample");
    let mut lines: Vec<String> = otel.lines().map(str::to_owned).collect();
    lines.push(denied.to_string());
    lines.push(at("AUDIT", "2023-08-21T13:20:00Z"));
    lines.push(at("FORWARDED", "2023-08-21T15:30:00Z"));
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &broker.address).create().expect("producer");
    for line in &lines {
        producer.send(BaseRecord::to(raw).key("kind-worker").payload(line.as_str())).expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");

    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    let import_log = dir.path().join("import.log");
    let mut importer = spawn_logging_to(
        &["import", "hubble", "--from-topic", raw, "--brokers", &broker.address, "--segment-from", "namespace"],
        &import_log,
    );
    // `run` wants the input topics, which the importer creates when it starts.
    let started = Instant::now();
    while !std::fs::read_to_string(&import_log).unwrap_or_default().contains("importing from the topic") {
        assert!(started.elapsed() < Duration::from_secs(60), "the importer did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let runner_args = [
        "run",
        "--brokers",
        &broker.address,
        "--lake",
        path(&lake),
        "--commit-interval-ms",
        "300",
        "--metrics-listen",
        &metrics,
    ];
    let mut runner = spawn(&runner_args);
    let started = Instant::now();
    let drift = loop {
        let rows = if lake.join("_commits").exists() {
            sql(&lake, "SELECT connections, drift_connections FROM segment_drift WHERE drift_connections > 0")
        } else {
            Vec::new()
        };
        if !rows.is_empty() {
            break rows;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = importer.kill();
            let _ = runner.kill();
            let log = std::fs::read_to_string(&import_log).unwrap_or_default();
            let run_log = std::fs::read_to_string(format!("{}.log", path(&lake))).unwrap_or_default();
            let tail: Vec<&str> = run_log.lines().rev().take(30).collect();
            panic!(
                "no drift row in the lake within 3 minutes\nimport:\n{log}\nrun (last lines, newest first):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(drift, vec![serde_json::json!({"connections": 1, "drift_connections": 1})]);
    let (status, _) = terminate(&mut importer, Duration::from_secs(60));
    let log = std::fs::read_to_string(&import_log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "import --from-topic exits 0 on SIGTERM:\n{log}");
    assert!(log.contains("sightings counted as connections: 8"), "{log}");
    let (status, _) = terminate(&mut runner, Duration::from_secs(60));
    assert!(status.success(), "run: {status}");
    let flows = sql(&lake, "SELECT sum(connections) AS n FROM segment_drift");
    // The otel flows' 5 connections and the two 2023 ones; the 15:30 window is still open.
    assert_eq!(flows[0]["n"], 7, "{flows:?}");

    // The committed offset: the first message the open window holds (the last one).
    // (tansu 0.6 answers every committed offset with empty metadata, so the window
    // watermark stored beside it is not checked here.)
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "patchtrail-import")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(raw, 0);
    tpl.add_partition(raw, 1);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    let held: Vec<i64> = committed
        .elements()
        .iter()
        .filter_map(|element| match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        })
        .collect();
    assert_eq!(held, vec![lines.len() as i64 - 1]);

    // A restart resumes there: the 15:30 window is rebuilt from its message and written
    // when a later flow closes it; nothing before it counts again.
    let mut importer = spawn_logging_to(
        &["import", "hubble", "--from-topic", raw, "--brokers", &broker.address, "--segment-from", "namespace"],
        &import_log,
    );
    producer
        .send(BaseRecord::to(raw).key("kind-worker").payload(at("FORWARDED", "2023-08-21T18:00:00Z").as_str()))
        .expect("queued");
    producer.flush(Duration::from_secs(30)).expect("delivered");
    let mut runner = spawn(&runner_args);
    let started = Instant::now();
    loop {
        let windows = sql(&lake, "SELECT count(*) AS n, sum(connections) AS c FROM segment_drift");
        if windows[0]["n"] == 8 {
            assert_eq!(windows[0]["c"], 8, "nothing counted twice: {windows:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the 15:30 window was not written: {windows:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, _) = terminate(&mut importer, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0));
    let (status, _) = terminate(&mut runner, Duration::from_secs(60));
    assert!(status.success(), "run: {status}");
}
