//! `patchtrail run`: one pipeline instance in a Kafka consumer group.
//!
//! One thread polls the group consumer and the intel reader and applies
//! each message to the task of its partition ([`batch`]); the lake writer
//! thread commits epochs behind it. Rebalances arrive inside `poll`, on this
//! same thread ([`owner`]): a gained partition's task is restored from its
//! latest commit and starts at the recorded offset; a revoked one is
//! committed before the group hands it on. After each commit, the epoch's
//! outbox is published and the offsets it covers are stored in Kafka, in
//! that order (DESIGN.md "Exactly-once into the lake"). [`stall`] rejoins
//! the group when nobody makes progress on a partition; [`finish`] ends
//! `--stop-at-end`.
//!
//! Shutdown: the first signal cancels the instance's token; the loop stops
//! consuming, commits what it consumed (after the previous epoch's outbox is
//! delivered), delivers this epoch's outbox and stores the offsets, each
//! wait bounded by the shutdown deadline, then the probe server stops.

mod batch;
mod finish;
mod idle;
mod instance;
mod owner;
mod stall;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::kafka;
use ingest::metrics::{LakeMetrics, PipelineMetrics};
use processor::config::ProcessorConfig;
use processor::delta::PublishedUpTo;
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::config::{self, Config};
use crate::tasks::Supervisor;
use instance::Instance;

/// How long a call to the cluster's metadata may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(args: RunArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    let mut problems = config.apply_kafka_flags(args.kafka.brokers.as_deref(), &args.kafka.properties);
    config::set(&mut config.lake.location, &args.lake);
    config::set(&mut config.kafka.group, &args.group);
    config::set(&mut config.pipeline.metrics_listen, &args.metrics_listen);
    config::set(&mut config.pipeline.commit_interval_ms, &args.commit_interval_ms);
    config::set(&mut config.pipeline.epoch_messages, &args.epoch_messages);
    config::set(&mut config.pipeline.max_message_bytes, &args.max_message_bytes);
    config::set(&mut config.pipeline.fetch_buffer_kbytes, &args.fetch_buffer_kbytes);
    config::set(&mut config.pipeline.shutdown_timeout_secs, &args.shutdown_timeout_secs);
    config::set(&mut config.pipeline.workers, &args.workers);
    config::set(&mut config.processor.idle_timeout_secs, &args.idle_timeout_secs);
    problems.extend(config.problems());
    if !problems.is_empty() {
        return Ok(crate::usage_error(&problems));
    }
    let p = &config.pipeline;
    let settings = RunSettings {
        lake: config.lake.location.clone(),
        group: config.kafka.group.clone(),
        stop_at_end: args.stop_at_end,
        commit_interval: Duration::from_millis(p.commit_interval_ms),
        epoch_messages: p.epoch_messages,
        max_message_bytes: p.max_message_bytes,
        fetch_buffer_kbytes: p.fetch_buffer_kbytes,
        shutdown_timeout: Duration::from_secs(p.shutdown_timeout_secs),
        workers: p.workers,
        processor: config.processor_config(),
    };
    let signals = crate::signals::install()?;
    signals.set_deadline(settings.shutdown_timeout);
    let supervisor = Supervisor::new(signals.token().child_token());
    let metrics = PipelineMetrics::new();
    for topic in config.topic_names().keyed() {
        metrics.declare_clock_moves(topic);
    }
    // Set by the Kafka clients when the brokers are unreachable; cleared by the polling loop.
    let brokers_down = Arc::new(AtomicBool::new(false));
    serve_probes(&supervisor, &p.metrics_listen, &metrics, &brokers_down)?;
    let cancel = supervisor.token();
    let publisher = start_publisher(&supervisor, &settings.lake, &config.lake, metrics.lake.clone())?;
    let outcome =
        Instance::start(&settings, config.kafka_settings(), config.topic_names(), metrics, brokers_down, &cancel)
            .and_then(|instance| instance.run(&settings));
    // What the last epochs committed becomes visible to readers.
    if outcome.is_ok() {
        publisher.publish_now();
    }
    // The pipeline is done: the probe server goes with it.
    cancel.cancel();
    supervisor.join(Instant::now() + Duration::from_secs(5));
    match supervisor.failure() {
        Some(failure) => Err(anyhow::anyhow!("{failure}")),
        None => outcome,
    }
}

/// `/metrics`, `/healthz` and `/readyz` on `listen`, on a thread of their own.
fn serve_probes(
    supervisor: &Supervisor,
    listen: &str,
    metrics: &PipelineMetrics,
    brokers_down: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(listen).with_context(|| format!("cannot serve metrics on {listen}"))?;
    let ready = {
        let (ready, down) = (metrics.ready_flag(), Arc::clone(brokers_down));
        move || ready.load(Ordering::Relaxed) && !down.load(Ordering::Relaxed)
    };
    let router = queries::server::probe::router(metrics.registry(), ready);
    let cancel = supervisor.token();
    supervisor.spawn_thread("metrics-http", move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(queries::server::probe::serve(listener, router, cancel)).context("the metrics server failed")
    })
}

