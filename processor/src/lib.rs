//! The processor: per-task state machines that turn events into rows of the
//! lake tables and alerts, in event time.
//!
//! - [`task`]: one partition of one keyed topic: duplicates, watermark,
//!   source positions, and one of the state machines below.
//! - [`assets`]: inventory, exposures with SLA due dates and breaches, patch
//!   outcomes with time-to-patch and post-patch posture, and their alerts.
//! - [`rollouts`]: canary rollups and gates.
//! - [`network`]: hourly segmentation drift.
//! - [`catalog`]: the global intel catalog (CVEs, patches) every task consults.
//! - [`rows`]: the rows each table gets, declared once with their columns
//!   ([`columns`]: the Arrow schema and encoder derived from them);
//!   [`alerts`]: the rules and their OCSF.
//! - [`config`]: lateness, SLAs, limits and windows.
//! - [`lake`]: the lake's store, commit records and snapshots; [`encode`]:
//!   the tables' Parquet encoding;
//!   [`delta`]: publishing committed epochs to the Delta tables, optimize and
//!   vacuum; [`latest`]: the tables' latest forms; [`compact`]: compaction.
//! - [`pipeline`]: a processor bound to a lake (recovery, epoch commits,
//!   publishing); [`replay`]: a file source's lines through a pipeline.
//!
//! [`Processor`] routes events to tasks the way the Kafka pipeline partitions
//! them, so `replay` and `run` compute the same rows. This crate takes events
//! and source positions from any source and has no Kafka dependency.

pub mod alerts;
pub mod assets;
pub mod catalog;
pub mod columns;
pub mod config;
pub mod current;
pub mod delta;
pub mod encode;
pub mod error;
mod interner;
pub mod lake;
mod migrate;
pub mod network;
pub mod pipeline;
pub mod replay;
pub mod rollouts;
pub mod rows;
pub mod task;

use schemas::{CloudEvent, EventType, InputTopic, Timestamp};

use crate::catalog::Catalog;
use crate::config::ProcessorConfig;
use crate::rows::{DeadLetterRow, EpochRows};
use crate::task::{Applied, Task, TaskId};

/// First bytes of every state snapshot; a new format gets a new number.
const SNAPSHOT_MAGIC: &[u8] = b"patchtrail-state/6\n";

/// Position of an event in a task's event-time order: its time, then its
/// arrival (equal times are taken in arrival order).
pub type Stamp = (Timestamp, u64);

/// Inserts `value` in a vector sorted by stamp, returning its index. Events
/// mostly arrive in order, so the common case is a push.
pub(crate) fn insert_sorted<T>(items: &mut Vec<(Stamp, T)>, stamp: Stamp, value: T) -> usize {
    let idx = if items.last().is_none_or(|(last, _)| *last < stamp) {
        items.len()
    } else {
        items.partition_point(|(s, _)| *s < stamp)
    };
    items.insert(idx, (stamp, value));
    idx
}

/// Gives back spare capacity. A collection keeps the capacity of its
/// largest moment: after months of keys coming and going, per-key lists and
/// tables trimmed by retention would hold several times the memory their
/// contents need (the state benchmark measured three times, growing). Each
/// state trims its collections after its daily retention sweep; a collection
/// is shrunk only when it uses less than half of its capacity, so one that
/// stays the same size is never copied twice.
pub(crate) trait Trim {
    fn trim(&mut self);
}

/// Whether a collection of `len` items in `capacity` slots is worth
/// shrinking: less than half in use, and more than a few slots spare.
fn wasteful(len: usize, capacity: usize) -> bool {
    capacity > 2 * len + 16
}

impl<T> Trim for Vec<T> {
    fn trim(&mut self) {
        if wasteful(self.len(), self.capacity()) {
            self.shrink_to_fit();
        }
    }
}

impl<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher> Trim for std::collections::HashMap<K, V, S> {
    fn trim(&mut self) {
        if wasteful(self.len(), self.capacity()) {
            self.shrink_to_fit();
        }
    }
}

impl<K: Eq + std::hash::Hash, S: std::hash::BuildHasher> Trim for std::collections::HashSet<K, S> {
    fn trim(&mut self) {
        if wasteful(self.len(), self.capacity()) {
            self.shrink_to_fit();
        }
    }
}

impl<T: Ord> Trim for std::collections::BinaryHeap<T> {
    fn trim(&mut self) {
        if wasteful(self.len(), self.capacity()) {
            self.shrink_to_fit();
        }
    }
}

/// The partition of `key` among `partitions`, as Kafka's default partitioner
/// places it (murmur2 of the key bytes, sign bit cleared), so that `replay`
/// groups events into the same tasks as `run`.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions.max(1)
}

