//! The lake tables' columns, declared once. Each row struct of
//! [`crate::rows`] is declared through [`lake_row!`], which derives from its
//! fields, in their order, both the table's Arrow schema
//! ([`TableSchema::schema`]) and the encoder of its rows
//! ([`Columns::columns`]): a new column is one new field. A field's Rust
//! type says its Arrow type and whether it may be null ([`Column`]).

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, ListBuilder, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use schemas::{Date, Table, Timestamp};

use crate::rows::*;

/// A Rust type a lake column holds: its Arrow type, nullability, encoder.
pub trait Column: Sized {
    /// Whether the column may hold nulls (`Option` fields).
    const NULLABLE: bool = false;
    /// The column's Arrow type.
    fn data_type() -> DataType;
    /// The values of one column, in row order.
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef
    where
        Self: 'a;
}

/// A row struct declared by [`lake_row!`]: its table, fields and encoder.
pub trait Columns: Sized {
    /// The table its rows go to.
    const TABLE: Table;
    /// The table's Arrow fields, in column order.
    fn fields() -> Vec<Field>;
    /// The rows as Arrow columns, in the order of [`Columns::fields`].
    fn columns(rows: &[Self]) -> Vec<ArrayRef>;
}

/// The Arrow field of a column named `name` holding `T`.
pub fn field<T: Column>(name: &str) -> Field {
    Field::new(name, T::data_type(), T::NULLABLE)
}

/// Declares a lake row struct (the first form) and derives its
/// [`Columns`]; with `versioned`, also its content hash (every field but
/// `updated_at` and `revision`, see `rows::Versioned`). The second form
/// derives the columns of a struct declared elsewhere (the dead letter,
/// which `schemas` owns), with its fields in order (a field missing or of
/// another type does not compile). Expanded in `rows.rs`, whose
/// `Versioned`, `HashField` and `FxHasher` the versioned form names.
macro_rules! lake_row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $table:path $(, $versioned:ident)? {
            $( $(#[$field_meta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }
        $crate::columns::lake_row!(impl $name in $table { $( $field: $ty, )* });
        $crate::columns::lake_row!(@hash [$($versioned)?] $name { $( $field )* });
    };
    (impl $name:ident in $table:path { $( $field:ident : $ty:ty, )* }) => {
        impl $crate::columns::Columns for $name {
            const TABLE: schemas::Table = $table;
            fn fields() -> Vec<arrow::datatypes::Field> {
                vec![$( $crate::columns::field::<$ty>(stringify!($field)), )*]
            }
            fn columns(rows: &[Self]) -> Vec<arrow::array::ArrayRef> {
                vec![$( <$ty as $crate::columns::Column>::encode(rows.iter().map(|row| &row.$field)), )*]
            }
        }
    };
    (@hash [] $name:ident { $( $field:ident )* }) => {};
    (@hash [versioned] $name:ident { $( $field:ident )* }) => {
        impl Versioned for $name {
            fn content_hash(&self) -> u64 {
                let mut state = FxHasher::default();
                // Constant conditions: the two fields a task sets are left out at compile time.
                $( if !matches!(stringify!($field), "updated_at" | "revision") {
                    self.$field.hash_field(&mut state);
                } )*
                state.finish()
            }
            fn set_revision(&mut self, revision: i64) {
                self.revision = revision;
            }
        }
    };
}
pub(crate) use lake_row;

/// The Arrow schema of a table's Parquet files, derived from its row struct.
pub trait TableSchema {
    /// The schema (built once per process).
    fn schema(self) -> SchemaRef;
}

impl TableSchema for Table {
    fn schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<Vec<SchemaRef>> =
            LazyLock::new(|| Table::ALL.iter().map(|table| Arc::new(Schema::new(fields(*table)))).collect());
        Arc::clone(&SCHEMAS[self as usize])
    }
}

fn fields(table: Table) -> Vec<Field> {
    match table {
        Table::Assets => AssetRow::fields(),
        Table::Cves => CveRow::fields(),
        Table::Patches => PatchRow::fields(),
        Table::Exposures => ExposureRow::fields(),
        Table::PatchOutcomes => OutcomeRow::fields(),
        Table::CanaryRollups => RolloutRow::fields(),
        Table::SegmentDrift => DriftRow::fields(),
        Table::Alerts => AlertRow::fields(),
        Table::DeadLetters => DeadLetterRow::fields(),
        Table::ClockWatermarks => ClockMoveRow::fields(),
    }
}

/// The Arrow type of every timestamp column: microseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl Column for String {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(values.map(String::as_str)))
    }
}

impl Column for &'static str {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(values.copied()))
    }
}

impl Column for Option<String> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.map(Option::as_deref).collect::<StringArray>())
    }
}

impl Column for Option<&'static str> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.copied().collect::<StringArray>())
    }
}

impl Column for bool {
    fn data_type() -> DataType {
        DataType::Boolean
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.map(|value| Some(*value)).collect::<BooleanArray>())
    }
}

impl Column for Option<bool> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Boolean
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.copied().collect::<BooleanArray>())
    }
}

impl Column for i64 {
    fn data_type() -> DataType {
        DataType::Int64
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(values.copied()))
    }
}

impl Column for i32 {
    fn data_type() -> DataType {
        DataType::Int32
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(values.copied()))
    }
}

impl Column for f64 {
    fn data_type() -> DataType {
        DataType::Float64
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(values.copied()))
    }
}

impl Column for Option<f64> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Float64
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.copied().collect::<Float64Array>())
    }
}

impl Column for Timestamp {
    fn data_type() -> DataType {
        timestamp_type()
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from_iter_values(values.map(|t| t.micros())).with_timezone("UTC"))
    }
}

impl Column for Option<Timestamp> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        timestamp_type()
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        let micros = values.map(|t| t.map(Timestamp::micros));
        Arc::new(micros.collect::<TimestampMicrosecondArray>().with_timezone("UTC"))
    }
}

impl Column for Option<Date> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Date32
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(values.map(|d| d.map(|d| d.0)).collect::<Date32Array>())
    }
}

/// A list of strings, never null itself (`patches.fixes_cves`).
impl Column for Vec<String> {
    fn data_type() -> DataType {
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
    }
    fn encode<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef {
        let mut lists = ListBuilder::new(StringBuilder::new());
        for list in values {
            for value in list {
                lists.values().append_value(value);
            }
            lists.append(true);
        }
        Arc::new(lists.finish())
    }
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

    fn exposure() -> ExposureRow {
        ExposureRow {
            asset_id: "a".to_owned(),
            cve_id: "CVE-2026-0001".to_owned(),
            status: "open",
            severity: Some("high"),
            kev: false,
            detected_at: Timestamp(1),
            remediated_at: None,
            due_at: None,
            breached: false,
            remediated_by_patch_id: None,
            scanner_cvss: Some(7.5),
            severity_source: Some("scanner"),
            updated_at: Timestamp(2),
            revision: 1,
        }
    }

    #[test]
    fn every_column_but_the_two_a_task_sets_versions_a_row() {
        use crate::rows::Versioned;
        let row = exposure();
        let later = ExposureRow { updated_at: Timestamp(9), revision: 4, ..exposure() };
        assert_eq!(row.content_hash(), later.content_hash(), "updated_at and revision are not content");
        let rescored = ExposureRow { scanner_cvss: Some(9.8), ..exposure() };
        assert_ne!(row.content_hash(), rescored.content_hash(), "a new scanner CVSS is a new revision");
        let columns = ExposureRow::columns(&[row]);
        assert_eq!(columns.len(), Table::Exposures.schema().fields().len());
    }

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
