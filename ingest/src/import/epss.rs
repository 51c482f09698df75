//! FIRST EPSS daily scores (`epss_scores-YYYY-MM-DD.csv`, plain or gzip) →
//! `vuln.epss.v1`, one event per CVE row, streamed.
//!
//! The first line names the model and the day scored
//! (`#model_version:v2023.03.01,score_date:2025-02-20T00:00:00+0000`), the
//! second is the header `cve,epss,percentile`. The event time is the score
//! date (older files write its offset `+0000`, normalised here).

use std::io::{BufRead, BufReader, Read};

use super::input::{LineRead, MAX_LINE_BYTES, read_line, too_long};
use super::{Record, event, event_id, lenient_timestamp};
use schemas::{EventData, VulnEpss};

/// The `source` of EPSS events.
pub const SOURCE: &str = "https://www.first.org/epss";

/// The input, decompressed when it starts with gzip's magic bytes.
pub fn maybe_gunzip<'a>(input: impl Read + Send + 'a) -> std::io::Result<Box<dyn BufRead + Send + 'a>> {
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(1 << 16, flate2::bufread::MultiGzDecoder::new(reader))))
    } else {
        Ok(Box::new(reader))
    }
}

/// Converts an EPSS file, calling `sink` with each record as it is read.
/// An I/O error (a truncated gzip stream) ends the input as one failed
/// record at the line it stopped.
pub fn convert(mut input: impl BufRead, mut sink: impl FnMut(Record)) {
    let mut model_version: Option<String> = None;
    let mut score_date: Option<(schemas::Timestamp, schemas::Date)> = None;
    let mut header_seen = false;
    let mut bytes = Vec::new();
    for idx in 0.. {
        let position = format!("line {}", idx + 1);
        bytes.clear();
        match read_line(&mut input, &mut bytes, MAX_LINE_BYTES) {
            Ok(LineRead::End) => return,
            Ok(LineRead::Line) => {}
            Ok(LineRead::TooLong(length)) => {
                sink(Record::failed(position, too_long(length)));
                continue;
            }
            Err(error) => {
                sink(Record::failed(position, format!("cannot read on: {error}")));
                return;
            }
        }
        let Ok(line) = std::str::from_utf8(&bytes) else {
            sink(Record::failed(position, "not UTF-8 text"));
            continue;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            for part in comment.split(',') {
                match part.split_once(':') {
                    // An empty one is no model version (found by the fuzzer:
                    // the event said "" and the decoder refused it).
                    Some(("model_version", value)) => {
                        model_version = Some(value.trim().to_owned()).filter(|v| !v.is_empty())
                    }
                    Some(("score_date", value)) => {
                        let at = lenient_timestamp(value);
                        score_date = at.map(|at| (at, at.date()));
                        if at.is_none() {
                            sink(Record::failed(position.clone(), format!("score_date {value:?} is not a date")));
                        }
                    }
                    _ => {}
                }
            }
            continue;
        }
        if !header_seen {
            header_seen = true;
            if line.starts_with("cve,") {
                continue;
            }
        }
        let Some((time, date)) = score_date else {
            sink(Record::failed(position, "no `#model_version:…,score_date:…` line before the scores"));
            continue;
        };
        let mut fields = line.split(',');
        let (Some(cve_id), Some(epss)) = (fields.next(), fields.next()) else {
            sink(Record::failed(position, format!("expected cve,epss,percentile, got {line:?}")));
            continue;
        };
        let percentile = fields.next();
        if !schemas::decode::is_cve_id(cve_id) {
            sink(Record::failed(position, format!("{cve_id:?} is not a CVE id")));
            continue;
        }
        let score = |text: &str| text.trim().parse::<f64>().ok().filter(|v| (0.0..=1.0).contains(v));
        let Some(epss_score) = score(epss) else {
            sink(Record::failed(position, format!("{cve_id}: epss {epss:?} is not a number between 0 and 1")));
            continue;
        };
        let percentile_score = match percentile {
            None | Some("") => None,
            Some(text) => match score(text) {
                Some(value) => Some(value),
                None => {
                    sink(Record::failed(position, format!("{cve_id}: percentile {text:?} is not between 0 and 1")));
                    continue;
                }
            },
        };
        let id = event_id("epss", &[cve_id, &date.to_string(), epss.trim(), percentile.unwrap_or("").trim()]);
        let data = VulnEpss {
            cve_id: cve_id.to_owned(),
            epss: epss_score,
            percentile: percentile_score,
            score_date: date,
            model_version: model_version.clone(),
        };
        sink(Record::Event(event(id, SOURCE, time, EventData::VulnEpss(data))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &[u8]) -> Vec<Record> {
        let mut out = Vec::new();
        convert(maybe_gunzip(input).expect("reads"), |record| out.push(record));
        out
    }

    #[test]
    fn both_header_styles_plain_and_gzip() {
        let older = b"#model_version:v2023.03.01,score_date:2025-02-20T00:00:00+0000\ncve,epss,percentile\nCVE-1999-0001,0.00383,0.73075\n";
        let newer = b"#model_version:v2026.06.15,score_date:2026-09-29T12:00:22Z\ncve,epss,percentile\nCVE-1999-0001,0.9248,0.2667\n";
        let Record::Event(event) = &records(older)[0] else { panic!() };
        assert_eq!(event.time.to_string(), "2025-02-20T00:00:00Z");
        let EventData::VulnEpss(epss) = &event.data else { panic!() };
        assert_eq!((epss.epss, epss.percentile), (0.00383, Some(0.73075)));
        assert_eq!(epss.model_version.as_deref(), Some("v2023.03.01"));
        assert_eq!(epss.score_date.to_string(), "2025-02-20");
        let Record::Event(event) = &records(newer)[0] else { panic!() };
        assert_eq!(event.time.to_string(), "2026-09-29T12:00:22Z");

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, older).expect("compresses");
        let zipped = gz.finish().expect("compresses");
        assert_eq!(records(&zipped), records(older));
    }

    #[test]
    fn bad_rows_are_reported_and_the_rest_go_on() {
        let input = b"#model_version:v1,score_date:2025-02-20\ncve,epss,percentile\nCVE-1999-0001,1.5,0.7\nnot-a-cve,0.1,0.2\nCVE-1999-0002,0.1,0.2\n";
        let out = records(input);
        assert!(
            matches!(&out[0], Record::Failed { position, reason } if position == "line 3" && reason.contains("epss"))
        );
        assert!(matches!(&out[1], Record::Failed { position, .. } if position == "line 4"));
        assert!(matches!(&out[2], Record::Event(_)));
        let unnamed = records(b"#model_version:,score_date:2025-02-20\nCVE-1999-0001,0.1,0.2\n");
        let Record::Event(event) = &unnamed[0] else { panic!("{unnamed:?}") };
        let EventData::VulnEpss(epss) = &event.data else { panic!() };
        assert_eq!(epss.model_version, None, "an empty model version is none");
        assert!(schemas::decode(&serde_json::to_vec(event).expect("encodes")).is_ok());
        let headless = records(b"CVE-1999-0001,0.1,0.2\n");
        assert!(matches!(&headless[0], Record::Failed { reason, .. } if reason.contains("score_date")));
    }
}
