//! `patchtrail replay`: a file of events through the processor into the lake.

use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::file::{Batch, read_batches, route_hint};
use processor::lake::Lake;
use processor::pipeline::Pipeline;
use processor::replay::{Line, Replay};
use tokio_util::sync::CancellationToken;

use crate::cli::ReplayArgs;
use crate::config::Config;
use crate::tasks::Supervisor;

pub fn run(args: ReplayArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    crate::config::set(&mut config.lake.location, &args.lake);
    let mut problems = config.problems();
    if args.partitions == 0 || args.partitions > 1024 {
        problems.push(format!("--partitions must be between 1 and 1024, got {}", args.partitions));
    }
    if args.epoch_lines == 0 {
        problems.push("--epoch-lines must be at least 1".to_owned());
    }
    if args.publish_every == Some(0) {
        problems.push("--publish-every must be at least 1".to_owned());
    }
    if !problems.is_empty() {
        for problem in problems {
            eprintln!("error: {problem}");
        }
        return Ok(ExitCode::from(2));
    }
    let path = std::fs::canonicalize(&args.input).with_context(|| format!("cannot open {}", args.input.display()))?;
    let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    // The source id is the file's path: re-running on the same file resumes
    // where each task left off, a further file starts at its first line.
    let source = format!("file:{}", path.display());
    let lake_location = config.lake.location.clone();
    let lake = Lake::open(&lake_location)?;
    let started = Instant::now();
    let mut pipeline = Pipeline::open(lake, config.processor_config(), args.partitions)?;
    if pipeline.resumed() {
        eprintln!("resuming from the state committed in {lake_location}");
    }
    let show_progress = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut read_bytes = 0u64;
    let mut replay = Replay::new(&mut pipeline, source, args.epoch_lines, args.publish_every);
    // Reading and decoding run on their own thread, a bounded number of
    // batches ahead of processing; spent batches go back to it (ingest::file).
    let (batches, inbox) = std::sync::mpsc::sync_channel::<std::io::Result<Batch>>(4);
    let (spent, returned) = std::sync::mpsc::sync_channel::<Batch>(4);
    let supervisor = Supervisor::new(CancellationToken::new());
    supervisor
        .spawn_thread("replay-decode", move || {
            read_batches(BufReader::with_capacity(1 << 20, file), batches, returned);
            Ok(())
        })
        .context("cannot start the decoding thread")?;
    for batch in inbox {
        let batch = batch.with_context(|| format!("cannot read {}", path.display()))?;
        read_bytes += batch.bytes;
        for line in &batch.lines {
            let line = match line {
                ingest::file::Line::Blank => Line::Blank,
                ingest::file::Line::Event(event) => Line::Event(event),
                ingest::file::Line::Invalid { error, payload } => {
                    let (topic, key) = route_hint(payload);
                    replay.take(Line::Invalid { error, payload, topic, key: key.as_deref() })?;
                    continue;
                }
            };
            replay.take(line)?;
        }
        // If the decoder has enough batches to drop already, drop this one here.
        let _ = spent.try_send(batch);
        if show_progress && last_progress.elapsed() > Duration::from_millis(250) {
            last_progress = Instant::now();
            let lines = replay.counts().lines;
            let rate = lines as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let done = 100.0 * read_bytes as f64 / size.max(1) as f64;
            eprint!("\rreplay: {done:5.1} %, {lines} lines, {rate:.0} lines/s ");
        }
    }
    let (counts, publications) = (replay.counts(), replay.publications().clone());
    // The decoder has sent its last batch: it is ending or has ended.
    supervisor.join(Instant::now() + Duration::from_secs(10));
    if let Some(failure) = supervisor.failure() {
        anyhow::bail!("{failure}");
    }
    let totals = pipeline.finish()?;
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "replayed {} lines of {} into {} in {elapsed:.2} s ({:.0} lines/s)",
        counts.lines,
        path.display(),
        lake_location,
        counts.lines as f64 / elapsed.max(1e-9)
    );
    println!(
        "  events {}, invalid {} (dead letters), already in the lake {}, commits {}",
        counts.events, counts.dead_letters, counts.already_applied, totals.commits
    );
    let rows: Vec<String> = totals.rows.iter().filter(|(_, n)| **n > 0).map(|(t, n)| format!("{t} {n}")).collect();
    println!(
        "  rows written: {}",
        if rows.is_empty() { "none (already replayed)".to_owned() } else { rows.join(", ") }
    );
    if publications.count > 0 {
        println!("  {publications}");
    }
    if !totals.alerts.is_empty() {
        let alerts: Vec<String> = totals.alerts.iter().map(|(rule, n)| format!("{rule} {n}")).collect();
        println!("  alerts: {}", alerts.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
