//! Vulnerability scans (`trivy … -f json`, `grype -o json`) →
//! `vuln.finding.v1`.
//!
//! A scan lists what it found, not what it stopped finding, so every CVE a
//! scan lists is `open` (Trivy's `Status` and Grype's `fix.state` say
//! whether a fix exists, not whether it is installed). A CVE becomes
//! `fixed` when it was open on the asset in the previous full scan by the
//! same scanner and is absent from this one: the importer knows the
//! previous scan from a state file (`--state`), which it reads before and
//! rewrites after each report. Without one, a scan yields only `open`
//! findings.
//!
//! Each report names its asset by a rule the user chooses ([`AssetRule`]):
//! patchtrail never guesses which host an image runs on.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Record, event, event_id, lenient_timestamp};
use schemas::severity::Severity;
use schemas::{EventData, FindingStatus, Timestamp, VulnFinding};

/// Which asset a report's findings are about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssetRule {
    /// This asset id, whatever the report says (`--asset ID`).
    Fixed(String),
    /// The scanned artifact as the user named it: Trivy's `ArtifactName`,
    /// Grype's `source.target.userInput` (`--asset-from artifact`).
    Artifact,
    /// The image id (`sha256:…`): Trivy's `Metadata.ImageID`, Grype's
    /// `source.target.imageID` (`--asset-from image-id`).
    ImageId,
}

/// Options common to scan imports.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// How the asset is named.
    pub asset: AssetRule,
    /// The scan time when the report has none (`--time`).
    pub scanned_at: Option<Timestamp>,
}

/// One scanner's last full scan of each asset: what `fixed` is decided
/// against. Stored as JSON in the `--state` file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanState {
    /// (scanner, asset) → the time of its latest scan and the CVEs it found.
    pub scans: BTreeMap<String, LastScan>,
}

/// The latest scan of one asset by one scanner.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LastScan {
    /// Its time (RFC 3339).
    pub at: String,
    /// The CVEs it found open.
    pub open: BTreeSet<String>,
}

/// A finding as a scanner states it, before it becomes an event.
#[derive(Clone, Debug)]
struct Found {
    position: String,
    cve_id: String,
    package: Option<String>,
    installed_version: Option<String>,
    fixed_version: Option<String>,
    cvss: Option<f64>,
    severity: Option<Severity>,
}

/// A report, read: its scanner, asset, time and findings.
struct Report {
    scanner: &'static str,
    asset: String,
    at: Timestamp,
    found: Vec<Found>,
    /// Records without a CVE, or otherwise not findings.
    others: Vec<Record>,
}

/// Where a scanner's report states what every scan needs.
struct Layout {
    scanner: &'static str,
    /// Keys of the top level, one of which every report of this scanner has.
    markers: &'static [&'static str],
    /// JSON pointers to the scanned artifact's name, the first present wins.
    artifact: &'static [&'static str],
    /// JSON pointer to the image id.
    image_id: &'static str,
    /// JSON pointer to the time of the scan.
    created: &'static str,
}

const TRIVY: Layout = Layout {
    scanner: "Trivy",
    // A report of an image with nothing to scan may have no `Results`.
    markers: &["Results", "ArtifactName"],
    artifact: &["/ArtifactName"],
    image_id: "/Metadata/ImageID",
    created: "/CreatedAt",
};

const GRYPE: Layout = Layout {
    scanner: "Grype",
    markers: &["matches"],
    artifact: &["/source/target/userInput", "/source/target"],
    image_id: "/source/target/imageID",
    created: "/descriptor/timestamp",
};

