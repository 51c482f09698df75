//! A task: one partition of one keyed input topic. It owns the state of the
//! entities hashed there, its watermark, the ids it has seen, and how far it
//! has read each source. It knows nothing of where events come from.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashSet;
use schemas::{CloudEvent, EventData, InputTopic, Timestamp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Stamp;
use crate::assets::AssetsState;
use crate::catalog::{Catalog, CatalogChange};
use crate::config::ProcessorConfig;
use crate::network::NetworkState;
use crate::rollouts::RolloutsState;
use crate::rows::{ClockMoveRow, DeadLetterRow, EpochRows};

/// Which task: a keyed input topic and a partition of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// The input topic.
    pub topic: InputTopic,
    /// The partition.
    pub partition: u32,
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[derive(Serialize, Deserialize)]
enum State {
    Assets(Box<AssetsState>),
    Rollouts(RolloutsState),
    Network(NetworkState),
    /// The intel "task" only tracks positions and duplicates; the catalog is global.
    Intel,
}

/// The last ids seen, to drop re-deliveries; bounded, oldest forgotten first.
///
/// Ids are kept as 128-bit hashes (two seeded XXH64s): a fraction of the
/// memory of the strings, no allocation per event, and a false "seen" needs a
/// collision among 2^128 values (about 1 in 10^27 over 200,000 ids).
struct RecentIds {
    ids: FxHashSet<u128>,
    order: VecDeque<u128>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        RecentIds { ids: FxHashSet::default(), order: VecDeque::new(), capacity }
    }

    /// False if `id` was seen among the last `capacity` ids.
    fn insert(&mut self, id: &str) -> bool {
        let id = id_hash(id);
        if !self.ids.insert(id) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.order.push_back(id);
        true
    }
}

fn id_hash(id: &str) -> u128 {
    use twox_hash::XxHash64;
    let (low, high) = (XxHash64::oneshot(0, id.as_bytes()), XxHash64::oneshot(0x9e37_79b9_7f4a_7c15, id.as_bytes()));
    u128::from(high) << 64 | u128::from(low)
}

/// Only the hashes, oldest first, are stored; the set is rebuilt on load.
impl Serialize for RecentIds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (front, back) = self.order.as_slices();
        (self.capacity, front, back).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RecentIds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (capacity, front, back) = <(usize, Vec<u128>, Vec<u128>)>::deserialize(deserializer)?;
        let order: VecDeque<u128> = front.into_iter().chain(back).collect();
        let ids = order.iter().copied().collect();
        Ok(RecentIds { ids, order, capacity })
    }
}

/// What happened to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Its state changes were applied.
    Event,
    /// Its id was seen before: dropped.
    Duplicate,
    /// Its position was already covered by the task's state: skipped.
    AlreadyApplied,
    /// Its time is more than its topic's lateness limit behind the task's
    /// newest event: the state it would revise may be compacted or
    /// forgotten, so it is a dead letter (reason `beyond_retention`)
    /// instead of a wrong revision.
    BeyondRetention,
}

/// Counts of one task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Events applied.
    pub events: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Messages that failed to decode or validate.
    pub dead_letters: u64,
}

/// One task.
#[derive(Serialize, Deserialize)]
pub struct Task {
    id: TaskId,
    state: State,
    next_arrival: u64,
    max_event_time: Option<Timestamp>,
    watermark: Timestamp,
    recent: RecentIds,
    /// Source → the next offset to read.
    positions: BTreeMap<String, u64>,
    // Snapshots are taken right after a flush, when this is empty.
    #[serde(skip)]
    dead_letters: Vec<DeadLetterRow>,
    #[serde(skip)]
    clock_moves: Vec<ClockMoveRow>,
    counts: TaskCounts,
    /// The retention cutoff of the last sweep of settled keys.
    swept: Timestamp,
    /// Keys forgotten by retention, for the state benchmark and logs.
    forgotten: u64,
    /// Size of the last snapshot, to size the next one's buffer.
    #[serde(skip)]
    last_snapshot_bytes: std::sync::atomic::AtomicUsize,
}