/// Kafka's murmur2 (seed 0x9747b28c).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// Every task of one pipeline instance over a fixed number of partitions per
/// keyed topic, plus the global intel catalog.
pub struct Processor {
    config: ProcessorConfig,
    partitions: u32,
    catalog: Catalog,
    intel: Task,
    /// Assets, rollouts and network tasks, `partitions` of each.
    tasks: Vec<Task>,
}

const KEYED: [InputTopic; 3] = [InputTopic::Assets, InputTopic::Rollouts, InputTopic::Network];

impl Processor {
    /// A processor with `partitions` tasks per keyed topic.
    pub fn new(config: ProcessorConfig, partitions: u32) -> Self {
        let partitions = partitions.max(1);
        let tasks = KEYED
            .iter()
            .flat_map(|&topic| (0..partitions).map(move |partition| TaskId { topic, partition }))
            .map(|id| Task::new(id, &config))
            .collect();
        let intel = Task::new(TaskId { topic: InputTopic::Intel, partition: 0 }, &config);
        Processor { config, partitions, catalog: Catalog::default(), intel, tasks }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    /// The intel catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The task that owns events of `event_type` keyed by `key`.
    pub fn route(&self, event_type: EventType, key: &str) -> TaskId {
        self.route_topic(event_type.topic(), key)
    }

    /// The task that owns messages of `topic` keyed by `key`.
    pub fn route_topic(&self, topic: InputTopic, key: &str) -> TaskId {
        match topic {
            InputTopic::Intel => TaskId { topic, partition: 0 },
            topic => TaskId { topic, partition: partition_for(key, self.partitions) },
        }
    }

    fn task_mut(&mut self, id: TaskId) -> &mut Task {
        match KEYED.iter().position(|&topic| topic == id.topic) {
            Some(idx) => &mut self.tasks[idx * self.partitions as usize + (id.partition % self.partitions) as usize],
            None => &mut self.intel,
        }
    }

    /// Every task, intel first.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        std::iter::once(&self.intel).chain(&self.tasks)
    }

    /// Applies one valid event read at `offset` of `source`, routed by its key.
    pub fn apply(&mut self, source: &str, offset: u64, event: &CloudEvent) -> Applied {
        let id = self.route(event.event_type(), &event.subject);
        self.apply_to(id, source, offset, event)
    }

    /// Applies one valid event to the task `id` (a Kafka source routes by the
    /// partition the message was read from).
    pub fn apply_to(&mut self, id: TaskId, source: &str, offset: u64, event: &CloudEvent) -> Applied {
        let Processor { config, catalog, intel, tasks, partitions, .. } = self;
        let task = match KEYED.iter().position(|&topic| topic == id.topic) {
            Some(idx) => &mut tasks[idx * *partitions as usize + (id.partition % *partitions) as usize],
            None => intel,
        };
        let (applied, change) = task.apply(source, offset, event, catalog, config);
        if let Some(change) = change {
            for task in tasks.iter_mut() {
                task.catalog_changed(&change);
            }
        }
        applied
    }

    /// The tasks of the keyed topics, with the catalog and configuration
    /// they read: events for different tasks can be applied on different
    /// threads ([`Task::apply_keyed`]). [`Processor::keyed_index`] finds a
    /// task in the slice.
    pub fn keyed_tasks_mut(&mut self) -> (&mut [Task], &Catalog, &ProcessorConfig) {
        (&mut self.tasks, &self.catalog, &self.config)
    }

    /// The tasks of the keyed topics, in [`Processor::keyed_index`] order.
    pub fn keyed_tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// The index of a keyed task in [`Processor::keyed_tasks_mut`].
    pub fn keyed_index(&self, id: TaskId) -> Option<usize> {
        let idx = KEYED.iter().position(|&topic| topic == id.topic)?;
        (id.partition < self.partitions).then(|| idx * self.partitions as usize + id.partition as usize)
    }

    /// Forgets a task's state (its partition went to another instance); the
    /// intel task's reset empties the catalog too.
    pub fn reset(&mut self, id: TaskId) {
        if id.topic == InputTopic::Intel {
            self.catalog = Catalog::default();
        }
        let task = Task::new(id, &self.config);
        *self.task_mut(id) = task;
    }

    /// Records a message that failed to decode or validate, owned by `task`.
    pub fn dead_letter(&mut self, task: TaskId, source: &str, offset: u64, row: DeadLetterRow) -> Applied {
        self.task_mut(task).dead_letter(source, offset, row)
    }

    /// The end of the input: every task's watermark moves up to the largest
    /// event time among all tasks, and the timers it passes fire.
    pub fn finish_input(&mut self) {
        self.finish_input_where(None, |_| true);
    }

