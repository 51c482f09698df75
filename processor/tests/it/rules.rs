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
const FLOW: &str = "flow.observation.v1";
const KEV: &str = "vuln.kev.v1";
const EPSS: &str = "vuln.epss.v1";

type Step = (&'static str, u32, Value);

/// An event of `event_type` at `hour` hours after 2026-11-01T00:00Z.
fn event(n: usize, event_type: &str, hour: u32, data: Value) -> CloudEvent {
    let subject = EventType::parse(event_type).map(|t| data[t.subject_field()].as_str().unwrap_or_default().to_owned());
    let start = schemas::Timestamp::parse_rfc3339("2026-11-01T00:00:00Z").expect("a time");
    let time = start.add_micros(i64::from(hour) * 3_600_000_000).to_string();
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
                "status": r.status, "due_at": ts(r.due_at), "breached": r.breached, "severity": r.severity,
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

/// Checks `field` of the one row of `table`, in the processor and in the
/// truth fold (which must have the row, and the field unless [`TRUTH_LACKS`]
/// lists it).
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
    let row = &truth[table][0];
    assert!(row.is_object(), "truth: no {table} row for these steps: {truth}");
    match row.get(field) {
        Some(value) => assert_eq!(*value, expected, "truth: {table}.{field} in {row}"),
        None => assert!(
            TRUTH_LACKS.contains(&(table, field)),
            "truth: {table}.{field} is missing from {row}, and not among the fields the truth does not fold"
        ),
    }
}

/// The fields the simulator's truth does not fold (it does not model
/// post-patch posture), so the processor alone is checked on them.
const TRUTH_LACKS: &[(&str, &str)] = &[
    ("patch_outcomes", "posture_before"),
    ("patch_outcomes", "posture_after"),
    ("patch_outcomes", "posture_regressed"),
    ("patch_outcomes", "posture_reeval_latency_s"),
];

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
    // Remediation evidence on a suppressed row remediates it.
    check(
        exposure(vec![(FINDING, 3, finding("suppressed")), (FINDING, 4, finding("fixed"))]),
        "exposures",
        "status",
        json!("remediated"),
    );
    check(
        exposure(vec![(FINDING, 3, finding("suppressed")), (DEPLOY, 5, deploy("d1", "succeeded", SHA, true))]),
        "exposures",
        "remediated_at",
        at(5),
    );
    // A suppressed finding on a remediated row changes nothing.
    check(
        exposure(vec![(FINDING, 4, finding("fixed")), (FINDING, 6, finding("suppressed"))]),
        "exposures",
        "status",
        json!("remediated"),
    );
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

const DECISION: &str = "policy.decision.v1";

/// What the processor raises for `steps`, applied in the order listed (so a
/// step listed after others with a later time arrives late): each alert as
/// (rule, entity, time), and the deployments asked to re-evaluate.
/// The answer is the same with 1 and 3 partitions (checked here).
fn raised(steps: Vec<Step>) -> (Vec<(String, String, String)>, Vec<String>) {
    let events: Vec<CloudEvent> =
        steps.into_iter().enumerate().map(|(n, (event_type, hour, data))| event(n, event_type, hour, data)).collect();
    let one = raised_with(&events, 1);
    assert_eq!(one, raised_with(&events, 3), "the same with 1 and 3 partitions");
    one
}

fn raised_with(events: &[CloudEvent], partitions: u32) -> (Vec<(String, String, String)>, Vec<String>) {
    let mut processor = Processor::new(ProcessorConfig::default(), partitions);
    let mut alerts = Vec::new();
    let mut requests = Vec::new();
    let mut collect = |processor: &mut Processor| {
        for (_, epoch) in processor.flush() {
            alerts.extend(epoch.alerts.iter().map(|a| (a.rule.to_owned(), a.entity_id.clone(), a.time.to_string())));
            requests.extend(epoch.reevaluations.iter().map(|r| r.deployment_id.clone()));
        }
    };
    for (offset, event) in events.iter().enumerate() {
        processor.apply("test", offset as u64, event);
        // An epoch per event: what a later event changes comes after what was published.
        collect(&mut processor);
    }
    processor.finish_input();
    collect(&mut processor);
    alerts.sort();
    (alerts, requests)
}

/// The alerts of `rule` among those raised for `steps`: (entity, time).
fn alerts_of(rule: &str, steps: Vec<Step>) -> Vec<(String, String)> {
    raised(steps).0.into_iter().filter(|(r, ..)| r == rule).map(|(_, entity, at)| (entity, at)).collect()
}

fn at(hour: u32) -> String {
    format!("2026-11-{:02}T{:02}:00:00Z", 1 + hour / 24, hour % 24)
}

fn decision(kind: &str) -> Value {
    json!({"decision_id": "p1", "asset_id": "a1", "decision": kind, "policy_id": "zt-1"})
}

/// A deployment event that says nothing of its signature or digest.
fn deploy_plain(id: &str, phase: &str) -> Value {
    json!({"deployment_id": id, "asset_id": "a1", "patch_id": "P1", "phase": phase})
}

#[test]
fn patch_integrity_is_checked_when_the_release_arrives_after_the_deployment() {
    let tampered = "0".repeat(64);
    // The release comes after the deployment that reports another digest.
    let steps = vec![(DEPLOY, 5, deploy("d1", "succeeded", &tampered, true)), (RELEASE, 0, release())];
    assert_eq!(alerts_of("PATCH_INTEGRITY", steps), vec![("d1".to_owned(), at(5))]);
    // In the usual order, the same alert.
    let steps = vec![(RELEASE, 0, release()), (DEPLOY, 5, deploy("d1", "succeeded", &tampered, true))];
    assert_eq!(alerts_of("PATCH_INTEGRITY", steps), vec![("d1".to_owned(), at(5))]);
    // Without a release nothing can be compared.
    assert!(alerts_of("PATCH_INTEGRITY", vec![(DEPLOY, 5, deploy("d1", "succeeded", &tampered, true))]).is_empty());
}

#[test]
fn an_unverified_deployment_asks_for_no_reevaluation() {
    let mut started = deploy("d1", "started", SHA, false);
    started["signature_verified"] = json!(false);
    let steps = vec![(RELEASE, 0, release()), (DEPLOY, 4, started), (DEPLOY, 5, deploy_plain("d1", "succeeded"))];
    let (alerts, requests) = raised(steps);
    assert!(requests.is_empty(), "re-evaluation requested for an unverified deployment");
    assert!(!alerts.iter().any(|(rule, ..)| rule == "POSTURE_REEVAL_OVERDUE"), "{alerts:?}");
    assert!(alerts.iter().any(|(rule, entity, _)| rule == "PATCH_INTEGRITY" && entity == "d1"), "{alerts:?}");
    // A verified one asks, and is overdue without an assessment.
    let steps = vec![
        (RELEASE, 0, release()),
        (DEPLOY, 5, deploy("d2", "succeeded", SHA, true)),
        (POSTURE, 30, posture(80.0, true)),
    ];
    let (alerts, requests) = raised(steps);
    assert_eq!(requests, vec!["d2".to_owned()]);
    assert!(alerts.contains(&("POSTURE_REEVAL_OVERDUE".to_owned(), "d2".to_owned(), at(9))), "{alerts:?}");
}

#[test]
fn an_exposure_reopened_after_its_due_date_is_breached() {
    // Critical: due 15 days after detection (hour 2 + 360).
    let steps = exposure(vec![(FINDING, 24 * 5, finding("fixed")), (FINDING, 24 * 20, finding("open"))]);
    assert_eq!(alerts_of("SLA_BREACH", steps), vec![("a1/CVE-2026-0001".to_owned(), at(24 * 20))]);
    // Reopened by a rollback after the due date.
    let steps = exposure(vec![
        (DEPLOY, 24 * 5, deploy("d1", "succeeded", SHA, true)),
        (DEPLOY, 24 * 20, deploy("d1", "rolled_back", SHA, true)),
    ]);
    assert_eq!(alerts_of("SLA_BREACH", steps), vec![("a1/CVE-2026-0001".to_owned(), at(24 * 20))]);
    // Reopened before the due date and left open: breached at the due date.
    let steps = exposure(vec![
        (FINDING, 24 * 5, finding("fixed")),
        (FINDING, 24 * 6, finding("open")),
        (POSTURE, 24 * 20, posture(80.0, true)),
    ]);
    assert_eq!(
        alerts_of("SLA_BREACH", steps),
        vec![("a1/CVE-2026-0001".to_owned(), "2026-11-16T02:00:00.000001Z".to_owned())]
    );
}

#[test]
fn a_kev_date_arriving_after_suppression_breaches_nothing() {
    // Open, suppressed before its SLA date; then KEV says it was due before detection.
    let steps = exposure(vec![
        (FINDING, 5, finding("suppressed")),
        (POSTURE, 30, posture(80.0, true)),
        (INTEL, 31, intel(9.8, Some("2026-10-30"))),
        (POSTURE, 40, posture(80.0, true)),
    ]);
    assert!(alerts_of("SLA_BREACH", steps).is_empty());
    // Still open when the KEV date arrives: breached from the KEV record's
    // time (before it, the catalog did not say so).
    let steps = exposure(vec![
        (POSTURE, 30, posture(80.0, true)),
        (INTEL, 31, intel(9.8, Some("2026-10-30"))),
        (POSTURE, 40, posture(80.0, true)),
    ]);
    assert_eq!(alerts_of("SLA_BREACH", steps), vec![("a1/CVE-2026-0001".to_owned(), at(31))]);
}

#[test]
fn an_allow_past_a_kev_sla_without_a_kev_date_is_noncompliant() {
    let mut kev_without_date = intel(9.8, None);
    kev_without_date["kev"] = json!(true);
    // KEV with no due date: due at detection + 15 days (critical).
    let steps = vec![
        (INTEL, 0, kev_without_date.clone()),
        (FINDING, 2, finding("open")),
        (DECISION, 24 * 20, decision("allow")),
    ];
    assert_eq!(alerts_of("ZT_ALLOW_NONCOMPLIANT", steps), vec![("p1".to_owned(), at(24 * 20))]);
    let before =
        vec![(INTEL, 0, kev_without_date), (FINDING, 2, finding("open")), (DECISION, 24 * 10, decision("allow"))];
    assert!(alerts_of("ZT_ALLOW_NONCOMPLIANT", before).is_empty());
}

#[test]
fn a_late_event_raises_the_alert_it_makes_hold_dated_by_the_condition() {
    // POSTURE_REGRESSION: the success arrives 14 h late, after both assessments.
    let steps = vec![
        (RELEASE, 0, release()),
        (POSTURE, 4, posture(90.0, true)),
        (POSTURE, 8, posture(60.0, true)),
        (POSTURE, 20, posture(85.0, true)),
        (DEPLOY, 6, deploy("d1", "succeeded", SHA, true)),
    ];
    assert_eq!(alerts_of("POSTURE_REGRESSION", steps), vec![("a1/P1".to_owned(), at(8))]);
    // ZT_ALLOW_NONCOMPLIANT: a non-compliant assessment arrives after the decision it precedes.
    let steps = vec![
        (POSTURE, 2, posture(90.0, true)),
        (DECISION, 10, decision("allow")),
        (POSTURE, 30, posture(85.0, true)),
        (POSTURE, 6, posture(40.0, false)),
    ];
    assert_eq!(alerts_of("ZT_ALLOW_NONCOMPLIANT", steps), vec![("p1".to_owned(), at(10))]);
    // SLA_BREACH: the open finding that breaches arrives days after the due date passed
    // (within `processor.late_alert_horizon_secs`; later, it is refused).
    let steps = exposure(vec![
        (FINDING, 24 * 5, finding("fixed")),
        (POSTURE, 24 * 26, posture(80.0, true)),
        (FINDING, 24 * 20, finding("open")),
    ]);
    assert_eq!(alerts_of("SLA_BREACH", steps), vec![("a1/CVE-2026-0001".to_owned(), at(24 * 20))]);
    // CANARY_FAILED: a late failed stage makes the later reports add up to a rollback.
    let steps = vec![
        (CANARY, 1, canary(0, "successful", "promote")),
        (CANARY, 5, canary(1, "successful", "promote")),
        (CANARY, 20, canary(2, "successful", "promote")),
        (CANARY, 3, canary(3, "failed", "promote")),
    ];
    assert_eq!(alerts_of("CANARY_FAILED", steps), vec![("r1".to_owned(), at(3))]);
    // UNMANAGED_ASSET: the inventory saying "unmanaged" arrives after the events naming the asset.
    let unmanaged = json!({"asset_id": "a1", "environment": "cloud", "criticality": "low",
        "internet_exposed": false, "segment": "s", "managed": false});
    let managed = json!({"asset_id": "a1", "environment": "cloud", "criticality": "low",
        "internet_exposed": false, "segment": "s", "managed": true});
    let steps = vec![
        ("asset.inventory.v1", 0, managed),
        (POSTURE, 4, posture(90.0, true)),
        (POSTURE, 20, posture(90.0, true)),
        ("asset.inventory.v1", 2, unmanaged),
    ];
    assert_eq!(alerts_of("UNMANAGED_ASSET", steps), vec![("a1".to_owned(), at(4))]);
    // POSTURE_REEVAL_OVERDUE: the success arrives a day late; its 4 h window has long closed.
    let steps =
        vec![(RELEASE, 0, release()), (POSTURE, 30, posture(80.0, true)), (DEPLOY, 5, deploy_plain("d1", "succeeded"))];
    assert_eq!(alerts_of("POSTURE_REEVAL_OVERDUE", steps), vec![("d1".to_owned(), at(9))]);
    // SEGMENTATION_DRIFT: an allowed denial arrives after its window closed.
    let flow = |intended: &str| {
        json!({"src_segment": "branch", "dst_segment": "core", "dst_port": 5432, "protocol": "tcp",
            "enforced_action": "allow", "intended_action": intended, "connections": 3})
    };
    let steps = vec![(FLOW, 1, flow("allow")), (FLOW, 30, flow("allow")), (FLOW, 3, flow("deny"))];
    assert_eq!(alerts_of("SEGMENTATION_DRIFT", steps), vec![("branch->core:5432".to_owned(), at(3))]);
}

#[test]
fn a_condition_at_an_instant_sees_every_event_at_that_instant_whatever_the_arrival_order() {
    // The non-compliant assessment has the decision's time and arrives after it.
    let steps =
        vec![(POSTURE, 2, posture(90.0, true)), (DECISION, 10, decision("allow")), (POSTURE, 10, posture(40.0, false))];
    assert_eq!(alerts_of("ZT_ALLOW_NONCOMPLIANT", steps), vec![("p1".to_owned(), at(10))]);
    // The inventory has the deployment's time and arrives after it: the asset is known.
    let managed = json!({"asset_id": "a1", "environment": "cloud", "criticality": "low",
        "internet_exposed": false, "segment": "s", "managed": true});
    let steps = vec![
        (RELEASE, 0, release()),
        (DEPLOY, 5, deploy("d1", "started", SHA, true)),
        ("asset.inventory.v1", 5, managed),
    ];
    assert!(alerts_of("UNMANAGED_ASSET", steps).is_empty());
    // The fixed finding has the due instant: in time, whatever came first.
    let due = 2 + 24 * 15;
    let steps = exposure(vec![(POSTURE, due + 1, posture(80.0, true)), (FINDING, due, finding("fixed"))]);
    assert!(alerts_of("SLA_BREACH", steps).is_empty());
}

fn kev(due: Option<&str>) -> Value {
    json!({"cve_id": "CVE-2026-0001", "date_added": "2026-11-01", "due_date": due})
}

fn epss(score: f64) -> Value {
    json!({"cve_id": "CVE-2026-0001", "epss": score, "percentile": 0.5, "score_date": "2026-11-01"})
}

fn scanned(cvss: Option<f64>, severity: Option<&str>) -> Value {
    json!({"asset_id": "a1", "cve_id": "CVE-2026-0001", "status": "open", "scanner_cvss": cvss,
        "scanner_severity": severity, "scanner": "trivy"})
}

#[test]
fn each_feed_replaces_only_its_own_fields() {
    // NVD after KEV: KEV's due date stays (intel says nothing of KEV here).
    let kev_then_nvd =
        vec![(KEV, 0, kev(Some("2026-11-03"))), (INTEL, 1, intel(5.0, None)), (FINDING, 2, finding("open"))];
    check(kev_then_nvd.clone(), "exposures", "due_at", json!("2026-11-04T00:00:00Z"));
    check(kev_then_nvd, "exposures", "severity", json!("medium"));
    // EPSS after NVD: the CVSS stays.
    let nvd_then_epss = vec![(INTEL, 0, intel(9.8, None)), (EPSS, 1, epss(0.9)), (FINDING, 2, finding("open"))];
    check(nvd_then_epss, "exposures", "due_at", json!("2026-11-16T02:00:00Z"));
    // KEV alone: the KEV due date, and no severity.
    let kev_only = vec![(KEV, 0, kev(Some("2026-11-03"))), (FINDING, 2, finding("open"))];
    check(kev_only.clone(), "exposures", "due_at", json!("2026-11-04T00:00:00Z"));
    check(kev_only, "exposures", "severity", Value::Null);
}

#[test]
fn without_catalog_cvss_the_exposures_scanners_decide_the_severity() {
    // The highest scanner CVSS among the exposure's findings, in any order.
    let two_scans = vec![(FINDING, 2, scanned(Some(9.1), None)), (FINDING, 1, scanned(Some(5.0), Some("low")))];
    check(two_scans.clone(), "exposures", "severity", json!("critical"));
    check(two_scans, "exposures", "due_at", json!("2026-11-16T01:00:00Z"));
    // Else the highest scanner severity.
    let words = vec![(FINDING, 1, scanned(None, Some("medium"))), (FINDING, 2, scanned(None, Some("low")))];
    check(words, "exposures", "severity", json!("medium"));
    // The catalog's CVSS wins over any scanner's.
    let catalog = vec![(INTEL, 0, intel(5.0, None)), (FINDING, 1, scanned(Some(9.8), Some("critical")))];
    check(catalog, "exposures", "severity", json!("medium"));
    // Nobody knows: no severity, no due date, never breached.
    let unknown = vec![(FINDING, 1, finding("open")), (FINDING, 24 * 400, finding("open"))];
    check(unknown.clone(), "exposures", "severity", Value::Null);
    check(unknown.clone(), "exposures", "due_at", Value::Null);
    check(unknown, "exposures", "breached", json!(false));
    // Unknown severity, but in KEV: KEV's due date.
    let kev_due =
        vec![(KEV, 0, kev(Some("2026-11-03"))), (FINDING, 1, scanned(None, None)), (FINDING, 24 * 5, finding("open"))];
    check(kev_due, "exposures", "breached", json!(true));
}

/// The OCSF findings of `rule` among those raised for `steps`.
fn findings_of(rule: &str, steps: Vec<Step>) -> Vec<Value> {
    let events: Vec<CloudEvent> =
        steps.into_iter().enumerate().map(|(n, (event_type, hour, data))| event(n, event_type, hour, data)).collect();
    let mut processor = Processor::new(ProcessorConfig::default(), 1);
    let mut found = Vec::new();
    for (offset, event) in events.iter().enumerate() {
        processor.apply("test", offset as u64, event);
        for (_, epoch) in processor.flush() {
            found.extend(epoch.alerts.into_iter().filter(|a| a.rule == rule).map(|a| a.ocsf));
        }
    }
    processor.finish_input();
    for (_, epoch) in processor.flush() {
        found.extend(epoch.alerts.into_iter().filter(|a| a.rule == rule).map(|a| a.ocsf));
    }
    found.iter().map(|text| serde_json::from_str(text).expect("OCSF JSON")).collect()
}

/// The instant just past the due date of a critical exposure detected at hour 2.
const PAST_DUE: &str = "2026-11-16T02:00:00.000001Z";

#[test]
fn an_exposure_breached_for_a_while_raises_its_breach_whatever_comes_after() {
    let breach = || vec![("a1/CVE-2026-0001".to_owned(), PAST_DUE.to_owned())];
    // Re-scored critical → medium an hour after its due date, before the watermark passed it.
    let rescored = exposure(vec![(INTEL, 2 + 24 * 15 + 1, intel(5.0, None)), (POSTURE, 24 * 30, posture(80.0, true))]);
    assert_eq!(alerts_of("SLA_BREACH", rescored.clone()), breach());
    check(rescored, "exposures", "breached", json!(false));
    // A second KEV record moves the due date later, a day after the first one passed.
    let moved = vec![
        (KEV, 0, kev(Some("2026-11-03"))),
        (FINDING, 2, finding("open")),
        (KEV, 24 * 5, kev(Some("2026-11-20"))),
        (POSTURE, 24 * 30, posture(80.0, true)),
    ];
    assert_eq!(
        alerts_of("SLA_BREACH", moved),
        vec![("a1/CVE-2026-0001".to_owned(), "2026-11-04T00:00:00.000001Z".to_owned())]
    );
    // Suppressed before its due date, remediated after it: breached in the table, and alerted.
    let late_fix = exposure(vec![
        (FINDING, 5, finding("suppressed")),
        (FINDING, 24 * 20, finding("fixed")),
        (POSTURE, 24 * 30, posture(80.0, true)),
    ]);
    check(late_fix.clone(), "exposures", "breached", json!(true));
    assert_eq!(alerts_of("SLA_BREACH", late_fix), vec![("a1/CVE-2026-0001".to_owned(), at(24 * 20))]);
}

fn allow(id: &str) -> Value {
    json!({"decision_id": id, "asset_id": "a1", "decision": "allow", "policy_id": "zt-1"})
}

#[test]
fn an_allow_is_judged_with_the_catalog_of_its_time() {
    let base = || vec![(INTEL, 0, intel(9.8, None)), (FINDING, 2, finding("open"))];
    // A KEV record dated after the decision changes nothing about it.
    let mut after = base();
    after.extend([(DECISION, 24 * 20, allow("p1")), (KEV, 24 * 21, kev(Some("2026-11-03")))]);
    after.push((POSTURE, 24 * 30, posture(80.0, true)));
    assert!(alerts_of("ZT_ALLOW_NONCOMPLIANT", after).is_empty());
    // A KEV record dated before the decision, delivered after it was judged, judges it again.
    let mut late = base();
    late.extend([(DECISION, 24 * 20, allow("p1")), (POSTURE, 24 * 25, posture(80.0, true))]);
    late.extend([(KEV, 24 * 3, kev(Some("2026-11-03"))), (POSTURE, 24 * 26, posture(80.0, true))]);
    assert_eq!(alerts_of("ZT_ALLOW_NONCOMPLIANT", late), vec![("p1".to_owned(), at(24 * 20))]);
    // The next decision more than the horizon later does not drop one not judged yet.
    let apart = vec![
        (POSTURE, 1, posture(30.0, false)),
        (DECISION, 2, allow("p1")),
        (DECISION, 24 * 9, allow("p2")),
        (POSTURE, 24 * 10, posture(30.0, false)),
    ];
    assert_eq!(
        alerts_of("ZT_ALLOW_NONCOMPLIANT", apart),
        vec![("p1".to_owned(), at(2)), ("p2".to_owned(), at(24 * 9))]
    );
}

#[test]
fn a_catalog_record_older_than_the_horizon_re_judges_only_what_is_within_it() {
    // The allow at hour 20 was judged compliant (the assessment at hour 10).
    // Daily assessments then move the horizon past it, and the history before
    // it is compacted: of the early assessments only the one after the
    // success (non-compliant) is kept. A KEV record dated at hour 0 comes last.
    let mut steps = vec![
        (RELEASE, 0, release()),
        (FINDING, 1, finding("open")),
        (DEPLOY, 2, deploy("d1", "succeeded", SHA, true)),
        (POSTURE, 3, posture(40.0, false)),
        (POSTURE, 10, posture(90.0, true)),
        (DECISION, 20, allow("p1")),
    ];
    steps.extend((1..=12).map(|day| (POSTURE, 24 * day, posture(90.0, true))));
    let kev_far = json!({"cve_id": "CVE-2026-0001", "date_added": "2026-11-01", "due_date": "2026-12-31"});
    let mut late = steps.clone();
    late.push((KEV, 0, kev_far));
    assert_eq!(alerts_of("ZT_ALLOW_NONCOMPLIANT", late), vec![], "a settled decision is not judged again");
    // An exposure open from hour 1 to day 4, past a KEV date of 2026-11-03 that
    // arrives when that instant is beyond the horizon: the row is breached, no alert.
    let mut breach = exposure(vec![(FINDING, 24 * 4, finding("fixed")), (POSTURE, 24 * 20, posture(80.0, true))]);
    breach.push((KEV, 0, kev(Some("2026-11-03"))));
    assert_eq!(alerts_of("SLA_BREACH", breach.clone()), vec![]);
    check(breach, "exposures", "breached", json!(true));
    // Within the horizon, the same record raises it.
    let mut recent = exposure(vec![(FINDING, 24 * 4, finding("fixed")), (POSTURE, 24 * 8, posture(80.0, true))]);
    recent.push((KEV, 0, kev(Some("2026-11-03"))));
    assert_eq!(
        alerts_of("SLA_BREACH", recent),
        vec![("a1/CVE-2026-0001".to_owned(), "2026-11-04T00:00:00.000001Z".to_owned())]
    );
}

#[test]
fn a_catalog_restored_from_an_older_commit_raises_nothing_while_it_is_read_again() {
    // As `run` after a restart: the assets task keeps state judged with the
    // whole catalog, the intel task is restored from an older commit (here
    // from before any intel) and the intel topic read again to its end
    // before the next commit. The KEV record comes back before the release
    // that fixes its CVE; the decision made after the fixing deployment is
    // not overdue meanwhile.
    let intel_task = processor::task::TaskId { topic: schemas::InputTopic::Intel, partition: 0 };
    let mut processor = Processor::new(ProcessorConfig::default(), 1);
    let empty = processor.snapshot(intel_task).expect("a snapshot");
    let steps = [
        (KEV, 0, kev(Some("2026-11-03"))),
        (RELEASE, 0, release()),
        (FINDING, 2, finding("open")),
        (DEPLOY, 24 * 5, deploy("d1", "succeeded", SHA, true)),
        (DECISION, 24 * 6, allow("p1")),
        (POSTURE, 24 * 7, posture(80.0, true)),
    ];
    let events: Vec<CloudEvent> =
        steps.into_iter().enumerate().map(|(n, (t, hour, data))| event(n, t, hour, data)).collect();
    let alerts = |processor: &mut Processor| -> Vec<(&'static str, String)> {
        let epochs = processor.flush().into_iter();
        epochs.flat_map(|(_, epoch)| epoch.alerts.into_iter().map(|a| (a.rule, a.entity_id))).collect()
    };
    for (offset, event) in events.iter().enumerate() {
        processor.apply("test", offset as u64, event);
    }
    let first = alerts(&mut processor);
    assert!(first.contains(&("SLA_BREACH", "a1/CVE-2026-0001".to_owned())), "{first:?}");
    assert!(!first.iter().any(|(rule, _)| *rule == "ZT_ALLOW_NONCOMPLIANT"), "{first:?}");
    processor.restore(intel_task, &empty, "an older commit").expect("restored");
    for (offset, event) in events.iter().enumerate().take(2) {
        processor.apply("test", offset as u64, event);
    }
    processor.finish_input();
    assert_eq!(alerts(&mut processor), vec![], "after the catalog was read again");
}

#[test]
fn an_alert_carries_the_epss_and_severity_of_its_time() {
    let epss_of = |steps: Vec<Step>| -> Vec<Value> {
        findings_of("SLA_BREACH", steps).iter().map(|f| f["vulnerabilities"][0]["cve"]["epss"].clone()).collect()
    };
    let dated = |score: f64, date: &str| json!({"cve_id": "CVE-2026-0001", "epss": score, "percentile": 0.5, "score_date": date});
    let later = vec![(POSTURE, 24 * 30, posture(80.0, true))];
    // Reported after the alert's time: the alert carries none.
    let mut steps = exposure(vec![(EPSS, 24 * 20, epss(0.9))]);
    steps.extend(later.clone());
    assert_eq!(epss_of(steps), vec![Value::Null]);
    // The EPSS feed's score, not a later intel record's.
    let mut steps = vec![
        (EPSS, 1, epss(0.9)),
        (
            INTEL,
            3,
            json!({"cve_id": "CVE-2026-0001",
        "published_at": "2026-10-30T00:00:00Z", "cvss_base": 9.8, "epss": 0.1}),
        ),
    ];
    steps.extend([(FINDING, 4, finding("open"))]);
    steps.extend(later.clone());
    assert_eq!(epss_of(steps), vec![json!({"score": "0.9", "percentile": 0.5})]);
    // The latest score date, not the latest delivery.
    let mut steps = exposure(vec![(EPSS, 30, dated(0.9, "2026-11-02")), (EPSS, 40, dated(0.2, "2026-11-01"))]);
    steps.extend(later.clone());
    assert_eq!(epss_of(steps), vec![json!({"score": "0.9", "percentile": 0.5})]);
    // Severity from the scans of its time: critical by the first scan, whatever a later one says.
    let steps = vec![
        (FINDING, 2, scanned(None, Some("critical"))),
        (FINDING, 24 * 16, scanned(Some(2.0), None)),
        (POSTURE, 24 * 30, posture(80.0, true)),
    ];
    let found = findings_of("SLA_BREACH", steps);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["severity_id"], json!(5), "{}", found[0]);
}

