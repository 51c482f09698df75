//! The intel catalog: per CVE, what each feed (`vuln.intel.v1`,
//! `vuln.kev.v1`, `vuln.epss.v1`) said of it and when, merged; per patch,
//! its latest `patch.release.v1`. Every task consults it. A check about an
//! instant reads the catalog as of that instant ([`CveInfo::at`], DOMAIN.md
//! "The catalog at an instant"), a row reads its latest facts. "Latest" is
//! by event time, arrival order breaking ties (EPSS: by score date first),
//! so the catalog does not depend on delivery order.

use rustc_hash::FxHashMap;
use schemas::severity::Severity;
use schemas::{Date, Exploitation, PatchRelease, Timestamp, VulnEpss, VulnIntel, VulnKev};
use serde::{Deserialize, Serialize};

use crate::Stamp;
use crate::rows::{CveRow, PatchRow};

/// What the catalog knows of a CVE: every record each feed gave of it, by
/// stamp, merged by [`CveFacts`] as of an instant (DOMAIN.md "One CVE,
/// several feeds"). Each feed has its own records, so a KEV or EPSS record
/// never erases NVD's CVSS, and NVD never erases KEV's due date.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CveInfo {
    /// The CVE.
    pub cve_id: String,
    /// Every `vuln.intel.v1` (NVD, or an organisation's own catalog), by stamp.
    intel: Vec<IntelRecord>,
    /// Every `vuln.kev.v1`, by stamp.
    kev: Vec<KevRecord>,
    /// The `vuln.epss.v1` reports, by stamp, with non-decreasing score
    /// dates: a report that an earlier one outdates (a later score date)
    /// can be the latest at no instant, and one repeating the report before
    /// it (same date, score and source) changes no answer; neither is kept.
    epss: Vec<EpssRecord>,
    /// Times the `cves` row of this CVE was emitted.
    pub revision: i64,
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

/// What the feeds had stated of a CVE by an instant: each feed's latest
/// record at or before it (EPSS: the latest score date), merged.
#[derive(Clone, Copy, Debug)]
pub struct CveFacts<'a> {
    /// The latest `vuln.intel.v1`.
    pub intel: Option<&'a IntelRecord>,
    /// The latest `vuln.kev.v1`.
    pub kev_entry: Option<&'a KevRecord>,
    /// The `vuln.epss.v1` with the latest score date.
    pub epss_score: Option<&'a EpssRecord>,
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

/// The index of the last of `items` (sorted by stamp) reported at or before `instant`.
fn last_at<T>(items: &[T], stamp: impl Fn(&T) -> Stamp, instant: Timestamp) -> Option<usize> {
    items.partition_point(|item| stamp(item).0 <= instant).checked_sub(1)
}

/// Keeps, of `items` sorted by stamp, the last reported at or before
/// `cutoff` and all after: every answer as of `cutoff` or later is unchanged.
fn forget_before<T>(items: &mut Vec<T>, stamp: impl Fn(&T) -> Stamp, cutoff: Timestamp) {
    if let Some(last) = last_at(items, stamp, cutoff)
        && last > 0
    {
        items.drain(..last);
    }
}

impl CveInfo {
    fn new(cve_id: &str) -> Self {
        CveInfo { cve_id: cve_id.to_owned(), intel: Vec::new(), kev: Vec::new(), epss: Vec::new(), revision: 0 }
    }

