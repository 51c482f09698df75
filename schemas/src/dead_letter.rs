//! A dead letter: a message that failed to decode or validate, as the
//! `dead_letters` table stores it and the dead-letter topic carries it
//! (CONTRACT.md §2). Built by whoever read the message (a Kafka partition,
//! a line of a file), stored by the processor, published after its commit.

use crate::time::Timestamp;

/// One rejected message with where it came from and why.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The topic (or the file) it was read from.
    pub topic: String,
    /// Its partition (for a file: the task's partition).
    pub partition: i32,
    /// Its offset (for a file: the line index).
    pub offset: i64,
    /// Every problem found, readable.
    pub error: String,
    /// The original bytes: as text when UTF-8, else base64.
    pub payload: String,
    /// The message key, if any.
    pub key: Option<String>,
    /// `Some("base64")` when `payload` is base64.
    pub payload_encoding: Option<&'static str>,
    /// The event time it is filed under: its task's largest event time so far.
    pub failed_at: Timestamp,
}

impl DeadLetter {
    /// A dead letter for the message at `offset` of `partition` of `topic`:
    /// the payload is kept as text when it is UTF-8, else in base64.
    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&str>,
        error: String,
        payload: &[u8],
        failed_at: Timestamp,
    ) -> Self {
        use base64::Engine;
        let (payload, payload_encoding) = match std::str::from_utf8(payload) {
            Ok(text) => (text.to_owned(), None),
            Err(_) => (base64::engine::general_purpose::STANDARD.encode(payload), Some("base64")),
        };
        DeadLetter {
            topic: topic.to_owned(),
            partition,
            offset,
            error,
            payload,
            key: key.map(str::to_owned),
            payload_encoding,
            failed_at,
        }
    }

    /// The value published to the dead-letter topic: the envelope of CONTRACT.md §2.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::json!({
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "error": self.error,
            "payload": self.payload,
            "failed_at": self.failed_at.to_string(),
        });
        if let Some(encoding) = self.payload_encoding {
            value["payload_encoding"] = encoding.into();
        }
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_text_and_other_bytes_become_base64() {
        let letter = DeadLetter::new("t", 1, 7, Some("k"), "bad".to_owned(), b"{\"a\"", Timestamp(0));
        let json: serde_json::Value = serde_json::from_str(&letter.to_json()).expect("JSON");
        assert_eq!(json["payload"], "{\"a\"");
        assert!(json.get("payload_encoding").is_none());
        assert_eq!((json["partition"].as_i64(), json["offset"].as_i64()), (Some(1), Some(7)));
        let letter = DeadLetter::new("t", 0, 0, None, "bad".to_owned(), &[0xff, 0x00], Timestamp(0));
        let json: serde_json::Value = serde_json::from_str(&letter.to_json()).expect("JSON");
        assert_eq!((json["payload"].as_str(), json["payload_encoding"].as_str()), (Some("/wA="), Some("base64")));
        assert!(json["key"].is_null());
    }
}
