//! The lake's upkeep while `run` runs: committed epochs are published to
//! the Delta tables every `lake.publish_interval_secs` (and once more on
//! request, at the end), and the tables are compacted and vacuumed every
//! `lake.optimize_interval_secs`. A failure is counted, logged and retried
//! at the next turn: the task commit log keeps the epochs meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use processor::delta::PublishedUpTo;
use processor::lake::Lake;
use tokio_util::sync::CancellationToken;

use crate::kafka;
use crate::metrics::LakeMetrics;

/// How often the upkeep runs.
#[derive(Clone, Copy, Debug)]
pub struct Upkeep {
    /// Publish committed epochs this often.
    pub publish_every: Duration,
    /// Compact and vacuum this often; never when `None`.
    pub optimize_every: Option<Duration>,
    /// Keep files compaction removed this long (for readers that opened the lake before).
    pub retain: Duration,
}

/// Publishes and compacts one lake, on a current-thread runtime of its own.
#[derive(Clone)]
pub struct LakePublisher {
    lake: Lake,
    runtime: Arc<tokio::runtime::Runtime>,
    metrics: LakeMetrics,
}

impl LakePublisher {
    /// A publisher of `lake`, counting into `metrics`.
    pub fn new(lake: Lake, metrics: LakeMetrics) -> std::io::Result<LakePublisher> {
        let runtime = Arc::new(tokio::runtime::Builder::new_current_thread().enable_all().build()?);
        Ok(LakePublisher { lake, runtime, metrics })
    }

    /// Publishes every committed epoch not yet in the tables, now.
    pub fn publish_now(&self) {
        self.publish(&mut PublishedUpTo::default());
    }

    /// The upkeep loop, until `cancel`.
    pub fn keep(&self, upkeep: Upkeep, cancel: &CancellationToken) {
        let mut optimized = Instant::now();
        let mut seen = PublishedUpTo::default();
        while !kafka::sleep_unless_cancelled(upkeep.publish_every, cancel) {
            self.publish(&mut seen);
            if upkeep.optimize_every.is_some_and(|interval| optimized.elapsed() >= interval) {
                optimized = Instant::now();
                self.compact(upkeep.retain);
            }
        }
    }

    /// Publishes what was committed since `seen` (nothing when no task committed).
    fn publish(&self, seen: &mut PublishedUpTo) {
        let (started, metrics) = (Instant::now(), &self.metrics);
        match self.runtime.block_on(self.lake.publish_after(seen)) {
            Ok(report) if report.epochs > 0 => {
                metrics.publications.inc();
                metrics.publication_seconds.observe(started.elapsed().as_secs_f64());
                metrics.conflicts.inc_by(report.conflicts);
                tracing::debug!(
                    epochs = report.epochs,
                    files = report.files,
                    conflicts = report.conflicts,
                    pruned = report.pruned,
                    ms = started.elapsed().as_millis() as u64,
                    "published to the Delta tables"
                );
            }
            Ok(_) => {}
            Err(error) => {
                metrics.failures.with_label_values(&["publish"]).inc();
                tracing::warn!(%error, "cannot publish to the Delta tables; retrying at the next turn");
            }
        }
    }

    fn compact(&self, retain: Duration) {
        let (started, metrics) = (Instant::now(), &self.metrics);
        match self.runtime.block_on(self.lake.optimize()) {
            Ok(report) => {
                metrics.files_compacted.inc_by(report.files_removed);
                tracing::info!(
                    files_removed = report.files_removed,
                    files_added = report.files_added,
                    ms = started.elapsed().as_millis() as u64,
                    "compacted the Delta tables"
                );
            }
            Err(error) => {
                metrics.failures.with_label_values(&["optimize"]).inc();
                tracing::warn!(%error, "cannot compact the Delta tables; trying again later");
            }
        }
        match self.runtime.block_on(self.lake.vacuum(retain)) {
            Ok(deleted) if deleted > 0 => tracing::info!(deleted, "vacuumed the Delta tables"),
            Ok(_) => {}
            Err(error) => {
                metrics.failures.with_label_values(&["vacuum"]).inc();
                tracing::warn!(%error, "cannot vacuum the Delta tables; trying again later");
            }
        }
    }
}
