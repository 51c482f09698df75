//! One input of `import`: a file, or standard input (`-`), converted into a
//! [`Sink`]. The document formats are read whole; the line formats (Hubble,
//! VPC flow logs, OPA decision logs) line by line as they arrive, on a
//! reader thread, so a quiet pipe never keeps the importer from seeing a
//! stop signal or from flushing what it wrote.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::Duration;

use schemas::Timestamp;
use tokio_util::sync::CancellationToken;

use super::scan::{ScanOptions, ScanState};
use super::stream::{Converter, StreamFormat};
use super::topic::{OutputError, Sink};
use super::{Record, epss, inventory, kev, nvd, scan};

/// Why an input could not be imported (records that fail are reported
/// to the sink, and do not stop the import).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input could not be opened or read.
    #[error("cannot read {name}")]
    Read {
        /// The input, as messages name it.
        name: String,
        /// The reason.
        source: io::Error,
    },
    /// A line input failed part way.
    #[error("cannot read {name} after line {line}")]
    ReadLine {
        /// The input, as messages name it.
        name: String,
        /// The last line read.
        line: u64,
        /// The reason.
        source: io::Error,
    },
    /// The reader thread could not start.
    #[error("cannot start the reader thread")]
    Thread(#[source] io::Error),
    /// The sink failed: the import stops.
    #[error("the output failed")]
    Output(#[source] OutputError),
}

/// A format read as one document (or, for EPSS and the inventory, a CSV).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// CISA's KEV catalog (JSON).
    Kev,
    /// NVD API 2.0 CVE pages.
    Nvd,
    /// FIRST EPSS scores (CSV, maybe gzipped).
    Epss,
    /// An asset inventory CSV.
    Inventory,
    /// A Trivy JSON report.
    Trivy,
    /// A Grype JSON report.
    Grype,
}

/// How a scan or an inventory is read.
pub struct FileOptions<'a> {
    /// Which asset a scan is about, and its time.
    pub scan: &'a ScanOptions,
    /// The scan state kept between runs (`--state`), for findings that disappeared.
    pub state: Option<&'a mut ScanState>,
    /// The time of an inventory without its own (`--time`).
    pub time: Option<Timestamp>,
}

/// How messages name `path`.
pub fn name(path: &Path) -> String {
    if path.as_os_str() == "-" { "standard input".to_owned() } else { path.display().to_string() }
}

/// Opens `path`, or standard input for `-`.
pub fn open(path: &Path) -> Result<Box<dyn Read + Send>, Error> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdin()));
    }
    File::open(path)
        .map(|file| Box::new(file) as Box<dyn Read + Send>)
        .map_err(|source| Error::Read { name: name(path), source })
}

/// Converts one input of a document format into `sink`.
pub fn convert_file(
    format: FileFormat,
    reader: Box<dyn Read + Send>,
    name: &str,
    options: FileOptions<'_>,
    sink: &mut dyn Sink,
) -> Result<(), Error> {
    let read = |source| Error::Read { name: name.to_owned(), source };
    match format {
        FileFormat::Epss => epss::convert(epss::maybe_gunzip(reader).map_err(read)?, |r| sink.take(name, r)),
        FileFormat::Inventory => inventory::convert(reader, options.time, |r| sink.take(name, r)),
        document_format => {
            let document = read_all(reader).map_err(read)?;
            let records = match document_format {
                FileFormat::Kev => kev::convert(&document),
                FileFormat::Nvd => nvd::convert(&document),
                FileFormat::Trivy => scan::convert_trivy(&document, options.scan, options.state),
                _ => scan::convert_grype(&document, options.scan, options.state),
            };
            records.into_iter().for_each(|record| sink.take(name, record));
        }
    }
    sink.failure().map_or(Ok(()), |error| Err(Error::Output(error)))
}

