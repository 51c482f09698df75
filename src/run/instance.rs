//! One running instance: its consumers, its owner, and the polling loop.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ingest::kafka::{self, GroupConsumer, IntelReader, KafkaSettings, Publisher, TopicNames, topic_positions};
use ingest::metrics::PipelineMetrics;
use processor::lake::Lake;
use processor::pipeline::{Committed, Pipeline};
use processor::task::TaskId;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use tokio_util::sync::CancellationToken;

use super::idle::IdleClock;
use super::owner::{INTEL, Owner, Patience};
use super::stall::StallWatch;
use super::{METADATA_TIMEOUT, RunSettings, now_micros, retry};

/// One running instance.
pub(super) struct Instance {
    pub(super) owner: Arc<Mutex<Owner>>,
    pub(super) consumer: GroupConsumer<Owner>,
    pub(super) intel: IntelReader,
    /// Asks the end offsets, on its own connection (see [`kafka::watermark_client`]).
    pub(super) watermarks: BaseConsumer,
    pub(super) topics: TopicNames,
    /// Partitions of each keyed topic, and of the intel topic.
    pub(super) partitions: BTreeMap<String, i32>,
    /// End offsets of every input partition when the instance started.
    pub(super) start_ends: BTreeMap<(String, i32), i64>,
    /// `--stop-at-end`: tasks whose owner has yet to commit the end of the input.
    pub(super) unfinished: BTreeSet<TaskId>,
    pub(super) metrics: PipelineMetrics,
    /// Threads applying a batch (the polling thread is one of them).
    pub(super) workers: usize,
    /// Set by the consumer when the brokers are unreachable (readiness false).
    brokers_down: Arc<AtomicBool>,
    /// Cancelled when the instance must stop.
    pub(super) cancel: CancellationToken,
    /// The highest offset of each partition counted in the metrics.
    pub(super) counted: Mutex<super::batch::Counted>,
}

pub(super) fn lock(owner: &Mutex<Owner>) -> MutexGuard<'_, Owner> {
    owner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The intel task's positions, by intel partition.
pub(super) fn intel_positions(pipeline: &Pipeline, topic: &str) -> BTreeMap<i32, i64> {
    pipeline.processor_ref().task(INTEL).map(|task| topic_positions(task.positions(), topic)).unwrap_or_default()
}

