//! The command line (CONTRACT.md §4).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ingest::import::input::FileFormat;
use ingest::import::stream::StreamKind;

/// patchtrail measures patching as a zero-trust security control: time-to-patch
/// and SLA compliance, canary gates, micro-segmentation drift and post-patch
/// posture, computed in event time from Kafka into a Parquet lake, with SQL,
/// Prometheus metrics, a risk-ranked patch queue and OCSF alerts for SIEMs.
#[derive(Debug, Parser)]
#[command(name = "patchtrail", version, max_term_width = 100)]
pub struct Cli {
    /// Log format on standard error: `text` for people, `json` for log shippers.
    /// Filter with RUST_LOG (e.g. RUST_LOG=patchtrail=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// A TOML configuration file (see patchtrail.example.toml). Layers, lowest
    /// first: defaults, this file, PATCHTRAIL__SECTION__KEY environment
    /// variables, flags.
    #[arg(long, global = true, value_name = "FILE", env = "PATCHTRAIL_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a deterministic, realistic event stream of a zero-trust estate,
    /// with the expected results (`--truth`) to check a pipeline against.
    Simulate(SimulateArgs),
    /// Check a file of CloudEvents (one per line) against the event contract;
    /// prints each problem with its line and JSON path, exits 1 if any line is invalid.
    Validate(ValidateArgs),
    /// Convert what a real tool wrote into patchtrail's events, to a JSONL
    /// file, standard output or the input topics: intel (kev, epss, nvd),
    /// scans (trivy, grype), an inventory CSV (inventory), and the runtime
    /// sources, also from a raw topic (hubble, vpc-flow, opa, argo-rollouts,
    /// policy-report). Ids are derived from the records: importing twice adds
    /// nothing. Reports each record it skips with its position; exits 1 if any
    /// failed.
    Import(ImportArgs),
    /// See the whole system work on a simulated fleet, on this machine: an
    /// embedded Kafka broker, the simulated stream, the pipeline into a Parquet
    /// lake, the query server on 127.0.0.1:8080, and a summary of what the lake
    /// says. Serves until Ctrl-C (`--once`: exits after the summary).
    Demo(DemoArgs),
    /// Run one pipeline instance: consume the input topics in a Kafka consumer
    /// group, commit the rows to the lake exactly once, publish OCSF alerts,
    /// re-evaluation requests and dead letters. Start more instances with the
    /// same group to scale out; SIGTERM or Ctrl-C commits and stops.
    Run(RunArgs),
    /// Process a file of events into the lake, without Kafka: the same tasks,
    /// watermarks and commits as `run`. Re-running it on the same file changes
    /// nothing; a further file continues from the state the lake holds.
    Replay(ReplayArgs),
    /// Serve the committed lake over HTTP: read-only SQL (`POST /v1/sql`), the
    /// risk-ranked patch queue (`GET /v1/priorities?limit=N`), `/metrics`,
    /// `/healthz` and `/readyz`. New commits show within seconds.
    Serve(ServeArgs),
    /// Run one read-only SQL query against the committed lake. Tables show the
    /// latest revision of each row (`<table>_history` has all of them);
    /// `priorities` is the risk-ranked patch queue.
    Sql(SqlArgs),
    /// Look after a lake: publish committed epochs to its Delta tables, compact
    /// and vacuum them, or convert a lake of an earlier layout.
    #[command(subcommand)]
    Lake(LakeCommand),
    /// Check a configuration file, or show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Runs the queries `serve` hands it (internal: `serve` starts these).
    #[command(hide = true)]
    QueryWorker,
}

#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Append every committed epoch not yet in the Delta tables to them, and
    /// bring each revised table's current rows (`<table>`) up to date
    /// (`run` does this every `lake.publish_interval_secs`, `replay` at its
    /// end). Safe while `run` and `serve` are running.
    Publish(LakeArgs),
    /// Convert a lake of an earlier layout, in place: one whose revised tables
    /// kept every revision in `<table>/` (moved to `<table>_history/`, and
    /// `<table>/` rebuilt as the current rows), or one written before its
    /// tables were Delta tables (every epoch of its commit log published).
    /// Stop `run` first. Idempotent, and safe to run again after a crash.
    Migrate(LakeArgs),
    /// Merge each table's small files, per date, into files of about 64 MiB
    /// (Delta OPTIMIZE; the current rows need none, the publisher keeps them
    /// in 16 files). `run` does this every `lake.optimize_interval_secs`. Safe while `run`
    /// and `serve` are running: the merged-away files stay until `vacuum`
    /// deletes them.
    Optimize(LakeArgs),
    /// Delete the files `optimize` merged away, and the current rows a
    /// publication rewrote, more than `--retain-hours` ago (Delta VACUUM, lite: files a
    /// table removed, nothing else).
    Vacuum(VacuumArgs),
}

