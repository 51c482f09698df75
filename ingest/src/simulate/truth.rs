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
    /// Per CVE, what the latest `vuln.intel.v1` said: (severity, KEV due date if in KEV).
    cves: HashMap<String, (Severity, Option<Date>)>,
    /// Per CVE, the latest `vuln.kev.v1`'s due date (the KEV feed wins over intel).
    kev: HashMap<String, Option<Date>>,
    /// Per (asset, CVE), the highest CVSS and severity its findings reported.
    scanner: HashMap<(String, String), (Option<f64>, Option<Severity>)>,
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
            EventData::VulnKev(kev) => {
                self.kev.insert(kev.cve_id.clone(), kev.due_date);
            }
            EventData::VulnEpss(_) => {}
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
        let scanner = self.scanner.entry(key.clone()).or_default();
        if let Some(cvss) = finding.scanner_cvss {
            scanner.0 = Some(scanner.0.map_or(cvss, |known: f64| known.max(cvss)));
        }
        scanner.1 = scanner.1.max(finding.scanner_severity);
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
                // DOMAIN.md "One CVE, several feeds": KEV's due date from the
                // KEV feed, else the intel; severity from the intel's CVSS,
                // else the exposure's scanners.
                let intel = self.cves.get(&cve_id);
                let kev_due = match self.kev.get(&cve_id) {
                    Some(due) => *due,
                    None => intel.and_then(|c| c.1),
                };
                let scanner = self.scanner.get(&(asset_id.clone(), cve_id.clone()));
                let severity =
                    intel.map(|c| c.0).or_else(|| scanner.and_then(|s| s.0.map(Severity::from_cvss).or(s.1)));
                let due_at = match (kev_due, severity) {
                    (Some(date), _) => Some(date.succ().start()),
                    (None, Some(severity)) => Some(fold.detected_at.add_micros(sla_days(severity) * MICROS_PER_DAY)),
                    (None, None) => None,
                };
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
                    severity: severity.map(Severity::as_str),
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
