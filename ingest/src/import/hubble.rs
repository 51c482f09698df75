//! Cilium Hubble flows (`hubble observe -o json`, the Hubble exporter's
//! files: one `{"flow":{…},"node_name":…,"time":…}` per line, or a bare
//! flow object) → sightings for [`super::flows`].
//!
//! Segments are not in a flow: they come from the endpoint's namespace or
//! one of its labels (`--segment-from`), else from its address in a CIDR
//! file (`--segments`), else from a reserved Cilium identity
//! (`reserved:host`, `reserved:world`, …); a flow whose endpoint has none
//! of these is reported. The verdict gives the actions:
//!
//! | verdict | enforced | intended | mode |
//! |---|---|---|---|
//! | `FORWARDED`, `REDIRECTED` | allow | unknown | — |
//! | `DROPPED` by `POLICY_DENIED` (drop reason 133) | deny | deny | — |
//! | `DROPPED` for another reason | deny | unknown | — |
//! | `AUDIT` (a policy would have dropped it) | allow | deny | audit |
//!
//! Other verdicts (`TRACED`, `TRANSLATED`, `ERROR`) say nothing about
//! policy and are counted as such.

use std::borrow::Cow;

use serde::Deserialize;

use super::flows::{FlowKey, Line, Sighting, tuple_hash};
use super::segments::Segments;
use schemas::{EnforcementMode, FlowAction, IntendedAction, Timestamp};

/// The `source` of Hubble flow events.
pub const SOURCE: &str = "https://github.com/cilium/hubble";

/// How an endpoint's segment is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentRule {
    /// Its Kubernetes namespace.
    Namespace,
    /// The value of this label (`app` matches `k8s:app=reviews`).
    Label(String),
}

impl SegmentRule {
    /// `namespace` or `label:KEY`.
    pub fn parse(text: &str) -> Option<SegmentRule> {
        match text {
            "namespace" => Some(SegmentRule::Namespace),
            _ => {
                text.strip_prefix("label:").filter(|key| !key.is_empty()).map(|key| SegmentRule::Label(key.to_owned()))
            }
        }
    }
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(borrow)]
    flow: Option<Flow<'a>>,
    #[serde(borrow, default)]
    verdict: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Flow<'a> {
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    verdict: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "IP")]
    ip: Option<Addresses<'a>>,
    l4: Option<Layer4>,
    #[serde(borrow)]
    source: Option<Endpoint<'a>>,
    #[serde(borrow)]
    destination: Option<Endpoint<'a>>,
    is_reply: Option<bool>,
    reply: Option<bool>,
    #[serde(borrow)]
    drop_reason_desc: Option<Cow<'a, str>>,
    drop_reason: Option<u32>,
}

#[derive(Deserialize)]
struct Addresses<'a> {
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    destination: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct Layer4 {
    TCP: Option<Ports>,
    UDP: Option<Ports>,
    SCTP: Option<Ports>,
    ICMPv4: Option<serde::de::IgnoredAny>,
    ICMPv6: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Ports {
    #[serde(default)]
    source_port: u16,
    #[serde(default)]
    destination_port: u16,
}

#[derive(Deserialize, Default)]
struct Endpoint<'a> {
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    labels: Vec<Cow<'a, str>>,
}

/// The options of a Hubble import.
pub struct Options<'a> {
    /// How endpoints name their segment (`--segment-from`).
    pub segment: Option<&'a SegmentRule>,
    /// Segments by address (`--segments`).
    pub segments: Option<&'a Segments>,
}

