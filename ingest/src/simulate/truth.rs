//! The expected results of a scenario, kept by the simulator as it generates.
//!
//! The simulator emits each entity's events in event-time order, so the truth
//! is the plain fold of DOMAIN.md's rules over them, in that order, with the
//! catalog the simulator itself released. It deliberately shares no code with
//! the processor, which must reach the same rows from any delivery order
//! (late, duplicated, interleaved with invalid lines). The file format is
//! documented in docs/truth.md.

use std::collections::{BTreeMap, HashMap};

use schemas::severity::Severity;
use schemas::time::MICROS_PER_DAY;
use schemas::*;
use serde::Serialize;

/// SLA days per severity when the CVE is not in KEV (DOMAIN.md defaults).
pub const fn sla_days(severity: Severity) -> i64 {
    match severity {
        Severity::Critical => 15,
        Severity::High => 30,
        Severity::Medium => 90,
        Severity::Low => 180,
    }
}

/// Folds generated events into expected table rows.
#[derive(Default)]
pub struct TruthBuilder {
    now: Option<Timestamp>,
    cves: HashMap<String, (Severity, Option<Date>)>,
    patches: HashMap<String, (Timestamp, Vec<String>, Option<String>)>,
    exposures: BTreeMap<(String, String), ExposureFold>,
    outcomes: BTreeMap<(String, String), OutcomeFold>,
    rollouts: BTreeMap<String, RolloutFold>,
    drift: BTreeMap<(Timestamp, String, String), (u64, u64)>,
    events_by_type: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ExposureStatus {
    Open,
    Remediated,
    Suppressed,
}

struct ExposureFold {
    status: ExposureStatus,
    detected_at: Timestamp,
    remediated_at: Option<Timestamp>,
    remediated_by: Option<String>,
}

#[derive(Default)]
struct OutcomeFold {
    /// (time, deployment_id, phase) in event-time order.
    events: Vec<(Timestamp, String, DeploymentPhase)>,
    unverified: Vec<String>,
}

#[derive(Default)]
struct RolloutFold {
    patch_id: String,
    stages: BTreeMap<u32, (Verdict, Option<CanaryAction>)>,
    last_action: Option<CanaryAction>,
}

impl TruthBuilder {
    /// Takes one generated event (before any delivery fault is applied).
    pub fn observe(&mut self, event: &CloudEvent) {
        *self.events_by_type.entry(event.event_type().as_str()).or_default() += 1;
        let at = event.time;
        if event.event_type().topic() != InputTopic::Intel {
            self.now = self.now.max(Some(at));
        }
        match &event.data {
            EventData::VulnIntel(intel) => {
                let kev_due = intel.kev.then_some(intel.kev_due_date).flatten();
                self.cves.insert(intel.cve_id.clone(), (Severity::from_cvss(intel.cvss_base), kev_due));
            }
            EventData::PatchRelease(release) => {
                let entry = (release.released_at, release.fixes_cves.clone(), release.artifact_sha256.clone());
                self.patches.insert(release.patch_id.clone(), entry);
            }
            EventData::VulnFinding(finding) => self.finding(at, finding),
            EventData::PatchDeployment(deployment) => self.deployment(at, deployment),
            EventData::CanaryStage(stage) => {
                let rollout = self.rollouts.entry(stage.rollout_id.clone()).or_default();
                rollout.patch_id.clone_from(&stage.patch_id);
                rollout.stages.insert(stage.stage, (stage.verdict, stage.action));
                rollout.last_action = stage.action;
            }
            EventData::FlowObservation(flow) => {
                let window = at.floor_to(time::MICROS_PER_HOUR);
                let key = (window, flow.src_segment.clone(), flow.dst_segment.clone());
                let cell = self.drift.entry(key).or_default();
                cell.0 += flow.connections;
                let intended = match flow.intended_action {
                    IntendedAction::Allow => Some(FlowAction::Allow),
                    IntendedAction::Deny => Some(FlowAction::Deny),
                    IntendedAction::Unknown => None,
                };
                if intended.is_some_and(|intended| intended != flow.enforced_action) {
                    cell.1 += flow.connections;
                }
            }
            EventData::AssetInventory(_) | EventData::PostureAssessment(_) | EventData::PolicyDecision(_) => {}
        }
    }

