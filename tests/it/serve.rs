//! `patchtrail serve` over a lake built by `replay`: the SQL API and its
//! formats, the priority queue, the hostile-query suite (refused or stopped
//! with a clear message while `/healthz` keeps answering), bearer tokens, and
//! new epochs becoming visible without a restart.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::Value;

/// A running `serve`, stopped when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(lake: &Path, extra: &[&str]) -> Server {
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
            .args(["serve", "--lake", path(lake), "--listen", &address, "--refresh-ms", "200"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawns");
        let started = Instant::now();
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "serve did not listen on {address}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, address }
    }

    /// One HTTP/1.1 request; (status, body).
    fn request(&self, method: &str, route: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let (status, _, body) = self.request_bytes(method, route, headers, body);
        (status, String::from_utf8(body).expect("a text body"))
    }

    /// One HTTP/1.1 request; (status, response headers, body bytes).
    fn request_bytes(&self, method: &str, route: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, Vec<u8>) {
        http(&self.address, method, route, headers, body)
    }

    fn sql(&self, query: &str) -> (u16, Value) {
        let body = serde_json::json!({ "sql": query }).to_string();
        let (status, body) = self.request("POST", "/v1/sql", &[], &body);
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lake_of(dir: &Path) -> std::path::PathBuf {
    simulated_lake(dir, 300, 6, 3)
}

/// The lake `replay` makes of a simulated fleet of `assets` over `days`.
fn simulated_lake(dir: &Path, assets: u32, days: u32, seed: u64) -> std::path::PathBuf {
    let (events, _) = simulate(dir, assets, days, seed, false);
    let lake = dir.join("lake");
    replay(&events, &lake, &[]);
    lake
}

#[test]
fn sql_answers_json_csv_and_arrow_and_priorities_the_queue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let server = Server::start(&lake, &["--max-rows", "5"]);
    let query = "SELECT severity, count(*) AS n FROM exposures GROUP BY severity ORDER BY severity";
    let (status, body) = server.sql(query);
    assert_eq!(status, 200, "{body}");
    let expected = sql(&lake, query);
    assert_eq!(body["row_count"].as_u64(), Some(expected.len() as u64), "{body}");
    assert_eq!(body["columns"][1], serde_json::json!({"name": "n", "type": "Int64"}));
    for (row, want) in body["rows"].as_array().expect("rows").iter().zip(&expected) {
        assert_eq!(row[0], want["severity"]);
        assert_eq!(row[1], want["n"]);
    }
    assert_eq!(body["truncated"], false);
    let (_, body) = server.sql("SELECT asset_id FROM exposures");
    assert_eq!((body["row_count"].as_u64(), &body["truncated"]), (Some(5), &Value::Bool(true)), "{body}");

    let request = serde_json::json!({ "sql": query }).to_string();
    let (status, csv) = server.request("POST", "/v1/sql", &[("Accept", "text/csv")], &request);
    assert_eq!(status, 200);
    assert!(csv.starts_with("severity,n\n"), "{csv}");
    assert_eq!(csv.lines().count(), expected.len() + 1, "{csv}");

    let arrow = [("Accept", "application/vnd.apache.arrow.stream")];
    let (status, head, bytes) = server.request_bytes("POST", "/v1/sql", &arrow, &request);
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/vnd.apache.arrow.stream"), "{head}");
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("an Arrow stream");
    assert_eq!(reader.schema().field(1).name(), "n");
    let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("Arrow batches");
    let counts: Vec<i64> = batches
        .iter()
        .flat_map(|batch| {
            let column = batch.column(1).as_any().downcast_ref::<arrow::array::Int64Array>().expect("Int64");
            column.values().to_vec()
        })
        .collect();
    let want: Vec<i64> = expected.iter().map(|row| row["n"].as_i64().expect("n")).collect();
    assert_eq!(counts, want);
    let request = serde_json::json!({ "sql": "SELECT asset_id FROM exposures" }).to_string();
    let (_, head, _) = server.request_bytes("POST", "/v1/sql", &arrow, &request);
    assert!(head.to_ascii_lowercase().contains("x-patchtrail-truncated: true"), "{head}");

    let (status, body) = server.request("GET", "/v1/priorities?limit=3", &[], "");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    let items = body["items"].as_array().expect("items");
    let top = sql(&lake, "SELECT asset_id, cve_id FROM priorities ORDER BY rank LIMIT 3");
    assert_eq!(items.len(), top.len());
    for (item, want) in items.iter().zip(&top) {
        assert_eq!((&item["asset_id"], &item["cve_id"]), (&want["asset_id"], &want["cve_id"]));
    }
    assert!(body["as_of"].is_string(), "{body}");
    for bad in ["/v1/priorities?limit=0", "/v1/priorities?limit=abc", "/v1/priorities?limit=6"] {
        let (status, body) = server.request("GET", bad, &[], "");
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("limit"), "{bad}: {body}");
    }
}

