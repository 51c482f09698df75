//! Decoding and validation of input events.
//!
//! One pass: the bytes are parsed into a borrowed JSON tree, then every field
//! of the envelope and of `data` is checked against CONTRACT.md §1 while the
//! typed event is built. Every problem is reported with its JSON path, not just
//! the first, because the person reading a dead letter wants the whole list.
//! Nothing here panics on any input; unknown fields are ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde_json_borrow::{ObjectAsVec, Value};

use crate::events::*;
use crate::time::{Date, Timestamp};

/// Longest accepted event `id`.
pub const MAX_ID_CHARS: usize = 128;

/// One problem with one field of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field (`data.trust_score`, `data.fixes_cves[2]`), or
    /// empty when the problem is with the message as a whole.
    pub path: String,
    /// What is wrong, ending in what was found: `must be between 0 and 100, got 140`.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.reason) } else { write!(f, "{}: {}", self.path, self.reason) }
    }
}

/// Why a message is not a valid event: every problem found, in field order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// At least one problem.
    pub errors: Vec<FieldError>,
}

impl Invalid {
    fn whole(reason: String) -> Self {
        Self { errors: vec![FieldError { path: String::new(), reason }] }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (idx, error) in self.errors.iter().enumerate() {
            if idx > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// Decodes and validates one message value (one JSONL line, one Kafka value).
pub fn decode(bytes: &[u8]) -> Result<CloudEvent, Invalid> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Invalid::whole(format!("not valid UTF-8: invalid byte at offset {}", e.valid_up_to())))?;
    decode_str(text)
}

/// [`decode`] for text that is already known to be UTF-8.
pub fn decode_str(text: &str) -> Result<CloudEvent, Invalid> {
    let value: Value<'_> = serde_json::from_str(text).map_err(|e| Invalid::whole(format!("not valid JSON: {e}")))?;
    let Value::Object(envelope) = &value else {
        return Err(Invalid::whole(format!("must be a JSON object (a CloudEvent), got {}", describe(&value))));
    };
    let mut check = Checker::default();
    duplicate_keys(&value, &mut check.errors);
    let event = check.envelope(Obj { fields: envelope, path: "" });
    match event {
        Some(event) if check.errors.is_empty() => Ok(event),
        _ => Err(Invalid { errors: check.errors }),
    }
}

/// Records every object key that appears more than once, at any depth:
/// parsers disagree on which of the values wins, and a SIEM reading the same
/// message could see another event than the one processed.
fn duplicate_keys(value: &Value<'_>, errors: &mut Vec<FieldError>) {
    // Iterative, and JSON nesting is bounded by the parser (128 levels).
    let mut stack: Vec<(String, &Value<'_>)> = vec![(String::new(), value)];
    while let Some((path, value)) = stack.pop() {
        match value {
            Value::Object(fields) => {
                let keys: Vec<&str> = fields.keys().collect();
                for (idx, key) in keys.iter().enumerate() {
                    // Reported once, at its second appearance.
                    if keys[..idx].iter().filter(|k| *k == key).count() == 1 {
                        let count = keys.iter().filter(|k| *k == key).count();
                        errors.push(FieldError {
                            path: format!("{path}{key}"),
                            reason: format!("the key appears {count} times (each key once)"),
                        });
                    }
                }
                for (key, child) in fields.iter() {
                    if matches!(child, Value::Object(_) | Value::Array(_)) {
                        stack.push((format!("{path}{key}."), child));
                    }
                }
            }
            Value::Array(items) => {
                let base = path.trim_end_matches('.').to_owned();
                for (idx, child) in items.iter().enumerate() {
                    if matches!(child, Value::Object(_) | Value::Array(_)) {
                        stack.push((format!("{base}[{idx}]."), child));
                    }
                }
            }
            _ => {}
        }
    }
}

/// An object being read, with the path that prefixes its fields in errors.
#[derive(Clone, Copy)]
struct Obj<'v, 'ctx> {
    fields: &'v ObjectAsVec<'ctx>,
    path: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    Optional,
}
use Presence::{Optional, Required};

/// Collects errors while reading fields. Each reader returns `None` both for
/// an absent optional field and for an invalid one; the latter also records
/// an error, and a typed event is only returned when no error was recorded.
#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn fail(&mut self, obj: Obj<'_, '_>, key: &str, reason: String) {
        self.errors.push(FieldError { path: format!("{}{key}", obj.path), reason });
    }

