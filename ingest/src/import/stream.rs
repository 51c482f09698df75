//! The runtime sources, record by record: a converter takes one line (or
//! one Kafka message, or one whole document) at a time and emits events as
//! they are ready, so that `import FORMAT -` and `import --from-topic` run
//! for days in bounded memory. Flow sources hold their open windows
//! ([`FlowWindows`]); the others hold nothing.

use std::sync::Arc;

use serde_json::Value;

use super::flows::{FlowWindows, Line};
use super::hubble::{self, SegmentRule};
use super::k8s::{self, MetaField};
use super::policy_report::{self, ResourceAsset};
use super::segments::Segments;
use super::{Record, argo, opa, vpc};
use schemas::Timestamp;

/// A place inside a record (`line 3 item 2`; `document 1` for a file).
fn within(position: &dyn Fn() -> String, inner: &str) -> String {
    let outer = position();
    match (outer.is_empty(), inner.is_empty()) {
        (true, true) => "the document".to_owned(),
        (true, false) => inner.to_owned(),
        (false, true) => outer,
        (false, false) => format!("{outer} {inner}"),
    }
}

/// A runtime format and its mapping options.
#[derive(Debug)]
#[allow(missing_docs)] // The fields are the flags of the same names (`src/cli.rs`).
pub enum StreamFormat {
    /// Cilium Hubble flows.
    Hubble { segment: Option<SegmentRule>, segments: Option<Segments>, window_us: i64, grace_us: i64 },
    /// AWS VPC Flow Log records.
    VpcFlow { segments: Segments, window_us: i64, grace_us: i64 },
    /// OPA decision logs.
    Opa { asset_pointer: String, result_pointer: Option<String> },
    /// Argo Rollouts AnalysisRuns.
    ArgoRollouts { patch_from: MetaField },
    /// Kubernetes policy reports.
    PolicyReport { asset: ResourceAsset, time: Option<Timestamp> },
}

impl StreamFormat {
    /// Whether a record is a line (else a whole document).
    pub fn reads_lines(&self) -> bool {
        matches!(self, StreamFormat::Hubble { .. } | StreamFormat::VpcFlow { .. } | StreamFormat::Opa { .. })
    }
}

/// Which runtime format, before its options are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `hubble`.
    Hubble,
    /// `vpc-flow`.
    VpcFlow,
    /// `opa`.
    Opa,
    /// `argo-rollouts`.
    ArgoRollouts,
    /// `policy-report`.
    PolicyReport,
}

/// A runtime format's options as the user wrote them (the flags of the
/// same names): [`StreamFormat::from_options`] reads and checks them.
#[derive(Debug, Default)]
pub struct StreamOptions<'a> {
    /// `--segment-from namespace|label:KEY`.
    pub segment_from: Option<&'a str>,
    /// `--segments FILE`: a CIDR file.
    pub segments: Option<&'a std::path::Path>,
    /// `--window`, a duration.
    pub window: &'a str,
    /// `--grace`, a duration.
    pub grace: &'a str,
    /// `--asset-pointer`, a JSON pointer.
    pub asset_pointer: Option<&'a str>,
    /// `--result-pointer`, a JSON pointer.
    pub result_pointer: Option<&'a str>,
    /// `--patch-from annotation:KEY|label:KEY`.
    pub patch_from: Option<&'a str>,
    /// `--asset` or `--asset-from` of a policy report.
    pub resource_asset: Option<ResourceAsset>,
    /// `--time`.
    pub time: Option<Timestamp>,
}

