//! `patchtrail import` on the real files in tests/data/formats (copied as they
//! are from ../shared/formats, provenance in their SOURCES.md): every event
//! it writes is valid, importing twice adds nothing to the lake, and the lake
//! says what the files say, read here from the files themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn formats() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/formats")
}

fn sample(path: &str) -> String {
    formats().join(path).to_str().expect("UTF-8").to_owned()
}

fn json(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(formats().join(path)).expect("a sample")).expect("JSON")
}

/// Runs `patchtrail import` with `args`, writing to `out`; returns (exit code, stderr).
fn import(out: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", path(out)]);
    let output = patchtrail(&all);
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn validate(file: &Path) {
    let output = patchtrail(&["validate", path(file)]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
}

fn lines(file: &Path) -> usize {
    std::fs::read_to_string(file).expect("output").lines().count()
}

#[test]
fn the_kev_catalog_becomes_one_valid_event_per_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("kev.jsonl");
    let (code, summary) = import(&out, &["kev", &sample("kev/known_exploited_vulnerabilities.json")]);
    assert_eq!(code, Some(0), "{summary}");
    let entries =
        json("kev/known_exploited_vulnerabilities.json")["vulnerabilities"].as_array().expect("entries").len();
    assert_eq!(entries, 1404);
    assert_eq!(lines(&out), entries);
    let counted = summary.lines().any(|line| line.split_whitespace().collect::<Vec<_>>() == ["vuln.kev.v1", "1404"]);
    assert!(counted, "{summary}");
    validate(&out);
    // Again: the same events, byte for byte (ids come from the records).
    let again = dir.path().join("again.jsonl");
    import(&again, &["kev", &sample("kev/known_exploited_vulnerabilities.json")]);
    assert_eq!(std::fs::read(&out).expect("first"), std::fs::read(&again).expect("second"));
}

#[test]
fn every_sample_imports_with_a_summary_and_valid_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("epss", vec![sample("epss/lodestone-epss_scores-current-excerpt.csv"), sample("epss/vunnel-example-1.csv")]),
        (
            "nvd",
            vec![
                sample("nvd/vunnel-single-entry-CVE-2022-1576.json"),
                sample("nvd/vuln-list-update-respPage2-CVE-2024-5732.json"),
                sample("nvd/grype-cve-2022-0543-record.json"),
            ],
        ),
        (
            "trivy",
            vec![
                sample("trivy/alpine-310.json"),
                sample("trivy/debian-buster.json"),
                sample("trivy/fluentd-gems.json"),
            ],
        ),
        ("grype", vec![sample("grype/defectdojo-busybox-epss.json"), sample("grype/grype-TestJsonImgsPresenter.json")]),
    ];
    for (format, files) in cases {
        let out = dir.path().join(format!("{format}.jsonl"));
        let mut args: Vec<&str> = vec![format];
        args.extend(files.iter().map(String::as_str));
        if matches!(format, "trivy" | "grype") {
            args.extend_from_slice(&["--asset-from", "artifact"]);
        }
        if format == "grype" {
            // Grype's own golden file has an empty descriptor.timestamp.
            args.extend_from_slice(&["--time", "2022-01-01T00:00:00Z"]);
        }
        let (code, summary) = import(&out, &args);
        assert_eq!(code, Some(0), "{format}: {summary}");
        assert!(summary.contains("read ") && summary.contains("events"), "{format}: {summary}");
        assert!(lines(&out) > 0, "{format} wrote nothing: {summary}");
        validate(&out);
    }
    // A report without a scan time is refused unless --time gives one; the exit status says so.
    let out = dir.path().join("undated.jsonl");
    let file = sample("grype/defectdojo-check_all_fields.json");
    let (code, summary) = import(&out, &["grype", &file, "--asset-from", "artifact"]);
    assert_eq!(code, Some(1), "{summary}");
    assert!(summary.contains("--time"), "{summary}");
    let (code, summary) = import(&out, &["grype", &file, "--asset-from", "artifact", "--time", "2022-01-01T00:00:00Z"]);
    assert_eq!(code, Some(0), "{summary}");
    validate(&out);
    // A scan names no host by itself.
    let (code, summary) = import(&out, &["trivy", &sample("trivy/alpine-310.json")]);
    assert_eq!(code, Some(2), "{summary}");
    assert!(summary.contains("--asset"), "{summary}");
}

/// The severity band of a CVSS score (DOMAIN.md).
fn band(score: f64) -> &'static str {
    match score {
        s if s >= 9.0 => "critical",
        s if s >= 7.0 => "high",
        s if s >= 4.0 => "medium",
        _ => "low",
    }
}

