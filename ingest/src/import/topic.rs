//! `import FORMAT --from-topic TOPIC`: raw records of a runtime format from
//! a Kafka topic, converted as they arrive, with offsets committed only for
//! what the output has taken for good. A flow source's offset stops at the
//! first message an open window holds, and carries the window watermark as
//! its metadata: the partition's next owner rebuilds the open windows
//! exactly and skips the closed ones.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use schemas::Timestamp;
use tokio_util::sync::CancellationToken;

use super::Record;
use super::stream::{Converter, StreamFormat};
use crate::kafka::{self, KafkaSettings};

/// How often offsets are committed (after the events are delivered).
const COMMIT_EVERY: Duration = Duration::from_secs(2);

/// Where converted records go: the command's output and its summary.
pub trait Sink {
    /// Takes one record; `origin` names the input in messages.
    fn take(&mut self, origin: &str, record: Record);
    /// The output's first failure since the last call, if any: it stops
    /// the import.
    fn failure(&mut self) -> Option<OutputError>;
    /// Pushes what was taken out now (a file, standard output), when the
    /// input has nothing more for a while; a producer sends on its own.
    fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
    /// Waits until every event taken so far is delivered for good.
    fn deliver(&mut self, cancel: &CancellationToken) -> Result<(), OutputError>;
    /// Records and events taken, and records that failed, for the log.
    fn counts(&self) -> (u64, u64, u64);
}

/// A failure of the output, whatever it is.
pub type OutputError = Box<dyn std::error::Error + Send + Sync>;

/// Why consuming stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The consumer could not be created or subscribed.
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    /// The output failed.
    #[error("the output failed")]
    Output(#[source] OutputError),
}

/// Notes the partitions a rebalance takes away: their windows are
/// dropped, and their next owner rebuilds them from the committed offset.
#[derive(Default)]
struct ImportContext {
    revoked: Mutex<Vec<i32>>,
}

impl ClientContext for ImportContext {}

impl ConsumerContext for ImportContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
            revoked.extend(partitions.elements().iter().map(|element| element.partition()));
        }
    }
}

struct Partition {
    converter: Converter,
    /// The offset after the last message taken.
    next: i64,
}

/// Consumes `topic` in `group` until `stop`, converting each message into
/// `sink` and committing, every few seconds and at the stop, the offsets
/// whose events the sink delivered.
pub fn consume(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    format: Arc<StreamFormat>,
    sink: &mut dyn Sink,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let consumer: BaseConsumer<ImportContext> = settings
        .client_config(&[
            ("group.id", group),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
        ])
        .create_with_context(ImportContext::default())
        .map_err(|e| kafka::Error::client("create the import consumer", e))?;
    consumer.subscribe(&[topic]).map_err(|e| kafka::Error::client("subscribe", e))?;
    tracing::info!(topic, group, "importing from the topic until SIGTERM");
    let mut partitions: BTreeMap<i32, Partition> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut reported = (0, 0);
    let name = format!("topic {topic}");
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let (partition, offset) = (message.partition(), message.offset());
                let state = match partitions.entry(partition) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        let watermark = committed_watermark(&consumer, topic, partition);
                        let tag = format!("{topic}/{partition}");
                        entry.insert(Partition {
                            converter: Converter::new(format.clone(), tag, watermark),
                            next: offset,
                        })
                    }
                };
                let payload = message.payload().unwrap_or_default();
                state.converter.record(
                    &|| format!("partition {partition} offset {offset}"),
                    payload,
                    offset,
                    &mut |record| sink.take(&name, record),
                );
                state.next = offset + 1;
                if let Some(error) = sink.failure() {
                    return Err(Error::Output(error));
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "consumer error (librdkafka retries)"),
            None => {}
        }
        let revoked = std::mem::take(&mut *consumer.context().revoked.lock().unwrap_or_else(PoisonError::into_inner));
        for partition in revoked {
            partitions.remove(&partition);
        }
        if last_commit.elapsed() >= COMMIT_EVERY {
            commit(&consumer, topic, &partitions, sink, stop)?;
            last_commit = Instant::now();
            let (records, events, failed) = sink.counts();
            if (records, events) != reported {
                reported = (records, events);
                tracing::info!(records, events, failed, "delivered and committed");
            }
        }
    }
    tracing::info!("stop requested: committing what was delivered");
    commit(&consumer, topic, &partitions, sink, &CancellationToken::new())
}

/// The window watermark stored with the partition's committed offset.
fn committed_watermark(consumer: &BaseConsumer<ImportContext>, topic: &str, partition: i32) -> Option<Timestamp> {
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10)).ok()?;
    let element = committed.find_partition(topic, partition)?;
    element.metadata().strip_prefix("watermark=")?.parse::<i64>().ok().map(Timestamp::from_micros)
}

/// Waits for every event to be delivered, then commits each partition's
/// offset: past its last message, or, for a flow source, at the first
/// message its open windows hold.
fn commit(
    consumer: &BaseConsumer<ImportContext>,
    topic: &str,
    partitions: &BTreeMap<i32, Partition>,
    sink: &mut dyn Sink,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    if partitions.is_empty() {
        return Ok(());
    }
    sink.deliver(cancel).map_err(Error::Output)?;
    let mut offsets = TopicPartitionList::new();
    for (partition, state) in partitions {
        let windows = state.converter.windows();
        let offset = windows.and_then(|w| w.held_from()).unwrap_or(state.next);
        offsets
            .add_partition_offset(topic, *partition, Offset::Offset(offset))
            .map_err(|e| kafka::Error::client("list an offset to commit", e))?;
        if let (Some(watermark), Some(mut element)) =
            (windows.and_then(|w| w.watermark()), offsets.find_partition(topic, *partition))
        {
            element.set_metadata(format!("watermark={}", watermark.micros()));
        }
    }
    if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
        // Not fatal: the next commit covers these offsets; a restart repeats a little.
        tracing::warn!(%error, "cannot commit the offsets now");
    }
    Ok(())
}
