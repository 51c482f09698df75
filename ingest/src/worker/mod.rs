//! The pipeline worker of `patchtrail run`: one instance in a Kafka
//! consumer group, driving the processor's tasks.
//!
//! One thread polls the group consumer and the intel reader and applies
//! each message to the task of its partition ([`batch`]); the lake writer
//! thread commits epochs behind it. Rebalances arrive inside `poll`, on this
//! same thread ([`owner`]): a gained partition's task is restored from its
//! latest commit and starts at the recorded offset; a revoked one is
//! committed before the group hands it on. After each commit, the epoch's
//! outbox is published and the offsets it covers are stored in Kafka, in
//! that order (DESIGN.md "Exactly-once into the lake"). [`stall`] tells
//! when to rejoin the group because nobody makes progress on a partition;
//! [`finish`] when `--stop-at-end` is done; [`idle`] moves the watermarks
//! of quiet tasks by the wall clock. [`publisher`] keeps the lake's Delta
//! tables up to date behind the commits.
//!
//! [`Worker`] is the one owner of the instance's state; the other files
//! are functions that return decisions. The [`owner::Owner`] sits behind a
//! mutex only because the consumer's rebalance callback needs it inside
//! `poll` (on this thread, so the lock is never contended).
//!
//! Shutdown: once the token is cancelled, the loop stops consuming,
//! commits what it consumed (after the previous epoch's outbox is
//! delivered), delivers this epoch's outbox and stores the offsets, each
//! wait bounded by the shutdown deadline.
//!
//! The only module of ingest that sees the processor (feature `worker`).

mod batch;
mod finish;
mod idle;
mod owner;
pub mod publisher;
mod stall;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use processor::config::ProcessorConfig;
use processor::lake::Lake;
use processor::pipeline::{Committed, Pipeline};
use processor::task::TaskId;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use schemas::ErrorClass;
use tokio_util::sync::CancellationToken;

use crate::kafka::{self, GroupConsumer, IntelReader, KafkaSettings, Publisher, TopicNames};
use crate::metrics::PipelineMetrics;
use finish::Ends;
use idle::{IdleClock, now_micros};
use owner::{INTEL, Owner, Patience, lock};
use stall::{STALL_LIMIT, StallWatch};

/// How long a call to the cluster's metadata may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong running the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kafka call failed.
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    /// The lake or a task failed.
    #[error(transparent)]
    Lake(#[from] processor::error::Error),
    /// A call to the cluster failed for a reason retries cannot heal, or
    /// kept failing for five minutes.
    #[error("cannot {what}")]
    Call {
        /// What was being done.
        what: &'static str,
        /// The last failure.
        source: kafka::Error,
    },
    /// The worker was stopped while it retried a call.
    #[error("stopped while trying to {what}")]
    Stopped {
        /// What was being done.
        what: &'static str,
    },
    /// Input topics the cluster does not have.
    #[error(
        "input topics missing on {brokers}: {topics} (create them, or produce with `patchtrail simulate --brokers`)"
    )]
    MissingTopics {
        /// The bootstrap servers.
        brokers: String,
        /// The missing topics, comma-separated.
        topics: String,
    },
    /// A partition could not be taken or handed on inside a rebalance.
    #[error("a rebalance failed")]
    Rebalance(#[source] Box<Error>),
    /// Stopping, something was not delivered or committed before the deadline.
    #[error(
        "stopped before everything was delivered (the lake keeps every committed epoch; \
         an undelivered outbox is sent again on restart, uncommitted messages are read again)"
    )]
    Stopping(#[source] Box<Error>),
}

impl Error {
    /// Whose problem it is (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Kafka(error) | Error::Call { source: error, .. } => error.class(),
            Error::Lake(error) => error.class(),
            Error::Stopped { .. } => ErrorClass::Transient,
            Error::MissingTopics { .. } => ErrorClass::Input,
            Error::Rebalance(inner) | Error::Stopping(inner) => inner.class(),
        }
    }
}

/// The worker's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How one instance runs: the configuration with the command's flags on top.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The lake location.
    pub lake: String,
    /// The consumer group.
    pub group: String,
    /// Stop once everything that was in the topics at start is committed.
    pub stop_at_end: bool,
    /// Commit at least this often when messages arrived.
    pub commit_interval: Duration,
    /// Commit after this many messages.
    pub epoch_messages: u64,
    /// Messages larger than this are dead letters.
    pub max_message_bytes: usize,
    /// librdkafka's fetch buffer per partition.
    pub fetch_buffer_kbytes: u32,
    /// How long stopping may take.
    pub shutdown_timeout: Duration,
    /// Threads applying a batch; 0: the cores but one.
    pub workers: usize,
    /// The processor's settings.
    pub processor: ProcessorConfig,
}

