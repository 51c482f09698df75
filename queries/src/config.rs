//! The `[server]`, `[auth]` and `[prioritization]` sections of the
//! configuration: what `serve` is told, and the priority score's weights.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::priorities::Weights;

/// `[server]`: `patchtrail serve`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Where the HTTP API listens.
    pub listen: String,
    /// A query running longer is stopped and answered 422.
    pub query_timeout_secs: u64,
    /// DataFusion's memory pool of each query worker (each running query).
    pub memory_limit_mib: usize,
    /// Rows an answer holds at most (`truncated` says when there were more).
    pub max_rows: usize,
    /// Bytes an encoded answer may take at most, in MiB: past it the query
    /// is stopped and answered 422.
    pub max_answer_mib: usize,
    /// MiB the answers waiting for their clients to read them may take
    /// together in the server; past it a query is answered 503 with
    /// `Retry-After`.
    pub answer_budget_mib: usize,
    /// How often the commit log is checked for new epochs.
    pub refresh_ms: u64,
    /// Publish the priority queue to the priorities topic of `[kafka]`.
    pub publish_priorities: bool,
    /// How often the priority queue is published.
    pub priorities_interval_secs: u64,
    /// Queries running at once at most; past it a query is answered 503
    /// with `Retry-After`.
    pub max_concurrent_queries: usize,
    /// Connections held at most; past it the oldest idle one is closed for
    /// a new one (none idle: the new one may ask `/healthz` only).
    pub max_connections: usize,
    /// Connections held at most from one peer address (at most
    /// `max_connections`); past it that peer's oldest idle one is closed for
    /// its new one.
    pub max_connections_per_peer: usize,
    /// Time a write may wait for a client to read; past it the connection
    /// is closed and the answer it held freed.
    pub write_timeout_secs: u64,
    /// Time a connection has to send a request's headers (idle keep-alive
    /// time included) and then its body.
    pub header_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".to_owned(),
            query_timeout_secs: 30,
            memory_limit_mib: 1_024,
            max_rows: 10_000,
            max_answer_mib: 64,
            answer_budget_mib: 256,
            refresh_ms: 1_000,
            publish_priorities: false,
            priorities_interval_secs: 60,
            max_concurrent_queries: 8,
            max_connections: 1_024,
            max_connections_per_peer: 256,
            write_timeout_secs: 30,
            header_timeout_secs: 10,
        }
    }
}

impl ServerConfig {
    /// Values out of range, every one.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = schemas::class::Problems::default();
        problems.check(self.listen.parse::<std::net::SocketAddr>().is_ok(), || {
            format!("server.listen (--listen) must be an IP address and port, got {:?}", self.listen)
        });
        problems.check((1..=86_400).contains(&self.query_timeout_secs), || {
            format!(
                "server.query_timeout_secs (--query-timeout-secs) must be between 1 and 86400 (a day), got {}",
                self.query_timeout_secs
            )
        });
        problems.check((16..=1 << 20).contains(&self.memory_limit_mib), || {
            format!(
                "server.memory_limit_mib (--memory-limit-mib) must be between 16 and 1048576 (1 TiB), got {}",
                self.memory_limit_mib
            )
        });
        problems.check(self.max_rows >= 1, || "server.max_rows (--max-rows) must be at least 1".to_owned());
        problems.check((1..=4_096).contains(&self.max_answer_mib), || {
            format!("server.max_answer_mib must be between 1 and 4096, got {}", self.max_answer_mib)
        });
        problems.check((self.max_answer_mib..=1 << 20).contains(&self.answer_budget_mib), || {
            format!(
                "server.answer_budget_mib must be between server.max_answer_mib ({}) and 1048576, got {}",
                self.max_answer_mib, self.answer_budget_mib
            )
        });
        problems.check(self.refresh_ms >= 50, || {
            format!("server.refresh_ms (--refresh-ms) must be at least 50, got {}", self.refresh_ms)
        });
        problems.check(self.priorities_interval_secs >= 1, || {
            "server.priorities_interval_secs (--priorities-interval-secs) must be at least 1".to_owned()
        });
        problems.check((1..=1_024).contains(&self.max_concurrent_queries), || {
            format!(
                "server.max_concurrent_queries (--max-concurrent-queries) must be between 1 and 1024, got {}",
                self.max_concurrent_queries
            )
        });
        problems.check((16..=1_000_000).contains(&self.max_connections), || {
            format!("server.max_connections must be between 16 and 1000000, got {}", self.max_connections)
        });
        problems.check(self.max_connections_per_peer >= 1, || {
            "server.max_connections_per_peer must be at least 1".to_owned()
        });
        problems.check((1..=3_600).contains(&self.write_timeout_secs), || {
            format!("server.write_timeout_secs must be between 1 and 3600, got {}", self.write_timeout_secs)
        });
        problems.check((1..=3_600).contains(&self.header_timeout_secs), || {
            format!(
                "server.header_timeout_secs (--header-timeout-secs) must be between 1 and 3600, got {}",
                self.header_timeout_secs
            )
        });
        problems.0
    }
}

