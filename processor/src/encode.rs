//! The lake's Parquet encoding: each table's rows as Arrow columns, one zstd
//! file per table and date of an epoch, named by task, epoch and writer.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, ListBuilder, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use schemas::{Date, Table, Timestamp};

use crate::error::{Error, Result};
use crate::rows::*;
use crate::task::TaskId;

/// One Parquet file ready to write.
pub struct EncodedFile {
    /// Its table.
    pub table: Table,
    /// Its path inside the lake.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// The Parquet bytes.
    pub bytes: Vec<u8>,
}

/// A lake table's row type: its date partition and Arrow encoding.
trait LakeRow: Sized + Clone {
    const TABLE: Table;
    fn date(&self) -> Date;
    fn columns(rows: &[Self]) -> Vec<ArrayRef>;
}

/// Encodes an epoch's rows as Parquet files, one per table and date. This is
/// CPU work: callers on an async runtime run it on a blocking thread.
pub fn encode_epoch(task: TaskId, epoch: u64, writer: &str, rows: &EpochRows) -> Result<Vec<EncodedFile>> {
    let mut files = Vec::new();
    let at = FileName { task, epoch, writer };
    encode(&at, &rows.assets, &mut files)?;
    encode(&at, &rows.cves, &mut files)?;
    encode(&at, &rows.patches, &mut files)?;
    encode(&at, &rows.exposures, &mut files)?;
    encode(&at, &rows.patch_outcomes, &mut files)?;
    encode(&at, &rows.canary_rollups, &mut files)?;
    encode(&at, &rows.segment_drift, &mut files)?;
    encode(&at, &rows.alerts, &mut files)?;
    encode(&at, &rows.dead_letters, &mut files)?;
    encode(&at, &rows.clock_watermarks, &mut files)?;
    Ok(files)
}

/// What names an epoch's files.
struct FileName<'a> {
    task: TaskId,
    epoch: u64,
    writer: &'a str,
}

/// How the lake's Parquet files are written: zstd, row groups of 128 Ki rows.
pub(crate) fn writer_properties() -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(3).map_err(|e| Error::Encode { table: "lake".to_owned(), reason: e.to_string() })?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(128 * 1024))
        .build())
}

fn encode<R: LakeRow>(at: &FileName<'_>, rows: &[R], files: &mut Vec<EncodedFile>) -> Result<()> {
    let FileName { task, epoch, writer: writer_id } = *at;
    let table = R::TABLE;
    let fail = |reason: String| Error::Encode { table: table.name().to_owned(), reason };
    let mut by_date: BTreeMap<Date, Vec<usize>> = BTreeMap::new();
    for (idx, row) in rows.iter().enumerate() {
        by_date.entry(row.date()).or_default().push(idx);
    }
    let properties = writer_properties()?;
    for (n, (date, indexes)) in by_date.into_iter().enumerate() {
        // Columns are built from a contiguous slice (most epochs have one
        // date); rows are cloned only when a date's rows are interleaved.
        let contiguous = indexes.windows(2).all(|w| w[1] == w[0] + 1);
        let columns = if contiguous {
            R::columns(&rows[indexes[0]..=indexes[indexes.len() - 1]])
        } else {
            R::columns(&indexes.iter().map(|&i| rows[i].clone()).collect::<Vec<R>>())
        };
        let batch = RecordBatch::try_new(table.schema(), columns).map_err(|e| fail(e.to_string()))?;
        let mut bytes = Vec::with_capacity(64 * 1024);
        let mut writer = ArrowWriter::try_new(&mut bytes, table.schema(), Some(properties.clone()))
            .map_err(|e| fail(e.to_string()))?;
        writer.write(&batch).map_err(|e| fail(e.to_string()))?;
        writer.close().map_err(|e| fail(e.to_string()))?;
        files.push(EncodedFile {
            table,
            path: format!(
                "{}/date={date}/{}{epoch:010}-{writer_id}-{n}.parquet",
                table.name(),
                crate::lake::Lake::file_prefix(task)
            ),
            rows: indexes.len() as u64,
            bytes,
        });
    }
    Ok(())
}

fn text<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}
fn opt_text<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}
fn flag(values: impl Iterator<Item = bool>) -> ArrayRef {
    Arc::new(values.map(Some).collect::<BooleanArray>())
}
fn opt_flag(values: impl Iterator<Item = Option<bool>>) -> ArrayRef {
    Arc::new(values.collect::<BooleanArray>())
}
fn int(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}
fn int32(values: impl Iterator<Item = i32>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(values))
}
fn float(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(values))
}
fn opt_float(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(values.collect::<Float64Array>())
}
fn time(values: impl Iterator<Item = Timestamp>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(values.map(Timestamp::micros)).with_timezone("UTC"))
}
fn opt_time(values: impl Iterator<Item = Option<Timestamp>>) -> ArrayRef {
    Arc::new(values.map(|v| v.map(Timestamp::micros)).collect::<TimestampMicrosecondArray>().with_timezone("UTC"))
}
fn opt_date(values: impl Iterator<Item = Option<Date>>) -> ArrayRef {
    Arc::new(values.map(|v| v.map(|d| d.0)).collect::<Date32Array>())
}

