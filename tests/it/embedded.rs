//! The Kafka pipeline over the embedded broker (librdkafka's mock cluster in
//! this test process, on 127.0.0.1): the fast end-to-end check that needs no
//! external broker. The real-broker tests are in `kafka.rs`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn run_over_the_embedded_broker_gives_the_lake_of_replay() {
    let broker = embedded_broker(3);
    let brokers = broker.bootstrap_servers();
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

/// DESIGN.md "Event time": in `run`, a task that applies no event for
/// `processor.idle_timeout_secs` has its watermark follow the wall clock
/// (minus the allowed lateness), so the deadlines of a quiet partition fire.
/// The events stop 6 h before now; an exposure is due 2 h before now and a
/// verified deployment's re-evaluation window closed 2 h before now. Event
/// time alone (1 h of lateness behind the last event) reaches neither, as
/// `replay` of the same events shows; the clock reaches both, each alert
/// dated by its own deadline, and `clock_watermarks` records the move.
#[test]
fn a_quiet_partition_reaches_its_deadlines_by_the_wall_clock() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use schemas::InputTopic;
    const HOUR: i64 = 3_600;
    const DAY: i64 = 24 * HOUR;
    let broker = embedded_broker(1);
    let brokers = broker.bootstrap_servers();
    let names = ingest::kafka::TopicNames::default();

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let at = |secs: i64| schemas::Timestamp(secs * 1_000_000).to_string();
    let detected = now - 15 * DAY - 2 * HOUR; // critical: due 15 days later, 2 h ago
    let succeeded = now - 6 * HOUR; // re-evaluation due within 4 h: 2 h ago
    let sha = "3f5d0c1a9b2e4d6f8a0c2e4f6a8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4f";
    let events = [
        (
            InputTopic::Intel,
            serde_json::json!({"specversion":"1.0","id":"intel-1","source":"urn:feeds:nvd","type":"vuln.intel.v1","time":at(now - 20 * DAY),"subject":"CVE-2026-0001","data":{"cve_id":"CVE-2026-0001","published_at":at(now - 21 * DAY),"cvss_base":9.8,"epss":0.5,"kev":false}}),
        ),
        (
            InputTopic::Intel,
            serde_json::json!({"specversion":"1.0","id":"rel-1","source":"urn:vendor:contoso","type":"patch.release.v1","time":at(now - 20 * DAY),"subject":"KB-1","data":{"patch_id":"KB-1","vendor":"contoso","product":"gateway-os","released_at":at(now - 20 * DAY),"fixes_cves":["CVE-2026-0002"],"artifact_sha256":sha,"signed":true}}),
        ),
        (
            InputTopic::Assets,
            serde_json::json!({"specversion":"1.0","id":"inv-1","source":"urn:cmdb","type":"asset.inventory.v1","time":at(now - 20 * DAY),"subject":"gw-1","data":{"asset_id":"gw-1","environment":"edge","criticality":"high","internet_exposed":true,"segment":"branch-gw","managed":true}}),
        ),
        (
            InputTopic::Assets,
            serde_json::json!({"specversion":"1.0","id":"scan-1","source":"urn:scanner:agent","type":"vuln.finding.v1","time":at(detected),"subject":"gw-1","data":{"asset_id":"gw-1","cve_id":"CVE-2026-0001","status":"open"}}),
        ),
        (
            InputTopic::Assets,
            serde_json::json!({"specversion":"1.0","id":"dep-1-started","source":"urn:orchestrator","type":"patch.deployment.v1","time":at(succeeded - 600),"subject":"gw-1","data":{"deployment_id":"dep-1","asset_id":"gw-1","patch_id":"KB-1","phase":"started"}}),
        ),
        (
            InputTopic::Assets,
            serde_json::json!({"specversion":"1.0","id":"dep-1-succeeded","source":"urn:orchestrator","type":"patch.deployment.v1","time":at(succeeded),"subject":"gw-1","data":{"deployment_id":"dep-1","asset_id":"gw-1","patch_id":"KB-1","phase":"succeeded","artifact_sha256":sha,"signature_verified":true}}),
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("events.jsonl");
    let lines: Vec<String> = events.iter().map(|(_, event)| event.to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n").expect("writes");
    let producer: BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("producer");
    for (topic, event) in &events {
        let (payload, key) = (event.to_string(), event["subject"].as_str().expect("subject").to_owned());
        producer.send(BaseRecord::to(names.input(*topic)).key(&key).payload(&payload)).expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");

    // Event time alone: neither deadline is reached.
    let replayed = dir.path().join("replayed");
    replay(&file, &replayed, &[]);
    let rules = |lake: &std::path::Path| -> Vec<(String, i64)> {
        sql(lake, "SELECT rule, to_unixtime(time) AS t FROM alerts ORDER BY rule")
            .iter()
            .map(|row| (row["rule"].as_str().unwrap_or_default().to_owned(), row["t"].as_i64().unwrap_or_default()))
            .collect()
    };
    assert_eq!(sql(&replayed, "SELECT error FROM dead_letters"), [] as [serde_json::Value; 0], "every event is valid");
    let open = sql(&replayed, "SELECT status, breached FROM exposures");
    assert_eq!(open, [serde_json::json!({"status": "open", "breached": false})], "replay stays on event time");
    assert_eq!(rules(&replayed), [], "replay stays on event time");

    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .args(["run", "--brokers", &brokers, "--lake", path(&lake), "--metrics-listen", &metrics])
        .args(["--commit-interval-ms", "300", "--idle-timeout-secs", "2"])
        .env("PATCHTRAIL__LAKE__PUBLISH_INTERVAL_SECS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("spawns");
    let started = Instant::now();
    let expected =
        [("POSTURE_REEVAL_OVERDUE".to_owned(), succeeded + 4 * HOUR), ("SLA_BREACH".to_owned(), detected + 15 * DAY)];
    let fired = loop {
        let fired = if lake.join("_published.json").exists() { rules(&lake) } else { Vec::new() };
        if fired.len() >= expected.len() || started.elapsed() > Duration::from_secs(90) {
            break fired;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let latency = started.elapsed();
    let clock = sql(
        &lake,
        "SELECT task, to_unixtime(watermark) AS w, to_unixtime(last_event_at) AS last, to_unixtime(moved_at) AS moved \
         FROM clock_watermarks ORDER BY moved_at",
    );
    let exposure = sql(&lake, "SELECT status, breached, to_unixtime(due_at) AS due FROM exposures");
    stop(&mut child);
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(fired, expected, "the clock fires both deadlines, dated by them\n{log}");
    eprintln!(
        "both alerts in the lake {:.1} s after run started (idle timeout 2 s, publication every 1 s)",
        latency.as_secs_f64()
    );
    assert_eq!(exposure.len(), 1, "{exposure:?}");
    assert_eq!(exposure[0]["status"], "open");
    assert_eq!(exposure[0]["breached"], true, "{exposure:?}");
    assert_eq!(exposure[0]["due"], detected + 15 * DAY);
    // The move is on record: the assets task, 1 h behind the wall clock, after the last event.
    let first = clock.first().unwrap_or_else(|| panic!("no clock_watermarks row\n{log}"));
    assert_eq!(first["task"], "assets-0", "{clock:?}");
    assert_eq!(first["last"], succeeded, "{clock:?}");
    let (moved, watermark) = (first["moved"].as_i64().expect("moved_at"), first["w"].as_i64().expect("watermark"));
    assert!((now..now + 120).contains(&moved), "moved at {moved}, test started at {now}");
    assert_eq!(watermark, moved - HOUR, "{clock:?}");
    assert!(clock.iter().all(|row| row["task"] == "assets-0"), "only the task that saw events moves: {clock:?}");
    // Another engine reads the record as a Delta table, with no knowledge of patchtrail.
    let deltalake = Command::new("python3").args(["-c", "import deltalake"]).status().is_ok_and(|s| s.success());
    if deltalake {
        let script = format!(
            "import deltalake, os\nprint(deltalake.DeltaTable('{}/clock_watermarks').to_pyarrow_table().num_rows, flush=True)\nos._exit(0)",
            path(&lake)
        );
        let output = Command::new("python3").args(["-c", &script]).output().expect("python runs");
        let rows: usize = String::from_utf8_lossy(&output.stdout).trim().parse().expect("a row count");
        let ours = sql(&lake, "SELECT count(*) AS n FROM clock_watermarks")[0]["n"].as_u64().expect("count");
        assert_eq!(rows as u64, ours, "{}", String::from_utf8_lossy(&output.stderr));
    }
}

/// SIGTERM, then the exit status 0.
fn stop(child: &mut std::process::Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let started = Instant::now();
    while child.try_wait().expect("waits").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("run did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().expect("reaped").success(), "run exits 0 on SIGTERM");
}
