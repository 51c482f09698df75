//! The lake's tables as Delta Lake tables: what readers and other engines see.
//!
//! Tasks commit epochs to their own commit log (`_commits/`, see
//! [`crate::lake`]): that log stays the exactly-once truth and the fencing
//! point, because twelve tasks committing every few seconds to one Delta log
//! would collide on its versions. A *publisher* appends committed epochs to
//! each table's Delta log (`<lake>/<table>/_delta_log/`) in batches: one Delta
//! commit per table holds the `add` actions of every epoch committed since the
//! last publication and, per task, a `txn` action whose app id is the task and
//! whose version is the last epoch published. A publication that finds an
//! epoch already covered by its task's `txn` version skips it, so publishing is
//! idempotent; two publishers racing for a log version both retry on the new
//! snapshot, and the `txn` versions decide what is left to add.
//!
//! A revised table ([`Table::is_revised`]) is two Delta tables ([`Part`]):
//! its every revision at `<table>_history/`, appended as above, and its
//! current rows at `<table>/`, which the publisher keeps in step from the
//! same epochs, in the same publication ([`crate::current`]): what a Spark,
//! Trino or `deltalake` reader of `<table>` counts is one row per key, the
//! rows `patchtrail sql` shows.
//!
//! Readers load a table's latest checkpoint and the log after it (Delta's
//! checkpoints are written every [`CHECKPOINT_INTERVAL`] versions), never the
//! task commit log, so opening the lake costs the same after a month as
//! after an hour. Each publication also records the task watermarks it
//! published in the commit's `commitInfo` (`patchtrail.watermarks`), from
//! which readers take the lake's "as of".
//!
//! Invariants:
//! - A file is in a table's Delta log only if its epoch has a commit record.
//! - For every task and table, the `txn` version is the highest epoch whose
//!   files are in that table; every committed epoch at or below it is there,
//!   exactly once.
//! - A commit record is deleted only when every table's `txn` version covers it
//!   and it is not among its task's latest [`crate::lake::KEEP_SNAPSHOTS`]
//!   records, so recovery and fencing always find the latest records.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, ArrayType, DataType, StructField, Transaction};
use deltalake::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError, TableProperty};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use schemas::{Table, Timestamp};
use url::Url;

use crate::columns::TableSchema;
use crate::error::{Error, Result};
use crate::lake::{CommitRecord, Lake};
use crate::task::TaskId;

/// Delta versions between checkpoints: a reader reads one checkpoint and at
/// most this many commits after it. `run` publishes every 10 s: with 100, a
/// reader replayed up to 100 JSON commits per table, 3 s to open the lake of
/// a 15-minute run on a busy 2-core machine (benches/run_hours.sh).
pub const CHECKPOINT_INTERVAL: u32 = 10;

/// How long Delta log entries are kept before a checkpoint cleans them up
/// (time travel reaches back this far).
pub const LOG_RETENTION: &str = "interval 2 days";

/// How long a file merged away by compaction stays in the tables' state (as
/// a `remove` action, the tombstone vacuum finds it by): every checkpoint,
/// which every reader reads, carries the tombstones of this long. `run`
/// merges about 15,000 small files an hour (12 tasks committing every 5 s),
/// so Delta's default of a week would put 2.5 million tombstones in each
/// checkpoint; 6 hours keeps about 90,000. A vacuum must delete the files
/// before their tombstones expire, so its retention must be shorter.
pub const TOMBSTONE_RETENTION_HOURS: u64 = 6;

/// The key of the task watermarks in each publication's `commitInfo`.
const WATERMARKS_KEY: &str = "patchtrail.watermarks";

/// The object each publication rewrites with the tables' new versions.
pub const PUBLISHED_STAMP: &str = "_published.json";

/// Publications that lose a race for a log version are retried this often.
const MAX_ATTEMPTS: usize = 50;

/// One of the lake's Delta tables: a lake table's rows as tasks commit them
/// (every revision), or a revised table's current rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// Every row committed: at `<table>_history/` for a revised table, at
    /// `<table>/` for an append-only one. Partitioned by `date`.
    History(Table),
    /// A revised table's latest revision of each key, at `<table>/`.
    Current(Table),
}

impl Part {
    /// Every Delta table of the lake: each table's history, then, for a
    /// revised one, its current rows (published in this order).
    pub fn all() -> impl Iterator<Item = Part> {
        Table::ALL.into_iter().flat_map(|table| {
            [Some(Part::History(table)), table.is_revised().then_some(Part::Current(table))].into_iter().flatten()
        })
    }