#[test]
fn hostile_queries_are_refused_or_stopped_and_health_keeps_answering() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let server = Server::start(&lake, &["--query-timeout-secs", "3", "--memory-limit-mib", "64"]);
    let refused = [
        ("DROP TABLE exposures", "DDL"),
        ("CREATE TABLE t AS SELECT 1", "DDL"),
        ("INSERT INTO exposures SELECT * FROM exposures", "DML"),
        ("DELETE FROM exposures", ""),
        ("COPY (SELECT * FROM exposures) TO '/tmp/patchtrail-stolen.csv'", "COPY"),
        ("CREATE EXTERNAL TABLE passwd STORED AS CSV LOCATION '/etc/passwd'", "DDL"),
        ("SET datafusion.execution.batch_size = 1", "Statement"),
        ("SELEC 1", "SQL error"),
        ("SELECT no_such_column FROM exposures", "no_such_column"),
        ("SELECT * FROM read_csv('/etc/passwd')", ""),
    ];
    for (query, reason) in refused {
        let (status, body) = server.sql(query);
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"].as_str().unwrap_or_else(|| panic!("{query}: an error message in {body}"));
        assert!(message.contains(reason), "{query}: {message}");
    }
    assert!(!Path::new("/tmp/patchtrail-stolen.csv").exists());
    for bad_body in ["not json", "{\"query\": \"SELECT 1\"}"] {
        let (status, body) = server.request("POST", "/v1/sql", &[], bad_body);
        assert_eq!(status, 400, "{bad_body}: {body}");
        assert!(body.contains("error"), "{body}");
    }

    // A cross join that would need far more than the memory pool, and a query
    // that would run for minutes: each is stopped with its reason while
    // /healthz answers.
    let heavy = [
        "SELECT a.asset_id, b.asset_id, c.asset_id FROM exposures_history a, exposures_history b, \
         exposures_history c ORDER BY a.detected_at, b.detected_at, c.detected_at",
        "SELECT count(*) FROM exposures_history a, exposures_history b, exposures_history c \
         WHERE a.cve_id || b.cve_id <> c.asset_id",
    ];
    for query in heavy {
        let server_address = server.address.clone();
        let started = Instant::now();
        let worst = std::thread::scope(|scope| {
            let probe = scope.spawn(|| {
                let mut worst = Duration::ZERO;
                while started.elapsed() < Duration::from_millis(2500) {
                    let sent = Instant::now();
                    let mut stream = std::net::TcpStream::connect(&server_address).expect("connects");
                    write!(stream, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("writes");
                    let mut response = String::new();
                    stream.read_to_string(&mut response).expect("reads");
                    assert!(response.ends_with("ok"), "{response}");
                    worst = worst.max(sent.elapsed());
                    std::thread::sleep(Duration::from_millis(100));
                }
                worst
            });
            let (status, body) = server.sql(query);
            // A limit, not the client's mistake: 422 with the reason.
            assert_eq!(status, 422, "{query}: {body}");
            assert_eq!(body["class"], "limit", "{query}: {body}");
            let message = body["error"].as_str().expect("an error message");
            assert!(
                message.contains("limit") || message.contains("memory") || message.contains("Resources"),
                "{query}: {message}"
            );
            eprintln!("stopped after {:?}: {message}", started.elapsed());
            probe.join().expect("probe")
        });
        eprintln!("/healthz answered within {worst:?} at worst while the query ran");
        assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");
    }
    // A stopped query lets go of its memory at its next yield point: moments later.
    let started = Instant::now();
    loop {
        let (status, body) = server.sql("SELECT count(*) FROM exposures");
        if status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the server answers after stopping queries: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_token_guards_every_route_but_healthz() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let server = Server::start(&lake, &["--token", "s3cret"]);
    let body = serde_json::json!({ "sql": "SELECT 1" }).to_string();
    for (method, route) in [("POST", "/v1/sql"), ("GET", "/v1/priorities"), ("GET", "/metrics")] {
        let (status, _) = server.request(method, route, &[], &body);
        assert_eq!(status, 401, "{route} without a token");
        let (status, _) = server.request(method, route, &[("Authorization", "Bearer wrong")], &body);
        assert_eq!(status, 401, "{route} with a wrong token");
        let (status, answer) = server.request(method, route, &[("Authorization", "Bearer s3cret")], &body);
        assert_eq!(status, 200, "{route} with the token: {answer}");
    }
    assert_eq!(server.request("GET", "/healthz", &[], "").0, 200);
    let (_, metrics) = server.request("GET", "/metrics", &[("Authorization", "Bearer s3cret")], "");
    // Each request counted under its route and status; the one query timed.
    let series = |name: &str, labels: &[&str]| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(name) && labels.iter().all(|label| line.contains(label)))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    for route in ["/v1/sql", "/v1/priorities"] {
        let route = format!("route=\"{route}\"");
        assert_eq!(series("patchtrail_http_requests_total{", &[&route, "status=\"401\""]), 2.0, "{route}: {metrics}");
        assert_eq!(series("patchtrail_http_requests_total{", &[&route, "status=\"200\""]), 1.0, "{route}: {metrics}");
    }
    assert_eq!(series("patchtrail_query_duration_seconds_count", &[]), 1.0, "{metrics}");
}

