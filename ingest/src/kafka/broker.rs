//! The embedded broker: librdkafka's mock cluster, a Kafka-protocol broker in
//! this process, for `demo` and fast tests. It keeps everything in memory and
//! goes away with the process. Its retention is fixed: each partition keeps at
//! most 5 MiB of (compressed) record batches, or 100,000 of them, and drops
//! the oldest beyond that; [`super::start_offsets`] tells when it has.

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use schemas::InputTopic;

use super::{Error, KafkaSettings, Result, TopicNames, TopicSpec};
use crate::simulate::Simulator;
use crate::simulate::truth::LineCounts;

/// Partitions for each keyed topic, so that a simulated fleet's stream fits
/// the broker's retention: one partition per 8 MB of the estimate below,
/// about 10 events of 400 bytes per asset and day, a quarter of it after
/// lz4. The estimate is generous (the default fleet, 60 MB by it, fits 8
/// partitions), and [`EmbeddedBroker::produce_fleet`] checks afterwards
/// that nothing was dropped.
pub fn partitions_for(assets: u32, days: u32) -> i32 {
    let estimate = u64::from(assets) * u64::from(days) * 10 * 400 / 4;
    (estimate / 8_000_000 + 1).clamp(3, 64) as i32
}

/// A single-broker Kafka cluster in this process.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    /// Starts the broker on a free port of 127.0.0.1.
    pub fn start() -> Result<EmbeddedBroker> {
        let cluster = MockCluster::new(1).map_err(|e| Error::client("embedded broker", e))?;
        Ok(EmbeddedBroker { cluster })
    }

    /// Its bootstrap servers.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates topics (the mock cluster does not take admin requests for compaction).
    pub fn create_topics(&self, topics: &[TopicSpec<'_>]) -> Result<()> {
        for topic in topics {
            self.cluster.create_topic(topic.name, topic.partitions, 1).map_err(|e| Error::Topic {
                topic: topic.name.to_owned(),
                reason: e.to_string(),
                code: e.rdkafka_error_code(),
            })?;
        }
        Ok(())
    }

    /// Creates every topic of `topics` (the keyed ones and the outputs
    /// with `partitions` each, intel with one) and produces the simulated
    /// fleet into them, calling `progress` as `kafka::produce_simulation`
    /// does; fails if the broker dropped any of it.
    pub fn produce_fleet(
        &self,
        topics: &TopicNames,
        partitions: i32,
        simulator: &mut Simulator,
        progress: impl FnMut(LineCounts, f64),
    ) -> Result<LineCounts> {
        let mut specs: Vec<TopicSpec<'_>> = InputTopic::ALL
            .iter()
            .map(|&topic| TopicSpec {
                name: topics.input(topic),
                partitions: if topic == InputTopic::Intel { 1 } else { partitions },
                compacted: topic == InputTopic::Intel,
            })
            .collect();
        specs.extend(topics.outputs(partitions));
        self.create_topics(&specs)?;
        let mut producing = KafkaSettings::new(self.bootstrap_servers().as_str());
        for (key, value) in [
            ("compression.type", "lz4"),
            ("linger.ms", "200"),
            ("batch.num.messages", "100000"),
            ("batch.size", "8000000"),
        ] {
            producing.properties.insert(key.to_owned(), value.to_owned());
        }
        let counts = super::produce_simulation(&producing, topics, simulator, None, progress)?;
        for topic in InputTopic::ALL.iter().copied() {
            let count = if topic == InputTopic::Intel { 1 } else { partitions };
            let starts = super::start_offsets(&producing, topics.input(topic), count, Duration::from_secs(10))?;
            if let Some((partition, start)) = starts.iter().find(|(_, start)| **start > 0) {
                return Err(Error::Topic {
                    topic: topics.input(topic).to_owned(),
                    reason: format!(
                        "the embedded broker dropped the first {start} messages of partition {partition}: it keeps \
                         5 MiB per partition, and this fleet is too large for it; use fewer --assets or --days, or \
                         a real Kafka cluster (`simulate --brokers`, `run`, `serve`)"
                    ),
                    code: None,
                });
            }
        }
        Ok(counts)
    }
}
