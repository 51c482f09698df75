//! Rows of the lake tables, one struct per table, declared through
//! [`lake_row!`]: a struct's fields, in order, are its table's columns
//! (`crate::columns` derives the Arrow schema and the encoder from them).
//! A row's content excludes `updated_at` and `revision`, which the task
//! sets when it emits the row.

use std::hash::{Hash, Hasher};

use rustc_hash::FxHasher;
use schemas::{Date, Table, Timestamp};

use crate::columns::lake_row;

lake_row! {
    /// `assets`: the latest inventory of an asset.
    #[derive(Clone, Debug, PartialEq)]
    #[allow(missing_docs)]
    pub struct AssetRow in Table::Assets, versioned {
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
}

lake_row! {
    /// `cves`: what the feeds say of a CVE, merged (DOMAIN.md "One CVE, several feeds").
    #[derive(Clone, Debug, PartialEq)]
    #[allow(missing_docs)]
    pub struct CveRow in Table::Cves {
        pub cve_id: String,
        pub cvss_base: Option<f64>,
        pub severity: Option<&'static str>,
        pub epss: Option<f64>,
        pub kev: bool,
        pub kev_due_date: Option<Date>,
        pub published_at: Option<Timestamp>,
        pub cvss_version: Option<String>,
        pub epss_percentile: Option<f64>,
        pub kev_date_added: Option<Date>,
        pub exploitation: Option<&'static str>,
        /// The `source` of the events the CVSS, KEV and EPSS values came from.
        pub cvss_source: Option<String>,
        pub kev_source: Option<String>,
        pub epss_source: Option<String>,
        /// The day the EPSS feed's score is for.
        pub epss_date: Option<Date>,
        pub updated_at: Timestamp,
        pub revision: i64,
    }
}

lake_row! {
    /// `patches`: the latest release of a patch.
    #[derive(Clone, Debug, PartialEq)]
    #[allow(missing_docs)]
    pub struct PatchRow in Table::Patches {
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
}

lake_row! {
    /// `exposures`: one (asset, CVE).
    #[derive(Clone, Debug, PartialEq)]
    #[allow(missing_docs)]
    pub struct ExposureRow in Table::Exposures, versioned {
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
        /// The highest CVSS the exposure's scanners reported.
        pub scanner_cvss: Option<f64>,
        /// Where `severity` comes from: `catalog` (its CVSS) or `scanner`.
        pub severity_source: Option<&'static str>,
        pub updated_at: Timestamp,
        pub revision: i64,
    }
}

lake_row! {
    /// `patch_outcomes`: one (asset, patch) with any deployment event.
    #[derive(Clone, Debug, PartialEq)]
    #[allow(missing_docs)]
    pub struct OutcomeRow in Table::PatchOutcomes, versioned {
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
}

lake_row! {
    /// `canary_rollups`: one rollout.
    #[derive(Clone, Debug, PartialEq)]
    #[allow(missing_docs)]
    pub struct RolloutRow in Table::CanaryRollups, versioned {
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
}

lake_row! {
    /// `segment_drift`: one (window, source segment, destination segment).
    #[derive(Clone, Debug, PartialEq)]
    #[allow(missing_docs)]
    pub struct DriftRow in Table::SegmentDrift, versioned {
        pub window_start: Timestamp,
        pub src_segment: String,
        pub dst_segment: String,
        pub connections: i64,
        pub drift_connections: i64,
        pub drift_ratio: f64,
        pub updated_at: Timestamp,
        pub revision: i64,
    }
}

lake_row! {
    /// `alerts`: one alert, emitted once.
    #[derive(Clone, Debug, PartialEq)]
    #[allow(missing_docs)]
    pub struct AlertRow in Table::Alerts {
        pub alert_id: String,
        pub rule: &'static str,
        pub severity: &'static str,
        pub time: Timestamp,
        pub entity_id: String,
        pub ocsf: String,
        pub severity_id: i32,
        pub class_uid: i32,
    }
}

lake_row! {
    /// `clock_watermarks`: a quiet task's watermark moved by the wall clock in
    /// `run` (DESIGN.md "Event time"), so an auditor can tell which deadlines
    /// fired without an event behind them.
    #[derive(Clone, Debug, PartialEq)]
    #[allow(missing_docs)]
    pub struct ClockMoveRow in Table::ClockWatermarks {
        /// The task, as `<input topic>-<partition>` (`assets-0`).
        pub task: String,
        pub watermark: Timestamp,
        pub previous_watermark: Option<Timestamp>,
        /// The largest event time the task had seen.
        pub last_event_at: Option<Timestamp>,
        /// The wall clock when it moved.
        pub moved_at: Timestamp,
    }
}

/// `dead_letters`: one message that failed to decode or validate (the
/// wire type lives in `schemas`: ingest builds it from a raw message).
pub use schemas::DeadLetter as DeadLetterRow;

lake_row!(impl DeadLetterRow in Table::DeadLetters {
    topic: String,
    partition: i32,
    offset: i64,
    error: String,
    payload: String,
    key: Option<String>,
    payload_encoding: Option<&'static str>,
    failed_at: Timestamp,
});

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
    pub clock_watermarks: Vec<ClockMoveRow>,
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
            + self.clock_watermarks.len()
    }
}

/// Which output topic an [`OutboxMessage`] goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// OCSF findings for SIEMs (`patchtrail.alerts`), keyed by alert id.
    Alert,
    /// Re-evaluation requests (`patchtrail.reevaluations`), keyed by asset id.
    Reevaluation,
    /// Dead letters (`patchtrail.dlq`), keyed by the original key.
    DeadLetter,
}

/// A message an epoch publishes after its commit. Kept with the commit, so a
/// crash between the commit and the publication re-sends it (at least once).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboxMessage {
    /// Its topic.
    pub kind: OutputKind,
    /// Its key.
    pub key: Option<String>,
    /// Its value: JSON.
    pub value: String,
}

