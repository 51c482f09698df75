//! The assets task: inventory, findings, deployments, posture and policy
//! decisions of the assets hashed to one partition, folded into the `assets`,
//! `exposures` and `patch_outcomes` rows and their alerts.
//!
//! Each key keeps the few events that define it, sorted by stamp (event time,
//! then arrival). A row is re-derived from them whenever one of its inputs
//! changes, so a late event gives exactly the row that processing in event-time
//! order would have given, and the row is emitted again with a higher revision.
//! Derivation is lazy: events mark keys dirty, and each dirty key is derived
//! once when the epoch is flushed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap, FxHashSet};
use schemas::ocsf::{self, Activity, FindingClass};
use schemas::severity::Severity;
use schemas::*;

use crate::alerts::{self, Rule};
use crate::catalog::{Catalog, CatalogChange, CveInfo, PatchInfo};
use crate::config::ProcessorConfig;
use crate::interner::{Interner, Sym};
use crate::rows::{AlertRow, AssetRow, EpochRows, ExposureRow, OutcomeRow, Reevaluation, next_revision};
use crate::{Stamp, Trim, insert_sorted};
use serde::{Deserialize, Serialize};

/// State of one assets task.
#[derive(Default, Serialize, Deserialize)]
pub struct AssetsState {
    names: Interner,
    assets: FxHashMap<Sym, AssetEntry>,
    exposures: FxHashMap<(Sym, Sym), ExposureEntry>,
    outcomes: FxHashMap<(Sym, Sym), OutcomeEntry>,
    /// CVE → assets with findings of it.
    by_cve: FxHashMap<Sym, Vec<Sym>>,
    /// Patch → assets with deployments of it.
    by_patch: FxHashMap<Sym, Vec<Sym>>,
    /// Pending checks, earliest first. A check may be queued twice; every
    /// check is idempotent, so a heap (cheaper than a set) will do.
    timers: BinaryHeap<Reverse<(Timestamp, Timer)>>,
    /// Deadline checks of exposures: many, and far in the future, so apart
    /// from the short-lived checks above, whose heap stays small.
    deadlines: BinaryHeap<Reverse<(Timestamp, Timer)>>,
    // Snapshots are taken right after a flush, when these are empty.
    #[serde(skip)]
    dirty_assets: FxHashSet<Sym>,
    #[serde(skip)]
    dirty_exposures: FxHashSet<(Sym, Sym)>,
    #[serde(skip)]
    dirty_outcomes: FxHashSet<(Sym, Sym)>,
    /// Exposures whose evidence changed since their deadline checks were
    /// last scheduled.
    unscheduled: Vec<(Sym, Sym)>,
    /// Exposures whose CVE's intel changed: judged as of the watermark (a
    /// catalog change is a fact of now, not of the past), then scheduled.
    #[serde(skip)]
    catalog_rechecks: Vec<(Sym, Sym)>,
    /// Outcomes whose release changed: their digests are compared again.
    #[serde(skip)]
    integrity_checks: Vec<(Sym, Sym)>,
    /// Verified-looking successes whose re-evaluation request is decided at
    /// the end of the epoch, once every event of the deployment there is in.
    #[serde(skip)]
    pending_reevaluations: Vec<PendingReevaluation>,
    /// Ids of the alerts fired, and what they belong to (retention forgets
    /// an id with its key, so a key never alerts twice while it is kept).
    fired: FxHashMap<String, FiredFor>,
    /// The highest revision of a forgotten exposure or outcome: one seen
    /// again after it was forgotten continues above it, so its new rows
    /// supersede the lake's.
    revision_floor: i64,
    /// Ids of the `allow` decisions kept for their checks, by timer key: the
    /// check runs at the decision's time and again when a late event may
    /// change its answer, within the late-alert horizon. Decision ids are
    /// many and short-lived, so they are not interned.
    decisions: FxHashMap<u64, Box<str>>,
    next_decision: u64,
    #[serde(skip)]
    alerts: Vec<AlertRow>,
    #[serde(skip)]
    reevaluations: Vec<Reevaluation>,
}

/// What a fired alert id belongs to, for retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum FiredFor {
    /// An exposure (asset, CVE) or an outcome (asset, patch): forgotten with it.
    Pair(Sym, Sym),
    /// A policy decision at this time: forgotten once it is before the
    /// retention cutoff (no event that old is applied, so none re-checks it).
    Decision(Timestamp),
    /// An asset (`UNMANAGED_ASSET`, once per asset): kept with the asset.
    Asset,
}

/// A `succeeded` deployment event waiting for its re-evaluation request.
struct PendingReevaluation {
    asset: Sym,
    patch: Sym,
    deployment: Sym,
    remediated_at: Timestamp,
}

/// Work due when the watermark passes a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Timer {
    /// An open exposure reaches its due date: rewrite its row, and alert if it
    /// was still open just after the deadline.
    Due { asset: Sym, cve: Sym },
    /// A posture assessment: alert if, as of its time, it is the first
    /// assessment after a remediation and shows a regression.
    Posture { asset: Sym, at: Timestamp },
    /// The re-evaluation window after a verified success closes.
    Reevaluation { asset: Sym, patch: Sym, deployment: Sym, succeeded_at: Timestamp },
    /// An `allow` decision to check against the posture and exposures of its
    /// time; its id waits in `decisions` under `key`.
    Decision { asset: Sym, key: u64, at: Timestamp },
    /// An event names an asset: was it inventoried and managed at that time?
    Inventoried { asset: Sym, at: Timestamp },
}

/// The inventory facts the rows and alerts use.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
struct Inventory {
    environment: Environment,
    criticality: Criticality,
    internet_exposed: bool,
    segment: String,
    managed: bool,
    hostname: Option<String>,
    os_family: Option<String>,
    os_version: Option<String>,
}

impl From<&AssetInventory> for Inventory {
    fn from(inventory: &AssetInventory) -> Self {
        Inventory {
            environment: inventory.environment,
            criticality: inventory.criticality,
            internet_exposed: inventory.internet_exposed,
            segment: inventory.segment.clone(),
            managed: inventory.managed,
            hostname: inventory.hostname.clone(),
            os_family: inventory.os_family.clone(),
            os_version: inventory.os_version.clone(),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct AssetEntry {
    inventories: Vec<(Stamp, Inventory)>,
    /// (stamp, trust score, compliant).
    postures: Vec<(Stamp, (f64, bool))>,
    cves: Vec<Sym>,
    patches: Vec<Sym>,
    /// (time, patch) of every `succeeded` deployment event, sorted, so a
    /// posture check finds the outcomes it may concern without visiting all.
    successes: Vec<(Timestamp, Sym)>,
    /// Policy decisions of the last late-alert horizon, sorted: their time,
    /// and for an `allow` its key in `decisions`.
    decisions: Vec<(Timestamp, Option<u64>)>,
    committed: Option<u64>,
    revision: i64,
}

impl AssetEntry {
    /// Retention of `inventories`: an inventory equal to the one before it
    /// is dropped, unless it is the last (its stamp is the asset row's update
    /// time). Every "inventory as of t" answer is unchanged, so this holds at
    /// any age; the list grows with the changes of the asset, not its reports.
    fn compact_inventories(&mut self) {
        let len = self.inventories.len();
        if len < 3 {
            return;
        }
        let items = std::mem::replace(&mut self.inventories, Vec::with_capacity(len));
        for (i, item) in items.into_iter().enumerate() {
            let repeat = self.inventories.last().is_some_and(|(_, previous)| *previous == item.1);
            if !repeat || i == len - 1 {
                self.inventories.push(item);
            }
        }
    }

    /// Retention of `postures`: of the assessments at or before `cutoff`,
    /// only those a question can still reach are kept: the last one (the
    /// posture as of any later time) and, for every success, the last one
    /// before it and the first one after it (an outcome's posture before
    /// and after, its re-evaluation, its regression check). `cutoff` is at
    /// most the task's watermark minus the late-alert horizon, so no pending
    /// check and no event within the horizon asks about an earlier time;
    /// the list holds the horizon's assessments plus two per success.
    fn compact_postures(&mut self, cutoff: Timestamp) {
        let split = self.postures.partition_point(|(stamp, _)| stamp.0 <= cutoff);
        if split < 2 {
            return;
        }
        let mut keep = vec![false; split];
        keep[split - 1] = true;
        for &(time, _) in &self.successes {
            let after = self.postures.partition_point(|(stamp, _)| stamp.0 <= time);
            if after > 0 && after - 1 < split {
                keep[after - 1] = true;
            }
            if after < split {
                keep[after] = true;
            }
        }
        let mut idx = 0;
        self.postures.retain(|_| {
            let kept = idx >= split || keep[idx];
            idx += 1;
            kept
        });
    }
}

#[derive(Default, Serialize, Deserialize)]
struct ExposureEntry {
    findings: Vec<(Stamp, FindingStatus)>,
    /// The highest CVSS and severity the scanners reported in its findings
    /// (whatever their order): its severity where the catalog has no CVSS.
    scanner_cvss: Option<f64>,
    scanner_severity: Option<Severity>,
    /// The breach checks queued for it, so a change that keeps them queues nothing.
    checks: Vec<Timestamp>,
    committed: Option<u64>,
    revision: i64,
}

impl ExposureEntry {
    /// Retention of `findings`: of those at or before `cutoff`, only the
    /// first and the last of each run of equal statuses are kept, a run
    /// being broken by any deployment success or rollback of the asset
    /// (`evidence`, sorted), the other evidence the exposure's timeline
    /// folds in. The middle of such a run changes nothing in the fold but
    /// `last_at`, which the run's last finding sets again; `cutoff` is at
    /// most the task's watermark minus the late-alert horizon, so no check
    /// asks about a time inside a dropped run. An open exposure scanned
    /// daily keeps the horizon's scans and two per run, not one per scan.
    fn compact_findings(&mut self, cutoff: Timestamp, evidence: &[Timestamp]) {
        let split = self.findings.partition_point(|(stamp, _)| stamp.0 <= cutoff);
        if split < 3 {
            return;
        }
        let run_breaks = |from: Timestamp, to: Timestamp| {
            let at = evidence.partition_point(|t| *t < from);
            evidence.get(at).is_some_and(|t| *t <= to)
        };
        // A finding in the middle of a run: equal to both neighbours, no
        // other evidence between them.
        let middle: Vec<bool> = self.findings[..split]
            .windows(3)
            .map(|w| {
                let [(before, previous), (at, this), (after, next)] = [w[0], w[1], w[2]];
                previous == this && this == next && !run_breaks(before.0, at.0) && !run_breaks(at.0, after.0)
            })
            .collect();
        let mut idx = 0;
        self.findings.retain(|_| {
            let dropped = idx >= 1 && idx < split - 1 && middle[idx - 1];
            idx += 1;
            !dropped
        });
    }
}

#[derive(Serialize, Deserialize)]
struct DeploymentEvent {
    deployment: Sym,
    phase: DeploymentPhase,
    signature_verified: Option<bool>,
    artifact_sha256: Option<Box<str>>,
}

#[derive(Default, Serialize, Deserialize)]
struct OutcomeEntry {
    events: Vec<(Stamp, DeploymentEvent)>,
    /// Remediation time of the last derived row, to find the rows a posture
    /// assessment may change without deriving them all.
    remediated_at: Option<Timestamp>,
    committed: Option<u64>,
    revision: i64,
}

/// The exposure state machine's result at some point in event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Open,
    Remediated,
    Suppressed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Remediated => "remediated",
            Status::Suppressed => "suppressed",
        }
    }
}

