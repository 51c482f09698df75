//! `patchtrail run`: one pipeline instance in a Kafka consumer group.
//!
//! One thread polls the group consumer and the intel reader and applies each
//! message to the task of its partition; the lake writer thread commits
//! epochs behind it. Rebalances arrive inside `poll`, on this same thread: a
//! gained partition's task is restored from its latest commit and the
//! partition starts at the recorded offset; a revoked one is committed before
//! the group hands it on. After each commit, the epoch's outbox (alerts,
//! re-evaluation requests, dead letters) is published and the offsets it
//! covers are stored in Kafka, in that order (DESIGN.md "Exactly-once into
//! the lake").

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::kafka::{
    self, GroupConsumer, IntelReader, KafkaSettings, PartitionOwner, Publisher, StartAt, TopicNames, source_name,
};
use processor::catalog::Catalog;
use processor::config::ProcessorConfig;
use processor::lake::Lake;
use processor::pipeline::{Committed, Pipeline};
use processor::rows::{DeadLetterRow, OutboxMessage, OutputKind};
use processor::task::Task;
use processor::task::TaskId;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use schemas::{InputTopic, Timestamp};

use crate::cli::RunArgs;
use crate::config::{self, Config};
use crate::metrics::PipelineMetrics;

const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(args: RunArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    let mut problems = config.apply_kafka_flags(args.kafka.brokers.as_deref(), &args.kafka.properties);
    config::set(&mut config.lake.location, &args.lake);
    config::set(&mut config.kafka.group, &args.group);
    config::set(&mut config.pipeline.metrics_listen, &args.metrics_listen);
    config::set(&mut config.pipeline.commit_interval_ms, &args.commit_interval_ms);
    config::set(&mut config.pipeline.epoch_messages, &args.epoch_messages);
    config::set(&mut config.pipeline.max_message_bytes, &args.max_message_bytes);
    config::set(&mut config.pipeline.fetch_buffer_kbytes, &args.fetch_buffer_kbytes);
    config::set(&mut config.pipeline.shutdown_timeout_secs, &args.shutdown_timeout_secs);
    config::set(&mut config.pipeline.workers, &args.workers);
    problems.extend(config.problems());
    if !problems.is_empty() {
        return Ok(crate::usage_error(&problems));
    }
    let settings = config.kafka_settings();
    let p = &config.pipeline;
    let args = RunSettings {
        lake: config.lake.location.clone(),
        group: config.kafka.group.clone(),
        stop_at_end: args.stop_at_end,
        commit_interval_ms: p.commit_interval_ms,
        epoch_messages: p.epoch_messages,
        max_message_bytes: p.max_message_bytes,
        fetch_buffer_kbytes: p.fetch_buffer_kbytes,
        shutdown_timeout_secs: p.shutdown_timeout_secs,
        workers: p.workers,
        processor: config.processor_config(),
    };
    let signals = crate::signals::install()?;
    let metrics = PipelineMetrics::new();
    // Set by the Kafka clients when the brokers are unreachable; cleared by the polling loop.
    let brokers_down = Arc::new(AtomicBool::new(false));
    let ready = {
        let (ready, down) = (metrics.ready_flag(), Arc::clone(&brokers_down));
        move || ready.load(Ordering::Relaxed) && !down.load(Ordering::Relaxed)
    };
    crate::metrics::serve(&p.metrics_listen, metrics.registry(), ready)
        .with_context(|| format!("cannot serve metrics on {}", p.metrics_listen))?;
    let topics = config.topic_names();
    let instance = Instance::start(&args, settings, topics, metrics, brokers_down)?;
    instance.run(&args, &signals)
}

/// The effective settings of one instance: flags over the configuration.
struct RunSettings {
    lake: String,
    group: String,
    stop_at_end: bool,
    commit_interval_ms: u64,
    epoch_messages: u64,
    max_message_bytes: usize,
    fetch_buffer_kbytes: u32,
    shutdown_timeout_secs: u64,
    workers: usize,
    processor: ProcessorConfig,
}

