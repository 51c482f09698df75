//! The processor's integration tests, one binary (each file a module): each
//! binary links deltalake and DataFusion, so one binary is one link.
//! Run one module with `cargo test -p processor --release --test it -- fencing::`.

mod common;

mod exact;
mod fencing;
mod order;
mod publish;
mod recovery;
mod retention;
mod rules;
mod truth;
