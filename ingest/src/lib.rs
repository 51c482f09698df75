//! Getting events into patchtrail.
//!
//! - [`simulate`]: the deterministic fleet simulator (`patchtrail simulate`)
//!   and the expected results it keeps.
//!
//! Kafka consumers, producers and the dead-letter path arrive here with the
//! pipeline; this crate never computes metrics.

pub mod simulate;
