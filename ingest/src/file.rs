//! Events from a file of CloudEvents, one per line (`replay`): read and
//! decoded in batches on a thread of the caller's, a bounded number of
//! batches ahead of processing. Processed batches come back to that thread
//! to be dropped there: the events were allocated on it, and freeing them on
//! the thread that allocated them is mimalloc's fast path. [`validate`]
//! checks such a file line by line (`validate`).

use std::collections::BTreeMap;
use std::io::{self, BufRead};

use schemas::{FieldError, InputTopic};

/// One line of the input, decoded.
// Nearly every line is an event: boxing it would cost an allocation per line to shrink the rare others.
#[allow(clippy::large_enum_variant)]
pub enum Line {
    /// An empty line.
    Blank,
    /// A valid event.
    Event(schemas::CloudEvent),
    /// A line that is not a valid event: why, and its bytes.
    Invalid {
        /// Every problem found.
        error: String,
        /// The line.
        payload: Vec<u8>,
    },
}

/// Consecutive lines and the bytes they took.
pub struct Batch {
    /// The lines, in file order.
    pub lines: Vec<Line>,
    /// Bytes they took in the file.
    pub bytes: u64,
}

/// Reads and decodes lines in batches until the end of the input (or until
/// the receiver hangs up). Batches the receiver is done with come back on
/// `returned`: they are dropped here and their vectors reused.
pub fn read_batches(
    mut input: impl BufRead,
    out: std::sync::mpsc::SyncSender<io::Result<Batch>>,
    returned: std::sync::mpsc::Receiver<Batch>,
) {
    const LINES: usize = 4096;
    let mut buffer = Vec::with_capacity(4096);
    let mut batch = Batch { lines: Vec::with_capacity(LINES), bytes: 0 };
    let mut spare: Vec<Vec<Line>> = Vec::new();
    loop {
        buffer.clear();
        match input.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(n) => batch.bytes += n as u64,
            Err(error) => {
                let _ = out.send(Err(error));
                return;
            }
        }
        let payload = buffer.strip_suffix(b"\n").unwrap_or(&buffer);
        let payload = payload.strip_suffix(b"\r").unwrap_or(payload);
        let line = if payload.iter().all(u8::is_ascii_whitespace) {
            Line::Blank
        } else {
            match schemas::decode(payload) {
                Ok(event) => Line::Event(event),
                Err(problem) => Line::Invalid { error: problem.to_string(), payload: payload.to_vec() },
            }
        };
        batch.lines.push(line);
        if batch.lines.len() == LINES {
            while let Ok(mut done) = returned.try_recv() {
                done.lines.clear();
                spare.push(done.lines);
            }
            let lines = spare.pop().unwrap_or_else(|| Vec::with_capacity(LINES));
            let full = std::mem::replace(&mut batch, Batch { lines, bytes: 0 });
            if out.send(Ok(full)).is_err() {
                return;
            }
        }
    }
    let _ = out.send(Ok(batch));
}

/// The topic and key of a line that failed validation, when its JSON still
/// says them, so its dead letter goes to the task its event would have.
pub fn route_hint(payload: &[u8]) -> (InputTopic, Option<String>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else { return (InputTopic::Assets, None) };
    let topic = value["type"].as_str().and_then(schemas::EventType::parse).map_or(InputTopic::Assets, |t| t.topic());
    (topic, value["subject"].as_str().map(str::to_owned))
}

/// What [`validate`] found.
#[derive(Debug, Default)]
pub struct Validation {
    /// Lines read.
    pub lines: u64,
    /// Empty or blank lines.
    pub blank: u64,
    /// Valid events.
    pub valid: u64,
    /// Lines that are not valid events.
    pub invalid: u64,
    /// Valid events by type.
    pub by_type: BTreeMap<&'static str, u64>,
}

/// Checks every line of `input` against the event contract; `invalid`
/// gets each invalid line's number and problems, as they are found.
pub fn validate(mut input: impl BufRead, mut invalid: impl FnMut(u64, &[FieldError])) -> io::Result<Validation> {
    let mut found = Validation::default();
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(found);
        }
        found.lines += 1;
        let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            found.blank += 1;
            continue;
        }
        match schemas::decode(trimmed) {
            Ok(event) => {
                found.valid += 1;
                *found.by_type.entry(event.event_type().as_str()).or_default() += 1;
            }
            Err(problems) => {
                found.invalid += 1;
                invalid(found.lines, &problems.errors);
            }
        }
    }
}
