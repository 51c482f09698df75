//! The configuration tree (STYLE.md "Configuration"): one typed tree, every
//! field with its default, in layers, lowest first: built-in defaults, the
//! TOML file (`--config FILE`), `PATCHTRAIL__SECTION__KEY` environment
//! variables, command-line flags. Loading reports every problem at once:
//! unknown keys (with the file line or the variable), wrong types, values out
//! of range. `patchtrail.example.toml` documents every key.

use std::collections::BTreeMap;
use std::path::Path;

use ingest::kafka::{KafkaSettings, TopicNames};
use processor::config::ProcessorConfig;
use queries::Weights;
use schemas::time::{MICROS_PER_HOUR, MICROS_PER_SECOND};
use serde::{Deserialize, Serialize};

/// `flag`, when given, over `value`.
pub fn set<T: Clone>(value: &mut T, flag: &Option<T>) {
    if let Some(flag) = flag {
        *value = flag.clone();
    }
}

/// The prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "PATCHTRAIL__";

/// Everything patchtrail can be told.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicNames,
    pub lake: LakeConfig,
    pub processor: ProcessorSection,
    pub sla: SlaConfig,
    pub prioritization: PrioritizationConfig,
    pub pipeline: PipelineConfig,
    pub server: ServerConfig,
    pub auth: AuthConfig,
}

/// The Kafka cluster.
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

/// The lake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LakeConfig {
    /// A local directory or `file://` URL.
    pub location: String,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig { location: "lake".to_owned() }
    }
}

/// The domain rules of DOMAIN.md. Keep them fixed for the life of a lake:
/// its state and rows were computed with them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessorSection {
    /// How far the watermark trails the largest event time.
    pub allowed_lateness_secs: u64,
    /// A rollout's gate is `rollback` above this many failed stages.
    pub canary_failure_limit: u64,
    /// A rollout's gate is `hold` above this many inconclusive stages.
    pub canary_inconclusive_limit: u64,
    /// A verified patch must be followed by a posture assessment this soon.
    pub posture_reeval_window_secs: u64,
    /// A trust-score drop of more than this after a patch is a regression.
    pub posture_regression_points: f64,
    /// Size of the tumbling segmentation-drift windows.
    pub drift_window_secs: u64,
    /// Event ids remembered per task to drop duplicates.
    pub dedupe_capacity: usize,
}

impl Default for ProcessorSection {
    fn default() -> Self {
        let defaults = ProcessorConfig::default();
        ProcessorSection {
            allowed_lateness_secs: (defaults.allowed_lateness_us / MICROS_PER_SECOND) as u64,
            canary_failure_limit: defaults.canary_failure_limit,
            canary_inconclusive_limit: defaults.canary_inconclusive_limit,
            posture_reeval_window_secs: (defaults.posture_reeval_window_us / MICROS_PER_SECOND) as u64,
            posture_regression_points: defaults.posture_regression_points,
            drift_window_secs: (defaults.drift_window_us / MICROS_PER_SECOND) as u64,
            dedupe_capacity: defaults.dedupe_capacity,
        }
    }
}

/// Days to remediate an exposure whose CVE has no KEV due date.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlaConfig {
    pub critical_days: u32,
    pub high_days: u32,
    pub medium_days: u32,
    pub low_days: u32,
}

impl Default for SlaConfig {
    fn default() -> Self {
        let [critical, high, medium, low] = ProcessorConfig::default().sla_days;
        SlaConfig {
            critical_days: critical as u32,
            high_days: high as u32,
            medium_days: medium as u32,
            low_days: low as u32,
        }
    }
}

/// The weights of the priority score (DOMAIN.md "Prioritization").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrioritizationConfig {
    /// `1 + epss_weight × epss`.
    pub epss_weight: f64,
    /// Factor for a CVE in CISA's KEV catalog.
    pub kev_weight: f64,
    /// Factor for an internet-exposed asset.
    pub internet_exposed_weight: f64,
    /// Factor for an asset in the `edge` environment.
    pub edge_weight: f64,
    /// Factors by asset criticality.
    pub criticality_low_weight: f64,
    pub criticality_moderate_weight: f64,
    pub criticality_high_weight: f64,
    /// The urgency term `1 + clamp(elapsed share of the SLA, 0, max_urgency)`.
    pub max_urgency: f64,
}

