//! The end-to-end tests, one binary (each file a module): they run the real
//! `patchtrail` binary against real components (tansu, Prometheus, moto's S3,
//! DuckDB, delta-rs) and compare what it computes with the simulator's truth.
//! One binary rather than one per file: each links DataFusion, deltalake and
//! librdkafka, and fifteen of them were most of a cold build.
//! Run one module with `cargo test --release --test it -- kafka::`.

mod support;

mod cli;
mod delta;
mod demo;
mod deploy;
mod embedded;
mod faults;
mod hostile;
mod import;
mod kafka;
mod ocsf;
mod replay;
mod s3;
mod serve;
mod slt;
mod tidy;
mod views;
