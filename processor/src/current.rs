//! The current rows of the revised tables: `<table>/`, one row per key, its
//! latest revision, kept in step with `<table>_history/` by the publisher.
//!
//! A Delta reader cannot keep the latest revision of each key by itself (a
//! Spark or Trino user counting `exposures` would count every revision), so
//! the lake stores the answer: each publication reads the rows of the epochs
//! it publishes, keeps the highest revision of each key, and rewrites the
//! current files those keys live in, in one Delta commit whose `txn`
//! versions say which epochs it holds (exactly once, as for the histories).
//!
//! A key lives in one of [`BUCKETS`] files, by a hash of its key columns, so
//! a publication rewrites only the buckets its keys fall in (at most the
//! whole table: the cost of a publication follows the table's current rows,
//! never its history). The rewritten files stay, as `remove` actions, until
//! vacuum deletes them.
//!
//! A current table with no `txn` yet (a new lake, or one just migrated) is
//! first filled from its history: every revision there, as of the history's
//! own `txn` versions.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Remove, Transaction};
use deltalake::protocol::DeltaOperation;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::Table;

use crate::columns::TableSchema;
use crate::delta::{Part, Publication, app_id, delta_error, previous_watermarks, txn_versions, watermarks_metadata};
use crate::error::{Error, Result};
use crate::lake::{CommitRecord, Lake};
use crate::task::TaskId;

/// How many files a current table's rows are spread over, by key hash.
pub const BUCKETS: u64 = 16;

/// Publications that lose a race for a log version are retried this often.
const MAX_ATTEMPTS: usize = 50;

/// The key of each row of `batch`: its key columns as text, joined.
fn keys(table: Table, batch: &RecordBatch) -> Result<Vec<String>> {
    let fail = |reason: String| Error::Delta { table: table.name().to_owned(), reason };
    let mut columns = Vec::new();
    for name in table.key_columns() {
        let column = batch.column_by_name(name).ok_or_else(|| fail(format!("a file has no column {name}")))?;
        let text = arrow::compute::cast(column, &DataType::Utf8).map_err(|e| fail(e.to_string()))?;
        columns.push(text);
    }
    let mut keys = vec![String::new(); batch.num_rows()];
    for (n, column) in columns.iter().enumerate() {
        let column = column.as_string::<i32>();
        for (row, key) in keys.iter_mut().enumerate() {
            if n > 0 {
                key.push('\u{1f}');
            }
            if column.is_valid(row) {
                key.push_str(column.value(row));
            }
        }
    }
    Ok(keys)
}

/// The revision of each row of `batch`.
fn revisions(table: Table, batch: &RecordBatch) -> Result<Vec<i64>> {
    let fail = |reason: &str| Error::Delta { table: table.name().to_owned(), reason: reason.to_owned() };
    let column = batch.column_by_name("revision").ok_or_else(|| fail("a file has no column revision"))?;
    let column = column.as_primitive_opt::<Int64Type>().ok_or_else(|| fail("revision is not a 64-bit integer"))?;
    Ok((0..batch.num_rows()).map(|row| column.value(row)).collect())
}

/// Whether a commit failed because another publisher took its version (so
/// nothing of it is in the log).
fn lost_the_race(error: &deltalake::DeltaTableError) -> bool {
    use deltalake::DeltaTableError as Delta;
    use deltalake::kernel::transaction::TransactionError as Transaction;
    matches!(
        error,
        Delta::VersionAlreadyExists(_)
            | Delta::Transaction {
                source: Transaction::VersionAlreadyExists(_)
                    | Transaction::CommitConflict(_)
                    | Transaction::MaxCommitAttempts(_)
            }
    )
}

/// A name no other attempt of this process uses: several publishers of one
/// process (a `run` of several instances, its final publication) share its
/// writer id, and a publication that loses the race deletes what it wrote.
fn attempt_id() -> String {
    static ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("{nanos:x}-{n}")
}

fn bucket_of_key(key: &str) -> u64 {
    twox_hash::XxHash64::oneshot(0, key.as_bytes()) % BUCKETS
}

/// The bucket a current file holds, from its name (`b07-….parquet`).
fn bucket_of_file(path: &str) -> Option<u64> {
    let name = path.rsplit('/').next()?;
    name.strip_prefix('b')?.split('-').next()?.parse().ok().filter(|bucket| *bucket < BUCKETS)
}

