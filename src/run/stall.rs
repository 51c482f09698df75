//! The group's safety net: a partition with unread messages (or, with
//! `--stop-at-end`, without the end of the input committed) whose commits
//! have not moved for [`STALL_LIMIT`], held by no live member as far as the
//! lake can tell, makes this instance leave and rejoin the group so the
//! coordinator assigns it again. A broker evicts a dead member after its
//! session timeout, but some (tansu 0.6) do not tell the live members to
//! rejoin; with a broker that does, this never fires.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ingest::kafka::Source;
use processor::task::TaskId;
use rdkafka::consumer::Consumer;

use super::instance::{Instance, lock};

/// How often the watch looks.
const STALL_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a partition with unread messages may go without a commit by anyone.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// When each partition held elsewhere last showed progress in the lake.
#[derive(Default)]
pub(super) struct StallWatch {
    seen: BTreeMap<TaskId, (u64, Instant)>,
    last_check: Option<Instant>,
}

impl StallWatch {
    /// Whether it is time to look again.
    pub(super) fn due(&self) -> bool {
        self.last_check.is_none_or(|at| at.elapsed() > STALL_CHECK_INTERVAL)
    }
}

impl Instance {
    /// Every partition of the keyed topics: its task, topic and partition.
    pub(super) fn every_partition(&self) -> Vec<(TaskId, String, i32)> {
        let mut all = Vec::new();
        for topic in self.topics.keyed() {
            let Some(input) = self.topics.input_topic(topic) else { continue };
            for partition in 0..self.partitions[topic] {
                all.push((TaskId { topic: input, partition: partition as u32 }, topic.to_owned(), partition));
            }
        }
        all
    }

    pub(super) fn check_stalled(&mut self, stall: &mut StallWatch) -> anyhow::Result<()> {
        stall.last_check = Some(Instant::now());
        let elsewhere: Vec<(TaskId, String, i32)> = {
            let owner = lock(&self.owner);
            let mine = |topic: &String, partition: i32| {
                let key = (topic.clone(), partition);
                owner.assigned.contains(&key) && !owner.fenced.contains(&key)
            };
            self.every_partition().into_iter().filter(|(_, topic, partition)| !mine(topic, *partition)).collect()
        };
        let task_ids: Vec<TaskId> = elsewhere.iter().map(|(id, _, _)| *id).collect();
        let records = lock(&self.owner).pipeline.latest_records(&task_ids)?;
        let mut stalled = None;
        for (id, topic, partition) in &elsewhere {
            // The brokers are slow or away: look again at the next check.
            let Ok((_, end)) = self.watermarks.fetch_watermarks(topic, *partition, Duration::from_secs(5)) else {
                return Ok(());
            };
            let record = records.iter().find(|r| r.task == *id);
            let position = record.and_then(|r| Source::new(topic, *partition).position(&r.positions)).unwrap_or(0);
            let epoch = record.map_or(0, |r| r.epoch);
            let seen = stall.seen.entry(*id).or_insert((epoch, Instant::now()));
            let needs_work = position < end || self.unfinished.contains(id);
            if seen.0 != epoch || !needs_work {
                *seen = (epoch, Instant::now());
            } else if seen.1.elapsed() > STALL_LIMIT {
                stalled = Some((*id, position, end));
            }
        }
        if let Some((id, position, end)) = stalled {
            tracing::warn!(
                task = %id, position, end, stalled_s = STALL_LIMIT.as_secs(),
                "no member commits a partition with unread messages; rejoining the group"
            );
            self.consumer.unsubscribe();
            self.consumer.subscribe(&self.topics.keyed())?;
            stall.seen.clear();
        }
        Ok(())
    }
}
