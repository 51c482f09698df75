//! `patchtrail serve`: wiring of the query service (`queries::server`):
//! flags over the configuration, three runtimes (HTTP, user queries, the
//! service tasks that open snapshots and publish the queue), the Kafka sink
//! of the priority queue, signals and the shutdown order.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::kafka::{KafkaSettings, Publisher, TopicSpec};
use processor::lake::Lake;
use queries::priorities::{QueueChange, QueuePublisher, QueueSink};
use queries::server::Service;
use queries::server::worker::WorkerCommand;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::config::{self, Config};
use crate::tasks::Supervisor;

pub fn run(args: ServeArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    if args.brokers.is_some() {
        config.server.publish_priorities = true;
        problems.extend(config.apply_kafka_flags(args.brokers.as_deref(), &args.kafka_properties));
    }
    config::set(&mut config.lake.location, &args.lake);
    config::set(&mut config.server.listen, &args.listen);
    config::set(&mut config.server.query_timeout_secs, &args.query_timeout_secs);
    config::set(&mut config.server.memory_limit_mib, &args.memory_limit_mib);
    config::set(&mut config.server.max_rows, &args.max_rows);
    config::set(&mut config.server.refresh_ms, &args.refresh_ms);
    config::set(&mut config.server.priorities_interval_secs, &args.priorities_interval_secs);
    config::set(&mut config.server.max_concurrent_queries, &args.max_concurrent_queries);
    config::set(&mut config.server.header_timeout_secs, &args.header_timeout_secs);
    if args.token.is_some() {
        config.auth.token.clone_from(&args.token);
    }
    if args.token_file.is_some() {
        config.auth.token_file.clone_from(&args.token_file);
    }
    problems.extend(config.lake.missing_lake());
    problems.extend(config.problems());
    if !problems.is_empty() {
        return Ok(crate::usage_error(&problems));
    }
    let server = config.server.clone();
    let worker = WorkerCommand {
        program: std::env::current_exe().context("cannot find this program to start query workers")?,
        args: vec!["query-worker".to_owned()],
    };
    let settings = server.settings(&config.auth, config.weights(), worker);
    let deadline = settings.query_timeout + Duration::from_secs(5);
    let signals = crate::signals::install()?;
    signals.set_deadline(deadline);
    let supervisor = Supervisor::new(signals.token().child_token());
    let runtime = |name: &str, threads: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .with_context(|| format!("cannot start the {name} runtime"))
    };
    let (http, service_rt) = (runtime("http", 1)?, runtime("lake-service", 1)?);
    let lake = Lake::open(&config.lake.location)?;
    let service = service_rt.block_on(Service::open(lake, settings))?;
    let listener = http
        .block_on(tokio::net::TcpListener::bind(&server.listen))
        .with_context(|| format!("cannot listen on {}", server.listen))?;
    let cancel = supervisor.token();
    supervisor.spawn(service_rt.handle(), "refresh", {
        let (service, cancel) = (service.clone(), cancel.clone());
        async move { Ok(service.refresh(cancel).await?) }
    });
    if server.publish_priorities {
        let sink = KafkaSink::start(&config.kafka_settings(), &config.topics.priorities, service.brokers_down())?;
        let every = Duration::from_secs(server.priorities_interval_secs);
        let publisher = QueuePublisher::new(Box::new(sink));
        let (service, cancel) = (service.clone(), cancel.clone());
        supervisor.spawn(service_rt.handle(), "publish-priorities", async move {
            Ok(service.publish(publisher, every, cancel).await?)
        });
    }
    supervisor.spawn(http.handle(), "http", {
        let cancel = cancel.clone();
        async move { service.serve(listener, cancel).await.context("the HTTP server failed") }
    });
    http.block_on(cancel.cancelled());
    tracing::info!("stopping");
    let clean = supervisor.join(Instant::now() + deadline);
    match supervisor.failure() {
        Some(failure) => anyhow::bail!("{failure}"),
        None if clean => Ok(ExitCode::SUCCESS),
        None => Ok(ExitCode::FAILURE),
    }
}

/// `patchtrail query-worker` (hidden): runs the queries `serve` sends on
/// standard input, answers on standard output (`queries::server::worker`).
pub fn query_worker() -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("query")
        .thread_stack_size(queries::server::worker::QUERY_STACK_BYTES)
        .enable_all()
        .build()
        .context("cannot start the query runtime")?;
    queries::server::worker::serve_queries(&runtime, std::io::stdin().lock(), std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// The priority queue's way to its compacted topic.
struct KafkaSink {
    publisher: Publisher,
    topic: String,
}

impl KafkaSink {
    fn start(settings: &KafkaSettings, topic: &str, brokers_down: Arc<AtomicBool>) -> anyhow::Result<KafkaSink> {
        let spec = TopicSpec { name: topic, partitions: 1, compacted: true };
        ingest::kafka::create_topics(settings, &[spec], Duration::from_secs(30))
            .with_context(|| format!("cannot create {topic} on {}", settings.brokers))?;
        let publisher = Publisher::with_down_flag(settings, brokers_down)?;
        Ok(KafkaSink { publisher, topic: topic.to_owned() })
    }
}

impl QueueSink for KafkaSink {
    fn send(&mut self, changes: &[QueueChange], cancel: &CancellationToken) -> Result<(), String> {
        for change in changes {
            match &change.value {
                Some(value) => self.publisher.send(&self.topic, Some(&change.key), value.as_bytes()),
                None => self.publisher.send_tombstone(&self.topic, &change.key),
            }
            .map_err(|e| e.to_string())?;
        }
        self.publisher.flush(None, cancel).map_err(|e| e.to_string())
    }
}
