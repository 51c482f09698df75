//! Consuming the input topics: a consumer-group consumer whose rebalances
//! are handed to a [`PartitionOwner`] (the pipeline), and the intel reader
//! that every instance runs over the whole intel topic, outside the group.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use tokio_util::sync::CancellationToken;

use super::{Error, KafkaSettings, Result};
use crate::metrics::PipelineMetrics;

/// Where a newly assigned partition starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// At this offset (the one the lake's commit log recorded).
    Offset(i64),
    /// At the earliest offset the partition still holds (the lake has no
    /// commit of it: the group's stored offsets do not count, the lake is the truth).
    Beginning,
}

/// What owns the partitions a consumer group gives this instance.
///
/// Called from inside [`BaseConsumer::poll`], on the polling thread, so the
/// owner may commit synchronously: a revoked partition is only handed to
/// another instance after [`PartitionOwner::revoked`] returns.
pub trait PartitionOwner: Send + 'static {
    /// Partitions gained (topic, partition): returns where each starts.
    fn assigned(&mut self, partitions: &[(String, i32)]) -> Vec<StartAt>;
    /// Partitions about to be lost. `lost` is true when the group already
    /// gave them away (this instance was too slow to poll): do not commit then.
    fn revoked(&mut self, partitions: &[(String, i32)], lost: bool);
}

/// The consumer context that forwards rebalances to the owner.
pub struct GroupContext<O> {
    owner: Arc<Mutex<O>>,
    /// Set when librdkafka reports every broker down or unreachable; the
    /// caller clears it once the cluster answers again.
    brokers_down: Arc<AtomicBool>,
}

/// A consumer in the group over the keyed input topics.
pub type GroupConsumer<O> = BaseConsumer<GroupContext<O>>;

impl<O: PartitionOwner> ClientContext for GroupContext<O> {
    fn error(&self, error: KafkaError, reason: &str) {
        super::client_error("consumer", &self.brokers_down, &error, reason);
    }
}

impl<O: PartitionOwner> ConsumerContext for GroupContext<O> {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let partitions: Vec<(String, i32)> =
            tpl.elements().iter().map(|element| (element.topic().to_owned(), element.partition())).collect();
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let mut owner = self.owner.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(partitions = %describe(&partitions), "partitions assigned");
                let starts = owner.assigned(&partitions);
                for ((topic, partition), start) in partitions.iter().zip(starts) {
                    let offset = match start {
                        StartAt::Offset(offset) => Offset::Offset(offset),
                        StartAt::Beginning => Offset::Beginning,
                    };
                    if let Err(error) = tpl.set_partition_offset(topic, *partition, offset) {
                        tracing::error!(topic, partition, %error, "cannot set the start offset");
                    }
                }
                if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                tracing::info!(partitions = %describe(&partitions), lost, "partitions revoked");
                owner.revoked(&partitions, lost);
                if cooperative { consumer.incremental_unassign(tpl) } else { consumer.unassign() }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                if cooperative { Ok(()) } else { consumer.unassign() }
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "cannot apply the rebalance");
        }
    }
}

fn describe(partitions: &[(String, i32)]) -> String {
    partitions.iter().map(|(topic, partition)| format!("{topic}/{partition}")).collect::<Vec<_>>().join(",")
}

/// Consumer settings shared by the group consumer and the intel reader:
/// bounded pre-fetch, so memory stays flat however large the lag.
fn consumer_defaults(fetch_buffer_kbytes: u32) -> Vec<(&'static str, String)> {
    vec![
        ("enable.partition.eof", "false".to_owned()),
        ("auto.offset.reset", "earliest".to_owned()),
        ("queued.max.messages.kbytes", fetch_buffer_kbytes.to_string()),
        ("queued.min.messages", "20000".to_owned()),
        ("fetch.wait.max.ms", "100".to_owned()),
    ]
}

/// Creates the group consumer over `topics`, subscribed, with cooperative-sticky
/// assignment and offsets stored only by the owner (after commits).
pub fn group_consumer<O: PartitionOwner>(
    settings: &KafkaSettings,
    group: &str,
    topics: &[&str],
    fetch_buffer_kbytes: u32,
    owner: Arc<Mutex<O>>,
    brokers_down: Arc<AtomicBool>,
) -> Result<GroupConsumer<O>> {
    let mut defaults = consumer_defaults(fetch_buffer_kbytes);
    defaults.extend([
        ("group.id", group.to_owned()),
        ("partition.assignment.strategy", "cooperative-sticky".to_owned()),
        ("enable.auto.commit", "true".to_owned()),
        ("auto.commit.interval.ms", "1000".to_owned()),
        ("enable.auto.offset.store", "false".to_owned()),
        ("session.timeout.ms", "10000".to_owned()),
        ("heartbeat.interval.ms", "1000".to_owned()),
    ]);
    let defaults: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let consumer: GroupConsumer<O> = settings
        .client_config(&defaults)
        .create_with_context(GroupContext { owner, brokers_down })
        .map_err(|e| Error::client("group consumer", e))?;
    consumer.subscribe(topics).map_err(|e| Error::client("subscribe", e))?;
    Ok(consumer)
}

/// Takes up to `max` messages (waiting up to 100 ms for the first);
/// rebalances run inside these polls. A consumer error ends the batch and
/// makes the pipeline not ready, logged once per outage (librdkafka
/// retries by itself).
pub fn poll_batch<'a, C: ConsumerContext>(
    consumer: &'a BaseConsumer<C>,
    max: usize,
    metrics: &PipelineMetrics,
) -> Vec<BorrowedMessage<'a>> {
    let mut messages = Vec::with_capacity(max);
    let mut wait = Duration::from_millis(100);
    while let Some(message) = consumer.poll(wait) {
        wait = Duration::ZERO;
        match message {
            Ok(message) => messages.push(message),
            Err(error) => {
                if metrics.is_ready() {
                    tracing::warn!(%error, "consumer error; retrying");
                }
                metrics.set_ready(false);
                break;
            }
        }
        if messages.len() >= max {
            break;
        }
    }
    messages
}

