//! The docker-compose deployment, tested as far as this machine can without
//! Docker: the compose file parses, names files that exist and runs
//! patchtrail with flags it has; `promtool check config` accepts the
//! Prometheus configuration; every metric the Grafana dashboard queries is
//! in the real `/metrics` of `run` and `serve`; docs/metrics.md lists exactly
//! the tables, views and metrics the code has.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use ingest::kafka::EmbeddedBroker;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(file: &Path) -> Value {
    let output = Command::new("python3")
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(file)
        .output()
        .expect("python3 runs (with PyYAML: apt-get install python3-yaml)");
    assert!(output.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn the_compose_file_parses_and_everything_it_names_exists() {
    let compose = yaml(&root().join("docker-compose.yml"));
    let services = compose["services"].as_object().expect("services");
    for name in ["kafka", "kafka-init", "simulate", "run-1", "run-2", "serve", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    assert!(compose["services"]["kafka"]["image"].as_str().is_some_and(|i| i.starts_with("apache/kafka:")));
    assert_eq!(compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "broker,controller", "KRaft");
    assert!(root().join("Dockerfile").is_file());
    let mut groups = Vec::new();
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let host = volume.as_str().expect("short volume syntax").split(':').next().expect("host part");
            if host.starts_with('.') {
                assert!(root().join(host).exists(), "{name}: {host} does not exist");
            }
        }
        if service["build"] == "." {
            // Every patchtrail command line must use flags the binary has.
            let args: Vec<&str> =
                service["command"].as_array().expect("command").iter().filter_map(Value::as_str).collect();
            let help = patchtrail(&[args[0], "--help"]);
            assert!(help.status.success(), "{name}: no subcommand {}", args[0]);
            let help = String::from_utf8_lossy(&help.stdout);
            for flag in args.iter().filter(|a| a.starts_with("--")) {
                assert!(help.contains(flag), "{name}: `patchtrail {}` has no {flag}", args[0]);
            }
            if args[0] == "run" {
                let at = args.iter().position(|a| *a == "--group").expect("--group");
                groups.push(args[at + 1].to_owned());
            }
        }
    }
    assert_eq!(groups.len(), 2, "two pipeline instances");
    assert_eq!(groups[0], groups[1], "in one consumer group");
    // Published ports bind to the loopback only, and the query API takes its token from a secret.
    for (name, service) in services {
        for port in service["ports"].as_array().into_iter().flatten() {
            assert!(
                port.as_str().is_some_and(|p| p.starts_with("127.0.0.1:")),
                "{name} publishes {port} beyond localhost"
            );
        }
    }
    let serve: Vec<&str> =
        services["serve"]["command"].as_array().expect("command").iter().filter_map(Value::as_str).collect();
    assert!(serve.windows(2).any(|w| w == ["--token-file", "/run/secrets/serve_token"]), "{serve:?}");
    assert_eq!(compose["secrets"]["serve_token"]["environment"], "PATCHTRAIL_SERVE_TOKEN");
}

#[test]
fn promtool_accepts_the_prometheus_configuration() {
    // The whole check, files included: the compose secret, where the container has it, is a file here.
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("serve_token");
    std::fs::write(&token, "a-token").expect("token");
    let config = std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).expect("config");
    assert!(config.contains("credentials_file: /run/secrets/serve_token"), "serve is scraped with its token");
    let config = config.replace("/run/secrets/serve_token", path(&token));
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, config).expect("config");
    let output = Command::new("promtool")
        .args(["check", "config"])
        .arg(&file)
        .output()
        .expect("promtool runs (apt-get install prometheus)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The metric names an exposition declares (`# TYPE`) and has series of.
fn exposed(address: &str) -> BTreeSet<String> {
    exposition(address).1
}

/// The metric families an exposition declares (`# TYPE`).
fn declared(address: &str) -> BTreeSet<String> {
    exposition(address).0
}

fn exposition(address: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").expect("writes");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("reads");
    let (mut families, mut names) = (BTreeSet::new(), BTreeSet::new());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let family = rest.split(' ').next().unwrap_or_default().to_owned();
            families.insert(family.clone());
            names.insert(family);
        } else if line.starts_with("patchtrail_") {
            names.insert(line.split(['{', ' ']).next().unwrap_or_default().to_owned());
        }
    }
    (families, names)
}

