//! NVD CVE API 2.0 (response pages, a page's `vulnerabilities[]` item, or a
//! bare `cve` object) → `vuln.intel.v1`, one event per CVE.
//!
//! The CVSS score: NVD's own (`type: Primary`) before a CNA's
//! (`Secondary`), and within each the newest CVSS version (4.0, 3.1, 3.0,
//! then 2.0); `cvss_version` says which. KEV fields come from NVD's copy of
//! the KEV catalog (`cisaExploitAdd`, `cisaActionDue`). The event time is
//! `lastModified`, so a newer record of the CVE replaces an older one. NVD
//! writes its times without an offset: they are UTC.
//!
//! A CVE that NVD has not scored yet (no CVSS at all: "Received",
//! "Awaiting Analysis", "Rejected") is ignored and counted: `vuln.intel.v1`
//! needs a score, and the catalog takes KEV and EPSS from their own feeds.

use serde_json::Value;

use super::{Record, event, event_id, lenient_timestamp};
use schemas::{Date, EventData, VulnIntel};

/// The `source` of NVD events.
pub const SOURCE: &str = "https://nvd.nist.gov";

/// The metric arrays of `cve.metrics`, newest CVSS version first.
const METRICS: [&str; 4] = ["cvssMetricV40", "cvssMetricV31", "cvssMetricV30", "cvssMetricV2"];

/// Converts one NVD document.
pub fn convert(document: &[u8]) -> Vec<Record> {
    let root: Value = match serde_json::from_slice(document) {
        Ok(value) => value,
        Err(error) => return vec![Record::failed("document", format!("not JSON: {error}"))],
    };
    if let Some(items) = root.get("vulnerabilities").and_then(Value::as_array) {
        return items
            .iter()
            .enumerate()
            .map(|(idx, item)| {
                let position = format!("vulnerabilities[{idx}]");
                match item.get("cve") {
                    Some(cve) => convert_cve(position, cve),
                    None => Record::failed(position, "no `cve` object"),
                }
            })
            .collect();
    }
    match root.get("cve") {
        Some(cve) => vec![convert_cve("cve".to_owned(), cve)],
        None if root.get("id").is_some() && root.get("metrics").is_some() => {
            vec![convert_cve("document".to_owned(), &root)]
        }
        None => vec![Record::failed("document", "not an NVD CVE API 2.0 document: no `vulnerabilities` or `cve`")],
    }
}

/// NVD's choice of score: (base score, version) of the first metric, by
/// type (Primary, then Secondary) and then by version, newest first.
fn chosen_cvss(metrics: &Value) -> Option<(f64, String)> {
    for wanted in ["Primary", "Secondary"] {
        for key in METRICS {
            let Some(entries) = metrics.get(key).and_then(Value::as_array) else { continue };
            for entry in entries {
                if entry.get("type").and_then(Value::as_str) != Some(wanted) {
                    continue;
                }
                let data = entry.get("cvssData");
                let score = data.and_then(|d| d.get("baseScore")).and_then(Value::as_f64);
                let version = data.and_then(|d| d.get("version")).and_then(Value::as_str);
                if let (Some(score), Some(version)) = (score.filter(|s| (0.0..=10.0).contains(s)), version) {
                    return Some((score, version.to_owned()));
                }
            }
        }
    }
    None
}

