//! The lake tables (CONTRACT.md §3): their names and keys. Their columns
//! are declared once, with the row structs (`processor::rows`).
//!
//! The contract's columns come first, with their contract names; the extra
//! columns after them (`updated_at`, `revision`, more context) are ours to
//! extend. Every derived table carries `revision`: a late event that changes a
//! row writes it again with a higher revision, and readers keep the latest.

/// A lake table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// One row per asset: its latest inventory.
    Assets,
    /// One row per CVE: its latest intel.
    Cves,
    /// One row per patch: its latest release.
    Patches,
    /// One row per (asset, CVE).
    Exposures,
    /// One row per (asset, patch) with at least one deployment.
    PatchOutcomes,
    /// One row per rollout.
    CanaryRollups,
    /// One row per (window, source segment, destination segment).
    SegmentDrift,
    /// One row per alert.
    Alerts,
    /// One row per message that failed to decode or validate.
    DeadLetters,
    /// One row per move of a quiet task's watermark by the wall clock (`run`).
    ClockWatermarks,
}

impl Table {
    /// Every table, in contract order.
    pub const ALL: [Table; 10] = [
        Table::Assets,
        Table::Cves,
        Table::Patches,
        Table::Exposures,
        Table::PatchOutcomes,
        Table::CanaryRollups,
        Table::SegmentDrift,
        Table::Alerts,
        Table::DeadLetters,
        Table::ClockWatermarks,
    ];

    /// The table's name in SQL and in the lake's directory tree.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Assets => "assets",
            Table::Cves => "cves",
            Table::Patches => "patches",
            Table::Exposures => "exposures",
            Table::PatchOutcomes => "patch_outcomes",
            Table::CanaryRollups => "canary_rollups",
            Table::SegmentDrift => "segment_drift",
            Table::Alerts => "alerts",
            Table::DeadLetters => "dead_letters",
            Table::ClockWatermarks => "clock_watermarks",
        }
    }

    /// Whether the table's rows are revised (it has a key, and it is not
    /// `alerts`: an alert is sent once, its row never revised). A revised
    /// table is two Delta tables: `<table>` with each key's current row,
    /// `<table>_history` with every revision.
    pub const fn is_revised(self) -> bool {
        !self.key_columns().is_empty() && !matches!(self, Table::Alerts)
    }

    /// The columns that identify a row; rows with equal keys are revisions of
    /// one another. Empty for append-only tables.
    pub const fn key_columns(self) -> &'static [&'static str] {
        match self {
            Table::Assets => &["asset_id"],
            Table::Cves => &["cve_id"],
            Table::Patches => &["patch_id"],
            Table::Exposures => &["asset_id", "cve_id"],
            Table::PatchOutcomes => &["asset_id", "patch_id"],
            Table::CanaryRollups => &["rollout_id"],
            Table::SegmentDrift => &["window_start", "src_segment", "dst_segment"],
            Table::Alerts => &["alert_id"],
            Table::DeadLetters | Table::ClockWatermarks => &[],
        }
    }
}