/// A row among the batches read: (batch, row).
type At = (usize, usize);

impl Lake {
    /// Brings `table`'s current rows up to every committed epoch its `txn`
    /// versions do not cover, retrying on a newer snapshot when another
    /// publisher took the log version. Returns the table's version and, per
    /// task, the highest epoch it holds.
    pub(crate) async fn publish_current(
        &self,
        table: Table,
        committed: &BTreeMap<TaskId, Vec<(u64, Path)>>,
        records: &mut BTreeMap<(TaskId, u64), CommitRecord>,
        report: &mut Publication,
    ) -> Result<(u64, BTreeMap<TaskId, u64>)> {
        let part = Part::Current(table);
        let mut delta = self.table_for_writing(part).await?;
        for attempt in 1.. {
            let snapshot = delta.snapshot().map_err(delta_error(part))?;
            let log_store = delta.log_store();
            let mut holds = txn_versions(&delta, part, committed.keys()).await?;
            let mut sources: Vec<String> = Vec::new();
            let mut watermarks = previous_watermarks(&delta).await;
            // A table that holds no epoch yet starts from its history (and
            // commits its `txn` versions and watermarks even when it has no
            // row: readers take the lake's as-of from every table).
            let mut from_history = false;
            if holds.values().all(Option::is_none)
                && let Some(history) = self.load_table(Part::History(table)).await?
            {
                from_history = true;
                holds = txn_versions(&history, Part::History(table), committed.keys()).await?;
                let history_snapshot = history.snapshot().map_err(delta_error(Part::History(table)))?;
                let dir = Part::History(table).dir();
                sources.extend(
                    history_snapshot.log_data().into_iter().map(|f| format!("{dir}/{}", f.object_store_path())),
                );
                watermarks.extend(previous_watermarks(&history).await);
            }
            let mut pending: Vec<(TaskId, u64, &Path)> = Vec::new();
            for (task, epochs) in committed {
                let held = holds[task].unwrap_or(0);
                pending.extend(epochs.iter().filter(|(epoch, _)| *epoch > held).map(|(e, p)| (*task, *e, p)));
            }
            let holds: BTreeMap<TaskId, u64> =
                holds.into_iter().map(|(task, held)| (task, held.unwrap_or(0))).collect();
            if pending.is_empty() && !from_history {
                return Ok((delta.version().unwrap_or(0), holds));
            }
            let mut holds = holds;
            for &(task, epoch, path) in &pending {
                if let std::collections::btree_map::Entry::Vacant(slot) = records.entry((task, epoch)) {
                    slot.insert(self.read_record(path).await?);
                }
                let record = &records[&(task, epoch)];
                sources.extend(record.files.iter().filter(|f| f.table == table.name()).map(|f| f.path.clone()));
                if let Some(watermark) = record.watermark {
                    watermarks.insert(app_id(task), watermark.to_string());
                }
                let held = holds.entry(task).or_default();
                *held = (*held).max(epoch);
            }
            let transactions: Vec<Transaction> =
                holds.iter().map(|(task, held)| Transaction::new(app_id(*task), *held as i64)).collect();

            let current: Vec<(String, i64)> = snapshot
                .log_data()
                .into_iter()
                .map(|file| (file.object_store_path().to_string(), file.size()))
                .collect();
            let next = delta.version().map_or(0, |v| v + 1);
            let (actions, written) = self.merge_current(table, &sources, &current, next).await?;

            let properties = CommitProperties::default()
                .with_max_retries(0)
                .with_application_transactions(transactions)
                .with_metadata(watermarks_metadata(&watermarks));
            let operation = DeltaOperation::Update { predicate: None };
            let commit =
                CommitBuilder::from(properties).with_actions(actions).build(Some(snapshot), log_store, operation).await;
            match commit {
                Ok(finalized) => {
                    report.commits += 1;
                    report.files += written.len() as u64;
                    return Ok((finalized.version(), holds));
                }
                Err(error) if attempt < MAX_ATTEMPTS && lost_the_race(&error) => {
                    // Another publisher took the version: read what it published, and retry.
                    tracing::debug!(table = %part.dir(), %error, "publication of current rows retried");
                    report.conflicts += 1;
                    // Named for this attempt alone, and in no log: ours to delete.
                    for path in written {
                        let _ = self.store().delete(&path).await;
                    }
                    delta.update_state().await.map_err(delta_error(part))?;
                }
                Err(error) => return Err(delta_error(part)(error)),
            }
        }
        unreachable!("the loop returns")
    }

