//! The alert rules of DOMAIN.md and their OCSF rendering.

use schemas::Timestamp;
use schemas::ocsf::{self, Activity, Finding, FindingClass};

use crate::rows::AlertRow;

/// An alert rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)]
pub enum Rule {
    SlaBreach,
    CanaryFailed,
    PatchIntegrity,
    PostureRegression,
    PostureReevalOverdue,
    SegmentationDrift,
    ZtAllowNoncompliant,
    UnmanagedAsset,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 8] = [
        Rule::SlaBreach,
        Rule::CanaryFailed,
        Rule::PatchIntegrity,
        Rule::PostureRegression,
        Rule::PostureReevalOverdue,
        Rule::SegmentationDrift,
        Rule::ZtAllowNoncompliant,
        Rule::UnmanagedAsset,
    ];

    /// The rule's name in the `alerts` table and in `finding_info.types`.
    pub const fn name(self) -> &'static str {
        match self {
            Rule::SlaBreach => "SLA_BREACH",
            Rule::CanaryFailed => "CANARY_FAILED",
            Rule::PatchIntegrity => "PATCH_INTEGRITY",
            Rule::PostureRegression => "POSTURE_REGRESSION",
            Rule::PostureReevalOverdue => "POSTURE_REEVAL_OVERDUE",
            Rule::SegmentationDrift => "SEGMENTATION_DRIFT",
            Rule::ZtAllowNoncompliant => "ZT_ALLOW_NONCOMPLIANT",
            Rule::UnmanagedAsset => "UNMANAGED_ASSET",
        }
    }

    /// OCSF class, activity and severity_id (SLA breaches take theirs from the CVE).
    const fn ocsf(self) -> (FindingClass, Activity, u8) {
        match self {
            Rule::SlaBreach => (FindingClass::Vulnerability, Activity::Update, 4),
            Rule::CanaryFailed => (FindingClass::Detection, Activity::Create, 4),
            Rule::PatchIntegrity => (FindingClass::Detection, Activity::Create, 5),
            Rule::PostureRegression => (FindingClass::Compliance, Activity::Create, 3),
            Rule::PostureReevalOverdue => (FindingClass::Compliance, Activity::Create, 3),
            Rule::SegmentationDrift => (FindingClass::Detection, Activity::Create, 4),
            Rule::ZtAllowNoncompliant => (FindingClass::Detection, Activity::Create, 4),
            Rule::UnmanagedAsset => (FindingClass::Detection, Activity::Create, 2),
        }
    }
}

/// The OCSF finding of `rule` for `entity_id` (and `discriminator`), fired at `at`.
pub fn finding(rule: Rule, entity_id: &str, discriminator: &str, at: Timestamp, title: String) -> Finding {
    let (class, activity, severity_id) = rule.ocsf();
    let alert_id = ocsf::alert_id(rule.name(), entity_id, discriminator);
    let finding = Finding::new(class, activity, severity_id, at.millis(), &alert_id, rule.name(), title);
    if class == FindingClass::Compliance { finding.with_failed_control(rule.name()) } else { finding }
}

/// The `alerts` row of a finding.
pub fn row(rule: Rule, entity_id: &str, at: Timestamp, finding: &Finding) -> AlertRow {
    AlertRow {
        alert_id: finding.finding_info.uid.clone(),
        rule: rule.name(),
        severity: match finding.severity_id {
            1 => "informational",
            2 => "low",
            3 => "medium",
            4 => "high",
            5 => "critical",
            6 => "fatal",
            _ => "unknown",
        },
        time: at,
        entity_id: entity_id.to_owned(),
        ocsf: finding.to_json(),
        severity_id: i32::from(finding.severity_id),
        class_uid: finding.class_uid as i32,
    }
}
