//! The configuration tree (STYLE.md "Configuration"): one typed tree, every
//! field with its default, in layers, lowest first: built-in defaults, the
//! TOML file (`--config FILE`), `PATCHTRAIL__SECTION__KEY` environment
//! variables, command-line flags. Loading reports every problem at once:
//! unknown keys (with the file line or the variable), wrong types, values out
//! of range. `patchtrail.example.toml` documents every key.

use std::path::Path;

use ingest::config::{KafkaConfig, PipelineConfig};
use ingest::kafka::{KafkaSettings, TopicNames};
use processor::config::{LakeConfig, ProcessorConfig, ProcessorSection, SlaSection};
use queries::Weights;
use queries::config::{AuthConfig, PrioritizationConfig, ServerConfig};
use serde::{Deserialize, Serialize};

/// `flag`, when given, over `value`.
pub fn set<T: Clone>(value: &mut T, flag: &Option<T>) {
    if let Some(flag) = flag {
        *value = flag.clone();
    }
}

/// The prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "PATCHTRAIL__";

/// The tree's layers: `PATCHTRAIL__KAFKA__PROPERTIES__NAME` sets a librdkafka
/// property; the token has no default, so help names it.
const LAYERS: schemas::layers::Spec<'static> = schemas::layers::Spec {
    env_prefix: ENV_PREFIX,
    maps: &[("kafka", "properties")],
    hidden_keys: &["auth", "auth.token"],
};

/// Everything patchtrail can be told: one section per concern, each
/// defined (with its defaults and checks) by the crate that owns it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `[kafka]`: brokers and client properties.
    pub kafka: KafkaConfig,
    /// `[topics]`: the topic names.
    pub topics: TopicNames,
    /// `[lake]`: where the lake is and how it is kept.
    pub lake: LakeConfig,
    /// `[processor]`: event time, tasks and rules.
    pub processor: ProcessorSection,
    /// `[sla]`: remediation deadlines by severity.
    pub sla: SlaSection,
    /// `[prioritization]`: the priority score's weights.
    pub prioritization: PrioritizationConfig,
    /// `[pipeline]`: how `run` batches, commits and retries.
    pub pipeline: PipelineConfig,
    /// `[server]`: the HTTP API.
    pub server: ServerConfig,
    /// `[auth]`: the API's bearer token.
    pub auth: AuthConfig,
}

impl Config {
    /// Defaults, then `file`, then the `PATCHTRAIL__…` variables of `env`;
    /// every problem at once. Flags are applied by the caller, then [`Config::problems`].
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, Vec<String>> {
        let source = match file {
            Some(file) => match schemas::layers::read_small(file) {
                Ok(text) => Some((file.display().to_string(), text)),
                Err(e) => return Err(vec![format!("cannot read the config file {}: {e}", file.display())]),
            },
            None => None,
        };
        Config::from_text(source.as_ref().map(|(name, text)| (name.as_str(), text.as_str())), env)
    }

    /// [`Config::load`] of a file's `text` already read (`name` in messages).
    pub fn from_text(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Vec<String>> {
        schemas::layers::load(file, env, &LAYERS, Config::problems)
    }

    /// Values out of range, every one.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.kafka.problems();
        problems.extend(self.topics.problems());
        problems.extend(self.lake.problems());
        problems.extend(self.processor.problems());
        problems.extend(self.sla.problems());
        problems.extend(self.prioritization.problems());
        problems.extend(self.pipeline.problems());
        problems.extend(self.server.problems());
        problems.extend(self.auth.problems());
        problems
    }

    /// The effective configuration as TOML, the token masked.
    pub fn show(&self) -> String {
        let mut shown = self.clone();
        if shown.auth.token.is_some() {
            shown.auth.token = Some("********".to_owned());
        }
        shown.kafka.mask_secrets();
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
    }

    /// `--brokers` and `-X KEY=VALUE` flags over `[kafka]`; the malformed ones as problems.
    pub fn apply_kafka_flags(&mut self, brokers: Option<&str>, properties: &[String]) -> Vec<String> {
        if let Some(brokers) = brokers {
            self.kafka.brokers = brokers.trim().to_owned();
        }
        let mut problems = Vec::new();
        for property in properties {
            match property.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    self.kafka.properties.insert(key.trim().to_owned(), value.to_owned());
                }
                _ => problems.push(format!("-X takes KEY=VALUE, got {property:?}")),
            }
        }
        problems
    }

    /// The Kafka client settings.
    pub fn kafka_settings(&self) -> KafkaSettings {
        self.kafka.settings()
    }

    /// The topic names.
    pub fn topic_names(&self) -> TopicNames {
        self.topics.clone()
    }

    /// The processor's rules.
    pub fn processor_config(&self) -> ProcessorConfig {
        ProcessorConfig::from_sections(&self.processor, &self.sla)
    }

    /// The priority score's weights.
    pub fn weights(&self) -> Weights {
        self.prioritization.weights()
    }
}