    /// The catalog's facts about the CVE as of `instant`: only records
    /// reported at or before it.
    pub fn at(&self, instant: Timestamp) -> CveFacts<'_> {
        let intel = last_at(&self.intel, |r| r.stamp, instant).map(|i| &self.intel[i]);
        let kev_entry = last_at(&self.kev, |r| r.stamp, instant).map(|i| &self.kev[i]);
        let epss_score = last_at(&self.epss, |r| r.stamp, instant).map(|i| &self.epss[i]);
        CveFacts { intel, kev_entry, epss_score }
    }

    /// The latest facts, whatever their time: what the `cves` and
    /// `exposures` rows show.
    pub fn latest(&self) -> CveFacts<'_> {
        CveFacts { intel: self.intel.last(), kev_entry: self.kev.last(), epss_score: self.epss.last() }
    }

    /// Whether any feed has ever put the CVE in KEV: a check of KEV
    /// exposures about some instant may concern it.
    pub fn ever_kev(&self) -> bool {
        !self.kev.is_empty() || self.intel.iter().any(|record| record.kev)
    }

    /// The times from which the facts a deadline depends on (CVSS, KEV
    /// status and due date) may change, sorted: each intel and KEV report's.
    pub fn deadline_changes(&self) -> Vec<Timestamp> {
        let mut times: Vec<Timestamp> =
            self.intel.iter().map(|r| r.stamp.0).chain(self.kev.iter().map(|r| r.stamp.0)).collect();
        times.sort_unstable();
        times.dedup();
        times
    }

    /// Retention: forgets the records no question from `cutoff` on can reach.
    fn forget_before(&mut self, cutoff: Timestamp) {
        forget_before(&mut self.intel, |r| r.stamp, cutoff);
        forget_before(&mut self.kev, |r| r.stamp, cutoff);
        forget_before(&mut self.epss, |r| r.stamp, cutoff);
    }

    /// Inserts an EPSS report in order (see [`CveInfo::epss`]); false if it
    /// changes no answer at any instant.
    fn insert_epss(&mut self, record: EpssRecord) -> bool {
        let idx = self.epss.partition_point(|known| known.stamp <= record.stamp);
        if let Some(before) = idx.checked_sub(1).map(|i| &self.epss[i])
            && (before.score_date > record.score_date
                || (before.score_date, before.epss.to_bits(), before.percentile.map(f64::to_bits), &before.source)
                    == (record.score_date, record.epss.to_bits(), record.percentile.map(f64::to_bits), &record.source))
        {
            return false;
        }
        // Reports after it with an earlier score date are now outdated at every instant.
        let outdated = self.epss[idx..].iter().take_while(|later| later.score_date < record.score_date).count();
        self.epss.splice(idx..idx + outdated, [record]);
        true
    }

    /// What the `cves` row shows: a change writes a new revision.
    fn content(&self) -> Content {
        let latest = self.latest();
        let (kev_added, kev_due) = latest.kev_dates();
        let (epss, percentile) = latest.epss();
        let (cvss_source, kev_source, epss_source) = latest.sources();
        (
            latest.published_at(),
            latest.cvss_base().map(f64::to_bits),
            latest.cvss_version().map(str::to_owned),
            epss.map(f64::to_bits),
            percentile.map(f64::to_bits),
            latest.kev(),
            kev_added,
            kev_due,
            latest.exploitation(),
            (cvss_source.map(str::to_owned), kev_source.map(str::to_owned), epss_source.map(str::to_owned)),
            latest.epss_score.map(|e| e.score_date),
        )
    }

    /// When the catalog last heard of the CVE, from any feed.
    pub fn updated_at(&self) -> Timestamp {
        let latest = self.latest();
        [latest.intel.map(|r| r.stamp.0), latest.kev_entry.map(|r| r.stamp.0), latest.epss_score.map(|r| r.stamp.0)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(Timestamp(i64::MIN))
    }
}

