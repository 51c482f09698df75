//! The configuration tree (STYLE.md "Configuration"): one typed tree, every
//! field with its default, in layers, lowest first: built-in defaults, the
//! TOML file (`--config FILE`), `PATCHTRAIL__SECTION__KEY` environment
//! variables, command-line flags. Loading reports every problem at once:
//! unknown keys (with the file line or the variable), wrong types, values out
//! of range. `patchtrail.example.toml` documents every key.

use std::collections::BTreeMap;
use std::path::Path;

use ingest::config::{KafkaConfig, PipelineConfig};
use ingest::kafka::{KafkaSettings, TopicNames};
use processor::config::{ProcessorConfig, ProcessorSection, SlaSection};
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

/// `[lake]`: where the lake is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LakeConfig {
    /// A local directory, a `file://` URL, or `s3://BUCKET[/PREFIX]`.
    pub location: String,
    /// How often `run` publishes committed epochs to the Delta tables readers see.
    pub publish_interval_secs: u64,
    /// How often `run` merges the tables' small files (0: never).
    pub optimize_interval_secs: u64,
    /// How long files merged away stay before `run` (after each merge) or
    /// `lake vacuum` deletes them.
    pub vacuum_retain_hours: u64,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            location: "lake".to_owned(),
            publish_interval_secs: 10,
            optimize_interval_secs: 600,
            vacuum_retain_hours: 1,
        }
    }
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
        let mut problems = Vec::new();
        let mut table = toml::Table::new();
        let (name, text) = file.unwrap_or_default();
        if file.is_some() {
            match text.parse::<toml::Table>() {
                Ok(parsed) => table = parsed,
                Err(e) => return Err(vec![format!("{name}: {}", one_line(&e.to_string()))]),
            }
            // Type errors, with the file's line and column.
            if let Err(e) = toml::from_str::<Config>(text) {
                problems.push(format!("{name}: {}", one_line(&e.to_string())));
            }
        }
        let mut from_env: BTreeMap<String, String> = BTreeMap::new();
        for (variable, value) in env {
            let Some(rest) = variable.strip_prefix(ENV_PREFIX) else { continue };
            let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            match parts.as_slice() {
                [section, properties, property] if section == "kafka" && properties == "properties" => {
                    let key = property.replace('_', ".");
                    let kafka = section_table(&mut table, "kafka");
                    let properties = section_table(kafka, "properties");
                    properties.insert(key, toml::Value::String(value));
                }
                [section, key] if !section.is_empty() && !key.is_empty() => {
                    section_table(&mut table, section).insert(key.clone(), env_value(&value));
                    from_env.insert(format!("{section}.{key}"), variable.clone());
                }
                _ => problems.push(format!(
                    "environment variable {variable}: expected {ENV_PREFIX}SECTION__KEY (or {ENV_PREFIX}KAFKA__PROPERTIES__NAME)"
                )),
            }
        }
        let mut unknown = Vec::new();
        let config: Result<Config, _> =
            serde_ignored::deserialize(toml::Value::Table(table), |path| unknown.push(path.to_string()));
        for path in unknown {
            let known = known_keys(&path);
            let origin = match from_env.get(&path) {
                Some(variable) => format!("environment variable {variable}"),
                None => match line_of(text, &path) {
                    Some(line) => format!("{name}:{line}"),
                    None => name.to_owned(),
                },
            };
            problems.push(format!("{origin}: unknown key `{path}`{known}"));
        }
        let config = match config {
            Ok(config) => Some(config),
            Err(e) => {
                if !from_env.is_empty() || problems.is_empty() {
                    problems.push(format!("environment: {}", one_line(&e.to_string())));
                }
                None
            }
        };
        if let Some(config) = &config {
            problems.extend(config.problems());
        }
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(problems),
        }
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
        if !(1..=3600).contains(&self.lake.publish_interval_secs) {
            problems.push("lake.publish_interval_secs must be between 1 and 3600".to_owned());
        }
        if self.lake.optimize_interval_secs != 0 && self.lake.optimize_interval_secs < 60 {
            problems.push("lake.optimize_interval_secs must be 0 (never) or at least 60".to_owned());
        }
        let tombstones = processor::delta::TOMBSTONE_RETENTION_HOURS;
        if self.lake.vacuum_retain_hours >= tombstones {
            problems.push(format!(
                "lake.vacuum_retain_hours must be below {tombstones} (the tables remember files merged away for \
                 {tombstones} h), got {}",
                self.lake.vacuum_retain_hours
            ));
        }
        if self.lake.location.trim().is_empty() {
            problems.push("lake.location (--lake) must not be empty".to_owned());
        }
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

fn one_line(message: &str) -> String {
    // toml's messages span lines (a caret under the spot); keep the first
    // line and the explanation.
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.starts_with('^'))
        .collect();
    lines.join(": ").replace("TOML parse error at ", "")
}

fn section_table<'a>(table: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    let entry = table.entry(key.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    entry.as_table_mut().expect("a table")
}

/// An environment value as TOML: a number or boolean when it reads as one,
/// otherwise the string.
fn env_value(value: &str) -> toml::Value {
    if let Ok(integer) = value.parse::<i64>() {
        toml::Value::Integer(integer)
    } else if let Ok(float) = value.parse::<f64>() {
        toml::Value::Float(float)
    } else if let Ok(boolean) = value.parse::<bool>() {
        toml::Value::Boolean(boolean)
    } else {
        toml::Value::String(value.to_owned())
    }
}

/// The keys a section has, for "did you mean" help.
fn known_keys(path: &str) -> String {
    let defaults = toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Table(toml::Table::new()));
    let mut parts: Vec<&str> = path.split('.').collect();
    parts.pop();
    let mut at = &defaults;
    for part in &parts {
        match at.get(part) {
            Some(next) => at = next,
            None => return String::new(),
        }
    }
    let Some(table) = at.as_table() else { return String::new() };
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    if parts.is_empty() {
        keys.push("auth");
    } else if parts == ["auth"] {
        keys.push("token");
    }
    keys.sort_unstable();
    keys.dedup();
    if parts.is_empty() {
        format!(" (sections: {})", keys.join(", "))
    } else {
        format!(" (keys of [{}]: {})", parts.join("."), keys.join(", "))
    }
}

/// The line (from 1) of `path` (`section.key`) in a TOML text: a `key =` line
/// under its `[section]` header, or a `[path]` header, or a dotted key.
fn line_of(text: &str, path: &str) -> Option<usize> {
    let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut current = String::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = header.trim().to_owned();
            if current == path {
                return Some(number + 1);
            }
            continue;
        }
        let Some((name, _)) = line.split_once('=') else { continue };
        let name = name.trim().trim_matches('"');
        let full = if current.is_empty() { name.to_owned() } else { format!("{current}.{name}") };
        if (current == section && name == key) || full == path {
            return Some(number + 1);
        }
    }
    None
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
                let documented = line_of(&text, &format!("{section}.{key}")).is_some()
                    || text.contains(&format!("# {key} ="))
                    || text.contains(&format!("[{section}.{key}]"));
                assert!(documented, "{section}.{key} is not in the example");
            }
        }
    }
}
