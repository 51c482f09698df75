//! `--stop-at-end`: once every input partition's committed position (by
//! any instance) has reached its end offset at start, the watermarks of
//! this instance's tasks move to the largest event time of the whole input,
//! as `replay`'s do at the end of its file; that is committed, and the
//! instance stops once every task, whoever owns it, has committed that end.

use ingest::kafka::Source;
use processor::task::TaskId;
use schemas::Timestamp;

use super::instance::{Instance, intel_positions, lock};

impl Instance {
    /// Whether everything this instance reads is applied up to the end offsets at start.
    fn read_to_the_end(&self) -> bool {
        let owner = lock(&self.owner);
        if owner.active().next().is_none() {
            return false;
        }
        for (topic, partition) in owner.active() {
            let end = self.start_ends.get(&(topic.clone(), *partition)).copied().unwrap_or(0);
            let position = self.owner_position(&owner, topic, *partition).unwrap_or(0);
            if position < end {
                tracing::debug!(topic, partition, position, end, "not at the end yet");
                return false;
            }
        }
        if owner.intel_owner {
            let positions = intel_positions(&owner.pipeline, &self.topics.intel);
            for partition in 0..self.partitions[&self.topics.intel] {
                let end = self.start_ends.get(&(self.topics.intel.clone(), partition)).copied().unwrap_or(0);
                if positions.get(&partition).copied().unwrap_or(0) < end {
                    tracing::debug!(partition, end, "intel not at the end yet");
                    return false;
                }
            }
        }
        true
    }

    /// The largest event time of the whole input, once every partition,
    /// whoever owns it, is committed to its end offset at start.
    fn end_of_input(&self, ids: &[(TaskId, String, i32)]) -> anyhow::Result<Option<Option<Timestamp>>> {
        let task_ids: Vec<TaskId> = ids.iter().map(|(id, _, _)| *id).collect();
        let records = lock(&self.owner).pipeline.latest_records(&task_ids)?;
        let mut max_time: Option<Timestamp> = None;
        for (id, topic, partition) in ids {
            let end = self.start_ends.get(&(topic.clone(), *partition)).copied().unwrap_or(0);
            let record = records.iter().find(|record| record.task == *id);
            let position = record.and_then(|r| Source::new(topic, *partition).position(&r.positions)).unwrap_or(0);
            if position < end {
                tracing::debug!(%id, position, end, "not committed to the end yet");
                return Ok(None);
            }
            max_time = max_time.max(record.and_then(|r| r.max_event_time));
        }
        Ok(Some(max_time))
    }

    /// One step of `--stop-at-end`; true when the instance may stop.
    pub(super) fn try_finish(&mut self) -> anyhow::Result<bool> {
        if !self.read_to_the_end() {
            return Ok(false);
        }
        let committed = lock(&self.owner).commit()?;
        self.store_offsets(&committed);
        let committed = {
            let mut owner = lock(&self.owner);
            owner.pipeline.sync()?;
            owner.publish_committed()?
        };
        self.store_offsets(&committed);
        let ids = self.every_partition();
        let Some(max_time) = self.end_of_input(&ids)? else { return Ok(false) };
        // Everything is read: the watermarks of this instance's tasks move to
        // the end of the whole input, as `replay`'s do at the end of its file.
        let committed = {
            let mut owner = lock(&self.owner);
            owner.flush()?;
            owner.pipeline.finish_input(max_time)?;
            let committed = owner.publish_committed()?;
            owner.flush()?;
            committed
        };
        self.store_offsets(&committed);
        // Done when every task, whoever owns it, has committed that end (a
        // killed instance's tasks are finished by whoever gains them).
        let task_ids: Vec<TaskId> = ids.iter().map(|(id, _, _)| *id).collect();
        let records = lock(&self.owner).pipeline.latest_records(&task_ids)?;
        self.unfinished =
            records.iter().filter(|r| r.max_event_time.is_some() && r.watermark < max_time).map(|r| r.task).collect();
        if let Some(behind) = self.unfinished.first() {
            tracing::debug!(task = %behind, "waiting for the owner of a task to commit the end of the input");
            return Ok(false);
        }
        self.commit_offsets(rdkafka::consumer::CommitMode::Sync);
        tracing::info!("everything that was in the topics at start is committed");
        Ok(true)
    }
}
