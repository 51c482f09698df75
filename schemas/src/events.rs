//! The input events of CONTRACT.md §1: a CloudEvents 1.0 envelope around one
//! typed `data` payload per event type.
//!
//! These are boundary types: they serialize to exactly the JSON a producer
//! sends (the simulator uses that), and [`crate::decode`] builds them from it.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::time::{Date, Timestamp};

/// Declares a closed, lower-case string enumeration of the contract.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vmeta])* #[doc = concat!("`", $text, "`")] $variant),+ }

        impl $name {
            /// Every value, in contract order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every accepted spelling, in contract order (used in error messages).
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the wire spelling (exact, lower-case).
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!("must be one of {}, got {text:?}", $name::NAMES.join(", ")))
                })
            }
        }
    };
}

pub(crate) use wire_enum;

wire_enum!(
    /// The input topic an event type belongs to (CONTRACT.md §2), which also
    /// decides the processing task that owns it.
    InputTopic { Assets = "assets", Rollouts = "rollouts", Network = "network", Intel = "intel" }
);

impl InputTopic {
    /// The default Kafka topic name.
    pub const fn default_topic_name(self) -> &'static str {
        match self {
            InputTopic::Assets => "patchtrail.assets",
            InputTopic::Rollouts => "patchtrail.rollouts",
            InputTopic::Network => "patchtrail.network",
            InputTopic::Intel => "patchtrail.intel",
        }
    }
}

wire_enum!(
    /// The CloudEvents `type` values patchtrail accepts.
    EventType {
        AssetInventory = "asset.inventory.v1",
        VulnFinding = "vuln.finding.v1",
        PatchDeployment = "patch.deployment.v1",
        PostureAssessment = "posture.assessment.v1",
        PolicyDecision = "policy.decision.v1",
        CanaryStage = "canary.stage.v1",
        FlowObservation = "flow.observation.v1",
        VulnIntel = "vuln.intel.v1",
        PatchRelease = "patch.release.v1",
        VulnKev = "vuln.kev.v1",
        VulnEpss = "vuln.epss.v1",
    }
);

impl EventType {
    /// The input topic that carries this type.
    pub const fn topic(self) -> InputTopic {
        match self {
            EventType::AssetInventory
            | EventType::VulnFinding
            | EventType::PatchDeployment
            | EventType::PostureAssessment
            | EventType::PolicyDecision => InputTopic::Assets,
            EventType::CanaryStage => InputTopic::Rollouts,
            EventType::FlowObservation => InputTopic::Network,
            EventType::VulnIntel | EventType::PatchRelease | EventType::VulnKev | EventType::VulnEpss => {
                InputTopic::Intel
            }
        }
    }

    /// The Kafka message key of an event of this type with `subject`: the
    /// subject itself, except for the one-feed intel types, keyed
    /// `kev/<cve_id>` and `epss/<cve_id>` so that a compacted intel topic
    /// keeps the latest record of each feed for each CVE (CONTRACT.md §1).
    pub fn key(self, subject: &str) -> std::borrow::Cow<'_, str> {
        match self {
            EventType::VulnKev => format!("kev/{subject}").into(),
            EventType::VulnEpss => format!("epss/{subject}").into(),
            _ => subject.into(),
        }
    }

    /// The `data` field the `subject` (and the Kafka key) must equal.
    pub const fn subject_field(self) -> &'static str {
        match self {
            EventType::AssetInventory
            | EventType::VulnFinding
            | EventType::PatchDeployment
            | EventType::PostureAssessment
            | EventType::PolicyDecision => "asset_id",
            EventType::CanaryStage => "rollout_id",
            EventType::FlowObservation => "src_segment",
            EventType::VulnIntel | EventType::VulnKev | EventType::VulnEpss => "cve_id",
            EventType::PatchRelease => "patch_id",
        }
    }
}

