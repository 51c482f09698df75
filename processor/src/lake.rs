//! The lake: one directory of Parquet files per table (`<table>_history`
//! for a revised table, see [`crate::delta::history_dir`]), hive-partitioned
//! by date, and a commit log that makes each task's epochs atomic
//! (DESIGN.md "Exactly-once into the lake"). The publisher adds the Delta
//! logs and a revised table's current rows ([`crate::current`]).
//!
//! ```text
//! <lake>/<table or table_history>/date=YYYY-MM-DD/<task>-<epoch>-<writer>-<n>.parquet
//! <lake>/<table>/b<bucket>-<version>-<writer>.parquet   (current rows, by the publisher)
//! <lake>/_state/<task topic>/<partition>/<epoch>-<writer>.state
//! <lake>/_outbox/<task topic>/<partition>/<epoch>-<writer>.jsonl
//! <lake>/_commits/<task topic>/<partition>/<epoch>.json
//! ```
//!
//! The outbox holds what the epoch publishes after its commit (alerts,
//! re-evaluation requests, dead letters), so a crash between the commit and
//! the publication re-sends it on recovery.
//!
//! A task commits an epoch by writing its Parquet files and state snapshot,
//! then its commit record, created only if absent. The record is the truth:
//! recovery restores the latest record's snapshot and deletes the task's
//! files of later epochs, and readers list files from records, never from
//! directories, so they only ever see committed epochs. Snapshots and
//! outboxes of older epochs are deleted after each commit, all but the last
//! [`KEEP_SNAPSHOTS`]; the Parquet files of every epoch stay. Everything goes
//! through `object_store`, so a local directory and an `s3://` bucket share
//! the code.
//!
//! Fencing: two processes may believe they own one task (a consumer group
//! mid-rebalance, a paused process that wakes up). Every file a process
//! writes carries its writer id, so two writers never overwrite each other's
//! files, and only one of them can create the record of an epoch: the other
//! gets [`Error::Fenced`], deletes what it wrote and gives the task up. A new
//! owner [claims](Lake::claim) the next epoch before it processes anything,
//! so a previous owner that is still running is fenced at its next commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use schemas::{Table, Timestamp};
use serde::{Deserialize, Serialize};

use crate::encode::encode_epoch;
use crate::error::{Error, Result};
use crate::rows::*;
use crate::task::TaskId;

/// First line of the format tag of commit records.
pub const COMMIT_FORMAT: &str = "patchtrail-commit/1";

/// One committed Parquet file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFile {
    /// The table it belongs to.
    pub table: String,
    /// Its path inside the lake.
    pub path: String,
    /// Rows in it.
    pub rows: u64,
    /// Its size.
    pub bytes: u64,
}

/// The record that makes an epoch of a task visible and durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// [`COMMIT_FORMAT`].
    pub format: String,
    /// The task.
    pub task: TaskId,
    /// The epoch, counting from 1 per task.
    pub epoch: u64,
    /// The Parquet files of the epoch.
    pub files: Vec<CommittedFile>,
    /// Path of the task's state snapshot after the epoch.
    pub state: String,
    /// Source → next offset to read, after the epoch.
    pub positions: BTreeMap<String, u64>,
    /// The task's watermark after the epoch.
    pub watermark: Option<Timestamp>,
    /// The largest event time the task had seen.
    pub max_event_time: Option<Timestamp>,
    /// Rows per table in this epoch.
    pub rows: BTreeMap<String, u64>,
    /// Path of the epoch's outbox (JSON lines), when it publishes anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<String>,
}

/// What a task commits for one epoch.
pub struct Epoch {
    /// The task.
    pub task: TaskId,
    /// The epoch number: the task's last committed one plus one.
    pub epoch: u64,
    /// The rows it changed.
    pub rows: EpochRows,
    /// Its state snapshot after the epoch.
    pub state: Vec<u8>,
    /// Source → next offset, after the epoch.
    pub positions: BTreeMap<String, u64>,
    /// Its watermark after the epoch.
    pub watermark: Option<Timestamp>,
    /// The largest event time it has seen.
    pub max_event_time: Option<Timestamp>,
    /// What it publishes once committed (empty when nothing is published).
    pub outbox: Vec<OutboxMessage>,
}

/// A lake location.
#[derive(Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    /// For a lake in a bucket: the bucket's URL and its store (the lake's
    /// `store` is this one under the lake's prefix), for query engines.
    bucket: Option<(String, Arc<dyn ObjectStore>)>,
    location: String,
    /// This process's writer id, in every file name it writes.
    writer: Arc<str>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lake({})", self.location)
    }
}