/// What the group's rebalances act on: the pipeline and the publisher.
struct Owner {
    pipeline: Pipeline,
    publisher: Publisher,
    topics: TopicNames,
    /// The partitions this instance holds.
    assigned: BTreeSet<(String, i32)>,
    /// Assigned partitions whose task another writer committed since: the
    /// lake says that writer owns them (a group mid-rebalance can assign a
    /// partition twice). Their messages are skipped until the group moves them.
    fenced: BTreeSet<(String, i32)>,
    /// This instance holds partition 0 of the assets topic, so it commits the
    /// intel task (the catalog rows) too.
    intel_owner: bool,
    /// The intel task was restored from the lake: the reader must re-seek.
    intel_reseek: bool,
    /// A failure inside a rebalance callback, raised by the polling loop.
    failure: Option<anyhow::Error>,
    metrics: PipelineMetrics,
    /// Messages larger than this are dead letters.
    max_message_bytes: usize,
}

const INTEL: TaskId = TaskId { topic: InputTopic::Intel, partition: 0 };

impl Owner {
    fn task_of(&self, topic: &str, partition: i32) -> Option<TaskId> {
        let topic = self.topics.input_topic(topic)?;
        Some(TaskId { topic, partition: u32::try_from(partition).ok()? })
    }

    fn publish(&self, messages: &[OutboxMessage]) -> anyhow::Result<()> {
        for message in messages {
            let topic = match message.kind {
                OutputKind::Alert => &self.topics.alerts,
                OutputKind::Reevaluation => &self.topics.reevaluations,
                OutputKind::DeadLetter => &self.topics.dlq,
            };
            self.publisher.send(topic, message.key.as_deref(), message.value.as_bytes())?;
        }
        Ok(())
    }

    /// Publishes what committed epochs produce; returns them for offset storing.
    fn publish_committed(&mut self) -> anyhow::Result<Vec<Committed>> {
        let committed = self.pipeline.take_committed();
        for epoch in &committed {
            self.publish(&epoch.outbox)?;
        }
        self.metrics.commits.inc_by(committed.len() as u64);
        self.give_up_fenced()?;
        Ok(committed)
    }

    /// Tasks another writer committed are theirs now (see [`Lake`]): stop
    /// applying their partitions' messages until the group moves them.
    fn give_up_fenced(&mut self) -> anyhow::Result<()> {
        for id in self.pipeline.take_fenced() {
            if id == INTEL {
                self.intel_owner = false;
                self.pipeline.load(INTEL)?;
                self.intel_reseek = true;
                continue;
            }
            let topic = self.topics.input(id.topic).to_owned();
            tracing::warn!(task = %id, "another instance commits this partition now; skipping it until the group moves it");
            self.fenced.insert((topic, id.partition as i32));
        }
        Ok(())
    }

    /// The partitions this instance holds and commits.
    fn active(&self) -> impl Iterator<Item = &(String, i32)> {
        self.assigned.iter().filter(|partition| !self.fenced.contains(*partition))
    }

    /// Commits every owned task whose epoch has work, after making sure the
    /// previous epoch's outbox is delivered (so a crash re-sends at most one
    /// epoch's messages, never loses them).
    fn commit(&mut self) -> anyhow::Result<Vec<Committed>> {
        let started = Instant::now();
        self.publisher.flush(None)?;
        self.pipeline.commit()?;
        let committed = self.publish_committed()?;
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        Ok(committed)
    }

    fn acquire(&mut self, id: TaskId) -> anyhow::Result<BTreeMap<String, u64>> {
        let (positions, outbox) = self.pipeline.acquire(id)?;
        // Acquiring waits for the writer, which may have found a task fenced.
        self.give_up_fenced()?;
        // The previous owner may have committed this outbox and stopped before sending it.
        self.publish(&outbox)?;
        Ok(positions)
    }

