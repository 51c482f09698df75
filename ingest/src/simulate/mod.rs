//! The deterministic fleet simulator behind `patchtrail simulate`.
//!
//! [`fleet`] models the estate and yields valid events in event-time order;
//! this module delivers them as a producer would, with the faults a real
//! pipeline sees (late, duplicated and malformed messages), and keeps the
//! expected results ([`truth`]) as it goes. Faults draw from their own random
//! stream, so the same seed gives the same events and the same truth whatever
//! the fault ratios.

mod catalog;
mod fleet;
pub mod truth;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Write};

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use schemas::{CloudEvent, InputTopic, Timestamp};
use serde::Serialize;
use serde_json::Value;

use self::fleet::Fleet;
use self::truth::{LineCounts, Truth, TruthBuilder};

/// What to simulate.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioConfig {
    /// Managed and unmanaged assets in the inventory.
    pub assets: u32,
    /// Length of the simulated window.
    pub days: u32,
    /// Seed of every random choice: the same seed gives the same bytes.
    pub seed: u64,
    /// Start of the window.
    pub start: Timestamp,
    /// Share of output lines that are malformed (extra lines, never a lost event).
    pub malformed_ratio: f64,
    /// Chance that an event is delivered a second time, seconds to minutes later.
    pub duplicate_ratio: f64,
    /// Chance that an event (other than intel) is delivered 10 minutes to 6 hours late.
    pub late_ratio: f64,
    /// Chance that a kind of traffic between two segments drifts from the
    /// intended policy in a given hour.
    pub drift_ratio: f64,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            assets: 2_000,
            days: 30,
            seed: 1,
            start: Timestamp::parse_rfc3339("2026-11-01T00:00:00Z").unwrap_or_default(),
            malformed_ratio: 0.0,
            duplicate_ratio: 0.0,
            late_ratio: 0.0,
            drift_ratio: 0.03,
        }
    }
}

impl ScenarioConfig {
    /// Every problem with the configuration, as `flag: reason` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.assets == 0 {
            problems.push("--assets must be at least 1, got 0".to_owned());
        }
        if self.days == 0 || self.days > 3_650 {
            problems.push(format!("--days must be between 1 and 3650, got {}", self.days));
        }
        for (flag, value, max) in [
            ("--malformed-ratio", self.malformed_ratio, 0.5),
            ("--duplicate-ratio", self.duplicate_ratio, 1.0),
            ("--late-ratio", self.late_ratio, 1.0),
            ("--drift-ratio", self.drift_ratio, 1.0),
        ] {
            if !(0.0..=max).contains(&value) {
                problems.push(format!("{flag} must be between 0 and {max}, got {value}"));
            }
        }
        problems
    }
}

/// Why a line is in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// A valid event, delivered in order.
    Event,
    /// A valid event delivered after events that came after it.
    Late,
    /// A second delivery of an event already delivered.
    Duplicate,
    /// A line that fails validation.
    Malformed,
}

/// One message as a producer would send it.
#[derive(Clone, Debug)]
pub struct SimLine {
    /// The input topic its event type belongs to.
    pub topic: InputTopic,
    /// The message key: the event's subject (`kev/<cve>`, `epss/<cve>` for the one-feed intel types).
    pub key: String,
    /// The message value: one JSON line, without the newline.
    pub payload: Vec<u8>,
    /// Why it is here.
    pub kind: LineKind,
}

/// Something due at a time; equal times keep the order they were queued in.
/// Ordered by (time, sequence) only, so heaps of it pop deterministically.
struct Due<T, V> {
    at: T,
    seq: u64,
    value: V,
}

impl<T: Ord + Copy, V> PartialEq for Due<T, V> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T: Ord + Copy, V> Eq for Due<T, V> {}
impl<T: Ord + Copy, V> PartialOrd for Due<T, V> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord + Copy, V> Ord for Due<T, V> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Generates a scenario's messages in delivery order.
pub struct Simulator {
    config: ScenarioConfig,
    fleet: Fleet,
    faults: Pcg64Mcg,
    malformed_chance: f64,
    held: BinaryHeap<Reverse<Due<Timestamp, SimLine>>>,
    next_held: u64,
    ready: VecDeque<SimLine>,
    truth: Option<TruthBuilder>,
    counts: LineCounts,
}