impl Task {
    /// An empty task.
    pub fn new(id: TaskId, config: &ProcessorConfig) -> Self {
        let state = match id.topic {
            InputTopic::Assets => State::Assets(Box::default()),
            InputTopic::Rollouts => State::Rollouts(RolloutsState::default()),
            InputTopic::Network => State::Network(NetworkState::default()),
            InputTopic::Intel => State::Intel,
        };
        Task {
            id,
            state,
            next_arrival: 0,
            max_event_time: None,
            watermark: Timestamp(i64::MIN),
            recent: RecentIds::new(config.dedupe_capacity),
            positions: BTreeMap::new(),
            dead_letters: Vec::new(),
            clock_moves: Vec::new(),
            counts: TaskCounts::default(),
            swept: Timestamp(i64::MIN),
            forgotten: 0,
            last_snapshot_bytes: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Size of the last snapshot taken of this task.
    pub fn last_snapshot_bytes(&self) -> usize {
        self.last_snapshot_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the size of a snapshot just taken.
    pub fn set_last_snapshot_bytes(&self, bytes: usize) {
        self.last_snapshot_bytes.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Which task this is.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The largest event time of this task's valid events.
    pub fn max_event_time(&self) -> Option<Timestamp> {
        self.max_event_time
    }

    /// DOMAIN.md's `now` for this task.
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    /// Source → next offset, for the commit record.
    pub fn positions(&self) -> &BTreeMap<String, u64> {
        &self.positions
    }

    /// Counts so far.
    pub fn counts(&self) -> TaskCounts {
        self.counts
    }

    /// Whether the message at `offset` of `source` is already reflected in this task's state.
    pub fn covers(&self, source: &str, offset: u64) -> bool {
        self.positions.get(source).is_some_and(|next| offset < *next)
    }

    fn advance_position(&mut self, source: &str, offset: u64) {
        match self.positions.get_mut(source) {
            Some(next) => *next = (*next).max(offset + 1),
            None => {
                self.positions.insert(source.to_owned(), offset + 1);
            }
        }
    }

    /// Applies one valid event read at `offset` of `source`. Intel events
    /// change `catalog`; the caller passes the returned change to every task.
    pub fn apply(
        &mut self,
        source: &str,
        offset: u64,
        event: &CloudEvent,
        catalog: &mut Catalog,
        config: &ProcessorConfig,
    ) -> (Applied, Option<CatalogChange>) {
        if let Some(skipped) = self.admit(source, offset, &event.id) {
            return (skipped, None);
        }
        if self.beyond_retention(source, offset, event, config) {
            return (Applied::BeyondRetention, None);
        }
        let stamp = self.stamp(event.time);
        let change = match (&self.state, &event.data) {
            (State::Intel, EventData::VulnIntel(intel)) => catalog.apply_intel(stamp, &event.source, intel),
            (State::Intel, EventData::VulnKev(kev)) => catalog.apply_kev(stamp, &event.source, kev),
            (State::Intel, EventData::VulnEpss(epss)) => catalog.apply_epss(stamp, &event.source, epss),
            (State::Intel, EventData::PatchRelease(release)) => catalog.apply_release(stamp, release),
            _ => {
                self.apply_admitted(stamp, event, catalog, config);
                None
            }
        };
        (Applied::Event, change)
    }

    /// [`Task::apply`] for a task of a keyed topic, which only reads the
    /// catalog: tasks of different partitions can then run in parallel.
    /// An intel event is ignored (the intel task takes them).
    pub fn apply_keyed(
        &mut self,
        source: &str,
        offset: u64,
        event: &CloudEvent,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) -> Applied {
        if let Some(skipped) = self.admit(source, offset, &event.id) {
            return skipped;
        }
        if self.beyond_retention(source, offset, event, config) {
            return Applied::BeyondRetention;
        }
        let stamp = self.stamp(event.time);
        self.apply_admitted(stamp, event, catalog, config);
        Applied::Event
    }

    /// Whether an admitted event of a keyed topic is older than its
    /// topic's lateness limit ([`ProcessorConfig::lateness_limit_us`]),
    /// behind the task's largest event time (not its watermark, which the
    /// wall clock may move: an event's age is measured among events). If so
    /// it becomes a dead letter, re-encoded, and is counted as one: the state
    /// it would revise may be compacted or forgotten (DOMAIN.md "Exact or
    /// refused"). Intel events have no age limit: the catalog keeps what
    /// every feed said.
    fn beyond_retention(&mut self, source: &str, offset: u64, event: &CloudEvent, config: &ProcessorConfig) -> bool {
        let Some(newest) = self.max_event_time else { return false };
        let Some(limit) = config.lateness_limit_us(self.id.topic) else { return false };
        if event.time >= newest.add_micros(-limit) {
            return false;
        }
        self.counts.events -= 1;
        self.counts.dead_letters += 1;
        // A Kafka partition's topic and partition, else the file and the task's.
        let kafka = schemas::source::Source::parse(source);
        let (topic, partition) = match &kafka {
            Some(kafka) => (kafka.topic.as_str(), kafka.partition),
            None => (source, self.id.partition as i32),
        };
        let error = if self.id.topic == InputTopic::Assets {
            format!(
                "beyond retention: event time {} is more than {} (processor.late_alert_horizon_secs) before the newest \
                 event of its task ({newest}); the history it would revise is compacted",
                event.time,
                span(limit),
            )
        } else {
            format!(
                "beyond retention: event time {} is more than {} (processor.settled_retention_days) before the newest \
                 event of its task ({newest}); the state it would revise may be forgotten",
                event.time,
                span(limit),
            )
        };
        // A decoded event always encodes again (the decoder's round trip is
        // property-tested): a failure here is a bug, not bad input.
        let payload = serde_json::to_vec(event).expect("a decoded event encodes");
        let key = event.data.subject();
        self.dead_letters.push(DeadLetterRow::new(topic, partition, offset as i64, Some(key), error, &payload, newest));
        true
    }

    /// Whether the message at `offset` of `source` is new: not already
    /// applied by position, and not a duplicate event id. Records it if so.
    fn admit(&mut self, source: &str, offset: u64, event_id: &str) -> Option<Applied> {
        if self.covers(source, offset) {
            return Some(Applied::AlreadyApplied);
        }
        self.advance_position(source, offset);
        if !self.recent.insert(event_id) {
            self.counts.duplicates += 1;
            return Some(Applied::Duplicate);
        }
        self.counts.events += 1;
        None
    }

    fn stamp(&mut self, time: Timestamp) -> Stamp {
        let stamp: Stamp = (time, self.next_arrival);
        self.next_arrival += 1;
        stamp
    }

    /// Applies an admitted event of a keyed topic to this task's state machine.
    fn apply_admitted(&mut self, stamp: Stamp, event: &CloudEvent, catalog: &Catalog, config: &ProcessorConfig) {
        match (&mut self.state, &event.data) {
            (State::Assets(state), _) => state.apply(stamp, event, self.watermark, catalog, config),
            (State::Rollouts(state), EventData::CanaryStage(stage)) => state.apply(stamp, stage),
            (State::Network(state), EventData::FlowObservation(flow)) => state.apply(stamp, flow, config),
            // Routing sends each type to its topic's task; anything else is a caller bug we tolerate.
            _ => {}
        }
        if self.id.topic != InputTopic::Intel {
            self.max_event_time = self.max_event_time.max(Some(event.time));
            let watermark = event.time.add_micros(-config.allowed_lateness_us);
            self.advance_watermark(watermark, catalog, config);
        }
    }

    /// Records a message that failed to decode or validate, read at `offset` of `source`.
    pub fn dead_letter(&mut self, source: &str, offset: u64, row: DeadLetterRow) -> Applied {
        if self.covers(source, offset) {
            return Applied::AlreadyApplied;
        }
        self.advance_position(source, offset);
        self.counts.dead_letters += 1;
        self.dead_letters.push(row);
        Applied::Event
    }

    /// Moves the watermark forward (never back) and runs the timers it passes.
    ///
    /// Also when it does not move: a late event's checks, or a catalog
    /// change's, may be queued behind it, and run now, right after what
    /// queued them, not whenever a later event moves the watermark (which
    /// may never come: a second `replay` of older events).
    pub fn advance_watermark(&mut self, watermark: Timestamp, catalog: &Catalog, config: &ProcessorConfig) {
        let watermark = watermark.max(self.watermark);
        self.watermark = watermark;
        match &mut self.state {
            State::Assets(state) => state.advance(watermark, catalog, config),
            State::Rollouts(state) => state.advance(watermark, config),
            State::Network(state) => state.advance(watermark),
            State::Intel => {}
        }
    }

    /// `run` on a quiet task: moves the watermark to `watermark` (the wall
    /// clock `wall` minus the allowed lateness), runs the timers it passes,
    /// and records the move for the `clock_watermarks` table. Nothing moves
    /// for a task that has seen no event (it has no deadline to reach), for
    /// the intel task (it has no watermark), or backwards. True if it moved.
    pub fn advance_by_clock(
        &mut self,
        watermark: Timestamp,
        wall: Timestamp,
        catalog: &Catalog,
        config: &ProcessorConfig,
    ) -> bool {
        if self.id.topic == InputTopic::Intel || self.max_event_time.is_none() || watermark <= self.watermark {
            return false;
        }
        self.clock_moves.push(ClockMoveRow {
            task: self.id.to_string(),
            watermark,
            previous_watermark: Some(self.watermark).filter(|w| w.micros() != i64::MIN),
            last_event_at: self.max_event_time,
            moved_at: wall,
        });
        self.advance_watermark(watermark, catalog, config);
        true
    }

    /// Serialized bytes of each part of an assets task's state (empty for
    /// other tasks), for the state benchmark.
    pub fn census(&self) -> Vec<(&'static str, usize)> {
        match &self.state {
            State::Assets(state) => state.census(),
            _ => Vec::new(),
        }
    }

    /// Marks the rows a catalog change may affect and queues the checks it
    /// may answer differently. They run at the task's next event or flush,
    /// not here: a catalog restored from the lake is behind until the intel
    /// topic is read again to its end, and a check run meanwhile would judge
    /// with records missing (an `allow` after a fixing patch whose release
    /// is not re-read yet looks overdue).
    pub fn catalog_changed(&mut self, change: &CatalogChange) {
        if let State::Assets(state) = &mut self.state {
            state.catalog_changed(change);
        }
    }

    /// The rows changed since the last flush, with their next revisions.
    pub fn flush(&mut self, catalog: &mut Catalog, config: &ProcessorConfig) -> EpochRows {
        let mut out = EpochRows::default();
        match &mut self.state {
            State::Assets(state) => {
                // Checks queued since the last event (a catalog change) run
                // first: a quiet task's alerts do not wait for its next event.
                state.advance(self.watermark, catalog, config);
                state.flush(catalog, config, self.watermark, &mut out)
            }
            State::Rollouts(state) => state.flush(config, &mut out),
            State::Network(state) => state.flush(&mut out),
            State::Intel => (out.cves, out.patches) = catalog.take_rows(),
        }
        out.dead_letters = std::mem::take(&mut self.dead_letters);
        out.clock_watermarks = std::mem::take(&mut self.clock_moves);
        self.sweep(catalog, config);
        out
    }

    /// Keys forgotten by retention so far.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Retention (`processor.settled_retention_days`): after a flush, once
    /// the cutoff (the newest event time minus the retention, at most the
    /// watermark) has moved a day since the last sweep, forgets the settled
    /// keys whose events are all before it. Daily, so the scan of every key
    /// costs little per epoch; a key is kept up to a day past its retention.
    fn sweep(&mut self, catalog: &mut Catalog, config: &ProcessorConfig) {
        // The intel task has no watermark: its cutoff follows the catalog's newest event.
        let cutoff = match (&self.state, self.max_event_time, catalog.max_time()) {
            (State::Intel, _, Some(newest)) => newest.add_micros(-config.settled_retention_us),
            (State::Intel, _, None) | (_, None, _) => return,
            (_, Some(newest), _) => newest.add_micros(-config.settled_retention_us).min(self.watermark),
        };
        if config.settled_retention_us == 0 {
            return;
        }
        if self.swept.micros() != i64::MIN && cutoff < self.swept.add_micros(schemas::time::MICROS_PER_DAY) {
            return;
        }
        self.swept = cutoff;
        let forgotten = match &mut self.state {
            State::Assets(state) => {
                let (exposures, outcomes) = state.forget(cutoff, &*catalog);
                exposures + outcomes
            }
            State::Rollouts(state) => state.forget(cutoff),
            State::Network(state) => state.forget(cutoff, config),
            State::Intel => {
                catalog.forget_before(cutoff);
                0
            }
        };
        self.forgotten += forgotten as u64;
        match &mut self.state {
            State::Assets(state) => state.trim(),
            State::Rollouts(state) => state.trim(),
            State::Network(state) => state.trim(),
            State::Intel => {}
        }
    }
}

/// A span of µs as a person reads it: whole days, else whole hours, else seconds.
fn span(micros: i64) -> String {
    use schemas::time::{MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_SECOND};
    match micros {
        m if m % MICROS_PER_DAY == 0 => plural(m / MICROS_PER_DAY, "day"),
        m if m % MICROS_PER_HOUR == 0 => plural(m / MICROS_PER_HOUR, "hour"),
        m => format!("{} s", m / MICROS_PER_SECOND),
    }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
}
