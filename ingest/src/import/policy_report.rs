//! Kubernetes PolicyReports and ClusterPolicyReports (`wgpolicyk8s.io`
//! v1alpha2, `reports.x-k8s.io` v1beta1; Kyverno, the Trivy operator and
//! adapter, …) → `posture.assessment.v1`, one per report and resource.
//!
//! - The resource of a result: each of its `resources[]`; else the
//!   report's `scope`; else the report's first owner reference (in the
//!   report's namespace). The asset id is taken from the resource by the
//!   user's rule (`--asset-from name|uid|namespaced-name`, or `--asset ID`).
//! - `compliant`: no result of the resource is `fail` or `error`.
//! - `failed_checks`: `policy/rule` (or `policy`) of those results, sorted.
//! - `trust_score`: the share of the resource's results that `pass`
//!   among those that `pass`, `fail`, `warn` or `error` (`skip` does not
//!   count), × 100; 100 when none does.
//! - Results without a `result` field (the Trivy adapter wrote none) leave
//!   only the report's `summary` to go by: then `compliant` is
//!   `summary.fail + summary.error == 0`, `trust_score` the same share
//!   from the summary, and `failed_checks` is empty (the summary does not
//!   say which ones failed).
//! - time: the latest result `timestamp` (`{seconds, nanos}`, nanos may be
//!   negative), else `metadata.creationTimestamp`, else `--time`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::k8s::text;
use super::{Record, event, event_id, lenient_timestamp};
use schemas::{EventData, PostureAssessment, Timestamp};

/// The `source` of policy report events.
pub const SOURCE: &str = "https://github.com/kubernetes-sigs/wg-policy-prototypes/tree/master/policy-report";

/// Which asset a resource is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceAsset {
    /// This asset, whatever the resource (`--asset ID`).
    Fixed(String),
    /// The resource's `name`.
    Name,
    /// The resource's `uid`.
    Uid,
    /// `namespace/name` (`name` for cluster-scoped resources).
    NamespacedName,
}

#[derive(Default)]
struct Tally {
    resource: Value,
    pass: u64,
    counted: u64,
    failed: Vec<String>,
    unstated: u64,
    latest: Option<Timestamp>,
}

