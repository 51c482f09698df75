//! `patchtrail replay`: a file of events through the processor into the lake.

use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::file::{Batch, Line, read_batches, route_hint};
use processor::lake::Lake;
use processor::pipeline::Pipeline;
use processor::rows::DeadLetterRow;
use processor::task::Applied;
use schemas::Timestamp;

use crate::cli::ReplayArgs;
use crate::config::Config;

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
    let mut publications = Publications::default();
    let (mut offset, mut events, mut invalid, mut skipped, mut read_bytes) = (0u64, 0u64, 0u64, 0u64, 0u64);
    // Reading and decoding run on their own thread, a bounded number of
    // batches ahead of processing; spent batches go back to it (ingest::file).
    let (batches, inbox) = std::sync::mpsc::sync_channel::<std::io::Result<Batch>>(4);
    let (spent, returned) = std::sync::mpsc::sync_channel::<Batch>(4);
    let reader = std::thread::Builder::new()
        .name("replay-decode".to_owned())
        .spawn(move || read_batches(BufReader::with_capacity(1 << 20, file), batches, returned))
        .context("cannot start the decoding thread")?;
    for batch in inbox {
        let batch = batch.with_context(|| format!("cannot read {}", path.display()))?;
        read_bytes += batch.bytes;
        for line in &batch.lines {
            let processor = pipeline.processor();
            match line {
                Line::Blank => {}
                Line::Event(event) => match processor.apply(&source, offset, event) {
                    Applied::AlreadyApplied => skipped += 1,
                    Applied::Event | Applied::Duplicate => events += 1,
                    Applied::BeyondRetention => invalid += 1,
                },
                Line::Invalid { error, payload } => {
                    let (topic, key) = route_hint(payload);
                    let task = processor.route_topic(topic, key.as_deref().unwrap_or(""));
                    let failed_at = processor.task(task).and_then(|t| t.max_event_time()).unwrap_or(Timestamp(0));
                    let row = DeadLetterRow::new(
                        &source,
                        task.partition as i32,
                        offset as i64,
                        key.as_deref(),
                        error.clone(),
                        payload,
                        failed_at,
                    );
                    match processor.dead_letter(task, &source, offset, row) {
                        Applied::AlreadyApplied => skipped += 1,
                        _ => invalid += 1,
                    }
                }
            }
            offset += 1;
            if offset % args.epoch_lines == 0 {
                pipeline.commit()?;
                let epoch = offset / args.epoch_lines;
                if args.publish_every.is_some_and(|every| epoch.is_multiple_of(every)) {
                    let publishing = Instant::now();
                    let report = pipeline.publish()?;
                    publications.add(&report, publishing.elapsed());
                }
            }
        }
        // If the decoder has enough batches to drop already, drop this one here.
        let _ = spent.try_send(batch);
        if show_progress && last_progress.elapsed() > Duration::from_millis(250) {
            last_progress = Instant::now();
            let rate = offset as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let done = 100.0 * read_bytes as f64 / size.max(1) as f64;
            eprint!("\rreplay: {done:5.1} %, {offset} lines, {rate:.0} lines/s ");
        }
    }
    reader.join().map_err(|_| anyhow::anyhow!("the decoding thread panicked"))?;
    let totals = pipeline.finish()?;
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "replayed {} lines of {} into {} in {elapsed:.2} s ({:.0} lines/s)",
        offset,
        path.display(),
        lake_location,
        offset as f64 / elapsed.max(1e-9)
    );
    println!(
        "  events {events}, invalid {invalid} (dead letters), already in the lake {skipped}, commits {}",
        totals.commits
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

/// The cost of the publications `--publish-every` asked for.
#[derive(Default)]
struct Publications {
    count: u64,
    epochs: u64,
    files: u64,
    conflicts: u64,
    total: Duration,
    slowest: Duration,
}

impl Publications {
    fn add(&mut self, report: &processor::delta::Publication, took: Duration) {
        self.count += 1;
        self.epochs += report.epochs;
        self.files += report.files;
        self.conflicts += report.conflicts;
        self.total += took;
        self.slowest = self.slowest.max(took);
    }
}

impl std::fmt::Display for Publications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "publications {} ({} epochs, {} files, {} conflicts): {:.0} ms each on average, {:.0} ms at most",
            self.count,
            self.epochs,
            self.files,
            self.conflicts,
            self.total.as_secs_f64() * 1e3 / self.count.max(1) as f64,
            self.slowest.as_secs_f64() * 1e3
        )
    }
}
