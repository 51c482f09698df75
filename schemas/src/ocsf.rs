//! OCSF 1.8.0 output types for the alert classes patchtrail emits
//! (DOMAIN.md "Alerts"): Vulnerability Finding (2002), Compliance Finding
//! (2003) and Detection Finding (2004), all in category 2, Findings.
//!
//! Only the attributes patchtrail fills are modelled; the JSON they produce is
//! what SIEMs read from the alerts topic, so it is pinned by snapshot tests.

use serde::Serialize;
use uuid::Uuid;

/// The OCSF schema version every event declares.
pub const OCSF_VERSION: &str = "1.8.0";
/// `metadata.product.name` and `vendor_name`.
pub const PRODUCT: &str = "patchtrail";

/// Namespace of the UUID v5 alert ids (fixed forever: ids must be stable
/// across versions so SIEMs can deduplicate re-sent alerts).
const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a8e_5b3d_4e7a_9c10_d2f4_8a6b_c3e1);

/// The deterministic id of an alert: UUID v5 over rule, entity and discriminator.
pub fn alert_id(rule: &str, entity_id: &str, discriminator: &str) -> String {
    let name = format!("{rule}\u{1f}{entity_id}\u{1f}{discriminator}");
    Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes()).to_string()
}

/// The finding classes patchtrail emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingClass {
    /// 2002: a vulnerability on a device (SLA breaches).
    Vulnerability,
    /// 2003: a failed control (posture).
    Compliance,
    /// 2004: a detection (canaries, integrity, drift, zero-trust decisions).
    Detection,
}

impl FindingClass {
    /// `class_uid`.
    pub const fn uid(self) -> u32 {
        match self {
            FindingClass::Vulnerability => 2002,
            FindingClass::Compliance => 2003,
            FindingClass::Detection => 2004,
        }
    }

    /// `class_name`.
    pub const fn name(self) -> &'static str {
        match self {
            FindingClass::Vulnerability => "Vulnerability Finding",
            FindingClass::Compliance => "Compliance Finding",
            FindingClass::Detection => "Detection Finding",
        }
    }
}

/// Finding activities (`activity_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// 1: a new finding.
    Create,
    /// 2: an existing finding changed.
    Update,
}

impl Activity {
    /// `activity_id`.
    pub const fn id(self) -> u32 {
        match self {
            Activity::Create => 1,
            Activity::Update => 2,
        }
    }

    /// `activity_name`.
    pub const fn name(self) -> &'static str {
        match self {
            Activity::Create => "Create",
            Activity::Update => "Update",
        }
    }
}

/// The OCSF caption of a `severity_id`.
pub const fn severity_name(severity_id: u8) -> &'static str {
    match severity_id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        6 => "Fatal",
        _ => "Unknown",
    }
}

/// One OCSF finding event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// `class_uid × 100 + activity_id`.
    pub type_uid: u32,
    /// `"<class_name>: <activity_name>"`.
    pub type_name: String,
    /// 2002, 2003 or 2004.
    pub class_uid: u32,
    /// The class caption.
    pub class_name: &'static str,
    /// Always 2 (Findings).
    pub category_uid: u32,
    /// Always "Findings".
    pub category_name: &'static str,
    /// The activity.
    pub activity_id: u32,
    /// Its caption.
    pub activity_name: &'static str,
    /// 1 (informational) to 5 (critical).
    pub severity_id: u8,
    /// Its caption.
    pub severity: &'static str,
    /// 1: New.
    pub status_id: u8,
    /// Its caption.
    pub status: &'static str,
    /// Event time that fired the alert, in milliseconds since the epoch.
    pub time: i64,
    /// One line for humans.
    pub message: String,
    /// Product and schema version.
    pub metadata: Metadata,
    /// Identity and classification of the finding.
    pub finding_info: FindingInfo,
    /// For 2002: the vulnerability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<Vec<Vulnerability>>,
    /// For 2003: the failed control.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compliance: Option<Compliance>,
    /// The asset involved, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// Affected resources: the entity the alert is about when it is not
    /// the device (a deployment, a rollout, a patch, a policy decision), by
    /// its id, so a SIEM correlates on `resources[].uid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<Resource>>,
    /// For 2004 network detections: the connection between two segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidences: Option<Vec<Evidence>>,
    /// Rule-specific context that has no OCSF attribute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmapped: Option<serde_json::Value>,
}