impl Default for PrioritizationConfig {
    fn default() -> Self {
        let w = Weights::default();
        PrioritizationConfig {
            epss_weight: w.epss,
            kev_weight: w.kev,
            internet_exposed_weight: w.internet_exposed,
            edge_weight: w.edge,
            criticality_low_weight: w.criticality_low,
            criticality_moderate_weight: w.criticality_moderate,
            criticality_high_weight: w.criticality_high,
            max_urgency: w.max_urgency,
        }
    }
}

/// `patchtrail run`.
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

/// `patchtrail serve`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Where the HTTP API listens.
    pub listen: String,
    /// A query running longer is stopped and answered 400.
    pub query_timeout_secs: u64,
    /// DataFusion's memory pool per server.
    pub memory_limit_mib: usize,
    /// Rows a JSON or CSV answer holds at most.
    pub max_rows: usize,
    /// How often the commit log is checked for new epochs.
    pub refresh_ms: u64,
    /// Publish the priority queue to the priorities topic of `[kafka]`.
    pub publish_priorities: bool,
    /// How often the priority queue is published.
    pub priorities_interval_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".to_owned(),
            query_timeout_secs: 30,
            memory_limit_mib: 1_024,
            max_rows: 10_000,
            refresh_ms: 1_000,
            publish_priorities: false,
            priorities_interval_secs: 60,
        }
    }
}