impl StreamFormat {
    /// The format of `kind` with `options`, or every problem with them.
    pub fn from_options(kind: StreamKind, options: &StreamOptions<'_>) -> Result<StreamFormat, Vec<String>> {
        let mut problems = Vec::new();
        let duration = |flag: &str, text: &str, problems: &mut Vec<String>| match super::flows::parse_duration(text) {
            Some(us) if us > 0 || flag == "--grace" => us,
            _ => {
                problems.push(format!("{flag} must be a duration such as 90s, 10m or 1h, got {text:?}"));
                0
            }
        };
        let segments = match options.segments {
            None => None,
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => match Segments::parse(&text) {
                    Ok(segments) => Some(segments),
                    Err(error) => {
                        problems.push(format!("--segments {}: {error}", path.display()));
                        None
                    }
                },
                Err(error) => {
                    problems.push(format!("--segments: cannot read {}: {error}", path.display()));
                    None
                }
            },
        };
        let pointer = |flag: &str, text: Option<&str>, problems: &mut Vec<String>| match text {
            Some(text) if !text.starts_with('/') => {
                problems.push(format!("{flag} must be a JSON pointer starting with /, got {text:?}"));
                None
            }
            other => other.map(str::to_owned),
        };
        let format = match kind {
            StreamKind::Hubble => {
                let segment = options.segment_from.and_then(|text| {
                    let rule = SegmentRule::parse(text);
                    if rule.is_none() {
                        problems.push(format!("--segment-from must be namespace or label:KEY, got {text:?}"));
                    }
                    rule
                });
                if options.segment_from.is_none() && options.segments.is_none() {
                    problems.push(
                        "a Hubble flow names no segment: say how with --segment-from namespace|label:KEY, and/or --segments FILE"
                            .to_owned(),
                    );
                }
                StreamFormat::Hubble {
                    segment,
                    segments,
                    window_us: duration("--window", options.window, &mut problems),
                    grace_us: duration("--grace", options.grace, &mut problems),
                }
            }
            StreamKind::VpcFlow => {
                if options.segments.is_none() {
                    problems.push(
                        "VPC flow records name addresses, not segments: give --segments FILE (CIDR SEGMENT lines)"
                            .to_owned(),
                    );
                }
                StreamFormat::VpcFlow {
                    segments: segments.unwrap_or_default(),
                    window_us: duration("--window", options.window, &mut problems),
                    grace_us: duration("--grace", options.grace, &mut problems),
                }
            }
            StreamKind::Opa => {
                let asset_pointer = pointer("--asset-pointer", options.asset_pointer, &mut problems);
                let result_pointer = pointer("--result-pointer", options.result_pointer, &mut problems);
                if options.asset_pointer.is_none() {
                    problems.push(
                        "an OPA decision names no device: give --asset-pointer, a JSON pointer into the decision \
                         (e.g. /input/attributes/source/address/socketAddress/address)"
                            .to_owned(),
                    );
                }
                StreamFormat::Opa { asset_pointer: asset_pointer.unwrap_or_default(), result_pointer }
            }
            StreamKind::ArgoRollouts => {
                let patch_from = options.patch_from.and_then(MetaField::parse);
                if patch_from.is_none() {
                    problems.push(
                        "an AnalysisRun names no patch: give --patch-from annotation:KEY or label:KEY \
                         (e.g. label:rollouts-pod-template-hash)"
                            .to_owned(),
                    );
                }
                StreamFormat::ArgoRollouts { patch_from: patch_from.unwrap_or(MetaField::Label(String::new())) }
            }
            StreamKind::PolicyReport => match options.resource_asset.clone() {
                Some(asset) => StreamFormat::PolicyReport { asset, time: options.time },
                None => {
                    problems.push(
                        "a policy report's resource is not an asset id: say which with --asset ID or \
                         --asset-from name|uid|namespaced-name"
                            .to_owned(),
                    );
                    StreamFormat::PolicyReport { asset: ResourceAsset::Name, time: options.time }
                }
            },
        };
        if problems.is_empty() { Ok(format) } else { Err(problems) }
    }
}

/// One input's converter (a file, standard input, or one partition).
pub struct Converter {
    format: Arc<StreamFormat>,
    windows: Option<FlowWindows>,
    /// The field order of VPC flow records: the default format's until a
    /// header names another.
    vpc_layout: vpc::Layout,
}

