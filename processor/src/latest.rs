//! The compacted latest-revision form of the revised tables.
//!
//! A revised table (one with key columns, alerts aside) holds every revision
//! of each row, and readers want the latest: joining every revision with the
//! largest revision of its key costs a pass over the whole history per query.
//! Compaction therefore also writes each revised table's latest rows once,
//! to `_latest/<table>/…parquet`, and names them in one manifest
//! ([`MANIFEST`]) together with the table files those rows were computed
//! from (`covers`). A reader takes the latest form's rows whose key has no
//! row in the table's other files (the *tail*: what was published since),
//! and the latest revision of each key in the tail.
//!
//! Why that is exact: `covers` is every file of the table at one Delta
//! version, as compaction rewrote them, so every file outside it was
//! published later; a key's revisions grow with the epochs that write them,
//! and the publisher appends each task's epochs in order, so a key's rows in
//! the tail are newer than its row in the latest form. A reader whose
//! snapshot lacks a covered file (merged away by a compaction whose manifest
//! is not written yet, or a lake compacted by hand) cannot tell covered rows
//! from new ones and reads the table's whole history instead: slower, never
//! wrong. The manifest is an acceleration; the Delta tables stay the truth,
//! and other engines never see it.

use std::collections::{BTreeMap, BTreeSet};

use arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt};
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use schemas::Table;
use serde::{Deserialize, Serialize};

use crate::columns::TableSchema;
use crate::error::{Error, Result};
use crate::lake::Lake;

/// The directory of the latest forms, in the lake.
pub const LATEST_DIR: &str = "_latest";

/// The manifest naming each table's latest form; rewritten whole by each
/// compaction (one PUT: readers see the old manifest or the new one).
pub const MANIFEST: &str = "_latest/manifest.json";

/// Which compaction wrote the latest forms readers use, and what they hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestManifest {
    /// When the compaction that wrote it started, milliseconds since the
    /// epoch: every file of that compaction is at least this recent.
    pub written_ms: i64,
    /// Table name → its latest form.
    pub tables: BTreeMap<String, LatestForm>,
}

/// One table's latest form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestForm {
    /// The table's files (paths in the lake) whose rows the form holds: all
    /// of them at one Delta version, as that compaction left them.
    pub covers: BTreeSet<String>,
    /// The files of the form: one row per key, its latest revision.
    pub files: Vec<LatestFile>,
}

/// One file of a latest form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestFile {
    /// Path in the lake (`_latest/<table>/….parquet`).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// When it was written, milliseconds since the epoch.
    pub modified_ms: i64,
    /// Rows (keys).
    pub rows: u64,
}

/// What one Delta `OPTIMIZE` commit did to a table's files (paths in the lake).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merge {
    /// Files merged away.
    pub removed: BTreeSet<String>,
    /// The files written in their place.
    pub added: BTreeSet<String>,
}

impl LatestForm {
    /// The form's `covers` after `merge`, when every file it merged was
    /// covered (then the merged files hold covered rows only); `None` when it
    /// merged a file the form does not cover.
    pub fn covers_after(&self, merge: &Merge) -> Option<BTreeSet<String>> {
        if !merge.removed.is_subset(&self.covers) {
            return None;
        }
        let mut covers: BTreeSet<String> = self.covers.difference(&merge.removed).cloned().collect();
        covers.extend(merge.added.iter().cloned());
        Some(covers)
    }

    /// The files of `current` (a table's files now) the form does not cover,
    /// or `None` when the form covers a file no longer there (the form cannot
    /// be used with this snapshot).
    pub fn tail<'a>(&self, current: impl IntoIterator<Item = &'a str>) -> Option<BTreeSet<&'a str>> {
        let mut seen = 0;
        let mut tail = BTreeSet::new();
        for path in current {
            if self.covers.contains(path) {
                seen += 1;
            } else {
                tail.insert(path);
            }
        }
        (seen == self.covers.len()).then_some(tail)
    }
}

impl Lake {
    /// The manifest of the latest forms; `None` when no compaction wrote one,
    /// or when it cannot be parsed (then readers join every revision, which
    /// is slower and exact; the reason is logged).
    pub async fn latest_manifest(&self) -> Result<Option<LatestManifest>> {
        let path = Path::from(MANIFEST);
        let Some(bytes) = self.get_if_exists(&path).await? else { return Ok(None) };
        match serde_json::from_slice(&bytes) {
            Ok(manifest) => Ok(Some(manifest)),
            Err(error) => {
                tracing::warn!(%error, "the latest forms' manifest cannot be read; reading every revision");
                Ok(None)
            }
        }
    }