    /// The field's value; JSON `null` counts as absent.
    fn field<'v, 'ctx>(&mut self, obj: Obj<'v, 'ctx>, key: &str, presence: Presence) -> Option<&'v Value<'ctx>> {
        match obj.fields.get(key) {
            Some(Value::Null) | None => {
                if presence == Required {
                    let found = if obj.fields.get(key).is_some() { ", got null" } else { "" };
                    self.fail(obj, key, format!("is required{found}"));
                }
                None
            }
            Some(value) => Some(value),
        }
    }

    fn str<'v>(&mut self, obj: Obj<'v, '_>, key: &str, presence: Presence) -> Option<&'v str> {
        match self.field(obj, key, presence)? {
            Value::Str(text) => Some(text.as_ref()),
            other => {
                self.fail(obj, key, format!("must be a string, got {}", describe(other)));
                None
            }
        }
    }

    /// A string that must not be empty.
    fn text(&mut self, obj: Obj<'_, '_>, key: &str, presence: Presence) -> Option<String> {
        let text = self.str(obj, key, presence)?;
        if text.is_empty() {
            self.fail(obj, key, "must not be empty".to_owned());
            return None;
        }
        Some(text.to_owned())
    }

    fn cve_id(&mut self, obj: Obj<'_, '_>, key: &str) -> Option<String> {
        let text = self.str(obj, key, Required)?;
        if !is_cve_id(text) {
            self.fail(obj, key, format!("must be a CVE id like CVE-2026-12345, got {}", quote(text)));
            return None;
        }
        Some(text.to_owned())
    }