/// One partition of a keyed input topic, and its task.
pub(super) struct Partition {
    task: TaskId,
    topic: String,
    partition: i32,
}

/// One running instance.
pub struct Worker {
    settings: Settings,
    owner: Arc<Mutex<Owner>>,
    consumer: GroupConsumer<Owner>,
    intel: IntelReader,
    /// Asks the end offsets, on its own connection (see [`kafka::watermark_client`]).
    watermarks: BaseConsumer,
    topics: TopicNames,
    /// Partitions of each keyed topic, and of the intel topic.
    partitions: BTreeMap<String, i32>,
    /// End offsets of every input partition when the instance started.
    start_ends: Ends,
    /// `--stop-at-end`: tasks whose owner has yet to commit the end of the input.
    unfinished: BTreeSet<TaskId>,
    metrics: PipelineMetrics,
    /// Threads applying a batch (the polling thread is one of them).
    workers: usize,
    /// Set by the Kafka clients when the brokers are unreachable (readiness false).
    brokers_down: Arc<AtomicBool>,
    /// Cancelled when the instance must stop.
    cancel: CancellationToken,
}

impl Worker {
    /// Joins the group: reads the topics' metadata (creating the output
    /// topics when missing), opens the pipeline on the lake, restores the
    /// committed catalog and reads the intel topic to its end, then
    /// subscribes. Calls that can heal are retried until `cancel`.
    pub fn start(
        settings: Settings,
        kafka_settings: KafkaSettings,
        topics: TopicNames,
        metrics: PipelineMetrics,
        brokers_down: Arc<AtomicBool>,
        cancel: &CancellationToken,
    ) -> Result<Worker> {
        let mut names: Vec<&str> = topics.keyed().to_vec();
        names.push(&topics.intel);
        let partitions = retry("read the topics' metadata", cancel, || {
            kafka::partition_counts(&kafka_settings, &names, METADATA_TIMEOUT)
        })?;
        let missing: Vec<&str> =
            names.iter().copied().filter(|name| partitions.get(*name).is_none_or(|n| *n == 0)).collect();
        if !missing.is_empty() {
            return Err(Error::MissingTopics { brokers: kafka_settings.brokers.clone(), topics: missing.join(", ") });
        }
        let max_partitions = topics.keyed().iter().map(|t| partitions[*t]).max().unwrap_or(1).max(1) as u32;
        // The output topics, when missing: as many partitions as the widest input.
        let specs = topics.outputs(max_partitions as i32);
        retry("create the output topics", cancel, || kafka::create_topics(&kafka_settings, &specs, METADATA_TIMEOUT))?;
        let lake = Lake::open(&settings.lake)?;
        let mut pipeline = Pipeline::open_owning_none(lake, settings.processor.clone(), max_partitions)?;
        // The catalog first: the last committed one, then the intel topic up to its end (DESIGN.md).
        pipeline.load(INTEL)?;
        let publisher = Publisher::with_down_flag(&kafka_settings, Arc::clone(&brokers_down))?;
        let owner = Owner {
            pipeline,
            publisher,
            topics: topics.clone(),
            assigned: BTreeSet::new(),
            fenced: BTreeSet::new(),
            intel_owner: false,
            intel_reseek: false,
            failure: None,
            metrics: metrics.clone(),
            max_message_bytes: settings.max_message_bytes,
            patience: Patience::UntilStopped(cancel.clone()),
            counted: BTreeMap::new(),
        };
        let intel_partitions = partitions[&topics.intel];
        let intel = IntelReader::new(
            &kafka_settings,
            &topics.intel,
            intel_partitions,
            &owner.intel_positions(),
            settings.fetch_buffer_kbytes,
        )?;
        let owner = Arc::new(Mutex::new(owner));
        let watermarks = kafka::watermark_client(&kafka_settings)?;
        let mut start_ends = Ends::new();
        for name in &names {
            let ends = retry("read end offsets", cancel, || {
                kafka::end_offsets(&watermarks, name, partitions[*name], METADATA_TIMEOUT)
            })?;
            for (partition, end) in ends {
                start_ends.insert((name.to_string(), partition), end);
            }
        }
        let consumer = kafka::group_consumer(
            &kafka_settings,
            &settings.group,
            &topics.keyed(),
            settings.fetch_buffer_kbytes,
            Arc::clone(&owner),
            Arc::clone(&brokers_down),
        )?;
        let workers = match settings.workers {
            // The lake writer thread and librdkafka's fetchers take a core:
            // on 2 cores one worker measured 7 % faster than two (benches/kafka.sh).
            0 => std::thread::available_parallelism().map_or(1, |n| usize::from(n).saturating_sub(1).max(1)),
            n => n,
        };
        let worker = Worker {
            settings,
            brokers_down,
            consumer,
            owner,
            intel,
            watermarks,
            topics,
            partitions,
            start_ends,
            unfinished: BTreeSet::new(),
            metrics,
            workers,
            cancel: cancel.clone(),
        };
        worker.catch_up_intel()?;
        Ok(worker)
    }

