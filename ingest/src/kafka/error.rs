//! Errors of the Kafka layer.

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client could not be created or a call failed (configuration, or the
    /// broker is away: librdkafka retries what it can by itself).
    #[error("kafka {operation}: {source}")]
    Client {
        /// What was being done.
        operation: &'static str,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// A topic could not be created or used.
    #[error("kafka topic {topic}: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn client(operation: &'static str, source: rdkafka::error::KafkaError) -> Self {
        Error::Client { operation, source }
    }
}

/// Result of the Kafka layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