    fn assign(&mut self, partitions: &[(String, i32)]) -> anyhow::Result<Vec<StartAt>> {
        let mut starts = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let Some(id) = self.task_of(topic, *partition) else {
                starts.push(StartAt::Beginning);
                continue;
            };
            if id == (TaskId { topic: InputTopic::Assets, partition: 0 }) && !self.intel_owner {
                self.acquire(INTEL)?;
                self.intel_owner = true;
                self.intel_reseek = true;
            }
            let positions = self.acquire(id)?;
            self.assigned.insert((topic.clone(), *partition));
            self.fenced.remove(&(topic.clone(), *partition));
            let start = positions.get(&source_name(topic, *partition)).map(|&next| StartAt::Offset(next as i64));
            tracing::info!(task = %id, start = ?start, "resuming from the last commit");
            starts.push(start.unwrap_or(StartAt::Beginning));
        }
        Ok(starts)
    }

    fn revoke(&mut self, partitions: &[(String, i32)], lost: bool) -> anyhow::Result<()> {
        let mut ids: Vec<TaskId> = partitions.iter().filter_map(|(t, p)| self.task_of(t, *p)).collect();
        if ids.contains(&TaskId { topic: InputTopic::Assets, partition: 0 }) && self.intel_owner {
            ids.push(INTEL);
            self.intel_owner = false;
        }
        for partition in partitions {
            self.assigned.remove(partition);
            self.fenced.remove(partition);
        }
        if lost {
            // The group gave them away already: their new owner resumes from the last commit.
            self.pipeline.forget(&ids);
        } else {
            self.publisher.flush(None)?;
            self.pipeline.release(&ids)?;
            self.publish_committed()?;
        }
        if ids.contains(&INTEL) {
            // Keep a catalog for the remaining tasks: the committed one, caught up by the reader.
            self.pipeline.load(INTEL)?;
            self.intel_reseek = true;
        }
        Ok(())
    }
}

impl PartitionOwner for Owner {
    fn assigned(&mut self, partitions: &[(String, i32)]) -> Vec<StartAt> {
        match self.assign(partitions) {
            Ok(starts) => starts,
            Err(error) => {
                self.failure.get_or_insert(error);
                vec![StartAt::Beginning; partitions.len()]
            }
        }
    }

    fn revoked(&mut self, partitions: &[(String, i32)], lost: bool) {
        if let Err(error) = self.revoke(partitions, lost) {
            self.failure.get_or_insert(error);
        }
    }
}

/// One running instance.
struct Instance {
    owner: Arc<Mutex<Owner>>,
    consumer: GroupConsumer<Owner>,
    intel: IntelReader,
    topics: TopicNames,
    /// Partitions of each keyed topic, and of the intel topic.
    partitions: BTreeMap<String, i32>,
    /// End offsets of every input partition when the instance started.
    start_ends: BTreeMap<(String, i32), i64>,
    /// `--stop-at-end`: tasks whose owner has yet to commit the end of the input.
    unfinished: BTreeSet<TaskId>,
    metrics: PipelineMetrics,
    /// Threads applying a batch (the polling thread is one of them).
    workers: usize,
    /// Set by the consumer when the brokers are unreachable (readiness false).
    brokers_down: Arc<AtomicBool>,
}

