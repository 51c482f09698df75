//! Argo Rollouts AnalysisRuns → `canary.stage.v1`, one event per finished
//! run.
//!
//! - `rollout_id`: `<namespace>/<rollout>@<revision>`, the Rollout from
//!   the run's owner reference (`kind: Rollout`), the revision from its
//!   `rollout.argoproj.io/revision` annotation (each revision of a Rollout
//!   is a rollout of one pod template, i.e. of one patch). A run with no
//!   Rollout owner is reported.
//! - `stage`: the `step-index` label Argo puts on a canary step's run; a
//!   background, pre- or post-promotion analysis (no `step-index`) judges
//!   the revision as a whole and is stage 0.
//! - `verdict`: `status.phase` (`Successful`, `Failed`, `Inconclusive`,
//!   `Error`) in lower case; `Pending` and `Running` runs have none yet.
//! - `failed_checks`: Σ `status.metricResults[].failed`.
//! - `patch_id`: from the annotation or label the user names
//!   (`--patch-from`); Argo has no such field.
//! - time: the last `measurements[].finishedAt`, else `status.startedAt`,
//!   else `metadata.creationTimestamp`.

use serde_json::Value;

use super::k8s::{MetaField, text};
use super::{Record, event, event_id, lenient_timestamp};
use schemas::{CanaryStage, EventData, Timestamp, Verdict};

/// The `source` of Argo Rollouts events.
pub const SOURCE: &str = "https://argoproj.github.io/argo-rollouts/features/analysis/";

/// Converts one object.
pub fn convert(position: String, object: &Value, patch_from: &MetaField) -> Record {
    match object.get("kind").and_then(Value::as_str) {
        Some("AnalysisRun") => {}
        Some(_) => return Record::Ignored { position, reason: "objects that are not AnalysisRuns" },
        None => return Record::failed(position, "not a Kubernetes object (no kind)"),
    }
    let name = text(object, "/metadata/name").unwrap_or("(unnamed)");
    let position = format!("{position} (AnalysisRun {name})");
    let verdict = match text(object, "/status/phase") {
        Some("Successful") => Verdict::Successful,
        Some("Failed") => Verdict::Failed,
        Some("Inconclusive") => Verdict::Inconclusive,
        Some("Error") => Verdict::Error,
        Some("Pending" | "Running") | None => {
            return Record::Ignored { position, reason: "analysis runs not finished" };
        }
        Some(other) => return Record::failed(position, format!("unknown phase {other:?}")),
    };
    let owner = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|owners| owners.iter().find(|o| o.get("kind").and_then(Value::as_str) == Some("Rollout")))
        .and_then(|owner| text(owner, "/name"));
    let Some(rollout) = owner else {
        return Record::failed(position, "no Rollout owner reference: the run names no rollout");
    };
    let Some(revision) = MetaField::Annotation("rollout.argoproj.io/revision".to_owned()).get(object) else {
        return Record::failed(position, "no rollout.argoproj.io/revision annotation");
    };
    let rollout_id = match text(object, "/metadata/namespace") {
        Some(namespace) => format!("{namespace}/{rollout}@{revision}"),
        None => format!("{rollout}@{revision}"),
    };
    let Some(patch_id) = patch_from.get(object) else {
        return Record::failed(position, format!("no {patch_from} (--patch-from) to name the patch"));
    };
    let stage = match MetaField::Label("step-index".to_owned()).get(object) {
        Some(index) => match index.parse::<u32>() {
            Ok(stage) => stage,
            Err(_) => return Record::failed(position, format!("step-index {index:?} is not a step number")),
        },
        None => 0,
    };
    let metrics = object.pointer("/status/metricResults").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let failed_checks: u64 = metrics.iter().filter_map(|m| m.get("failed").and_then(Value::as_u64)).sum();
    let finished: Option<Timestamp> = metrics
        .iter()
        .filter_map(|m| m.get("measurements").and_then(Value::as_array))
        .flatten()
        .filter_map(|m| m.get("finishedAt").and_then(Value::as_str).and_then(lenient_timestamp))
        .max();
    let time = finished
        .or_else(|| text(object, "/status/startedAt").and_then(lenient_timestamp))
        .or_else(|| text(object, "/metadata/creationTimestamp").and_then(lenient_timestamp));
    let Some(time) = time else {
        return Record::failed(position, "no finishedAt, startedAt or creationTimestamp to time it by");
    };
    let uid = text(object, "/metadata/uid").unwrap_or(name);
    let id = event_id("argo-rollouts", &[uid, &rollout_id, verdict.as_str(), &time.to_string()]);
    let data = CanaryStage {
        rollout_id,
        patch_id: patch_id.to_owned(),
        stage,
        verdict,
        cohort_size: None,
        failed_checks: Some(failed_checks),
        action: None,
    };
    Record::Event(event(id, SOURCE, time, EventData::CanaryStage(data)))
}