wire_enum!(
    /// Where an asset runs.
    Environment { Cloud = "cloud", Onprem = "onprem", Edge = "edge" }
);
wire_enum!(
    /// How much the business depends on an asset.
    Criticality { Low = "low", Moderate = "moderate", High = "high" }
);
wire_enum!(
    /// A scanner's verdict on one CVE on one asset.
    FindingStatus { Open = "open", Fixed = "fixed", Suppressed = "suppressed" }
);
wire_enum!(
    /// The lifecycle step a deployment event reports.
    DeploymentPhase {
        Scheduled = "scheduled",
        Started = "started",
        Succeeded = "succeeded",
        Failed = "failed",
        RolledBack = "rolled_back",
    }
);
wire_enum!(
    /// The staged-rollout ring a deployment belongs to.
    Ring { Canary = "canary", Pilot = "pilot", Broad = "broad" }
);
wire_enum!(
    /// Why a posture assessment ran.
    PostureTrigger { Scheduled = "scheduled", PostPatch = "post_patch", PolicyChange = "policy_change" }
);
wire_enum!(
    /// A policy decision point's answer.
    Decision { Allow = "allow", Deny = "deny", StepUp = "step_up" }
);
wire_enum!(
    /// The result of one canary analysis.
    Verdict { Successful = "successful", Failed = "failed", Inconclusive = "inconclusive", Error = "error" }
);
wire_enum!(
    /// What the canary controller did after an analysis.
    CanaryAction { Promote = "promote", Pause = "pause", Rollback = "rollback" }
);
wire_enum!(
    /// A network verdict, enforced or intended.
    FlowAction { Allow = "allow", Deny = "deny" }
);
wire_enum!(
    /// What the intended policy says of a flow; `unknown` where no policy covers it.
    IntendedAction { Allow = "allow", Deny = "deny", Unknown = "unknown" }
);
wire_enum!(
    /// How strictly the network policy engine enforces on a segment.
    EnforcementMode {
        Full = "full",
        Selective = "selective",
        VisibilityOnly = "visibility_only",
        Audit = "audit",
        Idle = "idle",
    }
);
wire_enum!(
    /// Known exploitation of a CVE (SSVC).
    Exploitation { None = "none", Poc = "poc", Active = "active" }
);
wire_enum!(
    /// Technical impact of exploitation (SSVC).
    TechnicalImpact { Partial = "partial", Total = "total" }
);

/// One input event: the CloudEvents envelope and its typed payload.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudEvent {
    /// Unique per event; retries reuse it, which is how duplicates are found.
    pub id: String,
    /// The emitting system (URI reference).
    pub source: String,
    /// Event time.
    pub time: Timestamp,
    /// The entity key: the `data` field named by [`EventType::subject_field`].
    pub subject: String,
    /// The typed payload; its variant is the event type.
    pub data: EventData,
}

impl CloudEvent {
    /// The CloudEvents `type` of this event.
    pub fn event_type(&self) -> EventType {
        self.data.event_type()
    }
}

impl Serialize for CloudEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut event = serializer.serialize_struct("CloudEvent", 7)?;
        event.serialize_field("specversion", "1.0")?;
        event.serialize_field("id", &self.id)?;
        event.serialize_field("source", &self.source)?;
        event.serialize_field("type", self.event_type().as_str())?;
        event.serialize_field("time", &self.time)?;
        event.serialize_field("subject", &self.subject)?;
        event.serialize_field("data", &self.data)?;
        event.end()
    }
}

/// The `data` of each event type.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(missing_docs)] // Each variant is named after its event type.
pub enum EventData {
    AssetInventory(AssetInventory),
    VulnFinding(VulnFinding),
    PatchDeployment(PatchDeployment),
    PostureAssessment(PostureAssessment),
    PolicyDecision(PolicyDecision),
    CanaryStage(CanaryStage),
    FlowObservation(FlowObservation),
    VulnIntel(VulnIntel),
    PatchRelease(PatchRelease),
    VulnKev(VulnKev),
    VulnEpss(VulnEpss),
}