#[derive(Debug, PartialEq)]
struct ExposureFacts {
    status: Status,
    detected_at: Timestamp,
    remediated_at: Option<Timestamp>,
    remediated_by: Option<Sym>,
    last_at: Timestamp,
    /// The intervals it was open: from, and until (`None`: still open).
    open: Vec<(Timestamp, Option<Timestamp>)>,
}

impl ExposureFacts {
    fn set_status(&mut self, status: Status, at: Timestamp) {
        match (self.status == Status::Open, status == Status::Open) {
            (true, false) => {
                if let Some(last) = self.open.last_mut() {
                    last.1 = Some(at);
                }
            }
            (false, true) => self.open.push((at, None)),
            _ => {}
        }
        self.status = status;
    }

    /// The instants at which it turns breached while open: in each open
    /// interval, the later of its start and just past `due_at`.
    fn breach_instants(&self, due_at: Timestamp) -> impl Iterator<Item = Timestamp> + '_ {
        let past_due = due_at.add_micros(1);
        self.open.iter().filter_map(move |&(from, until)| {
            let at = from.max(past_due);
            until.is_none_or(|until| at < until).then_some(at)
        })
    }

    /// Whether it is breached as of `now`: open past its due date, or
    /// remediated after it.
    fn breached(&self, due_at: Timestamp, now: Timestamp) -> bool {
        match self.status {
            Status::Suppressed => false,
            Status::Open => now > due_at,
            Status::Remediated => self.remediated_at.is_some_and(|at| at > due_at),
        }
    }
}

impl AssetsState {
    /// Serialized bytes of each part of the state, for the state benchmark.
    pub fn census(&self) -> Vec<(&'static str, usize)> {
        fn size<T: Serialize + ?Sized>(value: &T) -> usize {
            postcard::to_allocvec(value).map(|v| v.len()).unwrap_or(0)
        }
        let mut parts = vec![("names", size(&self.names))];
        let sum = |f: &dyn Fn(&AssetEntry) -> usize| self.assets.values().map(f).sum::<usize>();
        parts.push(("asset.inventories", sum(&|a| size(&a.inventories))));
        parts.push(("asset.postures", sum(&|a| size(&a.postures))));
        parts.push(("asset.successes", sum(&|a| size(&a.successes))));
        parts.push(("asset.decisions", sum(&|a| size(&a.decisions))));
        parts.push(("asset.cves+patches", sum(&|a| size(&a.cves) + size(&a.patches))));
        parts.push(("exposures", size(&self.exposures)));
        parts.push(("exposure.findings", self.exposures.values().map(|e| size(&e.findings)).sum()));
        parts.push(("outcomes", size(&self.outcomes)));
        parts.push(("by_cve+by_patch", size(&self.by_cve) + size(&self.by_patch)));
        parts.push(("timers", size(&self.timers)));
        parts.push(("deadlines", size(&self.deadlines)));
        parts.push(("fired", size(&self.fired)));
        parts.push(("decisions", size(&self.decisions)));
        parts.push(("unscheduled", size(&self.unscheduled)));
        parts
    }

    /// Gives back the spare capacity retention left (see [`Trim`]).
    pub fn trim(&mut self) {
        self.names.trim();
        for entry in self.assets.values_mut() {
            entry.inventories.trim();
            entry.postures.trim();
            entry.cves.trim();
            entry.patches.trim();
            entry.successes.trim();
            entry.decisions.trim();
        }
        for entry in self.exposures.values_mut() {
            entry.findings.trim();
            entry.checks.trim();
        }
        for entry in self.outcomes.values_mut() {
            entry.events.trim();
        }
        for assets in self.by_cve.values_mut().chain(self.by_patch.values_mut()) {
            assets.trim();
        }
        self.assets.trim();
        self.exposures.trim();
        self.outcomes.trim();
        self.by_cve.trim();
        self.by_patch.trim();
        self.timers.trim();
        self.deadlines.trim();
        self.dirty_assets.trim();
        self.dirty_exposures.trim();
        self.dirty_outcomes.trim();
        self.unscheduled.trim();
        self.catalog_rechecks.trim();
        self.integrity_checks.trim();
        self.pending_reevaluations.trim();
        self.fired.trim();
        self.decisions.trim();
        self.alerts.trim();
        self.reevaluations.trim();
    }