impl LakeRow for AssetRow {
    const TABLE: Table = Table::Assets;
    fn date(&self) -> Date {
        self.updated_at.date()
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            text(rows.iter().map(|r| r.asset_id.as_str())),
            text(rows.iter().map(|r| r.environment)),
            text(rows.iter().map(|r| r.criticality)),
            flag(rows.iter().map(|r| r.internet_exposed)),
            text(rows.iter().map(|r| r.segment.as_str())),
            flag(rows.iter().map(|r| r.managed)),
            opt_text(rows.iter().map(|r| r.hostname.as_deref())),
            opt_text(rows.iter().map(|r| r.os_family.as_deref())),
            opt_text(rows.iter().map(|r| r.os_version.as_deref())),
            time(rows.iter().map(|r| r.updated_at)),
            int(rows.iter().map(|r| r.revision)),
        ]
    }
}

impl LakeRow for CveRow {
    const TABLE: Table = Table::Cves;
    /// The publication date; a CVE only KEV or EPSS knows yet goes by the
    /// day KEV added it, else the day the catalog heard of it.
    fn date(&self) -> Date {
        self.published_at.map(Timestamp::date).or(self.kev_date_added).unwrap_or_else(|| self.updated_at.date())
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            text(rows.iter().map(|r| r.cve_id.as_str())),
            opt_float(rows.iter().map(|r| r.cvss_base)),
            opt_text(rows.iter().map(|r| r.severity)),
            opt_float(rows.iter().map(|r| r.epss)),
            flag(rows.iter().map(|r| r.kev)),
            opt_date(rows.iter().map(|r| r.kev_due_date)),
            opt_time(rows.iter().map(|r| r.published_at)),
            opt_text(rows.iter().map(|r| r.cvss_version.as_deref())),
            opt_float(rows.iter().map(|r| r.epss_percentile)),
            opt_date(rows.iter().map(|r| r.kev_date_added)),
            opt_text(rows.iter().map(|r| r.exploitation)),
            opt_text(rows.iter().map(|r| r.cvss_source.as_deref())),
            opt_text(rows.iter().map(|r| r.kev_source.as_deref())),
            opt_text(rows.iter().map(|r| r.epss_source.as_deref())),
            opt_date(rows.iter().map(|r| r.epss_date)),
            time(rows.iter().map(|r| r.updated_at)),
            int(rows.iter().map(|r| r.revision)),
        ]
    }
}

impl LakeRow for PatchRow {
    const TABLE: Table = Table::Patches;
    fn date(&self) -> Date {
        self.released_at.date()
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        let mut fixes = ListBuilder::new(StringBuilder::new());
        for row in rows {
            for cve in &row.fixes_cves {
                fixes.values().append_value(cve);
            }
            fixes.append(true);
        }
        vec![
            text(rows.iter().map(|r| r.patch_id.as_str())),
            text(rows.iter().map(|r| r.vendor.as_str())),
            text(rows.iter().map(|r| r.product.as_str())),
            time(rows.iter().map(|r| r.released_at)),
            Arc::new(fixes.finish()),
            opt_text(rows.iter().map(|r| r.artifact_sha256.as_deref())),
            opt_flag(rows.iter().map(|r| r.signed)),
            time(rows.iter().map(|r| r.updated_at)),
            int(rows.iter().map(|r| r.revision)),
        ]
    }
}

impl LakeRow for ExposureRow {
    const TABLE: Table = Table::Exposures;
    fn date(&self) -> Date {
        self.detected_at.date()
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            text(rows.iter().map(|r| r.asset_id.as_str())),
            text(rows.iter().map(|r| r.cve_id.as_str())),
            text(rows.iter().map(|r| r.status)),
            opt_text(rows.iter().map(|r| r.severity)),
            flag(rows.iter().map(|r| r.kev)),
            time(rows.iter().map(|r| r.detected_at)),
            opt_time(rows.iter().map(|r| r.remediated_at)),
            opt_time(rows.iter().map(|r| r.due_at)),
            flag(rows.iter().map(|r| r.breached)),
            opt_text(rows.iter().map(|r| r.remediated_by_patch_id.as_deref())),
            opt_float(rows.iter().map(|r| r.scanner_cvss)),
            opt_text(rows.iter().map(|r| r.severity_source)),
            time(rows.iter().map(|r| r.updated_at)),
            int(rows.iter().map(|r| r.revision)),
        ]
    }
}