impl EventData {
    /// The CloudEvents `type` this payload belongs to.
    pub fn event_type(&self) -> EventType {
        match self {
            EventData::AssetInventory(_) => EventType::AssetInventory,
            EventData::VulnFinding(_) => EventType::VulnFinding,
            EventData::PatchDeployment(_) => EventType::PatchDeployment,
            EventData::PostureAssessment(_) => EventType::PostureAssessment,
            EventData::PolicyDecision(_) => EventType::PolicyDecision,
            EventData::CanaryStage(_) => EventType::CanaryStage,
            EventData::FlowObservation(_) => EventType::FlowObservation,
            EventData::VulnIntel(_) => EventType::VulnIntel,
            EventData::PatchRelease(_) => EventType::PatchRelease,
            EventData::VulnKev(_) => EventType::VulnKev,
            EventData::VulnEpss(_) => EventType::VulnEpss,
        }
    }

    /// The value of the subject field ([`EventType::subject_field`]).
    pub fn subject(&self) -> &str {
        match self {
            EventData::AssetInventory(d) => &d.asset_id,
            EventData::VulnFinding(d) => &d.asset_id,
            EventData::PatchDeployment(d) => &d.asset_id,
            EventData::PostureAssessment(d) => &d.asset_id,
            EventData::PolicyDecision(d) => &d.asset_id,
            EventData::CanaryStage(d) => &d.rollout_id,
            EventData::FlowObservation(d) => &d.src_segment,
            EventData::VulnIntel(d) => &d.cve_id,
            EventData::PatchRelease(d) => &d.patch_id,
            EventData::VulnKev(d) => &d.cve_id,
            EventData::VulnEpss(d) => &d.cve_id,
        }
    }
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// `asset.inventory.v1`: the CMDB's view of one asset; the latest one wins.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AssetInventory {
    /// The asset.
    pub asset_id: String,
    /// DNS name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Where it runs.
    pub environment: Environment,
    /// Business criticality.
    pub criticality: Criticality,
    /// Reachable from the internet.
    pub internet_exposed: bool,
    /// Network micro-segment.
    pub segment: String,
    /// Operating system family.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_family: Option<String>,
    /// Operating system version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Under management (agent, patch orchestration); default true.
    #[serde(skip_serializing_if = "is_true")]
    pub managed: bool,
    /// Free-form labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `vuln.finding.v1`: a scanner's verdict on one CVE on one asset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VulnFinding {
    /// The asset.
    pub asset_id: String,
    /// The vulnerability.
    pub cve_id: String,
    /// Open, fixed or suppressed.
    pub status: FindingStatus,
    /// The vulnerable package.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Its installed version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<String>,
    /// The first version that fixes the CVE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
    /// The CVSS base score the scanner reported (used only where the
    /// catalog knows no CVSS for the CVE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner_cvss: Option<f64>,
    /// The severity the scanner reported (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner_severity: Option<crate::severity::Severity>,
    /// The scanner's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
}

/// `patch.deployment.v1`: one lifecycle step of installing a patch on an asset.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatchDeployment {
    /// One installation attempt; all its phases share it.
    pub deployment_id: String,
    /// The asset.
    pub asset_id: String,
    /// The patch being installed.
    pub patch_id: String,
    /// The lifecycle step.
    pub phase: DeploymentPhase,
    /// The staged rollout this attempt belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
    /// The rollout ring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<Ring>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// Digest of the installed artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
    /// Whether the artifact's signature verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_verified: Option<bool>,
}

/// `posture.assessment.v1`: a device trust evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PostureAssessment {
    /// The asset.
    pub asset_id: String,
    /// 0 (untrusted) to 100.
    pub trust_score: f64,
    /// Whether every required check passed.
    pub compliant: bool,
    /// Why it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<PostureTrigger>,
    /// The deployment that triggered it (post-patch assessments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Names of the checks that failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_checks: Vec<String>,
}

/// `policy.decision.v1`: an access decision of a policy decision point.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyDecision {
    /// The decision.
    pub decision_id: String,
    /// The device the request came from.
    pub asset_id: String,
    /// Allow, deny or step up.
    pub decision: Decision,
    /// The policy that decided.
    pub policy_id: String,
    /// Its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// The user or service asking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// What was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The trust score the decision point saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_score: Option<f64>,
}

