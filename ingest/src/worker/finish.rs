//! `--stop-at-end`: once every input partition's committed position (by
//! any instance) has reached its end offset at start, the watermarks of
//! this instance's tasks move to the largest event time of the whole input,
//! as `replay`'s do at the end of its file; that is committed, and the
//! instance stops once every task, whoever owns it, has committed that end.
//!
//! The judgements, as functions of what the instance knows; the instance
//! commits and stops on them.

use std::collections::{BTreeMap, BTreeSet};

use processor::lake::CommitRecord;
use processor::task::TaskId;
use schemas::Timestamp;

use super::Partition;
use super::owner::Owner;
use crate::kafka::Source;

/// The end offset of every input partition when the instance started.
pub(super) type Ends = BTreeMap<(String, i32), i64>;

fn end_of(ends: &Ends, topic: &str, partition: i32) -> i64 {
    ends.get(&(topic.to_owned(), partition)).copied().unwrap_or(0)
}

/// Whether everything this instance reads is applied up to `ends`; it
/// reads nothing (and so is not done) until the group gives it a partition.
pub(super) fn read_to_the_end(owner: &Owner, ends: &Ends, intel_partitions: i32) -> bool {
    if owner.active().next().is_none() {
        return false;
    }
    for (topic, partition) in owner.active() {
        let (end, position) = (end_of(ends, topic, *partition), owner.position(topic, *partition).unwrap_or(0));
        if position < end {
            tracing::debug!(topic, partition, position, end, "not at the end yet");
            return false;
        }
    }
    if owner.intel_owner {
        let positions = owner.intel_positions();
        for partition in 0..intel_partitions {
            let end = end_of(ends, &owner.topics.intel, partition);
            if positions.get(&partition).copied().unwrap_or(0) < end {
                tracing::debug!(partition, end, "intel not at the end yet");
                return false;
            }
        }
    }
    true
}

/// The largest event time of the whole input, once every partition,
/// whoever owns it, is committed to its end offset at start (`records`:
/// the latest commit of each partition's task); `None` until then.
pub(super) fn end_of_input(
    partitions: &[Partition],
    records: &[CommitRecord],
    ends: &Ends,
) -> Option<Option<Timestamp>> {
    let mut max_time: Option<Timestamp> = None;
    for Partition { task, topic, partition } in partitions {
        let end = end_of(ends, topic, *partition);
        let record = records.iter().find(|record| record.task == *task);
        let position = record.and_then(|r| Source::new(topic, *partition).position(&r.positions)).unwrap_or(0);
        if position < end {
            tracing::debug!(%task, position, end, "not committed to the end yet");
            return None;
        }
        max_time = max_time.max(record.and_then(|r| r.max_event_time));
    }
    Some(max_time)
}

/// The tasks whose latest commit is behind `max_time`, the end of the input.
pub(super) fn unfinished(records: &[CommitRecord], max_time: Option<Timestamp>) -> BTreeSet<TaskId> {
    records.iter().filter(|r| r.max_event_time.is_some() && r.watermark < max_time).map(|r| r.task).collect()
}
