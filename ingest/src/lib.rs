//! Getting events into patchtrail.
//!
//! - [`simulate`]: the deterministic fleet simulator (`patchtrail simulate`)
//!   and the expected results it keeps.
//! - [`kafka`]: client settings, topics, the consumer-group consumer and the
//!   intel reader, message checks for the dead-letter path, the publisher, the
//!   embedded broker, and producing a scenario into the input topics.
//!
//! This crate never computes metrics.

pub mod kafka;
pub mod simulate;