#[test]
fn imported_feeds_and_scans_give_the_lake_what_the_files_say() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = |name: &str| dir.path().join(name);
    let trivy = ["trivy/alpine-310.json", "trivy/debian-buster.json", "trivy/fluentd-gems.json"];
    let grype = "grype/defectdojo-busybox-epss.json";
    // The inventory of the scanned artifacts, named as the scans name them.
    let mut csv =
        String::from("asset_id,hostname,environment,criticality,internet_exposed,segment,os_family,labels.team\n");
    for (n, file) in trivy.iter().enumerate() {
        let report = json(file);
        let name = report["ArtifactName"].as_str().expect("ArtifactName");
        let os = report["Metadata"]["OS"]["Family"].as_str().unwrap_or("");
        csv.push_str(&format!(
            "{name},host-{n}.example,cloud,{},{},apps,{os},platform\n",
            ["high", "moderate", "low"][n],
            n == 0
        ));
    }
    let busybox = json(grype)["source"]["target"]["userInput"].as_str().expect("userInput").to_owned();
    csv.push_str(&format!("{busybox},edge-1.example,edge,high,true,branch,busybox,edge\n"));
    std::fs::write(d("inventory.csv"), csv).expect("writes");

    let steps: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        ("kev", vec![sample("kev/known_exploited_vulnerabilities.json")], vec![]),
        ("epss", vec![sample("epss/vunnel-example-1.csv")], vec![]),
        (
            "nvd",
            vec![
                sample("nvd/vuln-list-update-respPage2-CVE-2024-5732.json"),
                sample("nvd/grype-cve-2022-0543-record.json"),
            ],
            vec![],
        ),
        (
            "inventory",
            vec![d("inventory.csv").to_str().expect("UTF-8").to_owned()],
            vec!["--time", "2021-08-01T00:00:00Z"],
        ),
        ("trivy", trivy.iter().map(|f| sample(f)).collect(), vec!["--asset-from", "artifact"]),
        ("grype", vec![sample(grype)], vec!["--asset-from", "artifact"]),
    ];
    let events = d("events.jsonl");
    let mut all = String::new();
    for (format, files, flags) in &steps {
        let out = d(&format!("{format}.jsonl"));
        let mut args: Vec<&str> = vec![format];
        args.extend(files.iter().map(String::as_str));
        args.extend(flags.iter());
        let (code, summary) = import(&out, &args);
        assert_eq!(code, Some(0), "{format}: {summary}");
        all.push_str(&std::fs::read_to_string(&out).expect("events"));
    }
    std::fs::write(&events, &all).expect("writes");
    let lake = d("lake");
    replay(&events, &lake, &["--partitions", "2"]);

    // The catalog: KEV's dates, NVD's score (NVD's own before the CNA's), EPSS's.
    let kev = json("kev/known_exploited_vulnerabilities.json");
    let kev_rows =
        sql(&lake, "SELECT cve_id, CAST(kev_due_date AS VARCHAR) AS due FROM cves WHERE kev ORDER BY cve_id");
    let expected: BTreeMap<String, Option<String>> = kev["vulnerabilities"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|v| (v["cveID"].as_str().unwrap_or("").to_owned(), v["dueDate"].as_str().map(str::to_owned)))
        .collect();
    let found: BTreeMap<String, Option<String>> = kev_rows
        .iter()
        .map(|r| (r["cve_id"].as_str().unwrap_or("").to_owned(), r["due"].as_str().map(str::to_owned)))
        .collect();
    // NVD's CVE-2022-0543 is in the catalog too: KEV's dates win, and it stays one row.
    assert_eq!(found, expected);
    let nvd = json("nvd/vuln-list-update-respPage2-CVE-2024-5732.json");
    let metrics = &nvd["vulnerabilities"][0]["cve"]["metrics"];
    let primary = metrics["cvssMetricV31"]
        .as_array()
        .expect("v3.1")
        .iter()
        .find(|m| m["type"] == "Primary")
        .and_then(|m| m["cvssData"]["baseScore"].as_f64())
        .expect("NVD's own score");
    let row = sql(&lake, "SELECT cvss_base, cvss_version, severity FROM cves WHERE cve_id = 'CVE-2024-5732'");
    assert_eq!(row[0]["cvss_base"].as_f64(), Some(primary));
    assert_eq!(row[0]["severity"].as_str(), Some(band(primary)));
    let epss_line = std::fs::read_to_string(formats().join("epss/vunnel-example-1.csv"))
        .expect("epss")
        .lines()
        .find(|l| l.starts_with("CVE-1999-0002,"))
        .map(str::to_owned)
        .expect("a row");
    let score: f64 = epss_line.split(',').nth(1).and_then(|s| s.parse().ok()).expect("a score");
    let row = sql(&lake, "SELECT epss, cvss_base FROM cves WHERE cve_id = 'CVE-1999-0002'");
    assert_eq!(row[0]["epss"].as_f64(), Some(score));
    assert!(row[0]["cvss_base"].is_null(), "EPSS gives no CVSS: {row:?}");

    // Exposures: one per (artifact, CVE) listed, open, with the scanner's severity
    // (no NVD record covers these CVEs): Trivy's CVSS of its severity source, else NVD's.
    let mut expected: BTreeMap<(String, String), &'static str> = BTreeMap::new();
    for file in trivy {
        let report = json(file);
        let asset = report["ArtifactName"].as_str().expect("name").to_owned();
        for result in report["Results"].as_array().into_iter().flatten() {
            for v in result["Vulnerabilities"].as_array().into_iter().flatten() {
                let cve = v["VulnerabilityID"].as_str().expect("id").to_owned();
                let source = v["SeveritySource"].as_str().unwrap_or("");
                let score =
                    |vendor: &Value| ["V40Score", "V3Score", "V2Score"].iter().find_map(|k| vendor[*k].as_f64());
                let cvss = score(&v["CVSS"][source]).or_else(|| score(&v["CVSS"]["nvd"]));
                let severity = match cvss {
                    Some(cvss) => band(cvss),
                    None => match v["Severity"].as_str().unwrap_or("") {
                        "CRITICAL" => "critical",
                        "HIGH" => "high",
                        "MEDIUM" => "medium",
                        "LOW" => "low",
                        _ => "none",
                    },
                };
                expected.entry((asset.clone(), cve)).or_insert(severity);
            }
        }
    }
    let rows = sql(
        &lake,
        "SELECT asset_id, cve_id, status, severity, severity_source FROM exposures WHERE asset_id LIKE 'testdata/%'",
    );
    let found: BTreeMap<(String, String), &str> = rows
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "open");
            assert_eq!(r["severity_source"], "scanner");
            let key = (r["asset_id"].as_str().unwrap_or("").to_owned(), r["cve_id"].as_str().unwrap_or("").to_owned());
            (key, r["severity"].as_str().unwrap_or("none"))
        })
        .collect();
    let found: BTreeMap<(String, String), &'static str> = found.into_iter().map(|(k, v)| (k, band_name(v))).collect();
    assert_eq!(found, expected);

    // The queue: on one asset (same weights, same detection time), the CVE with the
    // highest CVSS Grype reports (NVD's entry) comes first; scores never rise with rank.
    let top = json(grype)["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .filter_map(|m| {
            let v = &m["vulnerability"];
            let nvd = v["cvss"].as_array()?.iter().filter(|c| c["source"] == "nvd@nist.gov");
            let score = nvd.filter_map(|c| c["metrics"]["baseScore"].as_f64()).fold(f64::MIN, f64::max);
            Some((score, v["id"].as_str()?.to_owned()))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .expect("a scored match");
    let queue =
        sql(&lake, &format!("SELECT cve_id FROM priorities WHERE asset_id = '{busybox}' ORDER BY rank LIMIT 1"));
    assert_eq!(queue[0]["cve_id"].as_str(), Some(top.1.as_str()), "{top:?}");
    let scores: Vec<Option<f64>> =
        sql(&lake, "SELECT score FROM priorities ORDER BY rank").iter().map(|r| r["score"].as_f64()).collect();
    assert!(
        scores.windows(2).all(|w| match (w[0], w[1]) {
            (Some(a), Some(b)) => a >= b,
            (None, Some(_)) => false,
            _ => true,
        }),
        "{scores:?}"
    );

    // Importing and replaying everything again changes nothing in the lake.
    let before = sql(&lake, "SELECT count(*) AS n FROM exposures_history");
    let again = d("again.jsonl");
    std::fs::write(&again, &all).expect("writes");
    replay(&again, &lake, &["--partitions", "2"]);
    assert_eq!(sql(&lake, "SELECT count(*) AS n FROM exposures_history"), before);
    let distinct: BTreeSet<String> =
        all.lines().map(|l| serde_json::from_str::<Value>(l).expect("JSON")["id"].to_string()).collect();
    assert_eq!(distinct.len(), all.lines().count(), "every imported event has its own id");

    // Later feeds, dated the day of the latest event (so the lake's "as of" stays).
    let day = all
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["time"].as_str().map(|t| t[..10].to_owned()))
        .max()
        .expect("a time");
    let row = |query: String| sql(&lake, &query).into_iter().next().expect("a row");
    // A CVE the feeds never named has no row: every field null.
    let cve_of = |cve: &str| {
        let row = |query: String| sql(&lake, &query).into_iter().next().unwrap_or(Value::Null);
        row(format!(
            "SELECT cvss_base, cvss_source, kev, kev_due_date, kev_source, epss FROM cves WHERE cve_id = '{cve}'"
        ))
    };
    let queued = |cve: &str| {
        row(format!("SELECT score, epss FROM priorities WHERE asset_id = '{busybox}' AND cve_id = '{cve}'"))
    };
    let import_and_replay = |format: &str, input: &Path| {
        let out = d(&format!("later-{format}.jsonl"));
        let (code, summary) = import(&out, &[format, path(input)]);
        assert_eq!(code, Some(0), "{summary}");
        replay(&out, &lake, &["--partitions", "2"]);
    };

    // A later EPSS file changes the top CVE's EPSS and its score in the queue by
    // exactly the EPSS factor (1 + 4 × EPSS); its CVSS and KEV fields stay.
    let cve = top.1.as_str();
    let (before, queued_before) = (cve_of(cve), queued(cve));
    let old = before["epss"].as_f64().unwrap_or(0.0);
    let new = if old > 0.5 { 0.01 } else { 0.97 };
    let epss_file = d("epss-later.csv");
    let header = format!("#model_version:v2025.03.14,score_date:{day}T00:00:00+0000\ncve,epss,percentile\n");
    std::fs::write(&epss_file, format!("{header}{cve},{new},0.99\n")).expect("writes");
    import_and_replay("epss", &epss_file);
    let after = cve_of(cve);
    assert_eq!(after["epss"].as_f64(), Some(new), "{after}");
    for field in ["cvss_base", "cvss_source", "kev_due_date", "kev_source"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(after["kev"].as_bool().unwrap_or(false), before["kev"].as_bool().unwrap_or(false));
    let (score_before, score_after) = (queued_before["score"].as_f64(), queued(cve)["score"].as_f64());
    let factor = (1.0 + 4.0 * new) / (1.0 + 4.0 * old);
    let (Some(b), Some(a)) = (score_before, score_after) else { panic!("scores {score_before:?} {score_after:?}") };
    assert!((a / b - factor).abs() < 1e-6, "score {b} → {a}, EPSS factor {factor}");

    // A KEV catalog listing a CVE of busybox's that KEV did not list:
    // it becomes KEV, and its open exposure is due the day after KEV's due date.
    let listed = row(format!(
        "SELECT p.cve_id FROM priorities p LEFT JOIN cves c USING (cve_id) WHERE p.asset_id = '{busybox}' \
         AND NOT coalesce(c.kev, false) AND p.cve_id <> '{cve}' ORDER BY p.rank LIMIT 1"
    ));
    let listed = listed["cve_id"].as_str().expect("a CVE").to_owned();
    let mut catalog = json("kev/known_exploited_vulnerabilities.json");
    let mut entry = catalog["vulnerabilities"][0].clone();
    entry["cveID"] = Value::from(listed.as_str());
    entry["dateAdded"] = Value::from(day.as_str());
    entry["dueDate"] = Value::from(day.as_str());
    catalog["vulnerabilities"] = Value::from(vec![entry]);
    catalog["count"] = Value::from(1);
    let kev_file = d("kev-later.json");
    std::fs::write(&kev_file, catalog.to_string()).expect("writes");
    let cvss = cve_of(&listed)["cvss_base"].clone();
    import_and_replay("kev", &kev_file);
    let now = cve_of(&listed);
    assert_eq!((now["kev"].as_bool(), now["cvss_base"].clone()), (Some(true), cvss), "{now}");
    let due = row(format!(
        "SELECT CAST(due_at AS VARCHAR) AS due_at FROM exposures WHERE asset_id = '{busybox}' AND cve_id = '{listed}'"
    ));
    let next_day = schemas::Date::parse(&day).expect("a date").succ();
    assert_eq!(due["due_at"].as_str().map(|t| t[..10].to_owned()), Some(next_day.to_string()), "{due}");
}

