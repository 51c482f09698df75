//! `patchtrail lake migrate`: a lake of an earlier layout converted in place.
//!
//! Two earlier layouts kept a revised table's every revision under
//! `<table>/date=…/`: the first with no Delta logs at all (the commit log was
//! the only index), the second with `<table>/` a Delta table of revisions.
//! Migration copies those files to `<table>_history/` under the same names,
//! gives the history the old Delta log's files and `txn` versions (so epochs
//! whose commit records were pruned stay published exactly once), deletes
//! `<table>/`, then publishes: the current rows start from the history
//! ([`crate::current`]). Each step can be run again after a crash: the copy
//! is redone until the history's log holds it, and `<table>/` is deleted only
//! after.

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use schemas::Table;

use crate::delta::{Part, Publication, app_id, delta_error, previous_watermarks, txn_versions, watermarks_metadata};
use crate::error::{Error, Result};
use crate::lake::Lake;

impl Lake {
    /// Converts a lake of an earlier layout (see the module), then publishes
    /// every committed epoch. On a lake of this layout it only publishes.
    pub async fn migrate(&self) -> Result<Publication> {
        let tasks: Vec<_> = self.committed_epochs_by_task().await?.into_keys().collect();
        for table in Table::ALL.into_iter().filter(|table| table.is_revised()) {
            let dir = Path::from(table.name());
            let storage = |path: &Path| {
                let path = path.to_string();
                move |source| Error::Storage { path, source }
            };
            let listed: Vec<_> = self.store().list(Some(&dir)).try_collect().await.map_err(storage(&dir))?;
            let revisions: Vec<&Path> =
                listed.iter().map(|meta| &meta.location).filter(|path| path.as_ref().contains("/date=")).collect();
            if revisions.is_empty() {
                continue;
            }
            let history = Part::History(table);
            // Version 0 is the empty table a crashed migration may have created.
            let copied = self.load_table(history).await?.is_some_and(|delta| delta.version().unwrap_or(0) > 0);
            if !copied {
                let target = history.dir();
                for path in &revisions {
                    let relative = path.as_ref().strip_prefix(dir.as_ref()).unwrap_or(path.as_ref());
                    let to = Path::from(format!("{target}{relative}"));
                    self.store().copy(path, &to).await.map_err(storage(path))?;
                }
                if let Some(old) = self.load_table(Part::Current(table)).await? {
                    let old_part = Part::Current(table);
                    let snapshot = old.snapshot().map_err(delta_error(old_part))?;
                    let mut actions = Vec::new();
                    for file in snapshot.log_data() {
                        let path = file.object_store_path().to_string();
                        let date = path.split('/').next().and_then(|dir| dir.strip_prefix("date=")).map(str::to_owned);
                        actions.push(Action::Add(Add {
                            path,
                            partition_values: HashMap::from([("date".to_owned(), date)]),
                            size: file.size(),
                            modification_time: file.modification_time(),
                            data_change: true,
                            ..Default::default()
                        }));
                    }
                    let transactions: Vec<Transaction> = txn_versions(&old, old_part, &tasks)
                        .await?
                        .into_iter()
                        .filter_map(|(task, version)| Some(Transaction::new(app_id(task), version? as i64)))
                        .collect();
                    let watermarks: BTreeMap<String, String> = previous_watermarks(&old).await;
                    let delta = self.table_for_writing(history).await?;
                    let properties = CommitProperties::default()
                        .with_max_retries(0)
                        .with_application_transactions(transactions)
                        .with_metadata(watermarks_metadata(&watermarks));
                    let operation =
                        DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
                    let snapshot = delta.snapshot().map_err(delta_error(history))?;
                    CommitBuilder::from(properties)
                        .with_actions(actions)
                        .build(Some(snapshot), delta.log_store(), operation)
                        .await
                        .map_err(delta_error(history))?;
                }
            }
            for meta in &listed {
                self.store().delete(&meta.location).await.map_err(storage(&meta.location))?;
            }
            tracing::info!(table = table.name(), files = revisions.len(), "moved the revisions to the history table");
        }
        self.publish().await
    }
}