/// Converts one line.
pub fn convert(line: &[u8], options: &Options<'_>) -> Line {
    // UTF-8 checked once for the line (ASCII goes fast), not string by string.
    let Ok(line) = std::str::from_utf8(line) else { return Line::Failed("not UTF-8 text".to_owned()) };
    let response: Response<'_> = match serde_json::from_str(line) {
        Ok(response) => response,
        Err(error) => return Line::Failed(format!("not a Hubble flow: {error}")),
    };
    let flow = match response.flow {
        Some(flow) => flow,
        // `hubble observe -o json` before 0.8 printed the flow itself.
        None if response.verdict.is_some() => match serde_json::from_str::<Flow<'_>>(line) {
            Ok(flow) => flow,
            Err(error) => return Line::Failed(format!("not a Hubble flow: {error}")),
        },
        None => return Line::Ignored("not a flow (node status, lost events)"),
    };
    if flow.is_reply == Some(true) || flow.reply == Some(true) {
        return Line::Ignored("replies (counted with their request)");
    }
    let Some(time) = flow.time.as_deref() else { return Line::Failed("the flow has no time".to_owned()) };
    let Some(at) = Timestamp::parse_rfc3339(time) else {
        return Line::Failed(format!("time {time:?} is not an RFC 3339 timestamp"));
    };
    let (enforced, intended, mode) = match flow.verdict.as_deref() {
        Some("FORWARDED" | "REDIRECTED") => (FlowAction::Allow, IntendedAction::Unknown, None),
        Some("DROPPED") => {
            let policy = flow.drop_reason_desc.as_deref() == Some("POLICY_DENIED") || flow.drop_reason == Some(133);
            (FlowAction::Deny, if policy { IntendedAction::Deny } else { IntendedAction::Unknown }, None)
        }
        Some("AUDIT") => (FlowAction::Allow, IntendedAction::Deny, Some(EnforcementMode::Audit)),
        Some("TRACED" | "TRANSLATED" | "ERROR" | "VERDICT_UNKNOWN") => {
            return Line::Ignored("verdicts that say nothing about policy (TRACED, TRANSLATED, ERROR)");
        }
        Some(other) => return Line::Failed(format!("unknown verdict {other:?}")),
        None => return Line::Failed("the flow has no verdict".to_owned()),
    };
    let (protocol, ports) = match &flow.l4 {
        Some(l4) => {
            if let Some(ports) = &l4.TCP {
                ("tcp", Some(ports))
            } else if let Some(ports) = &l4.UDP {
                ("udp", Some(ports))
            } else if let Some(ports) = &l4.SCTP {
                ("sctp", Some(ports))
            } else if l4.ICMPv4.is_some() {
                ("icmp", None)
            } else if l4.ICMPv6.is_some() {
                ("icmpv6", None)
            } else {
                return Line::Failed("l4 names no known protocol".to_owned());
            }
        }
        None => return Line::Failed("the flow has no l4 (field-masked without l4?)".to_owned()),
    };
    let (src_ip, dst_ip) = match &flow.ip {
        Some(ip) => (ip.source.as_deref(), ip.destination.as_deref()),
        None => (None, None),
    };
    let empty = Endpoint::default();
    let src_segment = match segment(flow.source.as_ref().unwrap_or(&empty), src_ip, options) {
        Ok(segment) => segment,
        Err(error) => return Line::Failed(format!("source: {error}")),
    };
    let dst_segment = match segment(flow.destination.as_ref().unwrap_or(&empty), dst_ip, options) {
        Ok(segment) => segment,
        Err(error) => return Line::Failed(format!("destination: {error}")),
    };
    let (src_port, dst_port) = ports.map_or((0, 0), |p| (p.source_port, p.destination_port));
    let tuple = match (src_ip, dst_ip) {
        (Some(src), Some(dst)) => Some(tuple_hash(src, src_port, dst, dst_port, protocol)),
        _ => None,
    };
    let key = FlowKey { src_segment, dst_segment, dst_port, protocol: Some(protocol), enforced, intended, mode };
    Line::Sighting(Sighting { at, key, tuple, reverse: None })
}