fn band_name(text: &str) -> &'static str {
    match text {
        "critical" => "critical",
        "high" => "high",
        "medium" => "medium",
        "low" => "low",
        _ => "none",
    }
}

/// The events of a JSONL file.
fn events_of(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).expect("output");
    text.lines().map(|line| serde_json::from_str(line).expect("an event")).collect()
}

#[test]
fn runtime_samples_import_or_report_every_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.jsonl");

    // Hubble: 10 real flows, 5 of them replies; 5 connections, each its own segment pair and port.
    let flows = sample("hubble/hubble-otel-basic-sample-10-flows.jsonl");
    let (code, summary) = import(&out, &["hubble", &flows, "--segment-from", "namespace"]);
    assert_eq!(code, Some(0), "{summary}");
    assert!(summary.contains("replies (counted with their request): 5"), "{summary}");
    assert!(summary.contains("sightings counted as connections: 5"), "{summary}");
    validate(&out);
    let mut seen: Vec<(String, String, u64, u64, String)> = events_of(&out)
        .iter()
        .map(|event| {
            let d = &event["data"];
            let text = |key: &str| d[key].as_str().expect(key).to_owned();
            (
                text("src_segment"),
                text("dst_segment"),
                d["dst_port"].as_u64().expect("port"),
                d["connections"].as_u64().expect("connections"),
                format!("{}/{}", text("enforced_action"), text("intended_action")),
            )
        })
        .collect();
    seen.sort();
    let expected = [
        ("istio-system", "bookinfo", 15090),
        ("istio-system", "istio-system", 9901),
        ("kube-system", "reserved:world", 443),
        ("reserved:host", "bookinfo", 15020),
        ("reserved:host", "kube-system", 10054),
    ];
    let expected: Vec<(String, String, u64, u64, String)> = expected
        .iter()
        .map(|(src, dst, port)| (src.to_string(), dst.to_string(), *port, 1, "allow/unknown".to_owned()))
        .collect();
    assert_eq!(seen, expected);
    // By label instead of namespace: kube-system's pods carry `k8s-app`, not `app`, so
    // their lines are reported; again, the same bytes.
    let (code, summary) = import(&out, &["hubble", &flows, "--segment-from", "label:app"]);
    assert_eq!(code, Some(1), "{summary}");
    assert!(summary.contains("line 8: source: cannot name the segment of 10.0.2.13"), "{summary}");
    assert!(summary.contains("line 9: destination: cannot name the segment of 10.0.2.12"), "{summary}");
    let first = std::fs::read(&out).expect("output");
    assert!(String::from_utf8_lossy(&first).contains(r#""src_segment":"prometheus","dst_segment":"reviews""#));
    import(&out, &["hubble", &flows, "--segment-from", "label:app"]);
    assert_eq!(std::fs::read(&out).expect("output"), first);

    // The exporter's field-masked drops: a POLICY_DENIED drop is intended deny; an
    // ICMPv6 drop between unnamed endpoints is reported with its line.
    let dropped = sample("hubble/cilium-docs-export-dropped.jsonl");
    let (code, summary) = import(&out, &["hubble", &dropped, "--segment-from", "namespace"]);
    assert_eq!(code, Some(1), "{summary}");
    assert!(summary.contains("line 1: source: cannot name the segment of fe80::64d8:8aff:fe72:fc14"), "{summary}");
    let events = events_of(&out);
    assert_eq!(events.len(), 1, "{summary}");
    let d = &events[0]["data"];
    assert_eq!((d["enforced_action"].as_str(), d["intended_action"].as_str()), (Some("deny"), Some("deny")));
    assert_eq!((d["src_segment"].as_str(), d["dst_port"].as_u64()), (Some("default"), Some(80)));
    // With a CIDR file for what namespaces do not name, the ICMPv6 drop converts too.
    let segments = dir.path().join("segments.txt");
    std::fs::write(&segments, "fe80::/10 link-local\nff00::/8 multicast\n").expect("writes");
    let (code, summary) =
        import(&out, &["hubble", &dropped, "--segment-from", "namespace", "--segments", path(&segments)]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(lines(&out), 2);
    validate(&out);

    // OPA: the Envoy plugin's console line (result false), the upload format's array (result "true").
    let envoy = sample("opa/osm-opa-envoy-decision-deny.jsonl");
    let pointer = "/input/attributes/source/address/socketAddress/address";
    let (code, summary) = import(&out, &["opa", &envoy, "--asset-pointer", pointer]);
    assert_eq!(code, Some(0), "{summary}");
    validate(&out);
    let d = events_of(&out)[0]["data"].clone();
    assert_eq!(d["decision"], "deny");
    assert_eq!((d["asset_id"].as_str(), d["policy_id"].as_str()), (Some("10.244.2.10"), Some("envoy/authz/allow")));
    assert_eq!(d["decision_id"], "1df154b5-658a-47bf-ac18-be52998605da");
    let upload = sample("opa/opa-docs-decision-log-upload-example.json");
    let (code, summary) = import(&out, &["opa", &upload, "--asset-pointer", pointer]);
    assert_eq!(code, Some(1), "{summary}");
    assert!(summary.contains("item 1: decision 4ca636c1-55e4-417a-b1d8-4aceb67960d1: no asset id at"), "{summary}");
    let (code, summary) = import(&out, &["opa", &upload, "--asset-pointer", "/requested_by"]);
    assert_eq!(code, Some(0), "{summary}");
    validate(&out);
    let d = events_of(&out)[0]["data"].clone();
    assert_eq!((d["decision"].as_str(), d["asset_id"].as_str()), (Some("allow"), Some("[::1]:59943")));
    assert_eq!(d["policy_version"], "authz:W3sibCI6InN5cy9jYXRhbG9nIiwicyI6NDA3MX1d");
    let (code, summary) = import(&out, &["opa", &upload]);
    assert_eq!(code, Some(2), "{summary}");
    assert!(summary.contains("--asset-pointer"), "{summary}");

    // Argo Rollouts: a failed and an inconclusive run convert; the argo-cd fixture has no
    // Rollout owner (reported), the Rollout object is not an AnalysisRun (counted).
    let runs: Vec<String> = ["failed", "inconclusive", "successful"]
        .iter()
        .map(|name| sample(&format!("argo-rollouts/analysisrun-{name}.yaml")))
        .chain([sample("argo-rollouts/rollout-aborted-canary.yaml")])
        .collect();
    let mut args = vec!["argo-rollouts", "--patch-from", "label:rollouts-pod-template-hash"];
    args.extend(runs.iter().map(String::as_str));
    let (code, summary) = import(&out, &args);
    assert_eq!(code, Some(1), "{summary}");
    assert!(
        summary.contains("document 1 (AnalysisRun canary-demo-analysis-template-6c6bb7cf6f-zvcmx): no Rollout owner"),
        "{summary}"
    );
    assert!(summary.contains("objects that are not AnalysisRuns: 1"), "{summary}");
    validate(&out);
    let stages: Vec<Value> = events_of(&out).iter().map(|event| event["data"].clone()).collect();
    assert_eq!(
        stages,
        vec![
            serde_json::json!({"rollout_id": "default/rollout-background-analysis@2", "patch_id": "db976bc44",
                "stage": 0, "verdict": "failed", "failed_checks": 1}),
            serde_json::json!({"rollout_id": "jesse-test/rollout-experiment-analysis@2", "patch_id": "6f646bf7b7",
                "stage": 0, "verdict": "inconclusive", "failed_checks": 4}),
        ]
    );
    let (code, summary) = import(&out, &["argo-rollouts", &runs[0]]);
    assert_eq!(code, Some(2), "{summary}");
    assert!(summary.contains("--patch-from"), "{summary}");

    // Policy reports: Kyverno's passing report; the Trivy adapter's, whose results carry no
    // `result` (only the summary says 7 fail, 2 error, 4 warn, 0 pass), with negative nanos.
    let kyverno = sample("posture/wgpolicy-sample-v1beta2-kyverno.yaml");
    let trivy = sample("posture/wgpolicy-trivy-adapter-policyreport.yaml");
    let (code, summary) = import(&out, &["policy-report", &kyverno, &trivy, "--asset-from", "namespaced-name"]);
    assert_eq!(code, Some(0), "{summary}");
    validate(&out);
    let assessments: Vec<(String, String, Value)> = events_of(&out)
        .iter()
        .map(|event| {
            (
                event["time"].as_str().expect("time").to_owned(),
                event["subject"].as_str().expect("subject").to_owned(),
                event["data"].clone(),
            )
        })
        .collect();
    assert_eq!(
        assessments,
        vec![
            (
                "2023-03-23T10:04:54Z".to_owned(),
                "nirmata/kyverno-6d88f6dcdd-k6bc5".to_owned(),
                serde_json::json!({"asset_id": "nirmata/kyverno-6d88f6dcdd-k6bc5", "trust_score": 100.0, "compliant": true}),
            ),
            (
                "2021-08-09T22:40:13.120956Z".to_owned(),
                "default/zipkin-6b59cc5ddb-bp9h8".to_owned(),
                serde_json::json!({"asset_id": "default/zipkin-6b59cc5ddb-bp9h8", "trust_score": 0.0, "compliant": false}),
            ),
        ]
    );
    let (code, summary) = import(&out, &["policy-report", &kyverno]);
    assert_eq!(code, Some(2), "{summary}");
}

/// Sets a JSON line's fields (a test-written variant of a real record).
fn variant(line: &str, changes: &[(&str, Value)]) -> String {
    let mut value: Value = serde_json::from_str(line.trim()).expect("JSON");
    for (pointer, new) in changes {
        *value.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = new.clone();
    }
    value.to_string()
}

#[test]
fn runtime_sources_give_the_lake_drift_gates_and_zero_trust_alerts() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Hubble: the real POLICY_DENIED drop, and the same connection seen by a policy in
    // audit mode an hour later (no open-licence AUDIT sample exists: written from it).
    let dropped = std::fs::read_to_string(formats().join("hubble/cilium-docs-export-dropped.jsonl")).expect("sample");
    let denied = dropped.lines().nth(1).expect("the POLICY_DENIED line");
    let audit = variant(
        denied,
        &[
            ("/flow/verdict", "AUDIT".into()),
            ("/flow/time", "2023-08-21T13:20:00.000000001Z".into()),
            ("/time", "2023-08-21T13:20:00.000000001Z".into()),
        ],
    );
    // Forwarded traffic later still moves the network task's watermark past the audit's window.
    let later = variant(
        denied,
        &[
            ("/flow/verdict", "FORWARDED".into()),
            ("/flow/time", "2023-08-21T15:30:00Z".into()),
            ("/time", "2023-08-21T15:30:00Z".into()),
        ],
    );
    let flows = dir.path().join("flows.jsonl");
    std::fs::write(&flows, format!("{denied}\n{audit}\n{later}\n")).expect("writes");
    // OPA: the asset is non-compliant from the Trivy adapter's report (2021-08-09) on;
    // the real deny decision, moved after it, and the same request allowed.
    let envoy = std::fs::read_to_string(formats().join("opa/osm-opa-envoy-decision-deny.jsonl")).expect("sample");
    let later_deny = variant(&envoy, &[("/timestamp", "2021-08-10T08:00:00.1971808Z".into())]);
    let allow = variant(
        &envoy,
        &[
            ("/timestamp", "2021-08-10T09:00:00Z".into()),
            ("/decision_id", "7f0c33a8-34a7-4a63-9d4d-5d1b2b1f0e77".into()),
            ("/result", true.into()),
        ],
    );
    let decisions = dir.path().join("decisions.jsonl");
    std::fs::write(&decisions, format!("{later_deny}\n{allow}\n")).expect("writes");

    let imports: Vec<Vec<String>> = vec![
        vec!["hubble".into(), path(&flows).into(), "--segment-from".into(), "namespace".into()],
        vec![
            "opa".into(),
            path(&decisions).into(),
            "--asset-pointer".into(),
            "/input/attributes/source/address/socketAddress/address".into(),
        ],
        vec![
            "policy-report".into(),
            sample("posture/wgpolicy-trivy-adapter-policyreport.yaml"),
            "--asset".into(),
            "10.244.2.10".into(),
        ],
        vec![
            "argo-rollouts".into(),
            sample("argo-rollouts/analysisrun-failed.yaml"),
            sample("argo-rollouts/analysisrun-inconclusive.yaml"),
            "--patch-from".into(),
            "label:rollouts-pod-template-hash".into(),
        ],
    ];
    let mut events = Vec::new();
    for (n, args) in imports.iter().enumerate() {
        let out = dir.path().join(format!("{n}.jsonl"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, summary) = import(&out, &args);
        assert_eq!(code, Some(0), "{args:?}: {summary}");
        events.extend(events_of(&out));
    }
    // In event time, as a producer would have sent them.
    events.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    let all = dir.path().join("all.jsonl");
    let text: String = events.iter().map(|event| format!("{event}\n")).collect();
    std::fs::write(&all, text).expect("writes");
    let lake = dir.path().join("lake");
    replay(&all, &lake, &[]);

    let drift = sql(
        &lake,
        "SELECT src_segment, dst_segment, connections, drift_connections FROM segment_drift ORDER BY window_start",
    );
    assert_eq!(
        drift,
        vec![
            serde_json::json!({"src_segment": "default", "dst_segment": "default", "connections": 1, "drift_connections": 0}),
            serde_json::json!({"src_segment": "default", "dst_segment": "default", "connections": 1, "drift_connections": 1}),
            serde_json::json!({"src_segment": "default", "dst_segment": "default", "connections": 1, "drift_connections": 0}),
        ]
    );
    let alerts = sql(
        &lake,
        "SELECT rule, entity_id AS entity FROM alerts WHERE rule IN ('SEGMENTATION_DRIFT', 'ZT_ALLOW_NONCOMPLIANT', 'CANARY_FAILED') ORDER BY rule",
    );
    assert_eq!(
        alerts,
        vec![
            serde_json::json!({"rule": "CANARY_FAILED", "entity": "default/rollout-background-analysis@2"}),
            serde_json::json!({"rule": "SEGMENTATION_DRIFT", "entity": "default->default:80"}),
            serde_json::json!({"rule": "ZT_ALLOW_NONCOMPLIANT", "entity": "7f0c33a8-34a7-4a63-9d4d-5d1b2b1f0e77"}),
        ]
    );
    let gates = sql(&lake, "SELECT rollout_id, gate FROM canary_rollups ORDER BY rollout_id");
    assert_eq!(
        gates,
        vec![
            serde_json::json!({"rollout_id": "default/rollout-background-analysis@2", "gate": "rollback"}),
            serde_json::json!({"rollout_id": "jesse-test/rollout-experiment-analysis@2", "gate": "hold"}),
        ]
    );
}

/// `import vpc-flow -` on a pipe: a window's event is written as soon as a later
/// sighting closes it, while the input stays open; SIGTERM drains the open one.
#[test]
fn a_piped_flow_log_is_converted_as_it_arrives_and_sigterm_drains_it() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    let segments = dir.path().join("segments.txt");
    std::fs::write(&segments, "10.0.1.0/24 web\n10.0.2.0/24 db\n0.0.0.0/0 internet\n").expect("writes");
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .args(["import", "vpc-flow", "-", "--segments", path(&segments), "--window", "60s", "--grace", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let (sender, received) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    // AWS's documented example records, as written by the service (version 2 default format).
    let header = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";
    let record = |src: &str, sport: u16, dst: &str, dport: u16, start: i64, action: &str| {
        format!(
            "2 123456789010 eni-1235b8ca123456789 {src} {dst} {sport} {dport} 6 20 4249 {start} {} {action} OK",
            start + 60
        )
    };
    let lines = [
        header.to_owned(),
        record("10.0.1.5", 49761, "10.0.2.7", 5432, 1_418_530_010, "ACCEPT"),
        // The reply, and the same connection logged by the destination's interface.
        record("10.0.2.7", 5432, "10.0.1.5", 49761, 1_418_530_010, "ACCEPT"),
        record("10.0.1.5", 49761, "10.0.2.7", 5432, 1_418_530_012, "ACCEPT"),
        record("10.0.1.5", 49762, "10.0.2.7", 5432, 1_418_530_015, "ACCEPT"),
        "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA".to_owned(),
        // A minute later: closes the first window.
        record("203.0.113.12", 39812, "10.0.1.5", 22, 1_418_530_080, "REJECT"),
    ];
    for line in &lines {
        writeln!(stdin, "{line}").expect("writes");
    }
    stdin.flush().expect("flushes");
    let first = received.recv_timeout(Duration::from_secs(30)).expect("the closed window's event, input still open");
    let event: Value = serde_json::from_str(&first).expect("an event");
    assert_eq!(event["data"]["connections"], 2, "{event}");
    assert_eq!(
        (event["data"]["src_segment"].as_str(), event["data"]["dst_segment"].as_str()),
        (Some("web"), Some("db"))
    );
    assert_eq!(event["time"], "2014-12-14T04:06:50Z");
    assert!(received.recv_timeout(Duration::from_millis(500)).is_err(), "the open window waits");
    // SIGTERM, the pipe still open: the open window is written, exit 0.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let drained = received.recv_timeout(Duration::from_secs(30)).expect("the drained window");
    let event: Value = serde_json::from_str(&drained).expect("an event");
    assert_eq!(
        (event["data"]["src_segment"].as_str(), event["data"]["enforced_action"].as_str()),
        (Some("internet"), Some("deny"))
    );
    let output = child.wait_with_output().expect("exits");
    let summary = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert!(summary.contains("NODATA and SKIPDATA records (no traffic): 1"), "{summary}");
    assert!(summary.contains("sightings of a connection already counted: 2"), "{summary}");
    drop(stdin);
}

#[test]
fn the_scan_state_is_never_written_through_a_planted_link_and_a_bad_path_stops_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state.json");
    // A link where the state was once written beside itself, to a file of someone else's.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").expect("writes");
    std::os::unix::fs::symlink(&victim, dir.path().join("state.json.tmp")).expect("links");
    let out = dir.path().join("events.jsonl");
    let scan = sample("trivy/alpine-310.json");
    let (code, summary) = import(&out, &["trivy", &scan, "--asset", "host-1", "--state", path(&state)]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(std::fs::read_to_string(&victim).expect("reads"), "precious", "written through the link");
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).expect("the state")).expect("JSON");
    assert!(saved.to_string().contains("host-1"), "{saved}");
    // A state file in a directory that does not exist: refused before any event is written.
    let missing = dir.path().join("nowhere").join("state.json");
    let out = dir.path().join("not-written.jsonl");
    let (code, summary) = import(&out, &["trivy", &scan, "--asset", "host-1", "--state", path(&missing)]);
    assert_eq!(code, Some(1), "{summary}");
    assert!(summary.contains("cannot write the scan state beside"), "{summary}");
    assert!(!out.exists() || std::fs::metadata(&out).expect("meta").len() == 0, "events were written first");
}

/// A gzip bomb: `members` gzip members of 8 MiB of `a` each, without a
/// newline (1 MiB of file per GiB of input), the decoder reading them as one.
fn gzip_bomb(file: &Path, members: usize) {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![b'a'; 8 << 20]).expect("compresses");
    let member = encoder.finish().expect("compresses");
    let mut out = std::fs::File::create(file).expect("creates");
    for _ in 0..members {
        out.write_all(&member).expect("writes");
    }
}

