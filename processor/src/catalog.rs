//! The intel catalog: per CVE, what each feed (`vuln.intel.v1`,
//! `vuln.kev.v1`, `vuln.epss.v1`) last said of it, merged; per patch, its
//! latest `patch.release.v1`. Every task consults it. "Latest" is by event
//! time, arrival order breaking ties (EPSS: by score date first), so the
//! catalog does not depend on delivery order.

use rustc_hash::FxHashMap;
use schemas::severity::Severity;
use schemas::{Date, Exploitation, PatchRelease, Timestamp, VulnEpss, VulnIntel, VulnKev};
use serde::{Deserialize, Serialize};

use crate::Stamp;
use crate::rows::{CveRow, PatchRow};

/// What the catalog knows of a CVE: what each feed last said of it, merged
/// by the accessors below (DOMAIN.md "One CVE, several feeds"). Each feed
/// replaces only its own record, so a KEV or EPSS record never erases
/// NVD's CVSS, and NVD never erases KEV's due date.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CveInfo {
    /// The CVE.
    pub cve_id: String,
    /// The latest `vuln.intel.v1` (NVD, or an organisation's own catalog).
    pub intel: Option<IntelRecord>,
    /// The latest `vuln.kev.v1`.
    pub kev_entry: Option<KevRecord>,
    /// The `vuln.epss.v1` with the latest score date.
    pub epss_score: Option<EpssRecord>,
    /// Times the `cves` row of this CVE was emitted.
    pub revision: i64,
    /// (time, epss, percentile) of every EPSS score reported (by either
    /// feed), sorted by time, so an alert can carry the score that was
    /// current at its own time.
    epss_history: Vec<(Timestamp, Option<f64>, Option<f64>)>,
}

/// A `vuln.intel.v1` as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct IntelRecord {
    /// When it was reported, for "latest wins".
    pub stamp: Stamp,
    /// The event's `source`: who scored the CVE.
    pub source: String,
    pub published_at: Timestamp,
    pub cvss_base: f64,
    pub cvss_version: Option<String>,
    pub epss: Option<f64>,
    pub epss_percentile: Option<f64>,
    pub kev: bool,
    pub kev_date_added: Option<Date>,
    pub kev_due_date: Option<Date>,
    pub exploitation: Option<Exploitation>,
}

/// A `vuln.kev.v1` as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct KevRecord {
    pub stamp: Stamp,
    pub source: String,
    pub date_added: Date,
    pub due_date: Option<Date>,
}

/// A `vuln.epss.v1` as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct EpssRecord {
    pub stamp: Stamp,
    pub source: String,
    pub score_date: Date,
    pub epss: f64,
    pub percentile: Option<f64>,
}

/// What a `cves` row shows of a CVE, compared to skip rows that would not change.
type Content = (
    Option<Timestamp>,
    Option<u64>,
    Option<String>,
    Option<u64>,
    Option<u64>,
    bool,
    Option<Date>,
    Option<Date>,
    Option<Exploitation>,
    (Option<String>, Option<String>, Option<String>),
    Option<Date>,
);

impl CveInfo {
    fn new(cve_id: &str) -> Self {
        CveInfo {
            cve_id: cve_id.to_owned(),
            intel: None,
            kev_entry: None,
            epss_score: None,
            revision: 0,
            epss_history: Vec::new(),
        }
    }

    /// The CVSS base score: the latest intel's; none without intel.
    pub fn cvss_base(&self) -> Option<f64> {
        self.intel.as_ref().map(|intel| intel.cvss_base)
    }

    /// The CVSS version of [`CveInfo::cvss_base`].
    pub fn cvss_version(&self) -> Option<&str> {
        self.intel.as_ref().and_then(|intel| intel.cvss_version.as_deref())
    }

    /// Severity band of the CVSS score; none without one.
    pub fn severity(&self) -> Option<Severity> {
        self.cvss_base().map(Severity::from_cvss)
    }

    /// Publication time, from the latest intel.
    pub fn published_at(&self) -> Option<Timestamp> {
        self.intel.as_ref().map(|intel| intel.published_at)
    }

