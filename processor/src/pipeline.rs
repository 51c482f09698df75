//! A [`Processor`] bound to a [`Lake`]: recovery of every task from its
//! latest commit, and epoch commits.
//!
//! Commits run on a writer thread fed through a bounded channel: the caller
//! keeps processing while the previous epoch is encoded and written, and waits
//! when the writer falls a full epoch behind (backpressure, never unbounded
//! memory). Within a task, epochs are committed in order.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::Processor;
use crate::config::ProcessorConfig;
use crate::error::{Error, Result};
use crate::lake::{Epoch, Lake};
use crate::rows::EpochRows;
use crate::task::TaskId;

/// Rows and alerts committed so far by this pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Epochs committed (over all tasks).
    pub commits: u64,
    /// Rows written per table.
    pub rows: BTreeMap<&'static str, u64>,
    /// Alerts per rule.
    pub alerts: BTreeMap<&'static str, u64>,
    /// Re-evaluation requests.
    pub reevaluations: u64,
}

/// A processor whose epochs are committed to a lake.
pub struct Pipeline {
    processor: Processor,
    /// Per task: last committed epoch and the positions it recorded.
    committed: BTreeMap<TaskId, (u64, BTreeMap<String, u64>)>,
    jobs: Option<SyncSender<Epoch>>,
    writer: Option<JoinHandle<Result<()>>>,
    totals: Totals,
}

impl Pipeline {
    /// Opens the pipeline on `lake`: every task resumes from its latest
    /// commit, and files of uncommitted epochs are deleted.
    pub fn open(lake: Lake, config: ProcessorConfig, partitions: u32) -> Result<Pipeline> {
        let mut processor = Processor::new(config, partitions);
        let runtime = runtime()?;
        let mut committed = BTreeMap::new();
        let ids: Vec<TaskId> = processor.tasks().map(|task| task.id()).collect();
        for id in ids {
            if let Some((record, state)) = runtime.block_on(lake.recover(id))? {
                processor.restore(id, &state, &record.state)?;
                committed.insert(id, (record.epoch, record.positions));
            }
        }
        let (jobs, inbox) = sync_channel::<Epoch>(1);
        let writer = std::thread::Builder::new()
            .name("lake-writer".to_owned())
            .spawn(move || write_epochs(lake, inbox))
            .map_err(|e| Error::Location { location: "lake writer thread".to_owned(), reason: e.to_string() })?;
        Ok(Pipeline { processor, committed, jobs: Some(jobs), writer: Some(writer), totals: Totals::default() })
    }

    /// The processor, to apply events to.
    pub fn processor(&mut self) -> &mut Processor {
        &mut self.processor
    }

    /// Whether any task has committed before (the lake held state).
    pub fn resumed(&self) -> bool {
        !self.committed.is_empty()
    }

    /// What has been committed so far.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Flushes every task and hands each changed one to the writer as its next epoch.
    pub fn commit(&mut self) -> Result<()> {
        let epochs = self.processor.flush();
        for (id, rows) in epochs {
            let Some(task) = self.processor.task(id) else { continue };
            let positions = task.positions().clone();
            let (last_epoch, last_positions) = self.committed.get(&id).cloned().unwrap_or_default();
            if rows.n_rows() == 0 && rows.reevaluations.is_empty() && positions == last_positions {
                continue;
            }
            let job = Epoch {
                task: id,
                epoch: last_epoch + 1,
                state: self.processor.snapshot(id),
                watermark: Some(task.watermark()).filter(|w| w.micros() != i64::MIN),
                max_event_time: task.max_event_time(),
                positions: positions.clone(),
                rows,
            };
            self.count(&job.rows);
            self.committed.insert(id, (job.epoch, positions));
            let sent = self.jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok());
            if !sent {
                // The writer stopped on an error; join it to report the error.
                return self
                    .join_writer()
                    .and(Err(Error::Location { location: "lake writer".to_owned(), reason: "stopped".to_owned() }));
            }
        }
        Ok(())
    }

    fn count(&mut self, rows: &EpochRows) {
        self.totals.commits += 1;
        let tables = [
            ("assets", rows.assets.len()),
            ("cves", rows.cves.len()),
            ("patches", rows.patches.len()),
            ("exposures", rows.exposures.len()),
            ("patch_outcomes", rows.patch_outcomes.len()),
            ("canary_rollups", rows.canary_rollups.len()),
            ("segment_drift", rows.segment_drift.len()),
            ("alerts", rows.alerts.len()),
            ("dead_letters", rows.dead_letters.len()),
        ];
        for (table, n) in tables {
            *self.totals.rows.entry(table).or_default() += n as u64;
        }
        for alert in &rows.alerts {
            *self.totals.alerts.entry(alert.rule).or_default() += 1;
        }
        self.totals.reevaluations += rows.reevaluations.len() as u64;
    }

    fn join_writer(&mut self) -> Result<()> {
        self.jobs = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Location { location: "lake writer".to_owned(), reason: "panicked".to_owned() }),
            None => Ok(()),
        }
    }

    /// The end of the input: watermarks move to the largest event time, the
    /// last epoch is committed, and the writer drains.
    pub fn finish(mut self) -> Result<Totals> {
        self.processor.finish_input();
        self.commit()?;
        self.join_writer()?;
        Ok(self.totals.clone())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Location { location: "lake runtime".to_owned(), reason: e.to_string() })
}

fn write_epochs(lake: Lake, inbox: Receiver<Epoch>) -> Result<()> {
    let runtime = runtime()?;
    for job in inbox {
        runtime.block_on(lake.commit(job))?;
    }
    Ok(())
}
