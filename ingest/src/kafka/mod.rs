//! Kafka for patchtrail: client settings, topic names and creation, the
//! consumer-group consumer whose partitions map to processor tasks, the
//! intel reader and its catch-up, the message checks and dead letters of bad
//! input, the typed source names of partitions, offset storing and lag, the
//! publisher of derived topics, the embedded broker, and producing simulated
//! events.
//!
//! Nothing here computes metrics: the binary wires these to the processor.

pub mod broker;
mod consumer;
mod error;
mod message;
pub mod offsets;
mod producer;

pub use broker::EmbeddedBroker;
pub use consumer::{
    GroupConsumer, GroupContext, IntelReader, PartitionOwner, StartAt, end_offsets, group_consumer, poll_batch,
    probe_brokers, start_offsets, watermark_client,
};
pub use error::{Error, Result};
pub use message::{Rejection, check_message, dead_letter};
pub use producer::{Publisher, produce_simulation, sleep_unless_cancelled};
pub use schemas::source::{Source, source_name, topic_positions};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use schemas::InputTopic;

/// How to reach the cluster: bootstrap servers plus librdkafka properties
/// passed through as given (SASL, TLS, timeouts, ...).
#[derive(Clone, Debug, Default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Extra librdkafka properties, applied last.
    pub properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Settings for `brokers` with no extra properties.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings { brokers: brokers.into(), properties: BTreeMap::new() }
    }

    /// A client configuration with the bootstrap servers, `defaults`, then the
    /// pass-through properties (which win).
    pub fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// Topic names (CONTRACT.md §2 defaults; all configurable: the `[topics]`
/// section of the configuration).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct TopicNames {
    pub assets: String,
    pub rollouts: String,
    pub network: String,
    pub intel: String,
    pub alerts: String,
    pub priorities: String,
    pub reevaluations: String,
    pub dlq: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        TopicNames {
            assets: "patchtrail.assets".to_owned(),
            rollouts: "patchtrail.rollouts".to_owned(),
            network: "patchtrail.network".to_owned(),
            intel: "patchtrail.intel".to_owned(),
            alerts: "patchtrail.alerts".to_owned(),
            priorities: "patchtrail.priorities".to_owned(),
            reevaluations: "patchtrail.reevaluations".to_owned(),
            dlq: "patchtrail.dlq".to_owned(),
        }
    }
}

impl TopicNames {
    /// The Kafka topic of an input topic.
    pub fn input(&self, topic: InputTopic) -> &str {
        match topic {
            InputTopic::Assets => &self.assets,
            InputTopic::Rollouts => &self.rollouts,
            InputTopic::Network => &self.network,
            InputTopic::Intel => &self.intel,
        }
    }

    /// The input topic a Kafka topic name is.
    pub fn input_topic(&self, name: &str) -> Option<InputTopic> {
        InputTopic::ALL.iter().copied().find(|&topic| self.input(topic) == name)
    }

    /// The keyed input topics, consumed by the group.
    pub fn keyed(&self) -> [&str; 3] {
        [&self.assets, &self.rollouts, &self.network]
    }

    /// Names missing or given twice, every one (`[topics]`).
    pub fn problems(&self) -> Vec<String> {
        let topics = [
            ("assets", &self.assets),
            ("rollouts", &self.rollouts),
            ("network", &self.network),
            ("intel", &self.intel),
            ("alerts", &self.alerts),
            ("priorities", &self.priorities),
            ("reevaluations", &self.reevaluations),
            ("dlq", &self.dlq),
        ];
        let mut problems: Vec<String> = topics
            .iter()
            .filter(|(_, name)| name.trim().is_empty())
            .map(|(key, _)| format!("topics.{key} must not be empty"))
            .collect();
        let distinct: std::collections::BTreeSet<&String> = topics.iter().map(|(_, name)| *name).collect();
        if distinct.len() != topics.len() {
            problems.push("topics: every topic needs a name of its own".to_owned());
        }
        problems
    }

    /// The output topics with `partitions` each (the priorities topic compacted).
    pub fn outputs(&self, partitions: i32) -> Vec<TopicSpec<'_>> {
        [(&self.alerts, false), (&self.reevaluations, false), (&self.dlq, false), (&self.priorities, true)]
            .into_iter()
            .map(|(name, compacted)| TopicSpec { name, partitions, compacted })
            .collect()
    }
}

/// One topic to create if missing.
#[derive(Clone, Debug)]
pub struct TopicSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// Partitions.
    pub partitions: i32,
    /// Whether it is log-compacted (keeps the latest value per key).
    pub compacted: bool,
}

/// A librdkafka client error (`ClientContext::error`): the brokers being
/// unreachable sets `brokers_down` and is logged once per outage (the caller
/// clears the flag when they answer again); anything else is logged.
pub(crate) fn client_error(client: &str, brokers_down: &AtomicBool, error: &KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    if matches!(code, Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)) {
        if !brokers_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(client, %reason, "cannot reach the Kafka brokers; retrying until they answer");
        }
    } else {
        tracing::warn!(client, %error, %reason, "kafka client error");
    }
}

/// Creates the input topics that do not exist yet, `partitions` each (the
/// intel topic compacted), as producers (`simulate`, `import`) need them.
pub fn create_input_topics(settings: &KafkaSettings, topics: &TopicNames, partitions: i32) -> Result<()> {
    let specs: Vec<TopicSpec<'_>> = InputTopic::ALL
        .iter()
        .map(|&topic| TopicSpec { name: topics.input(topic), partitions, compacted: topic == InputTopic::Intel })
        .collect();
    create_topics(settings, &specs, Duration::from_secs(30))
}

/// Creates the topics that do not exist yet; existing ones are left as they are.
pub fn create_topics(settings: &KafkaSettings, topics: &[TopicSpec<'_>], timeout: Duration) -> Result<()> {
    // Topics that exist are left alone, and with none missing no admin
    // request is made (a cluster may not grant the right to create topics).
    let names: Vec<&str> = topics.iter().map(|topic| topic.name).collect();
    let existing = partition_counts(settings, &names, timeout)?;
    let topics: Vec<&TopicSpec<'_>> =
        topics.iter().filter(|topic| existing.get(topic.name).is_none_or(|&n| n == 0)).collect();
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        settings.client_config(&[]).create().map_err(|e| Error::client("admin client", e))?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|topic| {
            let new = NewTopic::new(topic.name, topic.partitions, TopicReplication::Fixed(1));
            if topic.compacted { new.set("cleanup.policy", "compact") } else { new }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().map_err(|e| Error::Topic {
        topic: topics.iter().map(|t| t.name).collect(),
        reason: e.to_string(),
        code: None,
    })?;
    let results =
        runtime.block_on(admin.create_topics(&new_topics, &options)).map_err(|e| Error::client("create topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(Error::Topic { topic, reason: code.to_string(), code: Some(code) }),
        }
    }
    Ok(())
}

/// Partitions of each topic, from the cluster's metadata (0 if missing).
pub fn partition_counts(settings: &KafkaSettings, topics: &[&str], timeout: Duration) -> Result<BTreeMap<String, i32>> {
    let consumer: BaseConsumer =
        settings.client_config(&[]).create().map_err(|e| Error::client("metadata client", e))?;
    let mut counts = BTreeMap::new();
    for &topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| Error::client("fetch metadata", e))?;
        let n = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        counts.insert(topic.to_owned(), n as i32);
    }
    Ok(counts)
}
