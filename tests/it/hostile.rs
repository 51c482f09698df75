//! Hostile clients against `serve` (and `sql`): every attack of the review in
//! the issue "Hostile clients", each with its bound. Nothing a client sends
//! may crash the process, push it past its memory, keep it busy past a
//! query's time limit, or starve other clients. The figures each attack
//! measures are printed (`--nocapture`) and quoted in the README's security
//! section.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

const TOKEN: &str = "hostile-test-token";

/// A running `serve` with a token, its temporary directory its TMPDIR.
struct Server {
    child: Child,
    address: String,
    tmp: tempfile::TempDir,
}

impl Server {
    fn start(lake: &Path, extra: &[&str]) -> Server {
        Server::start_with(lake, extra, &[])
    }

    /// With settings of `[server]` that have no flag, as `PATCHTRAIL__SERVER__*`.
    fn start_with(lake: &Path, extra: &[&str], settings: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
            .args(["serve", "--lake", path(lake), "--listen", &address])
            .args(extra)
            .env("PATCHTRAIL__AUTH__TOKEN", TOKEN)
            .env("TMPDIR", tmp.path())
            .envs(settings.iter().map(|(key, value)| (format!("PATCHTRAIL__SERVER__{}", key.to_uppercase()), value)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawns");
        let started = Instant::now();
        while TcpStream::connect(&address).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "serve did not listen on {address}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, address, tmp }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One request with the token; (status, head, body).
    fn send(&self, method: &str, route: &str, body: &str) -> (u16, String, Vec<u8>) {
        http(&self.address, method, route, &[("Authorization", &format!("Bearer {TOKEN}"))], body)
    }

    fn sql(&self, query: &str) -> (u16, Value) {
        let (status, _, body) = self.send("POST", "/v1/sql", &serde_json::json!({ "sql": query }).to_string());
        (status, serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())))
    }

    /// `/healthz` answers; how long it took.
    fn health(&self) -> Duration {
        let started = Instant::now();
        let mut stream = TcpStream::connect(&self.address).expect("connects");
        write!(stream, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("writes");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("reads");
        assert!(response.ends_with("ok"), "{response}");
        started.elapsed()
    }

    fn alive(&mut self) {
        assert!(self.child.try_wait().expect("waits").is_none(), "serve died");
        self.health();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pid` and every process whose parent it is (the query workers).
fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// Resident memory of `pid` and its children now, MiB.
fn tree_rss_mib(pid: u32) -> f64 {
    tree(pid)
        .iter()
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .sum::<f64>()
        / 1024.0
}

/// Runs `work` while sampling the resident memory of `pid` and its
/// children every 5 ms; its result and the peak, MiB.
fn peak_while<T>(pid: u32, work: impl FnOnce() -> T) -> (T, f64) {
    peak_of(|| tree_rss_mib(pid), work)
}

/// Runs `work` while taking `sample` every 5 ms; its result and the largest sample.
fn peak_of<T>(sample: impl Fn() -> f64 + Sync, work: impl FnOnce() -> T) -> (T, f64) {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(sample());
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        let result = work();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (result, sampler.join().expect("sampler"))
    })
}

/// Resident memory of `pid` alone now, MiB.
fn own_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

/// Runs `work` while sampling the resident memory of `pid` alone every
/// 5 ms; its result and the peak, MiB.
fn own_peak_while<T>(pid: u32, work: impl FnOnce() -> T) -> (T, f64) {
    peak_of(|| own_rss_mib(pid), work)
}

/// Reads what `stream` is sent until it ends or goes quiet for 2 s: the
/// status (0 for none) and the bytes after the head.
fn read_answer(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    stream.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut response = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    while let Ok(n @ 1..) = stream.read(&mut buffer) {
        response.extend_from_slice(&buffer[..n]);
    }
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return (0, response) };
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, response[split + 4..].to_vec())
}

/// The `p`-quantile of `samples`.
fn quantile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// CPU seconds `pid` and its children have used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    tree(pid)
        .iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some((fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .sum()
}

fn lake_of(dir: &Path) -> PathBuf {
    let (events, _) = simulate(dir, 300, 6, 3, false);
    let lake = dir.join("lake");
    replay(&events, &lake, &[]);
    lake
}

fn nested(op: &str, n: usize, first: &str, next: &str) -> String {
    let mut sql = String::with_capacity(n * (op.len() + next.len()) + 16);
    sql.push_str(first);
    for _ in 0..n {
        sql.push_str(op);
        sql.push_str(next);
    }
    sql
}

#[test]
fn deep_expressions_get_an_answer_and_nothing_crashes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let mut server = Server::start(&lake, &["--query-timeout-secs", "10"]);
    let plus = format!("SELECT {} AS n", nested("+", 1_000, "1", "1"));
    let ors = format!(
        "SELECT count(*) AS n FROM assets WHERE {}",
        nested(" OR ", 999, "asset_id = 'a-0'", "asset_id = 'a-1'")
    );
    let casts = format!("SELECT 7{} AS n", "::BIGINT".repeat(1_000));
    for (query, want) in [(&plus, 1_001), (&ors, 0), (&casts, 7)] {
        let (status, body) = server.sql(query);
        assert_eq!(status, 200, "{}…: {body}", &query[..40]);
        assert_eq!(body["rows"][0][0], want, "{}…", &query[..40]);
        server.alive();
    }
    // 30,000 operators (60 kB, under the length limit): DataFusion plans a tree
    // that deep in quadratic time and memory, so its worker is stopped at a
    // limit, and nothing else is disturbed.
    let deep = format!("SELECT {} AS n", nested("+", 30_000, "1", "1"));
    let started = Instant::now();
    let (status, body) = server.sql(&deep);
    eprintln!("30,000 operators: {status} after {:.1?}: {}", started.elapsed(), body["error"]);
    assert_eq!((status, &body["class"]), (422, &Value::from("limit")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(12), "{:?}", started.elapsed());
    assert!(cpu_after(&server) < 0.3, "the deep query's work went on");
    server.alive();
    // 100,000 operators is 200 kB of SQL: over the length limit, refused before it is parsed.
    let huge = format!("SELECT {} AS n", nested("+", 100_000, "1", "1"));
    let (status, body) = server.sql(&huge);
    assert_eq!(status, 413, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("max_sql_bytes")), "{body}");
    server.alive();

    // `patchtrail sql` takes the same queries: an answer each, never a crash.
    // (One argument of a command line holds 128 KiB at most: 80 kB is over the query limit, under that.)
    let long = format!("SELECT {} AS n", nested("+", 40_000, "1", "1"));
    for (query, code) in [(&plus, 0), (&ors, 0), (&casts, 0), (&long, 2)] {
        let output = patchtrail(&["sql", "--lake", path(&lake), "--format", "json", query]);
        assert_eq!(output.status.code(), Some(code), "{}…: {}", &query[..40], String::from_utf8_lossy(&output.stderr));
    }
}

#[test]
fn memory_stays_within_the_pool_whatever_the_query() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let mut server = Server::start(&lake, &["--memory-limit-mib", "256", "--query-timeout-secs", "10"]);
    server.sql("SELECT count(*) FROM exposures");
    let baseline = tree_rss_mib(server.pid());
    // The server and a worker at rest, the worker's pool, and the overhead
    // its budget allows it (queries::server::worker::WORKER_OVERHEAD_BYTES)
    // past which it is killed.
    let bound = baseline + 256.0 + 256.0 + 64.0;
    let attacks: [(&str, &str, u16); 5] = [
        ("generate_series(1, 2e8), streamed", "SELECT * FROM generate_series(1, 200000000)", 200),
        ("a 3e8-element list", "SELECT cardinality(range(1, 300000000))", 400),
        ("a 1e9-character string", "SELECT length(repeat('x', 1000000000))", 422),
        (
            "10,000 rows × 100 kB of JSON",
            "SELECT lpad('x', 10000, 'y') AS a, lpad('x', 10000, 'y') AS b, lpad('x', 10000, 'y') AS c, \
             lpad('x', 10000, 'y') AS d, lpad('x', 10000, 'y') AS e, lpad('x', 10000, 'y') AS f, \
             lpad('x', 10000, 'y') AS g, lpad('x', 10000, 'y') AS h, lpad('x', 10000, 'y') AS i, \
             lpad('x', 10000, 'y') AS j FROM generate_series(1, 10000)",
            422,
        ),
        (
            "GROUP BY 30 M keys",
            "SELECT value % 30000000 AS k, count(*) FROM generate_series(1, 60000000) GROUP BY 1",
            422,
        ),
    ];
    for (name, query, want) in attacks {
        let started = Instant::now();
        let ((status, body), peak) = peak_while(server.pid(), || server.sql(query));
        let elapsed = started.elapsed();
        eprintln!("{name}: {status} in {elapsed:.2?}, peak RSS of server and workers {peak:.0} MiB (bound {bound:.0})");
        assert_eq!(status, want, "{name}: {}", body.to_string().chars().take(300).collect::<String>());
        if status == 200 {
            assert_eq!(body["row_count"], 10_000, "{name}");
            assert_eq!(body["truncated"], true, "{name}");
        }
        assert!(peak < bound, "{name}: peak RSS {peak:.0} MiB over {bound:.0}");
        assert!(elapsed < Duration::from_secs(11), "{name}: {elapsed:?}");
        server.alive();
    }
    // Nothing spilled: the pool says no instead of the disk.
    let spilled: Vec<_> = std::fs::read_dir(server.tmp.path()).expect("tmp").collect();
    assert!(spilled.is_empty(), "files in TMPDIR: {spilled:?}");
}

/// CPU the server uses in the two seconds after `at` plus one second.
fn cpu_after(server: &Server) -> f64 {
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_seconds(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    cpu_seconds(server.pid()) - before
}

#[test]
fn a_query_past_its_limit_or_whose_client_left_stops_using_the_cpu() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let mut server = Server::start(&lake, &["--query-timeout-secs", "3"]);
    let heavy = [
        (
            "3-way cross join",
            "SELECT count(*) FROM exposures_history a, exposures_history b, exposures_history c \
             WHERE a.cve_id || b.cve_id <> c.asset_id",
        ),
        (
            "per-row levenshtein",
            "SELECT count(*) FROM exposures_history a, exposures_history b \
             WHERE levenshtein(repeat(a.cve_id, 400), repeat(b.asset_id, 400)) > 3",
        ),
    ];
    for (name, query) in heavy {
        let started = Instant::now();
        let (status, body) = server.sql(query);
        let answered = started.elapsed();
        assert_eq!(status, 422, "{name}: {body}");
        let busy = cpu_after(&server);
        eprintln!("{name}: 422 after {answered:.2?}; CPU 1–3 s later: {busy:.2} s over 2 s");
        assert!(answered < Duration::from_secs(5), "{name}: answered after {answered:?}");
        assert!(busy < 0.3, "{name}: still {busy:.2} CPU-seconds over 2 s after the limit");
        server.alive();
    }
    // A client that leaves: its query stops too.
    let (_, query) = heavy[0];
    let mut stream = TcpStream::connect(&server.address).expect("connects");
    let body = serde_json::json!({ "sql": query }).to_string();
    write!(
        stream,
        "POST /v1/sql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("writes");
    std::thread::sleep(Duration::from_millis(800));
    drop(stream);
    let busy = cpu_after(&server);
    eprintln!("client gone: CPU 1–3 s later: {busy:.2} s over 2 s");
    assert!(busy < 0.3, "the query of a client that left still used {busy:.2} CPU-seconds");
    server.alive();
}

#[test]
fn heavy_queries_neither_starve_small_ones_nor_queue_without_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let server = Server::start(&lake, &["--query-timeout-secs", "6", "--max-concurrent-queries", "5"]);
    let heavy = "SELECT count(*) FROM exposures_history a, exposures_history b, exposures_history c \
                 WHERE a.cve_id || b.cve_id <> c.asset_id";
    std::thread::scope(|scope| {
        let running: Vec<_> = (0..4).map(|_| scope.spawn(|| server.sql(heavy).0)).collect();
        std::thread::sleep(Duration::from_millis(800));
        let mut latencies = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let (status, body) = server.sql("SELECT count(*) AS n FROM assets");
            latencies.push(started.elapsed());
            assert_eq!(status, 200, "{body}");
        }
        eprintln!("in order: {latencies:?}");
        latencies.sort();
        eprintln!("a small query while 4 heavy ones run: median {:.0?}, worst {:.0?}", latencies[2], latencies[4]);
        assert!(latencies[4] < Duration::from_secs(2), "{latencies:?}");
        // Full: one more heavy query than the cap is refused at once, with Retry-After.
        let extra = scope.spawn(|| server.sql(heavy).0);
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let (status, head, _) = server.send("POST", "/v1/sql", &serde_json::json!({ "sql": heavy }).to_string());
        assert_eq!(status, 503, "{head}");
        assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
        assert!(started.elapsed() < Duration::from_secs(1));
        for handle in running {
            assert_eq!(handle.join().expect("joins"), 422);
        }
        assert_eq!(extra.join().expect("joins"), 422);
    });
}

#[test]
fn idle_and_half_sent_connections_neither_block_health_nor_stay_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let mut server = Server::start(&lake, &["--header-timeout-secs", "2"]);
    let idle: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(&server.address).expect("connects")).collect();
    let mut half: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.address).expect("connects");
            write!(stream, "POST /v1/sql HTTP/1.1\r\nHost: x\r\nContent-Le").expect("writes");
            stream
        })
        .collect();
    let worst = (0..10).map(|_| server.health()).max().expect("ten");
    eprintln!("/healthz with 300 idle and 200 half-sent connections: worst {worst:.1?}");
    assert!(worst < Duration::from_millis(100), "{worst:?}");
    // Past the header timeout the server has closed them: a read sees the end.
    std::thread::sleep(Duration::from_secs(3));
    for stream in
        half.iter_mut().chain(idle.iter().map(|s| s.try_clone().expect("clone")).collect::<Vec<_>>().iter_mut())
    {
        stream.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer);
        assert!(matches!(read, Ok(0)) || read.is_ok(), "closed or answered: {read:?}");
        let again = stream.read(&mut buffer);
        assert!(matches!(again, Ok(0) | Err(_)), "still open after the header timeout: {again:?}");
    }
    server.alive();
}

#[test]
fn the_token_is_checked_first_readyz_needs_it_and_lake_paths_stay_hidden() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let server = Server::start(&lake, &[]);
    // A body announced but never sent: the 401 comes without waiting for it.
    let mut stream = TcpStream::connect(&server.address).expect("connects");
    write!(stream, "POST /v1/sql HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2000000\r\n\r\n")
        .expect("writes");
    stream.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    let mut stream = TcpStream::connect(&server.address).expect("connects");
    write!(stream, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    assert!(response.starts_with("HTTP/1.1 401"), "/readyz without the token: {response}");
    let (status, _, _) = server.send("GET", "/readyz", "");
    assert_eq!(status, 200);

    let root = std::fs::canonicalize(&lake).expect("canonical");
    let root = root.to_str().expect("utf-8");
    for query in ["EXPLAIN SELECT * FROM exposures", "SELECT * FROM exposures_history WHERE no_such_column = 1"] {
        let (_, body) = server.sql(query);
        assert!(!body.to_string().contains(root), "{query}: the lake's path shows: {body}");
    }
    // A file gone under a reader (a vacuum, a hand): 503, the file named by its place in the lake.
    let (status, body) = server.sql("SELECT max(length(asset_id || cve_id)) FROM exposures_history");
    assert_eq!(status, 200, "{body}");
    let history = lake.join("exposures_history");
    let files: Vec<PathBuf> =
        walk(&history).into_iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")).collect();
    assert!(!files.is_empty(), "no Parquet files under {}", history.display());
    files.iter().for_each(|file| std::fs::remove_file(file).expect("removes"));
    let (status, body) = server.sql("SELECT max(length(asset_id || cve_id)) FROM exposures_history");
    assert_eq!(status, 503, "{body}");
    assert!(!body.to_string().contains(root), "the lake's path shows in a 503: {body}");
    assert!(body.to_string().contains("exposures_history/"), "the file is not named: {body}");
    // The JSON answer keeps two columns of the same name apart.
    let (status, body) = server.sql(
        "SELECT a.asset_id, b.asset_id FROM assets a JOIN assets b ON a.segment = b.segment AND a.asset_id < b.asset_id \
         ORDER BY 1, 2 LIMIT 1",
    );
    assert_eq!(status, 200, "{body}");
    let row = &body["rows"][0];
    assert_eq!(body["columns"][0]["name"], body["columns"][1]["name"], "{body}");
    assert_ne!(row[0], row[1], "{body}");
}

/// Whether process `pid` still runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned)))
        .is_some_and(|state| state != "Z" && state != "X")
}

#[test]
fn warm_workers_are_reused_carry_no_token_and_die_with_serve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let mut server = Server::start(&lake, &["--query-timeout-secs", "30"]);
    // Queries 1.5 s apart, across the pool's reaping (every refresh, 1 s): one worker.
    let mut workers = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (status, body) = server.sql("SELECT count(*) AS n FROM exposures");
        assert_eq!(status, 200, "{body}");
        workers.extend(tree(server.pid()).into_iter().skip(1));
        std::thread::sleep(Duration::from_millis(1500));
    }
    eprintln!("4 queries 1.5 s apart: {} worker process(es)", workers.len());
    assert_eq!(workers.len(), 1, "warm queries started new workers: {workers:?}");
    // The server's token is not in its workers' environment.
    let worker = workers.first().copied().expect("a worker");
    let environ = std::fs::read(format!("/proc/{worker}/environ")).expect("the worker's environment");
    assert!(environ.split(|&b| b == 0).any(|var| var.starts_with(b"TMPDIR=")), "read the right environment");
    assert!(!environ.split(|&b| b == 0).any(|var| var.starts_with(b"PATCHTRAIL__AUTH__TOKEN=")), "the token leaked");
    server.alive();
    // A query runs when serve is SIGKILLed: its worker goes with it.
    let address = server.address.clone();
    let client = std::thread::spawn(move || {
        let query = "SELECT count(*) FROM exposures_history a, exposures_history b, exposures_history c \
                     WHERE a.cve_id || b.cve_id <> c.asset_id";
        let body = serde_json::json!({ "sql": query }).to_string();
        http(&address, "POST", "/v1/sql", &[("Authorization", &format!("Bearer {TOKEN}"))], &body)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let busy: Vec<u32> = tree(server.pid()).into_iter().skip(1).collect();
    assert!(!busy.is_empty(), "no worker runs the query");
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    let killed = Instant::now();
    while busy.iter().any(|&pid| running(pid)) && killed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let gone_after = killed.elapsed();
    eprintln!("serve SIGKILLed mid-query: its {} worker(s) gone {gone_after:.2?} later", busy.len());
    assert!(busy.iter().all(|&pid| !running(pid)), "workers {busy:?} outlived serve");
    assert!(gone_after < Duration::from_secs(1), "workers outlived serve by {gone_after:?}");
    let _ = client.join();
}

#[test]
fn clients_that_never_read_hold_at_most_the_answer_budget_and_are_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let settings = [("answer_budget_mib", "64"), ("write_timeout_secs", "3")];
    let server = Server::start_with(&lake, &["--memory-limit-mib", "256"], &settings);
    // About 20 MB of JSON: three fit in the budget, and far more than the socket buffers hold.
    let query = "SELECT repeat('x', 10000) AS s FROM generate_series(1, 2000)";
    let (status, _, whole) = server.send("POST", "/v1/sql", &serde_json::json!({ "sql": query }).to_string());
    assert_eq!(status, 200);
    let before = own_rss_mib(server.pid());
    let request = serde_json::json!({ "sql": query }).to_string();
    let (mut clients, peak) = own_peak_while(server.pid(), || {
        let clients: Vec<TcpStream> = (0..24)
            .map(|_| {
                let mut stream = TcpStream::connect(&server.address).expect("connects");
                write!(
                    stream,
                    "POST /v1/sql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{request}",
                    request.len()
                )
                .expect("writes");
                stream
            })
            .collect();
        // They never read: the queries run, answers wait, the write timeout passes.
        std::thread::sleep(Duration::from_secs(8));
        clients
    });
    let grew = peak - before;
    let (mut whole_answers, mut cut, mut refused_budget, mut refused_busy) = (0, 0, 0, 0);
    for client in &mut clients {
        let (status, body) = read_answer(client);
        let text = String::from_utf8_lossy(&body[..body.len().min(1000)]).into_owned();
        match status {
            200 if body.len() == whole.len() => whole_answers += 1,
            200 => cut += 1,
            503 if text.contains("answer_budget_mib") => refused_budget += 1,
            503 if text.contains("max_concurrent_queries") => refused_busy += 1,
            _ => panic!("{status}: {text}"),
        }
    }
    eprintln!(
        "24 clients that never read ~20 MB answers: serve's own RSS {before:.0} -> peak {peak:.0} MiB (+{grew:.0}, \
         budget 64); {cut} cut at the write timeout, {whole_answers} whole, {refused_budget} refused for the answer \
         budget, {refused_busy} for the query slots"
    );
    assert!(grew < 64.0 + 40.0, "serve grew by {grew:.0} MiB with an answer budget of 64");
    assert!(refused_budget >= 1, "the answer budget refused nothing");
    assert!(cut >= 1, "no answer was cut at the write timeout");
    // What they held is free again: an answer of the same size goes through.
    let (status, _, again) = server.send("POST", "/v1/sql", &request);
    assert_eq!((status, again.len()), (200, whole.len()));
}

#[test]
fn large_headers_are_refused_within_a_small_buffer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let server = Server::start(&lake, &[]);
    let before = own_rss_mib(server.pid());
    let filler = "a".repeat(300_000);
    let (statuses, peak) = own_peak_while(server.pid(), || {
        let mut held = Vec::new();
        let mut statuses = Vec::new();
        for i in 0..400 {
            let mut stream = TcpStream::connect(&server.address).expect("connects");
            stream.set_write_timeout(Some(Duration::from_secs(2))).expect("timeout");
            if i % 2 == 0 {
                // A header just under the limit, never ended: held until the header timeout.
                let _ = write!(stream, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}", &filler[..15_000]);
                held.push(stream);
            } else {
                let _ = write!(stream, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {filler}\r\n\r\n");
                statuses.push(read_answer(&mut stream).0);
            }
        }
        (statuses, held)
    });
    let (statuses, _held) = statuses;
    let grew = peak - before;
    eprintln!("200 connections holding 15 kB of headers, 200 sending 300 kB: serve's own RSS +{grew:.0} MiB");
    assert!(statuses.iter().all(|&status| status == 431 || status == 0), "{statuses:?}");
    assert!(statuses.contains(&431), "{statuses:?}");
    assert!(grew < 40.0, "serve grew by {grew:.0} MiB");
    assert!(server.health() < Duration::from_millis(100));
}

#[test]
fn idle_sockets_give_way_and_busy_ones_leave_healthz_reachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let mut server = Server::start_with(&lake, &[], &[("max_connections", "64")]);
    // 300 sockets that send nothing, opened in a row: past 64, each new one closes the oldest idle.
    let mut idle: Vec<TcpStream> = (0..300).map(|_| TcpStream::connect(&server.address).expect("connects")).collect();
    let mut probes: Vec<Duration> = (0..20).map(|_| server.health()).collect();
    let worst_idle = quantile(&mut probes, 1.0);
    let mut buffer = [0u8; 16];
    idle[0].set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    assert!(matches!(idle[0].read(&mut buffer), Ok(0)), "the oldest idle socket is still open");
    idle[299].set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    assert!(idle[299].read(&mut buffer).is_err(), "the newest idle socket was closed");
    // 64 requests whose bodies never come: every connection busy (for the 10 s body timeout).
    let _busy: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.address).expect("connects");
            write!(
                stream,
                "POST /v1/sql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n"
            )
            .expect("writes");
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut probes: Vec<Duration> = (0..20).map(|_| server.health()).collect();
    let worst_busy = quantile(&mut probes, 1.0);
    // Anything else on a reserve connection is 503.
    let (status, head, _) = server.send("GET", "/v1/priorities?limit=1", "");
    eprintln!(
        "/healthz with 300 idle sockets opened past a limit of 64: worst {worst_idle:.1?}; with all 64 busy: \
         worst {worst_busy:.1?}; /v1/priorities then: {status}"
    );
    assert!(worst_idle < Duration::from_millis(50), "{worst_idle:?}");
    assert!(worst_busy < Duration::from_millis(50), "{worst_busy:?}");
    assert_eq!(status, 503, "{head}");
    assert!(head.to_lowercase().contains("retry-after"), "{head}");
    server.alive();
}

#[test]
fn healthz_stays_fast_while_clients_loop_the_whole_queue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let server = Server::start(&lake, &[]);
    let (status, _, body) = server.send("GET", "/v1/priorities?limit=10000", "");
    assert_eq!(status, 200);
    let queue: Value = serde_json::from_slice(&body).expect("JSON");
    let count = queue["count"].as_u64().expect("a count");
    assert_eq!(queue["items"].as_array().map(Vec::len), Some(count as usize), "{queue}");
    assert!(count > 100, "a queue of {count} rows is too short to load the server");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut probes, answers) = std::thread::scope(|scope| {
        let loops: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let mut answers = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let (status, _, _) = server.send("GET", "/v1/priorities?limit=10000", "");
                        assert_eq!(status, 200);
                        answers += 1;
                    }
                    answers
                })
            })
            .collect();
        let probes: Vec<Duration> = (0..50)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(40));
                server.health()
            })
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (probes, loops.into_iter().map(|l| l.join().expect("loop")).sum::<usize>())
    });
    let p95 = quantile(&mut probes, 0.95);
    let worst = quantile(&mut probes, 1.0);
    eprintln!(
        "/healthz while 8 clients loop /v1/priorities?limit=10000 ({count} rows, {answers} answers): p95 {p95:.1?}, \
         worst {worst:.1?}"
    );
    assert!(p95 < Duration::from_millis(50), "p95 {p95:?}");
}