    /// The polling loop, until the instance stops: cancelled (it commits
    /// first, see the module doc), or, with `stop_at_end`, done.
    pub fn run(mut self) -> Result<()> {
        let (mut last_commit, mut last_progress, mut last_end_check) = (Instant::now(), Instant::now(), Instant::now());
        let (mut since_commit, mut stall, mut last_probe) = (0u64, StallWatch::default(), Instant::now());
        // Event time alone when stopping at the end, as `replay` ends.
        let mut idle = IdleClock::new(self.settings.processor.idle_timeout_us).filter(|_| !self.settings.stop_at_end);
        let mut clock_moved = false;
        self.metrics.set_ready(true);
        tracing::info!(group = %self.settings.group, lake = %self.settings.lake, "consuming");
        loop {
            if self.cancel.is_cancelled() {
                return self.shutdown();
            }
            let messages = kafka::poll_batch(&self.consumer, batch::BATCH, &self.metrics);
            let batch = messages.len();
            if batch > 0 {
                self.metrics.set_ready(true);
                // A rebalance inside the polls may have swapped the catalog for the committed one.
                self.reseek_intel_if_needed()?;
                batch::apply_batch(&mut lock(&self.owner), &messages, self.workers);
            }
            drop(messages);
            since_commit += batch as u64;
            self.poll_intel();
            if self.brokers_down.load(Ordering::Relaxed) && last_probe.elapsed() > Duration::from_secs(2) {
                last_probe = Instant::now();
                kafka::probe_brokers(&self.consumer, self.topics.keyed()[0], &self.brokers_down, &self.metrics);
            }
            let failure = lock(&self.owner).failure.take();
            match failure {
                Some(_) if self.cancel.is_cancelled() => return self.shutdown(),
                Some(error) => return Err(Error::Rebalance(Box::new(error))),
                None => {}
            }
            self.reseek_intel_if_needed()?;
            if let Some(idle) = idle.as_mut().filter(|idle| idle.due()) {
                clock_moved |= idle.tick(&mut lock(&self.owner).pipeline, &self.topics, &self.metrics) > 0;
            }
            if since_commit >= self.settings.epoch_messages
                || (last_commit.elapsed() >= self.settings.commit_interval && (since_commit > 0 || clock_moved))
            {
                let committed = lock(&self.owner).commit();
                match committed {
                    Ok(committed) => self.store_offsets(&committed),
                    Err(_) if self.cancel.is_cancelled() => return self.shutdown(),
                    Err(error) => return Err(error),
                }
                (last_commit, since_commit, clock_moved) = (Instant::now(), 0, false);
            } else {
                // An epoch the writer finished since publishes its outbox now,
                // not at the next commit, which a quiet input may never bring:
                // a SIEM sees an alert within a poll of its commit.
                let committed = lock(&self.owner).publish_committed();
                match committed {
                    Ok(committed) if !committed.is_empty() => self.store_offsets(&committed),
                    Ok(_) => {}
                    Err(_) if self.cancel.is_cancelled() => return self.shutdown(),
                    Err(error) => return Err(error),
                }
            }
            if last_progress.elapsed() > Duration::from_secs(5) {
                self.report_lag();
                last_progress = Instant::now();
            }
            if stall.due() {
                self.rejoin_if_stalled(&mut stall)?;
            }
            if self.settings.stop_at_end && batch == 0 && last_end_check.elapsed() > Duration::from_millis(500) {
                last_end_check = Instant::now();
                if self.try_finish()? {
                    return Ok(());
                }
            }
        }
    }

