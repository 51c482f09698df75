//! `patchtrail demo`: the whole system on one machine, on a simulated fleet.
//!
//! The embedded broker (librdkafka's mock cluster, in this process) gets the
//! topics and the simulated stream; the real pipeline (`run --stop-at-end`)
//! consumes it into a lake; the real query server (`serve`) answers on
//! 127.0.0.1:8080 and publishes the priority queue back to the broker; the
//! summary is `queries::summary` over the lake. Nothing here computes a
//! figure or writes SQL.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use ingest::kafka::broker::{self, EmbeddedBroker};
use ingest::simulate::truth::LineCounts;
use ingest::simulate::{ScenarioConfig, Simulator};
use processor::lake::Lake;
use queries::LakeSession;
use queries::summary::Summary;

use crate::cli::{DemoArgs, KafkaArgs, RunArgs, ServeArgs};
use crate::config::Config;
use crate::tasks::Supervisor;

pub fn run(args: DemoArgs, app: Config) -> anyhow::Result<ExitCode> {
    let fleet = &args.fleet;
    let config = ScenarioConfig {
        assets: fleet.assets,
        days: fleet.days,
        seed: fleet.seed,
        // A little of what real producers do, so the dead-letter path shows.
        malformed_ratio: 0.001,
        duplicate_ratio: 0.005,
        late_ratio: 0.01,
        ..ScenarioConfig::default()
    };
    let mut problems = config.problems();
    let lake_dir = match &args.lake {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("patchtrail-demo-{}", std::process::id())),
    };
    if lake_dir.join("_commits").exists() {
        problems.push(format!(
            "--lake {} already holds a lake; the embedded broker starts empty every time, so give a new directory",
            lake_dir.display()
        ));
    }
    if args.listen.parse::<std::net::SocketAddr>().is_err() {
        problems.push(format!("--listen must be an IP address and port, got {:?}", args.listen));
    }
    if !problems.is_empty() {
        return Ok(crate::usage_error(&problems));
    }
    let lake = lake_dir.to_string_lossy().into_owned();
    let started = Instant::now();
    println!("patchtrail demo: {} assets over {} days (seed {})", fleet.assets, fleet.days, fleet.seed);
    println!("  lake: {lake}");
    let broker = EmbeddedBroker::start().context("cannot start the embedded broker")?;
    let brokers = broker.bootstrap_servers();
    // 1. The topics, and the simulated stream into them.
    let produced = produce(&broker, &app, config)?;
    println!(
        "  produced {} messages ({} late, {} duplicates, {} malformed) in {:.1} s",
        produced.total,
        produced.late,
        produced.duplicates,
        produced.invalid,
        started.elapsed().as_secs_f64()
    );
    // 2. The pipeline, until it has committed everything produced.
    let supervisor = Supervisor::new(crate::signals::install()?.token().child_token());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let opened = Lake::open(&lake)?;
    if let Some(code) = run_pipeline(&supervisor, &app, &brokers, &opened, &runtime, produced.total)? {
        return Ok(code);
    }
    // 3. The query server, publishing the queue back to the broker.
    let server = match start_server(&supervisor, &app, &brokers, &lake, &args.listen)? {
        Ok(server) => server,
        Err(code) => return Ok(code),
    };
    // 4. The summary, from the lake.
    let session = runtime.block_on(LakeSession::open_with(&opened, None, &app.weights()))?;
    print!("{}", runtime.block_on(Summary::compute(&session))?);
    print_next_steps(&args.listen, &lake_dir);
    println!("\nfirst summary after {:.1} s", started.elapsed().as_secs_f64());
    if args.once {
        // The server thread's Kafka producer outlives this function: keep
        // the broker up until the process exits, so it does not warn.
        std::mem::forget(broker);
        return Ok(ExitCode::SUCCESS);
    }
    println!("serving on http://{} until Ctrl-C", args.listen);
    let outcome = server.recv().map_err(|_| anyhow::anyhow!("the query server panicked"))?;
    supervisor.join(Instant::now() + Duration::from_secs(5));
    drop(broker);
    outcome
}

/// The simulated fleet into the embedded broker's topics, with a progress bar.
fn produce(broker: &EmbeddedBroker, app: &Config, config: ScenarioConfig) -> anyhow::Result<LineCounts> {
    let partitions = broker::partitions_for(config.assets, config.days);
    println!("  embedded Kafka broker on {} ({partitions} partitions per topic)", broker.bootstrap_servers());
    let bar = progress_bar("producing", 1_000);
    let mut simulator = Simulator::new(config, false);
    let counts = broker
        .produce_fleet(&app.topic_names(), partitions, &mut simulator, |c, done| {
            bar.set_position((done * 1_000.0) as u64);
            bar.set_message(format!("{} messages", c.total));
        })
        .context("cannot produce the simulated fleet")?;
    bar.finish_and_clear();
    Ok(counts)
}

