//! `patchtrail demo`: the whole system on one machine, on a simulated fleet.
//!
//! The embedded broker (librdkafka's mock cluster, in this process) gets the
//! topics and the simulated stream; the real pipeline (`run --stop-at-end`)
//! consumes it into a lake; the real query server (`serve`) answers on
//! 127.0.0.1:8080 and publishes the priority queue back to the broker; the
//! summary is SQL over the lake. Nothing here computes a figure itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use ingest::kafka::{self, EmbeddedBroker, KafkaSettings, TopicSpec};
use ingest::simulate::{ScenarioConfig, Simulator};
use processor::lake::Lake;
use queries::LakeSession;
use schemas::InputTopic;
use serde_json::Value;

use crate::cli::{DemoArgs, KafkaArgs, RunArgs, ServeArgs};
use crate::config::Config;

/// Partitions for each keyed input topic, so that the fleet's stream fits the
/// embedded broker's retention (5 MiB of record batches per partition, the
/// oldest dropped beyond): one partition per 8 MB of the estimate below,
/// about 10 events of 400 bytes per asset and day, a quarter of it after lz4.
/// The estimate is generous (the default fleet, 60 MB by it, fits 8
/// partitions), and `run` checks afterwards that nothing was dropped.
fn partitions_for(assets: u32, days: u32) -> i32 {
    let estimate = u64::from(assets) * u64::from(days) * 10 * 400 / 4;
    (estimate / 8_000_000 + 1).clamp(3, 64) as i32
}

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

    // The broker and its topics.
    let broker = EmbeddedBroker::start().context("cannot start the embedded broker")?;
    let brokers = broker.bootstrap_servers();
    let topics = app.topic_names();
    let partitions = partitions_for(fleet.assets, fleet.days);
    let mut specs: Vec<TopicSpec<'_>> = InputTopic::ALL
        .iter()
        .map(|&topic| TopicSpec {
            name: topics.input(topic),
            partitions: if topic == InputTopic::Intel { 1 } else { partitions },
            compacted: topic == InputTopic::Intel,
        })
        .collect();
    for name in [&topics.alerts, &topics.reevaluations, &topics.dlq, &topics.priorities] {
        specs.push(TopicSpec { name, partitions, compacted: name == &topics.priorities });
    }
    broker.create_topics(&specs).context("cannot create the topics")?;
    println!("  embedded Kafka broker on {brokers} ({} topics, {partitions} partitions each)", specs.len());

    // 1. The simulated stream into the broker.
    let bar = progress_bar("producing", 1_000);
    let mut simulator = Simulator::new(config, false);
    let mut producing = KafkaSettings::new(brokers.as_str());
    for (key, value) in
        [("compression.type", "lz4"), ("linger.ms", "200"), ("batch.num.messages", "100000"), ("batch.size", "8000000")]
    {
        producing.properties.insert(key.to_owned(), value.to_owned());
    }
    let counts = kafka::produce_simulation(&producing, &topics, &mut simulator, |c, done| {
        bar.set_position((done * 1_000.0) as u64);
        bar.set_message(format!("{} messages", c.total));
    })
    .context("cannot produce the simulated fleet")?;
    bar.finish_and_clear();
    for topic in InputTopic::ALL.iter().copied() {
        let count = if topic == InputTopic::Intel { 1 } else { partitions };
        let starts = kafka::start_offsets(&producing, topics.input(topic), count, Duration::from_secs(10))?;
        if let Some((partition, start)) = starts.iter().find(|(_, start)| **start > 0) {
            anyhow::bail!(
                "the embedded broker dropped the first {start} messages of {}/{partition}: it keeps 5 MiB per \
                 partition, and this fleet is too large for it; use fewer --assets or --days, or a real Kafka \
                 cluster (`simulate --brokers`, `run`, `serve`)",
                topics.input(topic)
            );
        }
    }
    println!(
        "  produced {} messages ({} late, {} duplicates, {} malformed) in {:.1} s",
        counts.total,
        counts.late,
        counts.duplicates,
        counts.invalid,
        started.elapsed().as_secs_f64()
    );

    // 2. The pipeline, until it has committed everything produced.
    let pipeline_started = Instant::now();
    let run_args = RunArgs {
        kafka: KafkaArgs { brokers: Some(brokers.clone()), properties: Vec::new() },
        lake: Some(lake.clone()),
        group: Some("patchtrail-demo".to_owned()),
        stop_at_end: true,
        metrics_listen: Some("127.0.0.1:0".to_owned()),
        commit_interval_ms: None,
        epoch_messages: None,
        max_message_bytes: None,
        fetch_buffer_kbytes: None,
        shutdown_timeout_secs: None,
        workers: None,
    };
    let run_config = app.clone();
    let pipeline = std::thread::Builder::new()
        .name("pipeline".to_owned())
        .spawn(move || crate::run::run(run_args, run_config))
        .context("cannot start the pipeline")?;
    let bar = progress_bar("processing", counts.total);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let opened = Lake::open(&lake)?;
    while !pipeline.is_finished() {
        if let Ok(done) = runtime.block_on(committed_messages(&opened)) {
            bar.set_position(done.min(counts.total));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bar.finish_and_clear();
    let outcome = pipeline.join().map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))??;
    if outcome != ExitCode::SUCCESS {
        anyhow::bail!("the pipeline stopped before it caught up");
    }
    if crate::signals::install()?.count() > 0 {
        return Ok(ExitCode::from(130));
    }
    let elapsed = pipeline_started.elapsed().as_secs_f64();
    println!(
        "  pipeline caught up: {} messages committed to the lake in {elapsed:.1} s ({:.0} messages/s)",
        counts.total,
        counts.total as f64 / elapsed.max(1e-9)
    );

    // 3. The query server, publishing the queue back to the broker.
    let serve_args = ServeArgs {
        lake: Some(lake.clone()),
        listen: Some(args.listen.clone()),
        token: None,
        query_timeout_secs: None,
        memory_limit_mib: None,
        max_rows: None,
        refresh_ms: None,
        brokers: Some(brokers.clone()),
        kafka_properties: Vec::new(),
        priorities_interval_secs: None,
    };
    let serve_config = app.clone();
    let server = std::thread::Builder::new()
        .name("serve".to_owned())
        .spawn(move || crate::serve::run(serve_args, serve_config))
        .context("cannot start the query server")?;
    let waiting = Instant::now();
    while std::net::TcpStream::connect(&args.listen).is_err() {
        if server.is_finished() {
            let outcome = server.join().map_err(|_| anyhow::anyhow!("the query server panicked"))?;
            return match outcome {
                Err(error) => Err(error.context(format!(
                    "the query server could not start (is {} in use? pass --listen 127.0.0.1:PORT)",
                    args.listen
                ))),
                Ok(code) => Ok(code),
            };
        }
        anyhow::ensure!(
            waiting.elapsed() < Duration::from_secs(30),
            "the query server did not listen on {}",
            args.listen
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // 4. The summary, from the lake.
    let session = runtime.block_on(LakeSession::open_with(&opened, None, &app.weights()))?;
    runtime.block_on(print_summary(&session))?;
    print_next_steps(&args.listen, &lake_dir);
    println!("\nfirst summary after {:.1} s", started.elapsed().as_secs_f64());
    if args.once {
        // The server thread's Kafka producer outlives this function: keep
        // the broker up until the process exits, so it does not warn.
        std::mem::forget(broker);
        return Ok(ExitCode::SUCCESS);
    }
    println!("serving on http://{} until Ctrl-C", args.listen);
    let outcome = server.join().map_err(|_| anyhow::anyhow!("the query server panicked"))??;
    drop(broker);
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

/// Messages the lake has committed: the sum of every task's latest source positions.
async fn committed_messages(lake: &Lake) -> anyhow::Result<u64> {
    let mut latest: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for record in lake.commit_records().await? {
        let done: u64 = record.positions.values().sum();
        let entry = latest.entry(record.task.to_string()).or_default();
        if record.epoch >= entry.0 {
            *entry = (record.epoch, done);
        }
    }
    Ok(latest.values().map(|(_, done)| done).sum())
}

type Row = serde_json::Map<String, Value>;

async fn rows(session: &LakeSession, sql: &str) -> anyhow::Result<Vec<Row>> {
    let (_, batches) = session.query(sql).await.with_context(|| format!("summary query failed: {sql}"))?;
    let mut bytes = Vec::new();
    let mut writer = arrow::json::ArrayWriter::new(&mut bytes);
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(if bytes.is_empty() { Vec::new() } else { serde_json::from_slice(&bytes)? })
}

fn f(row: &Row, column: &str) -> f64 {
    row.get(column).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn s<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column).and_then(Value::as_str).unwrap_or("-")
}

/// The patch severity (the highest among the CVEs a patch fixes), as in `ttp_matrix`.
const TTP_BY_SEVERITY: &str = "
WITH fixes AS (SELECT patch_id, unnest(fixes_cves) AS cve_id FROM patches),
levels AS (
    SELECT f.patch_id, max(CASE c.severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 ELSE 1 END) AS level
    FROM fixes f JOIN cves c ON c.cve_id = f.cve_id GROUP BY f.patch_id
)
SELECT CASE l.level WHEN 4 THEN 'critical' WHEN 3 THEN 'high' WHEN 2 THEN 'medium' ELSE 'low' END AS severity,
       count(*) AS patched,
       median(o.time_to_patch_s) / 86400.0 AS median_d,
       approx_percentile_cont(o.time_to_patch_s, 0.9) / 86400.0 AS p90_d
FROM patch_outcomes o JOIN levels l ON l.patch_id = o.patch_id
WHERE o.time_to_patch_s IS NOT NULL
GROUP BY l.level ORDER BY l.level DESC";

async fn print_summary(session: &LakeSession) -> anyhow::Result<()> {
    let as_of = session.as_of().map(|t| t.to_string()).unwrap_or_else(|| "-".to_owned());
    println!("\nWhat the lake says, as of {as_of} (event time)");

    println!("\n  Time to patch (release → verified install), per CVE severity of the patch");
    for row in rows(session, TTP_BY_SEVERITY).await? {
        println!(
            "    {:<9} median {:>5.1} d   p90 {:>5.1} d   over {:>6} patched asset × patch",
            s(&row, "severity"),
            f(&row, "median_d"),
            f(&row, "p90_d"),
            f(&row, "patched")
        );
    }

    println!("\n  SLA compliance (exposures remediated in time or still within their deadline)");
    let sla = "SELECT severity, sum(exposures) AS exposures, sum(open) AS open, sum(breached) AS breached,
               1.0 - CAST(sum(breached) AS DOUBLE) / sum(exposures) AS compliance
               FROM sla_compliance GROUP BY severity
               ORDER BY CASE severity WHEN 'critical' THEN 1 WHEN 'high' THEN 2 WHEN 'medium' THEN 3 ELSE 4 END";
    for row in rows(session, sla).await? {
        println!(
            "    {:<9} {:>6.1} %   of {:>6} exposures; {:>5} open, {:>5} breached",
            s(&row, "severity"),
            100.0 * f(&row, "compliance"),
            f(&row, "exposures"),
            f(&row, "open"),
            f(&row, "breached")
        );
    }
    let kev = rows(session, "SELECT count(*) AS n, count(DISTINCT asset_id) AS assets FROM exposures WHERE status = 'open' AND kev AND breached").await?;
    if let Some(row) = kev.first() {
        println!("    open KEV exposures past due: {} on {} assets", f(row, "n"), f(row, "assets"));
    }

    println!("\n  Canary gates");
    let gates = "SELECT gate, count(*) AS rollouts, avg(failure_rate) AS mean_failure_rate, max(failure_rate) AS worst
                 FROM canary_rollups GROUP BY gate ORDER BY gate";
    for row in rows(session, gates).await? {
        println!(
            "    {:<9} {:>4} rollouts, stage failure rate mean {:>5.1} %, worst {:>5.1} %",
            s(&row, "gate"),
            f(&row, "rollouts"),
            100.0 * f(&row, "mean_failure_rate"),
            100.0 * f(&row, "worst")
        );
    }

    println!("\n  Micro-segmentation: worst segment pairs by drift (allowed against intent, or the reverse)");
    let drift = "SELECT src_segment, dst_segment, drift_connections, connections, drift_ratio
                 FROM drift_summary WHERE drift_connections > 0 ORDER BY drift_ratio DESC, connections DESC LIMIT 5";
    for row in rows(session, drift).await? {
        println!(
            "    {:>14} → {:<14} {:>5.1} %  ({} of {} connections)",
            s(&row, "src_segment"),
            s(&row, "dst_segment"),
            100.0 * f(&row, "drift_ratio"),
            f(&row, "drift_connections"),
            f(&row, "connections")
        );
    }

    println!("\n  Priority queue, top 10 (what to patch next)");
    let queue = "SELECT rank, asset_id, cve_id, patch_id, score, severity, kev, due_at, blocked_by_canary
                 FROM priorities ORDER BY rank LIMIT 10";
    for row in rows(session, queue).await? {
        println!(
            "    {:>2}. {:<12} {:<16} {:<9} {:<18} score {:>6.2}  due {}{}{}",
            f(&row, "rank"),
            s(&row, "asset_id"),
            s(&row, "cve_id"),
            s(&row, "severity"),
            s(&row, "patch_id"),
            f(&row, "score"),
            s(&row, "due_at"),
            if row.get("kev") == Some(&Value::Bool(true)) { "  KEV" } else { "" },
            if row.get("blocked_by_canary") == Some(&Value::Bool(true)) { "  blocked by canary" } else { "" },
        );
    }

    println!("\n  Alerts (OCSF 1.8.0 on patchtrail.alerts)");
    for row in rows(session, "SELECT rule, count(*) AS n FROM alerts GROUP BY rule ORDER BY n DESC").await? {
        println!("    {:<24} {:>6}", s(&row, "rule"), f(&row, "n"));
    }
    let dead = rows(session, "SELECT count(*) AS n FROM dead_letters").await?;
    if let Some(row) = dead.first() {
        println!("    dead letters (patchtrail.dlq): {}", f(row, "n"));
    }
    Ok(())
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
