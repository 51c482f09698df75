//! The lake's Parquet encoding: each table's rows as Arrow columns, one zstd
//! file per table and date of an epoch, named by task, epoch and writer.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use schemas::{Date, Table, Timestamp};

use crate::columns::{Columns, TableSchema};
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

/// A lake table's row type: its columns, and the date partition a row goes to.
trait LakeRow: Columns + Clone {
    fn date(&self) -> Date;
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
                crate::delta::history_dir(table),
                crate::lake::Lake::file_prefix(task)
            ),
            rows: indexes.len() as u64,
            bytes,
        });
    }
    Ok(())
}

impl LakeRow for AssetRow {
    fn date(&self) -> Date {
        self.updated_at.date()
    }
}

impl LakeRow for CveRow {
    /// The publication date; a CVE only KEV or EPSS knows yet goes by the
    /// day KEV added it, else the day the catalog heard of it.
    fn date(&self) -> Date {
        self.published_at.map(Timestamp::date).or(self.kev_date_added).unwrap_or_else(|| self.updated_at.date())
    }
}

impl LakeRow for PatchRow {
    fn date(&self) -> Date {
        self.released_at.date()
    }
}

impl LakeRow for ExposureRow {
    fn date(&self) -> Date {
        self.detected_at.date()
    }
}

impl LakeRow for OutcomeRow {
    fn date(&self) -> Date {
        self.first_attempt_at.unwrap_or(self.updated_at).date()
    }
}

impl LakeRow for RolloutRow {
    fn date(&self) -> Date {
        self.last_event_at.date()
    }
}

impl LakeRow for DriftRow {
    fn date(&self) -> Date {
        self.window_start.date()
    }
}

impl LakeRow for AlertRow {
    fn date(&self) -> Date {
        self.time.date()
    }
}

impl LakeRow for DeadLetterRow {
    fn date(&self) -> Date {
        self.failed_at.date()
    }
}

impl LakeRow for ClockMoveRow {
    fn date(&self) -> Date {
        self.moved_at.date()
    }
}