const MINUTE_MICROS: i64 = 60_000_000;

impl Simulator {
    /// A simulator for `config`; with `keep_truth` it also folds the expected results.
    pub fn new(config: ScenarioConfig, keep_truth: bool) -> Self {
        let r = config.malformed_ratio.clamp(0.0, 0.5);
        Simulator {
            fleet: Fleet::new(&config),
            faults: Pcg64Mcg::seed_from_u64(config.seed ^ 0x5eed_fa17_5eed_fa17),
            // One malformed line per valid one with chance r/(1-r) makes r of all lines malformed.
            malformed_chance: r / (1.0 - r),
            held: BinaryHeap::new(),
            next_held: 0,
            ready: VecDeque::new(),
            truth: keep_truth.then(TruthBuilder::default),
            counts: LineCounts::default(),
            config,
        }
    }

    /// Lines written so far, by kind.
    pub fn counts(&self) -> LineCounts {
        self.counts
    }

    /// Fraction of the simulated window already generated.
    pub fn progress(&self) -> f64 {
        self.fleet.progress()
    }

    /// The next message, or `None` at the end of the scenario.
    pub fn next_line(&mut self) -> Option<SimLine> {
        let line = loop {
            if let Some(line) = self.ready.pop_front() {
                break line;
            }
            match self.fleet.next() {
                Some(event) => self.deliver(event),
                None => {
                    let Reverse(held) = self.held.pop()?;
                    self.ready.push_back(held.value);
                }
            }
        };
        self.counts.total += 1;
        match line.kind {
            LineKind::Event => self.counts.valid += 1,
            LineKind::Late => {
                self.counts.valid += 1;
                self.counts.late += 1;
            }
            LineKind::Duplicate => self.counts.duplicates += 1,
            LineKind::Malformed => self.counts.invalid += 1,
        }
        Some(line)
    }

    fn hold(&mut self, release_at: Timestamp, line: SimLine) {
        self.next_held += 1;
        self.held.push(Reverse(Due { at: release_at, seq: self.next_held, value: line }));
    }

    fn deliver(&mut self, event: CloudEvent) {
        while let Some(Reverse(held)) = self.held.peek()
            && held.at <= event.time
        {
            if let Some(Reverse(held)) = self.held.pop() {
                self.ready.push_back(held.value);
            }
        }
        if let Some(truth) = &mut self.truth {
            truth.observe(&event);
        }
        let topic = event.event_type().topic();
        // Serializing our own event types cannot fail.
        let mut payload = Vec::with_capacity(768);
        let _ = serde_json::to_writer(&mut payload, &event);
        let key = event.event_type().key(&event.subject).into_owned();
        let line = SimLine { topic, key: key.clone(), payload, kind: LineKind::Event };
        if self.faults.random::<f64>() < self.config.duplicate_ratio {
            let delay = self.faults.random_range(1_000_000..10 * MINUTE_MICROS);
            let copy = SimLine { kind: LineKind::Duplicate, ..line.clone() };
            self.hold(event.time.add_micros(delay), copy);
        }
        if self.faults.random::<f64>() < self.malformed_chance {
            let payload = self.malformed(&event);
            self.ready.push_back(SimLine { topic, key, payload, kind: LineKind::Malformed });
        }
        // Intel is a global catalog read before tasks process (DESIGN.md), so it is never late.
        if topic != InputTopic::Intel && self.faults.random::<f64>() < self.config.late_ratio {
            let delay = self.faults.random_range(10 * MINUTE_MICROS..360 * MINUTE_MICROS);
            self.hold(event.time.add_micros(delay), SimLine { kind: LineKind::Late, ..line });
        } else {
            self.ready.push_back(line);
        }
    }