    /// Takes one event of the assets topic.
    /// `watermark` is the task's before this event: what retention may forget.
    pub fn apply(
        &mut self,
        stamp: Stamp,
        event: &CloudEvent,
        watermark: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        match &event.data {
            EventData::AssetInventory(inventory) => {
                let asset = self.names.intern(&inventory.asset_id);
                let entry = self.assets.entry(asset).or_default();
                insert_sorted(&mut entry.inventories, stamp, Inventory::from(inventory));
                entry.compact_inventories();
                self.dirty_assets.insert(asset);
                // A late inventory may say that assets named since were unmanaged.
                if !inventory.managed {
                    self.recheck_inventoried(asset, stamp.0);
                }
            }
            EventData::VulnFinding(finding) => {
                let asset = self.names.intern(&finding.asset_id);
                let cve = self.names.intern(&finding.cve_id);
                let floor = self.revision_floor;
                let entry = self
                    .exposures
                    .entry((asset, cve))
                    .or_insert_with(|| ExposureEntry { revision: floor, ..ExposureEntry::default() });
                if entry.findings.is_empty() {
                    self.assets.entry(asset).or_default().cves.push(cve);
                    self.by_cve.entry(cve).or_default().push(asset);
                }
                insert_sorted(&mut entry.findings, stamp, finding.status);
                let len = entry.findings.len();
                if len >= 16 && len.is_power_of_two() {
                    // Amortized: a compaction when the list has doubled.
                    let newest = entry.findings.last().map_or(stamp.0, |(last, _)| last.0);
                    let cutoff = newest.min(watermark).add_micros(-config.late_alert_horizon_us);
                    let patches = self.assets.get(&asset).map_or(&[][..], |a| a.patches.as_slice());
                    let mut evidence: Vec<Timestamp> = patches
                        .iter()
                        .filter_map(|&patch| self.outcomes.get(&(asset, patch)))
                        .flat_map(|outcome| &outcome.events)
                        .filter(|(_, e)| matches!(e.phase, DeploymentPhase::Succeeded | DeploymentPhase::RolledBack))
                        .map(|(stamp, _)| stamp.0)
                        .collect();
                    evidence.sort_unstable();
                    if let Some(entry) = self.exposures.get_mut(&(asset, cve)) {
                        entry.compact_findings(cutoff, &evidence);
                    }
                }
                let entry = self.exposures.entry((asset, cve)).or_default();
                if let Some(cvss) = finding.scanner_cvss {
                    entry.scanner_cvss = Some(entry.scanner_cvss.map_or(cvss, |known| known.max(cvss)));
                }
                entry.scanner_severity = entry.scanner_severity.max(finding.scanner_severity);
                self.dirty_exposures.insert((asset, cve));
                self.unscheduled.push((asset, cve));
                if catalog.cve(&finding.cve_id).is_some_and(CveInfo::kev) {
                    self.recheck_decisions(asset, stamp.0);
                }
            }
            EventData::PatchDeployment(deployment) => self.deployment(stamp, event, deployment, catalog, config),
            EventData::PostureAssessment(posture) => {
                let asset = self.names.intern(&posture.asset_id);
                self.timers.push(Reverse((stamp.0, Timer::Inventoried { asset, at: stamp.0 })));
                self.timers.push(Reverse((stamp.0, Timer::Posture { asset, at: stamp.0 })));
                let entry = self.assets.entry(asset).or_default();
                let idx = insert_sorted(&mut entry.postures, stamp, (posture.trust_score, posture.compliant));
                let before = idx.checked_sub(1).map_or(Timestamp(i64::MIN), |i| entry.postures[i].0.0);
                let after = entry.postures.get(idx + 1).map_or(Timestamp(i64::MAX), |p| p.0.0);
                // The assessment is "before" or "after" exactly for the outcomes
                // remediated between its neighbours.
                for &patch in &entry.patches {
                    let remediated = self.outcomes.get(&(asset, patch)).and_then(|o| o.remediated_at);
                    if remediated.is_some_and(|at| before <= at && at < after) {
                        self.dirty_outcomes.insert((asset, patch));
                    }
                }
                // A late assessment may be the latest posture of decisions made since.
                self.recheck_decisions(asset, stamp.0);
                if let Some(entry) = self.assets.get_mut(&asset) {
                    let newest = entry.postures.last().map_or(stamp.0, |(last, _)| last.0);
                    let cutoff = newest.min(watermark).add_micros(-config.late_alert_horizon_us);
                    entry.compact_postures(cutoff);
                }
            }
            EventData::PolicyDecision(decision) => {
                let asset = self.names.intern(&decision.asset_id);
                self.timers.push(Reverse((stamp.0, Timer::Inventoried { asset, at: stamp.0 })));
                let key = (decision.decision == Decision::Allow).then(|| {
                    let key = self.next_decision;
                    self.next_decision += 1;
                    self.decisions.insert(key, decision.decision_id.as_str().into());
                    self.timers.push(Reverse((stamp.0, Timer::Decision { asset, key, at: stamp.0 })));
                    key
                });
                let entry = self.assets.entry(asset).or_default();
                let idx = entry.decisions.partition_point(|(time, _)| *time <= stamp.0);
                entry.decisions.insert(idx, (stamp.0, key));
                // Decisions older than the horizon can no longer be re-checked.
                let horizon =
                    entry.decisions.last().map_or(stamp.0, |(time, _)| *time).add_micros(-config.late_alert_horizon_us);
                let old = entry.decisions.partition_point(|(time, _)| *time < horizon);
                for (_, key) in entry.decisions.drain(..old) {
                    if let Some(key) = key {
                        self.decisions.remove(&key);
                    }
                }
            }
            _ => {}
        }
    }

    /// Queues the `allow` decisions of `asset` at or after `from` for their
    /// check again: a late event before them may change their answer.
    fn recheck_decisions(&mut self, asset: Sym, from: Timestamp) {
        let Some(entry) = self.assets.get(&asset) else { return };
        let first = entry.decisions.partition_point(|(time, _)| *time < from);
        for &(at, key) in &entry.decisions[first..] {
            if let Some(key) = key {
                self.timers.push(Reverse((at, Timer::Decision { asset, key, at })));
            }
        }
    }

    /// Queues the checks "was the asset inventoried and managed" of the
    /// events naming `asset` at or after `from`, once per asset at most.
    fn recheck_inventoried(&mut self, asset: Sym, from: Timestamp) {
        let asset_id = self.names.name(asset);
        if self.fired.contains_key(&ocsf::alert_id(Rule::UnmanagedAsset.name(), asset_id, "")) {
            return;
        }
        let Some(entry) = self.assets.get(&asset) else { return };
        let mut times: Vec<Timestamp> = entry.postures.iter().map(|(stamp, _)| stamp.0).collect();
        times.extend(entry.decisions.iter().map(|(time, _)| *time));
        for patch in &entry.patches {
            if let Some(outcome) = self.outcomes.get(&(asset, *patch)) {
                times.extend(outcome.events.iter().map(|(stamp, _)| stamp.0));
            }
        }
        times.retain(|time| *time >= from);
        // The earliest suffices: the alert fires once per asset, at the first event it concerns.
        if let Some(at) = times.into_iter().min() {
            self.timers.push(Reverse((at, Timer::Inventoried { asset, at })));
        }
    }

    fn deployment(
        &mut self,
        stamp: Stamp,
        event: &CloudEvent,
        deployment: &PatchDeployment,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let asset = self.names.intern(&deployment.asset_id);
        let patch = self.names.intern(&deployment.patch_id);
        let id = self.names.intern(&deployment.deployment_id);
        self.timers.push(Reverse((stamp.0, Timer::Inventoried { asset, at: stamp.0 })));
        let floor = self.revision_floor;
        let entry = self
            .outcomes
            .entry((asset, patch))
            .or_insert_with(|| OutcomeEntry { revision: floor, ..OutcomeEntry::default() });
        if entry.events.is_empty() {
            self.assets.entry(asset).or_default().patches.push(patch);
            self.by_patch.entry(patch).or_default().push(asset);
        }
        let record = DeploymentEvent {
            deployment: id,
            phase: deployment.phase,
            signature_verified: deployment.signature_verified,
            artifact_sha256: deployment.artifact_sha256.as_deref().map(Box::from),
        };
        insert_sorted(&mut entry.events, stamp, record);
        self.dirty_outcomes.insert((asset, patch));
        if deployment.phase == DeploymentPhase::Succeeded {
            let successes = &mut self.assets.entry(asset).or_default().successes;
            let idx = successes.partition_point(|s| *s <= (stamp.0, patch));
            successes.insert(idx, (stamp.0, patch));
            let window_end = stamp.0.add_micros(config.posture_reeval_window_us);
            let timer = Timer::Reevaluation { asset, patch, deployment: id, succeeded_at: stamp.0 };
            self.timers.push(Reverse((window_end, timer)));
            self.pending_reevaluations.push(PendingReevaluation {
                asset,
                patch,
                deployment: id,
                remediated_at: event.time,
            });
        }
        self.mark_exposures_of_patch(asset, &deployment.patch_id, catalog);
        self.check_integrity(asset, patch, catalog);
        self.recheck_regressions(asset, patch);
        // A late success or rollback may change whether a KEV exposure was
        // open at a decision since.
        let fixes_kev = catalog
            .patch(&deployment.patch_id)
            .is_some_and(|release| release.fixes_cves.iter().any(|cve| catalog.cve(cve).is_some_and(CveInfo::kev)));
        if fixes_kev {
            self.recheck_decisions(asset, stamp.0);
        }
    }

    /// Fires `PATCH_INTEGRITY` for each deployment of an outcome whose
    /// events report an unverified signature, or a digest other than the
    /// release's, as soon as both are known: at its first such event.
    fn check_integrity(&mut self, asset: Sym, patch: Sym, catalog: &Catalog) {
        let Some(entry) = self.outcomes.get(&(asset, patch)) else { return };
        let (asset_id, patch_id) = (self.names.name(asset), self.names.name(patch));
        let released = catalog.patch(patch_id).and_then(|r| r.artifact_sha256.as_deref());
        let mut findings = Vec::new();
        let mut seen: Vec<Sym> = Vec::new();
        for (stamp, event) in &entry.events {
            let digest_differs = matches!((event.artifact_sha256.as_deref(), released), (Some(r), Some(d)) if r != d);
            if !(event.signature_verified == Some(false) || digest_differs) || seen.contains(&event.deployment) {
                continue;
            }
            seen.push(event.deployment);
            let deployment_id = self.names.name(event.deployment);
            let why =
                if digest_differs { "artifact digest differs from the release" } else { "signature not verified" };
            let title = format!("Patch {patch_id} on {asset_id} failed integrity checks: {why}");
            let finding = alerts::finding(Rule::PatchIntegrity, deployment_id, "", stamp.0, title)
                .with_device(self.device(asset_id, stamp.0))
                .with_unmapped(serde_json::json!({
                    "patch_id": patch_id,
                    "reported_sha256": event.artifact_sha256,
                    "released_sha256": released,
                    "signature_verified": event.signature_verified,
                }));
            findings.push((deployment_id.to_owned(), stamp.0, finding));
        }
        for (deployment_id, at, finding) in findings {
            self.fire(Rule::PatchIntegrity, &deployment_id, at, finding, FiredFor::Pair(asset, patch));
        }
    }

