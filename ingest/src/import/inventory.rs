//! An inventory CSV → `asset.inventory.v1`, one event per row, streamed.
//!
//! The header names the event's fields (`asset_id`, `hostname`,
//! `environment`, `criticality`, `internet_exposed`, `segment`,
//! `os_family`, `os_version`, `managed`) and, optionally, `time` (the row's
//! event time, RFC 3339). A column `labels.KEY` becomes the label `KEY`.
//! Any other column is refused, with the file: a misspelt field would
//! otherwise be imported as a label and its value silently lost.
//! Booleans are `true`/`false`/`yes`/`no`/`1`/`0`; empty cells are absent.

use std::collections::BTreeMap;
use std::io::Read;

use super::{Record, event, event_id, lenient_timestamp};
use schemas::{AssetInventory, Criticality, Environment, EventData, Timestamp};

/// The `source` of inventory events.
pub const SOURCE: &str = "urn:patchtrail:import:inventory";

/// The columns the importer knows, besides `labels.*`.
pub const COLUMNS: [&str; 10] = [
    "asset_id",
    "hostname",
    "environment",
    "criticality",
    "internet_exposed",
    "segment",
    "os_family",
    "os_version",
    "managed",
    "time",
];

/// Converts an inventory CSV, calling `sink` with each record as it is
/// read. `time` is the event time of rows without a `time` cell.
pub fn convert(input: impl Read, time: Option<Timestamp>, mut sink: impl FnMut(Record)) {
    let input = Bounded { inner: input, quoted: false, length: 0, ended: false };
    let mut reader = csv::ReaderBuilder::new().flexible(false).trim(csv::Trim::All).from_reader(input);
    let header: Vec<String> = match reader.headers() {
        Ok(header) => header.iter().map(str::to_owned).collect(),
        Err(error) => return sink(Record::failed("line 1", format!("cannot read the header: {error}"))),
    };
    let unknown: Vec<&String> =
        header.iter().filter(|name| !COLUMNS.contains(&name.as_str()) && !name.starts_with("labels.")).collect();
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|name| format!("{name:?}")).collect();
        return sink(Record::failed(
            "line 1",
            format!("unknown column {}: the columns are {} and labels.KEY", names.join(", "), COLUMNS.join(", ")),
        ));
    }
    for missing in ["asset_id", "environment", "criticality", "internet_exposed", "segment"] {
        if !header.iter().any(|name| name == missing) {
            return sink(Record::failed("line 1", format!("the required column {missing} is missing")));
        }
    }
    for (idx, row) in reader.records().enumerate() {
        // The header is line 1; a quoted cell may span lines, so say the record too.
        let position = format!(
            "record {} (line {})",
            idx + 1,
            row.as_ref().ok().and_then(|r| r.position()).map_or(0, |p| p.line())
        );
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                sink(Record::failed(position, error.to_string()));
                continue;
            }
        };
        sink(convert_row(position, &header, &row, time));
    }
}

/// A CSV input that ends, with an error, at a record longer than
/// [`MAX_LINE_BYTES`](super::input::MAX_LINE_BYTES) (a newline inside
/// quotes does not end a record), so one giant cell cannot take the
/// importer's memory. Quote parity is enough to tell: `""` inside a quoted
/// cell toggles twice.
struct Bounded<R> {
    inner: R,
    quoted: bool,
    /// Bytes since the last record's end.
    length: usize,
    ended: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ended {
            return Ok(0);
        }
        let read = self.inner.read(buf)?;
        for &byte in &buf[..read] {
            match byte {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => self.length = 0,
                _ => {}
            }
            self.length += 1;
            if self.length > super::input::MAX_LINE_BYTES {
                self.ended = true;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "a record over the limit of {} MiB; the rest of the file is not read",
                        super::input::MAX_LINE_BYTES >> 20
                    ),
                ));
            }
        }
        Ok(read)
    }
}