/// `canary.stage.v1`: one canary analysis of a staged rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CanaryStage {
    /// The rollout.
    pub rollout_id: String,
    /// The patch it rolls out.
    pub patch_id: String,
    /// Stage number, from 0.
    pub stage: u32,
    /// The analysis result.
    pub verdict: Verdict,
    /// Assets in the stage's cohort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort_size: Option<u64>,
    /// Failed health checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_checks: Option<u64>,
    /// What the controller did next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<CanaryAction>,
}

/// `flow.observation.v1`: aggregated connections between two segments.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlowObservation {
    /// Source segment.
    pub src_segment: String,
    /// Destination segment.
    pub dst_segment: String,
    /// Destination port.
    pub dst_port: u16,
    /// Transport protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// What the data plane did.
    pub enforced_action: FlowAction,
    /// What the intended policy says.
    pub intended_action: IntendedAction,
    /// Enforcement mode of the policy engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement_mode: Option<EnforcementMode>,
    /// Connections observed (at least 1).
    pub connections: u64,
    /// A representative source asset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_asset_id: Option<String>,
    /// A representative destination asset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_asset_id: Option<String>,
}

/// `vuln.intel.v1`: what is known of a CVE (NVD, KEV, EPSS); the latest one wins.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VulnIntel {
    /// The CVE.
    pub cve_id: String,
    /// Publication time.
    pub published_at: Timestamp,
    /// CVSS base score, 0 to 10.
    pub cvss_base: f64,
    /// CVSS version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cvss_version: Option<String>,
    /// EPSS probability, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epss: Option<f64>,
    /// EPSS percentile, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epss_percentile: Option<f64>,
    /// In CISA's Known Exploited Vulnerabilities catalog; default false.
    #[serde(skip_serializing_if = "is_false")]
    pub kev: bool,
    /// KEV `dateAdded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kev_date_added: Option<Date>,
    /// KEV `dueDate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kev_due_date: Option<Date>,
    /// Known exploitation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exploitation: Option<Exploitation>,
    /// Whether exploitation can be automated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automatable: Option<bool>,
    /// Technical impact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub technical_impact: Option<TechnicalImpact>,
}

/// `patch.release.v1`: a vendor patch and the CVEs it fixes; the latest one wins.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatchRelease {
    /// The patch.
    pub patch_id: String,
    /// Its vendor.
    pub vendor: String,
    /// The product it patches.
    pub product: String,
    /// Release time.
    pub released_at: Timestamp,
    /// The CVEs it fixes.
    pub fixes_cves: Vec<String>,
    /// Digest of the released artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
    /// Whether the vendor signed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed: Option<bool>,
}

wire_enum!(
    /// Whether a KEV entry is known to be used in ransomware campaigns.
    RansomwareUse { Known = "known", Unknown = "unknown" }
);

/// `vuln.kev.v1`: one entry of CISA's Known Exploited Vulnerabilities
/// catalog; updates only the CVE's KEV fields (DOMAIN.md "One CVE, several
/// feeds").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VulnKev {
    /// The CVE.
    pub cve_id: String,
    /// KEV `dateAdded`.
    pub date_added: Date,
    /// KEV `dueDate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_date: Option<Date>,
    /// KEV `vendorProject`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// KEV `product`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// KEV `knownRansomwareCampaignUse`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ransomware_use: Option<RansomwareUse>,
}

/// `vuln.epss.v1`: one CVE's row of a FIRST EPSS daily file; updates only
/// the CVE's EPSS fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VulnEpss {
    /// The CVE.
    pub cve_id: String,
    /// Probability of exploitation in the next 30 days, 0 to 1.
    pub epss: f64,
    /// Percentile among all scored CVEs, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// The day the scores are for.
    pub score_date: Date,
    /// The EPSS model version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
}