fn lock(owner: &Mutex<Owner>) -> MutexGuard<'_, Owner> {
    owner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Instance {
    fn start(
        args: &RunSettings,
        settings: KafkaSettings,
        topics: TopicNames,
        metrics: PipelineMetrics,
        brokers_down: Arc<AtomicBool>,
    ) -> anyhow::Result<Instance> {
        let mut names: Vec<&str> = topics.keyed().to_vec();
        names.push(&topics.intel);
        let partitions =
            retry("read the topics' metadata", || kafka::partition_counts(&settings, &names, METADATA_TIMEOUT))?;
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
        retry("create the output topics", || kafka::create_topics(&settings, &specs, METADATA_TIMEOUT))?;
        let lake = Lake::open(&args.lake)?;
        let mut pipeline = Pipeline::open_owning_none(lake, args.processor.clone(), max_partitions)?;
        // The catalog first: the last committed one, then the intel topic up to its end (DESIGN.md).
        pipeline.load(INTEL)?;
        let intel_positions = intel_positions(&pipeline, &topics.intel);
        let intel = IntelReader::new(
            &settings,
            &topics.intel,
            partitions[&topics.intel],
            &intel_positions,
            args.fetch_buffer_kbytes,
        )?;
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
        }));
        let mut start_ends = BTreeMap::new();
        for name in &names {
            let ends = retry("read end offsets", || {
                kafka::end_offsets(intel.consumer(), name, partitions[*name], METADATA_TIMEOUT)
            })?;
            for (partition, end) in ends {
                start_ends.insert((name.to_string(), partition), end);
            }
        }
        let instance = Instance {
            brokers_down: Arc::clone(&brokers_down),
            consumer: kafka::group_consumer(
                &settings,
                &args.group,
                &topics.keyed(),
                args.fetch_buffer_kbytes,
                Arc::clone(&owner),
                Arc::clone(&brokers_down),
            )?,
            owner,
            intel,
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
        };
        instance.catch_up_intel()?;
        Ok(instance)
    }

    /// Reads the intel topic up to the end offsets it has now.
    fn catch_up_intel(&self) -> anyhow::Result<()> {
        let ends = retry("read intel end offsets", || self.intel.end_offsets(METADATA_TIMEOUT))?;
        let started = Instant::now();
        let mut read = 0;
        loop {
            let behind = {
                let mut owner = lock(&self.owner);
                let positions = intel_positions(&owner.pipeline, &self.topics.intel);
                owner.intel_reseek = false;
                ends.iter().any(|(partition, end)| positions.get(partition).copied().unwrap_or(0) < *end)
            };
            if !behind {
                break;
            }
            read += self.poll_intel(Duration::from_millis(100))?;
            if started.elapsed() > Duration::from_secs(5) && started.elapsed().as_millis() % 5000 < 100 {
                tracing::info!("still reading the intel topic");
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            read,
            end = ends.values().sum::<i64>(),
            "intel catalog loaded"
        );
        Ok(())
    }

    /// While the brokers are away: not ready, and every few seconds a probe;
    /// ready again once the cluster answers (librdkafka reconnects by itself).
    fn wait_for_brokers(&self, last_probe: &mut Instant) {
        self.metrics.set_ready(false);
        if last_probe.elapsed() < Duration::from_secs(2) {
            return;
        }
        *last_probe = Instant::now();
        let topic = self.topics.keyed()[0];
        if self.consumer.fetch_metadata(Some(topic), Duration::from_secs(1)).is_ok() {
            self.brokers_down.store(false, Ordering::Relaxed);
            self.metrics.set_ready(true);
            tracing::info!("the Kafka brokers answer again");
        }
    }

    /// Applies a batch of group messages: grouped by task, in partition
    /// order within each task, tasks spread over the worker threads. The
    /// catalog is only read meanwhile (intel is applied between batches).
    fn apply_batch(&self, messages: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        // A rebalance inside the polls may have swapped the catalog for the committed one.
        self.reseek_intel_if_needed()?;
        let mut owner = lock(&self.owner);
        let owner = &mut *owner;
        let n_tasks = owner.pipeline.processor_ref().keyed_tasks().len();
        let mut by_task: Vec<Vec<usize>> = vec![Vec::new(); n_tasks];
        for (i, message) in messages.iter().enumerate() {
            let key = (message.topic().to_owned(), message.partition());
            // Messages fetched before their partition was revoked (or fenced) are not ours any more.
            if !owner.assigned.contains(&key) || owner.fenced.contains(&key) {
                continue;
            }
            let Some(id) = owner.task_of(&key.0, key.1) else { continue };
            if let Some(idx) = owner.pipeline.processor_ref().keyed_index(id) {
                by_task[idx].push(i);
            }
        }
        let max_bytes = owner.max_message_bytes;
        let (tasks, catalog, config) = owner.pipeline.processor().keyed_tasks_mut();
        let mut work: Vec<Work<'_>> =
            tasks.iter_mut().zip(by_task).filter(|(_, indexes)| !indexes.is_empty()).collect();
        // Largest first into the least loaded worker.
        work.sort_by_key(|(_, indexes)| std::cmp::Reverse(indexes.len()));
        let workers = if messages.len() < PARALLEL_MIN { 1 } else { self.workers.min(work.len()).max(1) };
        // (messages, work) per worker.
        let mut shares: Vec<(usize, Vec<Work<'_>>)> = (0..workers).map(|_| (0, Vec::new())).collect();
        for item in work {
            let share = shares.iter_mut().min_by_key(|(load, _)| *load).expect("one worker at least");
            share.0 += item.1.len();
            share.1.push(item);
        }
        let apply_share = |share: Vec<Work<'_>>| {
            for (task, indexes) in share {
                let input = task.id().topic;
                for i in indexes {
                    apply_keyed(task, &messages[i], input, catalog, config, max_bytes, &self.topics, &self.metrics);
                }
            }
        };
        let mut shares = shares.into_iter().map(|(_, share)| share);
        let mine = shares.next().unwrap_or_default();
        std::thread::scope(|scope| {
            for share in shares {
                scope.spawn(|| apply_share(share));
            }
            apply_share(mine);
        });
        Ok(())
    }

    /// After the intel task was restored from the lake (gained, lost or
    /// fenced with assets/0), reads the intel topic again from the restored
    /// positions to its end, so no keyed message sees an older catalog.
    fn reseek_intel_if_needed(&self) -> anyhow::Result<()> {
        let mut owner = lock(&self.owner);
        if !std::mem::take(&mut owner.intel_reseek) {
            return Ok(());
        }
        self.intel.seek_all(&intel_positions(&owner.pipeline, &self.topics.intel))?;
        drop(owner);
        self.catch_up_intel()
    }

    /// Applies what the intel reader has (waiting up to `timeout` for the first).
    fn poll_intel(&self, timeout: Duration) -> anyhow::Result<usize> {
        let mut n = 0;
        let mut wait = timeout;
        while let Some(message) = self.intel.consumer().poll(wait) {
            wait = Duration::ZERO;
            match message {
                Ok(message) => {
                    let mut owner = lock(&self.owner);
                    apply(&mut owner, &self.topics, InputTopic::Intel, &message, INTEL, &self.metrics);
                    n += 1;
                }
                Err(error) => tracing::warn!(%error, "intel consumer"),
            }
            if n >= 10_000 {
                break;
            }
        }
        Ok(n)
    }

    fn run(mut self, args: &RunSettings, signals: &crate::signals::Signals) -> anyhow::Result<ExitCode> {
        let interval = Duration::from_millis(args.commit_interval_ms);
        let mut last_commit = Instant::now();
        let mut since_commit = 0u64;
        let mut last_progress = Instant::now();
        let mut last_end_check = Instant::now();
        let mut stall = StallWatch::default();
        let mut last_probe = Instant::now();
        self.metrics.set_ready(true);
        tracing::info!(group = %args.group, lake = %args.lake, "consuming");
        loop {
            if signals.count() > 0 {
                tracing::info!("stopping: committing what was consumed");
                return self.shutdown(args, signals);
            }
            // Group messages; rebalances run inside this poll.
            let mut messages = Vec::with_capacity(BATCH);
            let mut wait = Duration::from_millis(100);
            while let Some(message) = self.consumer.poll(wait) {
                wait = Duration::ZERO;
                match message {
                    Ok(message) => messages.push(message),
                    Err(error) => {
                        // librdkafka retries by itself; log once per outage, not per poll.
                        if self.metrics.is_ready() {
                            tracing::warn!(%error, "consumer error; retrying");
                        }
                        self.metrics.set_ready(false);
                        break;
                    }
                }
                if messages.len() >= BATCH {
                    break;
                }
            }
            let batch = messages.len();
            if batch > 0 {
                self.metrics.set_ready(true);
                self.apply_batch(&messages)?;
            }
            drop(messages);
            since_commit += batch as u64;
            self.poll_intel(Duration::ZERO)?;
            if self.brokers_down.load(Ordering::Relaxed) {
                self.wait_for_brokers(&mut last_probe);
            }
            if let Some(error) = lock(&self.owner).failure.take() {
                return Err(error.context("a rebalance failed"));
            }
            self.reseek_intel_if_needed()?;
            if since_commit >= args.epoch_messages || (last_commit.elapsed() >= interval && since_commit > 0) {
                let committed = lock(&self.owner).commit()?;
                self.store_offsets(&committed);
                last_commit = Instant::now();
                since_commit = 0;
            }
            if last_progress.elapsed() > Duration::from_secs(5) {
                last_progress = Instant::now();
                self.report_lag();
            }
            if stall.last_check.is_none_or(|at| at.elapsed() > STALL_CHECK_INTERVAL) {
                self.check_stalled(&mut stall)?;
            }
            if args.stop_at_end && last_end_check.elapsed() > Duration::from_millis(500) && batch == 0 {
                last_end_check = Instant::now();
                if self.try_finish()? {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }

    /// The group's safety net: a partition with unread messages (or, with
    /// `--stop-at-end`, without the end of the input committed) whose commits
    /// have not moved for [`STALL_LIMIT`], held by no live member as far as
    /// the lake can tell, makes this instance leave and rejoin the group so
    /// the coordinator assigns it again. A broker evicts a dead member after
    /// its session timeout, but some (tansu 0.6) do not tell the live members
    /// to rejoin; with a broker that does, this never fires.
    fn check_stalled(&mut self, stall: &mut StallWatch) -> anyhow::Result<()> {
        stall.last_check = Some(Instant::now());
        let mut ids = Vec::new();
        {
            let owner = lock(&self.owner);
            for topic in self.topics.keyed() {
                for partition in 0..self.partitions[topic] {
                    let key = (topic.to_owned(), partition);
                    if owner.assigned.contains(&key) && !owner.fenced.contains(&key) {
                        continue;
                    }
                    let Some(input) = self.topics.input_topic(topic) else { continue };
                    ids.push((TaskId { topic: input, partition: partition as u32 }, topic.to_owned(), partition));
                }
            }
        }
        let task_ids: Vec<TaskId> = ids.iter().map(|(id, _, _)| *id).collect();
        let records = lock(&self.owner).pipeline.latest_records(&task_ids)?;
        let mut stalled = None;
        for (id, topic, partition) in &ids {
            let Ok((_, end)) = self.consumer.fetch_watermarks(topic, *partition, Duration::from_secs(5)) else {
                continue;
            };
            let record = records.iter().find(|r| r.task == *id);
            let position =
                record.and_then(|r| r.positions.get(&source_name(topic, *partition))).map_or(0, |&n| n as i64);
            let epoch = record.map_or(0, |r| r.epoch);
            let seen = stall.seen.entry(*id).or_insert((epoch, Instant::now()));
            let needs_work = position < end || self.unfinished.contains(id);
            if seen.0 != epoch || !needs_work {
                *seen = (epoch, Instant::now());
            } else if seen.1.elapsed() > STALL_LIMIT {
                stalled = Some((*id, position, end));
            }
        }
        if let Some((id, position, end)) = stalled {
            tracing::warn!(
                task = %id, position, end, stalled_s = STALL_LIMIT.as_secs(),
                "no member commits a partition with unread messages; rejoining the group"
            );
            self.consumer.unsubscribe();
            self.consumer.subscribe(&self.topics.keyed())?;
            stall.seen.clear();
        }
        Ok(())
    }

    /// Stores in Kafka the offsets that committed epochs cover (for lag
    /// monitoring and for restarts without a lake record).
    fn store_offsets(&self, committed: &[Committed]) {
        let owner = lock(&self.owner);
        let mut tpl = TopicPartitionList::new();
        for epoch in committed {
            for (topic, partition) in &owner.assigned {
                if let Some(&next) = epoch.positions.get(&source_name(topic, *partition)) {
                    let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(next as i64));
                }
            }
        }
        drop(owner);
        if tpl.count() > 0
            && let Err(error) = self.consumer.store_offsets(&tpl)
        {
            tracing::debug!(%error, "cannot store offsets (partition moved)");
        }
    }

    fn report_lag(&self) {
        let owner = lock(&self.owner);
        for (topic, partition) in &owner.assigned {
            let Ok((_, high)) = self.consumer.fetch_watermarks(topic, *partition, Duration::from_secs(1)) else {
                continue;
            };
            let next = self.owner_position(&owner, topic, *partition).unwrap_or(0);
            self.metrics
                .consumer_lag
                .with_label_values(&[topic.as_str(), &partition.to_string()])
                .set((high - next).max(0));
        }
        for id in owner.pipeline.owned().into_iter().flatten() {
            if let Some(task) = owner.pipeline.processor_ref().task(*id)
                && let Some(max) = task.max_event_time()
            {
                let lag = (now_micros() - max.micros()) as f64 / 1e6;
                self.metrics.watermark_lag.with_label_values(&[self.topics.input(id.topic)]).set(lag.max(0.0));
            }
        }
    }

    fn owner_position(&self, owner: &Owner, topic: &str, partition: i32) -> Option<i64> {
        let id = owner.task_of(topic, partition)?;
        let task = owner.pipeline.processor_ref().task(id)?;
        task.positions().get(&source_name(topic, partition)).map(|&next| next as i64)
    }

    /// `--stop-at-end`: once every input partition's committed position (by
    /// any instance) has reached its end offset at start, the watermarks of
    /// this instance's tasks move to the largest event time of the whole
    /// input, that is committed, and the instance stops.
    fn try_finish(&mut self) -> anyhow::Result<bool> {
        {
            let owner = lock(&self.owner);
            if owner.active().next().is_none() {
                return Ok(false);
            }
            for (topic, partition) in owner.active() {
                let end = self.start_ends.get(&(topic.clone(), *partition)).copied().unwrap_or(0);
                let position = self.owner_position(&owner, topic, *partition).unwrap_or(0);
                if position < end {
                    tracing::debug!(topic, partition, position, end, "not at the end yet");
                    return Ok(false);
                }
            }
            if owner.intel_owner {
                let positions = intel_positions(&owner.pipeline, &self.topics.intel);
                for partition in 0..self.partitions[&self.topics.intel] {
                    let end = self.start_ends.get(&(self.topics.intel.clone(), partition)).copied().unwrap_or(0);
                    if positions.get(&partition).copied().unwrap_or(0) < end {
                        tracing::debug!(partition, end, "intel not at the end yet");
                        return Ok(false);
                    }
                }
            }
        }
        let committed = lock(&self.owner).commit()?;
        self.store_offsets(&committed);
        let mut owner = lock(&self.owner);
        owner.pipeline.sync()?;
        let committed = owner.publish_committed()?;
        drop(owner);
        self.store_offsets(&committed);
        // Every partition of the input, whoever owns it, must be committed to its end.
        let mut ids = Vec::new();
        for topic in self.topics.keyed() {
            for partition in 0..self.partitions[topic] {
                let Some(input) = self.topics.input_topic(topic) else { continue };
                ids.push((TaskId { topic: input, partition: partition as u32 }, topic.to_owned(), partition));
            }
        }
        let task_ids: Vec<TaskId> = ids.iter().map(|(id, _, _)| *id).collect();
        let records = lock(&self.owner).pipeline.latest_records(&task_ids)?;
        let mut max_time: Option<Timestamp> = None;
        for (id, topic, partition) in &ids {
            let end = self.start_ends.get(&(topic.clone(), *partition)).copied().unwrap_or(0);
            let record = records.iter().find(|record| record.task == *id);
            let position =
                record.and_then(|r| r.positions.get(&source_name(topic, *partition))).map_or(0, |&n| n as i64);
            if position < end {
                tracing::debug!(%id, position, end, "not committed to the end yet");
                return Ok(false);
            }
            max_time = max_time.max(record.and_then(|r| r.max_event_time));
        }
        // Everything is read: the watermarks of this instance's tasks move to
        // the end of the whole input, as `replay`'s do at the end of its file.
        let mut owner = lock(&self.owner);
        owner.publisher.flush(None)?;
        owner.pipeline.finish_input(max_time)?;
        let committed = owner.publish_committed()?;
        owner.publisher.flush(None)?;
        drop(owner);
        self.store_offsets(&committed);
        // Done when every task, whoever owns it, has committed that end (a
        // killed instance's tasks are finished by whoever gains them).
        let records = lock(&self.owner).pipeline.latest_records(&task_ids)?;
        self.unfinished =
            records.iter().filter(|r| r.max_event_time.is_some() && r.watermark < max_time).map(|r| r.task).collect();
        if let Some(behind) = self.unfinished.first() {
            tracing::debug!(task = %behind, "waiting for the owner of a task to commit the end of the input");
            return Ok(false);
        }
        self.commit_offsets();
        tracing::info!("everything that was in the topics at start is committed");
        Ok(true)
    }

    fn commit_offsets(&self) {
        if let Err(error) = self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            tracing::debug!(%error, "cannot commit offsets to the group");
        }
    }

    /// Stop consuming, commit, publish, store offsets, leave the group.
    fn shutdown(self, args: &RunSettings, signals: &crate::signals::Signals) -> anyhow::Result<ExitCode> {
        let deadline = Duration::from_secs(args.shutdown_timeout_secs);
        signals.exit_after(deadline);
        let committed = {
            let mut owner = lock(&self.owner);
            let mut committed = owner.commit()?;
            owner.pipeline.sync()?;
            committed.extend(owner.publish_committed()?);
            owner.publisher.flush(Some(deadline))?;
            committed
        };
        self.store_offsets(&committed);
        self.commit_offsets();
        tracing::info!("stopped; every consumed message is committed");
        Ok(ExitCode::SUCCESS)
    }
}

/// How often [`Instance::check_stalled`] looks, and how long a partition
/// with unread messages may go without a commit by anyone.
const STALL_CHECK_INTERVAL: Duration = Duration::from_secs(5);
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// When each partition held elsewhere last showed progress in the lake.
#[derive(Default)]
struct StallWatch {
    seen: BTreeMap<TaskId, (u64, Instant)>,
    last_check: Option<Instant>,
}

/// A task and the indexes of its messages in a batch.
type Work<'a> = (&'a mut Task, Vec<usize>);