    /// Queues a regression check at the first assessment after each success
    /// of an outcome: a late success (or rollback) changes which assessment
    /// follows the remediation.
    fn recheck_regressions(&mut self, asset: Sym, patch: Sym) {
        let (Some(outcome), Some(entry)) = (self.outcomes.get(&(asset, patch)), self.assets.get(&asset)) else {
            return;
        };
        for (stamp, event) in &outcome.events {
            if event.phase != DeploymentPhase::Succeeded {
                continue;
            }
            let after = entry.postures.partition_point(|(p, _)| p.0 <= stamp.0);
            if let Some((p, _)) = entry.postures.get(after) {
                self.timers.push(Reverse((p.0, Timer::Posture { asset, at: p.0 })));
            }
        }
    }

    /// Whether deployment `id` of an outcome is unverified (any of its
    /// events, as known now).
    fn unverified(&self, asset: Sym, patch: Sym, id: Sym, catalog: &Catalog) -> bool {
        let Some(entry) = self.outcomes.get(&(asset, patch)) else { return false };
        unverified_deployments(&entry.events, catalog.patch(self.names.name(patch))).contains(&id)
    }

    fn mark_exposures_of_patch(&mut self, asset: Sym, patch_id: &str, catalog: &Catalog) {
        let Some(info) = catalog.patch(patch_id) else { return };
        for cve_id in &info.fixes_cves {
            if let Some(cve) = self.names.get(cve_id)
                && self.exposures.contains_key(&(asset, cve))
            {
                self.dirty_exposures.insert((asset, cve));
                self.unscheduled.push((asset, cve));
            }
        }
    }

    /// Marks the rows that a change of the intel catalog may change, and
    /// queues the checks it may answer differently.
    pub fn catalog_changed(&mut self, change: &CatalogChange) {
        match change {
            CatalogChange::Cve(cve_id) => {
                if let Some(cve) = self.names.get(cve_id) {
                    for &asset in self.by_cve.get(&cve).map_or(&[][..], Vec::as_slice) {
                        self.dirty_exposures.insert((asset, cve));
                        self.catalog_rechecks.push((asset, cve));
                    }
                }
            }
            CatalogChange::Patch { patch_id, cves } => {
                if let Some(patch) = self.names.get(patch_id) {
                    for &asset in self.by_patch.get(&patch).map_or(&[][..], Vec::as_slice) {
                        self.dirty_outcomes.insert((asset, patch));
                        self.integrity_checks.push((asset, patch));
                    }
                }
                for cve_id in cves {
                    if let Some(cve) = self.names.get(cve_id) {
                        for &asset in self.by_cve.get(&cve).map_or(&[][..], Vec::as_slice) {
                            self.dirty_exposures.insert((asset, cve));
                            self.catalog_rechecks.push((asset, cve));
                        }
                    }
                }
            }
        }
    }

    /// Queues the breach checks of an exposure at the instants its evidence
    /// makes it breached while open, from `from` on (the past too: a late
    /// event raises its alert when it is processed, dated by the breach).
    fn schedule_breach_checks(
        &mut self,
        asset: Sym,
        cve: Sym,
        from: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let Some(facts) = self.exposure_facts(asset, cve, catalog, None) else { return };
        let Some(due_at) = self.due_at(asset, cve, facts.detected_at, catalog, config) else { return };
        let Some(entry) = self.exposures.get_mut(&(asset, cve)) else { return };
        for at in facts.breach_instants(due_at).filter(|at| *at >= from) {
            if !entry.checks.contains(&at) {
                entry.checks.push(at);
                self.deadlines.push(Reverse((at, Timer::Due { asset, cve })));
            }
        }
    }

    /// After a change of its CVE's intel: fires `SLA_BREACH` if the exposure
    /// is breached as of the watermark (dated at the instant it first was,
    /// with the new deadline), and queues the checks still ahead. A new
    /// deadline never reaches back into states the exposure has left: one
    /// suppressed since is not breached, whatever the new date says.
    fn recheck_catalog(
        &mut self,
        asset: Sym,
        cve: Sym,
        watermark: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        if let Some(facts) = self.exposure_facts(asset, cve, catalog, Some(watermark))
            && let Some(due_at) = self.due_at(asset, cve, facts.detected_at, catalog, config)
            && facts.breached(due_at, watermark)
            && let Some(at) = facts.breach_instants(due_at).next()
        {
            self.fire_breach(asset, cve, at, due_at, facts.status, catalog, config);
        }
        self.schedule_breach_checks(asset, cve, watermark.add_micros(1), catalog, config);
    }

    /// The queued work that needs the catalog or the watermark, in the order
    /// events queued it: deadline checks, catalog re-checks, digests.
    fn drain_queues(&mut self, watermark: Timestamp, catalog: &Catalog, config: &ProcessorConfig) {
        for (asset, cve) in std::mem::take(&mut self.unscheduled) {
            self.schedule_breach_checks(asset, cve, Timestamp(i64::MIN), catalog, config);
        }
        let mut rechecks = std::mem::take(&mut self.catalog_rechecks);
        rechecks.sort_unstable();
        rechecks.dedup();
        for (asset, cve) in rechecks {
            self.recheck_catalog(asset, cve, watermark, catalog, config);
        }
        let mut checks = std::mem::take(&mut self.integrity_checks);
        checks.sort_unstable();
        checks.dedup();
        for (asset, patch) in checks {
            self.check_integrity(asset, patch, catalog);
        }
    }

