//! AWS VPC Flow Logs → sightings for [`super::flows`].
//!
//! Space-separated records, by default of the version 2 default format
//! (`version account-id interface-id srcaddr dstaddr srcport dstport
//! protocol packets bytes start end action log-status`); a header line (S3
//! delivery writes one) names the fields of a custom format and their order,
//! and the records after it are read in that order ([`Layout`]). A record sums one
//! 5-tuple's traffic on one interface over a capture window: `ACCEPT` →
//! enforced allow, `REJECT` → enforced deny; the intended action is
//! `unknown` (security groups and network ACLs are the only policy the log
//! reflects, and it is the enforced one). Time is `start` (Unix seconds).
//! Segments come from the addresses by a CIDR file (`--segments`).
//! `NODATA` and `SKIPDATA` records carry no traffic.

use super::flows::{FlowKey, Line, Sighting, tuple_hash};
use super::segments::Segments;
use schemas::{FlowAction, IntendedAction, Timestamp};

/// The `source` of VPC flow events.
pub const SOURCE: &str = "https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs.html";

/// The IANA protocol number's name, as the other sources write it.
fn protocol_name(number: &str) -> Option<&'static str> {
    Some(match number {
        "6" => "tcp",
        "17" => "udp",
        "1" => "icmp",
        "58" => "icmpv6",
        "132" => "sctp",
        "47" => "gre",
        "50" => "esp",
        _ => return None,
    })
}

/// Where each field a record needs stands in a line: the version 2 default
/// format, or the order a header line names (AWS lets a flow log choose
/// its fields and their order, and S3 delivery writes them as a header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    count: usize,
    version: Option<usize>,
    src: usize,
    dst: usize,
    src_port: usize,
    dst_port: usize,
    protocol: usize,
    start: usize,
    action: usize,
    status: Option<usize>,
}

impl Default for Layout {
    /// `version account-id interface-id srcaddr dstaddr srcport dstport
    /// protocol packets bytes start end action log-status`.
    fn default() -> Self {
        Layout {
            count: 14,
            version: Some(0),
            src: 3,
            dst: 4,
            src_port: 5,
            dst_port: 6,
            protocol: 7,
            start: 10,
            action: 12,
            status: Some(13),
        }
    }
}

/// The most fields a line may have (the version 5 format has 29).
const MAX_FIELDS: usize = 64;

impl Layout {
    /// The layout a header line names, if `line` is one (it names fields,
    /// which no record holds as values): `Err` when it lacks a field the
    /// records need.
    pub fn from_header(line: &str) -> Option<Result<Layout, String>> {
        let names: Vec<&str> = line.split_ascii_whitespace().collect();
        if !names.iter().any(|name| matches!(*name, "version" | "srcaddr" | "dstaddr" | "log-status")) {
            return None;
        }
        let at = |wanted: &str| names.iter().position(|name| *name == wanted);
        let needed = ["srcaddr", "dstaddr", "srcport", "dstport", "protocol", "start", "action"];
        let missing: Vec<&str> = needed.iter().copied().filter(|name| at(name).is_none()).collect();
        if !missing.is_empty() {
            return Some(Err(format!(
                "the header names no {} field: the records cannot be read as flows",
                missing.join(", ")
            )));
        }
        if names.len() > MAX_FIELDS {
            return Some(Err(format!("the header names {} fields, more than {MAX_FIELDS}", names.len())));
        }
        let field = |name: &str| at(name).unwrap_or_default();
        Some(Ok(Layout {
            count: names.len(),
            version: at("version"),
            src: field("srcaddr"),
            dst: field("dstaddr"),
            src_port: field("srcport"),
            dst_port: field("dstport"),
            protocol: field("protocol"),
            start: field("start"),
            action: field("action"),
            status: at("log-status"),
        }))
    }
}