/// Converts one object; a report yields one record per resource.
pub fn convert(position: String, report: &Value, asset: &ResourceAsset, time: Option<Timestamp>) -> Vec<Record> {
    match report.get("kind").and_then(Value::as_str) {
        Some("PolicyReport" | "ClusterPolicyReport") => {}
        Some(_) => return vec![Record::Ignored { position, reason: "objects that are not policy reports" }],
        None => return vec![Record::failed(position, "not a Kubernetes object (no kind)")],
    }
    let name = text(report, "/metadata/name").unwrap_or("(unnamed)").to_owned();
    let namespace = text(report, "/metadata/namespace");
    let position = format!("{position} ({name})");
    let report_resource = report.get("scope").filter(|scope| scope.is_object()).cloned().or_else(|| {
        let owner = report.pointer("/metadata/ownerReferences/0")?.clone();
        let mut owner = owner;
        if let (Some(object), Some(namespace)) = (owner.as_object_mut(), namespace) {
            object.entry("namespace").or_insert_with(|| Value::String(namespace.to_owned()));
        }
        Some(owner)
    });
    let results = report.get("results").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for (idx, result) in results.iter().enumerate() {
        let resources: Vec<Value> = match result.get("resources").and_then(Value::as_array) {
            Some(listed) if !listed.is_empty() => listed.clone(),
            _ => match &report_resource {
                Some(resource) => vec![resource.clone()],
                None => {
                    return vec![Record::failed(
                        format!("{position} result {}", idx + 1),
                        "names no resource, and the report has no scope or owner reference",
                    )];
                }
            },
        };
        let at = result.get("timestamp").and_then(|stamp| {
            let seconds = stamp.get("seconds")?.as_i64()?;
            let nanos = stamp.get("nanos").and_then(Value::as_i64).unwrap_or(0);
            Timestamp::from_unix_micros(seconds.checked_mul(1_000_000)?.checked_add(nanos.div_euclid(1_000))?)
        });
        for resource in resources {
            let identity = resource_identity(&resource);
            let tally = tallies.entry(identity).or_insert_with(|| Tally { resource, ..Tally::default() });
            tally.latest = tally.latest.max(at);
            match result.get("result").and_then(Value::as_str) {
                Some("pass") => {
                    tally.pass += 1;
                    tally.counted += 1;
                }
                Some("warn") => tally.counted += 1,
                Some("fail" | "error") => {
                    tally.counted += 1;
                    let policy = text(result, "/policy").unwrap_or("(unnamed policy)");
                    tally.failed.push(match text(result, "/rule") {
                        Some(rule) => format!("{policy}/{rule}"),
                        None => policy.to_owned(),
                    });
                }
                Some("skip") => {}
                Some(other) => {
                    return vec![Record::failed(
                        format!("{position} result {}", idx + 1),
                        format!("unknown result {other:?}"),
                    )];
                }
                None => tally.unstated += 1,
            }
        }
    }
    if tallies.is_empty() {
        return vec![Record::Ignored { position, reason: "policy reports without results" }];
    }
    let summary = |key: &str| report.pointer(&format!("/summary/{key}")).and_then(Value::as_u64).unwrap_or(0);
    let created = text(report, "/metadata/creationTimestamp").and_then(lenient_timestamp);
    let mut out = Vec::new();
    for (identity, mut tally) in tallies {
        let resource_position = format!("{position} resource {identity}");
        let asset_id = match asset {
            ResourceAsset::Fixed(id) => Some(id.clone()),
            ResourceAsset::Name => text(&tally.resource, "/name").map(str::to_owned),
            ResourceAsset::Uid => text(&tally.resource, "/uid").map(str::to_owned),
            ResourceAsset::NamespacedName => {
                text(&tally.resource, "/name").map(|name| match text(&tally.resource, "/namespace") {
                    Some(namespace) => format!("{namespace}/{name}"),
                    None => name.to_owned(),
                })
            }
        };
        let Some(asset_id) = asset_id else {
            out.push(Record::failed(
                resource_position,
                format!("the resource has no field for --asset-from {asset:?}"),
            ));
            continue;
        };
        let (compliant, trust_score) = if tally.unstated > 0 && tally.counted == 0 {
            let (pass, fail, warn, error) = (summary("pass"), summary("fail"), summary("warn"), summary("error"));
            let counted = pass + fail + warn + error;
            (fail + error == 0, if counted == 0 { 100.0 } else { 100.0 * pass as f64 / counted as f64 })
        } else {
            let score = if tally.counted == 0 { 100.0 } else { 100.0 * tally.pass as f64 / tally.counted as f64 };
            (tally.failed.is_empty(), score)
        };
        let Some(time) = tally.latest.or(created).or(time) else {
            out.push(Record::failed(resource_position, "no result timestamp or creationTimestamp; give --time"));
            continue;
        };
        tally.failed.sort();
        tally.failed.dedup();
        let id = event_id(
            "policy-report",
            &[
                namespace.unwrap_or(""),
                &name,
                &identity,
                &time.to_string(),
                &format!("{compliant}/{trust_score}/{}", tally.failed.join(",")),
            ],
        );
        let data = PostureAssessment {
            asset_id,
            trust_score: (trust_score * 100.0).round() / 100.0,
            compliant,
            trigger: None,
            deployment_id: None,
            failed_checks: tally.failed,
        };
        out.push(Record::Event(event(id, SOURCE, time, EventData::PostureAssessment(data))));
    }
    out
}

/// A resource reference as one string: its uid, else kind/namespace/name.
fn resource_identity(resource: &Value) -> String {
    if let Some(uid) = text(resource, "/uid") {
        return uid.to_owned();
    }
    [text(resource, "/kind"), text(resource, "/namespace"), text(resource, "/name")]
        .iter()
        .map(|part| part.unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}
