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

/// One input's converter (a file, standard input, or one partition).
pub struct Converter {
    format: Arc<StreamFormat>,
    windows: Option<FlowWindows>,
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
        Converter { format, windows }
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
                Ok(line) => vpc::convert(line, segments),
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
