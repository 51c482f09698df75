//! Helpers shared by the end-to-end tests: the binary, simulated scenarios,
//! SQL over a lake, comparisons with the simulator's truth, and a real Kafka
//! broker (tansu) on 127.0.0.1.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// librdkafka's mock cluster with every topic of the default names, each
/// with `partitions` (the mock cluster takes no admin requests, so the
/// topics are made here). Mind its retention: 5 MiB per partition, the
/// oldest dropped beyond.
pub fn embedded_broker(partitions: i32) -> ingest::kafka::EmbeddedBroker {
    let broker = ingest::kafka::EmbeddedBroker::start().expect("the mock cluster starts");
    let names = ingest::kafka::TopicNames::default();
    let specs: Vec<ingest::kafka::TopicSpec<'_>> = names
        .keyed()
        .into_iter()
        .chain([&names.intel, &names.alerts, &names.reevaluations, &names.dlq, &names.priorities].map(String::as_str))
        .map(|name| ingest::kafka::TopicSpec { name, partitions, compacted: false })
        .collect();
    broker.create_topics(&specs).expect("topics");
    broker
}

/// Whether a test may go on without a tool it needs: under CI (`CI=true`,
/// where `.ci/run` installs every tool) a missing tool fails the test; on a
/// developer's machine the test says it is skipped.
pub fn tool_missing(available: bool, what: &str) -> bool {
    if available {
        return false;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{what} is missing under CI, where .ci/run provides it");
    eprintln!("skipped: {what} is missing");
    true
}

pub fn patchtrail(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_patchtrail")).args(args).output().expect("the binary runs")
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub fn simulate(dir: &Path, assets: u32, days: u32, seed: u64, faults: bool) -> (PathBuf, Value) {
    let events = dir.join(format!("events-{seed}.jsonl"));
    let truth = dir.join(format!("truth-{seed}.json"));
    let (assets, days, seed) = (assets.to_string(), days.to_string(), seed.to_string());
    let mut args = vec!["simulate", "--assets", &assets, "--days", &days, "--seed", &seed];
    args.extend(["--out", path(&events), "--truth", path(&truth)]);
    if faults {
        args.extend(["--late-ratio", "0.03", "--duplicate-ratio", "0.02", "--malformed-ratio", "0.01"]);
    }
    let output = patchtrail(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let truth = serde_json::from_slice(&std::fs::read(truth).expect("truth")).expect("JSON");
    (events, truth)
}

pub fn replay(events: &Path, lake: &Path, extra: &[&str]) -> String {
    let mut args = vec!["replay", "--input", path(events), "--lake", path(lake)];
    args.extend_from_slice(extra);
    let output = patchtrail(&args);
    assert!(output.status.success(), "replay failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn sql(lake: &Path, query: &str) -> Vec<Value> {
    let output = patchtrail(&["sql", "--lake", path(lake), "--format", "json", query]);
    assert!(output.status.success(), "{query}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON rows")
}

/// The lake's rows of `table` with the truth's columns, in the truth's order.
pub fn compare(lake: &Path, truth: &Value, table: &str, order: &str) {
    let expected = truth[table].as_array().expect("rows");
    let columns: Vec<&String> = expected[0].as_object().expect("object").keys().collect();
    let select: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            // Timestamps as the truth writes them.
            "detected_at" | "remediated_at" | "due_at" | "released_at" | "first_attempt_at" | "window_start" => {
                format!("to_char({c}, '%Y-%m-%dT%H:%M:%S%.3fZ') AS {c}")
            }
            _ => c.to_string(),
        })
        .collect();
    let rows = sql(lake, &format!("SELECT {} FROM {table} ORDER BY {order}", select.join(", ")));
    assert_eq!(rows.len(), expected.len(), "{table}: rows");
    for (ours, theirs) in rows.iter().zip(expected) {
        for column in &columns {
            let (a, b) = (ours.get(*column).unwrap_or(&Value::Null), &theirs[*column]);
            // Millisecond times print as .000 where the truth omits a zero fraction.
            let same = a == b
                || a.as_f64().zip(b.as_f64()).is_some_and(|(a, b)| a == b)
                || a.as_str().zip(b.as_str()).is_some_and(|(a, b)| a.replace(".000Z", "Z") == b.replace(".000Z", "Z"));
            assert!(same, "{table}.{column}: {a} != {b}\n ours {ours}\n truth {theirs}");
        }
    }
}

/// The tables whose rows are revised, with their keys.
pub const REVISED_TABLES: [(&str, &str); 7] = [
    ("exposures", "asset_id, cve_id"),
    ("patch_outcomes", "asset_id, patch_id"),
    ("canary_rollups", "rollout_id"),
    ("segment_drift", "window_start, src_segment, dst_segment"),
    ("assets", "asset_id"),
    ("cves", "cve_id"),
    ("patches", "patch_id"),
];

/// Kills `child` with SIGKILL after `delay` unless it has ended; true if it was killed mid-run.
pub fn kill_after(mut child: Child, delay: Duration) -> bool {
    std::thread::sleep(delay);
    let running = child.try_wait().expect("waits").is_none();
    if running {
        child.kill().expect("SIGKILL");
    }
    child.wait().expect("reaped");
    running
}

/// Asserts two lakes hold the same latest rows in every table (revisions and
/// update times may differ: epochs are cut at different moments).
pub fn assert_same_tables(a: &Path, b: &Path) {
    let appended = [("alerts", "alert_id"), ("dead_letters", "error, payload")];
    for (table, key) in REVISED_TABLES.into_iter().chain(appended) {
        let exclude = match table {
            "alerts" => "",
            // Where a message came from and its key are Kafka's; a file has lines and no keys.
            "dead_letters" => " EXCLUDE (topic, \"offset\", \"partition\", \"key\", failed_at)",
            _ => " EXCLUDE (updated_at, revision)",
        };
        let query = format!("SELECT *{exclude} FROM {table} ORDER BY {key}");
        let (rows_a, rows_b) = (sql(a, &query), sql(b, &query));
        if rows_a.len() != rows_b.len() {
            let only = |x: &[Value], y: &[Value]| -> Vec<String> {
                x.iter().filter(|row| !y.contains(row)).map(|row| row.to_string()).take(5).collect()
            };
            panic!(
                "{table}: {} rows against {}\n only in the first: {:?}\n only in the second: {:?}",
                rows_a.len(),
                rows_b.len(),
                only(&rows_a, &rows_b),
                only(&rows_b, &rows_a)
            );
        }
        if let Some((x, y)) = rows_a.iter().zip(&rows_b).find(|(x, y)| x != y) {
            panic!("{table}: rows differ\n {x}\n {y}");
        }
    }
}

/// A tansu broker on a free port of 127.0.0.1, stopped when dropped.
///
/// Its storage is a SQLite file: tansu 0.6's `memory://` engine stores
/// record batches whole and answers a fetch from an offset inside a batch
/// with the *next* batch (`offsets.split_off(&offset)` in
/// tansu-storage's dynostore.rs), so a consumer resuming from a committed
/// offset mid-batch silently skips messages. The SQLite engine stores
/// records one by one and resumes exactly, as Kafka does.
pub struct Broker {
    child: Option<Child>,
    pub address: String,
    storage: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts tansu on a fresh SQLite database.
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        // tansu opens the path relative to its working directory, minus the leading '/'.
        let storage = format!("sqlite://{}", dir.path().join("tansu.db").display());
        let address = format!("127.0.0.1:{}", free_port());
        let mut broker = Broker { child: None, address, storage, _dir: dir };
        broker.restart();
        broker
    }

    /// Stops the broker (SIGKILL); its storage stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same address and storage.
    pub fn restart(&mut self) {
        self.stop();
        let url = format!("tcp://{}", self.address);
        let child = Command::new(tansu())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &self.storage])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(broker_log())
            .spawn()
            .expect("tansu starts (install it: cargo install --locked tansu --features libsql,dynostore)");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(&self.address).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "tansu did not listen on {}", self.address);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where tansu's own log goes: the file `TANSU_LOG` names (appended to,
/// for investigating a failure), or nowhere.
fn broker_log() -> Stdio {
    let Ok(path) = std::env::var("TANSU_LOG") else { return Stdio::null() };
    std::fs::OpenOptions::new().create(true).append(true).open(&path).map_or_else(|_| Stdio::null(), Stdio::from)
}

fn tansu() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let installed = Path::new(&home).join(".cargo/bin/tansu");
    if installed.exists() { installed } else { PathBuf::from("tansu") }
}

/// One HTTP/1.1 request to `address` (JSON body, `Connection: close`):
/// (status, response headers, body bytes).
pub fn http(address: &str, method: &str, route: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    write!(stream, "{method} {route} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n").expect("writes");
    for (name, value) in headers {
        write!(stream, "{name}: {value}\r\n").expect("writes");
    }
    write!(stream, "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).expect("writes");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("reads");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status line");
    (status, head, response[split + 4..].to_vec())
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir").flatten() {
            let path = entry.path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    files
}