impl EpochRows {
    /// What the epoch publishes: its alerts as OCSF JSON, its re-evaluation
    /// requests, and its dead letters with the envelope of CONTRACT.md §2.
    pub fn outbox(&self) -> Vec<OutboxMessage> {
        let mut out = Vec::with_capacity(self.alerts.len() + self.reevaluations.len() + self.dead_letters.len());
        out.extend(self.alerts.iter().map(|alert| OutboxMessage {
            kind: OutputKind::Alert,
            key: Some(alert.alert_id.clone()),
            value: alert.ocsf.clone(),
        }));
        out.extend(self.reevaluations.iter().map(|request| {
            OutboxMessage {
                kind: OutputKind::Reevaluation,
                key: Some(request.asset_id.clone()),
                value: serde_json::json!({
                    "asset_id": request.asset_id,
                    "patch_id": request.patch_id,
                    "deployment_id": request.deployment_id,
                    "remediated_at": request.remediated_at.to_string(),
                    "cves": request.cves,
                })
                .to_string(),
            }
        }));
        out.extend(self.dead_letters.iter().map(|letter| OutboxMessage {
            kind: OutputKind::DeadLetter,
            key: letter.key.clone(),
            value: letter.to_json(),
        }));
        out
    }
}

/// A row whose content (everything but `updated_at` and `revision`) can be
/// compared with the last committed version through a hash, so tasks need not
/// keep committed rows in memory or in snapshots.
pub(crate) trait Versioned {
    fn content_hash(&self) -> u64;
    fn set_revision(&mut self, revision: i64);
}

/// Feeds one field into a content hash (floats by their bits).
trait HashField {
    fn hash_field(&self, state: &mut FxHasher);
}

macro_rules! hash_by_value {
    ($($t:ty),+) => { $(impl HashField for $t { fn hash_field(&self, state: &mut FxHasher) { self.hash(state) } })+ };
}
hash_by_value!(String, &'static str, bool, i64, i32, Timestamp, Date, Vec<String>);

impl HashField for f64 {
    fn hash_field(&self, state: &mut FxHasher) {
        self.to_bits().hash(state)
    }
}

impl<T: HashField> HashField for Option<T> {
    fn hash_field(&self, state: &mut FxHasher) {
        match self {
            None => 0u8.hash(state),
            Some(value) => {
                1u8.hash(state);
                value.hash_field(state);
            }
        }
    }
}

/// Returns `row` with the next revision if its content differs from the last
/// committed one (recorded by its hash), else `None`.
pub(crate) fn next_revision<R: Versioned>(committed: &mut Option<u64>, revision: &mut i64, mut row: R) -> Option<R> {
    let hash = row.content_hash();
    if *committed == Some(hash) {
        return None;
    }
    *committed = Some(hash);
    *revision += 1;
    row.set_revision(*revision);
    Some(row)
}
