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
            Some(file) => match std::fs::read_to_string(file) {
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
        let topics = [
            ("assets", &self.topics.assets),
            ("rollouts", &self.topics.rollouts),
            ("network", &self.topics.network),
            ("intel", &self.topics.intel),
            ("alerts", &self.topics.alerts),
            ("priorities", &self.topics.priorities),
            ("reevaluations", &self.topics.reevaluations),
            ("dlq", &self.topics.dlq),
        ];
        for (key, name) in topics {
            if name.trim().is_empty() {
                problems.push(format!("topics.{key} must not be empty"));
            }
        }
        let mut distinct: Vec<&String> = topics.iter().map(|(_, name)| *name).collect();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != topics.len() {
            problems.push("topics: every topic needs a name of its own".to_owned());
        }
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
        for (key, value) in shown.kafka.properties.iter_mut() {
            if key.contains("password") || key.contains("secret") || key.contains("key") && !key.ends_with("location") {
                *value = "********".to_owned();
            }
        }
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

/// The problem with a lake location that must already hold a lake (`sql`,
/// `serve`), if any: a local path must be a directory.
pub fn lake_is_readable(location: &str) -> Option<String> {
    let local = location.trim_start_matches("file://");
    (!location.starts_with("s3://") && !Path::new(local).is_dir()).then(|| {
        format!("the lake {location:?} (--lake, lake.location) is not a directory (build one with `patchtrail replay` or `run`)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("writes");
        file
    }

    #[test]
    fn the_defaults_are_the_contract_and_valid() {
        let config = Config::load(None, []).expect("defaults load");
        assert_eq!(config, Config::default());
        assert_eq!(config.processor_config(), ProcessorConfig::default());
        assert_eq!(config.topic_names(), TopicNames::default());
        assert_eq!(config.weights(), Weights::default());
    }

    #[test]
    fn layers_apply_in_order_and_every_problem_is_reported_with_its_line() {
        let file = write("[server]\nlisten = \"127.0.0.1:9000\"\nmax_rows = 5\n\n[sla]\ncritical_days = 7\n");
        let env = [
            ("PATCHTRAIL__SERVER__MAX_ROWS".to_owned(), "9".to_owned()),
            ("PATCHTRAIL__KAFKA__PROPERTIES__SECURITY_PROTOCOL".to_owned(), "SASL_SSL".to_owned()),
            ("OTHER".to_owned(), "ignored".to_owned()),
        ];
        let config = Config::load(Some(file.path()), env).expect("loads");
        assert_eq!(config.server.listen, "127.0.0.1:9000");
        assert_eq!(config.server.max_rows, 9, "the environment wins over the file");
        assert_eq!(config.processor_config().sla_days[0], 7);
        assert_eq!(config.kafka.properties["security.protocol"], "SASL_SSL");

        let file =
            write("[server]\nlisten = \"127.0.0.1:9000\"\nlisen = 1\n\n[sla]\ncritcal_days = 7\nhigh_days = 0\n");
        let env = [("PATCHTRAIL__SERVER__MAX_ROW".to_owned(), "9".to_owned())];
        let problems = Config::load(Some(file.path()), env).expect_err("problems");
        let all = problems.join("\n");
        assert!(all.contains(":3: unknown key `server.lisen`"), "{all}");
        assert!(all.contains("(keys of [server]: ") && all.contains(" listen, "), "{all}");
        assert!(all.contains(":6: unknown key `sla.critcal_days`"), "{all}");
        assert!(all.contains("PATCHTRAIL__SERVER__MAX_ROW: unknown key `server.max_row`"), "{all}");
        assert!(all.contains("sla.high_days must be between 1 and 3650, got 0"), "{all}");
        assert_eq!(problems.len(), 4, "{all}");
    }

    #[test]
    fn type_errors_name_the_line() {
        let file = write("[pipeline]\ncommit_interval_ms = \"soon\"\n");
        let problems = Config::load(Some(file.path()), []).expect_err("a type error");
        assert!(problems[0].contains("line 2"), "{problems:?}");
        assert!(problems[0].contains("commit_interval_ms"), "{problems:?}");
    }

    #[test]
    fn show_masks_secrets() {
        let mut config = Config::default();
        config.auth.token = Some("hunter2".to_owned());
        config.kafka.properties.insert("sasl.password".to_owned(), "hunter3".to_owned());
        let shown = config.show();
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("[server]"), "{shown}");
    }

    #[test]
    fn the_example_file_is_the_defaults_and_documents_every_key() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("patchtrail.example.toml");
        let config = Config::load(Some(&example), []).expect("the example loads");
        assert_eq!(config, Config::default(), "the example states the defaults");
        let text = std::fs::read_to_string(&example).expect("reads");
        let mut defaults = Config::default();
        defaults.auth.token = Some("shown".to_owned());
        let defaults = toml::Value::try_from(defaults).expect("a table");
        for (section, keys) in defaults.as_table().expect("a table") {
            for key in keys.as_table().expect("a section").keys() {
                let documented = schemas::layers::line_of(&text, &format!("{section}.{key}")).is_some()
                    || text.contains(&format!("# {key} ="))
                    || text.contains(&format!("[{section}.{key}]"));
                assert!(documented, "{section}.{key} is not in the example");
            }
        }
    }
}