    /// Reads the intel topic up to the end offsets it has now.
    fn catch_up_intel(&self) -> Result<()> {
        let (topic, count) = (&self.topics.intel, self.partitions[&self.topics.intel]);
        let ends = retry("read intel end offsets", &self.cancel, || {
            kafka::end_offsets(&self.watermarks, topic, count, METADATA_TIMEOUT)
        })?;
        lock(&self.owner).intel_reseek = false;
        self.intel.catch_up(
            &ends,
            &self.cancel,
            || lock(&self.owner).intel_positions(),
            |message| batch::apply_intel(&mut lock(&self.owner), message),
        )?;
        Ok(())
    }

    /// After the intel task was restored from the lake (gained, lost or
    /// fenced with assets/0), reads the intel topic again from the restored
    /// positions to its end, so no keyed message sees an older catalog.
    fn reseek_intel_if_needed(&self) -> Result<()> {
        let mut owner = lock(&self.owner);
        if !std::mem::take(&mut owner.intel_reseek) {
            return Ok(());
        }
        self.intel.seek_all(&owner.intel_positions())?;
        drop(owner);
        self.catch_up_intel()
    }

    /// Applies what the intel reader has now.
    fn poll_intel(&self) -> usize {
        self.intel.poll_into(Duration::ZERO, 10_000, |message| batch::apply_intel(&mut lock(&self.owner), message))
    }

    /// Every partition of the keyed topics, with its task.
    fn every_partition(&self) -> Vec<Partition> {
        let mut all = Vec::new();
        for topic in self.topics.keyed() {
            let Some(input) = self.topics.input_topic(topic) else { continue };
            for partition in 0..self.partitions[topic] {
                let task = TaskId { topic: input, partition: partition as u32 };
                all.push(Partition { task, topic: topic.to_owned(), partition });
            }
        }
        all
    }

    /// The latest commit of each partition's task, whoever wrote it.
    fn latest_records(&self, partitions: &[Partition]) -> Result<Vec<processor::lake::CommitRecord>> {
        let tasks: Vec<TaskId> = partitions.iter().map(|p| p.task).collect();
        Ok(lock(&self.owner).pipeline.latest_records(&tasks)?)
    }

    /// Leaves and rejoins the group when a partition held elsewhere stalls.
    fn rejoin_if_stalled(&mut self, stall: &mut StallWatch) -> Result<()> {
        let elsewhere: Vec<Partition> = {
            let owner = lock(&self.owner);
            let mine =
                |p: &Partition| owner.active().any(|(topic, partition)| *topic == p.topic && *partition == p.partition);
            self.every_partition().into_iter().filter(|p| !mine(p)).collect()
        };
        let records = self.latest_records(&elsewhere)?;
        let end = |topic: &str, partition| {
            self.watermarks.fetch_watermarks(topic, partition, Duration::from_secs(5)).ok().map(|(_, end)| end)
        };
        if let Some(stalled) = stall.look(&elsewhere, &records, &self.unfinished, end) {
            tracing::warn!(
                task = %stalled.task, position = stalled.position, end = stalled.end, stalled_s = STALL_LIMIT.as_secs(),
                "no member commits a partition with unread messages; rejoining the group"
            );
            self.consumer.unsubscribe();
            self.consumer.subscribe(&self.topics.keyed()).map_err(|e| kafka::Error::client("subscribe", e))?;
        }
        Ok(())
    }