    /// Runs the timers the watermark has passed.
    pub fn advance(&mut self, watermark: Timestamp, catalog: &Catalog, config: &ProcessorConfig) {
        // Queued work first, before any timer runs: a check then never
        // depends on where epochs were cut, only on the events that arrived.
        self.drain_queues(watermark, catalog, config);
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let next_deadline = self.deadlines.peek().map(|Reverse((at, _))| *at);
            let heap = match (next_timer, next_deadline) {
                (Some(a), Some(b)) if b < a => &mut self.deadlines,
                (Some(_), _) => &mut self.timers,
                (None, Some(_)) => &mut self.deadlines,
                (None, None) => break,
            };
            let Some(&Reverse((at, timer))) = heap.peek() else { break };
            if at > watermark {
                break;
            }
            heap.pop();
            match timer {
                Timer::Due { asset, cve } => {
                    // A forgotten exposure has no row to rewrite.
                    let Some(entry) = self.exposures.get_mut(&(asset, cve)) else { continue };
                    entry.checks.retain(|check| *check != at);
                    self.dirty_exposures.insert((asset, cve));
                    self.check_breach(asset, cve, at, catalog, config);
                }
                Timer::Posture { asset, at } => self.check_regression(asset, at, catalog, config),
                Timer::Reevaluation { asset, patch, deployment, succeeded_at } => {
                    self.check_reevaluation(asset, patch, deployment, succeeded_at, at, catalog, config)
                }
                Timer::Decision { asset, key, at } => {
                    if let Some(decision_id) = self.decisions.get(&key).cloned() {
                        self.check_decision(asset, &decision_id, at, catalog, config);
                    }
                }
                Timer::Inventoried { asset, at } => self.check_inventoried(asset, at),
            }
        }
    }

    /// The OCSF device of an alert about `asset_id` at `at`: its id, and what
    /// its latest inventory at that time says (hostname, OS, managed).
    fn device(&self, asset_id: &str, at: Timestamp) -> ocsf::Device {
        let inventory = self
            .names
            .get(asset_id)
            .and_then(|asset| self.assets.get(&asset))
            .and_then(|entry| entry.inventories.iter().rev().find(|(stamp, _)| stamp.0 <= at))
            .map(|(_, inventory)| inventory);
        ocsf::Device::new(
            asset_id,
            inventory.and_then(|i| i.hostname.as_deref()),
            inventory.and_then(|i| i.os_family.as_deref()),
            inventory.and_then(|i| i.os_version.as_deref()),
            inventory.map(|i| i.managed),
        )
    }

    /// The severity of an exposure and where it comes from: the catalog's
    /// CVSS, else the highest CVSS its scanners reported, else their highest
    /// severity (DOMAIN.md "One CVE, several feeds"); none if nobody knows.
    fn severity_of(&self, asset: Sym, cve: Sym, catalog: &Catalog) -> Option<(Severity, &'static str)> {
        if let Some(severity) = catalog.cve(self.names.name(cve)).and_then(CveInfo::severity) {
            return Some((severity, "catalog"));
        }
        let entry = self.exposures.get(&(asset, cve))?;
        entry.scanner_cvss.map(Severity::from_cvss).or(entry.scanner_severity).map(|severity| (severity, "scanner"))
    }

    /// The deadline of an exposure detected at `detected_at`: the day after
    /// its CVE's KEV due date, else its severity's SLA; none when neither is known.
    fn due_at(
        &self,
        asset: Sym,
        cve: Sym,
        detected_at: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) -> Option<Timestamp> {
        if let Some(date) = catalog.cve(self.names.name(cve)).and_then(CveInfo::kev_due) {
            return Some(date.succ().start());
        }
        let (severity, _) = self.severity_of(asset, cve, catalog)?;
        Some(detected_at.add_micros(config.sla_us(severity)))
    }

    /// Fires `SLA_BREACH` if, as of `at`, the exposure is open past its deadline.
    fn check_breach(&mut self, asset: Sym, cve: Sym, at: Timestamp, catalog: &Catalog, config: &ProcessorConfig) {
        let Some(facts) = self.exposure_facts(asset, cve, catalog, Some(at)) else { return };
        let Some(due_at) = self.due_at(asset, cve, facts.detected_at, catalog, config) else { return };
        if facts.status != Status::Open || at <= due_at {
            return;
        }
        self.fire_breach(asset, cve, at, due_at, facts.status, catalog, config);
    }

    /// Fires `SLA_BREACH` for an exposure breached at `at`, described as of then.
    #[allow(clippy::too_many_arguments)]
    fn fire_breach(
        &mut self,
        asset: Sym,
        cve: Sym,
        at: Timestamp,
        due_at: Timestamp,
        status: Status,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let Some(mut row) = self.exposure_row(asset, cve, catalog, config, at) else { return };
        row.status = status.as_str();
        row.due_at = Some(due_at);
        let entity = format!("{}/{}", row.asset_id, row.cve_id);
        let finding = self.breach_finding(&row, &entity, at, catalog);
        self.fire(Rule::SlaBreach, &entity, at, finding, FiredFor::Pair(asset, cve));
    }

    /// Fires `POSTURE_REGRESSION` for the outcomes whose first assessment
    /// after remediation, as of `at`, is the one at `at` and shows a regression.
    fn check_regression(&mut self, asset: Sym, at: Timestamp, catalog: &Catalog, config: &ProcessorConfig) {
        let Some(entry) = self.assets.get(&asset) else { return };
        let previous = entry.postures.iter().rev().map(|(stamp, _)| stamp.0).find(|&time| time < at);
        let since = previous.unwrap_or(Timestamp(i64::MIN));
        let mut regressed = Vec::new();
        // Only a success in [previous assessment, this one) can have this one as "after".
        let first = entry.successes.partition_point(|&(time, _)| time < since);
        let mut candidates: Vec<Sym> =
            entry.successes[first..].iter().take_while(|&&(time, _)| time < at).map(|&(_, patch)| patch).collect();
        candidates.sort_unstable();
        candidates.dedup();
        for patch in candidates {
            if let Some((row, Some(after_at))) = self.outcome_row(asset, patch, catalog, config, Some(at))
                && after_at == at
                && row.posture_regressed == Some(true)
            {
                regressed.push((patch, row));
            }
        }
        for (patch, row) in regressed {
            let entity = format!("{}/{}", row.asset_id, row.patch_id);
            let title = format!("Posture of {} regressed after patch {}", row.asset_id, row.patch_id);
            let finding = alerts::finding(Rule::PostureRegression, &entity, "", at, title)
                .with_device(self.device(&row.asset_id, at))
                .with_unmapped(
                    serde_json::json!({"posture_before": row.posture_before, "posture_after": row.posture_after}),
                );
            self.fire(Rule::PostureRegression, &entity, at, finding, FiredFor::Pair(asset, patch));
        }
    }

    /// Fires `POSTURE_REEVAL_OVERDUE` if no assessment followed a verified
    /// success within the window (an unverified deployment asks for none).
    #[allow(clippy::too_many_arguments)]
    fn check_reevaluation(
        &mut self,
        asset: Sym,
        patch: Sym,
        deployment: Sym,
        succeeded_at: Timestamp,
        window_end: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        if self.unverified(asset, patch, deployment, catalog) {
            return;
        }
        let postures = self.assets.get(&asset).map_or(&[][..], |a| a.postures.as_slice());
        let after = postures.partition_point(|(stamp, _)| stamp.0 <= succeeded_at);
        if postures.get(after).is_some_and(|(stamp, _)| stamp.0 <= window_end) {
            return;
        }
        let deployment_id = self.names.name(deployment).to_owned();
        let asset_id = self.names.name(asset).to_owned();
        let hours = config.posture_reeval_window_us as f64 / 3.6e9;
        let title =
            format!("No posture re-evaluation of {asset_id} within {hours} h of patch deployment {deployment_id}");
        let finding = alerts::finding(Rule::PostureReevalOverdue, &deployment_id, "", window_end, title)
            .with_device(self.device(&asset_id, window_end))
            .with_unmapped(serde_json::json!({ "succeeded_at": succeeded_at.to_string() }));
        self.fire(Rule::PostureReevalOverdue, &deployment_id, window_end, finding, FiredFor::Pair(asset, patch));
    }

    /// Fires `ZT_ALLOW_NONCOMPLIANT` if, as of `at`, the asset's latest
    /// posture is non-compliant or it has a KEV exposure open past its due
    /// date (the KEV date's, or the SLA's when KEV gives none).
    fn check_decision(
        &mut self,
        asset: Sym,
        decision_id: &str,
        at: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) {
        let Some(entry) = self.assets.get(&asset) else { return };
        let posture = entry.postures.iter().rev().find(|(stamp, ..)| stamp.0 <= at);
        let noncompliant = posture.is_some_and(|&(_, (_, compliant))| !compliant);
        let mut overdue_kev: Vec<&str> = entry
            .cves
            .iter()
            .filter(|&&cve| {
                if !catalog.cve(self.names.name(cve)).is_some_and(CveInfo::kev) {
                    return false;
                }
                let Some(facts) = self.exposure_facts(asset, cve, catalog, Some(at)) else { return false };
                let due_at = self.due_at(asset, cve, facts.detected_at, catalog, config);
                facts.status == Status::Open && due_at.is_some_and(|due_at| at > due_at)
            })
            .map(|&cve| self.names.name(cve))
            .collect();
        if !noncompliant && overdue_kev.is_empty() {
            return;
        }
        // Sorted, so the text does not depend on the order the findings arrived in.
        overdue_kev.sort_unstable();
        let asset_id = self.names.name(asset).to_owned();
        let reason = if noncompliant {
            "its latest posture was non-compliant".to_owned()
        } else {
            format!("it had KEV {} open past its due date", overdue_kev.join(", "))
        };
        let title = format!("Access allowed to {asset_id} although {reason}");
        let finding = alerts::finding(Rule::ZtAllowNoncompliant, decision_id, "", at, title)
            .with_device(self.device(&asset_id, at))
            .with_unmapped(serde_json::json!({
                "decision_id": decision_id,
                "trust_score": posture.map(|p| p.1.0),
                "overdue_kev": overdue_kev,
            }));
        self.fire(Rule::ZtAllowNoncompliant, decision_id, at, finding, FiredFor::Decision(at));
    }

    fn check_inventoried(&mut self, asset: Sym, at: Timestamp) {
        let entry = self.assets.get(&asset);
        let inventory = entry.and_then(|a| a.inventories.iter().rev().find(|(stamp, _)| stamp.0 <= at));
        let reason = match inventory {
            None => "has no inventory record",
            Some((_, inventory)) if !inventory.managed => "is marked unmanaged in the inventory",
            Some(_) => return,
        };
        let asset_id = self.names.name(asset).to_owned();
        let title = format!("Asset {asset_id} {reason} but takes part in patching or access decisions");
        let finding =
            alerts::finding(Rule::UnmanagedAsset, &asset_id, "", at, title).with_device(self.device(&asset_id, at));
        self.fire(Rule::UnmanagedAsset, &asset_id, at, finding, FiredFor::Asset);
    }

    fn fire(&mut self, rule: Rule, entity_id: &str, at: Timestamp, finding: ocsf::Finding, owner: FiredFor) {
        let row = alerts::row(rule, entity_id, at, &finding);
        if let std::collections::hash_map::Entry::Vacant(slot) = self.fired.entry(row.alert_id.clone()) {
            slot.insert(owner);
            self.alerts.push(row);
        }
    }

    /// Folds one exposure's evidence in stamp order, up to `as_of` if given.
    /// `None` when no `open` finding has been seen (no row exists).
    fn exposure_facts(
        &self,
        asset: Sym,
        cve: Sym,
        catalog: &Catalog,
        as_of: Option<Timestamp>,
    ) -> Option<ExposureFacts> {
        enum Evidence {
            Finding(FindingStatus),
            Success(Sym),
            Rollback(Sym),
        }
        let entry = self.exposures.get(&(asset, cve))?;
        let mut timeline: Vec<(Stamp, Evidence)> =
            entry.findings.iter().map(|&(stamp, status)| (stamp, Evidence::Finding(status))).collect();
        for patch_id in catalog.fixed_by(self.names.name(cve)) {
            let Some(patch) = self.names.get(patch_id) else { continue };
            let Some(outcome) = self.outcomes.get(&(asset, patch)) else { continue };
            let unverified = unverified_deployments(&outcome.events, catalog.patch(patch_id));
            for (stamp, event) in &outcome.events {
                match event.phase {
                    DeploymentPhase::Succeeded if !unverified.contains(&event.deployment) => {
                        timeline.push((*stamp, Evidence::Success(patch)))
                    }
                    DeploymentPhase::RolledBack => timeline.push((*stamp, Evidence::Rollback(patch))),
                    _ => {}
                }
            }
        }
        timeline.sort_by_key(|(stamp, _)| *stamp);
        let mut facts: Option<ExposureFacts> = None;
        for (stamp, evidence) in timeline {
            if as_of.is_some_and(|limit| stamp.0 > limit) {
                break;
            }
            let at = stamp.0;
            match (&mut facts, evidence) {
                (None, Evidence::Finding(FindingStatus::Open)) => {
                    facts = Some(ExposureFacts {
                        status: Status::Open,
                        detected_at: at,
                        remediated_at: None,
                        remediated_by: None,
                        last_at: at,
                        open: vec![(at, None)],
                    });
                }
                (None, _) => {}
                (Some(f), Evidence::Finding(FindingStatus::Open)) => {
                    f.set_status(Status::Open, at);
                    f.remediated_at = None;
                    f.remediated_by = None;
                    f.last_at = at;
                }
                (Some(f), Evidence::Finding(FindingStatus::Fixed)) => {
                    if f.status != Status::Remediated {
                        f.set_status(Status::Remediated, at);
                        f.remediated_at = Some(at);
                        f.remediated_by = None;
                    }
                    f.last_at = at;
                }
                (Some(f), Evidence::Finding(FindingStatus::Suppressed)) => {
                    // A suppressed finding takes an open row out of SLA
                    // counting; on a remediated row it changes nothing.
                    if f.status == Status::Open {
                        f.set_status(Status::Suppressed, at);
                    }
                    f.last_at = at;
                }
                (Some(f), Evidence::Success(patch)) => {
                    if f.status != Status::Remediated {
                        f.set_status(Status::Remediated, at);
                        f.remediated_at = Some(at);
                        f.remediated_by = Some(patch);
                        f.last_at = at;
                    }
                }
                (Some(f), Evidence::Rollback(patch)) => {
                    if f.status == Status::Remediated && f.remediated_by == Some(patch) {
                        f.set_status(Status::Open, at);
                        f.remediated_at = None;
                        f.remediated_by = None;
                        f.last_at = at;
                    }
                }
            }
        }
        facts
    }

    fn exposure_row(
        &self,
        asset: Sym,
        cve: Sym,
        catalog: &Catalog,
        config: &ProcessorConfig,
        now: Timestamp,
    ) -> Option<ExposureRow> {
        let facts = self.exposure_facts(asset, cve, catalog, None)?;
        let cve_id = self.names.name(cve);
        let info = catalog.cve(cve_id);
        let due_at = self.due_at(asset, cve, facts.detected_at, catalog, config);
        let severity = self.severity_of(asset, cve, catalog);
        let breached = match (facts.status, due_at) {
            (Status::Suppressed, _) | (_, None) => false,
            (_, Some(due_at)) => facts.remediated_at.unwrap_or(now) > due_at,
        };
        let mut updated_at = facts.last_at;
        if breached && facts.status == Status::Open {
            updated_at = updated_at.max(due_at.unwrap_or(updated_at));
        }
        Some(ExposureRow {
            asset_id: self.names.name(asset).to_owned(),
            cve_id: cve_id.to_owned(),
            status: facts.status.as_str(),
            severity: severity.map(|(severity, _)| severity.as_str()),
            kev: info.is_some_and(CveInfo::kev),
            detected_at: facts.detected_at,
            remediated_at: facts.remediated_at,
            due_at,
            breached,
            remediated_by_patch_id: facts.remediated_by.map(|p| self.names.name(p).to_owned()),
            scanner_cvss: self.exposures.get(&(asset, cve)).and_then(|entry| entry.scanner_cvss),
            severity_source: severity.map(|(_, source)| source),
            updated_at,
            revision: 0,
        })
    }

    /// Derives an outcome row from its events and the asset's assessments up
    /// to `as_of` (all of them when `None`); also returns the time of the
    /// first assessment after remediation.
    fn outcome_row(
        &self,
        asset: Sym,
        patch: Sym,
        catalog: &Catalog,
        config: &ProcessorConfig,
        as_of: Option<Timestamp>,
    ) -> Option<(OutcomeRow, Option<Timestamp>)> {
        let entry = self.outcomes.get(&(asset, patch))?;
        let patch_id = self.names.name(patch);
        let release = catalog.patch(patch_id);
        let limit = as_of.unwrap_or(Timestamp(i64::MAX));
        let events = &entry.events[..entry.events.partition_point(|(stamp, _)| stamp.0 <= limit)];
        let unverified = unverified_deployments(events, release);
        let attempted = |e: &DeploymentEvent| e.phase != DeploymentPhase::Scheduled;
        let first_attempt_at = events.iter().find(|(_, e)| attempted(e)).map(|(stamp, _)| stamp.0);
        let mut attempts: Vec<Sym> = events.iter().filter(|(_, e)| attempted(e)).map(|(_, e)| e.deployment).collect();
        attempts.sort_unstable();
        attempts.dedup();
        let latest_terminal = events.iter().rfind(|(_, e)| {
            matches!(e.phase, DeploymentPhase::Succeeded | DeploymentPhase::Failed | DeploymentPhase::RolledBack)
        });
        let outcome = match latest_terminal {
            None => "in_progress",
            Some((_, e)) if e.phase == DeploymentPhase::Succeeded && unverified.contains(&e.deployment) => "unverified",
            Some((_, e)) if e.phase == DeploymentPhase::Succeeded => "succeeded",
            Some((_, e)) if e.phase == DeploymentPhase::Failed => "failed",
            Some(_) => "rolled_back",
        };
        let remediated_at = if outcome == "succeeded" {
            let after = events.iter().rposition(|(_, e)| e.phase == DeploymentPhase::RolledBack).map_or(0, |i| i + 1);
            events[after..]
                .iter()
                .find(|(_, e)| e.phase == DeploymentPhase::Succeeded && !unverified.contains(&e.deployment))
                .map(|(stamp, _)| stamp.0)
        } else {
            None
        };
        let released_at = release.map(|r| r.released_at);
        let time_to_patch_s = match (remediated_at, released_at) {
            (Some(done), Some(released)) => Some((done.micros() - released.micros()) as f64 / 1e6),
            _ => None,
        };
        let postures = self.assets.get(&asset).map_or(&[][..], |a| a.postures.as_slice());
        let postures = &postures[..postures.partition_point(|(stamp, _)| stamp.0 <= limit)];
        let (before, after) = match remediated_at {
            Some(at) => {
                let split = postures.partition_point(|(stamp, ..)| stamp.0 <= at);
                (split.checked_sub(1).map(|i| &postures[i]), postures.get(split))
            }
            None => (None, None),
        };
        let posture_regressed = match (before, after) {
            (Some(&(_, (score_before, compliant_before))), Some(&(_, (score_after, compliant_after)))) => Some(
                score_after < score_before - config.posture_regression_points || (compliant_before && !compliant_after),
            ),
            _ => None,
        };
        let mut updated_at = events.last().map_or(Timestamp::default(), |(stamp, _)| stamp.0);
        if let Some((stamp, ..)) = after {
            updated_at = updated_at.max(stamp.0);
        }
        let row = OutcomeRow {
            asset_id: self.names.name(asset).to_owned(),
            patch_id: patch_id.to_owned(),
            released_at,
            first_attempt_at,
            remediated_at,
            time_to_patch_s,
            attempts: attempts.len() as i64,
            outcome,
            posture_before: before.map(|p| p.1.0),
            posture_after: after.map(|p| p.1.0),
            posture_reeval_latency_s: after
                .zip(remediated_at)
                .map(|((stamp, ..), at)| (stamp.0.micros() - at.micros()) as f64 / 1e6),
            posture_regressed,
            updated_at,
            revision: 0,
        };
        Some((row, after.map(|(stamp, ..)| stamp.0)))
    }

    /// Retention of settled pairs: forgets each exposure that is settled
    /// (remediated or suppressed) with every event of its timeline (its
    /// findings, the deployments of the patches that fix it) before
    /// `cutoff`, then each outcome whose events are all before `cutoff` and
    /// whose patch fixes no exposure still kept, with their alert ids, index
    /// entries, successes, queued checks, and the names of their deployments.
    /// Their rows stay in the lake as they are. `cutoff` is at most the
    /// watermark (every check up to it has run) and an event older than it
    /// is a dead letter ([`crate::task::Task`]), so no event revises a
    /// forgotten pair; a finding or deployment after it starts the pair
    /// again, as new, with revisions above every forgotten one. The cost, in
    /// DOMAIN terms: a re-detection then is a new exposure (detected anew)
    /// instead of a reopening, and a catalog change no longer revises a
    /// forgotten row. Returns how many exposures and outcomes it forgot.
    pub fn forget(&mut self, cutoff: Timestamp, catalog: &Catalog) -> (usize, usize) {
        let before = |events: Option<Timestamp>| events.is_none_or(|last| last < cutoff);
        let outcome_before = |state: &Self, asset: Sym, patch: Sym| {
            before(state.outcomes.get(&(asset, patch)).and_then(|o| o.events.last()).map(|(s, _)| s.0))
        };
        let mut exposures: Vec<(Sym, Sym)> = self
            .exposures
            .iter()
            .filter(|&(&(asset, cve), entry)| {
                before(entry.findings.last().map(|(stamp, _)| stamp.0))
                    && catalog
                        .fixed_by(self.names.name(cve))
                        .iter()
                        .filter_map(|patch_id| self.names.get(patch_id))
                        .all(|patch| outcome_before(self, asset, patch))
                    && self.exposure_facts(asset, cve, catalog, None).is_none_or(|facts| facts.status != Status::Open)
            })
            .map(|(&key, _)| key)
            .collect();
        exposures.sort_unstable();
        for key in &exposures {
            if let Some(entry) = self.exposures.remove(key) {
                self.revision_floor = self.revision_floor.max(entry.revision);
            }
        }
        let mut outcomes: Vec<(Sym, Sym)> = self
            .outcomes
            .keys()
            .filter(|&&(asset, patch)| {
                outcome_before(self, asset, patch)
                    && catalog.patch(self.names.name(patch)).is_none_or(|release| {
                        release
                            .fixes_cves
                            .iter()
                            .filter_map(|cve_id| self.names.get(cve_id))
                            .all(|cve| !self.exposures.contains_key(&(asset, cve)))
                    })
            })
            .copied()
            .collect();
        outcomes.sort_unstable();
        let mut deployments: FxHashSet<Sym> = FxHashSet::default();
        for key in &outcomes {
            if let Some(entry) = self.outcomes.remove(key) {
                self.revision_floor = self.revision_floor.max(entry.revision);
                deployments.extend(entry.events.iter().map(|(_, event)| event.deployment));
            }
        }
        if exposures.is_empty() && outcomes.is_empty() {
            return (0, 0);
        }
        let gone: FxHashSet<(Sym, Sym)> = exposures.iter().chain(&outcomes).copied().collect();
        for (&asset, entry) in self.assets.iter_mut() {
            entry.cves.retain(|&cve| !gone.contains(&(asset, cve)));
            entry.patches.retain(|&patch| !gone.contains(&(asset, patch)));
            entry.successes.retain(|&(_, patch)| !gone.contains(&(asset, patch)));
        }
        for index in [&mut self.by_cve, &mut self.by_patch] {
            index.retain(|&key, assets| {
                assets.retain(|&asset| !gone.contains(&(asset, key)));
                !assets.is_empty()
            });
        }
        self.deadlines.retain(
            |Reverse((_, timer))| !matches!(timer, Timer::Due { asset, cve } if gone.contains(&(*asset, *cve))),
        );
        self.timers.retain(|Reverse((_, timer))| {
            !matches!(timer, Timer::Reevaluation { asset, patch, .. } if gone.contains(&(*asset, *patch)))
        });
        self.unscheduled.retain(|key| !gone.contains(key));
        self.fired.retain(|_, owner| match owner {
            FiredFor::Pair(asset, key) => !gone.contains(&(*asset, *key)),
            FiredFor::Decision(at) => *at >= cutoff,
            FiredFor::Asset => true,
        });
        // A deployment's name goes when nothing kept refers to it: no kept
        // outcome's event, no queued check, and not a name used as a key.
        for outcome in self.outcomes.values() {
            for (_, event) in &outcome.events {
                deployments.remove(&event.deployment);
            }
        }
        for Reverse((_, timer)) in self.timers.iter() {
            if let Timer::Reevaluation { deployment, .. } = timer {
                deployments.remove(deployment);
            }
        }
        deployments.retain(|sym| {
            !self.assets.contains_key(sym) && !self.by_cve.contains_key(sym) && !self.by_patch.contains_key(sym)
        });
        let mut deployments: Vec<Sym> = deployments.into_iter().collect();
        deployments.sort_unstable();
        for sym in deployments {
            self.names.release(sym);
        }
        (exposures.len(), outcomes.len())
    }

    /// Derives every dirty row, emits those whose content changed with the
    /// next revision, and hands over the epoch's alerts and re-evaluations.
    pub fn flush(&mut self, catalog: &Catalog, config: &ProcessorConfig, now: Timestamp, out: &mut EpochRows) {
        self.drain_queues(now, catalog, config);
        self.decide_reevaluations(catalog);
        for asset in std::mem::take(&mut self.dirty_assets) {
            let Some(entry) = self.assets.get_mut(&asset) else { continue };
            let Some((stamp, inventory)) = entry.inventories.last() else { continue };
            let row = AssetRow {
                asset_id: self.names.name(asset).to_owned(),
                environment: inventory.environment.as_str(),
                criticality: inventory.criticality.as_str(),
                internet_exposed: inventory.internet_exposed,
                segment: inventory.segment.clone(),
                managed: inventory.managed,
                hostname: inventory.hostname.clone(),
                os_family: inventory.os_family.clone(),
                os_version: inventory.os_version.clone(),
                updated_at: stamp.0,
                revision: 0,
            };
            if let Some(row) = next_revision(&mut entry.committed, &mut entry.revision, row) {
                out.assets.push(row);
            }
        }
        let mut dirty: Vec<_> = std::mem::take(&mut self.dirty_exposures).into_iter().collect();
        dirty.sort_unstable();
        for (asset, cve) in dirty {
            let Some(row) = self.exposure_row(asset, cve, catalog, config, now) else { continue };
            let Some(entry) = self.exposures.get_mut(&(asset, cve)) else { continue };
            if let Some(row) = next_revision(&mut entry.committed, &mut entry.revision, row) {
                out.exposures.push(row);
            }
        }
        let mut dirty: Vec<_> = std::mem::take(&mut self.dirty_outcomes).into_iter().collect();
        dirty.sort_unstable();
        for (asset, patch) in dirty {
            let Some((row, _)) = self.outcome_row(asset, patch, catalog, config, None) else { continue };
            let Some(entry) = self.outcomes.get_mut(&(asset, patch)) else { continue };
            entry.remediated_at = row.remediated_at;
            if let Some(row) = next_revision(&mut entry.committed, &mut entry.revision, row) {
                out.patch_outcomes.push(row);
            }
        }
        out.alerts.append(&mut self.alerts);
        out.reevaluations.append(&mut self.reevaluations);
    }

    /// The re-evaluation requests of the epoch's successes whose deployment
    /// is verified as far as the epoch knows (an event arriving in a later
    /// epoch cannot recall a request already published).
    fn decide_reevaluations(&mut self, catalog: &Catalog) {
        for pending in std::mem::take(&mut self.pending_reevaluations) {
            let PendingReevaluation { asset, patch, deployment, remediated_at } = pending;
            if self.unverified(asset, patch, deployment, catalog) {
                continue;
            }
            let patch_id = self.names.name(patch);
            let asset_cves = self.assets.get(&asset).map_or(&[][..], |a| a.cves.as_slice());
            let cves = catalog.patch(patch_id).map_or_else(Vec::new, |r| {
                r.fixes_cves
                    .iter()
                    .filter(|c| self.names.get(c).is_some_and(|s| asset_cves.contains(&s)))
                    .cloned()
                    .collect()
            });
            self.reevaluations.push(Reevaluation {
                asset_id: self.names.name(asset).to_owned(),
                patch_id: patch_id.to_owned(),
                deployment_id: self.names.name(deployment).to_owned(),
                remediated_at,
                cves,
            });
        }
    }

    fn breach_finding(&self, row: &ExposureRow, entity: &str, at: Timestamp, catalog: &Catalog) -> ocsf::Finding {
        let info = catalog.cve(&row.cve_id);
        let severity_id = match row.severity {
            Some("critical") => 5,
            Some("high") => 4,
            Some("medium") => 3,
            _ => 2,
        };
        let title = format!("{} on {} is past its remediation deadline", row.cve_id, row.asset_id);
        let alert_id = ocsf::alert_id(Rule::SlaBreach.name(), entity, "");
        let vulnerability = ocsf::Vulnerability {
            cve: ocsf::Cve {
                uid: row.cve_id.clone(),
                cvss: info
                    .and_then(|i| {
                        Some(ocsf::Cvss {
                            base_score: i.cvss_base()?,
                            version: i.cvss_version().unwrap_or("3.1").to_owned(),
                        })
                    })
                    .into_iter()
                    .collect(),
                epss: info.map(|i| i.epss_at(at)).and_then(|(epss, percentile)| {
                    epss.map(|score| ocsf::Epss { score: score.to_string(), percentile })
                }),
            },
            is_exploit_available: row.kev,
            title: row.cve_id.clone(),
        };
        ocsf::Finding::new(
            FindingClass::Vulnerability,
            Activity::Update,
            severity_id,
            at.millis(),
            &alert_id,
            Rule::SlaBreach.name(),
            title,
        )
        .with_device(self.device(&row.asset_id, at))
        .with_vulnerability(vulnerability)
        .with_unmapped(serde_json::json!({"due_at": row.due_at.map(|d| d.to_string()), "status": row.status}))
    }
}