#[test]
fn new_epochs_show_without_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 300, 6, 4, false);
    let all = std::fs::read_to_string(&events).expect("events");
    let lines: Vec<&str> = all.lines().collect();
    // The first half now, the whole file later: replay continues from the lake's state.
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, lines[..lines.len() / 2].join("\n") + "\n").expect("writes");
    let lake = dir.path().join("lake");
    replay(&input, &lake, &[]);
    let server = Server::start(&lake, &[]);
    let count = |server: &Server| server.sql("SELECT count(*) AS n FROM exposures_history").1["rows"][0][0].as_u64();
    let before = count(&server).expect("a count");
    std::fs::write(&input, all).expect("writes");
    replay(&input, &lake, &[]);
    let expected = sql(&lake, "SELECT count(*) AS n FROM exposures_history")[0]["n"].as_u64();
    assert!(expected > Some(before), "the second replay added rows");
    let started = Instant::now();
    while count(&server) != expected {
        assert!(started.elapsed() < Duration::from_secs(10), "new epochs not visible after 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Prometheus server (Debian's `prometheus`) scraping `target` every second
/// on a free port of 127.0.0.1, stopped when dropped.
struct Prometheus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: patchtrail\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("config");
        let address = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts (install it: apt-get install prometheus)");
        Prometheus { child, address, _dir: dir }
    }

    /// The value of an instant query with one series, once Prometheus has it.
    fn value(&self, query: &str) -> Option<f64> {
        self.result(query)?[0]["value"][1].as_str()?.parse().ok()
    }

    /// An instant query's series, by the value of `label`.
    fn by_label(&self, query: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
        let result = self.result(query).unwrap_or_default();
        result
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|series| {
                let name = series["metric"][label].as_str()?.to_owned();
                Some((name, series["value"][1].as_str()?.parse().ok()?))
            })
            .collect()
    }

    fn result(&self, query: &str) -> Option<Value> {
        let encoded: String = query
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let route = format!("/api/v1/query?query={encoded}");
        let mut stream = std::net::TcpStream::connect(&self.address).ok()?;
        write!(stream, "GET {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let body: Value = serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()?;
        Some(body["data"]["result"].clone()).filter(|result| result.as_array().is_some_and(|r| !r.is_empty()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_lake_figures() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A month: exposures both breached and remediated in time, so the SLA
    // compliance panel below is checked on a lake where formulas differ.
    let lake = simulated_lake(dir.path(), 200, 30, 3);
    let server = Server::start(&lake, &[]);
    let (status, exposition) = server.request("GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    for name in [
        "patchtrail_time_to_patch_seconds_bucket",
        "patchtrail_open_exposures",
        "patchtrail_sla_breaches_total",
        "patchtrail_canary_gate_total",
        "patchtrail_alerts_total",
        "patchtrail_segmentation_drift_ratio",
    ] {
        assert!(exposition.contains(name), "{name} in {exposition}");
    }
    // promtool accepts the exposition.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (install it: apt-get install prometheus)");
    promtool.stdin.take().expect("stdin").write_all(exposition.as_bytes()).expect("writes");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let open = sql(&lake, "SELECT count(*) AS n FROM exposures WHERE status = 'open'")[0]["n"].as_f64();
    let breached = sql(&lake, "SELECT count(*) AS n FROM exposures WHERE breached")[0]["n"].as_f64();
    assert!(open > Some(0.0), "the scenario has open exposures");
    let prometheus = Prometheus::start(&server.address);
    let started = Instant::now();
    loop {
        let scraped = prometheus.value("sum(patchtrail_open_exposures)");
        if scraped.is_some() {
            assert_eq!(scraped, open, "open exposures as Prometheus stores them");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "Prometheus never scraped serve");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(prometheus.value("sum(patchtrail_sla_breaches_total)"), breached);
    // The histogram counts what the NIST matrix counts: one definition of a patch's severity.
    let remediated = sql(&lake, "SELECT sum(remediated_patches) AS n FROM ttp_matrix")[0]["n"].as_f64();
    assert!(remediated > Some(0.0), "the scenario remediates patches");
    assert_eq!(prometheus.value("sum(patchtrail_time_to_patch_seconds_count)"), remediated);
    // The dashboard's SLA compliance panel says what the sla_compliance view says.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/dashboards/patchtrail.json"),
        )
        .expect("dashboard"),
    )
    .expect("JSON");
    let panel = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|panel| panel["title"] == "SLA compliance by severity")
        .expect("the SLA compliance panel");
    let panel_expr = panel["targets"][0]["expr"].as_str().expect("expr");
    let view = sql(
        &lake,
        "SELECT severity, 1.0 - CAST(sum(breached) AS DOUBLE) / sum(exposures) AS compliance \
         FROM sla_compliance WHERE severity IS NOT NULL GROUP BY severity",
    );
    let in_time = sql(&lake, "SELECT count(*) AS n FROM exposures WHERE status = 'remediated' AND NOT breached");
    assert!(in_time[0]["n"].as_f64() > Some(0.0) && breached > Some(0.0), "breached and in-time exposures");
    let panel_values = prometheus.by_label(panel_expr, "severity");
    assert!(view.len() >= 2, "the scenario has exposures of several severities: {view:?}");
    for row in &view {
        let severity = row["severity"].as_str().expect("severity");
        let want = row["compliance"].as_f64().expect("compliance");
        let got = panel_values.get(severity).copied();
        assert!(got.is_some_and(|got| (got - want).abs() < 1e-9), "{severity}: panel {got:?}, view {want}");
    }
}

/// A series' key: its name and its labels sorted by name (`name{a="x",b="y"}`).
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// The series of a Prometheus text exposition: [`key`] → value.
fn series(exposition: &str) -> std::collections::BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let Some((name, labels)) = series.split_once('{') else { return Some((series.to_owned(), value)) };
            let labels: Vec<(&str, &str)> = labels
                .trim_end_matches('}')
                .split(',')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            Some((key(name, &labels), value))
        })
        .collect()
}

