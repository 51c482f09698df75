//! Producing: the publisher of the derived topics (alerts, re-evaluation
//! requests, dead letters, priorities), and simulated events into the input
//! topics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::{Error, KafkaSettings, Result, TopicNames};
use crate::simulate::Simulator;
use crate::simulate::truth::LineCounts;

/// Counts deliveries that failed after librdkafka's own retries.
#[derive(Clone, Default)]
pub struct DeliveryCounter {
    failed: Arc<AtomicU64>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, topic = rdkafka::message::Message::topic(message), "delivery failed");
        }
    }
}

/// An idempotent producer: librdkafka retries without duplicating or
/// reordering within a partition, and a full local queue makes the caller
/// wait (backpressure), never drops.
pub struct Publisher {
    producer: ThreadedProducer<DeliveryCounter>,
    counter: DeliveryCounter,
}

impl Publisher {
    /// A publisher on the cluster. Keys are placed with murmur2, as the Java
    /// client places them, so keyed topics are partitioned alike whoever writes.
    pub fn new(settings: &KafkaSettings) -> Result<Publisher> {
        let counter = DeliveryCounter::default();
        let producer = settings
            .client_config(&[
                ("enable.idempotence", "true"),
                ("partitioner", "murmur2_random"),
                ("linger.ms", "20"),
                ("batch.num.messages", "10000"),
                ("queue.buffering.max.kbytes", "65536"),
            ])
            .create_with_context(counter.clone())
            .map_err(|e| Error::client("producer", e))?;
        Ok(Publisher { producer, counter })
    }

    /// Queues one message, waiting while the local queue is full.
    pub fn send(&self, topic: &str, key: Option<&str>, value: &[u8]) -> Result<()> {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((error, _)) => return Err(Error::client("produce", error)),
            }
        }
    }

    /// Waits until every queued message is delivered (or failed), up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(|e| Error::client("flush", e))
    }

    /// Deliveries that failed so far.
    pub fn failed_deliveries(&self) -> u64 {
        self.counter.failed.load(Ordering::Relaxed)
    }
}

/// Produces a simulated scenario into the input topics (key = subject), the
/// malformed lines as the raw bytes they are, so they reach the dead-letter
/// path. `progress` is called now and then with the counts so far and the
/// share of the window done.
pub fn produce_simulation(
    settings: &KafkaSettings,
    topics: &TopicNames,
    simulator: &mut Simulator,
    mut progress: impl FnMut(LineCounts, f64),
) -> Result<LineCounts> {
    let publisher = Publisher::new(settings)?;
    let mut last = Instant::now();
    while let Some(line) = simulator.next_line() {
        publisher.send(topics.input(line.topic), Some(&line.key), &line.payload)?;
        if last.elapsed() > Duration::from_millis(250) {
            last = Instant::now();
            progress(simulator.counts(), simulator.progress());
        }
    }
    publisher.flush(Duration::from_secs(120))?;
    match publisher.failed_deliveries() {
        0 => Ok(simulator.counts()),
        failed => Err(Error::Topic {
            topic: topics.keyed().join(","),
            reason: format!("{failed} messages could not be delivered"),
        }),
    }
}
