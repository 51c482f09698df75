//! The group's safety net: a partition with unread messages (or, with
//! `--stop-at-end`, without the end of the input committed) whose commits
//! have not moved for [`STALL_LIMIT`], held by no live member as far as the
//! lake can tell, makes this instance leave and rejoin the group so the
//! coordinator assigns it again. A broker evicts a dead member after its
//! session timeout, but some (tansu 0.6) do not tell the live members to
//! rejoin; with a broker that does, this never fires.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use processor::lake::CommitRecord;
use processor::task::TaskId;

use super::Partition;
use crate::kafka::Source;

/// How often the watch looks.
const STALL_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a partition with unread messages may go without a commit by anyone.
pub(super) const STALL_LIMIT: Duration = Duration::from_secs(30);

/// When each partition held elsewhere last showed progress in the lake.
#[derive(Default)]
pub(super) struct StallWatch {
    seen: BTreeMap<TaskId, (u64, Instant)>,
    last_check: Option<Instant>,
}

/// A partition nobody commits: its task, its committed position and its end offset.
pub(super) struct Stalled {
    pub(super) task: TaskId,
    pub(super) position: i64,
    pub(super) end: i64,
}

impl StallWatch {
    /// Whether it is time to look again.
    pub(super) fn due(&self) -> bool {
        self.last_check.is_none_or(|at| at.elapsed() > STALL_CHECK_INTERVAL)
    }

    /// Looks at the partitions held elsewhere: `records` are their tasks'
    /// latest commits, `end` tells a partition's end offset (`None` when the
    /// brokers cannot say now: look again at the next check), `unfinished`
    /// the tasks yet to commit the end of the input. The first partition
    /// that needs work and whose commits have not moved for the limit.
    pub(super) fn look(
        &mut self,
        elsewhere: &[Partition],
        records: &[CommitRecord],
        unfinished: &BTreeSet<TaskId>,
        mut end: impl FnMut(&str, i32) -> Option<i64>,
    ) -> Option<Stalled> {
        self.last_check = Some(Instant::now());
        let mut stalled = None;
        for Partition { task, topic, partition } in elsewhere {
            let end = end(topic, *partition)?;
            let record = records.iter().find(|r| r.task == *task);
            let position = record.and_then(|r| Source::new(topic, *partition).position(&r.positions)).unwrap_or(0);
            let epoch = record.map_or(0, |r| r.epoch);
            let seen = self.seen.entry(*task).or_insert((epoch, Instant::now()));
            let needs_work = position < end || unfinished.contains(task);
            if seen.0 != epoch || !needs_work {
                *seen = (epoch, Instant::now());
            } else if seen.1.elapsed() > STALL_LIMIT {
                stalled = Some(Stalled { task: *task, position, end });
            }
        }
        if stalled.is_some() {
            // The group is asked again: every partition starts its wait afresh.
            self.seen.clear();
        }
        stalled
    }
}