/// Converts one input of a runtime format into `sink`: line by line until
/// its end or `stop` (then the open windows are written), or, for a
/// document (a policy report, a rollout, an OPA array), whole.
pub fn convert_stream(
    format: &Arc<StreamFormat>,
    reader: Box<dyn Read + Send>,
    name: &str,
    sink: &mut dyn Sink,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let read = |source| Error::Read { name: name.to_owned(), source };
    let mut reader = epss::maybe_gunzip(reader).map_err(read)?;
    let mut converter = Converter::new(format.clone(), String::new(), None);
    let array = matches!(**format, StreamFormat::Opa { .. })
        && reader.fill_buf().map(|head| head.trim_ascii_start().starts_with(b"[")).unwrap_or(false);
    if format.reads_lines() && !array {
        read_lines(reader, name, &mut converter, sink, stop)?;
    } else {
        let document = read_all(reader).map_err(read)?;
        converter.record(&|| "".to_owned(), &document, 0, &mut |record| sink.take(name, record));
    }
    converter.finish(&mut |record| sink.take(name, record));
    sink.failure().map_or(Ok(()), |error| Err(Error::Output(error)))
}

/// Converts a line input as it arrives, flushing the sink whenever the
/// input has nothing more right now, until its end or a stop signal.
fn read_lines(
    reader: Box<dyn BufRead + Send>,
    name: &str,
    converter: &mut Converter,
    sink: &mut dyn Sink,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let blocks = spawn_reader(reader)?;
    let mut line_number = 0u64;
    loop {
        let block = match blocks.try_recv() {
            Ok(block) => block,
            Err(TryRecvError::Disconnected) => return Ok(()),
            Err(TryRecvError::Empty) => {
                sink.flush().map_err(Error::Output)?;
                match blocks.recv_timeout(Duration::from_millis(200)) {
                    Ok(block) => block,
                    Err(RecvTimeoutError::Timeout) if stop.is_cancelled() => break,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
            }
        };
        let block = block.map_err(|source| Error::ReadLine { name: name.to_owned(), line: line_number, source })?;
        let block = match block {
            Block::Lines(block) => block,
            Block::TooLong(bytes) => {
                line_number += 1;
                sink.take(name, Record::failed(format!("line {line_number}"), too_long(bytes)));
                continue;
            }
        };
        for line in block.split(|b| *b == b'\n') {
            line_number += 1;
            let at = line_number;
            converter.record(&|| format!("line {at}"), line, 0, &mut |record| sink.take(name, record));
        }
        // The split counts one empty piece after the block's last newline.
        if block.ends_with(b"\n") {
            line_number -= 1;
        }
        if let Some(error) = sink.failure() {
            return Err(Error::Output(error));
        }
        if stop.is_cancelled() {
            break;
        }
    }
    tracing::warn!("stop requested: writing the open windows and exiting");
    Ok(())
}

/// What the reader thread sends.
enum Block {
    /// Whole lines.
    Lines(Vec<u8>),
    /// One line over [`MAX_LINE_BYTES`], of this many bytes, not kept.
    TooLong(usize),
}

/// Reads whole lines in blocks of up to about 64 KiB on a thread of its
/// own; a block ends early when the input has nothing more right now.
fn spawn_reader(reader: Box<dyn BufRead + Send>) -> Result<Receiver<io::Result<Block>>, Error> {
    // A buffer of our own, to see when the input has nothing more right now.
    let mut reader = io::BufReader::with_capacity(1 << 16, reader);
    let (blocks, received): (SyncSender<io::Result<Block>>, _) = std::sync::mpsc::sync_channel(16);
    // Never joined: after a stop it may stay blocked on a quiet pipe until the process exits.
    std::thread::Builder::new()
        .name("import-reader".to_owned())
        .spawn(move || {
            loop {
                let mut block = Vec::with_capacity(1 << 16);
                let mut too_long = None;
                loop {
                    match read_line(&mut reader, &mut block, MAX_LINE_BYTES) {
                        Ok(LineRead::End) => {
                            if !block.is_empty() {
                                let _ = blocks.send(Ok(Block::Lines(block)));
                            }
                            return;
                        }
                        Ok(LineRead::TooLong(bytes)) => {
                            too_long = Some(bytes);
                            break;
                        }
                        Ok(LineRead::Line) if block.len() >= 1 << 16 || reader.buffer().is_empty() => break,
                        Ok(LineRead::Line) => {}
                        Err(error) => {
                            let _ = blocks.send(Err(error));
                            return;
                        }
                    }
                }
                if !block.is_empty() && blocks.send(Ok(Block::Lines(block))).is_err() {
                    return;
                }
                if let Some(bytes) = too_long
                    && blocks.send(Ok(Block::TooLong(bytes))).is_err()
                {
                    return;
                }
            }
        })
        .map_err(Error::Thread)?;
    Ok(received)
}

/// The longest line a line format may have: far over any real record
/// (a Hubble flow is 2–5 kB, an OPA decision with its input rarely 1 MB),
/// so that one line without an end (a gzip bomb's gigabyte) cannot take
/// the importer's memory. A longer line is one failed record.
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// The largest document a runtime format may be once decompressed (a
/// policy report list, a rollout, an OPA array): read whole and parsed,
/// it would otherwise take the memory a gzip bomb asks for.
pub const MAX_DOCUMENT_BYTES: u64 = 64 << 20;

/// What [`read_line`] read.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// The input ended before any byte of a line.
    End,
    /// A line, appended to the buffer with its newline (if it had one).
    Line,
    /// A line of this many bytes, over `max`: skipped to its end, nothing
    /// appended.
    TooLong(usize),
}

