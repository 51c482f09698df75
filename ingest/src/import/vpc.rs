//! AWS VPC Flow Logs, version 2 default format → sightings for
//! [`super::flows`].
//!
//! `version account-id interface-id srcaddr dstaddr srcport dstport
//! protocol packets bytes start end action log-status`, space-separated,
//! the header line optional (S3 delivery writes it). A record sums one
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

/// Converts one line.
pub fn convert(line: &str, segments: &Segments) -> Line {
    let mut fields = [""; 14];
    let mut count = 0;
    for field in line.split_ascii_whitespace() {
        if count == 14 {
            count += 1;
            break;
        }
        fields[count] = field;
        count += 1;
    }
    if count == 0 {
        return Line::Ignored("blank lines");
    }
    if fields[0] == "version" {
        return Line::Ignored("header lines");
    }
    if count != 14 {
        return Line::Failed(format!(
            "expected the 14 fields of the version 2 default format, got {}",
            if count > 14 { "more".to_owned() } else { count.to_string() }
        ));
    }
    let [version, _account, _interface, src, dst, src_port, dst_port, protocol, _, _, start, _, action, status] =
        fields;
    if version != "2" {
        return Line::Failed(format!("version {version:?}: only the version 2 default format is read"));
    }
    match status {
        "OK" => {}
        "NODATA" | "SKIPDATA" => return Line::Ignored("NODATA and SKIPDATA records (no traffic)"),
        other => return Line::Failed(format!("unknown log-status {other:?}")),
    }
    let enforced = match action {
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
        let Line::Sighting(s) = convert(accept, &segments) else { panic!("not converted") };
        assert_eq!((s.key.src_segment.as_str(), s.key.dst_segment.as_str(), s.key.dst_port), ("web", "db", 5432));
        assert_eq!((s.key.protocol, s.key.enforced), (Some("tcp"), FlowAction::Allow));
        assert_eq!(s.at.to_string(), "2014-12-14T04:06:50Z");
        let nodata = "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA";
        assert!(matches!(convert(nodata, &segments), Line::Ignored(_)));
        let header = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";
        assert!(matches!(convert(header, &segments), Line::Ignored("header lines")));
        assert!(
            matches!(convert("2 1 eni-1 10.0.1.5 10.0.2.7", &segments), Line::Failed(r) if r.contains("14 fields"))
        );
        let outside = accept.replace("10.0.2.7", "8.8.8.8");
        assert!(matches!(convert(&outside, &segments), Line::Ignored(_)));
        // A start past the year 9999 (found by the fuzzer: the event was
        // written, and the decoder refused its time).
        let far = accept.replace("1418530010", "1418530010491");
        assert!(matches!(convert(&far, &segments), Line::Failed(r) if r.contains("years 0 to 9999")));
    }
}