/// An endpoint's segment, by the rules in the module's documentation.
fn segment(endpoint: &Endpoint<'_>, ip: Option<&str>, options: &Options<'_>) -> Result<String, String> {
    match options.segment {
        Some(SegmentRule::Namespace) => {
            if let Some(namespace) = endpoint.namespace.as_deref().filter(|n| !n.is_empty()) {
                return Ok(namespace.to_owned());
            }
        }
        Some(SegmentRule::Label(key)) => {
            for label in &endpoint.labels {
                // `source:key=value`, the source being k8s, container, …
                let Some((_, rest)) = label.split_once(':') else { continue };
                if let Some(value) = rest.strip_prefix(key.as_str()).and_then(|r| r.strip_prefix('=')) {
                    return Ok(value.to_owned());
                }
            }
        }
        None => {}
    }
    if let (Some(segments), Some(ip)) = (options.segments, ip)
        && let Some(segment) = segments.lookup(ip)
    {
        return Ok(segment.to_owned());
    }
    if let Some(reserved) = endpoint.labels.iter().find(|label| label.starts_with("reserved:")) {
        return Ok(reserved.clone().into_owned());
    }
    let by = match options.segment {
        Some(SegmentRule::Namespace) => "no namespace",
        Some(SegmentRule::Label(_)) => "not the label --segment-from names",
        None => "no --segment-from",
    };
    Err(format!(
        "cannot name the segment of {}: {by}, {}, no reserved identity",
        ip.unwrap_or("the endpoint"),
        if options.segments.is_some() { "its address in no CIDR of --segments" } else { "no --segments" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORWARDED_REPLY: &str = r#"{"flow":{"time":"2021-06-16T16:52:13.136834446Z","verdict":"FORWARDED","IP":{"source":"10.0.2.16","destination":"10.0.2.1"},"l4":{"TCP":{"source_port":15020,"destination_port":42044}},"source":{"namespace":"bookinfo","labels":["k8s:app=reviews"]},"destination":{"identity":1,"labels":["reserved:host"]},"reply":true}}"#;
    const AUDIT: &str = r#"{"flow":{"time":"2024-01-02T03:04:05.123456789Z","verdict":"AUDIT","IP":{"source":"10.0.0.5","destination":"10.0.1.9"},"l4":{"TCP":{"source_port":40000,"destination_port":5432}},"source":{"namespace":"web","labels":["k8s:app=frontend"]},"destination":{"namespace":"db","labels":["k8s:app=postgres"]}}}"#;

    fn sighting(line: &str, options: &Options<'_>) -> Sighting {
        match convert(line.as_bytes(), options) {
            Line::Sighting(sighting) => sighting,
            Line::Ignored(reason) => panic!("ignored: {reason}"),
            Line::Failed(reason) => panic!("failed: {reason}"),
        }
    }

    #[test]
    fn audit_is_allowed_traffic_the_policy_would_deny() {
        let rule = SegmentRule::Namespace;
        let s = sighting(AUDIT, &Options { segment: Some(&rule), segments: None });
        assert_eq!((s.key.src_segment.as_str(), s.key.dst_segment.as_str(), s.key.dst_port), ("web", "db", 5432));
        assert_eq!(
            (s.key.enforced, s.key.intended, s.key.mode),
            (FlowAction::Allow, IntendedAction::Deny, Some(EnforcementMode::Audit))
        );
        assert_eq!(s.at.to_string(), "2024-01-02T03:04:05.123456Z");
        let rule = SegmentRule::Label("app".to_owned());
        let s = sighting(AUDIT, &Options { segment: Some(&rule), segments: None });
        assert_eq!((s.key.src_segment.as_str(), s.key.dst_segment.as_str()), ("frontend", "postgres"));
    }

    #[test]
    fn replies_and_unnamed_endpoints() {
        let rule = SegmentRule::Namespace;
        let options = Options { segment: Some(&rule), segments: None };
        assert!(matches!(convert(FORWARDED_REPLY.as_bytes(), &options), Line::Ignored(_)));
        let request = FORWARDED_REPLY.replace(r#","reply":true"#, "");
        let s = sighting(&request, &options);
        assert_eq!((s.key.src_segment.as_str(), s.key.dst_segment.as_str()), ("bookinfo", "reserved:host"));
        let unnamed = request.replace(r#""labels":["reserved:host"]"#, r#""labels":[]"#);
        let Line::Failed(reason) = convert(unnamed.as_bytes(), &options) else { panic!("converted") };
        assert!(reason.starts_with("destination: cannot name the segment of 10.0.2.1"), "{reason}");
    }
}
