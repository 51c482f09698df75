//! A file source through a [`Pipeline`] (`patchtrail replay`): each line at
//! its offset, applied or dead-lettered in its task, an epoch committed every
//! `epoch_lines` lines and published every `publish_every` epochs. The
//! source id makes a second run over the same file resume where each task
//! left off.

use std::time::{Duration, Instant};

use schemas::{CloudEvent, InputTopic, Timestamp};

use crate::delta::Publication;
use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::rows::DeadLetterRow;
use crate::task::Applied;

/// One line of a file source.
pub enum Line<'a> {
    /// An empty line (it still takes an offset).
    Blank,
    /// A valid event.
    Event(&'a CloudEvent),
    /// A line that is not a valid event, with the task it would be routed
    /// to as far as its bytes tell.
    Invalid {
        /// Every problem found.
        error: &'a str,
        /// The line.
        payload: &'a [u8],
        /// The topic its type names (assets when it names none).
        topic: InputTopic,
        /// Its subject, when it has one.
        key: Option<&'a str>,
    },
}

/// What the lines became.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Lines read (the next offset).
    pub lines: u64,
    /// Events applied (duplicates included: they count once in the tables).
    pub events: u64,
    /// Lines that became dead letters: invalid, or older than the retention.
    pub dead_letters: u64,
    /// Lines a previous run over the same source already applied.
    pub already_applied: u64,
}

/// Feeds one source's lines to a pipeline.
pub struct Replay<'p> {
    pipeline: &'p mut Pipeline,
    source: String,
    epoch_lines: u64,
    publish_every: Option<u64>,
    counts: Counts,
    publications: Publications,
}

impl<'p> Replay<'p> {
    /// Lines of `source` from its first; an epoch every `epoch_lines`
    /// lines (at least 1), published every `publish_every` epochs.
    pub fn new(pipeline: &'p mut Pipeline, source: String, epoch_lines: u64, publish_every: Option<u64>) -> Self {
        let epoch_lines = epoch_lines.max(1);
        Replay {
            pipeline,
            source,
            epoch_lines,
            publish_every,
            counts: Counts::default(),
            publications: Publications::default(),
        }
    }

    /// Takes the next line.
    pub fn take(&mut self, line: Line<'_>) -> Result<()> {
        let offset = self.counts.lines;
        let processor = self.pipeline.processor();
        match line {
            Line::Blank => {}
            Line::Event(event) => match processor.apply(&self.source, offset, event) {
                Applied::AlreadyApplied => self.counts.already_applied += 1,
                Applied::Event | Applied::Duplicate => self.counts.events += 1,
                Applied::BeyondRetention => self.counts.dead_letters += 1,
            },
            Line::Invalid { error, payload, topic, key } => {
                let task = processor.route_topic(topic, key.unwrap_or(""));
                let failed_at = processor.task(task).and_then(|t| t.max_event_time()).unwrap_or(Timestamp(0));
                let row = DeadLetterRow::new(
                    &self.source,
                    task.partition as i32,
                    offset as i64,
                    key,
                    error.to_owned(),
                    payload,
                    failed_at,
                );
                match processor.dead_letter(task, &self.source, offset, row) {
                    Applied::AlreadyApplied => self.counts.already_applied += 1,
                    _ => self.counts.dead_letters += 1,
                }
            }
        }
        self.counts.lines += 1;
        if self.counts.lines.is_multiple_of(self.epoch_lines) {
            self.pipeline.commit()?;
            let epoch = self.counts.lines / self.epoch_lines;
            if self.publish_every.is_some_and(|every| epoch.is_multiple_of(every)) {
                let publishing = Instant::now();
                let report = self.pipeline.publish()?;
                self.publications.add(&report, publishing.elapsed());
            }
        }
        Ok(())
    }

    /// What the lines so far became.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The publications `publish_every` asked for so far.
    pub fn publications(&self) -> &Publications {
        &self.publications
    }
}

/// The cost of the publications during a replay.
#[derive(Clone, Debug, Default)]
pub struct Publications {
    /// How many.
    pub count: u64,
    /// Epochs they published.
    pub epochs: u64,
    /// Files they added.
    pub files: u64,
    /// Commits retried on a conflict.
    pub conflicts: u64,
    /// Their time, in all.
    pub total: Duration,
    /// The slowest one.
    pub slowest: Duration,
}

impl Publications {
    fn add(&mut self, report: &Publication, took: Duration) {
        self.count += 1;
        self.epochs += report.epochs;
        self.files += report.files;
        self.conflicts += report.conflicts;
        self.total += took;
        self.slowest = self.slowest.max(took);
    }
}

impl std::fmt::Display for Publications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "publications {} ({} epochs, {} files, {} conflicts): {:.0} ms each on average, {:.0} ms at most",
            self.count,
            self.epochs,
            self.files,
            self.conflicts,
            self.total.as_secs_f64() * 1e3 / self.count.max(1) as f64,
            self.slowest.as_secs_f64() * 1e3
        )
    }
}
