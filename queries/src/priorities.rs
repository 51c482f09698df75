//! Prioritization (DOMAIN.md "Prioritization"): the queue as typed rows computed once from the `priorities` view of a
//! snapshot, the messages that take the priorities topic from the queue it
//! last got to the current one, and [`QueueSink`], the trait the binary
//! plugs its Kafka publisher into (this crate never talks to Kafka).

use std::collections::BTreeMap;
use std::sync::Arc;

use schemas::Timestamp;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::columns::{Columns, flag_at, float_at, int_at, text_at, time_at};
use crate::error::QueryError;
use crate::session::LakeSession;
pub use crate::weights::Weights;

/// One row of the queue, as `GET /v1/priorities` answers it and the
/// priorities topic carries it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueueRow {
    /// 1 = patch first.
    pub rank: u64,
    /// The asset.
    pub asset_id: String,
    /// The CVE open on it.
    pub cve_id: String,
    /// The most recently released patch that fixes the CVE.
    pub patch_id: Option<String>,
    /// The risk score (null when the exposure's CVSS is unknown).
    pub score: Option<f64>,
    /// The remediation deadline.
    pub due_at: Option<Timestamp>,
    /// The patch's latest rollout is on hold or rolled back.
    pub blocked_by_canary: bool,
    /// The exposure's severity.
    pub severity: Option<String>,
    /// The CVE is in CISA's KEV catalog.
    pub kev: bool,
    /// The CVE's EPSS score.
    pub epss: Option<f64>,
    /// When the exposure was first detected.
    pub detected_at: Timestamp,
}

impl QueueRow {
    /// The key of its message on the priorities topic.
    pub fn key(&self) -> String {
        format!("{}/{}", self.asset_id, self.cve_id)
    }
}

/// The whole queue of one snapshot of the lake.
#[derive(Clone, Debug, Default)]
pub struct Queue {
    /// The lake's as-of time the queue was computed at.
    pub as_of: Option<Timestamp>,
    /// Every row, by rank.
    pub rows: Arc<Vec<QueueRow>>,
}

impl Queue {
    /// The `priorities` view of `session`, whole, by rank.
    pub async fn compute(session: &LakeSession) -> Result<Queue, QueryError> {
        let rows = read_queue(session, "SELECT * FROM priorities ORDER BY rank").await?;
        Ok(Queue { as_of: session.as_of(), rows: Arc::new(rows) })
    }

    /// The first `n` rows of the queue of `session`.
    pub async fn top(session: &LakeSession, n: usize) -> Result<Vec<QueueRow>, QueryError> {
        read_queue(session, &format!("SELECT * FROM priorities ORDER BY rank LIMIT {n}")).await
    }

    /// The priorities topic's content for this queue: key → the row as JSON.
    pub fn messages(&self) -> BTreeMap<String, String> {
        self.rows.iter().map(|row| (row.key(), serde_json::to_string(row).expect("a queue row serializes"))).collect()
    }
}

/// The rows of a query over the `priorities` view.
async fn read_queue(session: &LakeSession, sql: &str) -> Result<Vec<QueueRow>, QueryError> {
    let (_, batches) = session.query(sql).await?;
    let mut rows = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for batch in &batches {
        let columns = Columns::new(batch);
        let (rank, asset, cve, patch) =
            (columns.int("rank")?, columns.text("asset_id")?, columns.text("cve_id")?, columns.text("patch_id")?);
        let (score, due, blocked) =
            (columns.float("score")?, columns.time("due_at")?, columns.flag("blocked_by_canary")?);
        let (severity, kev, epss) = (columns.text("severity")?, columns.flag("kev")?, columns.float("epss")?);
        let detected = columns.time("detected_at")?;
        for row in 0..columns.len() {
            let required = |what: &str| QueryError::Internal(format!("priorities: {what} is null in row {row}"));
            rows.push(QueueRow {
                rank: int_at(&rank, row).and_then(|r| u64::try_from(r).ok()).ok_or_else(|| required("rank"))?,
                asset_id: text_at(&asset, row).ok_or_else(|| required("asset_id"))?.to_owned(),
                cve_id: text_at(&cve, row).ok_or_else(|| required("cve_id"))?.to_owned(),
                patch_id: text_at(&patch, row).map(str::to_owned),
                score: float_at(&score, row),
                due_at: time_at(&due, row),
                blocked_by_canary: flag_at(&blocked, row).unwrap_or(false),
                severity: text_at(&severity, row).map(str::to_owned),
                kev: flag_at(&kev, row).unwrap_or(false),
                epss: float_at(&epss, row),
                detected_at: time_at(&detected, row).ok_or_else(|| required("detected_at"))?,
            });
        }
    }
    Ok(rows)
}

/// One message for the priorities topic: a row (new or changed), or a
/// tombstone (`value: None`) for a key that left the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueChange {
    /// `asset_id/cve_id`.
    pub key: String,
    /// The row as JSON; `None`: a tombstone.
    pub value: Option<String>,
}

/// Messages that take the topic from `published` to `current`: new or
/// changed rows, and a tombstone for each key that left the queue.
pub fn queue_changes(published: &BTreeMap<String, String>, current: &BTreeMap<String, String>) -> Vec<QueueChange> {
    let mut changes: Vec<QueueChange> = current
        .iter()
        .filter(|(key, value)| published.get(*key) != Some(*value))
        .map(|(key, value)| QueueChange { key: key.clone(), value: Some(value.clone()) })
        .collect();
    changes.extend(
        published
            .keys()
            .filter(|key| !current.contains_key(*key))
            .map(|key| QueueChange { key: key.clone(), value: None }),
    );
    changes
}

/// Where the queue goes: the binary implements it over a Kafka producer.
pub trait QueueSink: Send + 'static {
    /// Sends `changes` and waits until they are delivered; gives up with
    /// an error when they cannot be, or when `cancel` is cancelled.
    fn send(&mut self, changes: &[QueueChange], cancel: &CancellationToken) -> Result<(), String>;
}

/// Publishes queues to a sink as changes against what it sent last.
pub struct QueuePublisher {
    sink: Box<dyn QueueSink>,
    /// What the topic holds, as far as this process published it.
    published: BTreeMap<String, String>,
}

impl QueuePublisher {
    /// A publisher that has sent nothing yet (a restarted `serve` sends the
    /// whole queue again).
    pub fn new(sink: Box<dyn QueueSink>) -> Self {
        QueuePublisher { sink, published: BTreeMap::new() }
    }

    /// Sends what changed since the last successful publication; how many
    /// messages that was. On failure nothing counts as published.
    pub fn publish(&mut self, queue: &Queue, cancel: &CancellationToken) -> Result<usize, String> {
        let current = queue.messages();
        let changes = queue_changes(&self.published, &current);
        self.sink.send(&changes, cancel)?;
        self.published = current;
        Ok(changes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_changes_send_new_and_changed_rows_and_tombstones_for_the_rest() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let change =
            |key: &str, value: Option<&str>| QueueChange { key: key.to_owned(), value: value.map(str::to_owned) };
        let published = map(&[("a/1", "x"), ("b/2", "y"), ("c/3", "z")]);
        let current = map(&[("a/1", "x"), ("b/2", "y2"), ("d/4", "w")]);
        let changes = queue_changes(&published, &current);
        assert_eq!(changes, vec![change("b/2", Some("y2")), change("d/4", Some("w")), change("c/3", None)]);
        assert!(queue_changes(&current, &current).is_empty());
    }
}
