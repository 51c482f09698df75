//! Getting events into patchtrail.
//!
//! - [`simulate`]: the deterministic fleet simulator (`patchtrail simulate`)
//!   and the expected results it keeps.
//! - [`kafka`]: client settings, topics, the consumer-group consumer and the
//!   intel reader with its catch-up, message checks and dead letters, source
//!   names, offset storing and lag, the publisher, the embedded broker, and
//!   producing a scenario into the input topics.
//! - [`metrics`]: the pipeline metrics of `run` and their names.
//! - [`file`]: events from a JSONL file, decoded in batches (`replay`).
//! - [`config`]: the `[kafka]` and `[pipeline]` sections of the configuration.
//! - `worker` (feature `worker`): the pipeline instance of `run` in a
//!   consumer group, driving the processor's tasks: the one module that
//!   sees the processor.
//!
//! This crate never computes metrics.

pub mod config;
pub mod file;
pub mod import;
pub mod kafka;
pub mod metrics;
pub mod simulate;
#[cfg(feature = "worker")]
pub mod worker;