/// Messages taken from the group consumer per batch.
const BATCH: usize = 5_000;
/// Below this many messages a batch is applied on the polling thread alone.
const PARALLEL_MIN: usize = 256;

/// Applies one group message to its keyed task: an event, or a dead letter
/// with the reason.
#[allow(clippy::too_many_arguments)]
fn apply_keyed(
    task: &mut Task,
    message: &BorrowedMessage<'_>,
    input: InputTopic,
    catalog: &Catalog,
    config: &ProcessorConfig,
    max_bytes: usize,
    topics: &TopicNames,
    metrics: &PipelineMetrics,
) {
    let source = source_name(message.topic(), message.partition());
    let offset = message.offset() as u64;
    match kafka::check_message(input, message.key(), message.payload(), max_bytes) {
        Ok(event) => {
            task.apply_keyed(&source, offset, &event, catalog, config);
            metrics.consumed(topics.input(input));
        }
        Err(rejection) => {
            let failed_at = task.max_event_time().unwrap_or(Timestamp(0));
            let row = dead_letter_row(message, rejection.error, failed_at);
            task.dead_letter(&source, offset, row);
            metrics.dead_lettered(topics.input(input), rejection.reason);
        }
    }
}

fn dead_letter_row(message: &BorrowedMessage<'_>, error: String, failed_at: Timestamp) -> DeadLetterRow {
    let key = message.key().map(String::from_utf8_lossy);
    DeadLetterRow::new(
        message.topic(),
        message.partition(),
        message.offset(),
        key.as_deref(),
        error,
        message.payload().unwrap_or_default(),
        failed_at,
    )
}