impl Finding {
    /// A finding with the attributes every class requires; add the
    /// class-specific ones with the `with_*` methods.
    pub fn new(
        class: FindingClass,
        activity: Activity,
        severity_id: u8,
        time_ms: i64,
        alert_id: &str,
        rule: &str,
        title: String,
    ) -> Self {
        Finding {
            type_uid: class.uid() * 100 + activity.id(),
            type_name: format!("{}: {}", class.name(), activity.name()),
            class_uid: class.uid(),
            class_name: class.name(),
            category_uid: 2,
            category_name: "Findings",
            activity_id: activity.id(),
            activity_name: activity.name(),
            severity_id,
            severity: severity_name(severity_id),
            status_id: 1,
            status: "New",
            time: time_ms,
            message: title.clone(),
            metadata: Metadata {
                version: OCSF_VERSION,
                product: Product { name: PRODUCT, vendor_name: PRODUCT, version: env!("CARGO_PKG_VERSION") },
                uid: alert_id.to_owned(),
            },
            finding_info: FindingInfo {
                uid: alert_id.to_owned(),
                title,
                types: vec![rule.to_owned()],
                created_time: time_ms,
            },
            vulnerabilities: None,
            compliance: None,
            device: None,
            resources: None,
            evidences: None,
            unmapped: None,
        }
    }

    /// The asset involved.
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// Adds the vulnerability of a 2002 finding.
    pub fn with_vulnerability(mut self, vulnerability: Vulnerability) -> Self {
        self.vulnerabilities = Some(vec![vulnerability]);
        self
    }

    /// Adds the failed control of a 2003 finding.
    pub fn with_failed_control(mut self, control: &str) -> Self {
        self.compliance = Some(Compliance { status_id: 3, status: "Fail", control: control.to_owned() });
        self
    }

    /// Adds an affected resource: its id, its type and, if any, a name.
    pub fn with_resource(mut self, uid: &str, kind: &'static str, name: Option<&str>) -> Self {
        let resource = Resource { uid: uid.to_owned(), kind, name: name.map(str::to_owned) };
        self.resources.get_or_insert_with(Vec::new).push(resource);
        self
    }

    /// Adds the evidence of connections from segment `src` to port `port`
    /// of segment `dst` (OCSF's network endpoint `zone`: "the network zone
    /// or LAN segment").
    pub fn with_connection(mut self, src: &str, dst: &str, port: u16) -> Self {
        let evidence = Evidence {
            src_endpoint: Endpoint { zone: src.to_owned(), port: None },
            dst_endpoint: Endpoint { zone: dst.to_owned(), port: Some(port) },
        };
        self.evidences.get_or_insert_with(Vec::new).push(evidence);
        self
    }

    /// Adds rule-specific context.
    pub fn with_unmapped(mut self, unmapped: serde_json::Value) -> Self {
        self.unmapped = Some(unmapped);
        self
    }

    /// The JSON text sent to SIEMs and stored in the `alerts.ocsf` column.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `metadata`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metadata {
    /// The OCSF version.
    pub version: &'static str,
    /// patchtrail.
    pub product: Product,
    /// The event's unique id (the alert id).
    pub uid: String,
}

/// `metadata.product`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Product {
    /// Product name.
    pub name: &'static str,
    /// Vendor name.
    pub vendor_name: &'static str,
    /// Product version.
    pub version: &'static str,
}

/// `finding_info`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FindingInfo {
    /// The alert id.
    pub uid: String,
    /// What was found.
    pub title: String,
    /// The rule name.
    pub types: Vec<String>,
    /// When the finding was created (ms since the epoch).
    pub created_time: i64,
}

/// `vulnerabilities[]` entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Vulnerability {
    /// The CVE.
    pub cve: Cve,
    /// True for KEV entries: known exploitation means an exploit exists.
    pub is_exploit_available: bool,
    /// The CVE id, as a title.
    pub title: String,
}

/// `vulnerabilities[].cve`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cve {
    /// CVE id.
    pub uid: String,
    /// CVSS scores.
    pub cvss: Vec<Cvss>,
    /// EPSS, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epss: Option<Epss>,
}

/// `cve.cvss[]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cvss {
    /// Base score.
    pub base_score: f64,
    /// CVSS version.
    pub version: String,
}

/// `cve.epss`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Epss {
    /// Probability of exploitation in the next 30 days.
    pub score: String,
    /// Percentile, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
}

/// `compliance`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Compliance {
    /// 3: Fail.
    pub status_id: u8,
    /// Its caption.
    pub status: &'static str,
    /// The control that failed (the rule).
    pub control: String,
}

/// `resources[]` entry (OCSF Resource Details).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resource {
    /// The entity's id.
    pub uid: String,
    /// What kind of entity: `patch_deployment`, `rollout`, `patch`, `policy_decision`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A name for people, when the entity has one (a deployment's patch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `evidences[]` entry (OCSF Evidence Artifacts) of a network detection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evidence {
    /// The source segment.
    pub src_endpoint: Endpoint,
    /// The destination segment and port.
    pub dst_endpoint: Endpoint,
}

/// A network endpoint known by its segment (and port).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Endpoint {
    /// The network zone or LAN segment.
    pub zone: String,
    /// The port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// `device`: the asset, as its inventory describes it at the alert's time