impl CveFacts<'_> {
    /// The CVSS base score: the latest intel's; none without intel.
    pub fn cvss_base(&self) -> Option<f64> {
        self.intel.map(|intel| intel.cvss_base)
    }

    /// The CVSS version of [`CveFacts::cvss_base`].
    pub fn cvss_version(&self) -> Option<&str> {
        self.intel.and_then(|intel| intel.cvss_version.as_deref())
    }

    /// Severity band of the CVSS score; none without one.
    pub fn severity(&self) -> Option<Severity> {
        self.cvss_base().map(Severity::from_cvss)
    }

    /// Publication time, from the latest intel.
    pub fn published_at(&self) -> Option<Timestamp> {
        self.intel.map(|intel| intel.published_at)
    }

    /// In KEV: by the KEV feed, else as the latest intel says.
    pub fn kev(&self) -> bool {
        self.kev_entry.is_some() || self.intel.is_some_and(|intel| intel.kev)
    }

    /// The KEV dates (added, due): the KEV feed's, else the latest intel's.
    pub fn kev_dates(&self) -> (Option<Date>, Option<Date>) {
        match (self.kev_entry, self.intel) {
            (Some(kev), _) => (Some(kev.date_added), kev.due_date),
            (None, Some(intel)) if intel.kev => (intel.kev_date_added, intel.kev_due_date),
            _ => (None, None),
        }
    }

    /// The KEV due date, when the CVE is in KEV and has one.
    pub fn kev_due(&self) -> Option<Date> {
        self.kev_dates().1
    }

    /// What a deadline depends on: severity, KEV status and due date.
    fn deadline_facts(&self) -> (Option<Severity>, bool, Option<Date>) {
        (self.severity(), self.kev(), self.kev_due())
    }

    /// EPSS score and percentile: the EPSS feed's latest score, else the
    /// latest intel's; none before any feed states one.
    pub fn epss(&self) -> (Option<f64>, Option<f64>) {
        match (self.epss_score, self.intel) {
            (Some(epss), _) => (Some(epss.epss), epss.percentile),
            (None, Some(intel)) => (intel.epss, intel.epss_percentile),
            (None, None) => (None, None),
        }
    }

    /// Known exploitation, from the latest intel.
    pub fn exploitation(&self) -> Option<Exploitation> {
        self.intel.and_then(|intel| intel.exploitation)
    }

    /// The `source` of the event each merged value came from: (CVSS, KEV, EPSS).
    pub fn sources(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        let intel = self.intel.map(|intel| intel.source.as_str());
        let kev = match (self.kev_entry, self.intel) {
            (Some(kev), _) => Some(kev.source.as_str()),
            (None, Some(i)) if i.kev => intel,
            _ => None,
        };
        let epss = match (self.epss_score, self.intel) {
            (Some(epss), _) => Some(epss.source.as_str()),
            (None, Some(i)) if i.epss.is_some() => intel,
            _ => None,
        };
        (intel, kev, epss)
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
    /// A CVE's severity, KEV status or KEV due date may have changed (or it
    /// appeared), as of `at` on: the time of the report that changed it.
    Cve {
        /// The CVE.
        cve_id: String,
        /// From when the answers may differ.
        at: Timestamp,
    },
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
    /// Retention (`processor.settled_retention_days`): forgets the records
    /// no question from `cutoff` on can reach.
    pub fn forget_before(&mut self, cutoff: Timestamp) {
        for info in self.cves.values_mut() {
            info.forget_before(cutoff);
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
            let idx = info.intel.partition_point(|known| known.stamp <= record.stamp);
            info.intel.insert(idx, record);
            true
        })
    }

    /// Applies a `vuln.kev.v1` from `source`: only the CVE's KEV fields.
    pub fn apply_kev(&mut self, stamp: Stamp, source: &str, kev: &VulnKev) -> Option<CatalogChange> {
        let record = KevRecord { stamp, source: source.to_owned(), date_added: kev.date_added, due_date: kev.due_date };
        self.update(stamp, &kev.cve_id, |info| {
            let idx = info.kev.partition_point(|known| known.stamp <= record.stamp);
            info.kev.insert(idx, record);
            true
        })
    }

    /// Applies a `vuln.epss.v1` from `source`: only the CVE's EPSS fields;
    /// the score with the latest score date wins (then the latest event).
    /// A score is known from its event's time on, as an intel record's is.
    /// EPSS changes no deadline, so it returns no change.
    pub fn apply_epss(&mut self, stamp: Stamp, source: &str, epss: &VulnEpss) -> Option<CatalogChange> {
        let record = EpssRecord {
            stamp,
            source: source.to_owned(),
            score_date: epss.score_date,
            epss: epss.epss,
            percentile: epss.percentile,
        };
        self.update(stamp, &epss.cve_id, |info| info.insert_epss(record))
    }

    /// Lets `apply` insert one record of a CVE (it returns whether it kept
    /// it); marks the `cves` row dirty when its content changed, and
    /// returns the change when the deadline facts differ at some instant.
    fn update(
        &mut self,
        stamp: Stamp,
        cve_id: &str,
        apply: impl FnOnce(&mut CveInfo) -> bool,
    ) -> Option<CatalogChange> {
        self.max_time = self.max_time.max(Some(stamp.0));
        let info = self.cves.entry(cve_id.to_owned()).or_insert_with(|| CveInfo::new(cve_id));
        let known = !(info.intel.is_empty() && info.kev.is_empty() && info.epss.is_empty());
        let content = info.content();
        let deadlines = info.at(stamp.0).deadline_facts();
        if !apply(info) {
            return None;
        }
        if !known || info.content() != content {
            self.dirty_cves.push(cve_id.to_owned());
        }
        // The answers change from the record's time on (until the next record
        // of its feed) exactly when the facts as of that time do; a late
        // record may change them while the latest facts stay.
        (!known || info.at(stamp.0).deadline_facts() != deadlines)
            .then(|| CatalogChange::Cve { cve_id: cve_id.to_owned(), at: stamp.0 })
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
        let latest = info.latest();
        let (kev_date_added, kev_due_date) = latest.kev_dates();
        let (epss, epss_percentile) = latest.epss();
        let (cvss_source, kev_source, epss_source) = latest.sources();
        CveRow {
            cve_id: info.cve_id.clone(),
            cvss_base: latest.cvss_base(),
            severity: latest.severity().map(|s| s.as_str()),
            epss,
            kev: latest.kev(),
            kev_due_date,
            published_at: latest.published_at(),
            cvss_version: latest.cvss_version().map(str::to_owned),
            epss_percentile,
            kev_date_added,
            exploitation: latest.exploitation().map(|e| e.as_str()),
            cvss_source: cvss_source.map(str::to_owned),
            kev_source: kev_source.map(str::to_owned),
            epss_source: epss_source.map(str::to_owned),
            epss_date: latest.epss_score.map(|e| e.score_date),
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

    fn day(d: i64) -> Timestamp {
        Timestamp(d * 86_400_000_000)
    }

    fn report(d: i64, arrival: u64, score_date: i64, epss: f64) -> EpssRecord {
        let score_date = Date::parse("2026-01-01").expect("a date").add_days(score_date as i32);
        EpssRecord { stamp: (day(d), arrival), source: "urn:first".to_owned(), score_date, epss, percentile: None }
    }

    /// As of any instant, the EPSS is the report with the latest score date
    /// among those reported by then, whatever their order, while outdated
    /// reports and repeats are not kept.
    #[test]
    fn epss_as_of_an_instant_is_the_latest_score_date_reported_by_then() {
        // (day reported, score date, score): repeats, an older score date
        // reported later, reports out of order.
        let reports = [(3, 3, 0.1), (1, 1, 0.1), (2, 2, 0.1), (5, 5, 0.2), (4, 4, 0.1), (6, 2, 0.9), (7, 7, 0.1)];
        let mut info = CveInfo::new("CVE-2026-0001");
        let mut all: Vec<EpssRecord> = Vec::new();
        for (arrival, &(d, date, score)) in reports.iter().enumerate() {
            let record = report(d, arrival as u64, date, score);
            info.insert_epss(record.clone());
            all.push(record);
            for t in 0..=8 {
                let expected =
                    all.iter().filter(|r| r.stamp.0 <= day(t)).max_by_key(|r| (r.score_date, r.stamp)).map(|r| r.epss);
                assert_eq!(info.at(day(t)).epss().0, expected, "day {t} after report {arrival}");
            }
        }
        assert_eq!(info.at(day(0)).epss(), (None, None), "no EPSS before any feed states one");
        // The report of day 6 (score date 2) is outdated by the earlier ones;
        // the repeats of 0.1 with later dates are kept (a late report of a date between may come).
        assert_eq!(info.epss.len(), 6);
    }

    #[test]
    fn a_late_intel_record_is_known_from_its_time_only() {
        let mut catalog = Catalog::default();
        let intel = |cvss: f64| VulnIntel {
            cve_id: "CVE-2026-0001".to_owned(),
            published_at: day(0),
            cvss_base: cvss,
            cvss_version: None,
            epss: None,
            epss_percentile: None,
            kev: false,
            kev_date_added: None,
            kev_due_date: None,
            exploitation: None,
            automatable: None,
            technical_impact: None,
        };
        assert!(catalog.apply_intel((day(5), 0), "nvd", &intel(9.8)).is_some());
        let change = catalog.apply_intel((day(2), 1), "nvd", &intel(5.0));
        assert_eq!(change, Some(CatalogChange::Cve { cve_id: "CVE-2026-0001".to_owned(), at: day(2) }));
        let info = catalog.cve("CVE-2026-0001").expect("the CVE");
        assert_eq!(info.latest().cvss_base(), Some(9.8));
        assert_eq!(info.at(day(3)).cvss_base(), Some(5.0));
        assert_eq!(info.at(day(1)).cvss_base(), None);
        assert_eq!(info.deadline_changes(), [day(2), day(5)]);
    }
}