/// Every series of the exposition at `address`: `name{labels}` → value.
fn values(address: &str) -> Vec<(String, f64)> {
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").expect("writes");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("reads");
    text.lines()
        .filter(|line| line.starts_with("patchtrail_"))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The metric name of a series.
fn metric_of(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// The names in the first column of the tables under `## {section}` of docs/metrics.md.
fn documented(section: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("docs/metrics.md")).expect("docs/metrics.md");
    let start = text.find(&format!("## {section}\n")).unwrap_or_else(|| panic!("section {section}"));
    let body = &text[start + section.len() + 4..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn the_metrics_reference_lists_every_table_and_view() {
    let tables: BTreeSet<String> = schemas::Table::ALL.iter().map(|table| table.name().to_owned()).collect();
    assert_eq!(documented("Tables"), tables);
    let mut views: BTreeSet<String> = queries::VIEWS.iter().map(|(name, _)| (*name).to_owned()).collect();
    views.insert("priorities".to_owned());
    assert_eq!(documented("Views"), views);
}

fn wait_for(address: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(address).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "nothing listens on {address}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_dashboard_and_the_metrics_reference_match_what_run_and_serve_expose() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/patchtrail.json")).expect("dashboard"),
    )
    .expect("JSON");
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("patchtrail_") {
                let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 12, "{queried:?}");

    // The pipeline's metrics, from `run` over the embedded broker.
    let broker = EmbeddedBroker::start().expect("broker");
    let brokers = broker.bootstrap_servers();
    let names = ingest::kafka::TopicNames::default();
    let specs: Vec<ingest::kafka::TopicSpec<'_>> = schemas::InputTopic::ALL
        .iter()
        .map(|&t| ingest::kafka::TopicSpec { name: names.input(t), partitions: 2, compacted: false })
        .chain(
            [&names.alerts, &names.reevaluations, &names.dlq, &names.priorities]
                .into_iter()
                .map(|name| ingest::kafka::TopicSpec { name, partitions: 2, compacted: false }),
        )
        .collect();
    broker.create_topics(&specs).expect("topics");
    let simulate = ["simulate", "--assets", "100", "--days", "4", "--seed", "3", "--malformed-ratio", "0.01"];
    let output = patchtrail(&[&simulate[..], &["--brokers", &brokers, "--partitions", "2"]].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dir = tempfile::tempdir().expect("temp dir");
    // The same scenario's truth: how many lines are valid and how many dead letters.
    let truth_file = dir.path().join("truth.json");
    let output = patchtrail(&[&simulate[..], &["--out", "/dev/null", "--truth", path(&truth_file)]].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let truth: Value = serde_json::from_slice(&std::fs::read(&truth_file).expect("truth")).expect("JSON");
    let total = truth["lines"]["total"].as_f64().expect("total");
    let invalid = truth["lines"]["invalid"].as_f64().expect("invalid");
    assert!(invalid > 0.0, "the scenario has dead letters");
    let lake = dir.path().join("lake");
    let metrics = format!("127.0.0.1:{}", free_port());
    let _run = Stop(
        Command::new(env!("CARGO_BIN_EXE_patchtrail"))
            .args(["run", "--brokers", &brokers, "--lake", path(&lake), "--metrics-listen", &metrics])
            .args(["--commit-interval-ms", "300"])
            // Readers see epochs once published to the Delta tables: each second here.
            .env("PATCHTRAIL__LAKE__PUBLISH_INTERVAL_SECS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawns"),
    );
    wait_for(&metrics);
    let started = Instant::now();
    let mut names_exposed = exposed(&metrics);
    let mut families = BTreeSet::new();
    let reported = ["consumer_lag_messages", "watermark_lag_seconds", "events_dead_lettered_total"];
    while !reported.iter().all(|name| names_exposed.contains(&format!("patchtrail_{name}"))) {
        assert!(started.elapsed() < Duration::from_secs(60), "run exposes {names_exposed:?}");
        std::thread::sleep(Duration::from_millis(300));
        names_exposed = exposed(&metrics);
    }

    families.extend(declared(&metrics));
    // The pipeline's figures are the scenario's: every valid line consumed, every invalid one dead-lettered,
    // no lag once caught up.
    let started = Instant::now();
    loop {
        let values = values(&metrics);
        let sum = |name: &str| values.iter().filter(|(k, _)| metric_of(k) == name).map(|(_, v)| v).sum::<f64>();
        let lags: Vec<f64> = values
            .iter()
            .filter(|(k, _)| metric_of(k) == "patchtrail_consumer_lag_messages")
            .map(|(_, v)| *v)
            .collect();
        let caught_up = sum("patchtrail_events_consumed_total") == total - invalid
            && sum("patchtrail_events_dead_lettered_total") == invalid
            && !lags.is_empty()
            && lags.iter().all(|lag| *lag == 0.0)
            // The publisher thread has made what was committed visible.
            && sum("patchtrail_lake_publications_total") >= 1.0
            && sum("patchtrail_lake_publication_duration_seconds_count") >= 1.0;
        if caught_up {
            assert!(sum("patchtrail_commits_total") >= 1.0, "{values:?}");
            assert!(sum("patchtrail_watermark_lag_seconds") > 0.0, "{values:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "run's figures never matched the scenario: {values:?}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // The lake's domain metrics and the query service's own, from `serve`.
    let listen = format!("127.0.0.1:{}", free_port());
    let _serve = Stop(
        Command::new(env!("CARGO_BIN_EXE_patchtrail"))
            .args(["serve", "--lake", path(&lake), "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawns"),
    );
    wait_for(&listen);
    // One query, so the request and query-duration series exist.
    let mut stream = std::net::TcpStream::connect(&listen).expect("connects");
    let body = r#"{"sql": "SELECT 1"}"#;
    write!(
        stream,
        "POST /v1/sql HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("writes");
    let mut ignored = String::new();
    stream.read_to_string(&mut ignored).expect("reads");
    // The lake's figures appear once serve has opened a publication holding them.
    let started = Instant::now();
    while !declared(&listen).contains("patchtrail_open_exposures") {
        assert!(started.elapsed() < Duration::from_secs(30), "serve never showed the lake's metrics");
        std::thread::sleep(Duration::from_millis(300));
    }
    names_exposed.extend(exposed(&listen));
    families.extend(declared(&listen));
    // docs/metrics.md lists exactly what the code registers.
    assert_eq!(documented("Prometheus metrics"), families, "docs/metrics.md against the code");

    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| {
            !names_exposed.contains(*name)
                && !["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix).is_some_and(|base| names_exposed.contains(base)))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nothing exposes: {missing:?}\nexposed: {names_exposed:?}"
    );
}
