//! The pipeline metrics of `run` (CONTRACT.md §6, the pipeline half): their
//! names live here, and they are registered in a registry of their own that
//! the binary hands to the probe server (`queries::server::probe`).
//!
//! Counters are resolved per label once and bumped per message with one
//! atomic add; gauges are set per batch or report interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Metric names, fixed by CONTRACT.md §6.
pub mod names {
    /// Valid events applied, by input topic.
    pub const EVENTS_CONSUMED: &str = "patchtrail_events_consumed_total";
    /// Dead letters, by input topic and reason.
    pub const EVENTS_DEAD_LETTERED: &str = "patchtrail_events_dead_lettered_total";
    /// Epochs committed.
    pub const COMMITS: &str = "patchtrail_commits_total";
    /// Time to commit a round of epochs.
    pub const COMMIT_DURATION: &str = "patchtrail_commit_duration_seconds";
    /// Messages not applied yet, by partition.
    pub const CONSUMER_LAG: &str = "patchtrail_consumer_lag_messages";
    /// Wall clock minus the largest event time, by topic.
    pub const WATERMARK_LAG: &str = "patchtrail_watermark_lag_seconds";
    /// Publications of committed epochs to the Delta tables that added any.
    pub const LAKE_PUBLICATIONS: &str = "patchtrail_lake_publications_total";
    /// Time a publication that added epochs took.
    pub const LAKE_PUBLICATION_DURATION: &str = "patchtrail_lake_publication_duration_seconds";
    /// Delta commits retried because another writer took the log version.
    pub const LAKE_PUBLICATION_CONFLICTS: &str = "patchtrail_lake_publication_conflicts_total";
    /// Publications, compactions and vacuums that failed (retried later).
    pub const LAKE_FAILURES: &str = "patchtrail_lake_failures_total";
    /// Small files merged away by compaction.
    pub const LAKE_FILES_COMPACTED: &str = "patchtrail_lake_files_compacted_total";
    /// Watermarks of quiet tasks moved by the wall clock, by topic.
    pub const WATERMARK_CLOCK_MOVES: &str = "patchtrail_watermark_clock_moves_total";
}

/// The pipeline's metrics, cheap to clone (handles to one registry).
#[derive(Clone)]
pub struct PipelineMetrics {
    registry: Registry,
    consumed: IntCounterVec,
    dead_lettered: IntCounterVec,
    clock_moves: IntCounterVec,
    /// Epochs committed.
    pub commits: IntCounter,
    /// Time to commit a round of epochs.
    pub commit_seconds: Histogram,
    /// Messages not applied yet, by partition.
    pub consumer_lag: IntGaugeVec,
    /// Wall clock minus the largest event time, by topic.
    pub watermark_lag: GaugeVec,
    /// The lake's Delta tables: publications, their time, conflicts,
    /// failures and compaction (`run`'s publisher thread).
    pub lake: LakeMetrics,
    ready: Arc<AtomicBool>,
}

/// What `run`'s publisher does to the lake's Delta tables.
#[derive(Clone)]
pub struct LakeMetrics {
    /// Publications that added epochs.
    pub publications: IntCounter,
    /// Time each such publication took.
    pub publication_seconds: Histogram,
    /// Delta commits retried after losing a log version.
    pub conflicts: IntCounter,
    /// Failed publications, compactions and vacuums, by operation.
    pub failures: IntCounterVec,
    /// Small files merged away by compaction.
    pub files_compacted: IntCounter,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        PipelineMetrics::new()
    }
}

