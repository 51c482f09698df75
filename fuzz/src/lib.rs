//! The fuzz targets: each takes arbitrary bytes the way patchtrail takes
//! them from the outside (a Kafka message, a file given to `import`, a
//! `--config` file and the environment) and checks what must hold for any
//! input, not only for the inputs we thought of:
//!
//! - nothing panics, overflows or loops (the instrumented build has
//!   overflow checks and debug assertions on);
//! - an event the decoder accepts encodes back to JSON that decodes to the
//!   same event;
//! - an event an importer emits passes the decoder's validation unchanged,
//!   so `import` never writes what `ingest` would dead-letter;
//! - a record an importer cannot convert is reported with its position;
//! - a configuration the loader accepts is written back by `config show`'s
//!   serializer to TOML that loads to the same configuration.
//!
//! `src/main.rs` runs a target under AFL++ (feature `afl`) or replays files
//! through it; `fuzz/run.sh` runs the campaigns; `tests/regressions.rs`
//! replays the seeds and every crash ever found, in CI.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ingest::import::hubble::SegmentRule;
use ingest::import::k8s::MetaField;
use ingest::import::policy_report::ResourceAsset;
use ingest::import::scan::{AssetRule, ScanOptions, ScanState};
use ingest::import::segments::Segments;
use ingest::import::stream::{Converter, StreamFormat};
use ingest::import::{Record, epss, inventory, kev, nvd, scan};
use schemas::{CloudEvent, Timestamp};