/// Access to `serve`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// A bearer token every route but `/healthz` requires (absent: no auth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Config {
    /// Defaults, then `file`, then the `PATCHTRAIL__…` variables of `env`;
    /// every problem at once. Flags are applied by the caller, then [`Config::problems`].
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let mut table = toml::Table::new();
        let mut text = String::new();
        let name = file.map(|f| f.display().to_string()).unwrap_or_default();
        if let Some(file) = file {
            match std::fs::read_to_string(file) {
                Ok(read) => text = read,
                Err(e) => return Err(vec![format!("cannot read the config file {name}: {e}")]),
            }
            match text.parse::<toml::Table>() {
                Ok(parsed) => table = parsed,
                Err(e) => return Err(vec![format!("{name}: {}", one_line(&e.to_string()))]),
            }
            // Type errors, with the file's line and column.
            if let Err(e) = toml::from_str::<Config>(&text) {
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
                None => match line_of(&text, &path) {
                    Some(line) => format!("{name}:{line}"),
                    None => name.clone(),
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
        let mut problems = Vec::new();
        let mut check = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };
        check(
            !self.kafka.brokers.trim().is_empty(),
            "kafka.brokers (--brokers) must name at least one host:port".to_owned(),
        );
        check(!self.kafka.group.trim().is_empty(), "kafka.group (--group) must not be empty".to_owned());
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
            check(!name.trim().is_empty(), format!("topics.{key} must not be empty"));
        }
        let mut distinct: Vec<&String> = topics.iter().map(|(_, name)| *name).collect();
        distinct.sort();
        distinct.dedup();
        check(distinct.len() == topics.len(), "topics: every topic needs a name of its own".to_owned());
        check(!self.lake.location.trim().is_empty(), "lake.location (--lake) must not be empty".to_owned());
        let p = &self.processor;
        check(
            p.allowed_lateness_secs <= 7 * 86_400,
            format!("processor.allowed_lateness_secs must be at most 7 days, got {}", p.allowed_lateness_secs),
        );
        check(p.posture_reeval_window_secs >= 1, "processor.posture_reeval_window_secs must be at least 1".to_owned());
        check(
            (0.0..=100.0).contains(&p.posture_regression_points),
            format!(
                "processor.posture_regression_points must be between 0 and 100, got {}",
                p.posture_regression_points
            ),
        );
        check(
            (60..=86_400).contains(&p.drift_window_secs) && 86_400 % p.drift_window_secs == 0,
            format!("processor.drift_window_secs must divide a day and be at least 60, got {}", p.drift_window_secs),
        );
        check(
            p.dedupe_capacity >= 1_000,
            format!("processor.dedupe_capacity must be at least 1000, got {}", p.dedupe_capacity),
        );
        for (key, days) in [
            ("critical_days", self.sla.critical_days),
            ("high_days", self.sla.high_days),
            ("medium_days", self.sla.medium_days),
            ("low_days", self.sla.low_days),
        ] {
            check((1..=3_650).contains(&days), format!("sla.{key} must be between 1 and 3650, got {days}"));
        }
        let w = &self.prioritization;
        for (key, value) in [
            ("epss_weight", w.epss_weight),
            ("kev_weight", w.kev_weight),
            ("internet_exposed_weight", w.internet_exposed_weight),
            ("edge_weight", w.edge_weight),
            ("criticality_low_weight", w.criticality_low_weight),
            ("criticality_moderate_weight", w.criticality_moderate_weight),
            ("criticality_high_weight", w.criticality_high_weight),
            ("max_urgency", w.max_urgency),
        ] {
            check(
                value.is_finite() && (0.0..=1_000.0).contains(&value),
                format!("prioritization.{key} must be between 0 and 1000, got {value}"),
            );
        }
        let r = &self.pipeline;
        check(
            r.commit_interval_ms >= 100,
            format!(
                "pipeline.commit_interval_ms (--commit-interval-ms) must be at least 100, got {}",
                r.commit_interval_ms
            ),
        );
        check(
            r.epoch_messages >= 1_000,
            format!("pipeline.epoch_messages (--epoch-messages) must be at least 1000, got {}", r.epoch_messages),
        );
        check(
            r.fetch_buffer_kbytes >= 64,
            format!(
                "pipeline.fetch_buffer_kbytes (--fetch-buffer-kbytes) must be at least 64, got {}",
                r.fetch_buffer_kbytes
            ),
        );
        check(
            r.max_message_bytes >= 1_024,
            format!(
                "pipeline.max_message_bytes (--max-message-bytes) must be at least 1024, got {}",
                r.max_message_bytes
            ),
        );
        check(
            r.metrics_listen.parse::<std::net::SocketAddr>().is_ok(),
            format!(
                "pipeline.metrics_listen (--metrics-listen) must be an IP address and port, got {:?}",
                r.metrics_listen
            ),
        );
        let s = &self.server;
        check(
            s.listen.parse::<std::net::SocketAddr>().is_ok(),
            format!("server.listen (--listen) must be an IP address and port, got {:?}", s.listen),
        );
        check(
            s.query_timeout_secs >= 1,
            "server.query_timeout_secs (--query-timeout-secs) must be at least 1".to_owned(),
        );
        check(
            s.memory_limit_mib >= 16,
            format!("server.memory_limit_mib (--memory-limit-mib) must be at least 16, got {}", s.memory_limit_mib),
        );
        check(s.max_rows >= 1, "server.max_rows (--max-rows) must be at least 1".to_owned());
        check(
            s.refresh_ms >= 50,
            format!("server.refresh_ms (--refresh-ms) must be at least 50, got {}", s.refresh_ms),
        );
        check(
            s.priorities_interval_secs >= 1,
            "server.priorities_interval_secs (--priorities-interval-secs) must be at least 1".to_owned(),
        );
        check(
            self.auth.token.as_deref().is_none_or(|t| !t.is_empty()),
            "auth.token (--token) must not be empty (leave it out for no auth)".to_owned(),
        );
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
        KafkaSettings { brokers: self.kafka.brokers.trim().to_owned(), properties: self.kafka.properties.clone() }
    }

    /// The topic names.
    pub fn topic_names(&self) -> TopicNames {
        self.topics.clone()
    }

    /// The processor's rules.
    pub fn processor_config(&self) -> ProcessorConfig {
        let p = &self.processor;
        let secs = |s: u64| s as i64 * MICROS_PER_SECOND;
        ProcessorConfig {
            allowed_lateness_us: secs(p.allowed_lateness_secs),
            sla_days: [
                i64::from(self.sla.critical_days),
                i64::from(self.sla.high_days),
                i64::from(self.sla.medium_days),
                i64::from(self.sla.low_days),
            ],
            canary_failure_limit: p.canary_failure_limit,
            canary_inconclusive_limit: p.canary_inconclusive_limit,
            posture_reeval_window_us: secs(p.posture_reeval_window_secs),
            posture_regression_points: p.posture_regression_points,
            drift_window_us: secs(p.drift_window_secs).max(MICROS_PER_HOUR / 60),
            dedupe_capacity: p.dedupe_capacity,
        }
    }

    /// The priority score's weights.
    pub fn weights(&self) -> Weights {
        let w = &self.prioritization;
        Weights {
            epss: w.epss_weight,
            kev: w.kev_weight,
            internet_exposed: w.internet_exposed_weight,
            edge: w.edge_weight,
            criticality_low: w.criticality_low_weight,
            criticality_moderate: w.criticality_moderate_weight,
            criticality_high: w.criticality_high_weight,
            max_urgency: w.max_urgency,
        }
    }
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
        assert!(all.contains("keys of [server]: listen,"), "{all}");
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