/// The deployments that are unverified: any of their events reports an
/// unverified signature or a digest other than the release's.
fn unverified_deployments(events: &[(Stamp, DeploymentEvent)], release: Option<&PatchInfo>) -> Vec<Sym> {
    let released = release.and_then(|r| r.artifact_sha256.as_deref());
    let mut out: Vec<Sym> = events
        .iter()
        .filter(|(_, e)| {
            e.signature_verified == Some(false)
                || matches!((e.artifact_sha256.as_deref(), released), (Some(reported), Some(released)) if reported != released)
        })
        .map(|(_, e)| e.deployment)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    fn inventory(segment: &str) -> Inventory {
        Inventory {
            environment: Environment::Edge,
            criticality: Criticality::High,
            internet_exposed: false,
            segment: segment.to_owned(),
            managed: true,
            hostname: None,
            os_family: None,
            os_version: None,
        }
    }

    fn as_of<T: Clone>(items: &[(Stamp, T)], t: Timestamp) -> Option<T> {
        items.iter().rev().find(|(stamp, _)| stamp.0 <= t).map(|(_, v)| v.clone())
    }

    /// The neighbours of `t`, as the outcome, re-evaluation and regression checks find them.
    fn around(postures: &[(Stamp, (f64, bool))], t: Timestamp) -> (Option<Stamp>, Option<Stamp>) {
        let split = postures.partition_point(|(stamp, _)| stamp.0 <= t);
        (split.checked_sub(1).map(|i| postures[i].0), postures.get(split).map(|p| p.0))
    }

    #[test]
    fn retention_changes_no_answer_a_check_can_ask() {
        let mut entry = AssetEntry::default();
        // An inventory every hour for 40 days, the segment changing twice.
        for h in 0..960i64 {
            let segment = if h < 300 {
                "a"
            } else if h < 700 {
                "b"
            } else {
                "a"
            };
            insert_sorted(&mut entry.inventories, (Timestamp(h * HOUR), h as u64), inventory(segment));
        }
        // An assessment every 3 hours, and successes now and then.
        for h in (0..960i64).step_by(3) {
            insert_sorted(&mut entry.postures, (Timestamp(h * HOUR), h as u64), (h as f64 % 97.0, h % 2 == 0));
        }
        entry.successes = [5, 100, 101, 400, 890].iter().map(|&h| (Timestamp(h * HOUR + 1), 0)).collect();
        let (inventories, postures) = (entry.inventories.clone(), entry.postures.clone());
        let cutoff = Timestamp(800 * HOUR);

        entry.compact_inventories();
        entry.compact_postures(cutoff);

        assert_eq!(entry.inventories.len(), 4, "the first of each run of equal inventories and the last");
        assert_eq!(entry.inventories.last().map(|i| i.0), inventories.last().map(|i| i.0));
        for h in -1..1000 {
            let t = Timestamp(h * HOUR + HOUR / 2);
            assert!(as_of(&entry.inventories, t) == as_of(&inventories, t), "inventory as of hour {h}");
        }
        assert!(entry.postures.len() < 80, "kept {} of {}", entry.postures.len(), postures.len());
        // Every time at or after the cutoff, and every success, asks the same.
        for t in (800 * HOUR..1000 * HOUR).step_by((HOUR / 4) as usize) {
            assert_eq!(as_of(&entry.postures, Timestamp(t)), as_of(&postures, Timestamp(t)));
            assert_eq!(around(&entry.postures, Timestamp(t)), around(&postures, Timestamp(t)));
        }
        for &(time, _) in &entry.successes {
            assert_eq!(around(&entry.postures, time), around(&postures, time), "success at {time}");
        }
    }

    #[test]
    fn finding_retention_changes_no_exposure_a_check_can_ask() {
        let mut catalog = Catalog::default();
        let release = PatchRelease {
            patch_id: "P".to_owned(),
            vendor: "v".to_owned(),
            product: "p".to_owned(),
            released_at: Timestamp(0),
            fixes_cves: vec!["C".to_owned()],
            artifact_sha256: None,
            signed: None,
        };
        catalog.apply_release((Timestamp(0), 0), &release);
        let mut state = AssetsState::default();
        let (asset, cve, patch) = (state.names.intern("A"), state.names.intern("C"), state.names.intern("P"));
        let deployment = state.names.intern("D");
        state.assets.entry(asset).or_default().patches.push(patch);
        // A scan every 2 hours for 60 days, in runs of open, fixed and
        // suppressed; successes and rollbacks now and then, some inside runs.
        let mut findings = Vec::new();
        let mut status = FindingStatus::Open;
        for h in (0..1440i64).step_by(2) {
            if (h * 7919) % 97 < 3 {
                status = match status {
                    FindingStatus::Open => FindingStatus::Fixed,
                    FindingStatus::Fixed => FindingStatus::Suppressed,
                    FindingStatus::Suppressed => FindingStatus::Open,
                };
            }
            findings.push(((Timestamp(h * HOUR), h as u64), status));
        }
        let outcome = state.outcomes.entry((asset, patch)).or_default();
        for (h, phase) in [
            (31, DeploymentPhase::Succeeded),
            (301, DeploymentPhase::Succeeded),
            (333, DeploymentPhase::RolledBack),
            (900, DeploymentPhase::Succeeded),
            (1300, DeploymentPhase::RolledBack),
        ] {
            let event = DeploymentEvent { deployment, phase, signature_verified: None, artifact_sha256: None };
            outcome.events.push(((Timestamp(h * HOUR + 1), 10_000 + h as u64), event));
        }
        let evidence: Vec<Timestamp> = outcome.events.iter().map(|(stamp, _)| stamp.0).collect();
        state.exposures.entry((asset, cve)).or_default().findings = findings.clone();
        let facts = |state: &AssetsState, t: Timestamp| state.exposure_facts(asset, cve, &catalog, Some(t));
        let full: Vec<_> =
            (1200 * HOUR..1500 * HOUR).step_by((HOUR / 2) as usize).map(|t| facts(&state, Timestamp(t))).collect();
        let cutoff = Timestamp(1200 * HOUR);

        state.exposures.get_mut(&(asset, cve)).expect("the exposure").compact_findings(cutoff, &evidence);

        let kept = state.exposures[&(asset, cve)].findings.len();
        assert!(kept < 200, "kept {kept} of {}", findings.len());
        let compacted: Vec<_> =
            (1200 * HOUR..1500 * HOUR).step_by((HOUR / 2) as usize).map(|t| facts(&state, Timestamp(t))).collect();
        assert!(full.iter().all(Option::is_some));
        if let Some(at) = (0..full.len()).find(|&i| compacted[i] != full[i]) {
            panic!("as of {} h past the cutoff: {:?}, whole history: {:?}", at / 2, compacted[at], full[at]);
        }
    }
}