    /// One step of `--stop-at-end`; true when the instance may stop.
    fn try_finish(&mut self) -> Result<bool> {
        let intel_partitions = self.partitions[&self.topics.intel];
        if !finish::read_to_the_end(&lock(&self.owner), &self.start_ends, intel_partitions) {
            return Ok(false);
        }
        let committed = lock(&self.owner).commit()?;
        self.store_offsets(&committed);
        let committed = {
            let mut owner = lock(&self.owner);
            owner.pipeline.sync()?;
            owner.publish_committed()?
        };
        self.store_offsets(&committed);
        let partitions = self.every_partition();
        let records = self.latest_records(&partitions)?;
        let Some(max_time) = finish::end_of_input(&partitions, &records, &self.start_ends) else { return Ok(false) };
        // Everything is read: the watermarks of this instance's tasks move to
        // the end of the whole input, as `replay`'s do at the end of its file.
        let committed = {
            let mut owner = lock(&self.owner);
            owner.flush()?;
            owner.pipeline.finish_input(max_time)?;
            let committed = owner.publish_committed()?;
            owner.flush()?;
            committed
        };
        self.store_offsets(&committed);
        // Done when every task, whoever owns it, has committed that end (a
        // killed instance's tasks are finished by whoever gains them).
        self.unfinished = finish::unfinished(&self.latest_records(&partitions)?, max_time);
        if let Some(behind) = self.unfinished.first() {
            tracing::debug!(task = %behind, "waiting for the owner of a task to commit the end of the input");
            return Ok(false);
        }
        self.commit_offsets(CommitMode::Sync);
        tracing::info!("everything that was in the topics at start is committed");
        Ok(true)
    }

    /// Stores in Kafka the offsets that committed epochs cover.
    fn store_offsets(&self, committed: &[Committed]) {
        let owner = lock(&self.owner);
        kafka::offsets::store_committed(
            &self.consumer,
            &owner.assigned,
            committed.iter().map(|epoch| &epoch.positions),
        );
    }

    fn report_lag(&self) {
        let owner = lock(&self.owner);
        kafka::offsets::report_lag(&self.watermarks, &self.metrics, &owner.assigned, |topic, partition| {
            owner.position(topic, partition)
        });
        for id in owner.pipeline.owned().into_iter().flatten() {
            if let Some(task) = owner.pipeline.processor_ref().task(*id)
                && let Some(max) = task.max_event_time()
            {
                self.metrics.watermark_lag(self.topics.input(id.topic), max.micros(), now_micros());
            }
        }
    }

    fn commit_offsets(&self, mode: CommitMode) {
        if let Err(error) = self.consumer.commit_consumer_state(mode) {
            tracing::debug!(%error, "cannot commit offsets to the group");
        }
    }

    /// Stop consuming, commit, publish, store offsets: each wait bounded by
    /// the shutdown deadline. What was committed stays safe whatever fails:
    /// an outbox the brokers did not take is sent again on restart.
    fn shutdown(self) -> Result<()> {
        tracing::info!("stopping: committing what was consumed");
        // Leave a moment of the deadline for leaving the group.
        let timeout = self.settings.shutdown_timeout;
        let margin = (timeout / 5).min(Duration::from_secs(2));
        let deadline = Instant::now() + timeout.saturating_sub(margin);
        let stopped = {
            let mut owner = lock(&self.owner);
            owner.patience = Patience::Until(deadline);
            owner.commit().and_then(|mut committed| {
                owner.pipeline.sync()?;
                committed.extend(owner.publish_committed()?);
                owner.flush()?;
                Ok(committed)
            })
        };
        let down = self.brokers_down.load(Ordering::Relaxed);
        let outcome = match stopped {
            Ok(committed) => {
                self.store_offsets(&committed);
                // With the brokers away a synchronous commit would wait for them;
                // the lake has the positions anyway (Kafka's are for lag only).
                self.commit_offsets(if down { CommitMode::Async } else { CommitMode::Sync });
                tracing::info!("stopped; every consumed message is committed");
                Ok(())
            }
            Err(error) => Err(Error::Stopping(Box::new(error))),
        };
        if down {
            // Closing the consumer leaves the group, which waits for the brokers:
            // the process ends without it, and the group evicts this member
            // after its session timeout.
            tracing::info!("the brokers are away: not waiting to leave the group");
            std::mem::forget(self.consumer);
        }
        outcome
    }
}

/// Retries a call to the cluster with backoff while it fails for a reason
/// that can heal (the broker may be starting or away), logging each
/// failure; a configuration the client or the cluster refuses fails at
/// once, and so does a stop.
fn retry<T>(what: &'static str, cancel: &CancellationToken, mut call: impl FnMut() -> kafka::Result<T>) -> Result<T> {
    let mut delay = Duration::from_millis(200);
    let started = Instant::now();
    loop {
        match call() {
            Ok(value) => return Ok(value),
            Err(error) if error.class().is_retryable() && started.elapsed() < Duration::from_secs(300) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot {what}; retrying");
                if kafka::sleep_unless_cancelled(delay, cancel) {
                    return Err(Error::Stopped { what });
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(error) => return Err(Error::Call { what, source: error }),
        }
    }
}