/// `[auth]`: access to `serve`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// A bearer token every route but `/healthz` requires (absent: no auth).
    /// Better from `PATCHTRAIL__AUTH__TOKEN` or `token_file` than written here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file whose content (trailing whitespace trimmed) is the token: a
    /// mounted secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
}

impl AuthConfig {
    /// Values out of range, every one.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = schemas::class::Problems::default();
        problems.check(self.token.as_deref() != Some(""), || {
            "auth.token (--token) must not be empty (leave it out for no auth)".to_owned()
        });
        problems.check(self.token.is_none() || self.token_file.is_none(), || {
            "auth.token and auth.token_file (--token, --token-file) are both given: give one".to_owned()
        });
        if let Some(file) = &self.token_file {
            match schemas::layers::read_small(file) {
                Ok(text) => problems.check(!text.trim().is_empty(), || {
                    format!("auth.token_file (--token-file) {} is empty", file.display())
                }),
                Err(e) => problems
                    .check(false, || format!("auth.token_file (--token-file) {} cannot be read: {e}", file.display())),
            }
        }
        problems.0
    }

    /// The token in force: `token`, or the content of `token_file`.
    pub fn effective_token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            let file = self.token_file.as_ref()?;
            Some(schemas::layers::read_small(file).ok()?.trim_end().to_owned()).filter(|t| !t.is_empty())
        })
    }
}

impl ServerConfig {
    /// The server's settings: this section, the token in force and the
    /// weights, with `worker` the command that starts a query worker.
    pub fn settings(
        &self,
        auth: &AuthConfig,
        weights: Weights,
        worker: crate::server::worker::WorkerCommand,
    ) -> crate::server::Settings {
        crate::server::Settings {
            query_timeout: Duration::from_secs(self.query_timeout_secs),
            memory_limit_bytes: self.memory_limit_mib * 1024 * 1024,
            max_rows: self.max_rows,
            max_answer_bytes: self.max_answer_mib * 1024 * 1024,
            answer_budget_bytes: self.answer_budget_mib * 1024 * 1024,
            refresh: Duration::from_millis(self.refresh_ms),
            token: auth.effective_token(),
            weights,
            max_concurrent_queries: self.max_concurrent_queries,
            connections: crate::server::listener::ConnectionLimits {
                max_connections: self.max_connections,
                max_connections_per_peer: self.max_connections_per_peer.min(self.max_connections),
                header_timeout: Duration::from_secs(self.header_timeout_secs),
                write_timeout: Duration::from_secs(self.write_timeout_secs),
            },
            worker,
        }
    }
}

/// `[prioritization]`: the weights of the priority score (DOMAIN.md "Prioritization").
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
    /// Factor for an asset of low criticality.
    pub criticality_low_weight: f64,
    /// Factor for an asset of moderate criticality.
    pub criticality_moderate_weight: f64,
    /// Factor for an asset of high criticality.
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

impl PrioritizationConfig {
    /// Values out of range, every one.
    pub fn problems(&self) -> Vec<String> {
        [
            ("epss_weight", self.epss_weight),
            ("kev_weight", self.kev_weight),
            ("internet_exposed_weight", self.internet_exposed_weight),
            ("edge_weight", self.edge_weight),
            ("criticality_low_weight", self.criticality_low_weight),
            ("criticality_moderate_weight", self.criticality_moderate_weight),
            ("criticality_high_weight", self.criticality_high_weight),
            ("max_urgency", self.max_urgency),
        ]
        .into_iter()
        .filter(|(_, value)| !(value.is_finite() && (0.0..=1_000.0).contains(value)))
        .map(|(key, value)| format!("prioritization.{key} must be between 0 and 1000, got {value}"))
        .collect()
    }

    /// The priority score's weights.
    pub fn weights(&self) -> Weights {
        Weights {
            epss: self.epss_weight,
            kev: self.kev_weight,
            internet_exposed: self.internet_exposed_weight,
            edge: self.edge_weight,
            criticality_low: self.criticality_low_weight,
            criticality_moderate: self.criticality_moderate_weight,
            criticality_high: self.criticality_high_weight,
            max_urgency: self.max_urgency,
        }
    }
}