    /// The actions that put the latest revision of each key of `sources`
    /// (files in the lake) into `table`'s current files (`current`: path in
    /// the table, size): the buckets those keys fall in, rewritten, named
    /// for the table's version `next`. Returns the actions and the files
    /// written.
    async fn merge_current(
        &self,
        table: Table,
        sources: &[String],
        current: &[(String, i64)],
        next: u64,
    ) -> Result<(Vec<Action>, Vec<Path>)> {
        let mut batches: Vec<RecordBatch> = Vec::new();
        for path in sources {
            batches.extend(self.read_parquet(table, &Path::from(path.as_str())).await?);
        }
        // The latest revision of each key among the sources (a tie: the later).
        let mut latest: HashMap<String, (At, i64)> = HashMap::new();
        for (n, batch) in batches.iter().enumerate() {
            for (row, (key, revision)) in keys(table, batch)?.into_iter().zip(revisions(table, batch)?).enumerate() {
                match latest.get(&key) {
                    Some((_, held)) if *held > revision => {}
                    _ => {
                        latest.insert(key, ((n, row), revision));
                    }
                }
            }
        }
        let mut by_bucket: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for key in latest.keys() {
            by_bucket.entry(bucket_of_key(key)).or_default().push(key.clone());
        }
        // Files of another engine's (a DELETE or OPTIMIZE through another
        // Delta writer) are read and their rows moved to their buckets.
        let mut files_of: BTreeMap<u64, Vec<&(String, i64)>> = BTreeMap::new();
        let mut foreign: Vec<&(String, i64)> = Vec::new();
        for file in current {
            match bucket_of_file(&file.0) {
                Some(bucket) => files_of.entry(bucket).or_default().push(file),
                None => foreign.push(file),
            }
        }
        let mut foreign_rows: BTreeMap<u64, Vec<(RecordBatch, Vec<usize>)>> = BTreeMap::new();
        for file in &foreign {
            for batch in self.read_parquet(table, &Path::from(format!("{}/{}", table.name(), file.0))).await? {
                let mut rows: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
                for (row, key) in keys(table, &batch)?.iter().enumerate() {
                    rows.entry(bucket_of_key(key)).or_default().push(row);
                }
                for (bucket, rows) in rows {
                    by_bucket.entry(bucket).or_default();
                    foreign_rows.entry(bucket).or_default().push((batch.clone(), rows));
                }
            }
        }

        let attempt = attempt_id();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let remove = |(path, size): &(String, i64)| {
            Action::Remove(Remove {
                path: path.clone(),
                data_change: true,
                deletion_timestamp: Some(now),
                extended_file_metadata: Some(true),
                partition_values: Some(HashMap::new()),
                size: Some(*size),
                ..Default::default()
            })
        };
        let (mut actions, mut written): (Vec<Action>, Vec<Path>) =
            (foreign.iter().map(|f| remove(f)).collect(), Vec::new());
        for (bucket, mut bucket_keys) in by_bucket {
            // The bucket's current rows, except those a newer revision replaces.
            let mut all: Vec<RecordBatch> = Vec::new();
            let mut rows: Vec<At> = Vec::new();
            let mut held: Vec<(RecordBatch, Vec<usize>)> = foreign_rows.remove(&bucket).unwrap_or_default();
            for file in files_of.get(&bucket).into_iter().flatten() {
                let in_lake = Path::from(format!("{}/{}", table.name(), file.0));
                for batch in self.read_parquet(table, &in_lake).await? {
                    let every = (0..batch.num_rows()).collect();
                    held.push((batch, every));
                }
                actions.push(remove(file));
            }
            for (batch, batch_rows) in held {
                let n = all.len();
                let (keys, revisions) = (keys(table, &batch)?, revisions(table, &batch)?);
                for row in batch_rows {
                    match latest.get(&keys[row]) {
                        Some((_, newer)) if *newer >= revisions[row] => {}
                        Some(_) => {
                            // Cannot happen (revisions grow with epochs): the current row stays.
                            latest.remove(&keys[row]);
                            rows.push((n, row));
                        }
                        None => rows.push((n, row)),
                    }
                }
                all.push(batch);
            }
            let offset = all.len();
            bucket_keys.sort();
            rows.extend(bucket_keys.iter().filter_map(|key| latest.get(key)).map(|((n, row), _)| (offset + n, *row)));
            all.extend(batches.iter().cloned());
            if rows.is_empty() {
                continue;
            }
            let fail = |reason: String| Error::Encode { table: table.name().to_owned(), reason };
            let refs: Vec<&RecordBatch> = all.iter().collect();
            let merged = arrow::compute::interleave_record_batch(&refs, &rows).map_err(|e| fail(e.to_string()))?;
            let mut bytes = Vec::with_capacity(64 * 1024);
            let mut writer =
                ArrowWriter::try_new(&mut bytes, table.schema(), Some(crate::encode::writer_properties()?))
                    .map_err(|e| fail(e.to_string()))?;
            writer.write(&merged).map_err(|e| fail(e.to_string()))?;
            writer.close().map_err(|e| fail(e.to_string()))?;
            let name = format!("b{bucket:02}-{next:010}-{}-{attempt}.parquet", self.writer());
            let path = Path::from(format!("{}/{name}", table.name()));
            let size = bytes.len() as i64;
            self.store()
                .put(&path, bytes.into())
                .await
                .map_err(|source| Error::Storage { path: path.to_string(), source })?;
            written.push(path);
            actions.push(Action::Add(Add {
                path: name,
                partition_values: HashMap::new(),
                size,
                modification_time: now,
                data_change: true,
                stats: Some(format!("{{\"numRecords\":{}}}", merged.num_rows())),
                ..Default::default()
            }));
        }
        Ok((actions, written))
    }