    /// The lake table.
    pub fn table(self) -> Table {
        match self {
            Part::History(table) | Part::Current(table) => table,
        }
    }

    /// Its directory in the lake, which is also its name to readers.
    pub fn dir(self) -> String {
        match self {
            Part::History(table) => history_dir(table),
            Part::Current(table) => table.name().to_owned(),
        }
    }
}

/// Where a table's committed files go: `<table>_history` for a revised
/// table, `<table>` for an append-only one.
pub fn history_dir(table: Table) -> String {
    if table.is_revised() { format!("{}_history", table.name()) } else { table.name().to_owned() }
}

/// What readers see of the lake: each table's files, and the "as of".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Published {
    /// Each Delta table's directory ([`Part::dir`]) → its current files.
    pub files: BTreeMap<String, Vec<PublishedFile>>,
    /// The largest task watermark published to every table.
    pub as_of: Option<Timestamp>,
    /// Each Delta table's version, by directory (`None` before its first publication).
    pub versions: BTreeMap<String, Option<u64>>,
}

/// One file of a table, as its Delta log describes it: a reader needs no
/// request to the store to list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedFile {
    /// Path inside the lake (`<table>/date=…/….parquet`).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// When it was written, milliseconds since the epoch.
    pub modified_ms: i64,
}

/// Per task, the latest epoch of the commit log when a publication last
/// completed: what [`Lake::publish_after`] compares the log with to skip a
/// publication that would find nothing new.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishedUpTo(BTreeMap<TaskId, u64>);

/// Compacted files aim at this size.
pub const COMPACT_TARGET_BYTES: u64 = 64 * 1024 * 1024;

/// What one compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Small files merged away (still there for readers until vacuumed).
    pub files_removed: u64,
    /// Files written in their place.
    pub files_added: u64,
}

/// What one publication did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Publication {
    /// Epochs newly published (counted once, whatever tables they touch).
    pub epochs: u64,
    /// Files added across tables.
    pub files: u64,
    /// Delta commits written.
    pub commits: u64,
    /// Commits retried because another publisher took the version first.
    pub conflicts: u64,
    /// Commit records deleted because every table holds them.
    pub pruned: u64,
}

pub(crate) fn delta_error(part: Part) -> impl FnOnce(DeltaTableError) -> Error {
    move |error| Error::DeltaTable { table: part.dir(), source: Box::new(error) }
}

/// The app id of a task in `txn` actions.
pub(crate) fn app_id(task: TaskId) -> String {
    format!("patchtrail/{}/{}", task.topic, task.partition)
}

/// The Delta schema of a lake table: its Arrow columns, then, for its
/// history, the `date` partition column (not stored in the files: Delta
/// readers take it from the file's partition values).
fn delta_columns(part: Part) -> Vec<StructField> {
    let table = part.table();
    use arrow::datatypes::DataType as Arrow;
    let mut columns: Vec<StructField> = table
        .schema()
        .fields()
        .iter()
        .map(|field| {
            let data_type = match field.data_type() {
                Arrow::Utf8 => DataType::STRING,
                Arrow::Int32 => DataType::INTEGER,
                Arrow::Int64 => DataType::LONG,
                Arrow::Float64 => DataType::DOUBLE,
                Arrow::Boolean => DataType::BOOLEAN,
                Arrow::Date32 => DataType::DATE,
                Arrow::Timestamp(_, _) => DataType::TIMESTAMP,
                Arrow::List(item) => DataType::Array(Box::new(ArrayType::new(DataType::STRING, item.is_nullable()))),
                other => unreachable!("lake tables use no {other} column"),
            };
            StructField::new(field.name(), data_type, field.is_nullable())
        })
        .collect();
    if let Part::History(_) = part {
        columns.push(StructField::new("date", DataType::DATE, true));
    }
    columns
}