/// Runs `patchtrail import` with `args`, sampling its resident memory;
/// (exit code, stderr, peak MiB).
fn import_measured(dir: &Path, args: &[&str]) -> (Option<i32>, String, f64) {
    let stderr = dir.join("stderr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .arg("import")
        .args(args)
        .args(["--out", path(&dir.join("out.jsonl"))])
        .stderr(std::fs::File::create(&stderr).expect("creates"))
        .spawn()
        .expect("spawns");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        let rss = std::fs::read_to_string(&status_file).ok().and_then(|status| {
            status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
        peak_kib = peak_kib.max(rss.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    };
    let printed = std::fs::read(&stderr).expect("stderr");
    assert!(printed.len() < 64 << 10, "{} bytes on stderr", printed.len());
    (status.code(), String::from_utf8_lossy(&printed).into_owned(), peak_kib as f64 / 1024.0)
}

#[test]
fn a_gzip_bomb_or_a_giant_cell_is_refused_in_little_memory_by_every_importer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bomb = dir.path().join("bomb.gz");
    // 256 MiB: past the line and document limits, and past the memory bound
    // for an importer that holds its input (1 GiB took 25 s per format in a
    // debug build; the figures are alike).
    gzip_bomb(&bomb, 32);
    let compressed = std::fs::metadata(&bomb).expect("a bomb").len();
    let segments = dir.path().join("segments.txt");
    std::fs::write(&segments, "10.0.0.0/8 internal\n").expect("writes");
    let bomb = path(&bomb);
    let formats: [&[&str]; 6] = [
        &["epss", bomb],
        &["hubble", bomb, "--segment-from", "namespace"],
        &["vpc-flow", bomb, "--segments", path(&segments)],
        &["opa", bomb, "--asset-pointer", "/input/asset"],
        &["argo-rollouts", bomb, "--patch-from", "label:rollouts-pod-template-hash"],
        &["policy-report", bomb, "--asset", "a-1"],
    ];
    for args in formats {
        let (code, stderr, peak) = import_measured(dir.path(), args);
        eprintln!("{}: a {} kB gzip of 256 MiB: exit {code:?}, peak RSS {peak:.0} MiB", args[0], compressed >> 10);
        assert_eq!(code, Some(1), "{}: {stderr}", args[0]);
        assert!(stderr.contains("over the limit") || stderr.contains("over 64 MiB"), "{}: {stderr}", args[0]);
        assert!(peak < 200.0, "{}: peak RSS {peak:.0} MiB", args[0]);
    }
    // The inventory is a plain CSV: one cell of 256 MiB.
    let csv = dir.path().join("inventory.csv");
    let mut cell = b"asset_id,environment,criticality,internet_exposed,segment\n\"".to_vec();
    cell.resize(256 << 20, b'a');
    std::fs::write(&csv, cell).expect("writes");
    let (code, stderr, peak) = import_measured(dir.path(), &["inventory", path(&csv)]);
    eprintln!("inventory: a CSV cell of 256 MiB: exit {code:?}, peak RSS {peak:.0} MiB");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("over the limit"), "{stderr}");
    assert!(peak < 200.0, "inventory: peak RSS {peak:.0} MiB");
}
