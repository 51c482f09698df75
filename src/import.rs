//! `patchtrail import FORMAT`: what a real tool wrote, as patchtrail's events
//! (CONTRACT.md §7), to JSONL or to the input topics. The conversions are in
//! `ingest::import`; this is the command around them: inputs, outputs,
//! the scan state file, progress and the summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use ingest::import::scan::{AssetRule, ScanOptions, ScanState};
use ingest::import::{Record, epss, inventory, kev, nvd, scan};
use ingest::kafka::{self, Publisher, TopicNames};
use schemas::{CloudEvent, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::cli::{AssetFrom, ImportArgs, ImportFormat};
use crate::config::Config;

/// Where the events go.
enum Output {
    Jsonl(BufWriter<Box<dyn Write>>),
    Kafka { publisher: Publisher, topics: TopicNames },
}

impl Output {
    fn write(&mut self, event: &CloudEvent) -> anyhow::Result<()> {
        match self {
            Output::Jsonl(out) => {
                serde_json::to_writer(&mut *out, event).context("cannot write an event")?;
                out.write_all(b"\n").context("cannot write an event")?;
            }
            Output::Kafka { publisher, topics } => {
                let event_type = event.event_type();
                let payload = serde_json::to_vec(event).context("cannot serialize an event")?;
                let key = event_type.key(&event.subject);
                publisher.send(topics.input(event_type.topic()), Some(&key), &payload)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Output::Jsonl(mut out) => out.flush().context("cannot write the events"),
            Output::Kafka { publisher, .. } => {
                let deadline = Instant::now() + Duration::from_secs(300);
                publisher.flush(Some(deadline), &CancellationToken::new()).context("cannot deliver the events")
            }
        }
    }
}

/// What the import did, for the summary.
#[derive(Default)]
struct Summary {
    records: u64,
    by_type: BTreeMap<&'static str, u64>,
    ignored: BTreeMap<&'static str, u64>,
    failed: u64,
}

pub fn run(args: ImportArgs, mut app: Config) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let is_scan = matches!(args.format, ImportFormat::Trivy | ImportFormat::Grype);
    let time = match &args.time {
        None => None,
        Some(text) => {
            let parsed = Timestamp::parse_rfc3339(text);
            if parsed.is_none() {
                problems.push(format!("--time must be an RFC 3339 timestamp with offset, got {text:?}"));
            }
            parsed
        }
    };
    let asset = match (&args.asset, args.asset_from) {
        (Some(id), _) if id.trim().is_empty() => {
            problems.push("--asset must not be empty".to_owned());
            None
        }
        (Some(id), _) => Some(AssetRule::Fixed(id.trim().to_owned())),
        (None, Some(AssetFrom::Artifact)) => Some(AssetRule::Artifact),
        (None, Some(AssetFrom::ImageId)) => Some(AssetRule::ImageId),
        (None, None) => None,
    };
    if is_scan && asset.is_none() {
        problems.push(
            "a scan names no host: say which asset it is about with --asset ID, or --asset-from artifact|image-id"
                .to_owned(),
        );
    }
    if !is_scan && (asset.is_some() || args.state.is_some()) {
        problems.push("--asset, --asset-from and --state apply to scans (trivy, grype) only".to_owned());
    }
    if !(1..=1024).contains(&args.partitions) {
        problems.push(format!("--partitions must be between 1 and 1024, got {}", args.partitions));
    }
    if args.inputs.iter().filter(|input| input.as_os_str() == "-").count() > 1 {
        problems.push("standard input (-) can be read once".to_owned());
    }
    if let Some(brokers) = &args.brokers {
        problems.extend(app.apply_kafka_flags(Some(brokers), &[]));
    }
    if !problems.is_empty() {
        return Ok(crate::usage_error(&problems));
    }

    let mut state = match &args.state {
        Some(path) => Some(load_state(path)?),
        None => None,
    };
    let mut output = match (&args.brokers, &args.out) {
        (Some(brokers), _) => {
            let settings = app.kafka_settings();
            let topics = app.topic_names();
            // The input topics, created when missing as `simulate` does (`run` reads them all).
            kafka::create_input_topics(&settings, &topics, args.partitions)
                .with_context(|| format!("cannot create the input topics on {brokers}"))?;
            Output::Kafka { publisher: Publisher::new(&settings)?, topics }
        }
        (None, Some(path)) if path.as_os_str() != "-" => {
            let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            Output::Jsonl(BufWriter::with_capacity(1 << 20, Box::new(file)))
        }
        (None, _) => Output::Jsonl(BufWriter::with_capacity(1 << 16, Box::new(io::stdout()))),
    };
    let options = ScanOptions { asset: asset.unwrap_or(AssetRule::Artifact), scanned_at: time };
    let show_progress = io::stderr().is_terminal();
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut shown = 0usize;
    for input in &args.inputs {
        let name = if input.as_os_str() == "-" { "standard input".to_owned() } else { input.display().to_string() };
        let reader = open(input).with_context(|| format!("cannot open {name}"))?;
        let mut last_progress = Instant::now();
        let mut failure: Option<anyhow::Error> = None;
        let mut take = |record: Record| {
            if failure.is_some() {
                return;
            }
            summary.records += 1;
            match record {
                Record::Event(event) => {
                    *summary.by_type.entry(event.event_type().as_str()).or_default() += 1;
                    if let Err(error) = output.write(&event) {
                        failure = Some(error);
                    }
                }
                Record::Ignored { reason, .. } => *summary.ignored.entry(reason).or_default() += 1,
                Record::Failed { position, reason } => {
                    summary.failed += 1;
                    if shown < args.max_errors {
                        shown += 1;
                        eprintln!("{name}: {position}: {reason}");
                    }
                }
            }
            if show_progress && last_progress.elapsed() > Duration::from_millis(250) {
                last_progress = Instant::now();
                eprint!("\rimporting {name}: {} records", summary.records);
            }
        };
        match args.format {
            ImportFormat::Epss => epss::convert(epss::maybe_gunzip(reader)?, &mut take),
            ImportFormat::Inventory => inventory::convert(reader, time, &mut take),
            document_format => {
                let document = read_all(reader).with_context(|| format!("cannot read {name}"))?;
                let records = match document_format {
                    ImportFormat::Kev => kev::convert(&document),
                    ImportFormat::Nvd => nvd::convert(&document),
                    ImportFormat::Trivy => scan::convert_trivy(&document, &options, state.as_mut()),
                    _ => scan::convert_grype(&document, &options, state.as_mut()),
                };
                records.into_iter().for_each(&mut take);
            }
        }
        if let Some(error) = failure {
            return Err(error.context(format!("while importing {name}")));
        }
    }
    if show_progress {
        eprint!("\r\x1b[2K");
    }
    output.finish()?;
    if let (Some(path), Some(state)) = (&args.state, &state) {
        save_state(path, state)?;
    }
    print_summary(&summary, &args, shown, started.elapsed());
    Ok(if summary.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn open(input: &Path) -> io::Result<Box<dyn Read>> {
    if input.as_os_str() == "-" { Ok(Box::new(io::stdin().lock())) } else { Ok(Box::new(File::open(input)?)) }
}

fn read_all(mut reader: impl Read) -> io::Result<Vec<u8>> {
    let mut document = Vec::new();
    reader.read_to_end(&mut document)?;
    Ok(document)
}

fn load_state(path: &PathBuf) -> anyhow::Result<ScanState> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a scan state file written by patchtrail import", path.display())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(ScanState::default()),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the state file as a whole (a crash leaves the old one or the new one).
fn save_state(path: &Path, state: &ScanState) -> anyhow::Result<()> {
    let temporary = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(state).context("cannot serialize the scan state")?;
    std::fs::write(&temporary, bytes).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}

fn print_summary(summary: &Summary, args: &ImportArgs, shown: usize, elapsed: Duration) {
    let events: u64 = summary.by_type.values().sum();
    let ignored: u64 = summary.ignored.values().sum();
    let destination = match (&args.brokers, &args.out) {
        (Some(brokers), _) => format!("the input topics on {brokers}"),
        (None, Some(path)) if path.as_os_str() != "-" => path.display().to_string(),
        _ => "standard output".to_owned(),
    };
    if summary.failed as usize > shown {
        eprintln!(
            "… {} more skipped records not shown (--max-errors {})",
            summary.failed as usize - shown,
            args.max_errors
        );
    }
    eprintln!(
        "read {} records in {:.2} s: wrote {events} events to {destination}, {ignored} records with nothing to import, {} skipped for an error",
        summary.records,
        elapsed.as_secs_f64(),
        summary.failed
    );
    for (event_type, count) in &summary.by_type {
        eprintln!("  {event_type:<24} {count:>10}");
    }
    for (reason, count) in &summary.ignored {
        eprintln!("  nothing to import: {reason}: {count}");
    }
}