fn convert_row(position: String, header: &[String], row: &csv::StringRecord, time: Option<Timestamp>) -> Record {
    let mut cells: BTreeMap<&str, &str> = BTreeMap::new();
    let mut labels = BTreeMap::new();
    for (name, value) in header.iter().zip(row.iter()) {
        if value.is_empty() {
            continue;
        }
        match name.strip_prefix("labels.") {
            Some(key) => {
                labels.insert(key.to_owned(), value.to_owned());
            }
            None => {
                cells.insert(name.as_str(), value);
            }
        }
    }
    let mut problems = Vec::new();
    let mut required = |name: &str| {
        let value = cells.get(name).copied();
        if value.is_none() {
            problems.push(format!("{name} is empty"));
        }
        value
    };
    let asset_id = required("asset_id");
    let environment = required("environment");
    let criticality = required("criticality");
    let exposed = required("internet_exposed");
    let segment = required("segment");
    let environment = environment.and_then(|text| {
        let parsed = Environment::parse(&text.to_lowercase());
        if parsed.is_none() {
            problems.push(format!("environment must be one of {}, got {text:?}", Environment::NAMES.join(", ")));
        }
        parsed
    });
    let criticality = criticality.and_then(|text| {
        let parsed = Criticality::parse(&text.to_lowercase());
        if parsed.is_none() {
            problems.push(format!("criticality must be one of {}, got {text:?}", Criticality::NAMES.join(", ")));
        }
        parsed
    });
    let mut boolean = |name: &str, text: Option<&str>| {
        let text = text?;
        let parsed = match text.to_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        };
        if parsed.is_none() {
            problems.push(format!("{name} must be true or false, got {text:?}"));
        }
        parsed
    };
    let internet_exposed = boolean("internet_exposed", exposed);
    let managed = boolean("managed", cells.get("managed").copied());
    let at = match cells.get("time") {
        Some(text) => {
            let parsed = lenient_timestamp(text);
            if parsed.is_none() {
                problems.push(format!("time must be an RFC 3339 timestamp, got {text:?}"));
            }
            parsed
        }
        None => {
            if time.is_none() {
                problems.push("the row has no time: add a time column or pass --time".to_owned());
            }
            time
        }
    };
    let (Some(asset_id), Some(environment), Some(criticality), Some(internet_exposed), Some(segment), Some(at), true) =
        (asset_id, environment, criticality, internet_exposed, segment, at, problems.is_empty())
    else {
        return Record::failed(position, problems.join("; "));
    };
    let text = |name: &str| cells.get(name).map(|value| (*value).to_owned());
    let inventory = AssetInventory {
        asset_id: asset_id.to_owned(),
        hostname: text("hostname"),
        environment,
        criticality,
        internet_exposed,
        segment: segment.to_owned(),
        os_family: text("os_family"),
        os_version: text("os_version"),
        managed: managed.unwrap_or(true),
        labels,
    };
    // The id covers every cell and the time: the same row imported again is the same event.
    let mut parts: Vec<String> = header.iter().zip(row.iter()).map(|(n, v)| format!("{n}={v}")).collect();
    parts.push(at.to_string());
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    Record::Event(event(event_id("inventory", &parts), SOURCE, at, EventData::AssetInventory(inventory)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(csv: &str, time: Option<Timestamp>) -> Vec<Record> {
        let mut out = Vec::new();
        convert(csv.as_bytes(), time, |record| out.push(record));
        out
    }

    #[test]
    fn a_record_over_the_line_limit_ends_the_file_newlines_in_quotes_do_not_end_it() {
        let header = "asset_id,environment,criticality,internet_exposed,segment,time,hostname\n";
        let long_quoted = format!("{header}a-1,cloud,high,no,dmz,2026-11-01T00:00:00Z,\"{}\"\n", "x\n".repeat(5 << 20));
        let read = records(&long_quoted, None);
        assert!(matches!(&read[..], [Record::Failed { reason, .. }] if reason.contains("over the limit")), "{read:?}");
        let many_lines = format!("{header}{}", "a-1,cloud,high,no,dmz,2026-11-01T00:00:00Z,\"h\"\n".repeat(1 << 20));
        let read = records(&many_lines, None);
        assert_eq!(read.len(), 1 << 20);
        assert!(read.iter().all(|record| matches!(record, Record::Event(_))), "{:?}", &read[0]);
    }

    #[test]
    fn rows_become_inventories_with_labels() {
        let csv = "asset_id,hostname,environment,criticality,internet_exposed,segment,managed,labels.team,time\n\
                   web-1, web-1.example.com ,Cloud,high,yes,dmz,,payments,2026-11-01T00:00:00Z\n";
        let out = records(csv, None);
        let Record::Event(event) = &out[0] else { panic!("{out:?}") };
        let EventData::AssetInventory(inventory) = &event.data else { panic!() };
        assert_eq!(inventory.hostname.as_deref(), Some("web-1.example.com"));
        assert_eq!(
            (inventory.environment, inventory.internet_exposed, inventory.managed),
            (Environment::Cloud, true, true)
        );
        assert_eq!(inventory.labels.get("team").map(String::as_str), Some("payments"));
        assert_eq!(event.time.to_string(), "2026-11-01T00:00:00Z");
    }

    #[test]
    fn an_unknown_column_refuses_the_file_and_a_bad_row_is_reported() {
        let out = records("asset_id,enviroment\nweb-1,cloud\n", Some(Timestamp(0)));
        assert!(matches!(&out[..], [Record::Failed { reason, .. }] if reason.contains("\"enviroment\"")));
        let csv = "asset_id,environment,criticality,internet_exposed,segment\nweb-1,mars,high,maybe,dmz\nweb-2,edge,low,no,branch\n";
        let out = records(csv, None);
        assert!(matches!(&out[0], Record::Failed { reason, .. }
            if reason.contains("environment must be") && reason.contains("internet_exposed") && reason.contains("--time")));
        let out = records(csv, Some(Timestamp(0)));
        assert!(matches!(&out[1], Record::Event(_)));
    }
}
