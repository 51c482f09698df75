//! The intel catalog: the latest `vuln.intel.v1` per CVE and `patch.release.v1`
//! per patch, which every task consults. "Latest" is by event time, arrival
//! order breaking ties, so the catalog does not depend on delivery order.

use rustc_hash::FxHashMap;
use schemas::severity::Severity;
use schemas::{Date, Exploitation, PatchRelease, Timestamp, VulnIntel};
use serde::{Deserialize, Serialize};

use crate::Stamp;
use crate::rows::{CveRow, PatchRow};

/// What the catalog knows of a CVE: its latest intel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct CveInfo {
    /// When this intel was reported, for "latest wins".
    pub stamp: Stamp,
    pub cve_id: String,
    pub published_at: Timestamp,
    pub cvss_base: f64,
    pub cvss_version: Option<String>,
    pub epss: Option<f64>,
    pub epss_percentile: Option<f64>,
    pub kev: bool,
    pub kev_date_added: Option<Date>,
    pub kev_due_date: Option<Date>,
    pub exploitation: Option<Exploitation>,
    /// Times the `cves` row of this CVE was emitted.
    pub revision: i64,
    /// (time, epss, percentile) of every intel report, sorted by time, so an
    /// alert can carry the score that was current at its own time.
    epss_history: Vec<(Timestamp, Option<f64>, Option<f64>)>,
}

impl CveInfo {
    fn new(stamp: Stamp, intel: &VulnIntel) -> Self {
        CveInfo {
            stamp,
            cve_id: intel.cve_id.clone(),
            published_at: intel.published_at,
            cvss_base: intel.cvss_base,
            cvss_version: intel.cvss_version.clone(),
            epss: intel.epss,
            epss_percentile: intel.epss_percentile,
            kev: intel.kev,
            kev_date_added: intel.kev_date_added,
            kev_due_date: intel.kev_due_date,
            exploitation: intel.exploitation,
            revision: 0,
            epss_history: Vec::new(),
        }
    }

    /// Severity band of the CVSS score.
    pub fn severity(&self) -> Severity {
        Severity::from_cvss(self.cvss_base)
    }

    /// The KEV due date, when the CVE is in KEV and has one.
    pub fn kev_due(&self) -> Option<Date> {
        self.kev.then_some(self.kev_due_date).flatten()
    }

    /// EPSS score and percentile as reported at or before `at` (the first
    /// report's if none was earlier).
    pub fn epss_at(&self, at: Timestamp) -> (Option<f64>, Option<f64>) {
        let idx = self.epss_history.partition_point(|(time, ..)| *time <= at).saturating_sub(1);
        self.epss_history.get(idx).map_or((self.epss, self.epss_percentile), |&(_, epss, pct)| (epss, pct))
    }

    fn same_content(&self, other: &CveInfo) -> bool {
        let key = |c: &CveInfo| {
            (
                c.published_at,
                c.cvss_base.to_bits(),
                c.cvss_version.clone(),
                c.epss.map(f64::to_bits),
                c.epss_percentile.map(f64::to_bits),
                c.kev,
                c.kev_date_added,
                c.kev_due_date,
                c.exploitation,
            )
        };
        key(self) == key(other)
    }
}

/// What the catalog knows of a patch: its latest release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct PatchInfo {
    /// When this release was reported, for "latest wins".
    pub stamp: Stamp,
    pub patch_id: String,
    pub vendor: String,
    pub product: String,
    pub released_at: Timestamp,
    pub fixes_cves: Vec<String>,
    pub artifact_sha256: Option<String>,
    pub signed: Option<bool>,
    /// Times the `patches` row of this patch was emitted.
    pub revision: i64,
}

impl PatchInfo {
    fn new(stamp: Stamp, release: &PatchRelease) -> Self {
        PatchInfo {
            stamp,
            patch_id: release.patch_id.clone(),
            vendor: release.vendor.clone(),
            product: release.product.clone(),
            released_at: release.released_at,
            fixes_cves: release.fixes_cves.clone(),
            artifact_sha256: release.artifact_sha256.clone(),
            signed: release.signed,
            revision: 0,
        }
    }

    fn same_content(&self, other: &PatchInfo) -> bool {
        (&self.vendor, &self.product, self.released_at, &self.fixes_cves, &self.artifact_sha256, self.signed)
            == (
                &other.vendor,
                &other.product,
                other.released_at,
                &other.fixes_cves,
                &other.artifact_sha256,
                other.signed,
            )
    }
}

/// A change of the catalog that may change derived rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogChange {
    /// A CVE's severity or KEV due date changed (or it appeared).
    Cve(String),
    /// A patch's release time, digest or fixed CVEs changed (or it appeared).
    Patch {
        /// The patch.
        patch_id: String,
        /// The CVEs it fixed before or fixes now.
        cves: Vec<String>,
    },
}

/// The global intel catalog.
#[derive(Default, Serialize, Deserialize)]
pub struct Catalog {
    cves: FxHashMap<String, CveInfo>,
    patches: FxHashMap<String, PatchInfo>,
    /// CVE → the patches that fix it.
    fixed_by: FxHashMap<String, Vec<String>>,
    #[serde(skip)]
    dirty_cves: Vec<String>,
    #[serde(skip)]
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
        let mut info = CveInfo::new(stamp, intel);
        if let Some(known) = self.cves.get_mut(&intel.cve_id) {
            let idx = known.epss_history.partition_point(|(time, ..)| *time <= stamp.0);
            known.epss_history.insert(idx, report);
            if known.stamp > stamp {
                return None;
            }
            info.revision = known.revision;
            info.epss_history = std::mem::take(&mut known.epss_history);
        } else {
            info.epss_history.push(report);
        }
        let previous = self.cves.get(&intel.cve_id);
        let relevant = |info: &CveInfo| (info.severity(), info.kev_due(), info.kev);
        let changed = previous.is_none_or(|known| relevant(known) != relevant(&info));
        if previous.is_none_or(|known| !known.same_content(&info)) {
            self.dirty_cves.push(intel.cve_id.clone());
        }
        self.cves.insert(intel.cve_id.clone(), info);
        changed.then(|| CatalogChange::Cve(intel.cve_id.clone()))
    }

    /// Applies a `patch.release.v1`; returns the change if derived rows may be affected.
    pub fn apply_release(&mut self, stamp: Stamp, release: &PatchRelease) -> Option<CatalogChange> {
        self.max_time = self.max_time.max(Some(stamp.0));
        let mut info = PatchInfo::new(stamp, release);
        let previous = self.patches.get(&release.patch_id);
        if previous.is_some_and(|known| known.stamp > stamp) {
            return None;
        }
        let mut cves = release.fixes_cves.clone();
        if let Some(known) = previous {
            info.revision = known.revision;
            if known.same_content(&info) {
                self.patches.insert(release.patch_id.clone(), info);
                return None;
            }
            for cve in &known.fixes_cves {
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
        self.patches.insert(release.patch_id.clone(), info);
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