/// Which lake, and how long removed files stay.
#[derive(Debug, Args)]
pub struct VacuumArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Keep removed files this long, for readers that opened the lake before
    /// they were removed; 0 deletes them at once, for a lake nobody reads
    /// now [config: lake.vacuum_retain_hours].
    #[arg(long, value_name = "HOURS")]
    pub retain_hours: Option<u64>,
}

/// Which lake.
#[derive(Debug, Args)]
pub struct LakeArgs {
    /// The lake directory or s3:// URL [config: lake.location].
    #[arg(long, value_name = "DIR")]
    pub lake: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check FILE (with the PATCHTRAIL__… environment on top): every unknown
    /// key with its line, every wrong type or value out of range; exit 2 if any.
    Check {
        /// The TOML file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the effective configuration (defaults, `--config` file,
    /// environment) as TOML, secrets masked.
    Show,
}

/// The size and seed of a simulated fleet.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Assets in the inventory (cloud, on-premises and edge, a few unmanaged).
    #[arg(long, default_value_t = 2_000)]
    pub assets: u32,
    /// Days of events to generate.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Seed: the same seed and flags give byte-identical output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Start of the simulated window (RFC 3339).
    #[arg(long, default_value = "2026-11-01T00:00:00Z")]
    pub start: String,
    /// Where to write the events as JSONL; `-` for standard output.
    #[arg(long, value_name = "FILE.jsonl", required_unless_present = "brokers")]
    pub out: Option<PathBuf>,
    /// Kafka bootstrap servers to produce to instead of a file.
    #[arg(long, value_name = "LIST", conflicts_with = "out")]
    pub brokers: Option<String>,
    /// With --brokers: partitions of the input topics it creates when missing.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub partitions: i32,
    /// With --brokers: produce at most this many messages per second, a
    /// steady stream as a live fleet sends it (by default as fast as the
    /// broker takes them).
    #[arg(long, value_name = "PER_SEC", requires = "brokers")]
    pub rate: Option<u32>,
    /// Also write the expected results, computed by the simulator from its own
    /// generation (format: docs/truth.md).
    #[arg(long, value_name = "FILE.json")]
    pub truth: Option<PathBuf>,
    /// Share of output lines that are malformed (added lines; no event is lost).
    #[arg(long, default_value_t = 0.0)]
    pub malformed_ratio: f64,
    /// Chance that an event is delivered twice (same id), seconds to minutes apart.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_ratio: f64,
    /// Chance that an event is delivered out of order, 10 minutes to 6 hours late.
    #[arg(long, default_value_t = 0.0)]
    pub late_ratio: f64,
    /// Chance that a kind of traffic between two segments drifts from the
    /// intended policy in a given hour.
    #[arg(long, default_value_t = 0.03)]
    pub drift_ratio: f64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Exit after the summary instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
    /// Where the query server listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The lake directory (must not hold a lake yet); default: a new directory
    /// under the system's temporary directory, kept after the demo so you can
    /// query it.
    #[arg(long, value_name = "DIR")]
    pub lake: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The file to check, one CloudEvent per line; `-` for standard input.
    #[arg(value_name = "FILE.jsonl")]
    pub input: PathBuf,
    /// Print the problems of at most this many invalid lines (the summary counts them all).
    #[arg(long, default_value_t = 50)]
    pub max_errors: usize,
}

