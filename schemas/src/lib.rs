//! Wire types of patchtrail: what comes in, what is stored, what goes out.
//!
//! - [`events`]: the CloudEvents input events of every type (CONTRACT.md §1).
//! - [`decode`]: decoding and validation that reports every problem with its path.
//! - [`time`]: event-time values and fast RFC 3339 parsing and formatting.
//! - [`tables`]: Arrow schemas of the lake tables (CONTRACT.md §3).
//! - [`ocsf`]: OCSF 1.8.0 finding types for alerts sent to SIEMs.
//! - [`severity`]: CVSS score to severity band (DOMAIN.md "Severity").
//! - [`dead_letter`]: a rejected message, as stored and as published.
//! - [`class`]: whose problem an error is, shared by every crate's error type.
//! - [`source`]: the names of sources in task positions (`kafka:<topic>/<partition>`).
//! - [`layers`]: layered configuration text (TOML file, then environment), every problem at once.
//!
//! This crate does no I/O and depends on neither tokio nor rdkafka.

pub mod class;
pub mod dead_letter;
pub mod decode;
pub mod events;
pub mod layers;
pub mod ocsf;
pub mod source;
pub mod tables;
pub mod time;

pub use class::ErrorClass;
pub use dead_letter::DeadLetter;
pub use decode::{FieldError, Invalid, decode, decode_str};
pub use events::*;
pub use tables::Table;
pub use time::{Date, Timestamp};

pub mod severity {
    //! CVSS base score to severity band (DOMAIN.md "Severity").

    events::wire_enum!(
        /// A CVE's severity band.
        Severity { Low = "low", Medium = "medium", High = "high", Critical = "critical" }
    );

    use crate::events;
    use serde::{Serialize, Serializer};

    impl Severity {
        /// The band of a CVSS base score: below 4 low, below 7 medium, below 9 high, else critical.
        pub fn from_cvss(cvss_base: f64) -> Self {
            if cvss_base >= 9.0 {
                Severity::Critical
            } else if cvss_base >= 7.0 {
                Severity::High
            } else if cvss_base >= 4.0 {
                Severity::Medium
            } else {
                Severity::Low
            }
        }
    }
}
