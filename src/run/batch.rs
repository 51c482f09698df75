//! Applying consumed messages: a batch of group messages spread over the
//! worker threads by task, and intel messages to the catalog.

use std::time::Duration;

use ingest::kafka::{self, Source, TopicNames};
use ingest::metrics::PipelineMetrics;
use processor::catalog::Catalog;
use processor::config::ProcessorConfig;
use processor::task::{Applied, Task};
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use schemas::{InputTopic, Timestamp};

use super::instance::{Instance, lock};
use super::owner::INTEL;

/// Messages taken from the group consumer per batch.
pub(super) const BATCH: usize = 5_000;
/// Below this many messages a batch is applied on the polling thread alone.
const PARALLEL_MIN: usize = 256;

/// A task and the indexes of its messages in a batch.
type Work<'a> = (&'a mut Task, Vec<usize>);

/// What applying a keyed message needs besides its task.
struct Context<'a> {
    catalog: &'a Catalog,
    config: &'a ProcessorConfig,
    max_bytes: usize,
    topics: &'a TopicNames,
    metrics: &'a PipelineMetrics,
}

/// The highest offset of each partition the metrics have counted: a
/// message read again (after a rebalance, or when the intel topic is read
/// again from a restored catalog) is applied again but counted once.
pub(super) type Counted = std::collections::BTreeMap<(String, i32), i64>;

impl Instance {
    /// Applies a batch of group messages: grouped by task, in partition
    /// order within each task, tasks spread over the worker threads. The
    /// catalog is only read meanwhile (intel is applied between batches).
    pub(super) fn apply_batch(&self, messages: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
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
        let context = Context { catalog, config, max_bytes, topics: &self.topics, metrics: &self.metrics };
        let mut work: Vec<Work<'_>> =
            tasks.iter_mut().zip(by_task).filter(|(_, indexes)| !indexes.is_empty()).collect();
        // Largest first into the least loaded worker.
        work.sort_by_key(|(_, indexes)| std::cmp::Reverse(indexes.len()));
        let workers = if messages.len() < PARALLEL_MIN { 1 } else { self.workers.min(work.len()).max(1) };
        let mut shares: Vec<(usize, Vec<Work<'_>>)> = (0..workers).map(|_| (0, Vec::new())).collect();
        for item in work {
            let share = shares.iter_mut().min_by_key(|(load, _)| *load).expect("one worker at least");
            share.0 += item.1.len();
            share.1.push(item);
        }
        let counted = self.counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let apply_share = |share: Vec<Work<'_>>| -> Vec<((String, i32), i64)> {
            share
                .into_iter()
                .filter_map(|(task, indexes)| apply_to_task(task, messages, &indexes, &context, &counted))
                .collect()
        };
        let mut shares = shares.into_iter().map(|(_, share)| share);
        let mine = shares.next().unwrap_or_default();
        let highest: Vec<((String, i32), i64)> = std::thread::scope(|scope| {
            let others: Vec<_> = shares.map(|share| scope.spawn(|| apply_share(share))).collect();
            let mut highest = apply_share(mine);
            for other in others {
                highest.extend(other.join().unwrap_or_default());
            }
            highest
        });
        let mut counted = self.counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (partition, offset) in highest {
            let entry = counted.entry(partition).or_insert(-1);
            *entry = (*entry).max(offset);
        }
        Ok(())
    }

    /// Applies what the intel reader has, waiting up to `wait` for the first.
    pub(super) fn poll_intel(&self, wait: Duration) -> usize {
        self.intel.poll_into(wait, 10_000, |message| self.apply_intel(message))
    }

    /// Applies one intel message to the catalog: an event, or a dead letter.
    pub(super) fn apply_intel(&self, message: &BorrowedMessage<'_>) {
        let mut owner = lock(&self.owner);
        let max_bytes = owner.max_message_bytes;
        let source = Source::new(message.topic(), message.partition()).to_string();
        let offset = message.offset() as u64;
        let processor = owner.pipeline.processor();
        let new = {
            let mut counted = self.counted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let highest = counted.entry((message.topic().to_owned(), message.partition())).or_insert(-1);
            let new = message.offset() > *highest;
            *highest = (*highest).max(message.offset());
            new
        };
        match kafka::check_message(InputTopic::Intel, message.key(), message.payload(), max_bytes) {
            Ok(event) => {
                processor.apply_to(INTEL, &source, offset, &event);
                if new {
                    self.metrics.consumed(&self.topics.intel).inc();
                }
            }
            Err(rejection) => {
                let failed_at = processor.task(INTEL).and_then(|t| t.max_event_time()).unwrap_or(Timestamp(0));
                processor.dead_letter(INTEL, &source, offset, kafka::dead_letter(message, rejection.error, failed_at));
                if new {
                    self.metrics.dead_lettered(&self.topics.intel, rejection.reason);
                }
            }
        }
    }
}

/// Applies a task's messages of a batch (all of one partition, in order):
/// each is an event, or a dead letter with the reason. Returns the
/// partition and the highest offset applied, for [`Counted`].
fn apply_to_task(
    task: &mut Task,
    messages: &[BorrowedMessage<'_>],
    indexes: &[usize],
    context: &Context<'_>,
    counted: &Counted,
) -> Option<((String, i32), i64)> {
    let first = &messages[*indexes.first()?];
    let input = task.id().topic;
    let topic = context.topics.input(input);
    // One partition per task: its source name, counter and counted offset are resolved once.
    let partition = (first.topic().to_owned(), first.partition());
    let source = Source::new(&partition.0, partition.1).to_string();
    let consumed = context.metrics.consumed(topic);
    let counted = counted.get(&partition).copied().unwrap_or(-1);
    let mut highest = counted;
    for &i in indexes {
        let message = &messages[i];
        let offset = message.offset() as u64;
        let new = message.offset() > counted;
        highest = highest.max(message.offset());
        match kafka::check_message(input, message.key(), message.payload(), context.max_bytes) {
            Ok(event) => {
                let applied = task.apply_keyed(&source, offset, &event, context.catalog, context.config);
                if new {
                    consumed.inc();
                    if applied == Applied::BeyondRetention {
                        context.metrics.dead_lettered(topic, "beyond_retention");
                    }
                }
            }
            Err(rejection) => {
                let failed_at = task.max_event_time().unwrap_or(Timestamp(0));
                task.dead_letter(&source, offset, kafka::dead_letter(message, rejection.error, failed_at));
                if new {
                    context.metrics.dead_lettered(topic, rejection.reason);
                }
            }
        }
    }
    Some((partition, highest))
}