/// State snapshots (and outboxes) kept per task: the latest epochs'.
pub const KEEP_SNAPSHOTS: u64 = 3;

fn storage(path: &Path) -> impl FnOnce(object_store::Error) -> Error + '_ {
    move |source| Error::Storage { path: path.to_string(), source }
}

/// The variable that bounds how long a request to an `s3://` lake is
/// retried, in seconds (object_store's default, 180, when unset).
pub const S3_RETRY_VARIABLE: &str = "PATCHTRAIL_S3_RETRY_SECS";

/// How requests to a bucket are retried: object_store's policy (up to 10
/// retries with backoff), within [`S3_RETRY_VARIABLE`] seconds from the
/// first attempt; past that the request fails, and the command stops with
/// the lake's last commit intact.
fn retry_config() -> std::result::Result<object_store::RetryConfig, String> {
    let mut config = object_store::RetryConfig::default();
    if let Ok(value) = std::env::var(S3_RETRY_VARIABLE) {
        let seconds: u64 = value
            .trim()
            .parse()
            .ok()
            .filter(|seconds| (1..=300).contains(seconds))
            .ok_or_else(|| format!("{S3_RETRY_VARIABLE} must be whole seconds from 1 to 300, got {value:?}"))?;
        config.retry_timeout = std::time::Duration::from_secs(seconds);
    }
    Ok(config)
}

impl Lake {
    /// Opens (creating it if needed) the lake at a local path, a `file://`
    /// URL, or `s3://BUCKET[/PREFIX]` (credentials, region and endpoint from
    /// the usual `AWS_*` environment variables, the retry budget from
    /// [`S3_RETRY_VARIABLE`]; the bucket must accept conditional writes,
    /// `If-None-Match`, as S3 has since 2024).
    pub fn open(location: &str) -> Result<Lake> {
        let fail = |reason: String| Error::Location { location: location.to_owned(), reason };
        let local = match location.split_once("://") {
            None => location,
            Some(("file", path)) => path,
            Some(("s3", rest)) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let prefix = prefix.trim_matches('/');
                if bucket.is_empty() {
                    return Err(fail("an s3:// lake needs a bucket: s3://BUCKET[/PREFIX]".to_owned()));
                }
                let root: Arc<dyn ObjectStore> = Arc::new(
                    object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .with_retry(retry_config().map_err(fail)?)
                        .build()
                        .map_err(|e| fail(e.to_string()))?,
                );
                let store: Arc<dyn ObjectStore> = match prefix {
                    "" => Arc::clone(&root),
                    prefix => Arc::new(object_store::prefix::PrefixStore::new(Arc::clone(&root), prefix)),
                };
                let location = match prefix {
                    "" => format!("s3://{bucket}"),
                    prefix => format!("s3://{bucket}/{prefix}"),
                };
                let mut lake = Lake::with_store(store, &location);
                lake.bucket = Some((format!("s3://{bucket}"), root));
                return Ok(lake);
            }
            Some((scheme, _)) => {
                return Err(fail(format!(
                    "the {scheme}:// scheme is not supported; use a local path, file:// or s3://"
                )));
            }
        };
        std::fs::create_dir_all(local).map_err(|e| fail(e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(local).map_err(|e| fail(e.to_string()))?;
        Ok(Lake::with_store(Arc::new(store), location))
    }

    /// A lake over any object store (tests, buckets).
    pub fn with_store(store: Arc<dyn ObjectStore>, location: &str) -> Lake {
        Lake { store, bucket: None, location: location.to_owned(), writer: writer_id().into() }
    }

    /// For a lake in a bucket: the bucket's URL (`s3://BUCKET`) and its
    /// object store, which a query engine registers to read the lake's files
    /// at `<location>/<path>`. `None` for a local lake.
    pub fn bucket(&self) -> Option<(&str, Arc<dyn ObjectStore>)> {
        self.bucket.as_ref().map(|(url, store)| (url.as_str(), Arc::clone(store)))
    }

    /// The id this process writes its files under.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// The object store behind the lake.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// Where the lake is, as given.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn commits_dir(task: TaskId) -> Path {
        Path::from(format!("_commits/{}/{}", task.topic, task.partition))
    }

    pub(crate) fn file_prefix(task: TaskId) -> String {
        format!("{}-{}-", task.topic, task.partition)
    }