    fn finding(&mut self, at: Timestamp, finding: &VulnFinding) {
        let key = (finding.asset_id.clone(), finding.cve_id.clone());
        match (self.exposures.get_mut(&key), finding.status) {
            (None, FindingStatus::Open) => {
                let fold = ExposureFold {
                    status: ExposureStatus::Open,
                    detected_at: at,
                    remediated_at: None,
                    remediated_by: None,
                };
                self.exposures.insert(key, fold);
            }
            (None, _) => {}
            (Some(exposure), FindingStatus::Open) => {
                exposure.status = ExposureStatus::Open;
                exposure.remediated_at = None;
                exposure.remediated_by = None;
            }
            (Some(exposure), FindingStatus::Fixed) => {
                if exposure.status != ExposureStatus::Remediated {
                    exposure.status = ExposureStatus::Remediated;
                    exposure.remediated_at = Some(at);
                    exposure.remediated_by = None;
                }
            }
            (Some(exposure), FindingStatus::Suppressed) => {
                if exposure.status == ExposureStatus::Open {
                    exposure.status = ExposureStatus::Suppressed;
                }
            }
        }
    }

    fn deployment(&mut self, at: Timestamp, deployment: &PatchDeployment) {
        let release = self.patches.get(&deployment.patch_id);
        let outcome = self.outcomes.entry((deployment.asset_id.clone(), deployment.patch_id.clone())).or_default();
        let digest_differs = match (&deployment.artifact_sha256, release.and_then(|r| r.2.as_ref())) {
            (Some(reported), Some(released)) => reported != released,
            _ => false,
        };
        if (deployment.signature_verified == Some(false) || digest_differs)
            && !outcome.unverified.contains(&deployment.deployment_id)
        {
            outcome.unverified.push(deployment.deployment_id.clone());
        }
        outcome.events.push((at, deployment.deployment_id.clone(), deployment.phase));
        let verified = !outcome.unverified.contains(&deployment.deployment_id);
        let Some((_, fixes, _)) = release else { return };
        for cve in fixes {
            let Some(exposure) = self.exposures.get_mut(&(deployment.asset_id.clone(), cve.clone())) else {
                continue;
            };
            match deployment.phase {
                DeploymentPhase::Succeeded if verified && exposure.status != ExposureStatus::Remediated => {
                    exposure.status = ExposureStatus::Remediated;
                    exposure.remediated_at = Some(at);
                    exposure.remediated_by = Some(deployment.patch_id.clone());
                }
                DeploymentPhase::RolledBack
                    if exposure.status == ExposureStatus::Remediated
                        && exposure.remediated_by.as_deref() == Some(deployment.patch_id.as_str()) =>
                {
                    exposure.status = ExposureStatus::Open;
                    exposure.remediated_at = None;
                    exposure.remediated_by = None;
                }
                _ => {}
            }
        }
    }