    fn sha256(&mut self, obj: Obj<'_, '_>, key: &str) -> Option<String> {
        let text = self.str(obj, key, Optional)?;
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            self.fail(obj, key, format!("must be 64 hexadecimal characters, got {}", quote(text)));
            return None;
        }
        Some(text.to_ascii_lowercase())
    }

    fn enumeration<E>(
        &mut self,
        obj: Obj<'_, '_>,
        key: &str,
        presence: Presence,
        parse: fn(&str) -> Option<E>,
        names: &[&str],
    ) -> Option<E> {
        let text = self.str(obj, key, presence)?;
        let parsed = parse(text);
        if parsed.is_none() {
            self.fail(obj, key, format!("must be one of {}, got {}", names.join(", "), quote(text)));
        }
        parsed
    }

    fn bool(&mut self, obj: Obj<'_, '_>, key: &str, presence: Presence) -> Option<bool> {
        match self.field(obj, key, presence)? {
            Value::Bool(flag) => Some(*flag),
            other => {
                self.fail(obj, key, format!("must be true or false, got {}", describe(other)));
                None
            }
        }
    }

    fn number(&mut self, obj: Obj<'_, '_>, key: &str, presence: Presence, min: f64, max: f64) -> Option<f64> {
        let value = self.field(obj, key, presence)?;
        let Some(number) = value.as_f64().filter(|_| value.is_number()) else {
            self.fail(obj, key, format!("must be a number, got {}", describe(value)));
            return None;
        };
        if !(min..=max).contains(&number) {
            self.fail(obj, key, format!("must be between {min} and {max}, got {}", describe(value)));
            return None;
        }
        Some(number)
    }

    fn integer(&mut self, obj: Obj<'_, '_>, key: &str, presence: Presence, min: u64, max: u64) -> Option<u64> {
        let value = self.field(obj, key, presence)?;
        let Value::Number(number) = value else {
            self.fail(obj, key, format!("must be an integer, got {}", describe(value)));
            return None;
        };
        let in_range = number.as_u64().filter(|n| (min..=max).contains(n));
        if in_range.is_none() {
            let reason = if number.is_f64() {
                "must be an integer"
            } else if max == u64::MAX {
                &format!("must be at least {min}")
            } else {
                &format!("must be between {min} and {max}")
            };
            self.fail(obj, key, format!("{reason}, got {number}"));
        }
        in_range
    }

    fn timestamp(&mut self, obj: Obj<'_, '_>, key: &str, presence: Presence) -> Option<Timestamp> {
        let text = self.str(obj, key, presence)?;
        let parsed = Timestamp::parse_rfc3339(text);
        if parsed.is_none() {
            self.fail(obj, key, format!("must be an RFC 3339 timestamp with offset, got {}", quote(text)));
        }
        parsed
    }

    fn date(&mut self, obj: Obj<'_, '_>, key: &str, presence: Presence) -> Option<Date> {
        let text = self.str(obj, key, presence)?;
        let parsed = Date::parse(text);
        if parsed.is_none() {
            self.fail(obj, key, format!("must be a calendar date YYYY-MM-DD, got {}", quote(text)));
        }
        parsed
    }

    /// An array of strings, each checked by `element` (which returns the reason it is bad).
    fn strings(
        &mut self,
        obj: Obj<'_, '_>,
        key: &str,
        presence: Presence,
        element: fn(&str) -> Option<String>,
    ) -> Option<Vec<String>> {
        let value = self.field(obj, key, presence)?;
        let Value::Array(items) = value else {
            self.fail(obj, key, format!("must be an array of strings, got {}", describe(value)));
            return None;
        };
        let n_errors = self.errors.len();
        let mut out = Vec::with_capacity(items.len());
        for (idx, item) in items.iter().enumerate() {
            match item {
                Value::Str(text) => match element(text) {
                    None => out.push(text.to_string()),
                    Some(reason) => self.fail(obj, &format!("{key}[{idx}]"), reason),
                },
                other => self.fail(obj, &format!("{key}[{idx}]"), format!("must be a string, got {}", describe(other))),
            }
        }
        (self.errors.len() == n_errors).then_some(out)
    }

    fn labels(&mut self, obj: Obj<'_, '_>, key: &str) -> Option<BTreeMap<String, String>> {
        let value = self.field(obj, key, Optional)?;
        let Value::Object(fields) = value else {
            self.fail(obj, key, format!("must be an object of strings, got {}", describe(value)));
            return None;
        };
        let n_errors = self.errors.len();
        let mut out = BTreeMap::new();
        for (name, item) in fields.iter() {
            match item {
                Value::Str(text) => {
                    out.insert(name.to_owned(), text.to_string());
                }
                other => self.fail(obj, &format!("{key}.{name}"), format!("must be a string, got {}", describe(other))),
            }
        }
        (self.errors.len() == n_errors).then_some(out)
    }

    fn envelope(&mut self, env: Obj<'_, '_>) -> Option<CloudEvent> {
        if let Some(version) = self.str(env, "specversion", Required)
            && version != "1.0"
        {
            self.fail(env, "specversion", format!("must be \"1.0\", got {}", quote(version)));
        }
        let id = self.text(env, "id", Required);
        if let Some(id) = &id
            && id.chars().count() > MAX_ID_CHARS
        {
            self.fail(env, "id", format!("must be at most {MAX_ID_CHARS} characters, got {}", id.chars().count()));
        }
        let source = self.text(env, "source", Required);
        let event_type = self.str(env, "type", Required).and_then(|name| {
            let parsed = EventType::parse(name);
            if parsed.is_none() {
                self.fail(env, "type", format!("unknown event type {}", quote(name)));
            }
            parsed
        });
        let time = self.timestamp(env, "time", Required);
        let subject = self.text(env, "subject", Required);
        let data = match self.field(env, "data", Required) {
            Some(Value::Object(fields)) => Some(Obj { fields, path: "data." }),
            Some(other) => {
                self.fail(env, "data", format!("must be a JSON object, got {}", describe(other)));
                None
            }
            None => None,
        };
        let data = self.data(event_type?, data?)?;
        if let Some(subject) = &subject
            && subject != data.subject()
        {
            let field = data.event_type().subject_field();
            self.fail(
                env,
                "subject",
                format!("must equal data.{field} ({}), got {}", quote(data.subject()), quote(subject)),
            );
        }
        Some(CloudEvent { id: id?, source: source?, time: time?, subject: subject?, data })
    }

    fn data(&mut self, event_type: EventType, d: Obj<'_, '_>) -> Option<EventData> {
        Some(match event_type {
            EventType::AssetInventory => {
                let asset_id = self.text(d, "asset_id", Required);
                let hostname = self.text(d, "hostname", Optional);
                let environment = self.enumeration(d, "environment", Required, Environment::parse, Environment::NAMES);
                let criticality = self.enumeration(d, "criticality", Required, Criticality::parse, Criticality::NAMES);
                let internet_exposed = self.bool(d, "internet_exposed", Required);
                let segment = self.text(d, "segment", Required);
                let os_family = self.text(d, "os_family", Optional);
                let os_version = self.text(d, "os_version", Optional);
                let managed = self.bool(d, "managed", Optional).unwrap_or(true);
                let labels = self.labels(d, "labels").unwrap_or_default();
                EventData::AssetInventory(AssetInventory {
                    asset_id: asset_id?,
                    hostname,
                    environment: environment?,
                    criticality: criticality?,
                    internet_exposed: internet_exposed?,
                    segment: segment?,
                    os_family,
                    os_version,
                    managed,
                    labels,
                })
            }
            EventType::VulnFinding => {
                let asset_id = self.text(d, "asset_id", Required);
                let cve_id = self.cve_id(d, "cve_id");
                let status = self.enumeration(d, "status", Required, FindingStatus::parse, FindingStatus::NAMES);
                let package = self.text(d, "package", Optional);
                let installed_version = self.text(d, "installed_version", Optional);
                let fixed_version = self.text(d, "fixed_version", Optional);
                let scanner_cvss = self.number(d, "scanner_cvss", Optional, 0.0, 10.0);
                let scanner_severity = self.enumeration(
                    d,
                    "scanner_severity",
                    Optional,
                    crate::severity::Severity::parse,
                    crate::severity::Severity::NAMES,
                );
                let scanner = self.text(d, "scanner", Optional);
                EventData::VulnFinding(VulnFinding {
                    asset_id: asset_id?,
                    cve_id: cve_id?,
                    status: status?,
                    package,
                    installed_version,
                    fixed_version,
                    scanner_cvss,
                    scanner_severity,
                    scanner,
                })
            }
            EventType::PatchDeployment => {
                let deployment_id = self.text(d, "deployment_id", Required);
                let asset_id = self.text(d, "asset_id", Required);
                let patch_id = self.text(d, "patch_id", Required);
                let phase = self.enumeration(d, "phase", Required, DeploymentPhase::parse, DeploymentPhase::NAMES);
                let rollout_id = self.text(d, "rollout_id", Optional);
                let ring = self.enumeration(d, "ring", Optional, Ring::parse, Ring::NAMES);
                let error_class = self.text(d, "error_class", Optional);
                let artifact_sha256 = self.sha256(d, "artifact_sha256");
                let signature_verified = self.bool(d, "signature_verified", Optional);
                EventData::PatchDeployment(PatchDeployment {
                    deployment_id: deployment_id?,
                    asset_id: asset_id?,
                    patch_id: patch_id?,
                    phase: phase?,
                    rollout_id,
                    ring,
                    error_class,
                    artifact_sha256,
                    signature_verified,
                })
            }
            EventType::PostureAssessment => {
                let asset_id = self.text(d, "asset_id", Required);
                let trust_score = self.number(d, "trust_score", Required, 0.0, 100.0);
                let compliant = self.bool(d, "compliant", Required);
                let trigger = self.enumeration(d, "trigger", Optional, PostureTrigger::parse, PostureTrigger::NAMES);
                let deployment_id = self.text(d, "deployment_id", Optional);
                let failed_checks = self.strings(d, "failed_checks", Optional, |_| None).unwrap_or_default();
                EventData::PostureAssessment(PostureAssessment {
                    asset_id: asset_id?,
                    trust_score: trust_score?,
                    compliant: compliant?,
                    trigger,
                    deployment_id,
                    failed_checks,
                })
            }
            EventType::PolicyDecision => {
                let decision_id = self.text(d, "decision_id", Required);
                let asset_id = self.text(d, "asset_id", Required);
                let decision = self.enumeration(d, "decision", Required, Decision::parse, Decision::NAMES);
                let policy_id = self.text(d, "policy_id", Required);
                let policy_version = self.text(d, "policy_version", Optional);
                let subject_id = self.text(d, "subject_id", Optional);
                let resource = self.text(d, "resource", Optional);
                let trust_score = self.number(d, "trust_score", Optional, 0.0, 100.0);
                EventData::PolicyDecision(PolicyDecision {
                    decision_id: decision_id?,
                    asset_id: asset_id?,
                    decision: decision?,
                    policy_id: policy_id?,
                    policy_version,
                    subject_id,
                    resource,
                    trust_score,
                })
            }
            EventType::CanaryStage => {
                let rollout_id = self.text(d, "rollout_id", Required);
                let patch_id = self.text(d, "patch_id", Required);
                let stage = self.integer(d, "stage", Required, 0, u64::from(u32::MAX));
                let verdict = self.enumeration(d, "verdict", Required, Verdict::parse, Verdict::NAMES);
                let cohort_size = self.integer(d, "cohort_size", Optional, 0, u64::MAX);
                let failed_checks = self.integer(d, "failed_checks", Optional, 0, u64::MAX);
                let action = self.enumeration(d, "action", Optional, CanaryAction::parse, CanaryAction::NAMES);
                EventData::CanaryStage(CanaryStage {
                    rollout_id: rollout_id?,
                    patch_id: patch_id?,
                    stage: u32::try_from(stage?).ok()?,
                    verdict: verdict?,
                    cohort_size,
                    failed_checks,
                    action,
                })
            }
            EventType::FlowObservation => {
                let src_segment = self.text(d, "src_segment", Required);
                let dst_segment = self.text(d, "dst_segment", Required);
                let dst_port = self.integer(d, "dst_port", Required, 0, u64::from(u16::MAX));
                let protocol = self.text(d, "protocol", Optional);
                let enforced_action =
                    self.enumeration(d, "enforced_action", Required, FlowAction::parse, FlowAction::NAMES);
                let intended_action =
                    self.enumeration(d, "intended_action", Required, IntendedAction::parse, IntendedAction::NAMES);
                let enforcement_mode =
                    self.enumeration(d, "enforcement_mode", Optional, EnforcementMode::parse, EnforcementMode::NAMES);
                let connections = self.integer(d, "connections", Required, 1, u64::MAX);
                let src_asset_id = self.text(d, "src_asset_id", Optional);
                let dst_asset_id = self.text(d, "dst_asset_id", Optional);
                EventData::FlowObservation(FlowObservation {
                    src_segment: src_segment?,
                    dst_segment: dst_segment?,
                    dst_port: u16::try_from(dst_port?).ok()?,
                    protocol,
                    enforced_action: enforced_action?,
                    intended_action: intended_action?,
                    enforcement_mode,
                    connections: connections?,
                    src_asset_id,
                    dst_asset_id,
                })
            }
            EventType::VulnIntel => {
                let cve_id = self.cve_id(d, "cve_id");
                let published_at = self.timestamp(d, "published_at", Required);
                let cvss_base = self.number(d, "cvss_base", Required, 0.0, 10.0);
                let cvss_version = self.text(d, "cvss_version", Optional);
                let epss = self.number(d, "epss", Optional, 0.0, 1.0);
                let epss_percentile = self.number(d, "epss_percentile", Optional, 0.0, 1.0);
                let kev = self.bool(d, "kev", Optional).unwrap_or(false);
                let kev_date_added = self.date(d, "kev_date_added", Optional);
                let kev_due_date = self.date(d, "kev_due_date", Optional);
                let exploitation =
                    self.enumeration(d, "exploitation", Optional, Exploitation::parse, Exploitation::NAMES);
                let automatable = self.bool(d, "automatable", Optional);
                let technical_impact =
                    self.enumeration(d, "technical_impact", Optional, TechnicalImpact::parse, TechnicalImpact::NAMES);
                EventData::VulnIntel(VulnIntel {
                    cve_id: cve_id?,
                    published_at: published_at?,
                    cvss_base: cvss_base?,
                    cvss_version,
                    epss,
                    epss_percentile,
                    kev,
                    kev_date_added,
                    kev_due_date,
                    exploitation,
                    automatable,
                    technical_impact,
                })
            }
            EventType::PatchRelease => {
                let patch_id = self.text(d, "patch_id", Required);
                let vendor = self.text(d, "vendor", Required);
                let product = self.text(d, "product", Required);
                let released_at = self.timestamp(d, "released_at", Required);
                let fixes_cves = self.strings(d, "fixes_cves", Required, |text| {
                    (!is_cve_id(text)).then(|| format!("must be a CVE id like CVE-2026-12345, got {}", quote(text)))
                });
                let artifact_sha256 = self.sha256(d, "artifact_sha256");
                let signed = self.bool(d, "signed", Optional);
                EventData::PatchRelease(PatchRelease {
                    patch_id: patch_id?,
                    vendor: vendor?,
                    product: product?,
                    released_at: released_at?,
                    fixes_cves: fixes_cves?,
                    artifact_sha256,
                    signed,
                })
            }
            EventType::VulnKev => {
                let cve_id = self.cve_id(d, "cve_id");
                let date_added = self.date(d, "date_added", Required);
                let due_date = self.date(d, "due_date", Optional);
                let vendor = self.text(d, "vendor", Optional);
                let product = self.text(d, "product", Optional);
                let ransomware_use =
                    self.enumeration(d, "ransomware_use", Optional, RansomwareUse::parse, RansomwareUse::NAMES);
                EventData::VulnKev(VulnKev {
                    cve_id: cve_id?,
                    date_added: date_added?,
                    due_date,
                    vendor,
                    product,
                    ransomware_use,
                })
            }
            EventType::VulnEpss => {
                let cve_id = self.cve_id(d, "cve_id");
                let epss = self.number(d, "epss", Required, 0.0, 1.0);
                let percentile = self.number(d, "percentile", Optional, 0.0, 1.0);
                let score_date = self.date(d, "score_date", Required);
                let model_version = self.text(d, "model_version", Optional);
                EventData::VulnEpss(VulnEpss {
                    cve_id: cve_id?,
                    epss: epss?,
                    percentile,
                    score_date: score_date?,
                    model_version,
                })
            }
        })
    }
}

/// `CVE-YYYY-NNNN…`: four year digits, then at least four digits.
pub fn is_cve_id(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("CVE-") else {
        return false;
    };
    let Some((year, number)) = rest.split_once('-') else {
        return false;
    };
    year.len() == 4
        && year.bytes().all(|b| b.is_ascii_digit())
        && number.len() >= 4
        && number.len() <= 19
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// A short, quoted rendering of user text for error messages.
fn quote(text: &str) -> String {
    const LIMIT: usize = 64;
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// What a value is, for "got …" in error messages.
fn describe(value: &Value<'_>) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::Str(text) => quote(text),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}