    /// In KEV: by the KEV feed, else as the latest intel says.
    pub fn kev(&self) -> bool {
        self.kev_entry.is_some() || self.intel.as_ref().is_some_and(|intel| intel.kev)
    }

    /// The KEV dates (added, due): the KEV feed's, else the latest intel's.
    pub fn kev_dates(&self) -> (Option<Date>, Option<Date>) {
        match (&self.kev_entry, &self.intel) {
            (Some(kev), _) => (Some(kev.date_added), kev.due_date),
            (None, Some(intel)) if intel.kev => (intel.kev_date_added, intel.kev_due_date),
            _ => (None, None),
        }
    }

    /// The KEV due date, when the CVE is in KEV and has one.
    pub fn kev_due(&self) -> Option<Date> {
        self.kev_dates().1
    }

    /// EPSS score and percentile: the EPSS feed's latest score, else the latest intel's.
    pub fn epss(&self) -> (Option<f64>, Option<f64>) {
        match (&self.epss_score, &self.intel) {
            (Some(epss), _) => (Some(epss.epss), epss.percentile),
            (None, Some(intel)) => (intel.epss, intel.epss_percentile),
            (None, None) => (None, None),
        }
    }

    /// Known exploitation, from the latest intel.
    pub fn exploitation(&self) -> Option<Exploitation> {
        self.intel.as_ref().and_then(|intel| intel.exploitation)
    }

    /// The `source` of the event each merged value came from: (CVSS, KEV, EPSS).
    pub fn sources(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        let intel = self.intel.as_ref().map(|intel| intel.source.as_str());
        let kev = match (&self.kev_entry, &self.intel) {
            (Some(kev), _) => Some(kev.source.as_str()),
            (None, Some(i)) if i.kev => intel,
            _ => None,
        };
        let epss = match (&self.epss_score, &self.intel) {
            (Some(epss), _) => Some(epss.source.as_str()),
            (None, Some(i)) if i.epss.is_some() => intel,
            _ => None,
        };
        (intel, kev, epss)
    }