/// Converts one record laid out as `layout` says (a header line is the
/// caller's: [`Layout::from_header`]).
pub fn convert(line: &str, segments: &Segments, layout: &Layout) -> Line {
    let mut fields = [""; MAX_FIELDS];
    let mut count = 0;
    for field in line.split_ascii_whitespace() {
        if count == MAX_FIELDS {
            count += 1;
            break;
        }
        fields[count] = field;
        count += 1;
    }
    if count == 0 {
        return Line::Ignored("blank lines");
    }
    if count != layout.count {
        let got = if count > MAX_FIELDS { "more".to_owned() } else { count.to_string() };
        return Line::Failed(if *layout == Layout::default() {
            format!("expected the 14 fields of the version 2 default format, got {got}")
        } else {
            format!("expected the {} fields the header names, got {got}", layout.count)
        });
    }
    if let Some(version) = layout.version.map(|at| fields[at])
        && !matches!(version, "2" | "3" | "4" | "5")
    {
        return Line::Failed(format!("version {version:?}: flow log versions 2 to 5 are read"));
    }
    match layout.status.map_or("OK", |at| fields[at]) {
        "OK" => {}
        "NODATA" | "SKIPDATA" => return Line::Ignored("NODATA and SKIPDATA records (no traffic)"),
        other => return Line::Failed(format!("unknown log-status {other:?}")),
    }
    let (src, dst, protocol, start) =
        (fields[layout.src], fields[layout.dst], fields[layout.protocol], fields[layout.start]);
    let (src_port, dst_port) = (fields[layout.src_port], fields[layout.dst_port]);
    let enforced = match fields[layout.action] {
        "ACCEPT" => FlowAction::Allow,
        "REJECT" => FlowAction::Deny,
        other => return Line::Failed(format!("unknown action {other:?}")),
    };
    let Some(at) = start.parse::<i64>().ok().and_then(Timestamp::from_unix_seconds) else {
        return Line::Failed(format!("start {start:?} is not Unix seconds of the years 0 to 9999"));
    };
    let port = |text: &str| text.parse::<u16>().ok();
    let (Some(src_port), Some(dst_port)) = (port(src_port), port(dst_port)) else {
        return Line::Failed(format!("ports {src_port:?} and {dst_port:?} must be numbers 0–65535"));
    };
    let protocol_text = protocol_name(protocol);
    let Some(src_segment) = segments.lookup(src) else {
        return Line::Ignored("addresses in no CIDR of --segments (add 0.0.0.0/0 for the rest)");
    };
    let Some(dst_segment) = segments.lookup(dst) else {
        return Line::Ignored("addresses in no CIDR of --segments (add 0.0.0.0/0 for the rest)");
    };
    let key = FlowKey {
        src_segment: src_segment.to_owned(),
        dst_segment: dst_segment.to_owned(),
        dst_port,
        protocol: protocol_text,
        enforced,
        intended: IntendedAction::Unknown,
        mode: None,
    };
    let tuple = tuple_hash(src, src_port, dst, dst_port, protocol);
    let reverse = tuple_hash(dst, dst_port, src, src_port, protocol);
    Line::Sighting(Sighting { at, key, tuple: Some(tuple), reverse: Some(reverse) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_the_documented_format() {
        let segments = Segments::parse("10.0.1.0/24 web\n10.0.2.0/24 db\n").expect("parses");
        let accept = "2 123456789010 eni-1235b8ca123456789 10.0.1.5 10.0.2.7 49761 5432 6 20 4249 1418530010 1418530070 ACCEPT OK";
        let Line::Sighting(s) = convert(accept, &segments, &Layout::default()) else { panic!("not converted") };
        assert_eq!((s.key.src_segment.as_str(), s.key.dst_segment.as_str(), s.key.dst_port), ("web", "db", 5432));
        assert_eq!((s.key.protocol, s.key.enforced), (Some("tcp"), FlowAction::Allow));
        assert_eq!(s.at.to_string(), "2014-12-14T04:06:50Z");
        let nodata = "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA";
        assert!(matches!(convert(nodata, &segments, &Layout::default()), Line::Ignored(_)));
        let header = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";
        assert_eq!(Layout::from_header(header), Some(Ok(Layout::default())));
        assert_eq!(Layout::from_header(accept), None);
        assert!(
            matches!(convert("2 1 eni-1 10.0.1.5 10.0.2.7", &segments, &Layout::default()), Line::Failed(r) if r.contains("14 fields"))
        );
        let outside = accept.replace("10.0.2.7", "8.8.8.8");
        assert!(matches!(convert(&outside, &segments, &Layout::default()), Line::Ignored(_)));
        // A start past the year 9999 (found by the fuzzer: the event was
        // written, and the decoder refused its time).
        let far = accept.replace("1418530010", "1418530010491");
        assert!(
            matches!(convert(&far, &segments, &Layout::default()), Line::Failed(r) if r.contains("years 0 to 9999"))
        );
    }

    #[test]
    fn a_header_names_the_order_of_a_custom_format() {
        let segments = Segments::parse("10.0.1.0/24 web\n10.0.2.0/24 db\n").expect("parses");
        // Destination first, source second: read by position, this record
        // would be db → web on port 49761.
        let header = "dstaddr srcaddr dstport srcport protocol start end action version";
        let layout = Layout::from_header(header).expect("a header").expect("readable");
        let record = "10.0.2.7 10.0.1.5 5432 49761 6 1418530010 1418530070 REJECT 5";
        let Line::Sighting(s) = convert(record, &segments, &layout) else { panic!("not converted") };
        assert_eq!((s.key.src_segment.as_str(), s.key.dst_segment.as_str(), s.key.dst_port), ("web", "db", 5432));
        assert_eq!(s.key.enforced, FlowAction::Deny);
        // The same record without its header is refused, not misread.
        assert!(matches!(convert(record, &segments, &Layout::default()), Line::Failed(r) if r.contains("14 fields")));
        assert!(
            matches!(convert("10.0.2.7 10.0.1.5 5432", &segments, &layout), Line::Failed(r) if r.contains("the 9 fields the header names"))
        );
        let partial = Layout::from_header("version srcaddr dstaddr action").expect("a header");
        assert!(matches!(partial, Err(r) if r.contains("srcport, dstport, protocol, start")));
    }
}