#[test]
fn a_later_success_that_reveals_a_regression_raises_it() {
    // d1 succeeds between a good and a bad assessment, but d2 fails before the
    // bad one: no remediation then. d3's success makes d1's the remediation again.
    let steps = vec![
        (RELEASE, 0, release()),
        (POSTURE, 3, posture(90.0, true)),
        (DEPLOY, 4, deploy("d1", "succeeded", SHA, true)),
        (DEPLOY, 5, deploy("d2", "failed", SHA, true)),
        (POSTURE, 6, posture(40.0, true)),
        (POSTURE, 10, posture(40.0, true)),
        (DEPLOY, 12, deploy("d3", "succeeded", SHA, true)),
        (POSTURE, 30, posture(40.0, true)),
    ];
    check(steps.clone(), "patch_outcomes", "posture_regressed", json!(true));
    assert_eq!(alerts_of("POSTURE_REGRESSION", steps), vec![("a1/P1".to_owned(), at(12))]);
}

#[test]
fn a_check_queued_behind_the_watermark_runs_without_waiting_for_a_later_event() {
    // As two replays of one lake: today's inventory of one asset, its end
    // moving every task's watermark to today; then an old scan of another
    // asset, in a task that has seen no event, breached long ago.
    let mut processor = Processor::new(ProcessorConfig::default(), 4);
    let partition = |name: &str| processor.route_topic(schemas::InputTopic::Assets, name).partition;
    let other = ["a2", "a3", "a4", "a5", "a6", "a7"].into_iter().find(|name| partition(name) != partition("a1"));
    let other = other.expect("an asset in another partition");
    let inventory = json!({"asset_id": "a1", "environment": "cloud", "criticality": "low",
        "internet_exposed": false, "segment": "s", "managed": true});
    let mut alerts = Vec::new();
    processor.apply("first", 0, &event(0, "asset.inventory.v1", 24 * 400, inventory));
    processor.finish_input();
    processor.flush();
    let old = json!({"asset_id": other, "cve_id": "CVE-2026-0001", "status": "open", "scanner_cvss": 9.8});
    processor.apply("second", 0, &event(1, FINDING, 2, old));
    processor.finish_input();
    for (_, epoch) in processor.flush() {
        alerts.extend(epoch.alerts.into_iter().map(|a| (a.rule, a.entity_id, a.time.to_string())));
    }
    let entity = format!("{other}/CVE-2026-0001");
    assert_eq!(alerts, vec![("SLA_BREACH", entity, PAST_DUE.to_owned())]);
}

