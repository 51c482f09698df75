//! The embedded broker: librdkafka's mock cluster, a Kafka-protocol broker in
//! this process, for `demo` and fast tests. It keeps everything in memory and
//! goes away with the process. Its retention is fixed: each partition keeps at
//! most 5 MiB of (compressed) record batches, or 100,000 of them, and drops
//! the oldest beyond that; [`super::start_offsets`] tells when it has.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::{Error, Result, TopicSpec};

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
}
