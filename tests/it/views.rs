//! The metric views (`queries/sql/*.sql`) against figures computed here from
//! the base tables, on a simulated lake.

use crate::support::*;
use serde_json::Value;

fn number(row: &Value, column: &str) -> f64 {
    row[column].as_f64().unwrap_or_else(|| panic!("{column} in {row}"))
}

#[test]
fn the_metric_views_agree_with_the_tables_they_summarize() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 400, 20, 12, true);
    let lake = dir.path().join("lake");
    replay(&events, &lake, &[]);

    // asset_risk: 1 − Π(1 − min(1, epss × k)) over open exposures, computed here.
    let exposures = sql(
        &lake,
        "SELECT e.asset_id, e.kev, coalesce(c.epss, 0.0) AS epss, a.internet_exposed FROM exposures e \
         LEFT JOIN cves c ON c.cve_id = e.cve_id LEFT JOIN assets a ON a.asset_id = e.asset_id \
         WHERE e.status = 'open'",
    );
    let mut expected: std::collections::BTreeMap<String, f64> = Default::default();
    for row in &exposures {
        let k = if row["kev"] == true { 2.0 } else { 1.0 } * if row["internet_exposed"] == true { 1.5 } else { 1.0 };
        let p = (number(row, "epss") * k).min(1.0);
        let survive = expected.entry(row["asset_id"].as_str().expect("id").to_owned()).or_insert(1.0);
        *survive *= 1.0 - p;
    }
    let risks = sql(&lake, "SELECT asset_id, residual_risk, open_exposures FROM asset_risk");
    assert_eq!(risks.len(), expected.len());
    for row in &risks {
        let want = 1.0 - expected[row["asset_id"].as_str().expect("id")];
        assert!((number(row, "residual_risk") - want).abs() < 1e-9, "{row} vs {want}");
    }
    assert!(risks.iter().any(|row| number(row, "residual_risk") > 0.0));

    // sla_compliance and ttp_matrix partition the exposures they count.
    let counted = sql(&lake, "SELECT count(*) AS n FROM exposures WHERE status <> 'suppressed'")[0]["n"].as_f64();
    let summed = sql(&lake, "SELECT sum(exposures) AS n FROM sla_compliance")[0]["n"].as_f64();
    assert_eq!(summed, counted);
    let breached = sql(&lake, "SELECT count(*) AS n FROM exposures WHERE breached AND status <> 'suppressed'");
    let summed = sql(&lake, "SELECT sum(breached) AS n FROM sla_compliance");
    assert_eq!(summed[0]["n"].as_f64(), breached[0]["n"].as_f64());
    // ttp_matrix's median and p90 are exact: linear interpolation between
    // ranks (PostgreSQL's percentile_cont), computed here from the outcomes.
    let outcomes = sql(
        &lake,
        "SELECT s.severity, coalesce(a.criticality, 'unknown') AS criticality, o.time_to_patch_s AS t          FROM patch_outcomes o JOIN outcome_severity s ON s.asset_id = o.asset_id AND s.patch_id = o.patch_id          LEFT JOIN assets a ON a.asset_id = o.asset_id WHERE o.time_to_patch_s IS NOT NULL",
    );
    let mut cells: std::collections::BTreeMap<(String, String), Vec<f64>> = Default::default();
    for row in &outcomes {
        let cell = (
            row["severity"].as_str().expect("severity").to_owned(),
            row["criticality"].as_str().expect("criticality").to_owned(),
        );
        cells.entry(cell).or_default().push(number(row, "t"));
    }
    let percentile = |values: &mut Vec<f64>, p: f64| {
        values.sort_by(f64::total_cmp);
        let rank = p * (values.len() - 1) as f64;
        let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
        values[low] + (values[high] - values[low]) * (rank - low as f64)
    };
    let mut several = 0;
    for row in sql(&lake, "SELECT * FROM ttp_matrix WHERE remediated_patches > 0") {
        let (mean, median, p90) = (number(&row, "mean_ttp_s"), number(&row, "median_ttp_s"), number(&row, "p90_ttp_s"));
        let cell = (
            row["severity"].as_str().expect("severity").to_owned(),
            row["criticality"].as_str().expect("criticality").to_owned(),
        );
        let values = cells.get_mut(&cell).expect("a cell of the outcomes");
        several += usize::from(values.len() > 2);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
        assert!(close(median, percentile(values, 0.5)), "median of {cell:?}: {row} vs {values:?}");
        assert!(close(p90, percentile(values, 0.9)), "p90 of {cell:?}: {row} vs {values:?}");
        assert!(mean > 0.0, "{row}");
        let share = row["share_patched_by_deadline"].as_f64();
        assert!(share.is_none_or(|s| (0.0..=1.0).contains(&s)), "{row}");
    }
    assert!(several > 0, "no cell has more than two outcomes: the percentiles are not tested");
    // Every remediated outcome of a patch with a known severity is in the matrix once.
    let remediated =
        number(&sql(&lake, "SELECT count(*) AS n FROM patch_outcomes WHERE time_to_patch_s IS NOT NULL")[0], "n");
    let with_severity = number(
        &sql(
            &lake,
            "SELECT count(*) AS n FROM patch_outcomes o JOIN outcome_severity s ON s.asset_id = o.asset_id AND s.patch_id = o.patch_id \
             WHERE o.time_to_patch_s IS NOT NULL",
        )[0],
        "n",
    );
    let in_matrix = number(&sql(&lake, "SELECT sum(remediated_patches) AS n FROM ttp_matrix")[0], "n");
    assert!(with_severity > 0.0, "the scenario remediates patches");
    assert_eq!(in_matrix, with_severity);
    assert!(with_severity <= remediated);
    // patch_severity: the highest severity among the CVEs each patch fixes, recomputed here.
    let fixes = sql(
        &lake,
        "SELECT f.patch_id, max(CASE c.severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 \
         WHEN 'low' THEN 1 END) AS level FROM (SELECT patch_id, unnest(fixes_cves) AS cve_id FROM patches) f \
         JOIN cves c ON c.cve_id = f.cve_id GROUP BY f.patch_id ORDER BY f.patch_id",
    );
    let view = sql(&lake, "SELECT patch_id, level, severity FROM patch_severity ORDER BY patch_id");
    assert_eq!(view.len(), fixes.len());
    for (ours, theirs) in view.iter().zip(&fixes) {
        assert_eq!((&ours["patch_id"], &ours["level"]), (&theirs["patch_id"], &theirs["level"]));
        let names = ["low", "medium", "high", "critical"];
        assert_eq!(ours["severity"], names[number(ours, "level") as usize - 1], "{ours}");
    }

    // drift_summary and canary_summary add up to their tables.
    let drift = sql(&lake, "SELECT sum(connections) AS c, sum(drift_connections) AS d FROM segment_drift");
    let summary = sql(&lake, "SELECT sum(connections) AS c, sum(drift_connections) AS d FROM drift_summary");
    assert_eq!((drift[0]["c"].as_f64(), drift[0]["d"].as_f64()), (summary[0]["c"].as_f64(), summary[0]["d"].as_f64()));
    let rollouts = sql(&lake, "SELECT count(*) AS n FROM canary_rollups")[0]["n"].as_f64();
    let gates = sql(&lake, "SELECT sum(promoted + held + rolled_back) AS n, sum(rollouts) AS r FROM canary_summary");
    assert_eq!((gates[0]["n"].as_f64(), gates[0]["r"].as_f64()), (rollouts, rollouts));
}