    /// When the catalog last heard of the CVE, from any feed.
    pub fn updated_at(&self) -> Timestamp {
        [
            self.intel.as_ref().map(|r| r.stamp.0),
            self.kev_entry.as_ref().map(|r| r.stamp.0),
            self.epss_score.as_ref().map(|r| r.stamp.0),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(Timestamp(i64::MIN))
    }

    /// EPSS score and percentile as reported at or before `at` (the first
    /// report's if none was earlier; the merged score if none was reported).
    pub fn epss_at(&self, at: Timestamp) -> (Option<f64>, Option<f64>) {
        let idx = self.epss_history.partition_point(|(time, ..)| *time <= at).saturating_sub(1);
        self.epss_history.get(idx).map_or_else(|| self.epss(), |&(_, epss, pct)| (epss, pct))
    }

    /// Records a score reported at `at`. A score equal to the one in force
    /// just before `at` changes no answer of [`CveInfo::epss_at`] and is not
    /// kept, and neither is a later entry that this one makes a repeat: the
    /// history grows with the changes of a CVE's score, not with the feed's
    /// days (FIRST republishes every CVE's score daily, most of them unchanged).
    fn record_epss(&mut self, at: Timestamp, epss: Option<f64>, percentile: Option<f64>) {
        if epss.is_none() {
            return;
        }
        let entry = (at, epss, percentile);
        let same = |other: &(Timestamp, Option<f64>, Option<f64>)| (other.1, other.2) == (entry.1, entry.2);
        let idx = self.epss_history.partition_point(|(time, ..)| *time <= at);
        if idx > 0 && same(&self.epss_history[idx - 1]) {
            return;
        }
        if self.epss_history.get(idx).is_some_and(same) {
            self.epss_history.remove(idx);
        }
        self.epss_history.insert(idx, entry);
    }

    /// Retention of the EPSS history: of the scores reported at or before
    /// `cutoff`, only the last is kept. [`CveInfo::epss_at`] answers the same
    /// for any time from `cutoff` on; an alert dated earlier (rare: most are
    /// dated at the watermark) carries the score in force at `cutoff`.
    fn forget_epss_before(&mut self, cutoff: Timestamp) {
        let idx = self.epss_history.partition_point(|(time, ..)| *time <= cutoff);
        if idx > 1 {
            self.epss_history.drain(..idx - 1);
        }
    }

    /// What derived rows depend on: a change rewrites the CVE's exposures.
    fn relevant(&self) -> (Option<Severity>, Option<Date>, bool) {
        (self.severity(), self.kev_due(), self.kev())
    }

    /// What the `cves` row shows: a change writes a new revision.
    fn content(&self) -> Content {
        let (kev_added, kev_due) = self.kev_dates();
        let (epss, percentile) = self.epss();
        let (cvss_source, kev_source, epss_source) = self.sources();
        (
            self.published_at(),
            self.cvss_base().map(f64::to_bits),
            self.cvss_version().map(str::to_owned),
            epss.map(f64::to_bits),
            percentile.map(f64::to_bits),
            self.kev(),
            kev_added,
            kev_due,
            self.exploitation(),
            (cvss_source.map(str::to_owned), kev_source.map(str::to_owned), epss_source.map(str::to_owned)),
            self.epss_score.as_ref().map(|e| e.score_date),
        )
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
    /// Retention (`processor.settled_retention_days`): forgets the EPSS
    /// scores no question from `cutoff` on can reach.
    pub fn forget_before(&mut self, cutoff: Timestamp) {
        for info in self.cves.values_mut() {
            info.forget_epss_before(cutoff);
        }
    }

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

    /// Applies a `vuln.intel.v1` from `source`; returns the change if derived rows may be affected.
    pub fn apply_intel(&mut self, stamp: Stamp, source: &str, intel: &VulnIntel) -> Option<CatalogChange> {
        let record = IntelRecord {
            stamp,
            source: source.to_owned(),
            published_at: intel.published_at,
            cvss_base: intel.cvss_base,
            cvss_version: intel.cvss_version.clone(),
            epss: intel.epss,
            epss_percentile: intel.epss_percentile,
            kev: intel.kev,
            kev_date_added: intel.kev_date_added,
            kev_due_date: intel.kev_due_date,
            exploitation: intel.exploitation,
        };
        self.update(stamp, &intel.cve_id, |info| {
            info.record_epss(stamp.0, intel.epss, intel.epss_percentile);
            let newer = info.intel.as_ref().is_none_or(|known| known.stamp <= stamp);
            if newer {
                info.intel = Some(record);
            }
            newer
        })
    }

    /// Applies a `vuln.kev.v1` from `source`: only the CVE's KEV fields.
    pub fn apply_kev(&mut self, stamp: Stamp, source: &str, kev: &VulnKev) -> Option<CatalogChange> {
        let record = KevRecord { stamp, source: source.to_owned(), date_added: kev.date_added, due_date: kev.due_date };
        self.update(stamp, &kev.cve_id, |info| {
            let newer = info.kev_entry.as_ref().is_none_or(|known| known.stamp <= stamp);
            if newer {
                info.kev_entry = Some(record);
            }
            newer
        })
    }

    /// Applies a `vuln.epss.v1` from `source`: only the CVE's EPSS fields;
    /// the score with the latest score date wins (then the latest event).
    pub fn apply_epss(&mut self, stamp: Stamp, source: &str, epss: &VulnEpss) -> Option<CatalogChange> {
        let record = EpssRecord {
            stamp,
            source: source.to_owned(),
            score_date: epss.score_date,
            epss: epss.epss,
            percentile: epss.percentile,
        };
        self.update(stamp, &epss.cve_id, |info| {
            // Known from the event's time on, as an intel record's score is (an alert
            // at an earlier time must not see it, whatever order the events arrived in).
            info.record_epss(stamp.0, Some(epss.epss), epss.percentile);
            let newer = info
                .epss_score
                .as_ref()
                .is_none_or(|known| (known.score_date, known.stamp) <= (epss.score_date, stamp));
            if newer {
                info.epss_score = Some(record);
            }
            newer
        })
    }

    /// Lets `apply` update one CVE's feed records (it returns whether it
    /// replaced one); marks the `cves` row dirty when its content changed,
    /// and returns the change when derived rows may be affected.
    fn update(
        &mut self,
        stamp: Stamp,
        cve_id: &str,
        apply: impl FnOnce(&mut CveInfo) -> bool,
    ) -> Option<CatalogChange> {
        self.max_time = self.max_time.max(Some(stamp.0));
        let info = self.cves.entry(cve_id.to_owned()).or_insert_with(|| CveInfo::new(cve_id));
        let known = info.intel.is_some() || info.kev_entry.is_some() || info.epss_score.is_some();
        let (relevant, content) = (info.relevant(), info.content());
        if !apply(info) {
            return None;
        }
        if !known || info.content() != content {
            self.dirty_cves.push(cve_id.to_owned());
        }
        (!known || info.relevant() != relevant).then(|| CatalogChange::Cve(cve_id.to_owned()))
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

/// A CVE's row of the `cves` table.
impl From<&CveInfo> for CveRow {
    fn from(info: &CveInfo) -> Self {
        let (kev_date_added, kev_due_date) = info.kev_dates();
        let (epss, epss_percentile) = info.epss();
        let (cvss_source, kev_source, epss_source) = info.sources();
        CveRow {
            cve_id: info.cve_id.clone(),
            cvss_base: info.cvss_base(),
            severity: info.severity().map(|s| s.as_str()),
            epss,
            kev: info.kev(),
            kev_due_date,
            published_at: info.published_at(),
            cvss_version: info.cvss_version().map(str::to_owned),
            epss_percentile,
            kev_date_added,
            exploitation: info.exploitation().map(|e| e.as_str()),
            cvss_source: cvss_source.map(str::to_owned),
            kev_source: kev_source.map(str::to_owned),
            epss_source: epss_source.map(str::to_owned),
            epss_date: info.epss_score.as_ref().map(|e| e.score_date),
            updated_at: info.updated_at(),
            revision: info.revision,
        }
    }
}

/// A patch's row of the `patches` table.
impl From<&PatchInfo> for PatchRow {
    fn from(info: &PatchInfo) -> Self {
        PatchRow {
            patch_id: info.patch_id.clone(),
            vendor: info.vendor.clone(),
            product: info.product.clone(),
            released_at: info.released_at,
            fixes_cves: info.fixes_cves.clone(),
            artifact_sha256: info.artifact_sha256.clone(),
            signed: info.signed,
            updated_at: info.stamp.0,
            revision: info.revision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`CveInfo::epss_at`] answers as if every report were kept, whatever
    /// their order, while repeats are dropped.
    #[test]
    fn repeated_epss_scores_are_not_kept_and_change_no_answer() {
        let day = |d: i64| Timestamp(d * 86_400_000_000);
        // (day, score): repeats, a change back, and reports out of order.
        let reports = [(3, 0.1), (1, 0.1), (2, 0.1), (5, 0.2), (4, 0.1), (7, 0.1), (6, 0.2), (9, 0.1), (8, 0.1)];
        let mut info = CveInfo::new("CVE-2026-0001");
        let mut naive: Vec<(Timestamp, f64)> = Vec::new();
        for (d, score) in reports {
            info.record_epss(day(d), Some(score), None);
            let idx = naive.partition_point(|(time, _)| *time <= day(d));
            naive.insert(idx, (day(d), score));
            for t in 0..=10 {
                let expected = naive.iter().rev().find(|(time, _)| *time <= day(t)).map(|(_, score)| *score);
                let answer = info.epss_at(day(t)).0;
                // Before the first report `epss_at` falls back to the current score.
                if expected.is_some() {
                    assert_eq!(answer, expected, "day {t} after reporting day {d}");
                }
            }
        }
        // 0.1 from day 1, 0.2 from day 5, 0.1 from day 7: three changes, nine reports.
        let kept: Vec<(Timestamp, Option<f64>)> = info.epss_history.iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(kept, [(day(1), Some(0.1)), (day(5), Some(0.2)), (day(7), Some(0.1))]);
    }
}