#[test]
fn an_alert_names_its_entity_in_ocsf_fields() {
    let failed = vec![(CANARY, 1, canary(0, "failed", "rollback")), (CANARY, 5, canary(1, "successful", "promote"))];
    let found = findings_of("CANARY_FAILED", failed);
    assert_eq!(found[0]["resources"], json!([{"uid": "r1", "type": "rollout", "name": "P1"}]), "{}", found[0]);
    let regressed = vec![
        (RELEASE, 0, release()),
        (POSTURE, 4, posture(90.0, true)),
        (DEPLOY, 6, deploy("d1", "succeeded", SHA, true)),
        (POSTURE, 8, posture(60.0, true)),
        (POSTURE, 20, posture(85.0, true)),
    ];
    let found = findings_of("POSTURE_REGRESSION", regressed);
    assert_eq!(found[0]["resources"], json!([{"uid": "P1", "type": "patch"}]), "{}", found[0]);
    assert_eq!(found[0]["device"]["uid"], json!("a1"));
    let flow = |intended: &str| {
        json!({"src_segment": "branch", "dst_segment": "core", "dst_port": 5432, "protocol": "tcp",
            "enforced_action": "allow", "intended_action": intended, "connections": 3})
    };
    let found = findings_of("SEGMENTATION_DRIFT", vec![(FLOW, 1, flow("deny")), (FLOW, 30, flow("allow"))]);
    let expected = json!([{"src_endpoint": {"zone": "branch"}, "dst_endpoint": {"zone": "core", "port": 5432}}]);
    assert_eq!(found[0]["evidences"], expected, "{}", found[0]);
}