impl Instance {
    pub(super) fn start(
        args: &RunSettings,
        settings: KafkaSettings,
        topics: TopicNames,
        metrics: PipelineMetrics,
        brokers_down: Arc<AtomicBool>,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Instance> {
        let mut names: Vec<&str> = topics.keyed().to_vec();
        names.push(&topics.intel);
        let partitions = retry("read the topics' metadata", cancel, || {
            kafka::partition_counts(&settings, &names, METADATA_TIMEOUT)
        })?;
        let missing: Vec<&str> =
            names.iter().copied().filter(|name| partitions.get(*name).is_none_or(|n| *n == 0)).collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "input topics missing on {}: {} (create them, or produce with `patchtrail simulate --brokers`)",
                settings.brokers,
                missing.join(", ")
            );
        }
        let max_partitions = topics.keyed().iter().map(|t| partitions[*t]).max().unwrap_or(1).max(1) as u32;
        // The output topics, when missing: as many partitions as the widest input.
        let outputs =
            [(&topics.alerts, false), (&topics.reevaluations, false), (&topics.dlq, false), (&topics.priorities, true)];
        let specs: Vec<kafka::TopicSpec<'_>> = outputs
            .iter()
            .map(|(name, compacted)| kafka::TopicSpec {
                name,
                partitions: max_partitions as i32,
                compacted: *compacted,
            })
            .collect();
        retry("create the output topics", cancel, || kafka::create_topics(&settings, &specs, METADATA_TIMEOUT))?;
        let lake = Lake::open(&args.lake)?;
        let mut pipeline = Pipeline::open_owning_none(lake, args.processor.clone(), max_partitions)?;
        // The catalog first: the last committed one, then the intel topic up to its end (DESIGN.md).
        pipeline.load(INTEL)?;
        let positions = intel_positions(&pipeline, &topics.intel);
        let intel_partitions = partitions[&topics.intel];
        let intel = IntelReader::new(&settings, &topics.intel, intel_partitions, &positions, args.fetch_buffer_kbytes)?;
        let publisher = Publisher::with_down_flag(&settings, Arc::clone(&brokers_down))?;
        let owner = Arc::new(Mutex::new(Owner {
            pipeline,
            publisher,
            topics: topics.clone(),
            assigned: BTreeSet::new(),
            fenced: BTreeSet::new(),
            intel_owner: false,
            intel_reseek: false,
            failure: None,
            metrics: metrics.clone(),
            max_message_bytes: args.max_message_bytes,
            patience: Patience::UntilStopped(cancel.clone()),
        }));
        let watermarks = kafka::watermark_client(&settings)?;
        let mut start_ends = BTreeMap::new();
        for name in &names {
            let ends = retry("read end offsets", cancel, || {
                kafka::end_offsets(&watermarks, name, partitions[*name], METADATA_TIMEOUT)
            })?;
            for (partition, end) in ends {
                start_ends.insert((name.to_string(), partition), end);
            }
        }
        let consumer = kafka::group_consumer(
            &settings,
            &args.group,
            &topics.keyed(),
            args.fetch_buffer_kbytes,
            Arc::clone(&owner),
            Arc::clone(&brokers_down),
        )?;
        let instance = Instance {
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
            // The lake writer thread and librdkafka's fetchers take a core:
            // on 2 cores one worker measured 7 % faster than two (benches/kafka.sh).
            workers: match args.workers {
                0 => std::thread::available_parallelism().map_or(1, |n| usize::from(n).saturating_sub(1).max(1)),
                n => n,
            },
            cancel: cancel.clone(),
            counted: Mutex::new(Default::default()),
        };
        instance.catch_up_intel()?;
        Ok(instance)
    }

    /// Reads the intel topic up to the end offsets it has now.
    pub(super) fn catch_up_intel(&self) -> anyhow::Result<()> {
        let (topic, count) = (&self.topics.intel, self.partitions[&self.topics.intel]);
        let ends = retry("read intel end offsets", &self.cancel, || {
            kafka::end_offsets(&self.watermarks, topic, count, METADATA_TIMEOUT)
        })?;
        lock(&self.owner).intel_reseek = false;
        self.intel.catch_up(
            &ends,
            &self.cancel,
            || intel_positions(&lock(&self.owner).pipeline, topic),
            |message| self.apply_intel(message),
        )?;
        Ok(())
    }

    /// After the intel task was restored from the lake (gained, lost or
    /// fenced with assets/0), reads the intel topic again from the restored
    /// positions to its end, so no keyed message sees an older catalog.
    pub(super) fn reseek_intel_if_needed(&self) -> anyhow::Result<()> {
        let mut owner = lock(&self.owner);
        if !std::mem::take(&mut owner.intel_reseek) {
            return Ok(());
        }
        self.intel.seek_all(&intel_positions(&owner.pipeline, &self.topics.intel))?;
        drop(owner);
        self.catch_up_intel()
    }

    /// The polling loop, until the instance stops.
    pub(super) fn run(mut self, args: &RunSettings) -> anyhow::Result<ExitCode> {
        let (mut last_commit, mut last_progress, mut last_end_check) = (Instant::now(), Instant::now(), Instant::now());
        let (mut since_commit, mut stall, mut last_probe) = (0u64, StallWatch::default(), Instant::now());
        // Event time alone when stopping at the end, as `replay` ends.
        let mut idle = IdleClock::new(args.processor.idle_timeout_us).filter(|_| !args.stop_at_end);
        let mut clock_moved = false;
        self.metrics.set_ready(true);
        tracing::info!(group = %args.group, lake = %args.lake, "consuming");
        loop {
            if self.cancel.is_cancelled() {
                return self.shutdown(args);
            }
            let messages = kafka::poll_batch(&self.consumer, super::batch::BATCH, &self.metrics);
            let batch = messages.len();
            if batch > 0 {
                self.metrics.set_ready(true);
                self.apply_batch(&messages)?;
            }
            drop(messages);
            since_commit += batch as u64;
            self.poll_intel(Duration::ZERO);
            if self.brokers_down.load(Ordering::Relaxed) && last_probe.elapsed() > Duration::from_secs(2) {
                last_probe = Instant::now();
                kafka::probe_brokers(&self.consumer, self.topics.keyed()[0], &self.brokers_down, &self.metrics);
            }
            let failure = lock(&self.owner).failure.take();
            match failure {
                Some(_) if self.cancel.is_cancelled() => return self.shutdown(args),
                Some(error) => return Err(error.context("a rebalance failed")),
                None => {}
            }
            self.reseek_intel_if_needed()?;
            if let Some(idle) = idle.as_mut().filter(|idle| idle.due()) {
                clock_moved |= idle.tick(&mut lock(&self.owner).pipeline, &self.topics, &self.metrics) > 0;
            }
            if since_commit >= args.epoch_messages
                || (last_commit.elapsed() >= args.commit_interval && (since_commit > 0 || clock_moved))
            {
                let committed = lock(&self.owner).commit();
                match committed {
                    Ok(committed) => self.store_offsets(&committed),
                    Err(_) if self.cancel.is_cancelled() => return self.shutdown(args),
                    Err(error) => return Err(error),
                }
                (last_commit, since_commit, clock_moved) = (Instant::now(), 0, false);
            }
            if last_progress.elapsed() > Duration::from_secs(5) {
                self.report_lag();
                last_progress = Instant::now();
            }
            if stall.due() {
                self.check_stalled(&mut stall)?;
            }
            if args.stop_at_end && batch == 0 && last_end_check.elapsed() > Duration::from_millis(500) {
                last_end_check = Instant::now();
                if self.try_finish()? {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }

    /// Stores in Kafka the offsets that committed epochs cover.
    pub(super) fn store_offsets(&self, committed: &[Committed]) {
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
            self.owner_position(&owner, topic, partition)
        });
        for id in owner.pipeline.owned().into_iter().flatten() {
            if let Some(task) = owner.pipeline.processor_ref().task(*id)
                && let Some(max) = task.max_event_time()
            {
                self.metrics.watermark_lag(self.topics.input(id.topic), max.micros(), now_micros());
            }
        }
    }

    /// Where this instance's task of a partition is (the next offset).
    pub(super) fn owner_position(&self, owner: &Owner, topic: &str, partition: i32) -> Option<i64> {
        let id = owner.task_of(topic, partition)?;
        let task = owner.pipeline.processor_ref().task(id)?;
        kafka::Source::new(topic, partition).position(task.positions())
    }

    pub(super) fn commit_offsets(&self, mode: CommitMode) {
        if let Err(error) = self.consumer.commit_consumer_state(mode) {
            tracing::debug!(%error, "cannot commit offsets to the group");
        }
    }

    /// Stop consuming, commit, publish, store offsets: each wait bounded by
    /// the shutdown deadline. What was committed stays safe whatever fails:
    /// an outbox the brokers did not take is sent again on restart.
    fn shutdown(self, args: &RunSettings) -> anyhow::Result<ExitCode> {
        tracing::info!("stopping: committing what was consumed");
        // Leave a moment of the deadline for leaving the group.
        let margin = (args.shutdown_timeout / 5).min(Duration::from_secs(2));
        let deadline = Instant::now() + args.shutdown_timeout.saturating_sub(margin);
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
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => Err(error.context(
                "stopped before everything was delivered (the lake keeps every committed epoch; \
                 an undelivered outbox is sent again on restart, uncommitted messages are read again)",
            )),
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
