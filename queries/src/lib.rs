//! Everything that reads the lake, and the query service over it.
//!
//! - [`session`]: [`LakeSession`], DataFusion over one committed snapshot,
//!   with the tables, their history and the metric views of `queries/sql/`.
//! - [`weights`]: the priority score's [`Weights`] and the `priorities` view.
//! - [`priorities`]: the queue as typed rows, what changed between two
//!   queues, and the [`priorities::QueueSink`] the binary plugs a Kafka
//!   publisher into.
//! - [`metrics`]: the names of the query side's metrics, the HTTP metrics,
//!   and the domain metrics computed from the lake with bounded memory.
//! - [`summary`]: the figures `demo` prints; [`output`]: answers as a
//!   table, JSON or CSV (`sql --format`).
//! - [`server`]: the HTTP API of `serve` and the probe endpoints of `run`.
//! - [`error`]: [`QueryError`] and its class; [`columns`]: typed result columns.
//! - [`guard`]: what a session withholds from untrusted SQL.
//! - [`config`]: the `[server]`, `[auth]` and `[prioritization]` sections.
//!
//! This crate reads the lake and never writes it (compaction writes the
//! latest forms it reads through [`session::CompactionReader`]: the writing is
//! `processor::compact`'s); it never talks to Kafka.

pub mod columns;
pub mod config;
pub mod error;
pub mod guard;
pub mod known;
pub mod metrics;
pub mod output;
pub mod priorities;
pub mod server;
pub mod session;
pub mod summary;
pub mod weights;

pub use error::QueryError;
pub use session::{LakeSession, VIEWS};
pub use weights::{PRIORITIES_SQL, Weights};