/// The rules DOMAIN.md leaves open, as docs/truth.md "Edges DOMAIN.md leaves open" decides them.
#[test]
fn the_edges_domain_leaves_open_are_decided() {
    // A scanner's score counts from its report on, whatever the finding's
    // status: a `fixed` scan before the row opened still tells its severity.
    let scored_before = vec![
        (FINDING, 1, json!({"asset_id": "a1", "cve_id": "CVE-2026-0001", "status": "fixed", "scanner_cvss": 9.8})),
        (FINDING, 5, finding("open")),
    ];
    check(scored_before.clone(), "exposures", "severity", json!("critical"));
    check(scored_before.clone(), "exposures", "detected_at", json!("2026-11-01T05:00:00Z"));
    check(scored_before, "exposures", "due_at", json!("2026-11-16T05:00:00Z"));
    // A KEV record without a due date, NVD's score known: the SLA of that severity.
    let kev_undated = vec![(INTEL, 0, intel(7.5, None)), (KEV, 0, kev(None)), (FINDING, 2, finding("open"))];
    check(kev_undated, "exposures", "due_at", json!("2026-12-01T02:00:00Z"));
    // A breach of unknown severity (only KEV can give it a due date): OCSF High, since known exploited.
    let unknown =
        vec![(KEV, 0, kev(Some("2026-11-03"))), (FINDING, 2, finding("open")), (POSTURE, 24 * 6, posture(80.0, true))];
    let found = findings_of("SLA_BREACH", unknown);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0]["severity_id"].clone(), found[0]["severity"].clone()), (json!(4), json!("High")));
    // Every CVE a feed names has a `cves` row, null where no feed said it.
    let mut processor = Processor::new(ProcessorConfig::default(), 1);
    let kev_only = json!({"cve_id": "CVE-2026-0002", "date_added": "2026-11-01", "due_date": "2026-11-20"});
    let epss_only = json!({"cve_id": "CVE-2026-0003", "epss": 0.4, "percentile": 0.9, "score_date": "2026-11-01"});
    processor.apply("test", 0, &event(0, KEV, 0, kev_only));
    processor.apply("test", 1, &event(1, EPSS, 0, epss_only));
    let mut rows: Vec<Value> = processor
        .flush()
        .into_iter()
        .flat_map(|(_, epoch)| epoch.cves)
        .map(|r| json!([r.cve_id, r.cvss_base, r.severity, r.kev, r.kev_due_date.map(|d| d.to_string()), r.epss]))
        .collect();
    rows.sort_by_key(|row| row[0].to_string());
    assert_eq!(
        rows,
        vec![
            json!(["CVE-2026-0002", null, null, true, "2026-11-20", null]),
            json!(["CVE-2026-0003", null, null, false, null, 0.4])
        ]
    );
}