/// (a SIEM joins on hostname). Nothing the inventory does not say is filled
/// in: no IP address, no region.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Device {
    /// The asset id.
    pub uid: String,
    /// The name an administrator gave it: the asset id.
    pub name: String,
    /// Host name, when the inventory has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Its operating system, when the inventory names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<Os>,
    /// Whether the inventory says it is managed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_managed: Option<bool>,
    /// 0: Unknown (the inventory has no OCSF device type).
    pub type_id: u8,
}

/// `device.os`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Os {
    /// The inventory's `os_family`.
    pub name: String,
    /// OCSF's type of that family: 100 Windows, 200 Linux (and the common
    /// distributions), 201 Android, 300 macOS, 301 iOS; 0 Unknown otherwise.
    pub type_id: u16,
    /// The inventory's `os_version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Device {
    /// The device of `asset_id`, with what its inventory says, if anything.
    pub fn new(
        asset_id: &str,
        hostname: Option<&str>,
        os_family: Option<&str>,
        os_version: Option<&str>,
        managed: Option<bool>,
    ) -> Device {
        Device {
            uid: asset_id.to_owned(),
            name: asset_id.to_owned(),
            hostname: hostname.map(str::to_owned),
            os: os_family.map(|family| Os {
                name: family.to_owned(),
                type_id: os_type_id(family),
                version: os_version.map(str::to_owned),
            }),
            is_managed: managed,
            type_id: 0,
        }
    }
}

/// OCSF's operating system `type_id` for an OS family name.
fn os_type_id(family: &str) -> u16 {
    match family.to_ascii_lowercase().as_str() {
        "windows" => 100,
        "linux" | "ubuntu" | "debian" | "rhel" | "redhat" | "centos" | "alpine" | "amazon" | "amzn" | "suse"
        | "sles" | "opensuse" | "fedora" | "rocky" | "alma" | "almalinux" | "oracle" | "ol" | "photon" | "wolfi"
        | "chainguard" | "busybox" | "mariner" | "azurelinux" => 200,
        "android" => 201,
        "macos" | "darwin" | "osx" => 300,
        "ios" => 301,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_ids_are_deterministic_and_distinct() {
        let id = alert_id("SLA_BREACH", "gw-07/CVE-2026-31337", "");
        assert_eq!(id, alert_id("SLA_BREACH", "gw-07/CVE-2026-31337", ""));
        assert_ne!(id, alert_id("SLA_BREACH", "gw-07/CVE-2026-31338", ""));
        assert_ne!(alert_id("A", "b/c", ""), alert_id("A", "b", "c"));
        assert_eq!(Uuid::parse_str(&id).map(|u| u.get_version_num()).ok(), Some(5));
    }

    #[test]
    fn vulnerability_finding_json() {
        let id = alert_id("SLA_BREACH", "gw-07/CVE-2026-31337", "");
        let finding = Finding::new(
            FindingClass::Vulnerability,
            Activity::Update,
            4,
            1_763_942_400_000,
            &id,
            "SLA_BREACH",
            "CVE-2026-31337 on gw-07 is past its remediation deadline".to_owned(),
        )
        .with_device(Device::new("gw-07", Some("gw-07.branch.example"), Some("linux"), Some("6.1"), Some(true)))
        .with_vulnerability(Vulnerability {
            cve: Cve {
                uid: "CVE-2026-31337".to_owned(),
                cvss: vec![Cvss { base_score: 8.8, version: "3.1".to_owned() }],
                epss: Some(Epss { score: "0.412".to_owned(), percentile: Some(0.97) }),
            },
            is_exploit_available: true,
            title: "CVE-2026-31337".to_owned(),
        });
        insta::assert_json_snapshot!(finding);
    }

    #[test]
    fn compliance_and_detection_findings_json() {
        let id = alert_id("POSTURE_REGRESSION", "gw-07/KB-5051234", "");
        let compliance = Finding::new(
            FindingClass::Compliance,
            Activity::Create,
            3,
            1_762_305_600_000,
            &id,
            "POSTURE_REGRESSION",
            "Posture of gw-07 regressed after KB-5051234".to_owned(),
        )
        .with_device(Device::new("gw-07", None, None, None, None))
        .with_failed_control("POSTURE_REGRESSION");
        insta::assert_json_snapshot!(compliance);
        let id = alert_id("CANARY_FAILED", "ro-118", "");
        let detection = Finding::new(
            FindingClass::Detection,
            Activity::Create,
            4,
            1_762_305_600_000,
            &id,
            "CANARY_FAILED",
            "Rollout ro-118 of KB-5051234 failed its canary analysis".to_owned(),
        )
        .with_unmapped(serde_json::json!({"rollout_id": "ro-118", "patch_id": "KB-5051234", "failure_rate": 0.5}));
        assert_eq!(detection.type_uid, 200_401);
        insta::assert_json_snapshot!(detection);
    }
}
