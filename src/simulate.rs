//! `patchtrail simulate`: writes a scenario to a file (or standard output).

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};

use ingest::kafka::{self};
use ingest::simulate::{ScenarioConfig, Simulator};
use schemas::Timestamp;

use crate::cli::SimulateArgs;
use crate::config::Config;

pub fn run(args: SimulateArgs, mut app: Config) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let start = Timestamp::parse_rfc3339(&args.start);
    if start.is_none() {
        problems.push(format!("--start must be an RFC 3339 timestamp with offset, got {:?}", args.start));
    }
    let config = ScenarioConfig {
        assets: args.fleet.assets,
        days: args.fleet.days,
        seed: args.fleet.seed,
        start: start.unwrap_or_default(),
        malformed_ratio: args.malformed_ratio,
        duplicate_ratio: args.duplicate_ratio,
        late_ratio: args.late_ratio,
        drift_ratio: args.drift_ratio,
    };
    problems.extend(config.problems());
    if args.rate == Some(0) {
        problems.push("--rate must be at least 1".to_owned());
    }
    if !(1..=1024).contains(&args.partitions) {
        problems.push(format!("--partitions must be between 1 and 1024, got {}", args.partitions));
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        return Ok(ExitCode::from(2));
    }
    tracing::debug!(?config, "simulating");
    let started = Instant::now();
    let mut simulator = Simulator::new(config, args.truth.is_some());
    if let Some(brokers) = &args.brokers {
        // --brokers names the cluster; [kafka] properties (SASL, TLS) and [topics] apply.
        app.kafka.brokers = brokers.trim().to_owned();
        let settings = app.kafka_settings();
        let topics = app.topic_names();
        kafka::create_input_topics(&settings, &topics, args.partitions)
            .with_context(|| format!("cannot create the input topics on {brokers}"))?;
        let show_progress = io::stderr().is_terminal();
        let counts = kafka::produce_simulation(&settings, &topics, &mut simulator, args.rate, |counts, done| {
            if show_progress {
                eprint!("\rproducing: {:>5.1} % of the window, {} messages", done * 100.0, counts.total);
            }
        })
        .with_context(|| format!("cannot produce to {brokers}"))?;
        if show_progress {
            eprint!("\r\x1b[2K");
        }
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "produced {} messages to {brokers} in {elapsed:.2} s ({:.0} messages/s): {} events, {} late, {} duplicates, {} malformed",
            counts.total,
            counts.total as f64 / elapsed.max(1e-9),
            counts.valid,
            counts.late,
            counts.duplicates,
            counts.invalid,
        );
        return write_truth(simulator, args.truth.as_deref());
    }
    let Some(out_path) = args.out else { bail!("--out is required") };
    let to_stdout = out_path.as_os_str() == "-";
    let show_progress = io::stderr().is_terminal();
    let progress = |counts: ingest::simulate::truth::LineCounts, done: f64| {
        if show_progress {
            eprint!("\rsimulating: {:>5.1} % of the window, {} lines", done * 100.0, counts.total);
        }
    };
    let counts = if to_stdout {
        simulator.write_jsonl(io::stdout(), progress)
    } else {
        let file = File::create(&out_path).with_context(|| format!("cannot create {}", out_path.display()))?;
        simulator.write_jsonl(file, progress)
    }
    .with_context(|| format!("cannot write {}", out_path.display()))?;
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} lines to {} in {elapsed:.2} s ({:.0} lines/s): {} events, {} late, {} duplicates, {} malformed",
        counts.total,
        if to_stdout { "standard output".to_owned() } else { out_path.display().to_string() },
        counts.total as f64 / elapsed.max(1e-9),
        counts.valid,
        counts.late,
        counts.duplicates,
        counts.invalid,
    );
    write_truth(simulator, args.truth.as_deref())
}

/// Writes the simulator's expected results, when asked for.
fn write_truth(simulator: Simulator, truth_path: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    if let Some(truth_path) = truth_path {
        let truth = simulator.truth().context("the simulator kept no truth")?;
        let file = File::create(truth_path).with_context(|| format!("cannot create {}", truth_path.display()))?;
        let mut out = io::BufWriter::new(file);
        serde_json::to_writer(&mut out, &truth).context("cannot serialize the truth")?;
        out.write_all(b"\n")?;
        out.flush().with_context(|| format!("cannot write {}", truth_path.display()))?;
        eprintln!(
            "wrote the expected results to {}: {} exposures, {} patch outcomes, {} rollouts, {} drift windows",
            truth_path.display(),
            truth.exposures.len(),
            truth.patch_outcomes.len(),
            truth.canary_rollups.len(),
            truth.segment_drift.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