impl PipelineMetrics {
    /// Every pipeline metric, registered in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let consumed =
            IntCounterVec::new(Opts::new(names::EVENTS_CONSUMED, "Valid events consumed, by input topic."), &["topic"])
                .expect("valid metric");
        let dead_lettered = IntCounterVec::new(
            Opts::new(names::EVENTS_DEAD_LETTERED, "Messages sent to the dead-letter path, by input topic and reason."),
            &["topic", "reason"],
        )
        .expect("valid metric");
        let clock_moves = IntCounterVec::new(
            Opts::new(
                names::WATERMARK_CLOCK_MOVES,
                "Watermarks of quiet tasks moved by the wall clock (processor.idle_timeout_secs), by input topic.",
            ),
            &["topic"],
        )
        .expect("valid metric");
        let commits = IntCounter::new(names::COMMITS, "Task epochs committed to the lake.").expect("valid metric");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(names::COMMIT_DURATION, "Time to hand an epoch round to the lake writer, seconds.")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                names::CONSUMER_LAG,
                "Messages between the committed-or-consumed position and the partition end.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        let watermark_lag = GaugeVec::new(
            Opts::new(names::WATERMARK_LAG, "Wall clock minus the largest event time seen, seconds."),
            &["topic"],
        )
        .expect("valid metric");
        let lake = LakeMetrics {
            publications: IntCounter::new(
                names::LAKE_PUBLICATIONS,
                "Publications of committed epochs to the lake's Delta tables that added any.",
            )
            .expect("valid metric"),
            publication_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    names::LAKE_PUBLICATION_DURATION,
                    "Time a publication to the Delta tables took (every table), seconds.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )
            .expect("valid metric"),
            conflicts: IntCounter::new(
                names::LAKE_PUBLICATION_CONFLICTS,
                "Delta commits retried because another writer took the log version first.",
            )
            .expect("valid metric"),
            failures: IntCounterVec::new(
                Opts::new(
                    names::LAKE_FAILURES,
                    "Lake operations that failed and wait for the next turn, by operation.",
                ),
                &["operation"],
            )
            .expect("valid metric"),
            files_compacted: IntCounter::new(names::LAKE_FILES_COMPACTED, "Small files merged away by compaction.")
                .expect("valid metric"),
        };
        // Every operation's series exists from the start, at 0.
        for operation in ["publish", "optimize", "vacuum"] {
            lake.failures.with_label_values(&[operation]);
        }
        for metric in [
            Box::new(lake.publications.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lake.publication_seconds.clone()),
            Box::new(lake.conflicts.clone()),
            Box::new(lake.failures.clone()),
            Box::new(lake.files_compacted.clone()),
        ] {
            registry.register(metric).expect("metric names are unique");
        }
        for metric in [
            Box::new(consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dead_lettered.clone()),
            Box::new(clock_moves.clone()),
            Box::new(commits.clone()),
            Box::new(commit_seconds.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(watermark_lag.clone()),
        ] {
            registry.register(metric).expect("metric names are unique");
        }
        PipelineMetrics {
            registry,
            consumed,
            dead_lettered,
            clock_moves,
            commits,
            commit_seconds,
            consumer_lag,
            watermark_lag,
            lake,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Makes `topic`'s series of clock moves exist at 0, so a dashboard sees
    /// the counter (and its rate) before the first quiet task.
    pub fn declare_clock_moves(&self, topic: &str) {
        self.clock_moves.with_label_values(&[topic]);
    }

    /// One watermark of a task of `topic` moved by the wall clock.
    pub fn clock_moved(&self, topic: &str) {
        self.clock_moves.with_label_values(&[topic]).inc();
    }

    /// A counter of valid events of `topic`, to bump per message.
    pub fn consumed(&self, topic: &str) -> IntCounter {
        self.consumed.with_label_values(&[topic])
    }

    /// One dead letter of `topic`, for a bounded `reason`.
    pub fn dead_lettered(&self, topic: &str, reason: &str) {
        self.dead_lettered.with_label_values(&[topic, reason]).inc();
    }

    /// Sets `patchtrail_watermark_lag_seconds` of `topic` from the largest
    /// event time seen (µs since the epoch) and the wall clock now.
    pub fn watermark_lag(&self, topic: &str, max_event_micros: i64, now_micros: i64) {
        let lag = (now_micros - max_event_micros) as f64 / 1e6;
        self.watermark_lag.with_label_values(&[topic]).set(lag.max(0.0));
    }

    /// The registry every pipeline metric is in.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// The readiness flag (shared with the probe server).
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ready)
    }

    /// Whether the pipeline consumes normally.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Readiness: consuming normally (false while the broker is away).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