impl LakeRow for OutcomeRow {
    const TABLE: Table = Table::PatchOutcomes;
    fn date(&self) -> Date {
        self.first_attempt_at.unwrap_or(self.updated_at).date()
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            text(rows.iter().map(|r| r.asset_id.as_str())),
            text(rows.iter().map(|r| r.patch_id.as_str())),
            opt_time(rows.iter().map(|r| r.released_at)),
            opt_time(rows.iter().map(|r| r.first_attempt_at)),
            opt_time(rows.iter().map(|r| r.remediated_at)),
            opt_float(rows.iter().map(|r| r.time_to_patch_s)),
            int(rows.iter().map(|r| r.attempts)),
            text(rows.iter().map(|r| r.outcome)),
            opt_float(rows.iter().map(|r| r.posture_before)),
            opt_float(rows.iter().map(|r| r.posture_after)),
            opt_float(rows.iter().map(|r| r.posture_reeval_latency_s)),
            opt_flag(rows.iter().map(|r| r.posture_regressed)),
            time(rows.iter().map(|r| r.updated_at)),
            int(rows.iter().map(|r| r.revision)),
        ]
    }
}

impl LakeRow for RolloutRow {
    const TABLE: Table = Table::CanaryRollups;
    fn date(&self) -> Date {
        self.last_event_at.date()
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            text(rows.iter().map(|r| r.rollout_id.as_str())),
            text(rows.iter().map(|r| r.patch_id.as_str())),
            int(rows.iter().map(|r| r.stages)),
            int(rows.iter().map(|r| r.failed)),
            int(rows.iter().map(|r| r.inconclusive)),
            float(rows.iter().map(|r| r.failure_rate)),
            text(rows.iter().map(|r| r.gate)),
            time(rows.iter().map(|r| r.last_event_at)),
            time(rows.iter().map(|r| r.updated_at)),
            int(rows.iter().map(|r| r.revision)),
        ]
    }
}

impl LakeRow for DriftRow {
    const TABLE: Table = Table::SegmentDrift;
    fn date(&self) -> Date {
        self.window_start.date()
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            time(rows.iter().map(|r| r.window_start)),
            text(rows.iter().map(|r| r.src_segment.as_str())),
            text(rows.iter().map(|r| r.dst_segment.as_str())),
            int(rows.iter().map(|r| r.connections)),
            int(rows.iter().map(|r| r.drift_connections)),
            float(rows.iter().map(|r| r.drift_ratio)),
            time(rows.iter().map(|r| r.updated_at)),
            int(rows.iter().map(|r| r.revision)),
        ]
    }
}

impl LakeRow for AlertRow {
    const TABLE: Table = Table::Alerts;
    fn date(&self) -> Date {
        self.time.date()
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            text(rows.iter().map(|r| r.alert_id.as_str())),
            text(rows.iter().map(|r| r.rule)),
            text(rows.iter().map(|r| r.severity)),
            time(rows.iter().map(|r| r.time)),
            text(rows.iter().map(|r| r.entity_id.as_str())),
            text(rows.iter().map(|r| r.ocsf.as_str())),
            int32(rows.iter().map(|r| r.severity_id)),
            int32(rows.iter().map(|r| r.class_uid)),
        ]
    }
}

impl LakeRow for DeadLetterRow {
    const TABLE: Table = Table::DeadLetters;
    fn date(&self) -> Date {
        self.failed_at.date()
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            text(rows.iter().map(|r| r.topic.as_str())),
            int32(rows.iter().map(|r| r.partition)),
            int(rows.iter().map(|r| r.offset)),
            text(rows.iter().map(|r| r.error.as_str())),
            text(rows.iter().map(|r| r.payload.as_str())),
            opt_text(rows.iter().map(|r| r.key.as_deref())),
            opt_text(rows.iter().map(|r| r.payload_encoding)),
            time(rows.iter().map(|r| r.failed_at)),
        ]
    }
}

impl LakeRow for ClockMoveRow {
    const TABLE: Table = Table::ClockWatermarks;
    fn date(&self) -> Date {
        self.moved_at.date()
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            text(rows.iter().map(|r| r.task.as_str())),
            time(rows.iter().map(|r| r.watermark)),
            opt_time(rows.iter().map(|r| r.previous_watermark)),
            opt_time(rows.iter().map(|r| r.last_event_at)),
            time(rows.iter().map(|r| r.moved_at)),
        ]
    }
}