    /// Writes `batches`, a table's latest rows, as one file of a latest form
    /// of the compaction that started at `written_ms` (streamed: a multipart
    /// upload on a bucket); readers see it once a manifest names it.
    pub async fn write_latest_file<E: std::fmt::Display>(
        &self,
        table: Table,
        written_ms: i64,
        mut batches: impl Stream<Item = std::result::Result<RecordBatch, E>> + Unpin,
    ) -> Result<LatestFile> {
        let path = format!("{LATEST_DIR}/{}/{written_ms}-{}.parquet", table.name(), self.writer());
        let fail = |reason: String| Error::Encode { table: table.name().to_owned(), reason };
        let location = Path::from(path.as_str());
        let object = BufWriter::new(self.store(), location.clone());
        let mut writer = AsyncArrowWriter::try_new(object, table.schema(), Some(crate::encode::writer_properties()?))
            .map_err(|e| fail(e.to_string()))?;
        let mut rows = 0;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| fail(e.to_string()))?;
            // The query's batches carry its own field flags: the file gets the table's schema.
            let batch =
                RecordBatch::try_new(table.schema(), batch.columns().to_vec()).map_err(|e| fail(e.to_string()))?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).await.map_err(|e| fail(e.to_string()))?;
        }
        writer.close().await.map_err(|e| fail(e.to_string()))?;
        let written =
            self.store().head(&location).await.map_err(|source| Error::Storage { path: path.clone(), source })?;
        Ok(LatestFile { path, size: written.size, modified_ms: written.last_modified.timestamp_millis(), rows })
    }

    /// Writes the manifest of the latest forms, then the stamp readers poll.
    pub async fn write_latest_manifest(&self, manifest: &LatestManifest) -> Result<()> {
        let path = Path::from(MANIFEST);
        let body = serde_json::to_vec(manifest).unwrap_or_default();
        self.store()
            .put(&path, body.into())
            .await
            .map_err(|source| Error::Storage { path: path.to_string(), source })?;
        self.stamp_latest(manifest.written_ms).await
    }

    /// Deletes the files of latest forms no manifest names any more: written
    /// before the current manifest's compaction started (so no compaction
    /// still running wrote them) and more than `retain` ago (so no reader
    /// still uses them). Best effort per file; returns how many went.
    pub(crate) async fn vacuum_latest(&self, retain: std::time::Duration) -> Result<u64> {
        use futures::TryStreamExt;
        let Some(manifest) = self.latest_manifest().await? else { return Ok(0) };
        let named: BTreeSet<&str> =
            manifest.tables.values().flat_map(|form| form.files.iter().map(|file| file.path.as_str())).collect();
        let now = chrono::Utc::now().timestamp_millis();
        let cutoff = manifest.written_ms.min(now - i64::try_from(retain.as_millis()).unwrap_or(i64::MAX));
        let prefix = Path::from(LATEST_DIR);
        let listed: Vec<_> = self
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|source| Error::Storage { path: prefix.to_string(), source })?;
        let mut deleted = 0;
        for object in listed {
            let path = object.location.to_string();
            let stale = object.last_modified.timestamp_millis() < cutoff;
            if path.ends_with(".parquet") && stale && !named.contains(path.as_str()) {
                if let Err(error) = self.store().delete(&object.location).await {
                    tracing::warn!(%error, path, "cannot delete a latest form's old file");
                } else {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|path| (*path).to_owned()).collect()
    }

    #[test]
    fn a_merge_of_covered_files_keeps_the_form_covering_the_merged_file() {
        let form = LatestForm { covers: set(&["t/a", "t/b", "t/c"]), files: vec![] };
        let merge = Merge { removed: set(&["t/a", "t/b"]), added: set(&["t/ab"]) };
        assert_eq!(form.covers_after(&merge), Some(set(&["t/ab", "t/c"])));
        let mixed = Merge { removed: set(&["t/c", "t/new"]), added: set(&["t/cn"]) };
        assert_eq!(form.covers_after(&mixed), None);
    }

    #[test]
    fn the_tail_is_what_the_form_does_not_cover_and_a_missing_covered_file_voids_it() {
        let form = LatestForm { covers: set(&["t/a", "t/b"]), files: vec![] };
        assert_eq!(form.tail(["t/a", "t/b", "t/c"]), Some(BTreeSet::from(["t/c"])));
        assert_eq!(form.tail(["t/a", "t/b"]), Some(BTreeSet::new()));
        assert_eq!(form.tail(["t/a", "t/ab", "t/c"]), None);
    }
}
