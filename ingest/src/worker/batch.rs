//! Applying consumed messages: a batch of group messages spread over the
//! worker threads by task, and intel messages to the catalog.

use processor::catalog::Catalog;
use processor::config::ProcessorConfig;
use processor::task::{Applied, Task};
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use schemas::{InputTopic, Timestamp};

use super::owner::{Counted, INTEL, Owner};
use crate::kafka::{self, Source, TopicNames};
use crate::metrics::PipelineMetrics;

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
    counted: &'a Counted,
}

/// Applies a batch of group messages: grouped by task, in partition order
/// within each task, tasks spread over up to `workers` threads (the calling
/// thread is one of them). The catalog is only read meanwhile (intel is
/// applied between batches).
pub(super) fn apply_batch(owner: &mut Owner, messages: &[BorrowedMessage<'_>], workers: usize) {
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
    let (tasks, catalog, config) = owner.pipeline.processor().keyed_tasks_mut();
    let context = Context {
        catalog,
        config,
        max_bytes: owner.max_message_bytes,
        topics: &owner.topics,
        metrics: &owner.metrics,
        counted: &owner.counted,
    };
    let mut work: Vec<Work<'_>> = tasks.iter_mut().zip(by_task).filter(|(_, indexes)| !indexes.is_empty()).collect();
    // Largest first into the least loaded worker.
    work.sort_by_key(|(_, indexes)| std::cmp::Reverse(indexes.len()));
    let workers = if messages.len() < PARALLEL_MIN { 1 } else { workers.min(work.len()).max(1) };
    let mut shares: Vec<(usize, Vec<Work<'_>>)> = (0..workers).map(|_| (0, Vec::new())).collect();
    for item in work {
        let share = shares.iter_mut().min_by_key(|(load, _)| *load).expect("one worker at least");
        share.0 += item.1.len();
        share.1.push(item);
    }
    let apply_share = |share: Vec<Work<'_>>| -> Vec<((String, i32), i64)> {
        share.into_iter().filter_map(|(task, indexes)| apply_to_task(task, messages, &indexes, &context)).collect()
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
    for (partition, offset) in highest {
        let entry = owner.counted.entry(partition).or_insert(-1);
        *entry = (*entry).max(offset);
    }
}

/// Applies one intel message to the catalog: an event, or a dead letter.
pub(super) fn apply_intel(owner: &mut Owner, message: &BorrowedMessage<'_>) {
    let source = Source::new(message.topic(), message.partition()).to_string();
    let offset = message.offset() as u64;
    let highest = owner.counted.entry((message.topic().to_owned(), message.partition())).or_insert(-1);
    let new = message.offset() > *highest;
    *highest = (*highest).max(message.offset());
    let processor = owner.pipeline.processor();
    match kafka::check_message(InputTopic::Intel, message.key(), message.payload(), owner.max_message_bytes) {
        Ok(event) => {
            processor.apply_to(INTEL, &source, offset, &event);
            if new {
                owner.metrics.consumed(&owner.topics.intel).inc();
            }
        }
        Err(rejection) => {
            let failed_at = processor.task(INTEL).and_then(|t| t.max_event_time()).unwrap_or(Timestamp(0));
            processor.dead_letter(INTEL, &source, offset, kafka::dead_letter(message, rejection.error, failed_at));
            if new {
                owner.metrics.dead_lettered(&owner.topics.intel, rejection.reason);
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
) -> Option<((String, i32), i64)> {
    let first = &messages[*indexes.first()?];
    let input = task.id().topic;
    let topic = context.topics.input(input);
    // One partition per task: its source name, counter and counted offset are resolved once.
    let partition = (first.topic().to_owned(), first.partition());
    let source = Source::new(&partition.0, partition.1).to_string();
    let consumed = context.metrics.consumed(topic);
    let counted = context.counted.get(&partition).copied().unwrap_or(-1);
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