/// A JSON pointer as the dotted field name a user reads in the report.
fn field_name(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// The report parsed, the asset it is about (by `options.asset`) and the
/// time of the scan (the report's, else `--time`); or why the report cannot be read.
fn preamble(document: &[u8], options: &ScanOptions, layout: &Layout) -> Result<(Value, String, Timestamp), String> {
    let root: Value = serde_json::from_slice(document).map_err(|error| format!("not JSON: {error}"))?;
    if !layout.markers.iter().any(|key| root.get(key).is_some()) {
        let keys = layout.markers.iter().map(|key| format!("`{key}`")).collect::<Vec<_>>().join(" or ");
        let message = format!("not a {} JSON report: no {keys}", layout.scanner);
        return Err(message);
    }
    let str_at = |pointer: &str| root.pointer(pointer).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let asset = match &options.asset {
        AssetRule::Fixed(id) => Some(id.clone()),
        AssetRule::Artifact => layout.artifact.iter().find_map(|pointer| str_at(pointer)).map(str::to_owned),
        AssetRule::ImageId => str_at(layout.image_id).map(str::to_owned),
    };
    let Some(asset) = asset else {
        let field = match options.asset {
            AssetRule::ImageId => layout.image_id,
            _ => layout.artifact[0],
        };
        return Err(format!("the report has no {} to name the asset by", field_name(field)));
    };
    let Some(at) = str_at(layout.created).and_then(lenient_timestamp).or(options.scanned_at) else {
        let message = format!("the report has no {}: pass --time", field_name(layout.created));
        return Err(message);
    };
    Ok((root, asset, at))
}

/// Converts a Trivy JSON report.
pub fn convert_trivy(document: &[u8], options: &ScanOptions, state: Option<&mut ScanState>) -> Vec<Record> {
    let (root, asset, at) = match preamble(document, options, &TRIVY) {
        Ok(read) => read,
        Err(reason) => return vec![Record::failed("report", reason)],
    };
    let mut found = Vec::new();
    let mut others = Vec::new();
    let results = root.get("Results").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    for (r, result) in results.iter().enumerate() {
        let vulnerabilities = result.get("Vulnerabilities").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        for (v, vulnerability) in vulnerabilities.iter().enumerate() {
            let position = format!("Results[{r}].Vulnerabilities[{v}]");
            let text =
                |key: &str| vulnerability.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
            let Some(id) = text("VulnerabilityID") else {
                others.push(Record::failed(position, "VulnerabilityID is missing"));
                continue;
            };
            if !schemas::decode::is_cve_id(id) {
                others.push(Record::Ignored { position, reason: "not a CVE (e.g. a GHSA or distribution advisory)" });
                continue;
            }
            // The CVSS of the vendor Trivy took the severity from, else NVD's.
            let cvss = vulnerability.get("CVSS").and_then(|by_vendor| {
                let source = text("SeveritySource");
                let score = |vendor: &Value| {
                    ["V40Score", "V3Score", "V2Score"]
                        .iter()
                        .find_map(|key| vendor.get(*key).and_then(Value::as_f64))
                        .filter(|s| (0.0..=10.0).contains(s))
                };
                source.and_then(|s| by_vendor.get(s)).and_then(score).or_else(|| by_vendor.get("nvd").and_then(score))
            });
            found.push(Found {
                position,
                cve_id: id.to_owned(),
                package: text("PkgName").map(str::to_owned),
                installed_version: text("InstalledVersion").map(str::to_owned),
                fixed_version: text("FixedVersion").map(str::to_owned),
                cvss,
                severity: text("Severity").and_then(scanner_severity),
            });
        }
    }
    findings(Report { scanner: "trivy", asset, at, found, others }, state)
}

/// Converts a Grype JSON report.
pub fn convert_grype(document: &[u8], options: &ScanOptions, state: Option<&mut ScanState>) -> Vec<Record> {
    let (root, asset, at) = match preamble(document, options, &GRYPE) {
        Ok(read) => read,
        Err(reason) => return vec![Record::failed("report", reason)],
    };
    let matches = root.get("matches").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let mut found = Vec::new();
    let mut others = Vec::new();
    for (m, matched) in matches.iter().enumerate() {
        let position = format!("matches[{m}]");
        let vulnerability = matched.get("vulnerability").unwrap_or(&Value::Null);
        let Some(id) = vulnerability.get("id").and_then(Value::as_str).map(str::trim) else {
            others.push(Record::failed(position, "vulnerability.id is missing"));
            continue;
        };
        // A GHSA (or distribution) match names its CVE among the related vulnerabilities.
        let related = matched.get("relatedVulnerabilities").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let (cve_id, cvss_from) = if schemas::decode::is_cve_id(id) {
            (id, vulnerability)
        } else {
            match related.iter().find_map(|r| {
                let rid = r.get("id").and_then(Value::as_str)?;
                schemas::decode::is_cve_id(rid).then_some((rid, r))
            }) {
                Some(found) => found,
                None => {
                    others.push(Record::Ignored { position, reason: "not a CVE and no related CVE" });
                    continue;
                }
            }
        };
        let artifact = matched.get("artifact").unwrap_or(&Value::Null);
        let text = |value: &Value, key: &str| {
            value.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
        };
        let fixed_version = vulnerability
            .pointer("/fix/versions")
            .and_then(Value::as_array)
            .and_then(|versions| versions.first())
            .and_then(Value::as_str)
            .map(str::to_owned);
        found.push(Found {
            position,
            cve_id: cve_id.to_owned(),
            package: text(artifact, "name"),
            installed_version: text(artifact, "version"),
            fixed_version,
            cvss: grype_cvss(cvss_from).or_else(|| grype_cvss(vulnerability)),
            severity: text(vulnerability, "severity").as_deref().and_then(scanner_severity),
        });
    }
    findings(Report { scanner: "grype", asset, at, found, others }, state)
}

/// Grype's CVSS entries: NVD's newest version, else any newest version.
fn grype_cvss(vulnerability: &Value) -> Option<f64> {
    let entries = vulnerability.get("cvss").and_then(Value::as_array)?;
    let version =
        |e: &Value| e.get("version").and_then(Value::as_str).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let score =
        |e: &Value| e.pointer("/metrics/baseScore").and_then(Value::as_f64).filter(|s| (0.0..=10.0).contains(s));
    let is_nvd = |e: &Value| e.get("source").and_then(Value::as_str).is_some_and(|s| s == "nvd@nist.gov" || s == "nvd");
    let best = |pick: &dyn Fn(&Value) -> bool| {
        entries
            .iter()
            .filter(|e| pick(e) && score(e).is_some())
            .max_by(|a, b| version(a).total_cmp(&version(b)))
            .and_then(score)
    };
    best(&is_nvd).or_else(|| best(&|_: &Value| true))
}

/// A scanner's severity word, lower-cased; Grype's `Negligible` counts as
/// low; `Unknown` (or anything else) is no severity.
fn scanner_severity(text: &str) -> Option<Severity> {
    match text.to_ascii_lowercase().as_str() {
        "negligible" => Some(Severity::Low),
        other => Severity::parse(other),
    }
}

/// The events of a report: one `open` finding per CVE (the first listing
/// of a CVE found in several packages; the others are noted as repeats),
/// and, with a state, a `fixed` finding per CVE open in the previous scan
/// and absent from this one.
fn findings(report: Report, state: Option<&mut ScanState>) -> Vec<Record> {
    let Report { scanner, asset, at, found, mut others } = report;
    let source = format!("urn:patchtrail:import:{scanner}");
    let at_text = at.to_string();
    let mut out = Vec::with_capacity(found.len());
    let mut open: BTreeSet<String> = BTreeSet::new();
    for f in found {
        if !open.insert(f.cve_id.clone()) {
            others.push(Record::Ignored { position: f.position, reason: "the CVE again, in another package" });
            continue;
        }
        let id = event_id(scanner, &[&asset, &f.cve_id, "open", &at_text, f.package.as_deref().unwrap_or("")]);
        let finding = VulnFinding {
            asset_id: asset.clone(),
            cve_id: f.cve_id,
            status: FindingStatus::Open,
            package: f.package,
            installed_version: f.installed_version,
            fixed_version: f.fixed_version,
            scanner_cvss: f.cvss,
            scanner_severity: f.severity,
            scanner: Some(scanner.to_owned()),
        };
        out.push(Record::Event(event(id, &source, at, EventData::VulnFinding(finding))));
    }
    if let Some(state) = state {
        let key = format!("{scanner}/{asset}");
        let previous = state.scans.get(&key);
        // Only a later scan can say a CVE went away.
        let later = previous.is_none_or(|p| lenient_timestamp(&p.at).is_none_or(|t| t < at));
        if let (Some(previous), true) = (previous, later) {
            for cve_id in previous.open.difference(&open) {
                let id = event_id(scanner, &[&asset, cve_id, "fixed", &at_text]);
                let finding = VulnFinding {
                    asset_id: asset.clone(),
                    cve_id: cve_id.clone(),
                    status: FindingStatus::Fixed,
                    package: None,
                    installed_version: None,
                    fixed_version: None,
                    scanner_cvss: None,
                    scanner_severity: None,
                    scanner: Some(scanner.to_owned()),
                };
                out.push(Record::Event(event(id, &source, at, EventData::VulnFinding(finding))));
            }
        }
        if later {
            state.scans.insert(key, LastScan { at: at_text, open });
        }
    }
    out.extend(others);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(path: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/formats");
        std::fs::read(root.join(path)).expect("a sample file")
    }

    fn events(records: &[Record]) -> Vec<&VulnFinding> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Event(event) => match &event.data {
                    EventData::VulnFinding(finding) => Some(finding),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn trivy_findings_are_open_with_the_scanners_view_and_a_later_scan_fixes_what_it_lacks() {
        let options = ScanOptions { asset: AssetRule::Fixed("host-1".to_owned()), scanned_at: None };
        let mut state = ScanState::default();
        let first = convert_trivy(&sample("trivy/debian-buster.json"), &options, Some(&mut state));
        let found = events(&first);
        assert!(!found.is_empty());
        assert!(found.iter().all(|f| f.status == FindingStatus::Open && f.asset_id == "host-1"));
        let bash = found.iter().find(|f| f.cve_id == "CVE-2019-18276").expect("bash's CVE");
        // Trivy says LOW (Debian's rating) and has no Debian CVSS: NVD's score.
        assert_eq!((bash.scanner_severity, bash.scanner_cvss), (Some(Severity::Low), Some(7.8)));
        assert_eq!(bash.fixed_version, None, "Status affected: no fix");

        // A later, clean scan of the same asset: everything it lacks is fixed then.
        let later = br#"{"ArtifactName": "x", "CreatedAt": "2021-09-01T00:00:00Z", "Results": []}"#;
        let second = convert_trivy(later, &options, Some(&mut state));
        let fixed = events(&second);
        assert_eq!(fixed.len(), found.len());
        assert!(fixed.iter().all(|f| f.status == FindingStatus::Fixed));
        // Importing the first report again changes nothing: it is older than the state's scan.
        let again = convert_trivy(&sample("trivy/debian-buster.json"), &options, Some(&mut state));
        assert_eq!(events(&again).len(), found.len());
        assert!(state.scans["trivy/host-1"].open.is_empty());
    }

    #[test]
    fn grype_ghsa_matches_become_their_cve_and_negligible_is_low() {
        let options = ScanOptions { asset: AssetRule::Artifact, scanned_at: Some(Timestamp(0)) };
        let records = convert_grype(&sample("grype/defectdojo-check_all_fields.json"), &options, None);
        let found = events(&records);
        assert!(found.iter().all(|f| f.asset_id == "vulnerable-image:latest"));
        let ids: BTreeSet<&str> = found.iter().map(|f| f.cve_id.as_str()).collect();
        assert!(ids.iter().all(|id| id.starts_with("CVE-")), "{ids:?}");
        let negligible = found.iter().find(|f| f.cve_id == "CVE-2004-0971").expect("a Negligible match");
        assert_eq!(negligible.scanner_severity, Some(Severity::Low));
        // Without --time, a report without a timestamp is refused, not dated by invention.
        let options = ScanOptions { asset: AssetRule::Artifact, scanned_at: None };
        let refused = convert_grype(&sample("grype/defectdojo-check_all_fields.json"), &options, None);
        assert!(matches!(&refused[..], [Record::Failed { reason, .. }] if reason.contains("--time")));
    }
}