#[test]
fn the_queue_follows_the_prioritization_rules_at_their_edges() {
    let dir = tempfile::tempdir().expect("temp dir");
    let line = |n: usize, event_type: &str, time: &str, subject: &str, data: Value| {
        serde_json::json!({"specversion": "1.0", "id": format!("e{n}"), "source": "test", "type": event_type,
            "time": time, "subject": subject, "data": data})
        .to_string()
    };
    let release = |n: usize, patch: &str| {
        let data = serde_json::json!({"patch_id": patch, "vendor": "v", "product": "p",
            "released_at": "2026-11-01T12:00:00Z", "fixes_cves": ["CVE-2026-0001"]});
        line(n, "patch.release.v1", "2026-11-01T12:00:00Z", patch, data)
    };
    let finding = |asset: &str, cve: &str| serde_json::json!({"asset_id": asset, "cve_id": cve, "status": "open"});
    let lines = [
        line(
            0,
            "vuln.intel.v1",
            "2026-11-01T00:00:00Z",
            "CVE-2026-0001",
            serde_json::json!({
            "cve_id": "CVE-2026-0001", "published_at": "2026-10-30T00:00:00Z", "cvss_base": 9.8, "epss": 0.5}),
        ),
        line(
            1,
            "asset.inventory.v1",
            "2026-11-01T00:00:00Z",
            "a1",
            serde_json::json!({
            "asset_id": "a1", "environment": "cloud", "criticality": "high", "internet_exposed": false, "segment": "s"}),
        ),
        line(2, "vuln.finding.v1", "2026-11-02T00:00:00Z", "a1", finding("a1", "CVE-2026-0001")),
        // No intel for this CVE: no CVSS, no score.
        line(3, "vuln.finding.v1", "2026-11-02T00:00:00Z", "a1", finding("a1", "CVE-2026-0002")),
        // No inventory for this asset: neutral weights.
        line(4, "vuln.finding.v1", "2026-11-02T00:00:00Z", "a2", finding("a2", "CVE-2026-0001")),
        // KEV says it was due before it was detected here: urgency 3.
        line(
            6,
            "vuln.intel.v1",
            "2026-11-01T00:00:00Z",
            "CVE-2026-0003",
            serde_json::json!({"cve_id": "CVE-2026-0003", "published_at": "2026-10-01T00:00:00Z", "cvss_base": 5.0,
                "kev": true, "kev_due_date": "2026-10-31"}),
        ),
        line(7, "vuln.finding.v1", "2026-11-02T00:00:00Z", "a2", finding("a2", "CVE-2026-0003")),
        // No CVSS anywhere, a scanner's word "high": scored with 7.0, the range's lower bound.
        line(
            10,
            "vuln.finding.v1",
            "2026-11-02T00:00:00Z",
            "a3",
            serde_json::json!({"asset_id": "a3", "cve_id": "CVE-2026-0004", "status": "open", "scanner_severity": "high"}),
        ),
        // Two patches released at the same instant fix CVE-2026-0001: the larger patch_id is named.
        release(8, "P-B"),
        release(9, "P-A"),
        line(
            5,
            "posture.assessment.v1",
            "2026-11-05T00:00:00Z",
            "a1",
            serde_json::json!({
            "asset_id": "a1", "trust_score": 80.0, "compliant": true}),
        ),
    ];
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, lines.join("\n") + "\n").expect("writes");
    let lake = dir.path().join("lake");
    replay(&events, &lake, &[]);
    let queue = sql(&lake, "SELECT rank, asset_id, cve_id, patch_id, score, severity FROM priorities ORDER BY rank");
    let key =
        |row: &Value| format!("{}/{}", row["asset_id"].as_str().expect("asset"), row["cve_id"].as_str().expect("cve"));
    let keys: Vec<String> = queue.iter().map(key).collect();
    assert_eq!(
        keys,
        ["a1/CVE-2026-0001", "a2/CVE-2026-0001", "a2/CVE-2026-0003", "a3/CVE-2026-0004", "a1/CVE-2026-0002"],
        "{queue:?}"
    );
    // No intel, no CVSS: a null score, ranked last.
    assert!(queue[4]["score"].is_null() && queue[4]["severity"].is_null(), "{queue:?}");
    // 7.0 / 10 × urgency 1 + 3 days / 30 days (high SLA).
    assert!((number(&queue[3], "score") - 0.7 * 1.1).abs() < 1e-9, "{queue:?}");
    // Same CVE, same detection, same urgency: a high-criticality asset (×2) against a neutral one (×1).
    let (high, neutral) = (number(&queue[0], "score"), number(&queue[1], "score"));
    assert!((high - 2.0 * neutral).abs() < 1e-9, "{high} vs {neutral}");
    // 9.8 / 10 × (1 + 4 × 0.5) × urgency, with urgency 1 + 3 days / 15 days (critical SLA) as of 11-05.
    assert!((neutral - 0.98 * 3.0 * 1.2).abs() < 1e-9, "{neutral}");
    // 5.0 / 10 × KEV 2 × urgency 3.
    assert!((number(&queue[2], "score") - 3.0).abs() < 1e-9, "{queue:?}");
    assert_eq!(queue[0]["patch_id"], "P-B", "{queue:?}");
}

