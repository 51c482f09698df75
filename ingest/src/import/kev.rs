//! CISA's Known Exploited Vulnerabilities catalog
//! (`known_exploited_vulnerabilities.json`, any schema version) →
//! `vuln.kev.v1`, one event per entry.
//!
//! The event time is the catalog's `dateReleased` (when CISA said it), so a
//! later catalog's entry replaces an earlier one; a catalog without it (an
//! old or hand-made file) takes each entry's `dateAdded`.

use serde_json::Value;

use super::{Record, event, event_id, lenient_timestamp};
use schemas::{Date, EventData, RansomwareUse, VulnKev};

/// The `source` of KEV events.
pub const SOURCE: &str = "https://www.cisa.gov/known-exploited-vulnerabilities-catalog";

/// Converts a whole catalog. A document that is not a KEV catalog at all
/// is one failed record at position `catalog`.
pub fn convert(document: &[u8]) -> Vec<Record> {
    let catalog: Value = match serde_json::from_slice(document) {
        Ok(value) => value,
        Err(error) => return vec![Record::failed("catalog", format!("not JSON: {error}"))],
    };
    let Some(entries) = catalog.get("vulnerabilities").and_then(Value::as_array) else {
        return vec![Record::failed("catalog", "not a KEV catalog: no `vulnerabilities` array")];
    };
    let released = catalog.get("dateReleased").and_then(Value::as_str).and_then(lenient_timestamp);
    entries.iter().enumerate().map(|(idx, entry)| convert_entry(idx, entry, released)).collect()
}

fn convert_entry(idx: usize, entry: &Value, released: Option<schemas::Timestamp>) -> Record {
    let position = format!("vulnerabilities[{idx}]");
    let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let Some(cve_id) = text("cveID") else {
        return Record::failed(position, "cveID is missing");
    };
    if !schemas::decode::is_cve_id(cve_id) {
        return Record::failed(position, format!("cveID {cve_id:?} is not a CVE id"));
    }
    let Some(date_added) = text("dateAdded").and_then(Date::parse) else {
        return Record::failed(position, format!("{cve_id}: dateAdded is missing or not a YYYY-MM-DD date"));
    };
    let due_date = match text("dueDate") {
        None => None,
        Some(due) => match Date::parse(due) {
            Some(date) => Some(date),
            None => return Record::failed(position, format!("{cve_id}: dueDate {due:?} is not a YYYY-MM-DD date")),
        },
    };
    // "Known" / "Unknown" in the catalog; anything else is left out, not guessed.
    let ransomware_use = text("knownRansomwareCampaignUse").and_then(|use_| RansomwareUse::parse(&use_.to_lowercase()));
    let kev = VulnKev {
        cve_id: cve_id.to_owned(),
        date_added,
        due_date,
        vendor: text("vendorProject").map(str::to_owned),
        product: text("product").map(str::to_owned),
        ransomware_use,
    };
    let id = event_id(
        "kev",
        &[
            &kev.cve_id,
            &date_added.to_string(),
            &due_date.map(|d| d.to_string()).unwrap_or_default(),
            kev.vendor.as_deref().unwrap_or(""),
            kev.product.as_deref().unwrap_or(""),
            kev.ransomware_use.map_or("", RansomwareUse::as_str),
        ],
    );
    Record::Event(event(id, SOURCE, released.unwrap_or_else(|| date_added.start()), EventData::VulnKev(kev)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_map_field_by_field_and_bad_ones_are_reported() {
        let catalog = br#"{"dateReleased": "2025-08-25T17:04:19.9796Z", "vulnerabilities": [
            {"cveID": "CVE-2025-48384", "vendorProject": "Git ", "product": "Git", "dateAdded": "2025-08-25",
             "dueDate": "2025-09-15", "knownRansomwareCampaignUse": "Known"},
            {"cveID": "CVE-2021-0001", "dateAdded": "2021-11-03"},
            {"cveID": "GHSA-xxxx", "dateAdded": "2021-11-03"},
            {"cveID": "CVE-2021-0002", "dateAdded": "3 Nov 2021"}
        ]}"#;
        let records = convert(catalog);
        let Record::Event(first) = &records[0] else { panic!("{:?}", records[0]) };
        assert_eq!(first.subject, "CVE-2025-48384");
        assert_eq!(first.time.to_string(), "2025-08-25T17:04:19.979600Z");
        let EventData::VulnKev(kev) = &first.data else { panic!("{first:?}") };
        assert_eq!(kev.vendor.as_deref(), Some("Git"), "trailing spaces trimmed");
        assert_eq!(kev.due_date.map(|d| d.to_string()).as_deref(), Some("2025-09-15"));
        assert_eq!(kev.ransomware_use, Some(RansomwareUse::Known));
        let Record::Event(second) = &records[1] else { panic!("{:?}", records[1]) };
        assert_eq!(second.time.to_string(), "2025-08-25T17:04:19.979600Z", "the catalog's time");
        assert!(matches!(&records[2], Record::Failed { position, reason }
            if position == "vulnerabilities[2]" && reason.contains("not a CVE id")));
        assert!(matches!(&records[3], Record::Failed { reason, .. } if reason.contains("dateAdded")));
        // The same catalog again: the same ids.
        let again = convert(catalog);
        assert_eq!(records, again);
    }
}
