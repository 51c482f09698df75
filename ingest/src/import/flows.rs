//! Flow sightings (Hubble observations, VPC Flow Log records) counted as
//! connections in event-time windows → `flow.observation.v1`.
//!
//! A source sees packets, or traffic over a capture window, not
//! connections: Hubble emits an event at every observation point of a
//! flow, replies included; a VPC record sums one 5-tuple's packets over a
//! capture window, once per network interface it crossed. What is counted:
//! **a connection is a distinct 5-tuple (source address, source port,
//! destination address, destination port, protocol) seen in a window**,
//! replies excluded (Hubble's `is_reply`; for VPC records, a tuple whose
//! reverse was already counted in the window). It is counted once per
//! window it is seen in, under the segments and actions of its first
//! sighting there. One event is written per window and (source segment,
//! destination segment, destination port, protocol, enforced action,
//! intended action, enforcement mode), timed at its first sighting.
//!
//! Windows close in event time: when the latest sighting is `grace` past a
//! window's end, or at the end of the input. A sighting of a closed window
//! is late: counted in the summary, not imported.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash};

use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use schemas::{EnforcementMode, EventData, FlowAction, FlowObservation, IntendedAction, Timestamp};

use super::{Record, event, event_id};

/// What a connection is aggregated by, besides its window.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The source's segment.
    pub src_segment: String,
    /// The destination's segment.
    pub dst_segment: String,
    /// The destination port (0 for ICMP).
    pub dst_port: u16,
    /// `tcp`, `udp`, …
    pub protocol: Option<&'static str>,
    /// What the data plane did.
    pub enforced: FlowAction,
    /// What the intended policy says.
    pub intended: IntendedAction,
    /// The enforcement mode, where the source says.
    pub mode: Option<EnforcementMode>,
}

/// One sighting of traffic.
pub struct Sighting {
    /// When it was seen.
    pub at: Timestamp,
    /// What it is aggregated by.
    pub key: FlowKey,
    /// The 5-tuple's hash ([`tuple_hash`]); `None` when the source masked
    /// the addresses, and then every sighting is its own connection.
    pub tuple: Option<u64>,
    /// The reverse tuple's hash, when a reply can only be told by it (VPC).
    pub reverse: Option<u64>,
}

/// What one line of a flow source became.
pub enum Line {
    /// Traffic seen.
    Sighting(Sighting),
    /// Nothing to import, and why (a bounded phrase, for the summary).
    Ignored(&'static str),
    /// Cannot be converted, and why.
    Failed(String),
}

/// A 5-tuple's hash: 64 bits, so that a window holds one word per connection.
pub fn tuple_hash(src: &str, src_port: u16, dst: &str, dst_port: u16, protocol: &str) -> u64 {
    FxBuildHasher.hash_one((src, src_port, dst, dst_port, protocol))
}

#[derive(Default)]
struct Window {
    /// Per key: its first sighting and its connections.
    counts: FxHashMap<FlowKey, (Timestamp, u64)>,
    /// The tuples counted in this window.
    seen: FxHashSet<u64>,
    /// The lowest input offset that went into this window (Kafka positions).
    min_offset: Option<i64>,
}

/// Open windows of one input (one file, standard input, or one partition).
pub struct FlowWindows {
    format: &'static str,
    source: &'static str,
    /// Makes ids differ between inputs aggregated apart (a partition).
    tag: String,
    width_us: i64,
    grace_us: i64,
    windows: BTreeMap<Timestamp, Window>,
    /// The latest sighting's time minus the grace: windows ending at or
    /// before it are closed.
    watermark: Option<Timestamp>,
}

impl FlowWindows {
    /// Windows `width_us` wide, closed `grace_us` after their end; events
    /// of `format` (for their ids) from `source`.
    pub fn new(format: &'static str, source: &'static str, width_us: i64, grace_us: i64) -> FlowWindows {
        FlowWindows {
            format,
            source,
            tag: String::new(),
            width_us: width_us.max(1),
            grace_us: grace_us.max(0),
            windows: BTreeMap::new(),
            watermark: None,
        }
    }

