//! `patchtrail import` on the real files in tests/data/formats (copied as they
//! are from ../shared/formats, provenance in their SOURCES.md): every event
//! it writes is valid, importing twice adds nothing to the lake, and the lake
//! says what the files say, read here from the files themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

mod support;

use support::*;

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
