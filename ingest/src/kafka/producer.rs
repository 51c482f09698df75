//! Producing: the publisher of the derived topics (alerts, re-evaluation
//! requests, dead letters, priorities), and simulated events into the input
//! topics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use tokio_util::sync::CancellationToken;

use super::{Error, KafkaSettings, Result, TopicNames};
use crate::simulate::Simulator;
use crate::simulate::truth::LineCounts;

/// Keeps the messages whose delivery failed after librdkafka's own
/// retries, for [`Publisher::flush`] to send again, and notes when the
/// brokers are unreachable.
#[derive(Clone, Default)]
pub struct DeliveryCounter {
    failed: Arc<AtomicU64>,
    to_resend: Arc<Mutex<Vec<Undelivered>>>,
    brokers_down: Arc<AtomicBool>,
}

/// A message to send again.
struct Undelivered {
    topic: String,
    key: Option<String>,
    /// `None`: a tombstone.
    value: Option<Vec<u8>>,
}

impl ClientContext for DeliveryCounter {
    fn error(&self, error: KafkaError, reason: &str) {
        super::client_error("producer", &self.brokers_down, &error, reason);
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        use rdkafka::message::Message;
        if let Err((error, message)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%error, topic = message.topic(), "delivery failed; will send again");
            let undelivered = Undelivered {
                topic: message.topic().to_owned(),
                key: message.key().map(|key| String::from_utf8_lossy(key).into_owned()),
                value: message.payload().map(<[u8]>::to_vec),
            };
            self.to_resend.lock().unwrap_or_else(PoisonError::into_inner).push(undelivered);
        }
    }
}

/// An idempotent producer: librdkafka retries without duplicating or
/// reordering within a partition, and a full local queue makes the caller
/// wait (backpressure), never drops. A message librdkafka gives up on (the
/// brokers were away too long) is sent again by [`Publisher::flush`], so
/// nothing queued is lost, though such a message may then arrive after
/// later ones.
pub struct Publisher {
    producer: ThreadedProducer<DeliveryCounter>,
    counter: DeliveryCounter,
}

impl Publisher {
    /// A publisher on the cluster. Keys are placed with murmur2, as the Java
    /// client places them, so keyed topics are partitioned alike whoever writes.
    pub fn new(settings: &KafkaSettings) -> Result<Publisher> {
        Publisher::with_down_flag(settings, Arc::default())
    }

    /// [`Publisher::new`], setting `brokers_down` when librdkafka reports
    /// the brokers unreachable (the caller clears it when they answer).
    pub fn with_down_flag(settings: &KafkaSettings, brokers_down: Arc<AtomicBool>) -> Result<Publisher> {
        let counter = DeliveryCounter { brokers_down, ..DeliveryCounter::default() };
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
        self.send_optional(topic, key, Some(value))
    }

    /// Queues a tombstone: `key` without a value, which a compacted topic
    /// keeps until it forgets the key.
    pub fn send_tombstone(&self, topic: &str, key: &str) -> Result<()> {
        self.send_optional(topic, Some(key), None)
    }

    fn send_optional(&self, topic: &str, key: Option<&str>, value: Option<&[u8]>) -> Result<()> {
        let mut record = BaseRecord::<str, [u8]>::to(topic);
        if let Some(value) = value {
            record = record.payload(value);
        }
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

    /// Waits until every queued message is delivered, sending again those
    /// librdkafka gave up on, with backoff. Gives up with
    /// [`Error::Undelivered`] when `deadline` passes and with
    /// [`Error::Cancelled`] when `cancel` is cancelled, each seen within a
    /// second; the messages not delivered stay queued for the next flush.
    pub fn flush(&self, deadline: Option<Instant>, cancel: &CancellationToken) -> Result<()> {
        let mut delay = Duration::from_millis(200);
        loop {
            self.flush_queue(deadline, cancel)?;
            let undelivered =
                std::mem::take(&mut *self.counter.to_resend.lock().unwrap_or_else(PoisonError::into_inner));
            if undelivered.is_empty() {
                return Ok(());
            }
            let stop = if cancel.is_cancelled() {
                Some(Error::Cancelled)
            } else if deadline.is_some_and(|deadline| Instant::now() + delay > deadline) {
                Some(Error::Undelivered { topic: undelivered[0].topic.clone(), messages: undelivered.len() })
            } else {
                None
            };
            if let Some(error) = stop {
                self.counter.to_resend.lock().unwrap_or_else(PoisonError::into_inner).extend(undelivered);
                return Err(error);
            }
            tracing::warn!(
                messages = undelivered.len(),
                retry_in_ms = delay.as_millis() as u64,
                "the brokers did not take some messages; sending them again"
            );
            if sleep_unless_cancelled(delay, cancel) {
                self.counter.to_resend.lock().unwrap_or_else(PoisonError::into_inner).extend(undelivered);
                return Err(Error::Cancelled);
            }
            delay = (delay * 2).min(Duration::from_secs(10));
            for message in undelivered {
                self.send_optional(&message.topic, message.key.as_deref(), message.value.as_deref())?;
            }
        }
    }

    /// librdkafka's flush, in slices of a second so that the deadline and
    /// the cancellation are seen.
    fn flush_queue(&self, deadline: Option<Instant>, cancel: &CancellationToken) -> Result<()> {
        const SLICE: Duration = Duration::from_secs(1);
        loop {
            let slice = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE));
            if self.producer.flush(slice).is_ok() {
                return Ok(());
            }
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                let messages = usize::try_from(self.producer.in_flight_count()).unwrap_or(0);
                return Err(Error::Undelivered { topic: "(queued)".to_owned(), messages });
            }
        }
    }

    /// Deliveries that failed so far.
    pub fn failed_deliveries(&self) -> u64 {
        self.counter.failed.load(Ordering::Relaxed)
    }
}

/// Produces a simulated scenario into the input topics (key = subject), the
/// malformed lines as the raw bytes they are, so they reach the dead-letter
/// path, at most `rate` messages per second if given. `progress` is called
/// now and then with the counts so far and the share of the window done.
pub fn produce_simulation(
    settings: &KafkaSettings,
    topics: &TopicNames,
    simulator: &mut Simulator,
    rate: Option<u32>,
    mut progress: impl FnMut(LineCounts, f64),
) -> Result<LineCounts> {
    let publisher = Publisher::new(settings)?;
    let started = Instant::now();
    let mut last = started;
    let mut sent = 0u64;
    while let Some(line) = simulator.next_line() {
        publisher.send(topics.input(line.topic), Some(&line.key), &line.payload)?;
        sent += 1;
        // At most `rate` per second: the n-th message leaves n / rate seconds in.
        if let Some(rate) = rate.filter(|&rate| rate > 0) {
            let due = started + Duration::from_secs_f64(sent as f64 / f64::from(rate));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        if last.elapsed() > Duration::from_millis(250) {
            last = Instant::now();
            progress(simulator.counts(), simulator.progress());
        }
    }
    publisher.flush(Some(Instant::now() + Duration::from_secs(300)), &CancellationToken::new())?;
    Ok(simulator.counts())
}

/// Sleeps `duration` unless `cancel` is cancelled first; true if it was.
pub fn sleep_unless_cancelled(duration: Duration, cancel: &CancellationToken) -> bool {
    let until = Instant::now() + duration;
    loop {
        if cancel.is_cancelled() {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
