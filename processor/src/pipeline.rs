//! A [`Processor`] bound to a [`Lake`]: recovery of every task from its
//! latest commit, and epoch commits.
//!
//! Commits run on a writer thread fed through a bounded channel: the caller
//! keeps processing while the previous epoch is encoded and written, and waits
//! when the writer falls a full epoch behind (backpressure, never unbounded
//! memory). Within a task, epochs are committed in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use crate::Processor;
use crate::config::ProcessorConfig;
use crate::error::{Error, Result};
use crate::lake::{CommitRecord, Epoch, Lake};
use crate::rows::{EpochRows, OutboxMessage};
use crate::task::TaskId;
use schemas::Timestamp;

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

/// An epoch the writer made durable, with what it publishes.
#[derive(Debug)]
pub struct Committed {
    /// The task.
    pub task: TaskId,
    /// Its epoch.
    pub epoch: u64,
    /// Source → next offset, as recorded.
    pub positions: BTreeMap<String, u64>,
    /// What the epoch publishes (empty unless the pipeline keeps an outbox).
    pub outbox: Vec<OutboxMessage>,
}

/// What the writer thread reports for each epoch handed to it.
enum Written {
    Committed(Committed),
    /// Another writer owns the task: this epoch (of that lineage) and the
    /// later ones queued behind it were discarded.
    Fenced {
        task: TaskId,
        lineage: u64,
    },
}

/// One epoch for the writer thread, with the lineage (ownership period) of
/// its task it belongs to.
struct Job {
    epoch: Epoch,
    lineage: u64,
}

/// What a task's last commit recorded.
#[derive(Clone, Debug, Default)]
struct LastCommit {
    epoch: u64,
    positions: BTreeMap<String, u64>,
    watermark: Option<Timestamp>,
}

/// A processor whose epochs are committed to a lake.
pub struct Pipeline {
    processor: Processor,
    lake: Lake,
    runtime: tokio::runtime::Runtime,
    /// The tasks this pipeline commits; `None`: all of them (`replay`).
    owned: Option<BTreeSet<TaskId>>,
    /// Whether epochs keep an outbox of what they publish (`run`).
    outbox: bool,
    /// Per task: last committed epoch, and the positions and watermark it recorded.
    committed: BTreeMap<TaskId, LastCommit>,
    /// Per task: its current lineage, counted up on each acquire, so a
    /// fence reported late never drops a task acquired again since.
    lineages: BTreeMap<TaskId, u64>,
    next_lineage: u64,
    jobs: Option<SyncSender<Job>>,
    writer: Option<JoinHandle<Result<()>>>,
    /// Epochs made durable by the writer. Unbounded, but never longer than
    /// the epochs handed to the bounded job channel and not yet taken back.
    done: Receiver<Written>,
    in_flight: usize,
    ready: Vec<Committed>,
    /// Tasks given up because another writer committed them (see [`Lake`]).
    fenced: Vec<TaskId>,
    totals: Totals,
}

impl Pipeline {
    /// Opens the pipeline on `lake` owning every task: each resumes from its
    /// latest commit, and files of uncommitted epochs are deleted.
    pub fn open(lake: Lake, config: ProcessorConfig, partitions: u32) -> Result<Pipeline> {
        let mut pipeline = Pipeline::start(lake, config, partitions, None, false)?;
        let ids: Vec<TaskId> = pipeline.processor.tasks().map(|task| task.id()).collect();
        for id in ids {
            pipeline.recover(id)?;
        }
        Ok(pipeline)
    }

    /// Opens the pipeline on `lake` owning no task yet: tasks join with
    /// [`Pipeline::acquire`] and leave with [`Pipeline::release`], as Kafka
    /// assigns and revokes partitions. Epochs keep an outbox.
    pub fn open_owning_none(lake: Lake, config: ProcessorConfig, partitions: u32) -> Result<Pipeline> {
        Pipeline::start(lake, config, partitions, Some(BTreeSet::new()), true)
    }

    fn start(
        lake: Lake,
        config: ProcessorConfig,
        partitions: u32,
        owned: Option<BTreeSet<TaskId>>,
        outbox: bool,
    ) -> Result<Pipeline> {
        let processor = Processor::new(config, partitions);
        let runtime = runtime()?;
        // The Delta tables exist from the start, so readers never take a lake
        // being written for one of the earlier layout; and a lake of the
        // earlier layout is published (migrated) before anything is added.
        runtime.block_on(lake.publish())?;
        let (jobs, inbox) = sync_channel::<Job>(1);
        let (done_tx, done) = channel::<Written>();
        let writer_lake = lake.clone();
        let writer = std::thread::Builder::new()
            .name("lake-writer".to_owned())
            .spawn(move || write_epochs(writer_lake, inbox, done_tx))
            .map_err(|source| Error::Start { what: "lake writer thread", source })?;
        Ok(Pipeline {
            processor,
            lake,
            runtime,
            owned,
            outbox,
            committed: BTreeMap::new(),
            lineages: BTreeMap::new(),
            next_lineage: 0,
            jobs: Some(jobs),
            writer: Some(writer),
            done,
            in_flight: 0,
            ready: Vec::new(),
            fenced: Vec::new(),
            totals: Totals::default(),
        })
    }

