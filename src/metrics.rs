//! Operational metrics of `run` (CONTRACT.md §6, the pipeline half) and the
//! small HTTP server that exposes them with `/healthz` and `/readyz`.
//!
//! Counters are resolved per label once and bumped per message with one
//! atomic add; gauges are set per batch or report interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Metric names, fixed by CONTRACT.md §6.
pub mod names {
    pub const EVENTS_CONSUMED: &str = "patchtrail_events_consumed_total";
    pub const EVENTS_DEAD_LETTERED: &str = "patchtrail_events_dead_lettered_total";
    pub const COMMITS: &str = "patchtrail_commits_total";
    pub const COMMIT_DURATION: &str = "patchtrail_commit_duration_seconds";
    pub const CONSUMER_LAG: &str = "patchtrail_consumer_lag_messages";
    pub const WATERMARK_LAG: &str = "patchtrail_watermark_lag_seconds";
}

/// The pipeline's metrics, cheap to clone (handles to one registry).
#[derive(Clone)]
pub struct PipelineMetrics {
    registry: Registry,
    consumed: IntCounterVec,
    dead_lettered: IntCounterVec,
    pub commits: IntCounter,
    pub commit_seconds: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub watermark_lag: GaugeVec,
    ready: Arc<AtomicBool>,
}

impl PipelineMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let consumed =
            IntCounterVec::new(Opts::new(names::EVENTS_CONSUMED, "Valid events consumed, by input topic."), &["topic"])
                .expect("valid metric");
        let dead_lettered = IntCounterVec::new(
            Opts::new(names::EVENTS_DEAD_LETTERED, "Messages sent to the dead-letter path, by input topic and reason."),
            &["topic", "reason"],
        )
        .expect("valid metric");
        let commits = IntCounter::new(names::COMMITS, "Task epochs committed to the lake.").expect("valid metric");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(names::COMMIT_DURATION, "Time to hand an epoch round to the lake writer, seconds.")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                names::CONSUMER_LAG,
                "Messages between the committed-or-consumed position and the partition end.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        let watermark_lag = GaugeVec::new(
            Opts::new(names::WATERMARK_LAG, "Wall clock minus the largest event time seen, seconds."),
            &["topic"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dead_lettered.clone()),
            Box::new(commits.clone()),
            Box::new(commit_seconds.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(watermark_lag.clone()),
        ] {
            registry.register(metric).expect("metric names are unique");
        }
        PipelineMetrics {
            registry,
            consumed,
            dead_lettered,
            commits,
            commit_seconds,
            consumer_lag,
            watermark_lag,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// One valid event of `topic`.
    pub fn consumed(&self, topic: &str) {
        self.consumed.with_label_values(&[topic]).inc();
    }

    /// One dead letter of `topic`, for a bounded `reason`.
    pub fn dead_lettered(&self, topic: &str, reason: &str) {
        self.dead_lettered.with_label_values(&[topic, reason]).inc();
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ready)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Readiness: consuming normally (false while the broker is away).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// The Prometheus text exposition of `registry`.
pub fn exposition(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding gathered families into a Vec cannot fail.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen`, on a thread of its
/// own, for the life of the process.
pub fn serve(
    listen: &str,
    registry: Registry,
    ready: impl Fn() -> bool + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], exposition(&registry)) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
                    }
                }
            }),
        );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name("metrics-http".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        if let Err(error) = axum::serve(listener, app).await {
                            tracing::error!(%error, "metrics server stopped");
                        }
                    }
                    Err(error) => tracing::error!(%error, "metrics server cannot listen"),
                }
            });
        })
        .context("cannot start the metrics thread")?;
    Ok(())
}