/// Runs the pipeline (`run --stop-at-end`) until it has committed all
/// `total` messages, with a progress bar; `Some(code)` if the demo must stop.
fn run_pipeline(
    supervisor: &Supervisor,
    app: &Config,
    brokers: &str,
    lake: &Lake,
    runtime: &tokio::runtime::Runtime,
    total: u64,
) -> anyhow::Result<Option<ExitCode>> {
    let started = Instant::now();
    let run_args = RunArgs {
        kafka: KafkaArgs { brokers: Some(brokers.to_owned()), properties: Vec::new() },
        lake: Some(lake.location().to_owned()),
        group: Some("patchtrail-demo".to_owned()),
        stop_at_end: true,
        metrics_listen: Some("127.0.0.1:0".to_owned()),
        commit_interval_ms: None,
        epoch_messages: None,
        max_message_bytes: None,
        fetch_buffer_kbytes: None,
        shutdown_timeout_secs: None,
        workers: None,
        idle_timeout_secs: None,
    };
    let pipeline = command_thread(supervisor, "pipeline", {
        let config = app.clone();
        move || crate::run::run(run_args, config)
    })?;
    let bar = progress_bar("processing", total);
    let outcome = loop {
        match pipeline.recv_timeout(Duration::from_millis(500)) {
            Ok(outcome) => break outcome,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("the pipeline thread panicked"),
        }
        if let Ok(done) = runtime.block_on(lake.committed_messages()) {
            bar.set_position(done.min(total));
        }
    };
    bar.finish_and_clear();
    if crate::signals::install()?.count() > 0 {
        return Ok(Some(ExitCode::from(130)));
    }
    if outcome? != ExitCode::SUCCESS {
        anyhow::bail!("the pipeline stopped before it caught up");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "  pipeline caught up: {total} messages committed to the lake in {elapsed:.1} s ({:.0} messages/s)",
        total as f64 / elapsed.max(1e-9)
    );
    Ok(None)
}

/// A command's outcome, when it ends.
type Outcome = std::sync::mpsc::Receiver<anyhow::Result<ExitCode>>;

/// Starts `serve` on `listen`, publishing the queue to `brokers`, and waits
/// until it listens; `Err(code)` if it ended instead.
fn start_server(
    supervisor: &Supervisor,
    app: &Config,
    brokers: &str,
    lake: &str,
    listen: &str,
) -> anyhow::Result<Result<Outcome, ExitCode>> {
    let serve_args = ServeArgs {
        lake: Some(lake.to_owned()),
        listen: Some(listen.to_owned()),
        token: None,
        token_file: None,
        query_timeout_secs: None,
        memory_limit_mib: None,
        max_rows: None,
        refresh_ms: None,
        brokers: Some(brokers.to_owned()),
        kafka_properties: Vec::new(),
        priorities_interval_secs: None,
        max_concurrent_queries: None,
        header_timeout_secs: None,
    };
    let server = command_thread(supervisor, "serve", {
        let config = app.clone();
        move || crate::serve::run(serve_args, config)
    })?;
    let waiting = Instant::now();
    while std::net::TcpStream::connect(listen).is_err() {
        if let Ok(outcome) = server.try_recv() {
            return match outcome {
                Err(error) => Err(error.context(format!(
                    "the query server could not start (is {listen} in use? pass --listen 127.0.0.1:PORT)"
                ))),
                Ok(code) => Ok(Err(code)),
            };
        }
        anyhow::ensure!(waiting.elapsed() < Duration::from_secs(30), "the query server did not listen on {listen}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Ok(server))
}

/// Runs a command on a thread of the supervisor; its outcome arrives on the
/// returned channel (nothing arrives if it panicked: the supervisor logs it).
fn command_thread(
    supervisor: &Supervisor,
    name: &str,
    command: impl FnOnce() -> anyhow::Result<ExitCode> + Send + 'static,
) -> anyhow::Result<Outcome> {
    let (done, outcome) = std::sync::mpsc::channel();
    supervisor.spawn_thread(name, move || {
        let _ = done.send(command());
        Ok(())
    })?;
    Ok(outcome)
}

fn progress_bar(label: &str, length: u64) -> ProgressBar {
    // indicatif draws only on a terminal; piped output stays clean.
    let bar = ProgressBar::new(length);
    let style =
        ProgressStyle::with_template(&format!("  {label:<11} [{{bar:32}}] {{percent:>3}} % {{msg}} ({{elapsed}})"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn print_next_steps(listen: &str, lake: &Path) {
    let lake = shell_quote(lake);
    println!("\nTry it");
    println!("  http://{listen}/v1/priorities?limit=10   http://{listen}/metrics   http://{listen}/readyz");
    println!(
        "  curl -s http://{listen}/v1/sql -d '{{\"sql\": \"SELECT * FROM ttp_matrix ORDER BY severity, criticality\"}}'"
    );
    println!("  curl -s 'http://{listen}/v1/priorities?limit=5'");
    println!("  patchtrail sql --lake {lake} \"SELECT * FROM sla_compliance ORDER BY severity, environment\"");
}

fn shell_quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)) {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}
