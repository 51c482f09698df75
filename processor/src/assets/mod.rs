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
//!
//! This file holds the state and applies events, drives the timers and
//! retention; the rules live beside it: [`exposures`] (status, severity, due
//! date, breaches), [`outcomes`] (deployments, integrity, posture,
//! re-evaluation) and [`decisions`] (policy decisions, inventory checks).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap, FxHashSet};
use schemas::ocsf::{self, Activity, FindingClass};
use schemas::severity::Severity;
use schemas::*;

use crate::alerts::{self, Rule};
use crate::catalog::{Catalog, CatalogChange, CveFacts, CveInfo, PatchInfo};
use crate::config::ProcessorConfig;
use crate::interner::{Interner, Sym};
use crate::rows::{AlertRow, AssetRow, EpochRows, ExposureRow, OutcomeRow, Reevaluation, next_revision};
use crate::{Stamp, Trim, insert_sorted};
use serde::{Deserialize, Serialize};

mod decisions;
mod exposures;
mod outcomes;

use exposures::*;
use outcomes::*;

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
    /// Exposures whose CVE's intel changed, and from when: their breach
    /// checks from then on are scheduled again, each judged with the
    /// catalog as of its instant.
    #[serde(skip)]
    catalog_rechecks: Vec<(Sym, Sym, Timestamp)>,
    /// Assets whose `allow` decisions from then on are checked again, for a
    /// change of one of their CVEs' intel.
    #[serde(skip)]
    decision_rechecks: Vec<(Sym, Timestamp)>,
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
    /// A success of a patch: does its outcome, as of then, show a regression?
    Outcome { asset: Sym, patch: Sym, at: Timestamp },
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
    /// Retention of `inventories`: an inventory before `cutoff` equal to
    /// the one before it is dropped, unless it is the last (its stamp is the
    /// asset row's update time). Every "inventory as of t" answer is
    /// unchanged, and so is every answer after an insertion at or after
    /// `cutoff` (an insertion just before a dropped repeat would otherwise
    /// stand in for it); the list grows with the changes of the asset, and
    /// with its reports of the lateness limit only.
    fn compact_inventories(&mut self, cutoff: Timestamp) {
        let len = self.inventories.len();
        if len < 3 || self.inventories[1].0.0 >= cutoff {
            return;
        }
        let items = std::mem::replace(&mut self.inventories, Vec::with_capacity(len));
        for (i, item) in items.into_iter().enumerate() {
            let repeat = self.inventories.last().is_some_and(|(_, previous)| *previous == item.1);
            if !repeat || i == len - 1 || item.0.0 >= cutoff {
                self.inventories.push(item);
            }
        }
    }

    /// Retention of `postures`: of the assessments at or before `cutoff`,
    /// only those a question can still reach are kept: the last one (the
    /// posture as of any later time) and, for every success, the last one
    /// before it and the first one after it (an outcome's posture before
    /// and after, its re-evaluation, its regression check). `cutoff` is
    /// [`ProcessorConfig::history_cutoff`], so no pending check and no event
    /// still applied asks about an earlier time; the list holds the
    /// assessments of the lateness limit plus two per success.
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
            entry.scanner_cvss.trim();
            entry.scanner_severity.trim();
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
        self.decision_rechecks.trim();
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
                let newest = entry.inventories.last().map_or(stamp.0, |(last, _)| last.0);
                entry.compact_inventories(config.history_cutoff(newest, watermark));
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
                    let cutoff = config.history_cutoff(newest, watermark);
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
                    entry.scanner_cvss.report(stamp.0, cvss);
                }
                if let Some(severity) = finding.scanner_severity {
                    entry.scanner_severity.report(stamp.0, severity);
                }
                self.dirty_exposures.insert((asset, cve));
                self.unscheduled.push((asset, cve));
                if catalog.cve(&finding.cve_id).is_some_and(CveInfo::ever_kev) {
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
                    let cutoff = config.history_cutoff(newest, watermark);
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
                // Decisions before the cutoff have been checked (their timers
                // are behind the watermark) and no event still applied re-checks them.
                let newest = entry.decisions.last().map_or(stamp.0, |(time, _)| *time);
                let cutoff = config.history_cutoff(newest, watermark);
                let old = entry.decisions.partition_point(|(time, _)| *time < cutoff);
                for (_, key) in entry.decisions.drain(..old) {
                    if let Some(key) = key {
                        self.decisions.remove(&key);
                    }
                }
            }
            _ => {}
        }
    }

    /// Marks the rows that a change of the intel catalog may change, and
    /// queues the checks it may answer differently: the breach checks and
    /// the decisions of the assets with the CVE, from the change's time on.
    pub fn catalog_changed(&mut self, change: &CatalogChange) {
        match change {
            CatalogChange::Cve { cve_id, at } => {
                if let Some(cve) = self.names.get(cve_id) {
                    let assets = self.by_cve.get(&cve).cloned().unwrap_or_default();
                    for asset in assets {
                        self.dirty_exposures.insert((asset, cve));
                        self.catalog_rechecks.push((asset, cve, *at));
                        self.decision_rechecks.push((asset, *at));
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
                // What fixes a CVE is known as of now: every breach check is judged again.
                for cve_id in cves {
                    if let Some(cve) = self.names.get(cve_id) {
                        for &asset in self.by_cve.get(&cve).map_or(&[][..], Vec::as_slice) {
                            self.dirty_exposures.insert((asset, cve));
                            self.catalog_rechecks.push((asset, cve, Timestamp(i64::MIN)));
                        }
                    }
                }
            }
        }
    }

    /// The queued work that needs the catalog or the watermark, in the order
    /// events queued it: deadline checks, catalog re-checks, digests.
    ///
    /// A catalog change re-checks only the instants within the late-alert
    /// horizon behind `watermark`, as a late event would: an earlier one is
    /// settled, and the history that answered it may be compacted since
    /// (DOMAIN.md "Exact or refused"; docs/truth.md).
    fn drain_queues(&mut self, watermark: Timestamp, catalog: &Catalog, config: &ProcessorConfig) {
        for (asset, cve) in std::mem::take(&mut self.unscheduled) {
            self.schedule_breach_checks(asset, cve, Timestamp(i64::MIN), catalog, config);
        }
        let settled = config.history_cutoff(Timestamp(i64::MAX), watermark);
        let mut rechecks = std::mem::take(&mut self.catalog_rechecks);
        // The earliest change of each exposure covers the later ones.
        rechecks.sort_unstable();
        rechecks.dedup_by_key(|(asset, cve, _)| (*asset, *cve));
        for (asset, cve, from) in rechecks {
            self.schedule_breach_checks(asset, cve, from.max(settled), catalog, config);
        }
        let mut rechecks = std::mem::take(&mut self.decision_rechecks);
        rechecks.sort_unstable();
        rechecks.dedup_by_key(|(asset, _)| *asset);
        for (asset, from) in rechecks {
            self.recheck_decisions(asset, from.max(settled));
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
                Timer::Outcome { asset, patch, at } => self.check_outcome_regression(asset, patch, at, catalog, config),
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

    fn fire(&mut self, rule: Rule, entity_id: &str, at: Timestamp, finding: ocsf::Finding, owner: FiredFor) {
        let row = alerts::row(rule, entity_id, at, &finding);
        if let std::collections::hash_map::Entry::Vacant(slot) = self.fired.entry(row.alert_id.clone()) {
            slot.insert(owner);
            self.alerts.push(row);
        }
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
        self.timers.retain(|Reverse((_, timer))| match timer {
            Timer::Reevaluation { asset, patch, .. } | Timer::Outcome { asset, patch, .. } => {
                !gone.contains(&(*asset, *patch))
            }
            _ => true,
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
            let Some(row) = self.exposure_row(asset, cve, catalog, config, now, None) else { continue };
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

        entry.compact_inventories(cutoff);
        entry.compact_postures(cutoff);

        assert_eq!(entry.inventories.len(), 3 + 160, "the first of each run before the cutoff, all from it");
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
