//! The processor: per-task state machines that turn ordered events into fact
//! rows, derived rows and alerts, in event time, and the lake writer with its
//! commit protocol (DESIGN.md "Exactly-once into the lake").
//!
//! Not built yet: this crate is reserved in the workspace so the dependency
//! direction (`schemas` ← `processor` ← `queries`) is fixed from the start. It
//! will never depend on Kafka: it takes events and their source positions from
//! any source.