    /// Tags the ids of this input's events (`topic/partition`): a tagged
    /// window's id is its place (partition, window, key), not its content.
    /// Resumes from a watermark recorded with its committed offset.
    pub fn resume(mut self, tag: String, watermark: Option<Timestamp>) -> FlowWindows {
        self.tag = tag;
        self.watermark = watermark;
        self
    }

    /// The watermark, to be stored with a committed offset.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark
    }

    /// The lowest offset still held by an open window: a consumer may
    /// commit up to it (exclusive), no further.
    pub fn held_from(&self) -> Option<i64> {
        self.windows.values().filter_map(|w| w.min_offset).min()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Takes one sighting; emits the windows it closes. `offset` is the
    /// input position it came from (Kafka offsets; 0 for files).
    pub fn observe(&mut self, sighting: Sighting, offset: i64, sink: &mut dyn FnMut(Record)) -> Observed {
        let start = sighting.at.floor_to(self.width_us);
        if self.watermark.is_some_and(|watermark| start.add_micros(self.width_us) <= watermark) {
            return Observed::Late;
        }
        let window = self.windows.entry(start).or_default();
        window.min_offset = Some(window.min_offset.map_or(offset, |held| held.min(offset)));
        let counted = match sighting.tuple {
            Some(tuple) => {
                let reply = sighting.reverse.is_some_and(|reverse| window.seen.contains(&reverse));
                !reply && window.seen.insert(tuple)
            }
            None => true,
        };
        if counted {
            let entry = window.counts.entry(sighting.key).or_insert((sighting.at, 0));
            entry.0 = entry.0.min(sighting.at);
            entry.1 += 1;
        }
        let candidate = sighting.at.add_micros(-self.grace_us);
        if self.watermark.is_none_or(|watermark| candidate > watermark) {
            self.watermark = Some(candidate);
            self.close(candidate, sink);
        }
        if counted { Observed::Counted } else { Observed::Repeated }
    }

    /// Emits every window ending at or before `watermark`.
    fn close(&mut self, watermark: Timestamp, sink: &mut dyn FnMut(Record)) {
        while let Some(entry) = self.windows.first_entry() {
            if entry.key().add_micros(self.width_us) > watermark {
                break;
            }
            let (start, window) = entry.remove_entry();
            self.emit(start, window, sink);
        }
    }

    /// End of input: emits every open window.
    pub fn finish(&mut self, sink: &mut dyn FnMut(Record)) {
        for (start, window) in std::mem::take(&mut self.windows) {
            self.emit(start, window, sink);
        }
    }

    fn emit(&self, start: Timestamp, window: Window, sink: &mut dyn FnMut(Record)) {
        let mut counts: Vec<(FlowKey, (Timestamp, u64))> = window.counts.into_iter().collect();
        counts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let start_text = start.to_string();
        for (key, (first, connections)) in counts {
            let port = key.dst_port.to_string();
            // A file's window may continue in the next file, imported apart: its
            // content names it. A partition's window is formed once, and a restart
            // that rebuilds part of an emitted one must give the same id, which
            // the pipeline then counts once: its place names it.
            let (first_text, count) = if self.tag.is_empty() {
                (first.to_string(), connections.to_string())
            } else {
                (String::new(), String::new())
            };
            let id = event_id(
                self.format,
                &[
                    &self.tag,
                    &start_text,
                    &key.src_segment,
                    &key.dst_segment,
                    &port,
                    key.protocol.unwrap_or(""),
                    key.enforced.as_str(),
                    key.intended.as_str(),
                    key.mode.map_or("", EnforcementMode::as_str),
                    &first_text,
                    &count,
                ],
            );
            let data = FlowObservation {
                src_segment: key.src_segment,
                dst_segment: key.dst_segment,
                dst_port: key.dst_port,
                protocol: key.protocol.map(str::to_owned),
                enforced_action: key.enforced,
                intended_action: key.intended,
                enforcement_mode: key.mode,
                connections,
                src_asset_id: None,
                dst_asset_id: None,
            };
            sink(Record::Event(event(id, self.source, first, EventData::FlowObservation(data))));
        }
    }
}

/// What became of a sighting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A new connection of its window.
    Counted,
    /// A connection already counted in its window (another observation
    /// point, another interface, a reply).
    Repeated,
    /// Its window had closed.
    Late,
}