/// The formats `patchtrail import` reads (CONTRACT.md §7; docs/sources.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// CISA Known Exploited Vulnerabilities catalog JSON → vuln.kev.v1.
    Kev,
    /// FIRST EPSS daily CSV, plain or gzip → vuln.epss.v1.
    Epss,
    /// NVD CVE API 2.0 JSON (pages or single records) → vuln.intel.v1.
    Nvd,
    /// `trivy … -f json` report → vuln.finding.v1 (needs --asset or --asset-from).
    Trivy,
    /// `grype -o json` report → vuln.finding.v1 (needs --asset or --asset-from).
    Grype,
    /// CSV whose header names asset.inventory.v1 fields → asset.inventory.v1.
    Inventory,
    /// Cilium Hubble flows (`hubble observe -o json`, exporter files), one per
    /// line → flow.observation.v1 per window (needs --segment-from or --segments).
    Hubble,
    /// AWS VPC Flow Logs, version 2 default format → flow.observation.v1 per
    /// window (needs --segments).
    VpcFlow,
    /// OPA decision logs: console lines or the upload format's JSON arrays
    /// (plain or gzip) → policy.decision.v1 (needs --asset-pointer).
    Opa,
    /// Argo Rollouts AnalysisRuns, JSON or YAML, one, a list or a stream →
    /// canary.stage.v1 (needs --patch-from).
    ArgoRollouts,
    /// Kubernetes PolicyReport / ClusterPolicyReport, JSON or YAML →
    /// posture.assessment.v1 per resource (needs --asset or --asset-from).
    PolicyReport,
}

impl ImportFormat {
    /// What it is to the importers: a runtime format (which `--from-topic`
    /// can also read, a message being one line or object), or a document.
    pub fn kind(self) -> Result<StreamKind, FileFormat> {
        match self {
            ImportFormat::Hubble => Ok(StreamKind::Hubble),
            ImportFormat::VpcFlow => Ok(StreamKind::VpcFlow),
            ImportFormat::Opa => Ok(StreamKind::Opa),
            ImportFormat::ArgoRollouts => Ok(StreamKind::ArgoRollouts),
            ImportFormat::PolicyReport => Ok(StreamKind::PolicyReport),
            ImportFormat::Kev => Err(FileFormat::Kev),
            ImportFormat::Epss => Err(FileFormat::Epss),
            ImportFormat::Nvd => Err(FileFormat::Nvd),
            ImportFormat::Trivy => Err(FileFormat::Trivy),
            ImportFormat::Grype => Err(FileFormat::Grype),
            ImportFormat::Inventory => Err(FileFormat::Inventory),
        }
    }
}

