//! Compaction of a lake (`lake optimize`, and `run` on its schedule): the
//! tables' small files merged, and each revised table's latest form
//! ([`crate::latest`]) written, in an order that keeps every form true.
//!
//! Reading a table's latest rows is SQL over the lake, which is the
//! `queries` crate's: the caller passes a [`LatestReader`], and this module
//! holds the protocol.

use std::collections::BTreeMap;
use std::future::Future;

use arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use schemas::Table;

use crate::delta::{Compaction, Published};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::latest::{LatestForm, LatestManifest};

/// Any error of the reader, kept as the source.
pub type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// Opens snapshots that read the lake's latest rows.
pub trait LatestReader {
    /// A reader over one snapshot.
    type Snapshot: LatestSnapshot;
    /// A snapshot of `published`, reading through the forms of `forms`
    /// where they fit it.
    fn open(
        &self,
        lake: &Lake,
        published: &Published,
        forms: &LatestManifest,
    ) -> impl Future<Output = std::result::Result<Self::Snapshot, ReadError>>;
}

/// The latest rows of one snapshot.
pub trait LatestSnapshot {
    /// The tables whose latest form fits this snapshot.
    fn fitting_forms(&self) -> Vec<Table>;
    /// Every key's latest revision of `table`.
    fn latest_rows(
        &self,
        table: Table,
    ) -> impl Future<Output = std::result::Result<BoxStream<'static, std::result::Result<RecordBatch, ReadError>>, ReadError>>;
}

/// Whether a table keeps a latest form: it has a key (so revisions), and it
/// is not `alerts` (an alert is sent once: its rows are never revised).
pub fn keeps_latest(table: Table) -> bool {
    !table.key_columns().is_empty() && table != Table::Alerts
}

/// What one [`compact`] did.
#[derive(Debug, Default)]
pub struct Compacted {
    /// The small files merged.
    pub merged: Compaction,
    /// Tables whose latest form was written.
    pub forms: usize,
    /// Rows of those forms (one per key).
    pub latest_rows: u64,
}

/// Compacts the lake and keeps each revised table's latest form:
///
/// 1. a table whose form fits the current snapshot gets a new one, read
///    through the old form and what was published since (its cost follows
///    the keys and the tail, not the history), covering the table's files
///    at its current Delta version;
/// 2. the small files are merged (`OPTIMIZE`), those tables' as of that
///    version, so every merged file holds covered rows only;
/// 3. a table with no form that fits (the first compaction, or after another
///    engine compacted it) gets one from its merged files, joining every
///    revision once;
///
/// then the manifest names the new forms. Safe while `run` publishes and
/// `serve` reads: a reader sees the previous manifest or the new one, and
/// uses a form only when its snapshot holds every file the form covers.
pub async fn compact(lake: &Lake, reader: &impl LatestReader) -> Result<Compacted> {
    let written_ms = now_ms();
    let previous = lake.latest_manifest().await?.unwrap_or_default();
    let published = lake.published().await?;
    let snapshot = reader.open(lake, &published, &previous).await.map_err(read_error("the lake"))?;
    let renewed = snapshot.fitting_forms();
    let mut report = Compacted::default();
    let mut manifest = LatestManifest { written_ms, tables: BTreeMap::new() };
    write_forms(lake, &snapshot, &published, &renewed, &mut manifest, &mut report).await?;
    drop(snapshot);

    let pins: BTreeMap<String, Option<u64>> = published
        .versions
        .iter()
        .filter(|(table, _)| manifest.tables.contains_key(*table))
        .map(|(table, version)| (table.clone(), *version))
        .collect();
    let (merged, merges) = lake.optimize(&pins).await?;
    report.merged = merged;
    for (table, merge) in merges {
        let Some(form) = manifest.tables.get_mut(&table) else { continue };
        match form.covers_after(&merge) {
            Some(covers) => form.covers = covers,
            // Cannot happen (the merge was of the version the form covers);
            // the table gets a form from its merged files below.
            None => {
                tracing::warn!(table, "a compaction merged files its latest form does not cover");
                manifest.tables.remove(&table);
            }
        }
    }

    let first: Vec<Table> = Table::ALL
        .into_iter()
        .filter(|table| keeps_latest(*table) && !manifest.tables.contains_key(table.name()))
        .collect();
    if !first.is_empty() {
        let published = lake.published().await?;
        let snapshot =
            reader.open(lake, &published, &LatestManifest::default()).await.map_err(read_error("the lake"))?;
        write_forms(lake, &snapshot, &published, &first, &mut manifest, &mut report).await?;
    }
    lake.write_latest_manifest(&manifest).await?;
    Ok(report)
}

/// Writes the latest form of each of `tables` that has files, as `snapshot`
/// reads its latest rows, covering the table's files in `published`.
async fn write_forms(
    lake: &Lake,
    snapshot: &impl LatestSnapshot,
    published: &Published,
    tables: &[Table],
    manifest: &mut LatestManifest,
    report: &mut Compacted,
) -> Result<()> {
    for table in tables {
        let files = published.files.get(table.name()).map_or(&[][..], Vec::as_slice);
        if files.is_empty() {
            continue;
        }
        let rows = snapshot.latest_rows(*table).await.map_err(read_error(table.name()))?;
        let file = lake.write_latest_file(*table, manifest.written_ms, rows).await?;
        report.forms += 1;
        report.latest_rows += file.rows;
        let covers = files.iter().map(|file| file.path.clone()).collect();
        manifest.tables.insert(table.name().to_owned(), LatestForm { covers, files: vec![file] });
    }
    Ok(())
}

fn read_error(what: &str) -> impl FnOnce(ReadError) -> Error + '_ {
    move |source| Error::LatestRows { what: what.to_owned(), source }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