impl Observed {
    /// As a record for the summary (events come from the windows).
    pub fn record(self) -> Record {
        match self {
            Observed::Counted => Record::Merged { reason: "sightings counted as connections" },
            Observed::Repeated => Record::Merged { reason: "sightings of a connection already counted" },
            Observed::Late => {
                Record::Ignored { position: String::new(), reason: "late: its window had closed (see --grace)" }
            }
        }
    }
}

/// A duration as flags write it: `90s`, `10m`, `1h`, or seconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: i64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => value,
        "m" => value.checked_mul(60)?,
        "h" => value.checked_mul(3_600)?,
        _ => return None,
    };
    seconds.checked_mul(schemas::time::MICROS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: &str) -> FlowKey {
        FlowKey {
            src_segment: src.to_owned(),
            dst_segment: "db".to_owned(),
            dst_port: 5432,
            protocol: Some("tcp"),
            enforced: FlowAction::Allow,
            intended: IntendedAction::Unknown,
            mode: None,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_micros(1_700_000_400_000_000 + seconds * 1_000_000)
    }

    fn events(records: &[Record]) -> Vec<(String, u64)> {
        records
            .iter()
            .filter_map(|record| match record {
                Record::Event(event) => match &event.data {
                    EventData::FlowObservation(flow) => Some((event.time.to_string(), flow.connections)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn distinct_tuples_count_once_per_window_and_windows_close_after_the_grace() {
        let mut windows = FlowWindows::new("test", "test", 600_000_000, 60_000_000);
        let mut out: Vec<Record> = Vec::new();
        let a = tuple_hash("10.0.0.1", 40000, "10.0.0.2", 5432, "tcp");
        let b = tuple_hash("10.0.0.1", 40001, "10.0.0.2", 5432, "tcp");
        let sight = |t, tuple| Sighting { at: at(t), key: key("web"), tuple: Some(tuple), reverse: None };
        assert_eq!(windows.observe(sight(5, a), 0, &mut |r| out.push(r)), Observed::Counted);
        assert_eq!(windows.observe(sight(6, a), 1, &mut |r| out.push(r)), Observed::Repeated);
        assert_eq!(windows.observe(sight(7, b), 2, &mut |r| out.push(r)), Observed::Counted);
        // 10 min + the 1 min grace later, the first window closes.
        assert_eq!(windows.observe(sight(659, a), 3, &mut |r| out.push(r)), Observed::Counted);
        assert!(events(&out).is_empty());
        assert_eq!(windows.held_from(), Some(0));
        assert_eq!(windows.observe(sight(661, b), 4, &mut |r| out.push(r)), Observed::Counted);
        assert_eq!(events(&out), vec![(at(5).to_string(), 2)]);
        assert_eq!(windows.held_from(), Some(3));
        assert_eq!(windows.observe(sight(8, b), 5, &mut |r| out.push(r)), Observed::Late);
        windows.finish(&mut |r| out.push(r));
        assert_eq!(events(&out), vec![(at(5).to_string(), 2), (at(659).to_string(), 2)]);
    }

    #[test]
    fn a_tuple_whose_reverse_was_counted_is_a_reply() {
        let mut windows = FlowWindows::new("test", "test", 600_000_000, 0);
        let mut out: Vec<Record> = Vec::new();
        let request = tuple_hash("10.0.0.1", 40000, "10.0.0.2", 443, "tcp");
        let reply = tuple_hash("10.0.0.2", 443, "10.0.0.1", 40000, "tcp");
        let sighting = Sighting { at: at(1), key: key("web"), tuple: Some(request), reverse: Some(reply) };
        assert_eq!(windows.observe(sighting, 0, &mut |r| out.push(r)), Observed::Counted);
        let sighting = Sighting { at: at(1), key: key("db"), tuple: Some(reply), reverse: Some(request) };
        assert_eq!(windows.observe(sighting, 1, &mut |r| out.push(r)), Observed::Repeated);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(600_000_000));
        assert_eq!(parse_duration("90s"), Some(90_000_000));
        assert_eq!(parse_duration("2h"), Some(7_200_000_000));
        assert_eq!(parse_duration("30"), Some(30_000_000));
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(parse_duration("5d"), None);
    }
}