#[test]
fn a_patch_of_cves_without_catalog_severity_takes_its_exposures_severity() {
    // No NVD feed: the scanner says "high" on a1 and nothing on a2; the
    // patch is released and deployed on both.
    let dir = tempfile::tempdir().expect("temp dir");
    let sha = "3f5d0c1a9b2e4d6f8a0c2e4f6a8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4f";
    let line = |n: usize, event_type: &str, time: &str, subject: &str, data: Value| {
        serde_json::json!({"specversion": "1.0", "id": format!("e{n}"), "source": "test", "type": event_type,
            "time": time, "subject": subject, "data": data})
        .to_string()
    };
    let deploy = |asset: &str| {
        serde_json::json!({"deployment_id": format!("d-{asset}"), "asset_id": asset, "patch_id": "P1",
            "phase": "succeeded", "artifact_sha256": sha, "signature_verified": true})
    };
    let lines = [
        line(
            0,
            "patch.release.v1",
            "2026-11-01T00:00:00Z",
            "P1",
            serde_json::json!({"patch_id": "P1",
            "vendor": "v", "product": "p", "released_at": "2026-11-01T00:00:00Z",
            "fixes_cves": ["CVE-2026-0009"], "artifact_sha256": sha}),
        ),
        line(
            1,
            "vuln.finding.v1",
            "2026-11-01T01:00:00Z",
            "a1",
            serde_json::json!({"asset_id": "a1",
            "cve_id": "CVE-2026-0009", "status": "open", "scanner_severity": "high", "scanner": "trivy"}),
        ),
        line(
            2,
            "vuln.finding.v1",
            "2026-11-01T01:00:00Z",
            "a2",
            serde_json::json!({"asset_id": "a2",
            "cve_id": "CVE-2026-0009", "status": "open"}),
        ),
        line(3, "patch.deployment.v1", "2026-11-02T00:00:00Z", "a1", deploy("a1")),
        line(4, "patch.deployment.v1", "2026-11-03T00:00:00Z", "a2", deploy("a2")),
    ];
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, lines.join("\n") + "\n").expect("writes");
    let lake = dir.path().join("lake");
    replay(&events, &lake, &[]);
    let view = sql(&lake, "SELECT asset_id, patch_id, severity, level, source FROM outcome_severity ORDER BY asset_id");
    assert_eq!(
        view,
        vec![
            serde_json::json!({"asset_id": "a1", "patch_id": "P1", "severity": "high", "level": 3, "source": "exposures"})
        ]
    );
    assert!(sql(&lake, "SELECT * FROM patch_severity").is_empty(), "the catalog knows no severity");
    let matrix =
        sql(&lake, "SELECT severity, remediated_patches, mean_ttp_s FROM ttp_matrix WHERE remediated_patches > 0");
    assert_eq!(matrix, vec![serde_json::json!({"severity": "high", "remediated_patches": 1, "mean_ttp_s": 86400.0})]);
}