/// Publishes committed epochs to the lake's Delta tables on a thread of its
/// own, every `lake.publish_interval_secs` and once more on request, and
/// compacts and vacuums them every `lake.optimize_interval_secs`. A failed
/// publication is retried at the next turn: the task commit log keeps the
/// epochs meanwhile.
struct Publisher {
    lake: processor::lake::Lake,
    runtime: Arc<tokio::runtime::Runtime>,
    metrics: LakeMetrics,
}

impl Publisher {
    fn publish_now(&self) {
        publish_logged(&self.runtime, &self.lake, &mut PublishedUpTo::default(), &self.metrics);
    }
}

/// Publishes what was committed since `seen` (nothing when no task committed).
fn publish_logged(
    runtime: &tokio::runtime::Runtime,
    lake: &processor::lake::Lake,
    seen: &mut PublishedUpTo,
    metrics: &LakeMetrics,
) {
    let started = Instant::now();
    match runtime.block_on(lake.publish_after(seen)) {
        Ok(report) if report.epochs > 0 => {
            metrics.publications.inc();
            metrics.publication_seconds.observe(started.elapsed().as_secs_f64());
            metrics.conflicts.inc_by(report.conflicts);
            tracing::debug!(
                epochs = report.epochs,
                files = report.files,
                conflicts = report.conflicts,
                pruned = report.pruned,
                ms = started.elapsed().as_millis() as u64,
                "published to the Delta tables"
            );
        }
        Ok(_) => {}
        Err(error) => {
            metrics.failures.with_label_values(&["publish"]).inc();
            tracing::warn!(%error, "cannot publish to the Delta tables; retrying at the next turn");
        }
    }
}

fn start_publisher(
    supervisor: &Supervisor,
    location: &str,
    settings: &processor::config::LakeConfig,
    metrics: LakeMetrics,
) -> anyhow::Result<Publisher> {
    let lake = processor::lake::Lake::open(location)?;
    let runtime = Arc::new(tokio::runtime::Builder::new_current_thread().enable_all().build()?);
    let publisher = Publisher { lake: lake.clone(), runtime: Arc::clone(&runtime), metrics: metrics.clone() };
    let cancel = supervisor.token();
    let every = Duration::from_secs(settings.publish_interval_secs);
    let optimize_every =
        (settings.optimize_interval_secs > 0).then(|| Duration::from_secs(settings.optimize_interval_secs));
    let retain = Duration::from_secs(settings.vacuum_retain_hours * 3600);
    supervisor.spawn_thread("lake-publisher", move || {
        let mut optimized = Instant::now();
        let mut seen = PublishedUpTo::default();
        while !kafka::sleep_unless_cancelled(every, &cancel) {
            publish_logged(&runtime, &lake, &mut seen, &metrics);
            if optimize_every.is_some_and(|interval| optimized.elapsed() >= interval) {
                optimized = Instant::now();
                compact_logged(&runtime, &lake, retain, &metrics);
            }
        }
        Ok(())
    })?;
    Ok(publisher)
}

fn compact_logged(
    runtime: &tokio::runtime::Runtime,
    lake: &processor::lake::Lake,
    retain: Duration,
    metrics: &LakeMetrics,
) {
    let started = Instant::now();
    match runtime.block_on(processor::compact::compact(lake, &queries::session::CompactionReader)) {
        Ok(report) => {
            metrics.files_compacted.inc_by(report.merged.files_removed);
            tracing::info!(
                files_removed = report.merged.files_removed,
                files_added = report.merged.files_added,
                latest_forms = report.forms,
                latest_rows = report.latest_rows,
                ms = started.elapsed().as_millis() as u64,
                "compacted the Delta tables"
            );
        }
        Err(error) => {
            metrics.failures.with_label_values(&["optimize"]).inc();
            tracing::warn!(%error, "cannot compact the Delta tables; trying again later");
        }
    }
    match runtime.block_on(lake.vacuum(retain)) {
        Ok(deleted) if deleted > 0 => tracing::info!(deleted, "vacuumed the Delta tables"),
        Ok(_) => {}
        Err(error) => {
            metrics.failures.with_label_values(&["vacuum"]).inc();
            tracing::warn!(%error, "cannot vacuum the Delta tables; trying again later");
        }
    }
}

/// The effective settings of one instance: flags over the configuration.
pub(crate) struct RunSettings {
    lake: String,
    group: String,
    stop_at_end: bool,
    commit_interval: Duration,
    epoch_messages: u64,
    max_message_bytes: usize,
    fetch_buffer_kbytes: u32,
    shutdown_timeout: Duration,
    workers: usize,
    processor: ProcessorConfig,
}

/// Retries a call to the cluster with backoff while it fails for a reason
/// that can heal (the broker may be starting or away), logging each
/// failure; a configuration the client or the cluster refuses fails at
/// once, and so does a stop.
fn retry<T>(what: &str, cancel: &CancellationToken, mut call: impl FnMut() -> kafka::Result<T>) -> anyhow::Result<T> {
    let mut delay = Duration::from_millis(200);
    let started = Instant::now();
    loop {
        match call() {
            Ok(value) => return Ok(value),
            Err(error) if error.class().is_retryable() && started.elapsed() < Duration::from_secs(300) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot {what}; retrying");
                if kafka::sleep_unless_cancelled(delay, cancel) {
                    anyhow::bail!("stopped while trying to {what}");
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(error) => return Err(anyhow::Error::new(error).context(format!("cannot {what}"))),
        }
    }
}

fn now_micros() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}