impl Lake {
    /// The Delta log store of one table, over the lake's own store.
    fn log_store(&self, part: Part) -> Result<LogStoreRef> {
        let fail = |reason: String| Error::Location { location: self.location().to_owned(), reason };
        let dir = part.dir();
        let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(self.store(), dir.as_str()));
        let (root, url): (Arc<dyn ObjectStore>, Url) = match self.bucket() {
            Some((_, root)) => {
                let url = Url::parse(&format!("{}/{dir}/", self.location().trim_end_matches('/')))
                    .map_err(|e| fail(e.to_string()))?;
                (root, url)
            }
            None => {
                let local = self.location().strip_prefix("file://").unwrap_or(self.location());
                let path =
                    std::path::absolute(std::path::Path::new(local).join(&dir)).map_err(|e| fail(e.to_string()))?;
                let url = Url::from_directory_path(&path)
                    .map_err(|()| fail(format!("{} is not absolute", path.display())))?;
                (Arc::new(LocalFileSystem::new()), url)
            }
        };
        Ok(default_logstore(prefixed, root, &url, &StorageConfig::default()))
    }

    /// A Delta table, loaded; `None` if it has no log yet.
    pub(crate) async fn load_table(&self, part: Part) -> Result<Option<DeltaTable>> {
        let log_store = self.log_store(part)?;
        if !log_store.is_delta_table_location().await.map_err(delta_error(part))? {
            return Ok(None);
        }
        let mut delta = DeltaTable::new(log_store);
        delta.load().await.map_err(delta_error(part))?;
        Ok(Some(delta))
    }

    /// A Delta table, created (empty) if it has no log yet. A revised
    /// table's `<table>/` partitioned by date is the earlier layout's
    /// history, never written to as current rows.
    pub(crate) async fn table_for_writing(&self, part: Part) -> Result<DeltaTable> {
        if let Some(delta) = self.load_table(part).await? {
            if let Part::Current(_) = part
                && delta.snapshot().is_ok_and(|snapshot| !snapshot.metadata().partition_columns().is_empty())
            {
                return Err(self.earlier_layout());
            }
            return Ok(delta);
        }
        let partitions: &[&str] = if let Part::History(_) = part { &["date"] } else { &[] };
        let created = deltalake::operations::create::CreateBuilder::new()
            .with_log_store(self.log_store(part)?)
            .with_table_name(part.dir())
            .with_columns(delta_columns(part))
            .with_partition_columns(partitions.iter().copied())
            .with_configuration_property(TableProperty::CheckpointInterval, Some(CHECKPOINT_INTERVAL.to_string()))
            .with_configuration_property(TableProperty::LogRetentionDuration, Some(LOG_RETENTION))
            .with_configuration_property(
                TableProperty::DeletedFileRetentionDuration,
                Some(format!("interval {TOMBSTONE_RETENTION_HOURS} hours")),
            )
            .await;
        match created {
            Ok(delta) => Ok(delta),
            // Another publisher created it first.
            Err(error) => match self.load_table(part).await? {
                Some(delta) => Ok(delta),
                None => Err(delta_error(part)(error)),
            },
        }
    }

    /// Appends every committed epoch not yet in the Delta tables to them,
    /// then deletes the commit records every table holds (all but each
    /// task's latest). Safe to run from several processes at once.
    pub async fn publish(&self) -> Result<Publication> {
        self.publish_after(&mut PublishedUpTo::default()).await
    }

    /// [`Lake::publish`], unless no task committed an epoch since `seen`
    /// was last updated by a complete publication: then it lists the commit
    /// log and nothing else (one LIST, where a publication reads each
    /// table's log), which is what an idle pipeline's publisher does.
    pub async fn publish_after(&self, seen: &mut PublishedUpTo) -> Result<Publication> {
        let mut report = Publication::default();
        let committed = self.committed_epochs_by_task().await?;
        let latest: BTreeMap<TaskId, u64> =
            committed.iter().filter_map(|(task, epochs)| Some((*task, epochs.last()?.0))).collect();
        if !latest.is_empty() && latest == seen.0 {
            return Ok(report);
        }
        if seen.0.is_empty() && self.has_revisions_in_table_dirs().await? {
            return Err(self.earlier_layout());
        }
        let mut records: BTreeMap<(TaskId, u64), CommitRecord> = BTreeMap::new();
        // Per task, the highest epoch every table holds.
        let mut covered: BTreeMap<TaskId, u64> = committed.keys().map(|task| (*task, u64::MAX)).collect();
        let mut stamp: BTreeMap<String, u64> = BTreeMap::new();
        for part in Part::all() {
            let (version, holds) = match part {
                Part::History(table) => self.publish_table(table, &committed, &mut records, &mut report).await?,
                Part::Current(table) => self.publish_current(table, &committed, &mut records, &mut report).await?,
            };
            stamp.insert(part.dir(), version);
            for (task, epoch) in holds {
                let entry = covered.entry(task).or_insert(u64::MAX);
                *entry = (*entry).min(epoch);
            }
        }
        report.epochs = records.len() as u64;
        if report.commits > 0 {
            // The change signal readers poll: one small object, whatever the log's length.
            self.write_stamp(&stamp).await?;
        }
        report.pruned = self.prune_records(&committed, &covered).await;
        seen.0 = latest;
        Ok(report)
    }

    /// Publishes to one table the committed epochs its `txn` versions do not
    /// cover, retrying on a newer snapshot when another publisher took the
    /// log version. Returns the table's version and, per task, the highest
    /// epoch it holds.
    async fn publish_table(
        &self,
        table: Table,
        committed: &BTreeMap<TaskId, Vec<(u64, Path)>>,
        records: &mut BTreeMap<(TaskId, u64), CommitRecord>,
        report: &mut Publication,
    ) -> Result<(u64, BTreeMap<TaskId, u64>)> {
        let part = Part::History(table);
        let mut delta = self.table_for_writing(part).await?;
        for attempt in 1.. {
            let snapshot = delta.snapshot().map_err(delta_error(part))?;
            let log_store = delta.log_store();
            let mut holds: BTreeMap<TaskId, u64> = txn_versions(&delta, part, committed.keys())
                .await?
                .into_iter()
                .map(|(task, held)| (task, held.unwrap_or(0)))
                .collect();
            let mut pending: Vec<(TaskId, u64, &Path)> = Vec::new();
            for (task, epochs) in committed {
                let held = holds[task];
                pending.extend(epochs.iter().filter(|(epoch, _)| *epoch > held).map(|(e, p)| (*task, *e, p)));
            }
            if pending.is_empty() {
                return Ok((delta.version().unwrap_or(0), holds));
            }
            for &(task, epoch, path) in &pending {
                if let std::collections::btree_map::Entry::Vacant(slot) = records.entry((task, epoch)) {
                    slot.insert(self.read_record(path).await?);
                }
            }
            let mut watermarks = previous_watermarks(&delta).await;
            let mut actions = Vec::new();
            for &(task, epoch, _) in &pending {
                let record = &records[&(task, epoch)];
                actions.extend(record.files.iter().filter(|file| file.table == table.name()).map(add_action));
                if let Some(watermark) = record.watermark {
                    watermarks.insert(app_id(task), watermark.to_string());
                }
                let held = holds.entry(task).or_default();
                *held = (*held).max(epoch);
            }
            let added = actions.len() as u64;
            let transactions: Vec<Transaction> = pending
                .iter()
                .map(|(task, ..)| *task)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|task| Transaction::new(app_id(task), holds[&task] as i64))
                .collect();
            let properties = CommitProperties::default()
                .with_max_retries(0)
                .with_application_transactions(transactions)
                .with_metadata(watermarks_metadata(&watermarks));
            let operation = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
            let commit =
                CommitBuilder::from(properties).with_actions(actions).build(Some(snapshot), log_store, operation).await;
            match commit {
                Ok(finalized) => {
                    report.commits += 1;
                    report.files += added;
                    return Ok((finalized.version(), holds));
                }
                Err(error) if attempt < MAX_ATTEMPTS => {
                    // Another publisher took the version: read what it published, and retry.
                    tracing::debug!(table = %part.dir(), %error, "publication retried");
                    report.conflicts += 1;
                    delta.update_state().await.map_err(delta_error(part))?;
                }
                Err(error) => return Err(delta_error(part)(error)),
            }
        }
        unreachable!("the loop returns")
    }

    /// A number that changes with every publication and compaction (a hash
    /// of [`PUBLISHED_STAMP`], which each rewrites with the tables' new
    /// versions; 0 before the first): the change signal readers poll, one
    /// small read whatever the length of the logs.
    pub async fn publication_stamp(&self) -> Result<usize> {
        let path = Path::from(PUBLISHED_STAMP);
        let Some(bytes) = self.get_if_exists(&path).await? else { return Ok(0) };
        Ok(twox_hash::XxHash64::oneshot(0, &bytes) as usize)
    }

    /// Merges each table's small files, per date partition, into files of
    /// about [`COMPACT_TARGET_BYTES`] (Delta `OPTIMIZE`, bin-packing: the
    /// removed files stay for readers until [`Lake::vacuum`] deletes them).
    /// The current tables need none: the publisher keeps each in
    /// [`crate::current::BUCKETS`] files. Safe while tasks commit and others
    /// publish: it only rewrites files already in the tables, and a
    /// publication that loses the race retries.
    pub async fn optimize(&self) -> Result<Compaction> {
        let mut report = Compaction::default();
        let mut stamp: BTreeMap<String, u64> = BTreeMap::new();
        for part in Part::all().filter(|part| matches!(part, Part::History(_))) {
            let Some(delta) = self.load_table(part).await? else { continue };
            let target = std::num::NonZeroU64::new(COMPACT_TARGET_BYTES).unwrap_or(std::num::NonZeroU64::MIN);
            let (delta, metrics) = delta
                .optimize()
                .with_target_size(target)
                .with_max_concurrent_tasks(2)
                .await
                .map_err(delta_error(part))?;
            report.files_removed += metrics.num_files_removed;
            report.files_added += metrics.num_files_added;
            stamp.insert(part.dir(), delta.version().unwrap_or(0));
        }
        if report.files_removed > 0 {
            self.write_stamp(&stamp).await?;
        }
        Ok(report)
    }

    /// Deletes the files removed from the tables (merged away by compaction,
    /// or current rows rewritten by a publication) more than `retain` ago
    /// (Delta `VACUUM`, lite mode: only files a `remove` action names, so a
    /// file committed but not yet published is never touched).
    /// Readers must not hold a snapshot older than `retain`.
    pub async fn vacuum(&self, retain: std::time::Duration) -> Result<u64> {
        let mut deleted = 0;
        for part in Part::all() {
            let Some(delta) = self.load_table(part).await? else { continue };
            let retention = chrono_duration(retain);
            let (_, metrics) = delta
                .vacuum()
                .with_retention_period(retention)
                .with_enforce_retention_duration(false)
                .await
                .map_err(delta_error(part))?;
            deleted += metrics.files_deleted.len() as u64;
        }
        Ok(deleted)
    }

    async fn write_stamp(&self, stamp: &BTreeMap<String, u64>) -> Result<()> {
        self.put_stamp(serde_json::to_vec(stamp).unwrap_or_default()).await
    }

    async fn put_stamp(&self, body: Vec<u8>) -> Result<()> {
        let path = Path::from(PUBLISHED_STAMP);
        self.store()
            .put(&path, body.into())
            .await
            .map_err(|source| Error::Storage { path: path.to_string(), source })?;
        Ok(())
    }

    /// Deletes commit records that every table holds, keeping each task's
    /// latest [`crate::lake::KEEP_SNAPSHOTS`]. Best effort.
    async fn prune_records(
        &self,
        committed: &BTreeMap<TaskId, Vec<(u64, Path)>>,
        covered: &BTreeMap<TaskId, u64>,
    ) -> u64 {
        let mut pruned = 0;
        for (task, epochs) in committed {
            let Some(&covered) = covered.get(task) else { continue };
            let latest = epochs.last().map_or(0, |(epoch, _)| *epoch);
            let keep_from = latest.saturating_sub(crate::lake::KEEP_SNAPSHOTS);
            for (epoch, path) in epochs {
                if *epoch <= covered && *epoch < keep_from && self.store().delete(path).await.is_ok() {
                    pruned += 1;
                }
            }
        }
        pruned
    }

    /// What readers see: each Delta table's current files and the lake's
    /// "as of". Reads each table's latest checkpoint and the log after it.
    pub async fn published(&self) -> Result<Published> {
        let mut published = Published::default();
        let mut as_of: Option<Option<Timestamp>> = None;
        for part in Part::all() {
            let Some(delta) = self.load_table(part).await? else {
                published.files.insert(part.dir(), Vec::new());
                published.versions.insert(part.dir(), None);
                continue;
            };
            let snapshot = delta.snapshot().map_err(delta_error(part))?;
            let files: Vec<PublishedFile> = snapshot
                .log_data()
                .into_iter()
                .map(|file| PublishedFile {
                    path: format!("{}/{}", part.dir(), file.object_store_path()),
                    size: file.size().max(0) as u64,
                    modified_ms: file.modification_time(),
                })
                .collect();
            published.files.insert(part.dir(), files);
            published.versions.insert(part.dir(), delta.version());
            // The as-of every table has reached: the least of the tables' own.
            let table_as_of =
                previous_watermarks(&delta).await.values().filter_map(|text| Timestamp::parse_rfc3339(text)).max();
            as_of = Some(match as_of {
                None => table_as_of,
                Some(current) => current.min(table_as_of),
            });
        }
        published.as_of = as_of.flatten();
        Ok(published)
    }

    /// Whether the lake is of an earlier layout `patchtrail lake migrate`
    /// converts: epochs in the task commit log but no Delta table at all
    /// (before the lake became Delta tables), or a revised table's
    /// revisions under `<table>/` (before `<table>_history`).
    pub async fn needs_migration(&self) -> Result<bool> {
        if self.has_revisions_in_table_dirs().await? {
            return Ok(true);
        }
        if self.commit_count().await? == 0 {
            return Ok(false);
        }
        for part in Part::all() {
            if self.log_store(part)?.is_delta_table_location().await.map_err(delta_error(part))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether a revised table's directory holds date partitions: the
    /// revisions of the earlier layouts, where `<table>/` was the history.
    pub(crate) async fn has_revisions_in_table_dirs(&self) -> Result<bool> {
        for table in Table::ALL.into_iter().filter(|table| table.is_revised()) {
            let dir = Path::from(table.name());
            let listed = self
                .store()
                .list_with_delimiter(Some(&dir))
                .await
                .map_err(|source| Error::Storage { path: dir.to_string(), source })?;
            // A date directory with a file (a migration leaves them empty on a local disk).
            for prefix in listed.common_prefixes {
                if !prefix.filename().is_some_and(|name| name.starts_with("date=")) {
                    continue;
                }
                let inside = self
                    .store()
                    .list_with_delimiter(Some(&prefix))
                    .await
                    .map_err(|source| Error::Storage { path: prefix.to_string(), source })?;
                if !inside.objects.is_empty() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The error for a lake of an earlier layout.
    pub(crate) fn earlier_layout(&self) -> Error {
        Error::Location {
            location: self.location().to_owned(),
            reason: format!(
                "the lake is of an earlier layout (every revision in <table>/, or no Delta tables): \
                 run `patchtrail lake migrate --lake {}` once",
                self.location()
            ),
        }
    }
}

/// The `add` action of a committed file: its path inside the table, its
/// date partition, size and row count.
fn add_action(file: &crate::lake::CommittedFile) -> Action {
    let relative = file.path.split_once('/').map_or(file.path.as_str(), |(_, rest)| rest);
    let date = relative.split('/').next().and_then(|dir| dir.strip_prefix("date="));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    Action::Add(Add {
        path: relative.to_owned(),
        partition_values: HashMap::from([("date".to_owned(), date.map(str::to_owned))]),
        size: file.bytes as i64,
        modification_time: now,
        data_change: true,
        stats: Some(format!("{{\"numRecords\":{}}}", file.rows)),
        ..Default::default()
    })
}

/// The task watermarks recorded by the table's latest publication (newest
/// first among the last ten commits, so an optimize in between is skipped).
pub(crate) async fn previous_watermarks(delta: &DeltaTable) -> BTreeMap<String, String> {
    let infos: Vec<_> = delta.history(Some(10)).try_collect().await.unwrap_or_default();
    infos
        .iter()
        .find_map(|info| match info.info.get(WATERMARKS_KEY) {
            Some(serde_json::Value::Object(map)) => {
                Some(map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// Per task of `tasks`, the last epoch `delta`'s `txn` actions record
/// (`None` for a task the table has never held).
pub(crate) async fn txn_versions<'a>(
    delta: &DeltaTable,
    part: Part,
    tasks: impl IntoIterator<Item = &'a TaskId>,
) -> Result<BTreeMap<TaskId, Option<u64>>> {
    let snapshot = delta.snapshot().map_err(delta_error(part))?;
    let mut versions = BTreeMap::new();
    for task in tasks {
        let version =
            snapshot.transaction_version(delta.log_store().as_ref(), app_id(*task)).await.map_err(delta_error(part))?;
        versions.insert(*task, version.map(|v| v.max(0) as u64));
    }
    Ok(versions)
}

/// The `commitInfo` entry recording the task watermarks a publication holds.
pub(crate) fn watermarks_metadata(watermarks: &BTreeMap<String, String>) -> [(String, serde_json::Value); 1] {
    [(WATERMARKS_KEY.to_owned(), serde_json::json!(watermarks))]
}

fn chrono_duration(duration: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}