/// Where a scan report's asset id comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AssetFrom {
    /// The scanned artifact as named on the command line of the scanner
    /// (Trivy `ArtifactName`, Grype `source.target.userInput`).
    Artifact,
    /// The image id, `sha256:…` (Trivy `Metadata.ImageID`, Grype `source.target.imageID`).
    ImageId,
    /// Policy reports: the resource's name.
    Name,
    /// Policy reports: the resource's uid.
    Uid,
    /// Policy reports: the resource's `namespace/name`.
    NamespacedName,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What wrote the input.
    #[arg(value_enum)]
    pub format: ImportFormat,
    /// Input files, in order; `-` (the default) reads standard input (hubble,
    /// vpc-flow and opa: line by line as it arrives, each event written as
    /// soon as it is complete; SIGTERM drains and exits).
    #[arg(value_name = "FILE", default_value = "-")]
    pub inputs: Vec<PathBuf>,
    /// Write the events here as JSONL (default: standard output).
    #[arg(long, value_name = "FILE.jsonl", conflicts_with = "brokers")]
    pub out: Option<PathBuf>,
    /// Produce the events to the input topics of this Kafka cluster instead,
    /// with the contract's keys ([kafka] and [topics] configuration apply).
    #[arg(long, value_name = "LIST")]
    pub brokers: Option<String>,
    /// With --brokers: partitions of the input topics it creates when missing.
    #[arg(long, value_name = "N", default_value_t = 4, requires = "brokers")]
    pub partitions: i32,
    /// Scans, policy reports: every record is about this asset.
    #[arg(long, value_name = "ID", conflicts_with = "asset_from")]
    pub asset: Option<String>,
    /// Scans, policy reports: take the asset id from the report
    /// (scans: artifact, image-id; policy reports: name, uid, namespaced-name).
    #[arg(long, value_enum, value_name = "FIELD")]
    pub asset_from: Option<AssetFrom>,
    /// hubble: an endpoint's segment is its Kubernetes `namespace`, or the
    /// value of one of its labels (`label:app` reads `k8s:app=reviews`).
    #[arg(long, value_name = "namespace|label:KEY")]
    pub segment_from: Option<String>,
    /// vpc-flow (required), hubble (endpoints the --segment-from rule does
    /// not name): a file of `CIDR SEGMENT` lines; the longest prefix holding
    /// an address names its segment (`0.0.0.0/0 internet` names the rest).
    #[arg(long, value_name = "FILE")]
    pub segments: Option<PathBuf>,
    /// hubble, vpc-flow: connections are counted per window of this width
    /// (`90s`, `10m`, `1h`).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub window: String,
    /// hubble, vpc-flow: a window closes when a sighting this much later
    /// than its end arrives (or at the end of the input); later sightings
    /// of it are counted as late and not imported.
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub grace: String,
    /// opa (required): JSON pointer to the asset id in each decision, e.g.
    /// `/input/attributes/source/address/socketAddress/address` (Envoy).
    #[arg(long, value_name = "POINTER")]
    pub asset_pointer: Option<String>,
    /// opa: JSON pointer into an object `result` to the decision
    /// (boolean, or `allow`/`deny`/`step_up`), e.g. `/allowed`.
    #[arg(long, value_name = "POINTER")]
    pub result_pointer: Option<String>,
    /// argo-rollouts (required): the annotation or label of the AnalysisRun
    /// that names the patch the rollout installs.
    #[arg(long, value_name = "annotation:KEY|label:KEY")]
    pub patch_from: Option<String>,
    /// Read raw records from this Kafka topic instead of files, one line or
    /// object per message, in a consumer group, until SIGTERM; offsets are
    /// committed only once the events they produced are acknowledged.
    #[arg(long, value_name = "TOPIC", requires = "brokers")]
    pub from_topic: Option<String>,
    /// With --from-topic: the consumer group.
    #[arg(long, value_name = "GROUP", default_value = "patchtrail-import", requires = "from_topic")]
    pub group: String,
    /// Scans: remember each asset's last scan in this JSON file, so a CVE
    /// missing from a later scan of the same asset becomes `fixed`.
    #[arg(long, value_name = "FILE.json")]
    pub state: Option<PathBuf>,
    /// The event time of records that carry none (an inventory CSV without
    /// a `time` column, a Grype report without `descriptor.timestamp`), RFC 3339.
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// Print at most this many skipped records (the summary counts them all).
    #[arg(long, default_value_t = 20)]
    pub max_errors: usize,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The events, one CloudEvent per line (invalid lines become dead letters).
    #[arg(long, value_name = "FILE.jsonl")]
    pub input: PathBuf,
    /// The lake: a directory (created if missing) [config: lake.location].
    #[arg(long, value_name = "DIR")]
    pub lake: Option<String>,
    /// Partitions per keyed topic: events are grouped into the tasks `run`
    /// would give them with topics of this many partitions.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Lines per epoch: every task commits after each this many lines (a
    /// crash loses at most one epoch of work, which the next run redoes).
    /// Small values write a lake the way `run` does over days, one small
    /// commit per task every few seconds (benches/lake.sh).
    #[arg(long, default_value_t = 1_000_000)]
    pub epoch_lines: u64,
    /// Also publish the committed epochs to the lake's Delta tables after
    /// every this many epochs, as `run`'s publisher does every few seconds
    /// (by default only at the end). The summary reports their cost.
    #[arg(long, value_name = "EPOCHS")]
    pub publish_every: Option<u64>,
}