/// Each value of a `label, n` query as the series `metric{label="…"}`.
fn expected(lake: &Path, metric: &str, label: &str, query: &str) -> std::collections::BTreeMap<String, f64> {
    sql(lake, query)
        .iter()
        .map(|row| {
            let value = row[label].as_str().expect("a label value");
            (key(metric, &[(label, value)]), row["n"].as_f64().expect("a count"))
        })
        .collect()
}

#[test]
fn the_domain_metrics_are_the_lakes_figures() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A month, so that some exposures are past their due dates.
    let lake = simulated_lake(dir.path(), 300, 30, 5);
    let server = Server::start(&lake, &[]);
    let (status, exposition) = server.request("GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    let series = series(&exposition);
    let family = |name: &str| -> std::collections::BTreeMap<String, f64> {
        series.iter().filter(|(key, _)| key.starts_with(&format!("{name}{{"))).map(|(k, v)| (k.clone(), *v)).collect()
    };

    let open = sql(
        &lake,
        "SELECT coalesce(severity, 'unknown') AS severity, CAST(kev AS VARCHAR) AS kev, count(*) AS n \
         FROM exposures WHERE status = 'open' GROUP BY 1, 2",
    );
    let open: std::collections::BTreeMap<String, f64> = open
        .iter()
        .map(|row| {
            let severity = row["severity"].as_str().expect("severity");
            let labels = [("severity", severity), ("kev", row["kev"].as_str().expect("kev"))];
            (key("patchtrail_open_exposures", &labels), row["n"].as_f64().expect("n"))
        })
        .collect();
    assert!(!open.is_empty(), "the scenario has open exposures");
    assert_eq!(family("patchtrail_open_exposures"), open);

    // Counters: every label the lake has, with its count (known labels start at zero).
    for (metric, label, query) in [
        (
            "patchtrail_sla_breaches_total",
            "severity",
            "SELECT coalesce(severity, 'unknown') AS severity, count(*) AS n FROM exposures WHERE breached GROUP BY 1",
        ),
        ("patchtrail_canary_gate_total", "gate", "SELECT gate, count(*) AS n FROM canary_rollups GROUP BY 1"),
        ("patchtrail_alerts_total", "rule", "SELECT rule, count(*) AS n FROM alerts GROUP BY 1"),
    ] {
        let want = expected(&lake, metric, label, query);
        assert!(!want.is_empty(), "{metric}: the scenario has some");
        let got = family(metric);
        for (key, n) in &want {
            assert_eq!(got.get(key), Some(n), "{key}");
        }
        assert!(got.iter().all(|(key, n)| want.contains_key(key) || *n == 0.0), "{metric}: {got:?} vs {want:?}");
    }

    // The histogram: per severity and environment, the count and sum of time-to-patch.
    let ttp = sql(
        &lake,
        "SELECT s.severity, coalesce(a.environment, 'unknown') AS environment, count(*) AS n, \
         sum(o.time_to_patch_s) AS total, sum(CASE WHEN o.time_to_patch_s <= 86400.0 THEN 1 ELSE 0 END) AS day \
         FROM patch_outcomes o JOIN outcome_severity s ON s.asset_id = o.asset_id AND s.patch_id = o.patch_id \
         LEFT JOIN assets a ON a.asset_id = o.asset_id WHERE o.time_to_patch_s IS NOT NULL GROUP BY 1, 2",
    );
    assert!(!ttp.is_empty(), "the scenario remediates patches");
    for row in &ttp {
        let severity = row["severity"].as_str().expect("severity");
        let labels = [("severity", severity), ("environment", row["environment"].as_str().expect("environment"))];
        let get = |name: &str, extra: &[(&str, &str)]| series.get(&key(name, &[&labels[..], extra].concat())).copied();
        assert_eq!(get("patchtrail_time_to_patch_seconds_count", &[]), row["n"].as_f64(), "{labels:?}");
        let day = get("patchtrail_time_to_patch_seconds_bucket", &[("le", "86400")]);
        assert_eq!(day, row["day"].as_f64(), "{labels:?}");
        let sum = get("patchtrail_time_to_patch_seconds_sum", &[]).expect("a sum");
        assert!((sum - row["total"].as_f64().expect("total")).abs() < 1e-3, "{labels:?}: {sum} vs {}", row["total"]);
    }
    assert_eq!(family("patchtrail_time_to_patch_seconds_count").len(), ttp.len());

    // The worst segment pairs, from drift_summary.
    let worst = sql(
        &lake,
        "SELECT src_segment, dst_segment, drift_ratio FROM drift_summary \
         ORDER BY drift_ratio DESC, src_segment, dst_segment LIMIT 20",
    );
    let drift = family("patchtrail_segmentation_drift_ratio");
    assert_eq!(drift.len(), worst.len());
    for row in &worst {
        let src = row["src_segment"].as_str().expect("src");
        let name = key(
            "patchtrail_segmentation_drift_ratio",
            &[("src_segment", src), ("dst_segment", row["dst_segment"].as_str().expect("dst"))],
        );
        let got = drift.get(&name).copied().unwrap_or(f64::NAN);
        assert!((got - row["drift_ratio"].as_f64().expect("ratio")).abs() < 1e-9, "{name}: {got}");
    }
}