/// A fuzz target: one front end of patchtrail that takes outside bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `schemas::decode`: a Kafka message on an input topic.
    Decode,
    /// `Config::from_text`: a TOML file, then after a NUL byte
    /// `PATCHTRAIL__…=value` lines as the environment.
    Config,
    /// `import kev`.
    Kev,
    /// `import nvd`.
    Nvd,
    /// `import epss` (gzip detected).
    Epss,
    /// `import trivy`.
    Trivy,
    /// `import grype`.
    Grype,
    /// `import inventory`.
    Inventory,
    /// `import hubble`, line by line through the flow windows.
    Hubble,
    /// `import vpc-flow`, line by line through the flow windows.
    VpcFlow,
    /// `import opa`, line by line.
    Opa,
    /// `import argo-rollouts`.
    ArgoRollouts,
    /// `import policy-report`.
    PolicyReport,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 13] = [
        Target::Decode,
        Target::Config,
        Target::Kev,
        Target::Nvd,
        Target::Epss,
        Target::Trivy,
        Target::Grype,
        Target::Inventory,
        Target::Hubble,
        Target::VpcFlow,
        Target::Opa,
        Target::ArgoRollouts,
        Target::PolicyReport,
    ];

    /// Its name on the command line and in `fuzz/` paths.
    pub fn name(self) -> &'static str {
        match self {
            Target::Decode => "decode",
            Target::Config => "config",
            Target::Kev => "kev",
            Target::Nvd => "nvd",
            Target::Epss => "epss",
            Target::Trivy => "trivy",
            Target::Grype => "grype",
            Target::Inventory => "inventory",
            Target::Hubble => "hubble",
            Target::VpcFlow => "vpc-flow",
            Target::Opa => "opa",
            Target::ArgoRollouts => "argo-rollouts",
            Target::PolicyReport => "policy-report",
        }
    }

    /// The target of a name.
    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|target| target.name() == name)
    }

    /// The real files its corpus starts from: the samples of
    /// `tests/data/formats/` (a copy of `../shared/formats/`), and
    /// `fuzz/seeds/<target>/` for inputs no sample has.
    pub fn seeds(self) -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let formats = root.join("../tests/data/formats");
        let samples: &[&str] = match self {
            Target::Decode | Target::Inventory | Target::VpcFlow | Target::Config => &[],
            Target::Kev => &["kev"],
            Target::Nvd => &["nvd"],
            Target::Epss => &["epss"],
            Target::Trivy => &["trivy"],
            Target::Grype => &["grype"],
            Target::Hubble => &["hubble"],
            Target::Opa => &["opa"],
            Target::ArgoRollouts => &["argo-rollouts"],
            Target::PolicyReport => &["posture"],
        };
        let mut files: Vec<PathBuf> = samples.iter().flat_map(|dir| files_in(&formats.join(dir))).collect();
        if self == Target::PolicyReport {
            files.retain(|file| file.extension().is_some_and(|e| e == "yaml"));
        }
        if self == Target::Config {
            files.push(root.join("../patchtrail.example.toml"));
        }
        files.extend(files_in(&root.join("seeds").join(self.name())));
        files
    }

    /// The inputs that once made it fail (`fuzz/regressions/<target>/`).
    pub fn regressions(self) -> Vec<PathBuf> {
        files_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions").join(self.name()))
    }

    /// Runs the target on one input; panics when something that must hold does not.
    pub fn run(self, bytes: &[u8]) {
        match self {
            Target::Decode => decode(bytes),
            Target::Config => config(bytes),
            Target::Kev => check_all(kev::convert(bytes)),
            Target::Nvd => check_all(nvd::convert(bytes)),
            Target::Epss => {
                if let Ok(reader) = epss::maybe_gunzip(Cursor::new(bytes)) {
                    epss::convert(reader, check);
                }
            }
            Target::Trivy | Target::Grype => {
                let options = ScanOptions { asset: AssetRule::Artifact, scanned_at: Some(fixed_time()) };
                let convert = if self == Target::Trivy { scan::convert_trivy } else { scan::convert_grype };
                // Without state, then twice with it: the second scan decides
                // what the first one's findings became.
                check_all(convert(bytes, &options, None));
                let mut state = ScanState::default();
                check_all(convert(bytes, &options, Some(&mut state)));
                check_all(convert(bytes, &options, Some(&mut state)));
            }
            Target::Inventory => inventory::convert(bytes, Some(fixed_time()), check),
            Target::Hubble => stream(
                StreamFormat::Hubble {
                    segment: SegmentRule::parse("namespace"),
                    segments: Segments::parse("10.0.0.0/8 internal\nfe80::/10 link-local\n").ok(),
                    window_us: 600_000_000,
                    grace_us: 60_000_000,
                },
                bytes,
            ),
            Target::VpcFlow => stream(
                StreamFormat::VpcFlow {
                    segments: Segments::parse("10.0.1.0/24 web\n10.0.2.0/24 db\n0.0.0.0/0 internet\n")
                        .expect("a valid segment file"),
                    window_us: 600_000_000,
                    grace_us: 0,
                },
                bytes,
            ),
            Target::Opa => stream(
                StreamFormat::Opa {
                    asset_pointer: "/input/attributes/source/address/socketAddress/address".to_owned(),
                    result_pointer: None,
                },
                bytes,
            ),
            Target::ArgoRollouts => stream(
                StreamFormat::ArgoRollouts {
                    patch_from: MetaField::parse("label:rollouts-pod-template-hash").expect("a valid rule"),
                },
                bytes,
            ),
            Target::PolicyReport => {
                stream(StreamFormat::PolicyReport { asset: ResourceAsset::NamespacedName, time: None }, bytes)
            }
        }
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn fixed_time() -> Timestamp {
    Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").expect("a valid time")
}

/// An accepted event survives encoding: what `import` and `validate` write
/// is read back the same by `ingest`.
fn round_trips(event: &CloudEvent) {
    let json = serde_json::to_vec(event).expect("an event encodes");
    match schemas::decode(&json) {
        Ok(again) => assert_eq!(&again, event, "the event changed through JSON: {}", String::from_utf8_lossy(&json)),
        Err(invalid) => {
            panic!("an event encoded to JSON the decoder rejects ({invalid:?}): {}", String::from_utf8_lossy(&json))
        }
    }
}

fn decode(bytes: &[u8]) {
    if let Ok(event) = schemas::decode(bytes) {
        round_trips(&event);
    }
}

fn check(record: Record) {
    match record {
        Record::Event(event) => round_trips(&event),
        Record::Failed { position, reason } => {
            assert!(!reason.is_empty(), "a failed record without a reason at {position:?}");
        }
        Record::Ignored { .. } | Record::Merged { .. } => {}
    }
}

fn check_all(records: Vec<Record>) {
    records.into_iter().for_each(check);
}

/// A runtime format fed as `import FORMAT FILE` feeds it: line by line for
/// line formats, else the whole document; then end of input.
fn stream(format: StreamFormat, bytes: &[u8]) {
    let format = Arc::new(format);
    let mut converter = Converter::new(format.clone(), String::new(), None);
    let mut sink = check;
    if format.reads_lines() {
        for (number, line) in bytes.split(|b| *b == b'\n').enumerate() {
            converter.record(&|| format!("line {}", number + 1), line, 0, &mut sink);
        }
    } else {
        converter.record(&String::new, bytes, 0, &mut sink);
    }
    converter.finish(&mut sink);
}

/// The TOML text, then (after a NUL) `NAME=value` lines as the environment,
/// through the binary's loader (`schemas::layers`, with `Config`'s layers)
/// into a tree of ingest's real sections and stand-ins of the same shapes
/// for the sections of the crates that build DataFusion.
fn config(bytes: &[u8]) {
    let (text, env) = match bytes.iter().position(|b| *b == 0) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let spec = schemas::layers::Spec {
        env_prefix: "PATCHTRAIL__",
        maps: &[("kafka", "properties")],
        hidden_keys: &["auth", "auth.token"],
    };
    let checks = |tree: &tree::Tree| [tree.kafka.problems(), tree.pipeline.problems()].concat();
    let Ok(config) = schemas::layers::load(Some(("fuzz.toml", text)), env, &spec, checks) else { return };
    let shown = toml::to_string(&config).expect("an accepted configuration serializes");
    match schemas::layers::load(Some(("shown.toml", &shown)), Vec::new(), &spec, checks) {
        Ok(again) => assert_eq!(again, config, "the configuration changed through TOML:\n{shown}"),
        Err(problems) => panic!("an accepted configuration, written back, is refused: {problems:?}\n{shown}"),
    }
}

mod tree {
    //! The configuration tree the config target loads.

    use serde::{Deserialize, Serialize};

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    pub(super) struct Tree {
        pub kafka: ingest::config::KafkaConfig,
        pub topics: ingest::kafka::TopicNames,
        pub pipeline: ingest::config::PipelineConfig,
        pub lake: Lake,
        pub processor: Processor,
        pub sla: Sla,
        pub auth: Auth,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    pub(super) struct Lake {
        location: String,
        publish_interval_secs: u64,
        vacuum_retain_hours: u64,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    pub(super) struct Processor {
        allowed_lateness_secs: u64,
        idle_timeout_secs: u64,
        settled_retention_days: u32,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    pub(super) struct Sla {
        critical_days: u32,
        high_days: u32,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    pub(super) struct Auth {
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    }
}