/// Reads one line of at most `max` bytes onto `buffer`; a longer one is
/// read past (to its newline) without being kept.
pub fn read_line(reader: &mut impl BufRead, buffer: &mut Vec<u8>, max: usize) -> io::Result<LineRead> {
    let start = buffer.len();
    let mut length = 0usize;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(match length {
                0 => LineRead::End,
                _ if length > max => LineRead::TooLong(length),
                _ => LineRead::Line,
            });
        }
        let (taken, ended) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if length + taken <= max {
            buffer.extend_from_slice(&available[..taken]);
        } else if buffer.len() > start {
            buffer.truncate(start);
        }
        length += taken;
        reader.consume(taken);
        if ended {
            return Ok(if length > max { LineRead::TooLong(length) } else { LineRead::Line });
        }
    }
}

/// The reason of a line over [`MAX_LINE_BYTES`].
pub fn too_long(bytes: usize) -> String {
    format!("the line is {bytes} bytes, over the limit of {} MiB for one record", MAX_LINE_BYTES >> 20)
}

/// Reads a whole document of at most [`MAX_DOCUMENT_BYTES`].
fn read_all(reader: impl Read) -> io::Result<Vec<u8>> {
    // Reserved whole (address space, resident only as it fills): grown by
    // doubling, the vector would pass 128 MiB, and copy, to learn it is too long.
    let mut document = Vec::with_capacity(MAX_DOCUMENT_BYTES as usize + 1);
    reader.take(MAX_DOCUMENT_BYTES + 1).read_to_end(&mut document)?;
    if document.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the document is over {} MiB (after decompression), the most one is read",
                MAX_DOCUMENT_BYTES >> 20
            ),
        ));
    }
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_over_the_limit_is_read_past_and_the_next_read_whole() {
        let mut input = io::BufReader::with_capacity(4, &b"short\nwaytoolongline\nend"[..]);
        let mut buffer = Vec::new();
        let mut reads = Vec::new();
        loop {
            buffer.clear();
            let read = read_line(&mut input, &mut buffer, 8).expect("reads");
            reads.push((String::from_utf8_lossy(&buffer).into_owned(), format!("{read:?}")));
            if read == LineRead::End {
                break;
            }
        }
        let want = [("short\n", "Line"), ("", "TooLong(15)"), ("end", "Line"), ("", "End")];
        assert_eq!(reads, want.map(|(line, read)| (line.to_owned(), read.to_owned())));
    }
}