    /// Restores a task from its latest commit (or empties it), after deleting
    /// what it wrote for uncommitted epochs. Returns that commit's outbox.
    fn recover(&mut self, id: TaskId) -> Result<Vec<OutboxMessage>> {
        let recovered = self.runtime.block_on(self.lake.recover(id))?;
        self.restore_from(id, recovered)
    }

    fn restore_from(
        &mut self,
        id: TaskId,
        recovered: Option<(CommitRecord, bytes::Bytes)>,
    ) -> Result<Vec<OutboxMessage>> {
        match recovered {
            Some((record, state)) => {
                self.processor.restore(id, &state, &record.state)?;
                let outbox = self.runtime.block_on(self.lake.read_outbox(&record))?;
                let last = LastCommit { epoch: record.epoch, positions: record.positions, watermark: record.watermark };
                self.committed.insert(id, last);
                Ok(outbox)
            }
            None => {
                self.processor.reset(id);
                self.committed.remove(&id);
                Ok(Vec::new())
            }
        }
    }

    /// Loads a task's latest committed state without owning it and without
    /// touching the lake (another instance may own it and be mid-epoch).
    pub fn load(&mut self, id: TaskId) -> Result<()> {
        match self.runtime.block_on(self.lake.latest(id))? {
            Some((record, state)) => self.processor.restore(id, &state, &record.state),
            None => {
                self.processor.reset(id);
                Ok(())
            }
        }
    }