impl Converter {
    /// A converter; `tag` distinguishes the ids of flow windows aggregated
    /// apart (a partition), `watermark` resumes a partition's windows.
    pub fn new(format: Arc<StreamFormat>, tag: String, watermark: Option<Timestamp>) -> Converter {
        let windows = match &*format {
            StreamFormat::Hubble { window_us, grace_us, .. } => {
                Some(FlowWindows::new("hubble", hubble::SOURCE, *window_us, *grace_us).resume(tag, watermark))
            }
            StreamFormat::VpcFlow { window_us, grace_us, .. } => {
                Some(FlowWindows::new("vpc-flow", vpc::SOURCE, *window_us, *grace_us).resume(tag, watermark))
            }
            _ => None,
        };
        Converter { format, windows, vpc_layout: vpc::Layout::default() }
    }

    /// The open flow windows, if this is a flow source.
    pub fn windows(&self) -> Option<&FlowWindows> {
        self.windows.as_ref()
    }

    /// Takes one record: a line of a line format (without its newline), a
    /// whole document otherwise. `position` names it in error reports;
    /// `offset` is its Kafka offset (0 for files).
    pub fn record(&mut self, position: &dyn Fn() -> String, bytes: &[u8], offset: i64, sink: &mut dyn FnMut(Record)) {
        let flow = match &*self.format {
            StreamFormat::Hubble { segment, segments, .. } => {
                let trimmed = bytes.trim_ascii();
                if trimmed.is_empty() {
                    return;
                }
                hubble::convert(trimmed, &hubble::Options { segment: segment.as_ref(), segments: segments.as_ref() })
            }
            StreamFormat::VpcFlow { segments, .. } => match std::str::from_utf8(bytes) {
                Ok(line) if line.trim().is_empty() => return,
                Ok(line) => match vpc::Layout::from_header(line) {
                    Some(Ok(layout)) => {
                        self.vpc_layout = layout;
                        Line::Ignored("header lines")
                    }
                    Some(Err(reason)) => Line::Failed(reason),
                    None => vpc::convert(line, segments, &self.vpc_layout),
                },
                Err(_) => Line::Failed("not UTF-8 text".to_owned()),
            },
            StreamFormat::Opa { asset_pointer, result_pointer } => {
                let trimmed = bytes.trim_ascii();
                if trimmed.is_empty() {
                    return;
                }
                let options = opa::Options { asset: asset_pointer, result: result_pointer.as_deref() };
                match serde_json::from_slice::<Value>(trimmed) {
                    Ok(Value::Array(decisions)) => {
                        for (idx, decision) in decisions.iter().enumerate() {
                            sink(opa::convert(within(position, &format!("item {}", idx + 1)), decision, &options));
                        }
                    }
                    Ok(decision) => sink(opa::convert(position(), &decision, &options)),
                    Err(error) => sink(Record::failed(within(position, ""), format!("not JSON: {error}"))),
                }
                return;
            }
            StreamFormat::ArgoRollouts { patch_from } => {
                match k8s::objects(bytes) {
                    Ok(objects) => {
                        for (at, object) in objects {
                            sink(argo::convert(within(position, &at), &object, patch_from));
                        }
                    }
                    Err(error) => sink(Record::failed(within(position, ""), error)),
                }
                return;
            }
            StreamFormat::PolicyReport { asset, time } => {
                match k8s::objects(bytes) {
                    Ok(objects) => {
                        for (at, object) in objects {
                            policy_report::convert(within(position, &at), &object, asset, *time)
                                .into_iter()
                                .for_each(&mut *sink);
                        }
                    }
                    Err(error) => sink(Record::failed(within(position, ""), error)),
                }
                return;
            }
        };
        match flow {
            Line::Sighting(sighting) => {
                let windows = self.windows.as_mut().expect("flow formats hold windows");
                let observed = windows.observe(sighting, offset, sink);
                sink(observed.record());
            }
            Line::Ignored(reason) => sink(Record::Ignored { position: String::new(), reason }),
            Line::Failed(reason) => sink(Record::failed(position(), reason)),
        }
    }

    /// End of input (or a drain on SIGTERM): emits every open window.
    pub fn finish(&mut self, sink: &mut dyn FnMut(Record)) {
        if let Some(windows) = &mut self.windows {
            windows.finish(sink);
        }
    }
}