#[test]
fn errors_answer_with_the_status_of_their_class() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let server = Server::start(&lake, &["--memory-limit-mib", "64"]);
    // The caller's mistake.
    let (status, body) = server.sql("SELEC 1");
    assert_eq!((status, &body["class"]), (400, &Value::from("input")), "{body}");
    // A limit.
    let (status, body) = server.sql(
        "SELECT a.asset_id, b.asset_id, c.asset_id FROM exposures_history a, exposures_history b, \
         exposures_history c ORDER BY a.detected_at, b.detected_at, c.detected_at",
    );
    assert_eq!((status, &body["class"]), (422, &Value::from("limit")), "{body}");
    // A body announced too large is refused unread.
    let mut stream = std::net::TcpStream::connect(&server.address).expect("connects");
    write!(stream, "POST /v1/sql HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", 2 << 20)
        .expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    // A committed file that is not Parquet any more: corrupt state, the server's fault.
    let file = std::fs::read_dir(lake.join("exposures_history"))
        .expect("exposures_history dir")
        .flat_map(|date| std::fs::read_dir(date.expect("entry").path()).expect("date dir"))
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.extension().is_some_and(|e| e == "parquet"))
        .expect("a parquet file");
    std::fs::write(&file, b"not parquet").expect("overwrites");
    let (status, body) = server.sql("SELECT count(DISTINCT cve_id) FROM exposures_history");
    assert_eq!((status, &body["class"]), (500, &Value::from("internal")), "{body}");
}

