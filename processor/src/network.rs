//! The network task: flow observations summed into `segment_drift` windows,
//! and the `SEGMENTATION_DRIFT` alert.
//!
//! Sums commute, so windows need no history; the alert waits until the
//! watermark closes its window, so the event that fires it (the earliest
//! drifting flow of the window) does not depend on arrival order.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};
use schemas::{FlowAction, FlowObservation, IntendedAction, Timestamp};

use crate::alerts::{self, Rule};
use crate::config::ProcessorConfig;
use crate::rows::{DriftRow, EpochRows, next_revision};
use crate::{Stamp, Trim};
use serde::{Deserialize, Serialize};

type WindowKey = (Timestamp, String, String);
type TupleKey = (Timestamp, String, String, u16);

#[derive(Default, Serialize, Deserialize)]
struct Window {
    connections: i64,
    drift_connections: i64,
    last_at: Timestamp,
    committed: Option<u64>,
    revision: i64,
}

/// State of one network task.
#[derive(Default, Serialize, Deserialize)]
pub struct NetworkState {
    windows: FxHashMap<WindowKey, Window>,
    #[serde(skip)]
    dirty: FxHashSet<WindowKey>,
    /// Intended-deny traffic that was allowed: earliest time and connections per tuple and window.
    allowed_denials: FxHashMap<TupleKey, (Timestamp, i64)>,
    /// (window end, tuple) of drift alerts waiting for their window to close.
    pending: BTreeSet<(Timestamp, TupleKey)>,
    fired: FxHashSet<TupleKey>,
    #[serde(skip)]
    alerts: Vec<crate::rows::AlertRow>,
}

impl NetworkState {
    /// Takes one `flow.observation.v1`.
    pub fn apply(&mut self, stamp: Stamp, flow: &FlowObservation, config: &ProcessorConfig) {
        let window_start = stamp.0.floor_to(config.drift_window_us);
        let key = (window_start, flow.src_segment.clone(), flow.dst_segment.clone());
        let window = self.windows.entry(key.clone()).or_default();
        let connections = flow.connections as i64;
        window.connections += connections;
        let intended = match flow.intended_action {
            IntendedAction::Allow => Some(FlowAction::Allow),
            IntendedAction::Deny => Some(FlowAction::Deny),
            IntendedAction::Unknown => None,
        };
        if intended.is_some_and(|intended| intended != flow.enforced_action) {
            window.drift_connections += connections;
        }
        window.last_at = window.last_at.max(stamp.0);
        self.dirty.insert(key);
        if flow.intended_action == IntendedAction::Deny && flow.enforced_action == FlowAction::Allow {
            let tuple = (window_start, flow.src_segment.clone(), flow.dst_segment.clone(), flow.dst_port);
            let entry = self.allowed_denials.entry(tuple.clone()).or_insert((stamp.0, 0));
            entry.0 = entry.0.min(stamp.0);
            entry.1 += connections;
            self.pending.insert((window_start.add_micros(config.drift_window_us), tuple));
        }
    }

    /// Fires the drift alerts of the windows the watermark has closed.
    pub fn advance(&mut self, watermark: Timestamp) {
        while let Some((window_end, _)) = self.pending.first() {
            if *window_end > watermark {
                break;
            }
            let Some((_, tuple)) = self.pending.pop_first() else { break };
            if !self.fired.insert(tuple.clone()) {
                continue;
            }
            let Some(&(at, connections)) = self.allowed_denials.get(&tuple) else { continue };
            let (window_start, src, dst, port) = &tuple;
            let entity = format!("{src}->{dst}:{port}");
            let discriminator = window_start.to_string();
            let title = format!("Traffic {src} → {dst} port {port} was allowed although the intended policy denies it");
            let finding = alerts::finding(Rule::SegmentationDrift, &entity, &discriminator, at, title)
                .with_connection(src, dst, *port)
                .with_unmapped(serde_json::json!({
                    "src_segment": src, "dst_segment": dst, "dst_port": port,
                    "window_start": discriminator, "connections": connections,
                }));
            self.alerts.push(alerts::row(Rule::SegmentationDrift, &entity, at, &finding));
        }
    }

    /// Gives back the spare capacity retention left (see [`Trim`]).
    pub fn trim(&mut self) {
        self.windows.trim();
        self.dirty.trim();
        self.allowed_denials.trim();
        self.fired.trim();
        self.alerts.trim();
    }

    /// Retention: forgets the windows that ended before `cutoff`, with their
    /// allowed denials and fired alerts (their rows stay in the lake). A flow
    /// of such a window is older than the cutoff, a dead letter, so no event
    /// can reach a forgotten window, and none is ever recreated.
    pub fn forget(&mut self, cutoff: Timestamp, config: &ProcessorConfig) -> usize {
        let before = self.windows.len();
        let ended = |start: Timestamp| start.add_micros(config.drift_window_us) < cutoff;
        self.windows.retain(|(start, _, _), _| !ended(*start));
        self.allowed_denials.retain(|(start, ..), _| !ended(*start));
        self.fired.retain(|(start, ..)| !ended(*start));
        self.pending.retain(|(_, (start, ..))| !ended(*start));
        before - self.windows.len()
    }

    /// Emits the changed windows and the fired alerts.
    pub fn flush(&mut self, out: &mut EpochRows) {
        let mut dirty: Vec<WindowKey> = self.dirty.drain().collect();
        dirty.sort_unstable();
        for key in dirty {
            let Some(window) = self.windows.get_mut(&key) else { continue };
            let row = DriftRow {
                window_start: key.0,
                src_segment: key.1.clone(),
                dst_segment: key.2.clone(),
                connections: window.connections,
                drift_connections: window.drift_connections,
                drift_ratio: window.drift_connections as f64 / window.connections.max(1) as f64,
                updated_at: window.last_at,
                revision: 0,
            };
            if let Some(row) = next_revision(&mut window.committed, &mut window.revision, row) {
                out.segment_drift.push(row);
            }
        }
        out.alerts.append(&mut self.alerts);
    }
}