    /// The expected rows, as of the largest event time of the scenario.
    pub fn finish(self, scenario: serde_json::Value, lines: LineCounts) -> Truth {
        let now = self.now.unwrap_or_default();
        let exposures = self
            .exposures
            .into_iter()
            .map(|((asset_id, cve_id), fold)| {
                let catalog = self.cves.get(&cve_id);
                let due_at = catalog.map(|&(severity, kev_due)| match kev_due {
                    Some(date) => date.succ().start(),
                    None => fold.detected_at.add_micros(sla_days(severity) * MICROS_PER_DAY),
                });
                let breached = match (fold.status, due_at) {
                    (ExposureStatus::Suppressed, _) | (_, None) => false,
                    (_, Some(due_at)) => fold.remediated_at.unwrap_or(now) > due_at,
                };
                ExposureRow {
                    asset_id,
                    cve_id,
                    status: match fold.status {
                        ExposureStatus::Open => "open",
                        ExposureStatus::Remediated => "remediated",
                        ExposureStatus::Suppressed => "suppressed",
                    },
                    severity: catalog.map(|c| c.0.as_str()),
                    detected_at: fold.detected_at,
                    remediated_at: fold.remediated_at,
                    due_at,
                    breached,
                }
            })
            .collect();
        let patch_outcomes = self
            .outcomes
            .into_iter()
            .map(|((asset_id, patch_id), fold)| {
                let released_at = self.patches.get(&patch_id).map(|p| p.0);
                outcome_row(asset_id, patch_id, released_at, fold)
            })
            .collect();
        let canary_rollups = self
            .rollouts
            .into_iter()
            .map(|(rollout_id, fold)| {
                let stages = fold.stages.len() as u64;
                let failed = fold.stages.values().filter(|(v, _)| *v == Verdict::Failed).count() as u64;
                let inconclusive =
                    fold.stages.values().filter(|(v, _)| matches!(v, Verdict::Inconclusive | Verdict::Error)).count()
                        as u64;
                let rollback_asked = fold.stages.values().any(|(_, a)| *a == Some(CanaryAction::Rollback));
                let gate = if failed > 0 || rollback_asked {
                    "rollback"
                } else if inconclusive > 0 || fold.last_action == Some(CanaryAction::Pause) {
                    "hold"
                } else {
                    "promote"
                };
                let failure_rate = if stages == 0 { 0.0 } else { failed as f64 / stages as f64 };
                RolloutRow { rollout_id, patch_id: fold.patch_id, stages, failed, inconclusive, failure_rate, gate }
            })
            .collect();
        let segment_drift = self
            .drift
            .into_iter()
            .map(|((window_start, src_segment, dst_segment), (connections, drift_connections))| DriftRow {
                window_start,
                src_segment,
                dst_segment,
                connections,
                drift_connections,
            })
            .collect();
        Truth {
            format: "patchtrail-truth/1",
            scenario,
            now,
            lines,
            events_by_type: self.events_by_type,
            exposures,
            patch_outcomes,
            canary_rollups,
            segment_drift,
        }
    }
}

fn outcome_row(asset_id: String, patch_id: String, released_at: Option<Timestamp>, fold: OutcomeFold) -> OutcomeRow {
    let attempted = |phase: DeploymentPhase| phase != DeploymentPhase::Scheduled;
    let first_attempt_at = fold.events.iter().filter(|e| attempted(e.2)).map(|e| e.0).min();
    let mut attempt_ids: Vec<&str> = fold.events.iter().filter(|e| attempted(e.2)).map(|e| e.1.as_str()).collect();
    attempt_ids.sort_unstable();
    attempt_ids.dedup();
    let is_terminal = |phase: DeploymentPhase| {
        matches!(phase, DeploymentPhase::Succeeded | DeploymentPhase::Failed | DeploymentPhase::RolledBack)
    };
    let verified = |deployment_id: &String| !fold.unverified.contains(deployment_id);
    let latest_terminal = fold.events.iter().rfind(|e| is_terminal(e.2));
    let outcome = match latest_terminal {
        None => "in_progress",
        Some((_, deployment_id, DeploymentPhase::Succeeded)) if !verified(deployment_id) => "unverified",
        Some((_, _, DeploymentPhase::Succeeded)) => "succeeded",
        Some((_, _, DeploymentPhase::Failed)) => "failed",
        Some(_) => "rolled_back",
    };
    let remediated_at = (outcome == "succeeded")
        .then(|| {
            let last_rollback = fold.events.iter().rposition(|e| e.2 == DeploymentPhase::RolledBack);
            let after = last_rollback.map_or(0, |idx| idx + 1);
            fold.events[after..].iter().find(|e| e.2 == DeploymentPhase::Succeeded && verified(&e.1)).map(|e| e.0)
        })
        .flatten();
    let time_to_patch_s = match (remediated_at, released_at) {
        (Some(done), Some(released)) => Some((done.micros() - released.micros()) as f64 / 1e6),
        _ => None,
    };
    OutcomeRow {
        asset_id,
        patch_id,
        released_at,
        first_attempt_at,
        remediated_at,
        time_to_patch_s,
        attempts: attempt_ids.len() as u64,
        outcome,
    }
}

/// How many lines of each kind the scenario file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LineCounts {
    /// Every line written.
    pub total: u64,
    /// Distinct valid events (what the processor must count once each).
    pub valid: u64,
    /// Re-deliveries of a valid event with the same id.
    pub duplicates: u64,
    /// Valid events delivered later than events after them (counted in `valid` too).
    pub late: u64,
    /// Lines that fail validation.
    pub invalid: u64,
}

/// The expected results of a scenario (docs/truth.md).
#[derive(Serialize)]
#[allow(missing_docs)]
pub struct Truth {
    pub format: &'static str,
    pub scenario: serde_json::Value,
    pub now: Timestamp,
    pub lines: LineCounts,
    pub events_by_type: BTreeMap<&'static str, u64>,
    pub exposures: Vec<ExposureRow>,
    pub patch_outcomes: Vec<OutcomeRow>,
    pub canary_rollups: Vec<RolloutRow>,
    pub segment_drift: Vec<DriftRow>,
}

/// Expected `exposures` row.
#[derive(Serialize)]
#[allow(missing_docs)]
pub struct ExposureRow {
    pub asset_id: String,
    pub cve_id: String,
    pub status: &'static str,
    pub severity: Option<&'static str>,
    pub detected_at: Timestamp,
    pub remediated_at: Option<Timestamp>,
    pub due_at: Option<Timestamp>,
    pub breached: bool,
}