/// Kafka connection flags shared by the commands that talk to a cluster.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Bootstrap servers, `host:port[,host:port...]` [config: kafka.brokers,
    /// default localhost:9092].
    #[arg(long, value_name = "LIST")]
    pub brokers: Option<String>,
    /// Extra librdkafka client property (SASL, TLS, timeouts), repeatable:
    /// `-X security.protocol=SASL_SSL` [config: kafka.properties].
    #[arg(short = 'X', long = "kafka-property", value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The lake: a local directory (or `file://` URL) [config: lake.location].
    #[arg(long, value_name = "URL")]
    pub lake: Option<String>,
    /// Consumer group; every instance of one deployment uses the same
    /// [config: kafka.group, default patchtrail].
    #[arg(long, value_name = "ID")]
    pub group: Option<String>,
    /// Exit 0 once everything that was in the input topics at start is
    /// committed to the lake (batch and backfill mode).
    #[arg(long)]
    pub stop_at_end: bool,
    /// Where to serve Prometheus metrics (`/metrics`) and `/healthz`, `/readyz`
    /// [config: pipeline.metrics_listen, default 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Commit an epoch at least this often [config: pipeline.commit_interval_ms, default 5000].
    #[arg(long, value_name = "MS")]
    pub commit_interval_ms: Option<u64>,
    /// Commit an epoch after this many messages, whatever the interval
    /// [config: pipeline.epoch_messages, default 500000].
    #[arg(long, value_name = "N")]
    pub epoch_messages: Option<u64>,
    /// Messages larger than this are dead letters [config:
    /// pipeline.max_message_bytes, default 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Pre-fetched messages librdkafka may hold per partition, in KiB: this
    /// bounds memory however large the lag [config: pipeline.fetch_buffer_kbytes, default 8192].
    #[arg(long, value_name = "KIB")]
    pub fetch_buffer_kbytes: Option<u32>,
    /// On SIGTERM or Ctrl-C, how long to wait for the last commit before
    /// giving up (a second signal exits at once; the commit log keeps that
    /// safe) [config: pipeline.shutdown_timeout_secs, default 30].
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Threads that apply a batch of messages, tasks of different partitions
    /// in parallel (0: one per core but one, which the lake writer takes)
    /// [config: pipeline.workers, default 0].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// A task that applies no event for this long has its watermark follow
    /// the wall clock minus the allowed lateness, so SLA and re-evaluation
    /// deadlines fire on quiet partitions; each move is a row of
    /// `clock_watermarks`. 0: event time only. Not with `--stop-at-end`,
    /// which ends on event time as `replay` does
    /// [config: processor.idle_timeout_secs, default 300].
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The lake directory [config: lake.location].
    #[arg(long, value_name = "DIR")]
    pub lake: Option<String>,
    /// Where to listen [config: server.listen, default 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// A file holding the bearer token every route but /healthz requires (a
    /// mounted secret) [config: auth.token_file; or the token itself in
    /// PATCHTRAIL__AUTH__TOKEN; none: no auth].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself. Visible to every local user in `ps`: prefer
    /// --token-file or PATCHTRAIL__AUTH__TOKEN [config: auth.token].
    #[arg(long)]
    pub token: Option<String>,
    /// A query running longer is stopped and answered 422 [config:
    /// server.query_timeout_secs, default 30].
    #[arg(long, value_name = "SECONDS")]
    pub query_timeout_secs: Option<u64>,
    /// DataFusion's memory pool of each running query (each query worker;
    /// at most `--max-concurrent-queries` run at once): a query needing
    /// more fails with a clear error [config: server.memory_limit_mib,
    /// default 1024].
    #[arg(long, value_name = "MIB")]
    pub memory_limit_mib: Option<usize>,
    /// Rows a JSON or CSV answer holds at most (`truncated` says when there
    /// were more) [config: server.max_rows, default 10000].
    #[arg(long, value_name = "N")]
    pub max_rows: Option<usize>,
    /// How often the commit log is checked for new epochs [config:
    /// server.refresh_ms, default 1000].
    #[arg(long, value_name = "MS")]
    pub refresh_ms: Option<u64>,
    /// Kafka bootstrap servers: publish the priority queue to the priorities
    /// topic (compacted, key `asset_id/cve_id`, a tombstone when a row leaves)
    /// [config: kafka.brokers with server.publish_priorities = true].
    #[arg(long, value_name = "LIST")]
    pub brokers: Option<String>,
    /// Extra librdkafka client property for `--brokers`, repeatable.
    #[arg(short = 'X', long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
    /// How often the priority queue is published [config:
    /// server.priorities_interval_secs, default 60].
    #[arg(long, value_name = "SECONDS")]
    pub priorities_interval_secs: Option<u64>,
    /// Queries running at once at most; past it a query is answered 503 with
    /// Retry-After [config: server.max_concurrent_queries, default 8].
    #[arg(long, value_name = "N")]
    pub max_concurrent_queries: Option<usize>,
    /// Time a connection has to send a request's headers, idle keep-alive
    /// time included, and then its body [config: server.header_timeout_secs, default 10].
    #[arg(long, value_name = "SECONDS")]
    pub header_timeout_secs: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The lake directory [config: lake.location].
    #[arg(long, value_name = "DIR")]
    pub lake: Option<String>,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Print to stderr how long opening the lake and running the query took
    /// (planning and execution, not printing).
    #[arg(long)]
    pub timing: bool,
    /// The query: SELECT, WITH, EXPLAIN, SHOW or DESCRIBE.
    #[arg(value_name = "SQL")]
    pub sql: String,
}

/// How query results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// A JSON array of objects, one per row.
    Json,
    /// CSV with a header line.
    Csv,
}