    /// Writes one epoch of a task: its rows as Parquet, its state snapshot,
    /// then its commit record, only if no record of that epoch exists; if
    /// one does (another writer owns the task now), deletes what it wrote
    /// and returns [`Error::Fenced`].
    pub async fn commit(&self, epoch: Epoch) -> Result<CommitRecord> {
        let Epoch { task, epoch, rows, state, positions, watermark, max_event_time, outbox } = epoch;
        let rows = &rows;
        let files = encode_epoch(task, epoch, &self.writer, rows)?;
        let mut committed = Vec::with_capacity(files.len());
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut written: Vec<Path> = Vec::with_capacity(files.len() + 2);
        for file in files {
            let path = Path::from(file.path.as_str());
            let bytes = file.bytes.len() as u64;
            self.store.put(&path, PutPayload::from(file.bytes)).await.map_err(storage(&path))?;
            written.push(path);
            *counts.entry(file.table.name().to_owned()).or_default() += file.rows;
            committed.push(CommittedFile {
                table: file.table.name().to_owned(),
                path: file.path,
                rows: file.rows,
                bytes,
            });
        }
        let writer = &self.writer;
        let state_path = Path::from(format!("_state/{}/{}/{epoch:010}-{writer}.state", task.topic, task.partition));
        self.store.put(&state_path, PutPayload::from(state)).await.map_err(storage(&state_path))?;
        written.push(state_path.clone());
        let outbox_path = match outbox.is_empty() {
            true => None,
            false => {
                let path = Path::from(format!("_outbox/{}/{}/{epoch:010}-{writer}.jsonl", task.topic, task.partition));
                let mut body = Vec::with_capacity(outbox.len() * 512);
                for message in &outbox {
                    serde_json::to_writer(&mut body, message)
                        .map_err(|e| Error::CommitRecord { path: path.to_string(), reason: e.to_string() })?;
                    body.push(b'\n');
                }
                self.store.put(&path, PutPayload::from(body)).await.map_err(storage(&path))?;
                written.push(path.clone());
                Some(path.to_string())
            }
        };
        let record = CommitRecord {
            format: COMMIT_FORMAT.to_owned(),
            task,
            epoch,
            files: committed,
            state: state_path.to_string(),
            positions,
            watermark,
            max_event_time,
            rows: counts,
            outbox: outbox_path,
        };
        match self.create_record(&record).await {
            Err(Error::Fenced { task, epoch }) => {
                // Nobody will ever read them: the epoch is another writer's.
                for path in &written {
                    let _ = self.store.delete(path).await;
                }
                Err(Error::Fenced { task, epoch })
            }
            Err(error) => Err(error),
            Ok(()) => {
                self.prune(task, epoch.saturating_sub(KEEP_SNAPSHOTS)).await;
                Ok(record)
            }
        }
    }

    /// Deletes the task's state snapshots and outboxes of epochs up to
    /// `through`. Recovery and takeover read only the latest record's; the
    /// [`KEEP_SNAPSHOTS`] latest stay for readers that listed the log a
    /// moment ago (and for a claim, whose record names the previous
    /// snapshot). Best effort: what a failure leaves, the next commit deletes.
    async fn prune(&self, task: TaskId, through: u64) {
        if through == 0 {
            return;
        }
        let epoch_of = |name: &str| name.split(['-', '.']).next()?.parse::<u64>().ok();
        for dir in ["_state", "_outbox"] {
            let dir = Path::from(format!("{dir}/{}/{}", task.topic, task.partition));
            let Ok(listed) = self.store.list(Some(&dir)).try_collect::<Vec<_>>().await else { continue };
            for meta in listed {
                if meta.location.filename().and_then(epoch_of).is_some_and(|e| e <= through) {
                    let _ = self.store.delete(&meta.location).await;
                }
            }
        }
    }