/// Applies one intel message: an event, or a dead letter with the reason.
fn apply(
    owner: &mut Owner,
    topics: &TopicNames,
    input: InputTopic,
    message: &BorrowedMessage<'_>,
    id: TaskId,
    metrics: &PipelineMetrics,
) {
    let source = source_name(message.topic(), message.partition());
    let offset = message.offset() as u64;
    let max_bytes = owner.max_message_bytes;
    let processor = owner.pipeline.processor();
    match kafka::check_message(input, message.key(), message.payload(), max_bytes) {
        Ok(event) => {
            processor.apply_to(id, &source, offset, &event);
            metrics.consumed(topics.input(input));
        }
        Err(rejection) => {
            let failed_at = processor.task(id).and_then(|t| t.max_event_time()).unwrap_or(Timestamp(0));
            let row = dead_letter_row(message, rejection.error, failed_at);
            processor.dead_letter(id, &source, offset, row);
            metrics.dead_lettered(topics.input(input), rejection.reason);
        }
    }
}

/// The intel task's positions, by intel partition.
fn intel_positions(pipeline: &Pipeline, topic: &str) -> BTreeMap<i32, i64> {
    let Some(task) = pipeline.processor_ref().task(INTEL) else { return BTreeMap::new() };
    let prefix = format!("kafka:{topic}/");
    task.positions()
        .iter()
        .filter_map(|(source, next)| Some((source.strip_prefix(prefix.as_str())?.parse().ok()?, *next as i64)))
        .collect()
}

/// Retries a call to the cluster with backoff while it fails, logging each
/// failure: the broker may be starting or away.
fn retry<T>(what: &str, mut call: impl FnMut() -> kafka::Result<T>) -> anyhow::Result<T> {
    let mut delay = Duration::from_millis(200);
    let started = Instant::now();
    loop {
        match call() {
            Ok(value) => return Ok(value),
            Err(error) if started.elapsed() < Duration::from_secs(300) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot {what}; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(error) => return Err(anyhow::Error::new(error).context(format!("cannot {what}"))),
        }
    }
}

fn now_micros() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}
