//! `patchtrail import FORMAT`: what a real tool wrote, as patchtrail's events
//! (CONTRACT.md §7), to JSONL or to the input topics. The conversions are in
//! `ingest::import`; this is the command around them: inputs, outputs,
//! the scan state file, progress and the summary.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use ingest::import::policy_report::ResourceAsset;
use ingest::import::scan::{AssetRule, ScanOptions, ScanState};
use ingest::import::stream::{Converter, StreamFormat, StreamKind, StreamOptions};
use ingest::import::topic::{OutputError, Sink};
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
    if args.from_topic.is_some() && !args.format.streams() {
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
        let name = if input.as_os_str() == "-" { "standard input".to_owned() } else { input.display().to_string() };
        let reader = open(input).with_context(|| format!("cannot open {name}"))?;
        taker.last_progress = Instant::now();
        if let Some(format) = &stream_format {
            let mut reader = epss::maybe_gunzip(reader).with_context(|| format!("cannot read {name}"))?;
            let mut converter = Converter::new(format.clone(), String::new(), None);
            let array = matches!(**format, StreamFormat::Opa { .. })
                && reader.fill_buf().map(|head| head.trim_ascii_start().starts_with(b"[")).unwrap_or(false);
            if format.reads_lines() && !array {
                read_lines(reader, &name, &mut converter, &mut taker, &stop)?;
            } else {
                let document = read_all(reader).with_context(|| format!("cannot read {name}"))?;
                converter.record(&|| "".to_owned(), &document, 0, &mut |record| taker.take(&name, record));
            }
            converter.finish(&mut |record| taker.take(&name, record));
        } else {
            match args.format {
                ImportFormat::Epss => {
                    epss::convert(epss::maybe_gunzip(reader)?, |record| taker.take(&name, record));
                }
                ImportFormat::Inventory => inventory::convert(reader, time, |record| taker.take(&name, record)),
                document_format => {
                    let document = read_all(reader).with_context(|| format!("cannot read {name}"))?;
                    let records = match document_format {
                        ImportFormat::Kev => kev::convert(&document),
                        ImportFormat::Nvd => nvd::convert(&document),
                        ImportFormat::Trivy => scan::convert_trivy(&document, &options, state.as_mut()),
                        _ => scan::convert_grype(&document, &options, state.as_mut()),
                    };
                    records.into_iter().for_each(|record| taker.take(&name, record));
                }
            }
        }
        if let Some(error) = taker.failure.take() {
            return Err(error.context(format!("while importing {name}")));
        }
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
    let kind = match args.format {
        ImportFormat::Hubble => StreamKind::Hubble,
        ImportFormat::VpcFlow => StreamKind::VpcFlow,
        ImportFormat::Opa => StreamKind::Opa,
        ImportFormat::ArgoRollouts => StreamKind::ArgoRollouts,
        ImportFormat::PolicyReport => StreamKind::PolicyReport,
        _ => return None,
    };
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

/// Reads whole lines in blocks of up to about 64 KiB, on a thread of its
/// own, so that a quiet pipe never keeps the importer from seeing a stop
/// signal or from flushing what it wrote. A block ends early when the
/// input has nothing more right now.
fn spawn_reader(reader: Box<dyn BufRead + Send>) -> anyhow::Result<Receiver<io::Result<Vec<u8>>>> {
    // A buffer of our own, to see when the input has nothing more right now.
    let mut reader = io::BufReader::with_capacity(1 << 16, reader);
    let (blocks, received): (SyncSender<io::Result<Vec<u8>>>, _) = std::sync::mpsc::sync_channel(16);
    // Never joined: after a stop it may stay blocked on a quiet pipe until the process exits.
    std::thread::Builder::new()
        .name("import-reader".to_owned())
        .spawn(move || {
            loop {
                let mut block = Vec::with_capacity(1 << 16);
                loop {
                    match reader.read_until(b'\n', &mut block) {
                        Ok(0) => {
                            if !block.is_empty() {
                                let _ = blocks.send(Ok(block));
                            }
                            return;
                        }
                        Ok(_) if block.len() >= 1 << 16 || reader.buffer().is_empty() => break,
                        Ok(_) => {}
                        Err(error) => {
                            let _ = blocks.send(Err(error));
                            return;
                        }
                    }
                }
                if blocks.send(Ok(block)).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the reader thread")?;
    Ok(received)
}

/// Converts a line input as it arrives, flushing the output whenever the
/// input has nothing more right now, until its end or a stop signal (a
/// drain: the caller then writes the open windows).
fn read_lines(
    reader: Box<dyn BufRead + Send>,
    name: &str,
    converter: &mut Converter,
    taker: &mut Taker<'_>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let blocks = spawn_reader(reader)?;
    let mut line_number = 0u64;
    loop {
        let block = match blocks.try_recv() {
            Ok(block) => block,
            Err(TryRecvError::Disconnected) => return Ok(()),
            Err(TryRecvError::Empty) => {
                taker.output.flush_now()?;
                match blocks.recv_timeout(Duration::from_millis(200)) {
                    Ok(block) => block,
                    Err(RecvTimeoutError::Timeout) if stop.is_cancelled() => break,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
            }
        };
        let block = block.with_context(|| format!("cannot read {name} after line {line_number}"))?;
        for line in block.split(|b| *b == b'\n') {
            line_number += 1;
            let at = line_number;
            converter.record(&|| format!("line {at}"), line, 0, &mut |record| taker.take(name, record));
        }
        // The split counts one empty piece after the block's last newline.
        if block.ends_with(b"\n") {
            line_number -= 1;
        }
        if let Some(error) = taker.failure.take() {
            return Err(error);
        }
        if stop.is_cancelled() {
            break;
        }
    }
    eprintln!("stop requested: writing the open windows and exiting");
    Ok(())
}

fn open(input: &Path) -> io::Result<Box<dyn Read + Send>> {
    if input.as_os_str() == "-" { Ok(Box::new(io::stdin())) } else { Ok(Box::new(File::open(input)?)) }
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
    for (reason, count) in &summary.merged {
        eprintln!("  {reason}: {count}");
    }
    for (reason, count) in &summary.ignored {
        eprintln!("  nothing to import: {reason}: {count}");
    }
}