    /// A Parquet file of `table`'s, read whole, as the table's schema.
    async fn read_parquet(&self, table: Table, path: &Path) -> Result<Vec<RecordBatch>> {
        let fail =
            |reason: String| Error::Delta { table: table.name().to_owned(), reason: format!("{path}: {reason}") };
        let bytes: Bytes = self
            .store()
            .get(path)
            .await
            .map_err(|source| Error::Storage { path: path.to_string(), source })?
            .bytes()
            .await
            .map_err(|source| Error::Storage { path: path.to_string(), source })?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|builder| builder.with_batch_size(64 * 1024).build())
            .map_err(|e| fail(e.to_string()))?;
        let schema = table.schema();
        let mut batches = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| fail(e.to_string()))?;
            // Another engine's file may differ in types (delta-rs writes
            // Utf8View), nullability or metadata: columns are cast by name.
            let theirs = batch.schema();
            if theirs.fields().len() != schema.fields().len() {
                return Err(fail(format!(
                    "it has {} columns, the table {}",
                    theirs.fields().len(),
                    schema.fields().len()
                )));
            }
            let mut columns = Vec::with_capacity(schema.fields().len());
            for (column, (a, b)) in batch.columns().iter().zip(theirs.fields().iter().zip(schema.fields())) {
                if a.name() != b.name() {
                    return Err(fail(format!("its column {} is the table's {}", a.name(), b.name())));
                }
                columns
                    .push(arrow::compute::cast(column, b.data_type()).map_err(|e| fail(format!("{}: {e}", a.name())))?);
            }
            let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| fail(e.to_string()))?;
            batches.push(batch);
        }
        Ok(batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_gives_its_bucket_and_a_foreign_one_none() {
        assert_eq!(bucket_of_file("b07-0000000003-w1.parquet"), Some(7));
        assert_eq!(bucket_of_file("exposures/b15-0000000003-w1.parquet"), Some(15));
        assert_eq!(bucket_of_file("part-00000-1234.snappy.parquet"), None);
        assert_eq!(bucket_of_file("b16-0000000003-w1.parquet"), None);
    }

    #[test]
    fn keys_spread_over_every_bucket() {
        let mut seen = [0u32; BUCKETS as usize];
        for n in 0..1_600 {
            seen[bucket_of_key(&format!("asset-{n}\u{1f}CVE-2024-{n}")) as usize] += 1;
        }
        assert!(seen.iter().all(|count| (60..=140).contains(count)), "{seen:?}");
    }
}
