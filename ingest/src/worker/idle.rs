//! Watermarks of quiet tasks (DESIGN.md "Event time"): in `run`, a task that
//! applies no event for `processor.idle_timeout_secs` has its watermark moved
//! to the wall clock minus the allowed lateness, and again after each further
//! timeout while it stays quiet, so an SLA due date or a re-evaluation window
//! passes without a new event on its partition. Each move is a row of the
//! `clock_watermarks` table. An event that arrives later than such a move
//! is late, as any event behind the watermark: it is applied, revises the
//! rows it touches and raises what it makes hold (DOMAIN.md).
//!
//! The rule is wall-clock time, so it is `run`'s alone: `replay` and
//! `run --stop-at-end` stay on event time and end alike.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use processor::pipeline::Pipeline;
use processor::task::TaskId;
use schemas::{InputTopic, Timestamp};

use crate::kafka::TopicNames;
use crate::metrics::PipelineMetrics;

/// How often the tasks are looked at (a fraction of short timeouts).
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// When each owned task last applied an event, by the wall clock.
pub(super) struct IdleClock {
    timeout: Duration,
    /// Per task: its count of applied events when last seen, and when that
    /// count last changed (or its watermark last moved by the clock).
    seen: BTreeMap<TaskId, (u64, Instant)>,
    checked: Instant,
}

impl IdleClock {
    /// `None` when the timeout is 0 (event time only).
    pub(super) fn new(timeout_us: i64) -> Option<IdleClock> {
        let timeout = Duration::from_micros(u64::try_from(timeout_us).ok().filter(|us| *us > 0)?);
        Some(IdleClock { timeout, seen: BTreeMap::new(), checked: Instant::now() })
    }

    /// Whether the tasks are due to be looked at: cheap, for every poll.
    pub(super) fn due(&self) -> bool {
        self.checked.elapsed() >= CHECK_EVERY.min(self.timeout)
    }

    /// Moves the watermark of every owned task quiet for the timeout; the
    /// number of tasks whose watermark moved (their epochs must be committed).
    pub(super) fn tick(&mut self, pipeline: &mut Pipeline, topics: &TopicNames, metrics: &PipelineMetrics) -> usize {
        let now = Instant::now();
        self.checked = now;
        let owned: Vec<TaskId> =
            pipeline.owned().into_iter().flatten().copied().filter(|id| id.topic != InputTopic::Intel).collect();
        // A task that left and comes back starts its wait afresh.
        self.seen.retain(|id, _| owned.contains(id));
        let wall = Timestamp(now_micros());
        let mut moved = 0;
        for id in owned {
            let Some(events) = pipeline.processor_ref().task(id).map(|task| task.counts().events) else { continue };
            let (seen, since) = self.seen.entry(id).or_insert((events, now));
            if *seen != events {
                (*seen, *since) = (events, now);
                continue;
            }
            if now.duration_since(*since) < self.timeout {
                continue;
            }
            *since = now;
            if pipeline.processor().advance_by_clock(id, wall) {
                let watermark = pipeline.processor_ref().task(id).map(|task| task.watermark().to_string());
                tracing::info!(
                    task = %id,
                    watermark = watermark.unwrap_or_default(),
                    "quiet task: its watermark follows the wall clock"
                );
                metrics.clock_moved(topics.input(id.topic));
                moved += 1;
            }
        }
        moved
    }
}

/// The wall clock, in microseconds since the epoch.
pub(super) fn now_micros() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}