    /// Creates a commit record unless one of that epoch exists.
    async fn create_record(&self, record: &CommitRecord) -> Result<()> {
        let path = Self::commits_dir(record.task).join(format!("{:010}.json", record.epoch).as_str());
        let body = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::CommitRecord { path: path.to_string(), reason: e.to_string() })?;
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.store.put_opts(&path, PutPayload::from(body), options).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(Error::Fenced { task: record.task.to_string(), epoch: record.epoch })
            }
            Err(source) => Err(Error::Storage { path: path.to_string(), source }),
        }
    }

    /// Takes ownership of a task for this writer: commits, as the next
    /// epoch, a copy of the latest record without files (same state,
    /// positions, watermark and outbox), then deletes what any writer left
    /// for later epochs. A previous owner still running is fenced at its
    /// next commit, and cannot commit files this cleanup misses. Returns the
    /// claim with the state it points at (none for a new task).
    pub async fn claim(&self, task: TaskId) -> Result<Option<(CommitRecord, Bytes)>> {
        // Another writer may commit between the read and the claim: read again.
        for _ in 0..100 {
            let Some(mut record) = self.latest_record(task).await? else {
                self.delete_after(task, 0).await?;
                return Ok(None);
            };
            record.epoch += 1;
            record.files.clear();
            record.rows.clear();
            match self.create_record(&record).await {
                Ok(()) => {
                    self.delete_after(task, record.epoch - 1).await?;
                    let state = self.read_state(&record).await?;
                    return Ok(Some((record, state)));
                }
                Err(Error::Fenced { .. }) => tokio::task::yield_now().await,
                Err(error) => return Err(error),
            }
        }
        Err(Error::Fenced { task: task.to_string(), epoch: 0 })
    }

    async fn read_state(&self, record: &CommitRecord) -> Result<Bytes> {
        let path = Path::from(record.state.as_str());
        self.store.get(&path).await.map_err(storage(&path))?.bytes().await.map_err(storage(&path))
    }

    /// The bytes of the object at `path`, or `None` when there is none.
    pub(crate) async fn get_if_exists(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.store.get(path).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(storage(path))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Error::Storage { path: path.to_string(), source }),
        }
    }

    pub(crate) async fn read_record(&self, path: &Path) -> Result<CommitRecord> {
        let bytes = self.store.get(path).await.map_err(storage(path))?.bytes().await.map_err(storage(path))?;
        let record: CommitRecord = serde_json::from_slice(&bytes)
            .map_err(|e| Error::CommitRecord { path: path.to_string(), reason: e.to_string() })?;
        if record.format != COMMIT_FORMAT {
            return Err(Error::CommitRecord {
                path: path.to_string(),
                reason: format!("format {:?}, expected {COMMIT_FORMAT:?}", record.format),
            });
        }
        Ok(record)
    }

    /// Epochs of a task with a commit record, ascending, with their paths.
    async fn committed_epochs(&self, task: TaskId) -> Result<Vec<(u64, Path)>> {
        let dir = Self::commits_dir(task);
        let listed: Vec<_> = self.store.list(Some(&dir)).try_collect().await.map_err(storage(&dir))?;
        let mut epochs: Vec<(u64, Path)> = listed
            .into_iter()
            .filter_map(|meta| {
                let epoch = meta.location.filename()?.strip_suffix(".json")?.parse().ok()?;
                Some((epoch, meta.location))
            })
            .collect();
        epochs.sort_by_key(|(epoch, _)| *epoch);
        Ok(epochs)
    }

    /// A task's latest commit record, if any (read only).
    pub async fn latest_record(&self, task: TaskId) -> Result<Option<CommitRecord>> {
        match self.committed_epochs(task).await?.pop() {
            Some((_, path)) => Ok(Some(self.read_record(&path).await?)),
            None => Ok(None),
        }
    }

    /// A task's latest commit record and state snapshot, if any (read only).
    pub async fn latest(&self, task: TaskId) -> Result<Option<(CommitRecord, Bytes)>> {
        let Some(record) = self.latest_record(task).await? else { return Ok(None) };
        let state = self.read_state(&record).await?;
        Ok(Some((record, state)))
    }

    /// Prepares a task to resume: returns its latest commit record and state
    /// snapshot (none for a new task) after deleting whatever it wrote for
    /// later, uncommitted epochs.
    pub async fn recover(&self, task: TaskId) -> Result<Option<(CommitRecord, Bytes)>> {
        let latest = self.latest_record(task).await?;
        self.delete_after(task, latest.as_ref().map_or(0, |record| record.epoch)).await?;
        let Some(record) = latest else { return Ok(None) };
        let state = self.read_state(&record).await?;
        Ok(Some((record, state)))
    }

    /// Deletes what any writer wrote for epochs of `task` after `epoch`.
    async fn delete_after(&self, task: TaskId, epoch: u64) -> Result<()> {
        // `<epoch>-<writer>...`: the epoch is the name's first field.
        let epoch_of = |name: &str| name.split(['-', '.']).next()?.parse::<u64>().ok();
        let prefix = Self::file_prefix(task);
        for table in Table::ALL {
            let dir = Path::from(crate::delta::history_dir(table));
            let listed: Vec<_> = self.store.list(Some(&dir)).try_collect().await.map_err(storage(&dir))?;
            for meta in listed {
                let Some(name) = meta.location.filename() else { continue };
                if name.strip_prefix(&prefix).and_then(epoch_of).is_some_and(|e| e > epoch) {
                    self.store.delete(&meta.location).await.map_err(storage(&meta.location))?;
                }
            }
        }
        for dir in ["_state", "_outbox"] {
            let dir = Path::from(format!("{dir}/{}/{}", task.topic, task.partition));
            let listed: Vec<_> = self.store.list(Some(&dir)).try_collect().await.map_err(storage(&dir))?;
            for meta in listed {
                if meta.location.filename().and_then(epoch_of).is_some_and(|e| e > epoch) {
                    self.store.delete(&meta.location).await.map_err(storage(&meta.location))?;
                }
            }
        }
        Ok(())
    }

    /// The messages a committed epoch publishes (none if it has no outbox).
    pub async fn read_outbox(&self, record: &CommitRecord) -> Result<Vec<OutboxMessage>> {
        let Some(path) = &record.outbox else { return Ok(Vec::new()) };
        let path = Path::from(path.as_str());
        let bytes = self.store.get(&path).await.map_err(storage(&path))?.bytes().await.map_err(storage(&path))?;
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice(line)
                    .map_err(|e| Error::CommitRecord { path: path.to_string(), reason: e.to_string() })
            })
            .collect()
    }

    /// How many commit records the lake holds (a listing, no reads): the
    /// change signal readers poll.
    pub async fn commit_count(&self) -> Result<usize> {
        let dir = Path::from("_commits");
        let listed: Vec<_> = self.store.list(Some(&dir)).try_collect().await.map_err(storage(&dir))?;
        Ok(listed.iter().filter(|meta| meta.location.extension() == Some("json")).count())
    }

    /// The epochs with a commit record, with the record's path, per task.
    pub(crate) async fn committed_epochs_by_task(&self) -> Result<BTreeMap<TaskId, Vec<(u64, Path)>>> {
        let dir = Path::from("_commits");
        let listed: Vec<_> = self.store.list(Some(&dir)).try_collect().await.map_err(storage(&dir))?;
        let mut tasks: BTreeMap<TaskId, Vec<(u64, Path)>> = BTreeMap::new();
        for meta in listed {
            // _commits/<topic>/<partition>/<epoch>.json
            let parts: Vec<&str> = meta.location.as_ref().split('/').collect();
            let [_, topic, partition, name] = parts[..] else { continue };
            let (Some(topic), Ok(partition), Some(Ok(epoch))) = (
                schemas::InputTopic::parse(topic),
                partition.parse::<u32>(),
                name.strip_suffix(".json").map(str::parse::<u64>),
            ) else {
                continue;
            };
            tasks.entry(TaskId { topic, partition }).or_default().push((epoch, meta.location));
        }
        for epochs in tasks.values_mut() {
            epochs.sort_by_key(|(epoch, _)| *epoch);
        }
        Ok(tasks)
    }

    /// Every commit record of every task, ordered by task and epoch.
    pub async fn commit_records(&self) -> Result<Vec<CommitRecord>> {
        let dir = Path::from("_commits");
        let listed: Vec<_> = self.store.list(Some(&dir)).try_collect().await.map_err(storage(&dir))?;
        let mut paths: Vec<Path> =
            listed.into_iter().map(|meta| meta.location).filter(|p| p.extension() == Some("json")).collect();
        paths.sort();
        let mut records = Vec::with_capacity(paths.len());
        for path in paths {
            records.push(self.read_record(&path).await?);
        }
        records.sort_by_key(|record| (record.task, record.epoch));
        Ok(records)
    }

    /// Messages the lake has committed: the sum of every task's latest
    /// source positions (a progress figure for `demo`).
    pub async fn committed_messages(&self) -> Result<u64> {
        let mut latest: BTreeMap<TaskId, (u64, u64)> = BTreeMap::new();
        for record in self.commit_records().await? {
            let done: u64 = record.positions.values().sum();
            let entry = latest.entry(record.task).or_default();
            if record.epoch >= entry.0 {
                *entry = (record.epoch, done);
            }
        }
        Ok(latest.values().map(|(_, done)| done).sum())
    }

    /// The committed files of every table (the reader's view of the lake).
    pub async fn committed_files(&self) -> Result<BTreeMap<String, Vec<CommittedFile>>> {
        let mut files: BTreeMap<String, Vec<CommittedFile>> = BTreeMap::new();
        for record in self.commit_records().await? {
            for file in record.files {
                files.entry(file.table.clone()).or_default().push(file);
            }
        }
        Ok(files)
    }
}

/// A writer id unique to this process: 16 hex digits from the process id,
/// the clock and std's randomly keyed hasher.
fn writer_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    format!("{:016x}", hasher.finish())
}
