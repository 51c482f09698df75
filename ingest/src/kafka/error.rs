//! Errors of the Kafka layer, each with its [`ErrorClass`]: a configuration
//! librdkafka refuses is the user's to fix and is never retried; a broker
//! that does not answer is transient.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use schemas::ErrorClass;

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
        source: KafkaError,
    },
    /// A topic could not be created or used.
    #[error("kafka topic {topic}: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
        /// The broker's error code, when it gave one.
        code: Option<RDKafkaErrorCode>,
    },
    /// Messages were still undelivered when the deadline passed.
    #[error(
        "{messages} messages to {topic} could not be delivered before the deadline (the brokers did not take them)"
    )]
    Undelivered {
        /// A topic among them.
        topic: String,
        /// How many.
        messages: usize,
    },
    /// The wait was cancelled (the command is stopping).
    #[error("stopped while waiting for the brokers")]
    Cancelled,
}

impl Error {
    pub(crate) fn client(operation: &'static str, source: KafkaError) -> Self {
        Error::Client { operation, source }
    }

    /// Whose problem it is: configuration librdkafka or the cluster refuses
    /// is [`ErrorClass::Input`], everything the brokers may heal is
    /// [`ErrorClass::Transient`].
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Client { source, .. } => class_of(source),
            Error::Topic { code: Some(code), .. } => class_of_code(*code),
            Error::Topic { code: None, .. } | Error::Undelivered { .. } | Error::Cancelled => ErrorClass::Transient,
        }
    }
}

fn class_of(error: &KafkaError) -> ErrorClass {
    match error {
        // Creating a client only fails on its configuration: an unknown
        // property, a value librdkafka does not support (a SASL mechanism
        // it lacks), a missing certificate file.
        KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) | KafkaError::Subscription(_) => ErrorClass::Input,
        other => other.rdkafka_error_code().map_or(ErrorClass::Transient, class_of_code),
    }
}

fn class_of_code(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode as Code;
    match code {
        Code::Authentication
        | Code::SaslAuthenticationFailed
        | Code::UnsupportedSASLMechanism
        | Code::IllegalSASLState
        | Code::TopicAuthorizationFailed
        | Code::GroupAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::InvalidConfig
        | Code::InvalidTopic
        | Code::InvalidReplicationFactor
        | Code::InvalidPartitions
        | Code::PolicyViolation
        | Code::InvalidArgument => ErrorClass::Input,
        _ => ErrorClass::Transient,
    }
}

/// Result of the Kafka layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_input_and_outages_are_transient() {
        let creation = Error::client("producer", KafkaError::ClientCreation("No such configuration property".into()));
        assert_eq!(creation.class(), ErrorClass::Input);
        let down = Error::client("fetch metadata", KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown));
        assert_eq!(down.class(), ErrorClass::Transient);
        let sasl = Error::client("poll", KafkaError::Global(RDKafkaErrorCode::SaslAuthenticationFailed));
        assert_eq!(sasl.class(), ErrorClass::Input);
        let timeout = Error::client("flush", KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        assert_eq!(timeout.class(), ErrorClass::Transient);
        assert_eq!(Error::Cancelled.class(), ErrorClass::Transient);
    }
}