    /// A damaged copy of `event`, of one of the kinds producers really send.
    /// Every kind is invalid by construction, and checked to be.
    fn malformed(&mut self, event: &CloudEvent) -> Vec<u8> {
        let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
        let subject_field = event.event_type().subject_field();
        let kind = self.faults.random_range(0..9);
        let damaged = match kind {
            0 => {
                let text = value.to_string();
                let cut = self.faults.random_range(1..text.len().max(2) - 1);
                return text.as_bytes()[..cut].to_vec();
            }
            1 => {
                // A byte that is not UTF-8 inside the id.
                let mut bytes = value.to_string().into_bytes();
                if let Some(idx) = bytes.windows(6).position(|w| w == b"\"id\":\"") {
                    bytes.insert(idx + 6, 0xff);
                }
                return bytes;
            }
            2 => {
                value["type"] = Value::from(format!("{}.beta", event.event_type().as_str()));
                value
            }
            3 => {
                if let Some(data) = value["data"].as_object_mut() {
                    data.remove(subject_field);
                }
                value
            }
            4 => {
                value["time"] = Value::from("2026-13-45 25:61");
                value
            }
            5 => {
                value["data"][subject_field] = Value::from(42);
                value
            }
            6 => {
                value["specversion"] = Value::from("0.3");
                value["id"] = Value::from("");
                value
            }
            7 => {
                value["data"] = Value::from("see attachment");
                value
            }
            _ => {
                let (field, bad) = match event.event_type() {
                    schemas::EventType::PostureAssessment => ("trust_score", Value::from(140)),
                    schemas::EventType::FlowObservation => ("dst_port", Value::from(70_000)),
                    schemas::EventType::VulnIntel => ("cvss_base", Value::from(11.2)),
                    schemas::EventType::VulnKev => ("date_added", Value::from("last week")),
                    schemas::EventType::VulnEpss => ("epss", Value::from(1.5)),
                    schemas::EventType::CanaryStage => ("stage", Value::from(-1)),
                    schemas::EventType::VulnFinding => ("status", Value::from("resolved")),
                    schemas::EventType::PatchDeployment => ("phase", Value::from("done")),
                    schemas::EventType::AssetInventory => ("environment", Value::from("mars")),
                    schemas::EventType::PolicyDecision => ("decision", Value::from("maybe")),
                    schemas::EventType::PatchRelease => ("fixes_cves", Value::from("CVE-2026-1")),
                };
                value["data"][field] = bad;
                value
            }
        };
        let bytes = damaged.to_string().into_bytes();
        if schemas::decode(&bytes).is_ok() {
            // Unreachable by construction; a truncated line is invalid whatever happens.
            return bytes[..bytes.len() / 2].to_vec();
        }
        bytes
    }

    /// Writes every line to `out` as JSONL, calling `progress` now and then
    /// with the counts so far and the fraction of the window done.
    ///
    /// Generation and the write system calls overlap: lines are gathered into
    /// 1 MiB chunks that a writer thread drains through a bounded channel, so
    /// a slow disk holds generation back instead of filling memory.
    pub fn write_jsonl(
        &mut self,
        mut out: impl Write + Send,
        mut progress: impl FnMut(LineCounts, f64),
    ) -> io::Result<LineCounts> {
        const CHUNK: usize = 1 << 20;
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::scope(|scope| {
            let writer = scope.spawn(move || -> io::Result<()> {
                for chunk in full_rx {
                    out.write_all(&chunk)?;
                    // The generator may have gone; a spare buffer is then simply dropped.
                    let _ = empty_tx.send(chunk);
                }
                out.flush()
            });
            let mut chunk = Vec::with_capacity(CHUNK + 4096);
            let mut send_failed = false;
            while let Some(line) = self.next_line() {
                chunk.extend_from_slice(&line.payload);
                chunk.push(b'\n');
                if chunk.len() >= CHUNK {
                    let next = empty_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK + 4096));
                    if full_tx.send(std::mem::replace(&mut chunk, next)).is_err() {
                        // The writer stopped on an error; it is reported below.
                        send_failed = true;
                        break;
                    }
                    chunk.clear();
                    progress(self.counts, self.progress());
                }
            }
            if !send_failed && !chunk.is_empty() {
                let _ = full_tx.send(chunk);
            }
            drop(full_tx);
            writer.join().unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")))
        })?;
        Ok(self.counts)
    }

    /// The expected results, once every line has been taken; `None` unless
    /// the simulator was created with `keep_truth`.
    pub fn truth(self) -> Option<Truth> {
        let scenario = serde_json::to_value(&self.config).unwrap_or(Value::Null);
        Some(self.truth?.finish(scenario, self.counts))
    }
}