/// While the brokers are away (`brokers_down`, set by the clients): asks
/// the cluster for `topic`'s metadata; when it answers, clears the flag
/// and makes the pipeline ready again.
pub fn probe_brokers<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    brokers_down: &AtomicBool,
    metrics: &PipelineMetrics,
) {
    metrics.set_ready(false);
    if consumer.fetch_metadata(Some(topic), Duration::from_secs(1)).is_ok() {
        brokers_down.store(false, std::sync::atomic::Ordering::Relaxed);
        metrics.set_ready(true);
        tracing::info!("the Kafka brokers answer again");
    }
}

/// Reads every partition of the intel topic, outside the consumer group.
pub struct IntelReader {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl IntelReader {
    /// A reader over all `partitions` of `topic`, starting at `positions`
    /// (partition → next offset; the beginning for the others).
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        partitions: i32,
        positions: &BTreeMap<i32, i64>,
        fetch_buffer_kbytes: u32,
    ) -> Result<IntelReader> {
        let mut defaults = consumer_defaults(fetch_buffer_kbytes);
        // librdkafka wants a group id even for manual assignment; nothing is committed under it.
        defaults.push(("group.id", "patchtrail-intel".to_owned()));
        defaults.push(("enable.auto.commit", "false".to_owned()));
        let defaults: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let consumer: BaseConsumer =
            settings.client_config(&defaults).create().map_err(|e| Error::client("intel consumer", e))?;
        let reader = IntelReader { consumer, topic: topic.to_owned(), partitions };
        reader.seek_all(positions)?;
        Ok(reader)
    }

    /// Restarts every partition at `positions` (the beginning for the others).
    pub fn seek_all(&self, positions: &BTreeMap<i32, i64>) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for partition in 0..self.partitions {
            let offset = positions.get(&partition).map_or(Offset::Beginning, |&next| Offset::Offset(next));
            tpl.add_partition_offset(&self.topic, partition, offset).map_err(|e| Error::client("intel assign", e))?;
        }
        self.consumer.assign(&tpl).map_err(|e| Error::client("intel assign", e))
    }

    /// The consumer, to poll.
    pub fn consumer(&self) -> &BaseConsumer {
        &self.consumer
    }

    /// The topic it reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Hands what the reader has to `apply`, waiting up to `wait` for the
    /// first message, at most `max` messages; how many were handed.
    pub fn poll_into(&self, wait: Duration, max: usize, mut apply: impl FnMut(&BorrowedMessage<'_>)) -> usize {
        let mut n = 0;
        let mut wait = wait;
        while let Some(message) = self.consumer.poll(wait) {
            wait = Duration::ZERO;
            match message {
                Ok(message) => {
                    apply(&message);
                    n += 1;
                }
                Err(error) => tracing::warn!(%error, "intel consumer"),
            }
            if n >= max {
                break;
            }
        }
        n
    }

    /// Reads the topic up to `ends` (the end offsets it had when the caller
    /// asked), handing every message to `apply`, until `positions` (where
    /// the catalog is, partition → next offset) reaches them: a global table
    /// restored before any task processes (DESIGN.md "Topics and tasks").
    /// Returns how many messages were read; stops early if `cancel` is.
    pub fn catch_up(
        &self,
        ends: &BTreeMap<i32, i64>,
        cancel: &CancellationToken,
        mut positions: impl FnMut() -> BTreeMap<i32, i64>,
        mut apply: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<usize> {
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut read = 0;
        loop {
            let at = positions();
            if ends.iter().all(|(partition, end)| at.get(partition).copied().unwrap_or(0) >= *end) {
                break;
            }
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            read += self.poll_into(Duration::from_millis(100), 10_000, &mut apply);
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                tracing::info!(read, "still reading the intel topic");
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            read,
            end = ends.values().sum::<i64>(),
            "intel catalog loaded"
        );
        Ok(read)
    }
}

/// The high watermark of each of `partitions` of `topic`.
pub fn end_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>> {
    watermarks(consumer, topic, partitions, timeout, |(_, high)| high)
}

/// One of the two watermarks (`pick` chooses from low, high) of each partition.
fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    pick: impl Fn((i64, i64)) -> i64,
) -> Result<BTreeMap<i32, i64>> {
    (0..partitions)
        .map(|partition| {
            let marks = consumer
                .fetch_watermarks(topic, partition, timeout)
                .map_err(|e| Error::client("fetch watermarks", e))?;
            Ok((partition, pick(marks)))
        })
        .collect()
}

/// The low watermark (the oldest offset the broker still holds) of each of
/// `partitions` of `topic`: above 0 when retention dropped messages.
pub fn start_offsets(
    settings: &KafkaSettings,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>> {
    watermarks(&watermark_client(settings)?, topic, partitions, timeout, |(low, _)| low)
}

/// A client that only asks for watermarks (it joins no group and fetches
/// nothing). A broker answers one connection's requests in order, so a
/// consumer's own ListOffsets request waits behind its long-polling fetch:
/// under load that is longer than any short timeout (seen with tansu, where
/// every lag query of a busy consumer timed out). This client's requests go
/// on their own connection.
pub fn watermark_client(settings: &KafkaSettings) -> Result<BaseConsumer> {
    settings
        .client_config(&[("group.id", "patchtrail-watermarks"), ("enable.auto.commit", "false")])
        .create()
        .map_err(|e| Error::client("create a consumer", e))
}
