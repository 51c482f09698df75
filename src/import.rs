//! `patchtrail import FORMAT`: what a real tool wrote, as patchtrail's events
//! (CONTRACT.md §7), to JSONL or to the input topics. The conversions are in
//! `ingest::import`; this is the command around them: inputs, outputs,
//! the scan state file, progress and the summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use ingest::import::Record;
use ingest::import::input::{self, FileOptions};
use ingest::import::policy_report::ResourceAsset;
use ingest::import::scan::{AssetRule, ScanOptions, ScanState};
use ingest::import::stream::{StreamFormat, StreamKind, StreamOptions};
use ingest::import::topic::{OutputError, Sink};
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

    /// Pushes written events out now (standard output, a file); the Kafka
    /// producer sends on its own.
    fn flush_now(&mut self) -> anyhow::Result<()> {
        match self {
            Output::Jsonl(out) => out.flush().context("cannot write the events"),
            Output::Kafka { .. } => Ok(()),
        }
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
    merged: BTreeMap<&'static str, u64>,
    failed: u64,
}

/// Where every record goes: the output, the summary, the error report and
/// the progress line.
struct Taker<'a> {
    output: &'a mut Output,
    summary: Summary,
    shown: usize,
    max_errors: usize,
    show_progress: bool,
    last_progress: Instant,
    failure: Option<anyhow::Error>,
    /// False for flow sources: their events are windows, not records.
    events_are_records: bool,
}

impl Taker<'_> {
    fn take(&mut self, name: &str, record: Record) {
        if self.failure.is_some() {
            return;
        }
        match record {
            Record::Event(event) => {
                *self.summary.by_type.entry(event.event_type().as_str()).or_default() += 1;
                if let Err(error) = self.output.write(&event) {
                    self.failure = Some(error);
                }
                if !self.events_are_records {
                    return;
                }
            }
            Record::Merged { reason } => *self.summary.merged.entry(reason).or_default() += 1,
            Record::Ignored { reason, .. } => *self.summary.ignored.entry(reason).or_default() += 1,
            Record::Failed { position, reason } => {
                self.summary.failed += 1;
                if self.shown < self.max_errors {
                    self.shown += 1;
                    eprintln!("{name}: {position}: {reason}");
                }
            }
        }
        self.summary.records += 1;
        if self.show_progress && self.last_progress.elapsed() > Duration::from_millis(250) {
            self.last_progress = Instant::now();
            eprint!("\rimporting {name}: {} records", self.summary.records);
        }
    }
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
        (None, Some(_)) | (None, None) => None,
    };
    if is_scan && asset.is_none() {
        problems.push(
            "a scan names no host: say which asset it is about with --asset ID, or --asset-from artifact|image-id"
                .to_owned(),
        );
    }
    let is_report = args.format == ImportFormat::PolicyReport;
    if !is_scan && !is_report && (args.asset.is_some() || args.asset_from.is_some()) {
        problems.push("--asset and --asset-from apply to scans (trivy, grype) and policy reports only".to_owned());
    }
    if !is_scan && args.state.is_some() {
        problems.push("--state applies to scans (trivy, grype) only".to_owned());
    }
    let stream_format = stream_format(&args, time, &mut problems);
    if args.from_topic.is_some() && args.format.kind().is_err() {
        problems.push(format!(
            "--from-topic reads hubble, vpc-flow, opa, argo-rollouts and policy-report records; {} files are imported as files",
            args.format.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
        ));
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
        Some(path) => {
            let state = load_state(path)?;
            // Found out now, not after every event was written.
            state_file_beside(path)?;
            Some(state)
        }
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
    let started = Instant::now();
    let mut taker = Taker {
        output: &mut output,
        summary: Summary::default(),
        shown: 0,
        max_errors: args.max_errors,
        show_progress: io::stderr().is_terminal(),
        last_progress: Instant::now(),
        failure: None,
        events_are_records: !matches!(args.format, ImportFormat::Hubble | ImportFormat::VpcFlow),
    };
    if let (Some(topic), Some(format)) = (&args.from_topic, &stream_format) {
        let settings = app.kafka_settings();
        let stop = crate::signals::install()?.token();
        ingest::import::topic::consume(&settings, topic, &args.group, format.clone(), &mut taker, &stop)?;
        return finish(taker, &args, started, None);
    }
    let signals = crate::signals::install()?;
    let stop = signals.token();
    let options = ScanOptions { asset: asset.unwrap_or(AssetRule::Artifact), scanned_at: time };
    for input in &args.inputs {
        if stop.is_cancelled() {
            break;
        }
        let name = input::name(input);
        let reader = input::open(input)?;
        taker.last_progress = Instant::now();
        let converted = match (&stream_format, args.format.kind()) {
            (Some(format), _) => input::convert_stream(format, reader, &name, &mut taker, &stop),
            (None, Err(format)) => {
                let options = FileOptions { scan: &options, state: state.as_mut(), time };
                input::convert_file(format, reader, &name, options, &mut taker)
            }
            // A runtime format whose flags were refused has stopped above.
            (None, Ok(_)) => Ok(()),
        };
        converted.with_context(|| format!("while importing {name}"))?;
    }
    finish(taker, &args, started, state.as_ref())
}

