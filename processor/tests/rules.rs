//! DOMAIN.md's rules, one case a line, checked against both the processor and
//! the simulator's truth fold: the two implementations share no code, so a
//! case that both pass pins the reading of the rule, not a bug shared by both.

use ingest::simulate::truth::TruthBuilder;
use processor::Processor;
use processor::config::ProcessorConfig;
use schemas::{CloudEvent, EventType};
use serde_json::{Value, json};

const SHA: &str = "3f5d0c1a9b2e4d6f8a0c2e4f6a8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4f";
const INTEL: &str = "vuln.intel.v1";
const RELEASE: &str = "patch.release.v1";
const FINDING: &str = "vuln.finding.v1";
const DEPLOY: &str = "patch.deployment.v1";
const CANARY: &str = "canary.stage.v1";
const POSTURE: &str = "posture.assessment.v1";

type Step = (&'static str, u32, Value);

/// An event of `event_type` at `hour` hours after 2026-11-01T00:00Z.
fn event(n: usize, event_type: &str, hour: u32, data: Value) -> CloudEvent {
    let subject = EventType::parse(event_type).map(|t| data[t.subject_field()].as_str().unwrap_or_default().to_owned());
    let time = format!("2026-11-{:02}T{:02}:00:00Z", 1 + hour / 24, hour % 24);
    let line = json!({"specversion": "1.0", "id": format!("e{n}"), "source": "test", "type": event_type,
        "time": time, "subject": subject, "data": data});
    schemas::decode(line.to_string().as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn intel(cvss: f64, kev_due: Option<&str>) -> Value {
    json!({"cve_id": "CVE-2026-0001", "published_at": "2026-10-30T00:00:00Z", "cvss_base": cvss,
        "kev": kev_due.is_some(), "kev_due_date": kev_due})
}

fn release() -> Value {
    json!({"patch_id": "P1", "vendor": "v", "product": "p", "released_at": "2026-11-01T00:00:00Z",
        "fixes_cves": ["CVE-2026-0001"], "artifact_sha256": SHA})
}

fn finding(status: &str) -> Value {
    json!({"asset_id": "a1", "cve_id": "CVE-2026-0001", "status": status})
}

fn deploy(id: &str, phase: &str, sha: &str, signed: bool) -> Value {
    json!({"deployment_id": id, "asset_id": "a1", "patch_id": "P1", "phase": phase,
        "artifact_sha256": sha, "signature_verified": signed})
}

fn canary(stage: u32, verdict: &str, action: &str) -> Value {
    json!({"rollout_id": "r1", "patch_id": "P1", "stage": stage, "verdict": verdict, "action": action})
}

fn posture(score: f64, compliant: bool) -> Value {
    json!({"asset_id": "a1", "trust_score": score, "compliant": compliant})
}

/// The single row of `table` the processor ends with, as JSON.
fn processor_row(events: &[CloudEvent], table: &str) -> Value {
    let mut processor = Processor::new(ProcessorConfig::default(), 1);
    for (offset, event) in events.iter().enumerate() {
        processor.apply("test", offset as u64, event);
    }
    processor.finish_input();
    let ts = |t: Option<schemas::Timestamp>| t.map(|t| t.to_string());
    let mut rows = Vec::new();
    for (_, epoch) in processor.flush() {
        match table {
            "exposures" => rows.extend(epoch.exposures.iter().map(|r| {
                json!({
                "status": r.status, "due_at": ts(r.due_at), "breached": r.breached,
                "remediated_at": ts(r.remediated_at), "detected_at": r.detected_at.to_string()})
            })),
            "patch_outcomes" => rows.extend(epoch.patch_outcomes.iter().map(|r| {
                json!({
                "outcome": r.outcome, "attempts": r.attempts, "first_attempt_at": ts(r.first_attempt_at),
                "remediated_at": ts(r.remediated_at), "time_to_patch_s": r.time_to_patch_s,
                "posture_before": r.posture_before, "posture_after": r.posture_after,
                "posture_reeval_latency_s": r.posture_reeval_latency_s, "posture_regressed": r.posture_regressed})
            })),
            "canary_rollups" => {
                rows.extend(epoch.canary_rollups.iter().map(|r| json!({"gate": r.gate, "failed": r.failed})))
            }
            _ => {}
        }
    }
    assert_eq!(rows.len(), 1, "one {table} row");
    rows.remove(0)
}

/// Checks `field` of the one row of `table`, in the processor and (where the
/// truth has the field) in the truth fold.
fn check(steps: Vec<Step>, table: &str, field: &str, expected: Value) {
    let events: Vec<CloudEvent> =
        steps.into_iter().enumerate().map(|(n, (event_type, hour, data))| event(n, event_type, hour, data)).collect();
    let ours = processor_row(&events, table);
    assert_eq!(ours[field], expected, "processor: {table}.{field} in {ours}");
    // The truth folds in event-time order, as the simulator generates.
    let mut in_time_order: Vec<&CloudEvent> = events.iter().collect();
    in_time_order.sort_by_key(|event| event.time);
    let mut fold = TruthBuilder::default();
    for event in in_time_order {
        fold.observe(event);
    }
    let truth = serde_json::to_value(fold.finish(Value::Null, Default::default())).unwrap_or_default();
    if let Some(value) = truth[table][0].get(field) {
        assert_eq!(*value, expected, "truth: {table}.{field} in {}", truth[table][0]);
    }
}

fn exposure(extra: Vec<Step>) -> Vec<Step> {
    let mut steps = vec![(INTEL, 0, intel(9.8, None)), (RELEASE, 0, release()), (FINDING, 2, finding("open"))];
    steps.extend(extra);
    steps
}

#[test]
fn exposures_follow_remediation_evidence() {
    let at = |hour: u32| json!(format!("2026-11-{:02}T{:02}:00:00Z", 1 + hour / 24, hour % 24));
    check(exposure(vec![]), "exposures", "due_at", json!("2026-11-16T02:00:00Z"));
    check(exposure(vec![(DEPLOY, 5, deploy("d1", "succeeded", SHA, true))]), "exposures", "remediated_at", at(5));
    check(exposure(vec![(DEPLOY, 5, deploy("d1", "succeeded", SHA, false))]), "exposures", "status", json!("open"));
    check(
        exposure(vec![(DEPLOY, 5, deploy("d1", "succeeded", &"0".repeat(64), true))]),
        "exposures",
        "status",
        json!("open"),
    );
    let rolled_back =
        || vec![(DEPLOY, 5, deploy("d1", "succeeded", SHA, true)), (DEPLOY, 7, deploy("d1", "rolled_back", SHA, true))];
    check(exposure(rolled_back()), "exposures", "status", json!("open"));
    check(exposure(rolled_back()), "exposures", "detected_at", at(2));
    let mut fixed_later = rolled_back();
    fixed_later.push((FINDING, 9, finding("fixed")));
    check(exposure(fixed_later), "exposures", "remediated_at", at(9));
    // Closed by the scanner: a rollback of the patch does not reopen it.
    let scanner_then_rollback =
        vec![(FINDING, 4, finding("fixed")), (DEPLOY, 6, deploy("d1", "rolled_back", SHA, true))];
    check(exposure(scanner_then_rollback), "exposures", "status", json!("remediated"));
    check(
        exposure(vec![(FINDING, 3, finding("open")), (FINDING, 4, finding("fixed"))]),
        "exposures",
        "detected_at",
        at(2),
    );
    check(
        exposure(vec![(FINDING, 4, finding("fixed")), (FINDING, 6, finding("open"))]),
        "exposures",
        "remediated_at",
        Value::Null,
    );
    let suppressed = vec![(FINDING, 3, finding("suppressed")), (FINDING, 24 * 20, finding("suppressed"))];
    check(exposure(suppressed), "exposures", "breached", json!(false));
    check(exposure(vec![(FINDING, 24 * 20, finding("open"))]), "exposures", "breached", json!(true));
    // An out-of-order arrival is folded in event-time order.
    check(
        exposure(vec![(FINDING, 9, finding("fixed")), (FINDING, 1, finding("open"))]),
        "exposures",
        "detected_at",
        at(1),
    );
}

#[test]
fn kev_due_dates_include_the_due_day() {
    let steps = |fixed_hour| {
        vec![
            (INTEL, 0, intel(5.0, Some("2026-11-03"))),
            (FINDING, 1, finding("open")),
            (FINDING, fixed_hour, finding("fixed")),
        ]
    };
    check(steps(71), "exposures", "due_at", json!("2026-11-04T00:00:00Z"));
    check(steps(71), "exposures", "breached", json!(false));
    check(steps(72), "exposures", "breached", json!(false));
    check(steps(73), "exposures", "breached", json!(true));
}

fn deployments(steps: Vec<(u32, Value)>) -> Vec<Step> {
    let mut all = vec![(RELEASE, 0, release())];
    all.extend(steps.into_iter().map(|(hour, data)| (DEPLOY, hour, data)));
    all
}

#[test]
fn patch_outcomes() {
    let retried = || {
        deployments(vec![
            (1, deploy("d1", "scheduled", SHA, true)),
            (2, deploy("d1", "started", SHA, true)),
            (3, deploy("d1", "failed", SHA, true)),
            (5, deploy("d2", "started", SHA, true)),
            (6, deploy("d2", "succeeded", SHA, true)),
        ])
    };
    check(retried(), "patch_outcomes", "attempts", json!(2));
    check(retried(), "patch_outcomes", "first_attempt_at", json!("2026-11-01T02:00:00Z"));
    check(retried(), "patch_outcomes", "time_to_patch_s", json!(6.0 * 3600.0));
    let unverified = deployments(vec![(2, deploy("d1", "succeeded", SHA, false))]);
    check(unverified.clone(), "patch_outcomes", "outcome", json!("unverified"));
    check(unverified, "patch_outcomes", "remediated_at", Value::Null);
    let rolled_back = || vec![(2, deploy("d1", "succeeded", SHA, true)), (4, deploy("d1", "rolled_back", SHA, true))];
    check(deployments(rolled_back()), "patch_outcomes", "outcome", json!("rolled_back"));
    let mut redone = rolled_back();
    redone.push((30, deploy("d2", "succeeded", SHA, true)));
    check(deployments(redone), "patch_outcomes", "remediated_at", json!("2026-11-02T06:00:00Z"));
    check(
        deployments(vec![(1, deploy("d1", "scheduled", SHA, true))]),
        "patch_outcomes",
        "outcome",
        json!("in_progress"),
    );
    check(deployments(vec![(1, deploy("d1", "scheduled", SHA, true))]), "patch_outcomes", "attempts", json!(0));
}

#[test]
fn post_patch_posture() {
    let with_postures = |postures: Vec<(u32, Value)>| {
        let mut steps = deployments(vec![(5, deploy("d1", "succeeded", SHA, true))]);
        steps.extend(postures.into_iter().map(|(hour, data)| (POSTURE, hour, data)));
        steps
    };
    let around =
        || vec![(1, posture(90.0, true)), (5, posture(88.0, true)), (7, posture(60.0, true)), (9, posture(95.0, true))];
    check(with_postures(around()), "patch_outcomes", "posture_before", json!(88.0));
    check(with_postures(around()), "patch_outcomes", "posture_after", json!(60.0));
    check(with_postures(around()), "patch_outcomes", "posture_reeval_latency_s", json!(7200.0));
    check(with_postures(around()), "patch_outcomes", "posture_regressed", json!(true));
    let compliance_lost = vec![(4, posture(80.0, true)), (6, posture(79.0, false))];
    check(with_postures(compliance_lost), "patch_outcomes", "posture_regressed", json!(true));
    let fine = vec![(4, posture(80.0, true)), (6, posture(70.0, true))];
    check(with_postures(fine), "patch_outcomes", "posture_regressed", json!(false));
    let only_after = vec![(6, posture(70.0, true))];
    check(with_postures(only_after.clone()), "patch_outcomes", "posture_before", Value::Null);
    check(with_postures(only_after.clone()), "patch_outcomes", "posture_after", json!(70.0));
    check(with_postures(only_after), "patch_outcomes", "posture_regressed", Value::Null);
    // A late assessment that lands between the remediation and the first one after it.
    let late = vec![(8, posture(70.0, true)), (6, posture(91.0, true))];
    check(with_postures(late), "patch_outcomes", "posture_after", json!(91.0));
}

#[test]
fn canary_gates() {
    let gate = |stages: Vec<Value>, expected: &str| {
        let steps = stages.into_iter().enumerate().map(|(hour, data)| (CANARY, hour as u32, data)).collect();
        check(steps, "canary_rollups", "gate", json!(expected));
    };
    gate(vec![canary(0, "successful", "promote"), canary(1, "successful", "promote")], "promote");
    gate(vec![canary(0, "successful", "promote"), canary(1, "failed", "rollback")], "rollback");
    gate(vec![canary(0, "inconclusive", "pause")], "hold");
    gate(vec![canary(0, "inconclusive", "pause"), canary(0, "successful", "promote")], "promote");
    gate(vec![canary(0, "error", "promote")], "hold");
    gate(vec![canary(0, "successful", "rollback")], "rollback");
    gate(vec![canary(0, "successful", "promote"), canary(1, "successful", "pause")], "hold");
}