    /// [`Processor::finish_input`] over the tasks `owned` accepts, up to
    /// `max_time` (by default the largest event time among them; several
    /// instances pass the largest of the whole input, so they end alike).
    pub fn finish_input_where(&mut self, max_time: Option<Timestamp>, owned: impl Fn(TaskId) -> bool) {
        let times = self.tasks.iter().filter(|task| owned(task.id())).filter_map(Task::max_event_time);
        let Some(max_time) = max_time.or(times.max()) else { return };
        let Processor { config, catalog, tasks, .. } = self;
        for task in tasks.iter_mut().filter(|task| owned(task.id())) {
            task.advance_watermark(max_time, catalog, config);
        }
    }

    /// [`Task::advance_by_clock`] for task `id`: `run` moves a quiet task's
    /// watermark to the wall clock `wall` minus the allowed lateness.
    pub fn advance_by_clock(&mut self, id: TaskId, wall: Timestamp) -> bool {
        let watermark = wall.add_micros(-self.config.allowed_lateness_us);
        let Some(idx) = self.keyed_index(id) else { return false };
        let Processor { config, catalog, tasks, .. } = self;
        tasks[idx].advance_by_clock(watermark, wall, catalog, config)
    }

    /// The state of one task as bytes, to store with its commit; the intel
    /// task's includes the catalog. Take it right after [`Processor::flush`].
    /// An error is a bug (a task this processor does not have, or state
    /// postcard cannot encode), never written as an empty snapshot.
    pub fn snapshot(&self, id: TaskId) -> error::Result<Vec<u8>> {
        let fail = |reason: String| error::Error::SnapshotEncode { task: id.to_string(), reason };
        let (task, catalog) = match self.task(id) {
            Some(task) if id.topic == InputTopic::Intel => (task, Some(&self.catalog)),
            Some(task) => (task, None),
            None => return Err(fail("the processor has no such task".to_owned())),
        };
        // Sized from the previous snapshot with room for an epoch's growth, so
        // a large state is written once, without regrowing (and copying) the buffer.
        let mut bytes = Vec::with_capacity(task.last_snapshot_bytes().max(4096) / 4 * 5);
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
        let bytes = postcard::to_extend(&(task, catalog), bytes).map_err(|e| fail(e.to_string()))?;
        task.set_last_snapshot_bytes(bytes.len());
        Ok(bytes)
    }

    /// Replaces a task's state with a snapshot taken by [`Processor::snapshot`].
    pub fn restore(&mut self, id: TaskId, bytes: &[u8], path: &str) -> error::Result<()> {
        let fail = |reason: String| error::Error::Snapshot { path: path.to_owned(), reason };
        let body = bytes
            .strip_prefix(SNAPSHOT_MAGIC)
            .ok_or_else(|| fail("not a patchtrail state snapshot of this format version".to_owned()))?;
        let (task, catalog): (Task, Option<Catalog>) = postcard::from_bytes(body).map_err(|e| fail(e.to_string()))?;
        if task.id() != id {
            return Err(fail(format!("it holds task {}, expected {id}", task.id())));
        }
        if let Some(catalog) = catalog {
            self.catalog = catalog;
        }
        *self.task_mut(id) = task;
        Ok(())
    }

    /// The task with this id, if this processor has it.
    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks().find(|task| task.id() == id)
    }

    /// Every task's rows changed since the last flush.
    pub fn flush(&mut self) -> Vec<(TaskId, EpochRows)> {
        self.flush_where(|_| true)
    }

    /// The rows changed since the last flush of the tasks `owned` accepts.
    pub fn flush_where(&mut self, owned: impl Fn(TaskId) -> bool) -> Vec<(TaskId, EpochRows)> {
        let Processor { config, catalog, intel, tasks, .. } = self;
        let mut out = Vec::new();
        for task in std::iter::once(intel).chain(tasks.iter_mut()) {
            if owned(task.id()) {
                out.push((task.id(), task.flush(catalog, config)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_gives_back_capacity_only_below_half_use() {
        let mut list: Vec<u64> = (0..1000).collect();
        list.truncate(600);
        list.trim();
        assert_eq!(list.capacity(), 1000, "more than half in use: kept, never copied");
        list.truncate(100);
        list.trim();
        assert_eq!((list.len(), list.capacity()), (100, 100));
        let mut table: rustc_hash::FxHashMap<u64, u64> = (0..100_000).map(|i| (i, i)).collect();
        let peak = table.capacity();
        table.retain(|&key, _| key < 1000);
        table.trim();
        assert!(table.capacity() < peak / 50, "capacity {} of a table holding 1000 (peak {peak})", table.capacity());
        assert_eq!(table.get(&999), Some(&999));
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Values from the Java client's Utils.murmur2 tests.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"") as i32, 275646681);
    }
}
