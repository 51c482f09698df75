//! `patchtrail run`: the configuration and flags into the settings of one
//! pipeline worker (`ingest::worker`), with its probe server and the lake
//! publisher on threads of their own under the Supervisor.
//!
//! Shutdown: the first signal cancels the Supervisor's token; the worker
//! commits what it consumed and stops (its deadline is the shutdown
//! timeout), what the last epochs committed is published to the Delta
//! tables, then the probe server and the publisher stop.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::metrics::{LakeMetrics, PipelineMetrics};
use ingest::worker::publisher::{LakePublisher, Upkeep};
use ingest::worker::{Settings, Worker};

use crate::cli::RunArgs;
use crate::config::{self, Config};
use crate::tasks::Supervisor;

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
    let settings = Settings {
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
        Worker::start(settings, config.kafka_settings(), config.topic_names(), metrics, brokers_down, &cancel)
            .and_then(Worker::run)
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::new);
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

/// Starts the lake's upkeep on a thread of its own (see
/// `ingest::worker::publisher`); the returned publisher publishes on request.
fn start_publisher(
    supervisor: &Supervisor,
    location: &str,
    settings: &processor::config::LakeConfig,
    metrics: LakeMetrics,
) -> anyhow::Result<LakePublisher> {
    let publisher = LakePublisher::new(processor::lake::Lake::open(location)?, metrics)
        .context("cannot start the lake publisher's runtime")?;
    let upkeep = Upkeep {
        publish_every: Duration::from_secs(settings.publish_interval_secs),
        optimize_every: (settings.optimize_interval_secs > 0)
            .then(|| Duration::from_secs(settings.optimize_interval_secs)),
        retain: Duration::from_secs(settings.vacuum_retain_hours * 3600),
    };
    let (cancel, keeper) = (supervisor.token(), publisher.clone());
    supervisor.spawn_thread("lake-publisher", move || {
        keeper.keep(upkeep, &cancel);
        Ok(())
    })?;
    Ok(publisher)
}