/// Expected `patch_outcomes` row.
#[derive(Serialize)]
#[allow(missing_docs)]
pub struct OutcomeRow {
    pub asset_id: String,
    pub patch_id: String,
    pub released_at: Option<Timestamp>,
    pub first_attempt_at: Option<Timestamp>,
    pub remediated_at: Option<Timestamp>,
    pub time_to_patch_s: Option<f64>,
    pub attempts: u64,
    pub outcome: &'static str,
}

/// Expected `canary_rollups` row.
#[derive(Serialize)]
#[allow(missing_docs)]
pub struct RolloutRow {
    pub rollout_id: String,
    pub patch_id: String,
    pub stages: u64,
    pub failed: u64,
    pub inconclusive: u64,
    pub failure_rate: f64,
    pub gate: &'static str,
}

/// Expected `segment_drift` row.
#[derive(Serialize)]
#[allow(missing_docs)]
pub struct DriftRow {
    pub window_start: Timestamp,
    pub src_segment: String,
    pub dst_segment: String,
    pub connections: u64,
    pub drift_connections: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "3f5d0c1a9b2e4d6f8a0c2e4f6a8b0d2f4a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4f";

    /// Builds an event from a type, an hour of 2026-11-01 and the `data` fields.
    fn event(n: usize, event_type: &str, hour: u32, data: serde_json::Value) -> CloudEvent {
        let subject = EventType::parse(event_type)
            .map(|t| data[t.subject_field()].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let time = format!("2026-11-{:02}T{:02}:00:00Z", 1 + hour / 24, hour % 24);
        let line = serde_json::json!({
            "specversion": "1.0", "id": format!("e{n}"), "source": "test", "type": event_type,
            "time": time, "subject": subject, "data": data,
        });
        decode(line.to_string().as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn intel(cvss: f64, kev_due: Option<&str>) -> serde_json::Value {
        serde_json::json!({"cve_id": "CVE-2026-0001", "published_at": "2026-10-30T00:00:00Z", "cvss_base": cvss,
            "kev": kev_due.is_some(), "kev_due_date": kev_due})
    }

    fn release() -> serde_json::Value {
        serde_json::json!({"patch_id": "P1", "vendor": "v", "product": "p", "released_at": "2026-11-01T00:00:00Z",
            "fixes_cves": ["CVE-2026-0001"], "artifact_sha256": SHA})
    }

    fn finding(status: &str) -> serde_json::Value {
        serde_json::json!({"asset_id": "a1", "cve_id": "CVE-2026-0001", "status": status})
    }

    fn deploy(id: &str, phase: &str, sha: &str, signed: bool) -> serde_json::Value {
        serde_json::json!({"deployment_id": id, "asset_id": "a1", "patch_id": "P1", "phase": phase,
            "artifact_sha256": sha, "signature_verified": signed})
    }

    fn canary(stage: u32, verdict: &str, action: &str) -> serde_json::Value {
        serde_json::json!({"rollout_id": "r1", "patch_id": "P1", "stage": stage, "verdict": verdict, "action": action})
    }

    /// Folds `events` (type, hour, data) and checks one field of the only row of `table`.
    fn check(events: Vec<(&str, u32, serde_json::Value)>, table: &str, field: &str, expected: serde_json::Value) {
        let mut fold = TruthBuilder::default();
        for (n, (event_type, hour, data)) in events.into_iter().enumerate() {
            fold.observe(&event(n, event_type, hour, data));
        }
        let truth =
            serde_json::to_value(fold.finish(serde_json::Value::Null, LineCounts::default())).unwrap_or_default();
        assert_eq!(truth[table][0][field], expected, "{table}.{field} in {}", truth[table]);
    }

    const INTEL: &str = "vuln.intel.v1";
    const RELEASE: &str = "patch.release.v1";
    const FINDING: &str = "vuln.finding.v1";
    const DEPLOY: &str = "patch.deployment.v1";
    const CANARY: &str = "canary.stage.v1";

    #[test]
    fn exposures_follow_remediation_evidence() {
        let base = || vec![(INTEL, 0, intel(9.8, None)), (RELEASE, 0, release()), (FINDING, 2, finding("open"))];
        let with =
            |extra: Vec<(&'static str, u32, serde_json::Value)>| base().into_iter().chain(extra).collect::<Vec<_>>();
        // A verified success remediates at its time.
        check(
            with(vec![(DEPLOY, 5, deploy("d1", "succeeded", SHA, true))]),
            "exposures",
            "remediated_at",
            "2026-11-01T05:00:00Z".into(),
        );
        // Critical: due 15 days after detection.
        check(base(), "exposures", "due_at", "2026-11-16T02:00:00Z".into());
        // An unsigned or mismatched artifact proves nothing.
        check(with(vec![(DEPLOY, 5, deploy("d1", "succeeded", SHA, false))]), "exposures", "status", "open".into());
        check(
            with(vec![(DEPLOY, 5, deploy("d1", "succeeded", &"0".repeat(64), true))]),
            "exposures",
            "status",
            "open".into(),
        );
        // Rolling back the patch that remediated it reopens it; a later fixed finding closes it again.
        let rolled_back = vec![
            (DEPLOY, 5, deploy("d1", "succeeded", SHA, true)),
            (DEPLOY, 7, deploy("d1", "rolled_back", SHA, true)),
        ];
        check(with(rolled_back.clone()), "exposures", "status", "open".into());
        let mut fixed_later = rolled_back;
        fixed_later.push((FINDING, 9, finding("fixed")));
        check(with(fixed_later), "exposures", "remediated_at", "2026-11-01T09:00:00Z".into());
        // A suppressed exposure never counts as breached, even long overdue.
        let suppressed = vec![(FINDING, 3, finding("suppressed")), (FINDING, 24 * 20, finding("suppressed"))];
        check(with(suppressed), "exposures", "breached", false.into());
        // Open past its due date as of the last event: breached.
        check(with(vec![(FINDING, 24 * 20, finding("open"))]), "exposures", "breached", true.into());
    }

    #[test]
    fn kev_due_dates_include_the_due_day() {
        let events = |fixed_hour| {
            vec![
                (INTEL, 0, intel(5.0, Some("2026-11-03"))),
                (FINDING, 1, finding("open")),
                (FINDING, fixed_hour, finding("fixed")),
            ]
        };
        check(events(71), "exposures", "due_at", "2026-11-04T00:00:00Z".into());
        check(events(71), "exposures", "breached", false.into());
        check(events(72), "exposures", "breached", false.into());
        check(events(73), "exposures", "breached", true.into());
    }

    #[test]
    fn patch_outcomes() {
        let events = |steps: Vec<(u32, serde_json::Value)>| {
            let mut all = vec![(RELEASE, 0, release())];
            all.extend(steps.into_iter().map(|(hour, data)| (DEPLOY, hour, data)));
            all
        };
        let retried = || {
            events(vec![
                (1, deploy("d1", "scheduled", SHA, true)),
                (2, deploy("d1", "started", SHA, true)),
                (3, deploy("d1", "failed", SHA, true)),
                (5, deploy("d2", "started", SHA, true)),
                (6, deploy("d2", "succeeded", SHA, true)),
            ])
        };
        check(retried(), "patch_outcomes", "attempts", 2.into());
        check(retried(), "patch_outcomes", "first_attempt_at", "2026-11-01T02:00:00Z".into());
        check(retried(), "patch_outcomes", "time_to_patch_s", (6.0 * 3600.0).into());
        let unverified = events(vec![(2, deploy("d1", "succeeded", SHA, false))]);
        check(unverified.clone(), "patch_outcomes", "outcome", "unverified".into());
        check(unverified, "patch_outcomes", "remediated_at", serde_json::Value::Null);
        let rolled_back =
            || vec![(2, deploy("d1", "succeeded", SHA, true)), (4, deploy("d1", "rolled_back", SHA, true))];
        check(events(rolled_back()), "patch_outcomes", "outcome", "rolled_back".into());
        let mut redone = rolled_back();
        redone.push((30, deploy("d2", "succeeded", SHA, true)));
        check(events(redone), "patch_outcomes", "remediated_at", "2026-11-02T06:00:00Z".into());
        check(
            events(vec![(1, deploy("d1", "scheduled", SHA, true))]),
            "patch_outcomes",
            "outcome",
            "in_progress".into(),
        );
    }

    #[test]
    fn canary_gates() {
        let gate = |stages: Vec<serde_json::Value>, expected: &str| {
            let events = stages.into_iter().enumerate().map(|(hour, data)| (CANARY, hour as u32, data)).collect();
            check(events, "canary_rollups", "gate", expected.into());
        };
        gate(vec![canary(0, "successful", "promote"), canary(1, "successful", "promote")], "promote");
        gate(vec![canary(0, "successful", "promote"), canary(1, "failed", "rollback")], "rollback");
        gate(vec![canary(0, "inconclusive", "pause")], "hold");
        gate(vec![canary(0, "inconclusive", "pause"), canary(0, "successful", "promote")], "promote");
        gate(vec![canary(0, "error", "promote")], "hold");
        gate(vec![canary(0, "successful", "rollback")], "rollback");
    }
}
