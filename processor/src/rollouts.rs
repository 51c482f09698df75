//! The rollouts task: canary analyses folded into `canary_rollups` and the
//! `CANARY_FAILED` alert.
//!
//! A rollout keeps its few reports sorted by stamp. Its row is the gate rule
//! over each stage's latest report; the alert is checked when the watermark
//! passes a report, over the reports up to that report's time, so it fires
//! once and at the same moment whatever the arrival order within the lateness.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};
use schemas::{CanaryAction, CanaryStage, Timestamp, Verdict};

use crate::alerts::{self, Rule};
use crate::config::ProcessorConfig;
use crate::rows::{AlertRow, EpochRows, RolloutRow, next_revision};
use crate::{Stamp, Trim, insert_sorted};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Report {
    patch_id: String,
    stage: u32,
    verdict: Verdict,
    action: Option<CanaryAction>,
}

#[derive(Default, Serialize, Deserialize)]
struct Rollout {
    reports: Vec<(Stamp, Report)>,
    committed: Option<u64>,
    revision: i64,
    alerted: bool,
}

struct Gate {
    stages: i64,
    failed: i64,
    inconclusive: i64,
    gate: &'static str,
}

/// The gate rule over the reports (sorted by stamp) up to `as_of`.
fn gate(reports: &[(Stamp, Report)], as_of: Timestamp, config: &ProcessorConfig) -> Gate {
    let upto = reports.partition_point(|(stamp, _)| stamp.0 <= as_of);
    let reports = &reports[..upto];
    let mut latest: Vec<&Report> = Vec::new();
    for (_, report) in reports {
        match latest.iter_mut().find(|r| r.stage == report.stage) {
            Some(slot) => *slot = report,
            None => latest.push(report),
        }
    }
    let failed = latest.iter().filter(|r| r.verdict == Verdict::Failed).count() as i64;
    let inconclusive =
        latest.iter().filter(|r| matches!(r.verdict, Verdict::Inconclusive | Verdict::Error)).count() as i64;
    let rollback_asked = latest.iter().any(|r| r.action == Some(CanaryAction::Rollback));
    let paused = reports.last().is_some_and(|(_, r)| r.action == Some(CanaryAction::Pause));
    let gate = if failed as u64 > config.canary_failure_limit || rollback_asked {
        "rollback"
    } else if inconclusive as u64 > config.canary_inconclusive_limit || paused {
        "hold"
    } else {
        "promote"
    };
    Gate { stages: latest.len() as i64, failed, inconclusive, gate }
}

/// State of one rollouts task.
#[derive(Default, Serialize, Deserialize)]
pub struct RolloutsState {
    rollouts: FxHashMap<String, Rollout>,
    #[serde(skip)]
    dirty: FxHashSet<String>,
    timers: BTreeSet<(Timestamp, String)>,
    /// The highest revision of a forgotten rollout: a rollout seen again
    /// after it was forgotten continues above it, so its new row supersedes
    /// the lake's.
    revision_floor: i64,
    #[serde(skip)]
    alerts: Vec<AlertRow>,
}

impl RolloutsState {
    /// Takes one `canary.stage.v1`.
    pub fn apply(&mut self, stamp: Stamp, stage: &CanaryStage) {
        let floor = self.revision_floor;
        let rollout = self
            .rollouts
            .entry(stage.rollout_id.clone())
            .or_insert_with(|| Rollout { revision: floor, ..Rollout::default() });
        let report = Report {
            patch_id: stage.patch_id.clone(),
            stage: stage.stage,
            verdict: stage.verdict,
            action: stage.action,
        };
        let idx = insert_sorted(&mut rollout.reports, stamp, report);
        self.dirty.insert(stage.rollout_id.clone());
        if !rollout.alerted {
            // The gate is judged at this report and again at each later one:
            // a late report changes what they add up to.
            for (later, _) in &rollout.reports[idx..] {
                self.timers.insert((later.0, stage.rollout_id.clone()));
            }
        }
    }

    /// Checks the rollouts whose reports the watermark has passed.
    pub fn advance(&mut self, watermark: Timestamp, config: &ProcessorConfig) {
        while let Some((at, _)) = self.timers.first() {
            if *at > watermark {
                break;
            }
            let Some((at, rollout_id)) = self.timers.pop_first() else { break };
            let Some(rollout) = self.rollouts.get_mut(&rollout_id) else { continue };
            let result = gate(&rollout.reports, at, config);
            if rollout.alerted || result.gate != "rollback" {
                continue;
            }
            rollout.alerted = true;
            let patch_id = rollout.reports.first().map_or("", |(_, r)| r.patch_id.as_str());
            let failure_rate = result.failed as f64 / result.stages.max(1) as f64;
            let title = format!("Rollout {rollout_id} of patch {patch_id} failed its canary analysis");
            let finding = alerts::finding(Rule::CanaryFailed, &rollout_id, "", at, title)
                .with_resource(&rollout_id, "rollout", Some(patch_id))
                .with_unmapped(serde_json::json!({
                "patch_id": patch_id, "stages": result.stages, "failed": result.failed, "failure_rate": failure_rate,
            }));
            self.alerts.push(alerts::row(Rule::CanaryFailed, &rollout_id, at, &finding));
        }
    }

    /// Gives back the spare capacity retention left (see [`Trim`]).
    pub fn trim(&mut self) {
        for rollout in self.rollouts.values_mut() {
            rollout.reports.trim();
        }
        self.rollouts.trim();
        self.dirty.trim();
        self.alerts.trim();
    }

    /// Retention: forgets the rollouts whose last report is before `cutoff`
    /// (their rows stay in the lake as they are). Reports that old are dead
    /// letters, so no event can revise one; a later report of the same id
    /// starts it again, with revisions above every forgotten one.
    pub fn forget(&mut self, cutoff: Timestamp) -> usize {
        let before = self.rollouts.len();
        let floor = &mut self.revision_floor;
        self.rollouts.retain(|_, rollout| {
            let keep = rollout.reports.last().is_none_or(|(stamp, _)| stamp.0 >= cutoff);
            if !keep {
                *floor = (*floor).max(rollout.revision);
            }
            keep
        });
        let rollouts = &self.rollouts;
        self.timers.retain(|(_, id)| rollouts.contains_key(id));
        before - self.rollouts.len()
    }

    /// Emits the changed rollups and the fired alerts.
    pub fn flush(&mut self, config: &ProcessorConfig, out: &mut EpochRows) {
        let mut dirty: Vec<String> = self.dirty.drain().collect();
        dirty.sort_unstable();
        for rollout_id in dirty {
            let Some(rollout) = self.rollouts.get_mut(&rollout_id) else { continue };
            let Some((latest, last_report)) = rollout.reports.last() else { continue };
            let result = gate(&rollout.reports, Timestamp(i64::MAX), config);
            let row = RolloutRow {
                rollout_id: rollout_id.clone(),
                patch_id: last_report.patch_id.clone(),
                stages: result.stages,
                failed: result.failed,
                inconclusive: result.inconclusive,
                failure_rate: if result.stages == 0 { 0.0 } else { result.failed as f64 / result.stages as f64 },
                gate: result.gate,
                last_event_at: latest.0,
                updated_at: latest.0,
                revision: 0,
            };
            if let Some(row) = next_revision(&mut rollout.committed, &mut rollout.revision, row) {
                out.canary_rollups.push(row);
            }
        }
        out.alerts.append(&mut self.alerts);
    }
}
