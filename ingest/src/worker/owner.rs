//! The [`PartitionOwner`] of an instance: what the group's rebalances act
//! on (the pipeline, whose tasks follow the partitions, and the publisher
//! of each commit's outbox).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use processor::pipeline::{Committed, Pipeline};
use processor::rows::{OutboxMessage, OutputKind};
use processor::task::TaskId;
use schemas::InputTopic;
use tokio_util::sync::CancellationToken;

use super::{Error, Result};
use crate::kafka::{PartitionOwner, Publisher, Source, StartAt, TopicNames, topic_positions};
use crate::metrics::PipelineMetrics;

/// The intel task (the catalog rows), committed by whoever holds assets/0.
pub(super) const INTEL: TaskId = TaskId { topic: InputTopic::Intel, partition: 0 };
const ASSETS_0: TaskId = TaskId { topic: InputTopic::Assets, partition: 0 };

/// How long a wait for the brokers may last.
#[derive(Clone)]
pub(super) enum Patience {
    /// Running: until delivered, or until the command stops.
    UntilStopped(CancellationToken),
    /// Stopping: until the shutdown deadline.
    Until(Instant),
}

/// The highest offset of each partition the metrics have counted: a
/// message read again (after a rebalance, or when the intel topic is read
/// again from a restored catalog) is applied again but counted once.
pub(super) type Counted = BTreeMap<(String, i32), i64>;

/// What the group's rebalances act on.
pub(super) struct Owner {
    pub(super) pipeline: Pipeline,
    pub(super) publisher: Publisher,
    pub(super) topics: TopicNames,
    /// The partitions this instance holds.
    pub(super) assigned: BTreeSet<(String, i32)>,
    /// Assigned partitions whose task another writer committed since: the
    /// lake says that writer owns them (a group mid-rebalance can assign a
    /// partition twice). Their messages are skipped until the group moves them.
    pub(super) fenced: BTreeSet<(String, i32)>,
    /// This instance holds partition 0 of the assets topic, so it commits the
    /// intel task (the catalog rows) too.
    pub(super) intel_owner: bool,
    /// The intel task was restored from the lake: the reader must re-seek.
    pub(super) intel_reseek: bool,
    /// A failure inside a rebalance callback, raised by the polling loop.
    pub(super) failure: Option<Error>,
    pub(super) metrics: PipelineMetrics,
    /// Messages larger than this are dead letters.
    pub(super) max_message_bytes: usize,
    pub(super) patience: Patience,
    /// The highest offset of each partition counted in the metrics.
    pub(super) counted: Counted,
}

/// The owner, for the polling thread (rebalances take it inside `poll`,
/// on the same thread, so it is never contended).
pub(super) fn lock(owner: &Mutex<Owner>) -> MutexGuard<'_, Owner> {
    owner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Owner {
    pub(super) fn task_of(&self, topic: &str, partition: i32) -> Option<TaskId> {
        let topic = self.topics.input_topic(topic)?;
        Some(TaskId { topic, partition: u32::try_from(partition).ok()? })
    }

    /// Where this instance's task of a partition is (the next offset).
    pub(super) fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let task = self.pipeline.processor_ref().task(self.task_of(topic, partition)?)?;
        Source::new(topic, partition).position(task.positions())
    }

    /// The intel task's positions, by intel partition.
    pub(super) fn intel_positions(&self) -> BTreeMap<i32, i64> {
        let task = self.pipeline.processor_ref().task(INTEL);
        task.map(|task| topic_positions(task.positions(), &self.topics.intel)).unwrap_or_default()
    }

    /// Waits until everything queued is delivered, as patient as the
    /// instance is now.
    pub(super) fn flush(&self) -> Result<()> {
        let never = CancellationToken::new();
        let (deadline, cancel) = match &self.patience {
            Patience::UntilStopped(cancel) => (None, cancel),
            Patience::Until(deadline) => (Some(*deadline), &never),
        };
        Ok(self.publisher.flush(deadline, cancel)?)
    }

    fn publish(&self, messages: &[OutboxMessage]) -> Result<()> {
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
    pub(super) fn publish_committed(&mut self) -> Result<Vec<Committed>> {
        let committed = self.pipeline.take_committed();
        for epoch in &committed {
            self.publish(&epoch.outbox)?;
        }
        self.metrics.commits.inc_by(committed.len() as u64);
        self.give_up_fenced()?;
        Ok(committed)
    }

    /// Tasks another writer committed are theirs now (see `Lake`): stop
    /// applying their partitions' messages until the group moves them.
    fn give_up_fenced(&mut self) -> Result<()> {
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
    pub(super) fn active(&self) -> impl Iterator<Item = &(String, i32)> {
        self.assigned.iter().filter(|partition| !self.fenced.contains(*partition))
    }

    /// Commits every owned task whose epoch has work, after making sure the
    /// previous epoch's outbox is delivered: recovery re-sends only the
    /// latest commit's outbox, so a crash re-sends at most one epoch's
    /// messages and never loses any.
    pub(super) fn commit(&mut self) -> Result<Vec<Committed>> {
        let started = Instant::now();
        self.flush()?;
        self.pipeline.commit()?;
        let committed = self.publish_committed()?;
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        Ok(committed)
    }

    fn acquire(&mut self, id: TaskId) -> Result<BTreeMap<String, u64>> {
        let (positions, outbox) = self.pipeline.acquire(id)?;
        // Acquiring waits for the writer, which may have found a task fenced.
        self.give_up_fenced()?;
        // The previous owner may have committed this outbox and stopped before sending it.
        self.publish(&outbox)?;
        Ok(positions)
    }

    fn assign(&mut self, partitions: &[(String, i32)]) -> Result<Vec<StartAt>> {
        let mut starts = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let Some(id) = self.task_of(topic, *partition) else {
                starts.push(StartAt::Beginning);
                continue;
            };
            if id == ASSETS_0 && !self.intel_owner {
                self.acquire(INTEL)?;
                self.intel_owner = true;
                self.intel_reseek = true;
            }
            let positions = self.acquire(id)?;
            self.assigned.insert((topic.clone(), *partition));
            self.fenced.remove(&(topic.clone(), *partition));
            let start = Source::new(topic, *partition).position(&positions).map(StartAt::Offset);
            tracing::info!(task = %id, start = ?start, "resuming from the last commit");
            starts.push(start.unwrap_or(StartAt::Beginning));
        }
        Ok(starts)
    }

    fn revoke(&mut self, partitions: &[(String, i32)], lost: bool) -> Result<()> {
        let mut ids: Vec<TaskId> = partitions.iter().filter_map(|(t, p)| self.task_of(t, *p)).collect();
        if ids.contains(&ASSETS_0) && self.intel_owner {
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
            self.flush()?;
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