impl Sink for Taker<'_> {
    fn take(&mut self, origin: &str, record: Record) {
        Taker::take(self, origin, record);
    }

    fn failure(&mut self) -> Option<OutputError> {
        self.failure.take().map(Into::into)
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        Ok(self.output.flush_now()?)
    }

    fn deliver(&mut self, cancel: &CancellationToken) -> Result<(), OutputError> {
        match self.output {
            Output::Kafka { publisher, .. } => {
                publisher.flush(Some(Instant::now() + Duration::from_secs(300)), cancel)?;
                Ok(())
            }
            Output::Jsonl(_) => Ok(self.output.flush_now()?),
        }
    }

    fn counts(&self) -> (u64, u64, u64) {
        (self.summary.records, self.summary.by_type.values().sum(), self.summary.failed)
    }
}

/// Delivers what is queued, saves the scan state, prints the summary.
fn finish(
    taker: Taker<'_>,
    args: &ImportArgs,
    started: Instant,
    state: Option<&ScanState>,
) -> anyhow::Result<ExitCode> {
    if let Some(error) = taker.failure {
        return Err(error);
    }
    if taker.show_progress {
        eprint!("\r\x1b[2K");
    }
    let (summary, shown) = (taker.summary, taker.shown);
    let output = std::mem::replace(taker.output, Output::Jsonl(BufWriter::new(Box::new(io::sink()))));
    output.finish()?;
    if let (Some(path), Some(state)) = (&args.state, state) {
        save_state(path, state)?;
    }
    print_summary(&summary, args, shown, started.elapsed());
    Ok(if summary.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The mapping of a runtime format, from its flags (problems are collected).
fn stream_format(args: &ImportArgs, time: Option<Timestamp>, problems: &mut Vec<String>) -> Option<Arc<StreamFormat>> {
    let flows = matches!(args.format, ImportFormat::Hubble | ImportFormat::VpcFlow);
    let mut only = |flag: &str, given: bool, formats: &str, applies: bool| {
        if given && !applies {
            problems.push(format!("{flag} applies to {formats} only"));
        }
    };
    only("--segment-from", args.segment_from.is_some(), "hubble", args.format == ImportFormat::Hubble);
    only("--segments", args.segments.is_some(), "hubble and vpc-flow", flows);
    only("--window and --grace", args.window != "10m" || args.grace != "1m", "hubble and vpc-flow", flows);
    only(
        "--asset-pointer and --result-pointer",
        args.asset_pointer.is_some() || args.result_pointer.is_some(),
        "opa",
        args.format == ImportFormat::Opa,
    );
    only("--patch-from", args.patch_from.is_some(), "argo-rollouts", args.format == ImportFormat::ArgoRollouts);
    let kind = args.format.kind().ok()?;
    let resource_asset = match (&args.asset, args.asset_from) {
        _ if kind != StreamKind::PolicyReport => None,
        (Some(id), _) => Some(ResourceAsset::Fixed(id.trim().to_owned())),
        (None, Some(AssetFrom::Name)) => Some(ResourceAsset::Name),
        (None, Some(AssetFrom::Uid)) => Some(ResourceAsset::Uid),
        (None, Some(AssetFrom::NamespacedName)) => Some(ResourceAsset::NamespacedName),
        (None, Some(other)) => {
            problems.push(format!(
                "--asset-from {other:?} applies to scans; policy reports take name, uid or namespaced-name"
            ));
            return None;
        }
        (None, None) => None,
    };
    let options = StreamOptions {
        segment_from: args.segment_from.as_deref(),
        segments: args.segments.as_deref(),
        window: &args.window,
        grace: &args.grace,
        asset_pointer: args.asset_pointer.as_deref(),
        result_pointer: args.result_pointer.as_deref(),
        patch_from: args.patch_from.as_deref(),
        resource_asset,
        time,
    };
    match StreamFormat::from_options(kind, &options) {
        Ok(format) => Some(Arc::new(format)),
        Err(found) => {
            problems.extend(found);
            None
        }
    }
}

fn load_state(path: &PathBuf) -> anyhow::Result<ScanState> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a scan state file written by patchtrail import", path.display())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(ScanState::default()),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A new temporary file in the state file's directory: created afresh under
/// a random name (`O_EXCL`, never through a link someone planted), readable
/// by its owner only, renamed over the state file when complete.
fn state_file_beside(path: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".patchtrail-state-")
        .suffix(".tmp")
        .tempfile_in(directory)
        .with_context(|| format!("cannot write the scan state beside {} (--state)", path.display()))
}

/// Replaces the state file as a whole (a crash leaves the old one or the new one).
fn save_state(path: &Path, state: &ScanState) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).context("cannot serialize the scan state")?;
    let mut temporary = state_file_beside(path)?;
    temporary.write_all(&bytes).and_then(|()| temporary.as_file().sync_all()).context("cannot write the scan state")?;
    temporary.persist(path).map_err(|e| e.error).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
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
    for (reason, count) in &summary.merged {
        eprintln!("  {reason}: {count}");
    }
    for (reason, count) in &summary.ignored {
        eprintln!("  nothing to import: {reason}: {count}");
    }
}
