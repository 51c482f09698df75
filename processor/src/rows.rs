//! Rows of the lake tables, one struct per table, fields in the order of the
//! table's Arrow schema (`schemas::tables`). A row's content excludes
//! `updated_at` and `revision`, which the task sets when it emits the row.

use schemas::{Date, Timestamp};

use crate::catalog::{CveInfo, PatchInfo};

/// `assets`: the latest inventory of an asset.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct AssetRow {
    pub asset_id: String,
    pub environment: &'static str,
    pub criticality: &'static str,
    pub internet_exposed: bool,
    pub segment: String,
    pub managed: bool,
    pub hostname: Option<String>,
    pub os_family: Option<String>,
    pub os_version: Option<String>,
    pub updated_at: Timestamp,
    pub revision: i64,
}

/// `cves`: the latest intel of a CVE.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct CveRow {
    pub cve_id: String,
    pub cvss_base: f64,
    pub severity: &'static str,
    pub epss: Option<f64>,
    pub kev: bool,
    pub kev_due_date: Option<Date>,
    pub published_at: Timestamp,
    pub cvss_version: Option<String>,
    pub epss_percentile: Option<f64>,
    pub kev_date_added: Option<Date>,
    pub exploitation: Option<&'static str>,
    pub updated_at: Timestamp,
    pub revision: i64,
}

impl From<&CveInfo> for CveRow {
    fn from(info: &CveInfo) -> Self {
        let intel = &info.intel;
        CveRow {
            cve_id: intel.cve_id.clone(),
            cvss_base: intel.cvss_base,
            severity: info.severity().as_str(),
            epss: intel.epss,
            kev: intel.kev,
            kev_due_date: intel.kev_due_date,
            published_at: intel.published_at,
            cvss_version: intel.cvss_version.clone(),
            epss_percentile: intel.epss_percentile,
            kev_date_added: intel.kev_date_added,
            exploitation: intel.exploitation.map(|e| e.as_str()),
            updated_at: info.stamp.0,
            revision: info.revision,
        }
    }
}

/// `patches`: the latest release of a patch.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct PatchRow {
    pub patch_id: String,
    pub vendor: String,
    pub product: String,
    pub released_at: Timestamp,
    pub fixes_cves: Vec<String>,
    pub artifact_sha256: Option<String>,
    pub signed: Option<bool>,
    pub updated_at: Timestamp,
    pub revision: i64,
}

impl From<&PatchInfo> for PatchRow {
    fn from(info: &PatchInfo) -> Self {
        let release = &info.release;
        PatchRow {
            patch_id: release.patch_id.clone(),
            vendor: release.vendor.clone(),
            product: release.product.clone(),
            released_at: release.released_at,
            fixes_cves: release.fixes_cves.clone(),
            artifact_sha256: release.artifact_sha256.clone(),
            signed: release.signed,
            updated_at: info.stamp.0,
            revision: info.revision,
        }
    }
}

/// `exposures`: one (asset, CVE).
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct ExposureRow {
    pub asset_id: String,
    pub cve_id: String,
    pub status: &'static str,
    pub severity: Option<&'static str>,
    pub kev: bool,
    pub detected_at: Timestamp,
    pub remediated_at: Option<Timestamp>,
    pub due_at: Option<Timestamp>,
    pub breached: bool,
    pub remediated_by_patch_id: Option<String>,
    pub updated_at: Timestamp,
    pub revision: i64,
}

/// `patch_outcomes`: one (asset, patch) with any deployment event.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct OutcomeRow {
    pub asset_id: String,
    pub patch_id: String,
    pub released_at: Option<Timestamp>,
    pub first_attempt_at: Option<Timestamp>,
    pub remediated_at: Option<Timestamp>,
    pub time_to_patch_s: Option<f64>,
    pub attempts: i64,
    pub outcome: &'static str,
    pub posture_before: Option<f64>,
    pub posture_after: Option<f64>,
    pub posture_reeval_latency_s: Option<f64>,
    pub posture_regressed: Option<bool>,
    pub updated_at: Timestamp,
    pub revision: i64,
}

/// `canary_rollups`: one rollout.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct RolloutRow {
    pub rollout_id: String,
    pub patch_id: String,
    pub stages: i64,
    pub failed: i64,
    pub inconclusive: i64,
    pub failure_rate: f64,
    pub gate: &'static str,
    pub last_event_at: Timestamp,
    pub updated_at: Timestamp,
    pub revision: i64,
}

/// `segment_drift`: one (window, source segment, destination segment).
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct DriftRow {
    pub window_start: Timestamp,
    pub src_segment: String,
    pub dst_segment: String,
    pub connections: i64,
    pub drift_connections: i64,
    pub drift_ratio: f64,
    pub updated_at: Timestamp,
    pub revision: i64,
}

/// `alerts`: one alert, emitted once.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct AlertRow {
    pub alert_id: String,
    pub rule: &'static str,
    pub severity: &'static str,
    pub time: Timestamp,
    pub entity_id: String,
    pub ocsf: String,
    pub severity_id: i32,
    pub class_uid: i32,
}

/// `dead_letters`: one message that failed to decode or validate.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct DeadLetterRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: String,
    pub payload: String,
    pub key: Option<String>,
    pub payload_encoding: Option<&'static str>,
    pub failed_at: Timestamp,
}

/// A request to the posture service and policy engine to re-evaluate a
/// device after a verified patch (DOMAIN.md "Re-evaluation requests").
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct Reevaluation {
    pub asset_id: String,
    pub patch_id: String,
    pub deployment_id: String,
    pub remediated_at: Timestamp,
    pub cves: Vec<String>,
}

/// Everything a task emits for one epoch.
#[derive(Clone, Debug, Default, PartialEq)]
#[allow(missing_docs)]
pub struct EpochRows {
    pub assets: Vec<AssetRow>,
    pub cves: Vec<CveRow>,
    pub patches: Vec<PatchRow>,
    pub exposures: Vec<ExposureRow>,
    pub patch_outcomes: Vec<OutcomeRow>,
    pub canary_rollups: Vec<RolloutRow>,
    pub segment_drift: Vec<DriftRow>,
    pub alerts: Vec<AlertRow>,
    pub dead_letters: Vec<DeadLetterRow>,
    pub reevaluations: Vec<Reevaluation>,
}

impl EpochRows {
    /// Rows of every table together.
    pub fn n_rows(&self) -> usize {
        self.assets.len()
            + self.cves.len()
            + self.patches.len()
            + self.exposures.len()
            + self.patch_outcomes.len()
            + self.canary_rollups.len()
            + self.segment_drift.len()
            + self.alerts.len()
            + self.dead_letters.len()
    }
}
