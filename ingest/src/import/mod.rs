//! What real tools write, as the events of CONTRACT.md §1 (§7 "Sources").
//!
//! One module per format. Each turns one input (a file or a stream) into
//! events and reports every record it could not convert with its position
//! and the reason, without stopping. Ids are derived from the source record
//! ([`event_id`]), so importing the same input twice yields the same events,
//! which the pipeline then counts once.
//!
//! [`input`] reads a file or standard input into a [`topic::Sink`], and
//! [`topic`] a raw Kafka topic, committing its offsets behind the sink.
//!
//! The mapping of every format, field by field, is in `docs/sources.md`.

pub mod argo;
pub mod epss;
pub mod flows;
pub mod hubble;
pub mod input;
pub mod inventory;
pub mod k8s;
pub mod kev;
pub mod nvd;
pub mod opa;
pub mod policy_report;
pub mod scan;
pub mod segments;
pub mod stream;
pub mod topic;
pub mod vpc;

use schemas::CloudEvent;
use uuid::Uuid;

/// The namespace of imported event ids (UUID v5).
const IMPORT_NAMESPACE: Uuid = Uuid::from_u128(0x3a9d_51c2_7e64_4b0f_8d21_6c5e_f09a_b147);

/// What one source record became.
// Nearly every record is an event: boxing it would cost an allocation per record to shrink the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Record {
    /// An event to write.
    Event(CloudEvent),
    /// A record that carries nothing to import (counted, not an error).
    Ignored {
        /// Where it is in the input.
        position: String,
        /// Why there is nothing to import (a bounded phrase, for the summary).
        reason: &'static str,
    },
    /// A record folded into an event written later (a flow sighting into
    /// its window), counted by what became of it.
    Merged {
        /// What became of it (a bounded phrase, for the summary).
        reason: &'static str,
    },
    /// A record that could not be converted (an error: the exit status is 1).
    Failed {
        /// Where it is in the input.
        position: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Record {
    /// A failed record; its reason is cut to [`MAX_REASON_BYTES`] (reasons
    /// quote the bad value, which may be a line's megabytes).
    fn failed(position: impl Into<String>, reason: impl Into<String>) -> Record {
        Record::Failed { position: position.into(), reason: capped(reason.into()) }
    }
}

/// The longest reason a failed record gives.
pub const MAX_REASON_BYTES: usize = 300;

/// `reason`, cut at a character boundary to [`MAX_REASON_BYTES`] with its
/// full length said.
fn capped(mut reason: String) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let length = reason.len();
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason.push_str(&format!("… ({length} bytes in all)"));
    reason
}

/// A deterministic event id: a UUID v5 over the format and the parts of the
/// record that identify it and its content, so the same record imported
/// again has the same id and a changed record a new one.
pub fn event_id(format: &str, parts: &[&str]) -> String {
    let mut name = String::with_capacity(64);
    name.push_str(format);
    for part in parts {
        name.push('\u{1f}');
        name.push_str(part);
    }
    Uuid::new_v5(&IMPORT_NAMESPACE, name.as_bytes()).to_string()
}

/// A CloudEvent of `data`, its subject taken from the data.
fn event(id: String, source: &str, time: schemas::Timestamp, data: schemas::EventData) -> CloudEvent {
    CloudEvent { id, source: source.to_owned(), time, subject: data.subject().to_owned(), data }
}

/// A timestamp as the tools write them: RFC 3339, or without an offset
/// (NVD: UTC by its documentation), or with a `+0000` offset (older EPSS
/// files), or a bare date (midnight UTC).
pub fn lenient_timestamp(text: &str) -> Option<schemas::Timestamp> {
    let text = text.trim();
    if let Some(parsed) = schemas::Timestamp::parse_rfc3339(text) {
        return Some(parsed);
    }
    if let Some(date) = schemas::Date::parse(text) {
        return Some(date.start());
    }
    // `+0000` / `-0130`: an offset without its colon.
    // (A char boundary first: the text may be any UTF-8, found by the fuzzer.)
    if text.len() > 5 && text.is_char_boundary(text.len() - 5) {
        let (head, offset) = text.split_at(text.len() - 5);
        if (offset.starts_with('+') || offset.starts_with('-')) && offset[1..].bytes().all(|b| b.is_ascii_digit()) {
            return schemas::Timestamp::parse_rfc3339(&format!("{head}{}:{}", &offset[..3], &offset[3..]));
        }
    }
    // No offset at all: UTC.
    if text.len() >= 19 && text.as_bytes().get(10) == Some(&b'T') {
        return schemas::Timestamp::parse_rfc3339(&format!("{text}Z"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_records_reason_quotes_at_most_a_few_hundred_bytes() {
        let Record::Failed { reason, .. } = Record::failed("line 1", format!("bad value {:?}", "é".repeat(1 << 20)))
        else {
            unreachable!()
        };
        assert!(reason.len() < MAX_REASON_BYTES + 40, "{} bytes", reason.len());
        assert!(reason.starts_with("bad value \"é") && reason.ends_with("… (2097164 bytes in all)"), "{reason}");
        let Record::Failed { reason, .. } = Record::failed("line 1", "short") else { unreachable!() };
        assert_eq!(reason, "short");
    }

    #[test]
    fn timestamps_as_the_tools_write_them() {
        let utc = |text: &str| lenient_timestamp(text).map(|t| t.to_string());
        assert_eq!(utc("2022-07-11T13:15:08.503").as_deref(), Some("2022-07-11T13:15:08.503Z"));
        assert_eq!(utc("2025-02-20T00:00:00+0000").as_deref(), Some("2025-02-20T00:00:00Z"));
        assert_eq!(utc("2025-02-20T01:00:00+0100").as_deref(), Some("2025-02-20T00:00:00Z"));
        assert_eq!(utc("2025-08-25T17:04:19.9796Z").as_deref(), Some("2025-08-25T17:04:19.979600Z"));
        assert_eq!(utc("2025-08-25").as_deref(), Some("2025-08-25T00:00:00Z"));
        assert_eq!(utc("yesterday"), None);
        // Not a boundary five bytes from the end (fuzz/regressions/kev/): no panic.
        assert_eq!(utc("3T79-08-25\u{10000}82U"), None);
    }

    #[test]
    fn ids_follow_the_record() {
        assert_eq!(
            event_id("kev", &["CVE-2025-0001", "2025-08-25"]),
            event_id("kev", &["CVE-2025-0001", "2025-08-25"])
        );
        assert_ne!(
            event_id("kev", &["CVE-2025-0001", "2025-08-25"]),
            event_id("kev", &["CVE-2025-0001", "2025-08-26"])
        );
        assert_ne!(event_id("kev", &["a", "bc"]), event_id("kev", &["ab", "c"]));
    }
}
