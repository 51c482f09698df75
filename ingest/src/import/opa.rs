//! OPA decision logs → `policy.decision.v1`: console lines (one JSON object
//! per line, the decision inside a logger record, `"msg":"Decision Log"`)
//! or the upload format (the JSON array the decision-log plugin POSTs,
//! plain or gzip).
//!
//! A decision names no device: the asset is read at a JSON pointer into
//! the decision that the user names (`--asset-pointer`, e.g.
//! `/input/attributes/source/address/socketAddress/address` for Envoy).
//! The decision comes from `result`: `true`/`false` (or the strings
//! `"true"`, `"false"`, `"allow"`, `"deny"`, `"step_up"`), or, for a
//! policy returning an object, the value at `--result-pointer` inside it.
//! `policy_id` is the query `path`, `policy_version` the bundle revision
//! (`name:revision`, comma-separated when several bundles answered), the
//! time `timestamp`, the id OPA's `decision_id`.

use serde_json::Value;

use super::{Record, event, event_id, lenient_timestamp};
use schemas::{Decision, EventData, PolicyDecision};

/// The `source` of OPA decision events.
pub const SOURCE: &str = "https://www.openpolicyagent.org/docs/management-decision-logs";

/// Where the decision states what an event needs.
pub struct Options<'a> {
    /// JSON pointer to the asset id, from the decision's root.
    pub asset: &'a str,
    /// JSON pointer into an object `result` to the decision.
    pub result: Option<&'a str>,
}

/// Converts one decision (a console line's object, or an element of an
/// uploaded array).
pub fn convert(position: String, decision: &Value, options: &Options<'_>) -> Record {
    let Some(object) = decision.as_object() else {
        return Record::failed(position, "a decision log entry must be a JSON object");
    };
    let Some(decision_id) = object.get("decision_id").and_then(Value::as_str) else {
        return match object.get("msg").and_then(Value::as_str) {
            Some(msg) if msg != "Decision Log" => {
                Record::Ignored { position, reason: "log lines that are not decisions" }
            }
            _ => Record::failed(position, "the decision has no decision_id"),
        };
    };
    let Some(path) = object.get("path").and_then(Value::as_str).filter(|p| !p.is_empty()) else {
        return Record::failed(position, format!("decision {decision_id}: no path (the policy queried)"));
    };
    let Some(time) = object.get("timestamp").and_then(Value::as_str).and_then(lenient_timestamp) else {
        return Record::failed(position, format!("decision {decision_id}: no RFC 3339 timestamp"));
    };
    let asset_id = match decision.pointer(options.asset) {
        Some(Value::String(text)) if !text.is_empty() => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => {
            return Record::failed(
                position,
                format!("decision {decision_id}: no asset id at {} (--asset-pointer)", options.asset),
            );
        }
    };
    let result = object.get("result");
    let value = match (result, options.result) {
        (Some(Value::Object(_)), Some(pointer)) => result.and_then(|r| r.pointer(pointer)),
        (Some(Value::Object(_)), None) => {
            return Record::failed(
                position,
                format!(
                    "decision {decision_id}: the result is an object; name the decision in it with --result-pointer"
                ),
            );
        }
        (result, _) => result,
    };
    let decided = match value {
        Some(Value::Bool(true)) => Decision::Allow,
        Some(Value::Bool(false)) => Decision::Deny,
        Some(Value::String(text)) => match text.to_ascii_lowercase().as_str() {
            "true" | "allow" => Decision::Allow,
            "false" | "deny" => Decision::Deny,
            "step_up" | "step-up" => Decision::StepUp,
            _ => return Record::failed(position, format!("decision {decision_id}: result {text:?} is not a decision")),
        },
        None => {
            return Record::failed(position, format!("decision {decision_id}: no result (the query was undefined)"));
        }
        Some(other) => {
            return Record::failed(position, format!("decision {decision_id}: result {other} is not a decision"));
        }
    };
    let policy_version = object.get("bundles").and_then(Value::as_object).and_then(|bundles| {
        let mut revisions: Vec<String> = bundles
            .iter()
            .filter_map(|(name, bundle)| bundle.get("revision").and_then(Value::as_str).map(|r| format!("{name}:{r}")))
            .collect();
        revisions.sort();
        (!revisions.is_empty()).then(|| revisions.join(","))
    });
    let data = PolicyDecision {
        decision_id: decision_id.to_owned(),
        asset_id,
        decision: decided,
        policy_id: path.to_owned(),
        policy_version,
        subject_id: None,
        resource: None,
        trust_score: None,
    };
    Record::Event(event(event_id("opa", &[decision_id]), SOURCE, time, EventData::PolicyDecision(data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(record: Record) -> PolicyDecision {
        match record {
            Record::Event(event) => match event.data {
                EventData::PolicyDecision(decision) => decision,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn results_of_every_shape() {
        let options = Options { asset: "/input/client", result: Some("/allowed") };
        let base = serde_json::json!({
            "decision_id": "d1", "path": "authz/allow", "timestamp": "2021-05-04T01:21:18.1971808Z",
            "input": {"client": "laptop-7"}, "bundles": {"authz": {"revision": "r9"}}, "result": false,
        });
        let deny = decision(convert("line 1".into(), &base, &options));
        assert_eq!((deny.decision, deny.asset_id.as_str()), (Decision::Deny, "laptop-7"));
        assert_eq!((deny.policy_id.as_str(), deny.policy_version.as_deref()), ("authz/allow", Some("authz:r9")));
        let mut object = base.clone();
        object["result"] = serde_json::json!({"allowed": "step_up"});
        assert_eq!(decision(convert("line 2".into(), &object, &options)).decision, Decision::StepUp);
        let mut text = base.clone();
        text["result"] = serde_json::json!("true");
        assert_eq!(decision(convert("line 3".into(), &text, &options)).decision, Decision::Allow);
        let mut no_asset = base.clone();
        no_asset["input"] = serde_json::json!({});
        assert!(
            matches!(convert("line 4".into(), &no_asset, &options), Record::Failed { reason, .. } if reason.contains("--asset-pointer"))
        );
        let other = serde_json::json!({"msg": "Initializing server.", "level": "info"});
        assert!(matches!(convert("line 5".into(), &other, &options), Record::Ignored { .. }));
    }
}