#[test]
fn the_priority_queue_is_published_to_its_compacted_topic() {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let dir = tempfile::tempdir().expect("temp dir");
    let lake = lake_of(dir.path());
    let broker = ingest::kafka::EmbeddedBroker::start().expect("the mock cluster starts");
    let topic = ingest::kafka::TopicNames::default().priorities;
    // The mock cluster takes no admin requests: the topic is made here.
    broker.create_topics(&[ingest::kafka::TopicSpec { name: &topic, partitions: 1, compacted: true }]).expect("topic");
    let brokers = broker.bootstrap_servers();
    let _server = Server::start(&lake, &["--brokers", &brokers, "--priorities-interval-secs", "1"]);

    let expected: std::collections::BTreeMap<String, u64> =
        sql(&lake, "SELECT asset_id || '/' || cve_id AS key, rank FROM priorities")
            .iter()
            .map(|row| (row["key"].as_str().expect("key").to_owned(), row["rank"].as_u64().expect("rank")))
            .collect();
    assert!(!expected.is_empty(), "the scenario has a priority queue");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "patchtrail-test-priorities")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribes");
    let mut seen = std::collections::BTreeMap::new();
    let started = Instant::now();
    while seen.len() < expected.len() {
        assert!(started.elapsed() < Duration::from_secs(60), "{} of {} rows published", seen.len(), expected.len());
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("message");
        let key = String::from_utf8(message.key().expect("a key").to_vec()).expect("UTF-8");
        let row: Value = serde_json::from_slice(message.payload().expect("a value")).expect("JSON");
        assert_eq!(key, format!("{}/{}", row["asset_id"].as_str().expect("id"), row["cve_id"].as_str().expect("cve")));
        seen.insert(key, row["rank"].as_u64().expect("rank"));
    }
    assert_eq!(seen, expected);
}
