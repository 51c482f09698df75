//! Arrow schemas of the lake tables (CONTRACT.md §3).
//!
//! The contract's columns come first, with their contract names; the extra
//! columns after them (`updated_at`, `revision`, more context) are ours to
//! extend. Every derived table carries `revision`: a late event that changes a
//! row writes it again with a higher revision, and readers keep the latest.

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

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

    /// The Arrow schema of the table's Parquet files.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<Vec<SchemaRef>> =
            LazyLock::new(|| Table::ALL.iter().map(|table| Arc::new(Schema::new(table.fields()))).collect());
        Arc::clone(&SCHEMAS[self as usize])
    }

    fn fields(self) -> Vec<Field> {
        match self {
            Table::Assets => vec![
                text("asset_id"),
                text("environment"),
                text("criticality"),
                boolean("internet_exposed"),
                text("segment"),
                boolean("managed"),
                opt_text("hostname"),
                opt_text("os_family"),
                opt_text("os_version"),
                timestamp("updated_at"),
                revision(),
            ],
            Table::Cves => vec![
                text("cve_id"),
                opt_float("cvss_base"),
                opt_text("severity"),
                opt_float("epss"),
                boolean("kev"),
                opt_date("kev_due_date"),
                opt_timestamp("published_at"),
                opt_text("cvss_version"),
                opt_float("epss_percentile"),
                opt_date("kev_date_added"),
                opt_text("exploitation"),
                opt_text("cvss_source"),
                opt_text("kev_source"),
                opt_text("epss_source"),
                opt_date("epss_date"),
                timestamp("updated_at"),
                revision(),
            ],
            Table::Patches => vec![
                text("patch_id"),
                text("vendor"),
                text("product"),
                timestamp("released_at"),
                Field::new("fixes_cves", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false),
                opt_text("artifact_sha256"),
                Field::new("signed", DataType::Boolean, true),
                timestamp("updated_at"),
                revision(),
            ],
            Table::Exposures => vec![
                text("asset_id"),
                text("cve_id"),
                text("status"),
                opt_text("severity"),
                boolean("kev"),
                timestamp("detected_at"),
                opt_timestamp("remediated_at"),
                opt_timestamp("due_at"),
                boolean("breached"),
                opt_text("remediated_by_patch_id"),
                opt_float("scanner_cvss"),
                opt_text("severity_source"),
                timestamp("updated_at"),
                revision(),
            ],
            Table::PatchOutcomes => vec![
                text("asset_id"),
                text("patch_id"),
                opt_timestamp("released_at"),
                opt_timestamp("first_attempt_at"),
                opt_timestamp("remediated_at"),
                opt_float("time_to_patch_s"),
                int("attempts"),
                text("outcome"),
                opt_float("posture_before"),
                opt_float("posture_after"),
                opt_float("posture_reeval_latency_s"),
                Field::new("posture_regressed", DataType::Boolean, true),
                timestamp("updated_at"),
                revision(),
            ],
            Table::CanaryRollups => vec![
                text("rollout_id"),
                text("patch_id"),
                int("stages"),
                int("failed"),
                int("inconclusive"),
                float("failure_rate"),
                text("gate"),
                timestamp("last_event_at"),
                timestamp("updated_at"),
                revision(),
            ],
            Table::SegmentDrift => vec![
                timestamp("window_start"),
                text("src_segment"),
                text("dst_segment"),
                int("connections"),
                int("drift_connections"),
                float("drift_ratio"),
                timestamp("updated_at"),
                revision(),
            ],
            Table::Alerts => vec![
                text("alert_id"),
                text("rule"),
                text("severity"),
                timestamp("time"),
                text("entity_id"),
                text("ocsf"),
                Field::new("severity_id", DataType::Int32, false),
                Field::new("class_uid", DataType::Int32, false),
            ],
            Table::DeadLetters => vec![
                text("topic"),
                Field::new("partition", DataType::Int32, false),
                int("offset"),
                text("error"),
                text("payload"),
                opt_text("key"),
                opt_text("payload_encoding"),
                timestamp("failed_at"),
            ],
            Table::ClockWatermarks => vec![
                text("task"),
                timestamp("watermark"),
                opt_timestamp("previous_watermark"),
                opt_timestamp("last_event_at"),
                timestamp("moved_at"),
            ],
        }
    }
}

/// The Arrow type of every timestamp column: microseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}
fn opt_text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}
fn boolean(name: &str) -> Field {
    Field::new(name, DataType::Boolean, false)
}
fn int(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}
fn float(name: &str) -> Field {
    Field::new(name, DataType::Float64, false)
}
fn opt_float(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}
fn timestamp(name: &str) -> Field {
    Field::new(name, timestamp_type(), false)
}
fn opt_timestamp(name: &str) -> Field {
    Field::new(name, timestamp_type(), true)
}
fn opt_date(name: &str) -> Field {
    Field::new(name, DataType::Date32, true)
}
fn revision() -> Field {
    int("revision")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's columns, as CONTRACT.md §3 lists them.
    const CONTRACT: &[(&str, &[&str])] = &[
        ("assets", &["asset_id", "environment", "criticality", "internet_exposed", "segment", "managed"]),
        ("cves", &["cve_id", "cvss_base", "severity", "epss", "kev", "kev_due_date"]),
        ("patches", &["patch_id", "vendor", "product", "released_at"]),
        (
            "exposures",
            &["asset_id", "cve_id", "status", "severity", "kev", "detected_at", "remediated_at", "due_at", "breached"],
        ),
        (
            "patch_outcomes",
            &[
                "asset_id",
                "patch_id",
                "released_at",
                "first_attempt_at",
                "remediated_at",
                "time_to_patch_s",
                "attempts",
                "outcome",
                "posture_before",
                "posture_after",
                "posture_reeval_latency_s",
                "posture_regressed",
            ],
        ),
        ("canary_rollups", &["rollout_id", "patch_id", "stages", "failed", "inconclusive", "failure_rate", "gate"]),
        (
            "segment_drift",
            &["window_start", "src_segment", "dst_segment", "connections", "drift_connections", "drift_ratio"],
        ),
        ("alerts", &["alert_id", "rule", "severity", "time", "entity_id", "ocsf"]),
        ("dead_letters", &["topic", "partition", "offset", "error", "payload"]),
        ("clock_watermarks", &["task", "watermark", "previous_watermark", "last_event_at", "moved_at"]),
    ];

    #[test]
    fn every_contract_column_exists_in_order() {
        assert_eq!(CONTRACT.len(), Table::ALL.len());
        for ((name, columns), table) in CONTRACT.iter().zip(Table::ALL) {
            assert_eq!(*name, table.name());
            let schema = table.schema();
            let actual: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).take(columns.len()).collect();
            assert_eq!(&actual, columns, "table {name}");
            for key in table.key_columns() {
                assert!(schema.field_with_name(key).is_ok(), "{name} key {key}");
            }
        }
    }
}