    /// The latest commit record of every task in `ids` that has one.
    pub fn latest_records(&self, ids: &[TaskId]) -> Result<Vec<CommitRecord>> {
        let mut records = Vec::new();
        for &id in ids {
            if let Some(record) = self.runtime.block_on(self.lake.latest_record(id))? {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Takes ownership of a task (its partition was assigned): it claims
    /// the task's next epoch in the lake (fencing a previous owner that may
    /// still run) and resumes from its latest commit. Returns where it
    /// resumes (source → next offset) and the outbox of that commit, to
    /// publish again in case the previous owner stopped before it did.
    pub fn acquire(&mut self, id: TaskId) -> Result<(BTreeMap<String, u64>, Vec<OutboxMessage>)> {
        self.sync()?;
        let claimed = self.runtime.block_on(self.lake.claim(id))?;
        let outbox = self.restore_from(id, claimed)?;
        if let Some(owned) = &mut self.owned {
            owned.insert(id);
        }
        self.next_lineage += 1;
        self.lineages.insert(id, self.next_lineage);
        let positions = self.processor.task(id).map(|task| task.positions().clone()).unwrap_or_default();
        Ok((positions, outbox))
    }

    /// Gives up tasks (their partitions are being revoked): their changes are
    /// committed and durable before this returns, then their state is dropped.
    pub fn release(&mut self, ids: &[TaskId]) -> Result<()> {
        self.commit_where(|id| ids.contains(&id))?;
        self.sync()?;
        self.forget(ids);
        Ok(())
    }

    /// Whether this pipeline commits task `id`.
    pub fn owns(&self, id: TaskId) -> bool {
        self.owned.as_ref().is_none_or(|owned| owned.contains(&id))
    }

    /// The tasks this pipeline commits (`None`: every task).
    pub fn owned(&self) -> Option<&BTreeSet<TaskId>> {
        self.owned.as_ref()
    }

    /// Drops tasks without committing (their partitions were lost to another
    /// instance, which resumes them from their last commit).
    pub fn forget(&mut self, ids: &[TaskId]) {
        for &id in ids {
            if let Some(owned) = &mut self.owned {
                owned.remove(&id);
            }
            self.committed.remove(&id);
            self.processor.reset(id);
        }
    }

    /// The processor, to read.
    pub fn processor_ref(&self) -> &Processor {
        &self.processor
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

    /// Epochs made durable since the last call, oldest first.
    pub fn take_committed(&mut self) -> Vec<Committed> {
        while let Ok(done) = self.done.try_recv() {
            self.written(done);
        }
        std::mem::take(&mut self.ready)
    }

    /// Tasks given up since the last call because another writer committed
    /// them: that writer owns them now. Their state here is gone.
    pub fn take_fenced(&mut self) -> Vec<TaskId> {
        std::mem::take(&mut self.fenced)
    }

    fn written(&mut self, done: Written) {
        self.in_flight -= 1;
        match done {
            Written::Committed(done) => self.ready.push(done),
            Written::Fenced { task, lineage } => {
                if self.lineages.get(&task) == Some(&lineage) && self.owns(task) {
                    tracing::warn!(%task, "another writer committed this task: giving it up");
                    self.forget(&[task]);
                    self.fenced.push(task);
                }
            }
        }
    }

    /// Waits until every epoch handed to the writer is durable.
    pub fn sync(&mut self) -> Result<()> {
        while self.in_flight > 0 {
            match self.done.recv() {
                Ok(done) => self.written(done),
                Err(_) => return self.writer_stopped(),
            }
        }
        Ok(())
    }

    /// Flushes every owned task and hands each changed one to the writer as its next epoch.
    pub fn commit(&mut self) -> Result<()> {
        self.commit_where(|_| true)
    }

    fn commit_where(&mut self, selected: impl Fn(TaskId) -> bool) -> Result<()> {
        let owned = self.owned.clone();
        let is_owned = |id: TaskId| owned.as_ref().is_none_or(|owned| owned.contains(&id));
        let epochs = self.processor.flush_where(|id| is_owned(id) && selected(id));
        for (id, rows) in epochs {
            let Some(task) = self.processor.task(id) else { continue };
            let positions = task.positions().clone();
            let watermark = Some(task.watermark()).filter(|w| w.micros() != i64::MIN);
            let last = self.committed.get(&id).cloned().unwrap_or_default();
            // An epoch that only moves the watermark is committed too: `run
            // --stop-at-end` reads the end of the input from it.
            let unchanged = positions == last.positions && watermark == last.watermark;
            if rows.n_rows() == 0 && rows.reevaluations.is_empty() && unchanged {
                continue;
            }
            let job = Epoch {
                task: id,
                epoch: last.epoch + 1,
                state: self.processor.snapshot(id)?,
                watermark,
                max_event_time: task.max_event_time(),
                positions: positions.clone(),
                outbox: if self.outbox { rows.outbox() } else { Vec::new() },
                rows,
            };
            self.count(&job.rows);
            self.committed.insert(id, LastCommit { epoch: job.epoch, positions, watermark });
            let job = Job { epoch: job, lineage: self.lineages.get(&id).copied().unwrap_or(0) };
            let sent = self.jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok());
            if !sent {
                return self.writer_stopped();
            }
            self.in_flight += 1;
        }
        Ok(())
    }

    /// The writer stopped on an error: join it to report the error.
    fn writer_stopped(&mut self) -> Result<()> {
        self.join_writer().and(Err(Error::Writer { how: "stopped" }))
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
            ("clock_watermarks", rows.clock_watermarks.len()),
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
            Some(Err(_)) => Err(Error::Writer { how: "panicked" }),
            None => Ok(()),
        }
    }

    /// The end of the input: watermarks of the owned tasks move to their
    /// largest event time, the last epoch is committed, the writer drains,
    /// and every committed epoch is published to the Delta tables.
    pub fn finish(mut self) -> Result<Totals> {
        self.finish_input(None)?;
        self.join_writer()?;
        self.runtime.block_on(self.lake.publish())?;
        Ok(self.totals.clone())
    }

    /// Waits until every epoch handed to the writer is durable, then
    /// publishes the committed epochs to the Delta tables (what `run`'s
    /// publisher does on its own thread).
    pub fn publish(&mut self) -> Result<crate::delta::Publication> {
        self.sync()?;
        self.runtime.block_on(self.lake.publish())
    }

    /// [`Pipeline::finish`] without stopping: commits the end of the input
    /// (watermarks up to `max_time`, by default the owned tasks' largest
    /// event time) and waits until it is durable (`run --stop-at-end`).
    pub fn finish_input(&mut self, max_time: Option<Timestamp>) -> Result<()> {
        let owned = self.owned.clone();
        self.processor.finish_input_where(max_time, |id| owned.as_ref().is_none_or(|owned| owned.contains(&id)));
        self.commit()?;
        self.sync()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Start { what: "lake runtime", source })
}

fn write_epochs(lake: Lake, inbox: Receiver<Job>, done: Sender<Written>) -> Result<()> {
    let runtime = runtime()?;
    let mut fenced: BTreeSet<(TaskId, u64)> = BTreeSet::new();
    for Job { epoch: job, lineage } in inbox {
        let task = job.task;
        // The receiver is gone only when the pipeline is dropped: nobody waits.
        if fenced.contains(&(task, lineage)) {
            let _ = done.send(Written::Fenced { task, lineage });
            continue;
        }
        // Empty unless the pipeline keeps an outbox (`run`).
        let outbox = job.outbox.clone();
        match runtime.block_on(lake.commit(job)) {
            Ok(record) => {
                let (epoch, positions) = (record.epoch, record.positions);
                let _ = done.send(Written::Committed(Committed { task, epoch, positions, outbox }));
            }
            Err(Error::Fenced { .. }) => {
                fenced.insert((task, lineage));
                let _ = done.send(Written::Fenced { task, lineage });
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
