//! The checks every consumed message passes before the processor sees it.
//! A message that fails any of them is a dead letter with the reason, never
//! a crash or a stall.

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use schemas::{CloudEvent, DeadLetter, InputTopic, Timestamp};

/// Why a message was not processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// A bounded label for metrics (`too_large`, `null_value`, `not_utf8`,
    /// `invalid`, `wrong_topic`, `wrong_key`).
    pub reason: &'static str,
    /// What a person reads: the field path and the problem.
    pub error: String,
}

impl Rejection {
    fn new(reason: &'static str, error: String) -> Self {
        Rejection { reason, error }
    }
}

/// Decodes and validates the message read from `topic`: its size, its value
/// (present, UTF-8, a valid CloudEvent of a type that belongs to the topic),
/// and its key, which must be the event's subject so that all events of one
/// entity share a partition and its order.
pub fn check_message(
    topic: InputTopic,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    max_bytes: usize,
) -> Result<CloudEvent, Rejection> {
    let Some(payload) = payload else {
        return Err(Rejection::new("null_value", "the message has no value (null)".to_owned()));
    };
    if payload.len() > max_bytes {
        return Err(Rejection::new(
            "too_large",
            format!("the message is {} bytes, over the limit of {max_bytes}", payload.len()),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::new("not_utf8", format!("not valid UTF-8: invalid byte at offset {}", e.valid_up_to()))
    })?;
    let event = schemas::decode_str(text).map_err(|invalid| Rejection::new("invalid", invalid.to_string()))?;
    if event.event_type().topic() != topic {
        return Err(Rejection::new(
            "wrong_topic",
            format!("type {} belongs on the {} topic, not {topic}", event.event_type(), event.event_type().topic()),
        ));
    }
    let key = key.map(String::from_utf8_lossy);
    let expected = event.event_type().key(&event.subject);
    if key.as_deref() != Some(expected.as_ref()) {
        let expected = if expected == event.subject.as_str() {
            format!("the event's subject {:?}", event.subject)
        } else {
            format!("{expected:?} (a {} event's key is its feed and subject)", event.event_type())
        };
        return Err(Rejection::new(
            "wrong_key",
            match key {
                Some(key) => format!("key {key:?} is not {expected}"),
                None => format!("the message has no key; expected {expected}"),
            },
        ));
    }
    Ok(event)
}

/// The dead letter of a consumed message that failed [`check_message`]:
/// where it was read, its key and bytes, and why, filed under `failed_at`
/// (its task's largest event time so far).
pub fn dead_letter(message: &BorrowedMessage<'_>, error: String, failed_at: Timestamp) -> DeadLetter {
    let key = message.key().map(String::from_utf8_lossy);
    DeadLetter::new(
        message.topic(),
        message.partition(),
        message.offset(),
        key.as_deref(),
        error,
        message.payload().unwrap_or_default(),
        failed_at,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = r#"{"specversion":"1.0","id":"inv-1","source":"urn:cmdb","type":"asset.inventory.v1","time":"2026-11-04T00:00:00Z","subject":"a-1","data":{"asset_id":"a-1","environment":"edge","criticality":"high","internet_exposed":true,"segment":"branch-gw","managed":true}}"#;

    fn check(topic: InputTopic, key: Option<&str>, payload: Option<&[u8]>) -> Result<(), &'static str> {
        check_message(topic, key.map(str::as_bytes), payload, 1024).map(|_| ()).map_err(|r| r.reason)
    }

    #[test]
    fn reasons() {
        let valid = Some(INVENTORY.as_bytes());
        assert_eq!(check(InputTopic::Assets, Some("a-1"), valid), Ok(()));
        assert_eq!(check(InputTopic::Assets, Some("a-2"), valid), Err("wrong_key"));
        assert_eq!(check(InputTopic::Assets, None, valid), Err("wrong_key"));
        assert_eq!(check(InputTopic::Network, Some("a-1"), valid), Err("wrong_topic"));
        assert_eq!(check(InputTopic::Assets, Some("a-1"), None), Err("null_value"));
        assert_eq!(check(InputTopic::Assets, Some("a-1"), Some(&[0xff, 0xfe])), Err("not_utf8"));
        assert_eq!(check(InputTopic::Assets, Some("a-1"), Some(b"{}")), Err("invalid"));
        assert_eq!(check(InputTopic::Assets, Some("a-1"), Some(&[b' '; 2048])), Err("too_large"));
    }

    const KEV: &str = r#"{"specversion":"1.0","id":"kev-1","source":"urn:cisa:kev","type":"vuln.kev.v1","time":"2025-08-25T00:00:00Z","subject":"CVE-2025-0001","data":{"cve_id":"CVE-2025-0001","date_added":"2025-08-25","due_date":"2025-09-15"}}"#;

    #[test]
    fn a_feed_record_is_keyed_by_its_feed_and_cve() {
        let valid = Some(KEV.as_bytes());
        assert_eq!(check(InputTopic::Intel, Some("kev/CVE-2025-0001"), valid), Ok(()));
        assert_eq!(check(InputTopic::Intel, Some("CVE-2025-0001"), valid), Err("wrong_key"));
        assert_eq!(check(InputTopic::Intel, Some("epss/CVE-2025-0001"), valid), Err("wrong_key"));
        let rejection = check_message(InputTopic::Intel, Some(b"CVE-2025-0001"), valid, 1024).expect_err("wrong key");
        assert!(rejection.error.contains("\"kev/CVE-2025-0001\""), "{}", rejection.error);
    }
}
