//! The intel catalog: the latest `vuln.intel.v1` per CVE and `patch.release.v1`
//! per patch, which every task consults. "Latest" is by event time, arrival
//! order breaking ties, so the catalog does not depend on delivery order.

use rustc_hash::FxHashMap;
use schemas::severity::Severity;
use schemas::{Date, PatchRelease, Timestamp, VulnIntel};

use crate::Stamp;
use crate::rows::{CveRow, PatchRow};

/// What a task needs to know of a CVE.
#[derive(Clone, Debug, PartialEq)]
pub struct CveInfo {
    /// When this intel was reported, for "latest wins".
    pub stamp: Stamp,
    /// The intel itself.
    pub intel: VulnIntel,
    /// Times the `cves` row of this CVE was emitted.
    pub revision: i64,
    /// (time, epss, percentile) of every intel report, sorted by time, so an
    /// alert can carry the score that was current at its own time.
    epss_history: Vec<(Timestamp, Option<f64>, Option<f64>)>,
}

impl CveInfo {
    /// EPSS score and percentile as reported at or before `at` (the first
    /// report's if none was earlier).
    pub fn epss_at(&self, at: Timestamp) -> (Option<f64>, Option<f64>) {
        let idx = self.epss_history.partition_point(|(time, ..)| *time <= at);
        let (_, epss, percentile) = self.epss_history[idx.saturating_sub(1).min(self.epss_history.len() - 1)];
        (epss, percentile)
    }

    /// Severity band of the CVSS score.
    pub fn severity(&self) -> Severity {
        Severity::from_cvss(self.intel.cvss_base)
    }

    /// The KEV due date, when the CVE is in KEV and has one.
    pub fn kev_due(&self) -> Option<Date> {
        self.intel.kev.then_some(self.intel.kev_due_date).flatten()
    }
}

/// What a task needs to know of a patch.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchInfo {
    /// When this release was reported, for "latest wins".
    pub stamp: Stamp,
    /// The release itself.
    pub release: PatchRelease,
    /// Times the `patches` row of this patch was emitted.
    pub revision: i64,
}

/// A change of the catalog that may change derived rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogChange {
    /// A CVE's severity or KEV due date changed (or it appeared).
    Cve(String),
    /// A patch's release time, digest or fixed CVEs changed (or it appeared);
    /// with the CVEs it fixed before and after.
    Patch {
        /// The patch.
        patch_id: String,
        /// The CVEs it fixed before or fixes now.
        cves: Vec<String>,
    },
}

/// The global intel catalog.
#[derive(Default)]
pub struct Catalog {
    cves: FxHashMap<String, CveInfo>,
    patches: FxHashMap<String, PatchInfo>,
    /// CVE → the patches that fix it.
    fixed_by: FxHashMap<String, Vec<String>>,
    dirty_cves: Vec<String>,
    dirty_patches: Vec<String>,
    max_time: Option<Timestamp>,
}

impl Catalog {
    /// The CVE, if any intel was seen.
    pub fn cve(&self, cve_id: &str) -> Option<&CveInfo> {
        self.cves.get(cve_id)
    }

    /// The patch, if its release was seen.
    pub fn patch(&self, patch_id: &str) -> Option<&PatchInfo> {
        self.patches.get(patch_id)
    }

    /// The patches whose release lists `cve_id` as fixed.
    pub fn fixed_by(&self, cve_id: &str) -> &[String] {
        self.fixed_by.get(cve_id).map_or(&[], Vec::as_slice)
    }

    /// The largest event time of the intel applied.
    pub fn max_time(&self) -> Option<Timestamp> {
        self.max_time
    }

    /// Applies a `vuln.intel.v1`; returns the change if derived rows may be affected.
    pub fn apply_intel(&mut self, stamp: Stamp, intel: &VulnIntel) -> Option<CatalogChange> {
        self.max_time = self.max_time.max(Some(stamp.0));
        let report = (stamp.0, intel.epss, intel.epss_percentile);
        if let Some(known) = self.cves.get_mut(&intel.cve_id) {
            let idx = known.epss_history.partition_point(|(time, ..)| *time <= stamp.0);
            known.epss_history.insert(idx, report);
        }
        let previous = self.cves.get(&intel.cve_id);
        if previous.is_some_and(|known| known.stamp > stamp) {
            return None;
        }
        let relevant = |info: &CveInfo| (info.severity(), info.kev_due(), info.intel.kev);
        let revision = previous.map_or(0, |known| known.revision);
        let epss_history = previous.map_or_else(|| vec![report], |known| known.epss_history.clone());
        let info = CveInfo { stamp, intel: intel.clone(), revision, epss_history };
        let changed = previous.is_none_or(|known| relevant(known) != relevant(&info));
        if previous.is_none_or(|known| known.intel != info.intel) {
            self.dirty_cves.push(intel.cve_id.clone());
        }
        self.cves.insert(intel.cve_id.clone(), info);
        changed.then(|| CatalogChange::Cve(intel.cve_id.clone()))
    }

    /// Applies a `patch.release.v1`; returns the change if derived rows may be affected.
    pub fn apply_release(&mut self, stamp: Stamp, release: &PatchRelease) -> Option<CatalogChange> {
        self.max_time = self.max_time.max(Some(stamp.0));
        let previous = self.patches.get(&release.patch_id);
        if previous.is_some_and(|known| known.stamp > stamp) {
            return None;
        }
        let mut cves = release.fixes_cves.clone();
        if let Some(known) = previous {
            if known.release == *release {
                return None;
            }
            for cve in &known.release.fixes_cves {
                if let Some(patches) = self.fixed_by.get_mut(cve) {
                    patches.retain(|p| *p != release.patch_id);
                }
                cves.push(cve.clone());
            }
        }
        for cve in &release.fixes_cves {
            let patches = self.fixed_by.entry(cve.clone()).or_default();
            if !patches.contains(&release.patch_id) {
                patches.push(release.patch_id.clone());
            }
        }
        cves.sort();
        cves.dedup();
        let revision = previous.map_or(0, |known| known.revision);
        self.patches.insert(release.patch_id.clone(), PatchInfo { stamp, release: release.clone(), revision });
        self.dirty_patches.push(release.patch_id.clone());
        Some(CatalogChange::Patch { patch_id: release.patch_id.clone(), cves })
    }

    /// The `cves` and `patches` rows changed since the last call, sorted by id.
    pub fn take_rows(&mut self) -> (Vec<CveRow>, Vec<PatchRow>) {
        let mut cve_ids = std::mem::take(&mut self.dirty_cves);
        cve_ids.sort();
        cve_ids.dedup();
        let mut cves = Vec::with_capacity(cve_ids.len());
        for id in &cve_ids {
            if let Some(info) = self.cves.get_mut(id) {
                info.revision += 1;
                cves.push(CveRow::from(&*info));
            }
        }
        let mut patch_ids = std::mem::take(&mut self.dirty_patches);
        patch_ids.sort();
        patch_ids.dedup();
        let mut patches = Vec::with_capacity(patch_ids.len());
        for id in &patch_ids {
            if let Some(info) = self.patches.get_mut(id) {
                info.revision += 1;
                patches.push(PatchRow::from(&*info));
            }
        }
        (cves, patches)
    }
}
