//! The `[kafka]` and `[pipeline]` sections of the configuration (the
//! `[topics]` section is [`crate::kafka::TopicNames`] itself).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kafka::KafkaSettings;

/// `[kafka]`: the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The consumer group of `run`; every instance of a deployment uses the same.
    pub group: String,
    /// librdkafka properties passed through as given (SASL, TLS, timeouts):
    /// `"security.protocol" = "SASL_SSL"`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".to_owned(),
            group: "patchtrail".to_owned(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// Values out of range, every one.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = schemas::class::Problems::default();
        problems.check(!self.brokers.trim().is_empty(), || {
            "kafka.brokers (--brokers) must name at least one host:port".to_owned()
        });
        problems.check(!self.group.trim().is_empty(), || "kafka.group (--group) must not be empty".to_owned());
        problems.0
    }

    /// Masks the properties that hold secrets (passwords, keys), for showing.
    pub fn mask_secrets(&mut self) {
        for (key, value) in self.properties.iter_mut() {
            if schemas::layers::names_a_secret(key) {
                *value = "********".to_owned();
            }
        }
    }

    /// The client settings.
    pub fn settings(&self) -> KafkaSettings {
        KafkaSettings { brokers: self.brokers.trim().to_owned(), properties: self.properties.clone() }
    }
}

/// `[pipeline]`: `patchtrail run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineConfig {
    /// Commit an epoch at least this often.
    pub commit_interval_ms: u64,
    /// Commit an epoch after this many messages, whatever the interval.
    pub epoch_messages: u64,
    /// Messages larger than this are dead letters.
    pub max_message_bytes: usize,
    /// Pre-fetched messages librdkafka may hold per partition, in KiB.
    pub fetch_buffer_kbytes: u32,
    /// How long a stop waits for the last commit.
    pub shutdown_timeout_secs: u64,
    /// Threads that apply messages (0: one per core but one).
    pub workers: usize,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_listen: String,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            commit_interval_ms: 5_000,
            epoch_messages: 500_000,
            max_message_bytes: 1 << 20,
            fetch_buffer_kbytes: 8_192,
            shutdown_timeout_secs: 30,
            workers: 0,
            metrics_listen: "127.0.0.1:9464".to_owned(),
        }
    }
}

impl PipelineConfig {
    /// Values out of range, every one.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = schemas::class::Problems::default();
        problems.check(self.commit_interval_ms >= 100, || {
            format!(
                "pipeline.commit_interval_ms (--commit-interval-ms) must be at least 100, got {}",
                self.commit_interval_ms
            )
        });
        problems.check(self.epoch_messages >= 1_000, || {
            format!("pipeline.epoch_messages (--epoch-messages) must be at least 1000, got {}", self.epoch_messages)
        });
        problems.check(self.fetch_buffer_kbytes >= 64, || {
            format!(
                "pipeline.fetch_buffer_kbytes (--fetch-buffer-kbytes) must be at least 64, got {}",
                self.fetch_buffer_kbytes
            )
        });
        problems.check(self.max_message_bytes >= 1_024, || {
            format!(
                "pipeline.max_message_bytes (--max-message-bytes) must be at least 1024, got {}",
                self.max_message_bytes
            )
        });
        problems.check(self.shutdown_timeout_secs >= 1, || {
            "pipeline.shutdown_timeout_secs (--shutdown-timeout-secs) must be at least 1".to_owned()
        });
        problems.check(self.metrics_listen.parse::<std::net::SocketAddr>().is_ok(), || {
            format!(
                "pipeline.metrics_listen (--metrics-listen) must be an IP address and port, got {:?}",
                self.metrics_listen
            )
        });
        problems.0
    }
}