fn convert_cve(position: String, cve: &Value) -> Record {
    let text = |key: &str| cve.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let Some(cve_id) = text("id") else {
        return Record::failed(position, "cve.id is missing");
    };
    if !schemas::decode::is_cve_id(cve_id) {
        return Record::failed(position, format!("cve.id {cve_id:?} is not a CVE id"));
    }
    let Some(published_at) = text("published").and_then(lenient_timestamp) else {
        return Record::failed(position, format!("{cve_id}: cve.published is missing or not a time"));
    };
    let modified = text("lastModified").and_then(lenient_timestamp).unwrap_or(published_at);
    let Some((cvss_base, cvss_version)) = cve.get("metrics").and_then(chosen_cvss) else {
        return Record::Ignored { position, reason: "no CVSS score yet" };
    };
    let kev_date_added = text("cisaExploitAdd").and_then(Date::parse);
    let kev_due_date = text("cisaActionDue").and_then(Date::parse);
    let intel = VulnIntel {
        cve_id: cve_id.to_owned(),
        published_at,
        cvss_base,
        cvss_version: Some(cvss_version),
        epss: None,
        epss_percentile: None,
        kev: kev_date_added.is_some(),
        kev_date_added,
        kev_due_date,
        exploitation: None,
        automatable: None,
        technical_impact: None,
    };
    let id = event_id("nvd", &[cve_id, &modified.to_string(), &cvss_base.to_string()]);
    Record::Event(event(id, SOURCE, modified, EventData::VulnIntel(intel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intel(record: &Record) -> (&schemas::CloudEvent, &VulnIntel) {
        match record {
            Record::Event(event) => match &event.data {
                EventData::VulnIntel(intel) => (event, intel),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nvd_primary_before_the_cna_and_newest_version_first() {
        let page = br#"{"vulnerabilities": [{"cve": {"id": "CVE-2024-5732", "published": "2024-06-07T10:15:12.293",
            "lastModified": "2024-06-11T17:57:13.767", "metrics": {
              "cvssMetricV40": [{"source": "cna@vuldb.com", "type": "Secondary", "cvssData": {"version": "4.0", "baseScore": 6.9}}],
              "cvssMetricV31": [{"source": "cna@vuldb.com", "type": "Secondary", "cvssData": {"version": "3.1", "baseScore": 7.3}},
                                {"source": "nvd@nist.gov", "type": "Primary", "cvssData": {"version": "3.1", "baseScore": 9.8}}],
              "cvssMetricV2": [{"source": "nvd@nist.gov", "type": "Primary", "cvssData": {"version": "2.0", "baseScore": 7.5}}]}}},
            {"cve": {"id": "CVE-2024-0002", "published": "2024-06-07T10:15:12", "metrics": {
              "cvssMetricV40": [{"type": "Secondary", "cvssData": {"version": "4.0", "baseScore": 10}}],
              "cvssMetricV31": [{"type": "Secondary", "cvssData": {"version": "3.1", "baseScore": 7.3}}]}}},
            {"cve": {"id": "CVE-2024-0003", "published": "2024-06-07T10:15:12", "vulnStatus": "Received", "metrics": {}}},
            {"cve": {"id": "CVE-2024-0004"}}]}"#;
        let records = convert(page);
        let (event, first) = intel(&records[0]);
        assert_eq!((first.cvss_base, first.cvss_version.as_deref()), (9.8, Some("3.1")));
        assert_eq!(first.published_at.to_string(), "2024-06-07T10:15:12.293Z");
        assert_eq!(event.time.to_string(), "2024-06-11T17:57:13.767Z");
        let (_, second) = intel(&records[1]);
        assert_eq!((second.cvss_base, second.cvss_version.as_deref()), (10.0, Some("4.0")), "integer scores too");
        assert!(matches!(records[2], Record::Ignored { reason: "no CVSS score yet", .. }));
        assert!(matches!(&records[3], Record::Failed { position, .. } if position == "vulnerabilities[3]"));
    }

    #[test]
    fn a_single_record_with_kev_fields() {
        let record = br#"{"cve": {"id": "CVE-2022-0543", "published": "2022-02-18T20:15:17.583",
            "cisaExploitAdd": "2022-03-28", "cisaActionDue": "2022-04-18",
            "metrics": {"cvssMetricV31": [{"type": "Primary", "cvssData": {"version": "3.1", "baseScore": 10}}]}}}"#;
        let records = convert(record);
        let (_, intel) = intel(&records[0]);
        assert!(intel.kev);
        assert_eq!(intel.kev_due_date.map(|d| d.to_string()).as_deref(), Some("2022-04-18"));
    }
}
