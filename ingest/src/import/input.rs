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
use super::{epss, inventory, kev, nvd, scan};

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

/// Reads whole lines in blocks of up to about 64 KiB on a thread of its
/// own; a block ends early when the input has nothing more right now.
fn spawn_reader(reader: Box<dyn BufRead + Send>) -> Result<Receiver<io::Result<Vec<u8>>>, Error> {
    // A buffer of our own, to see when the input has nothing more right now.
    let mut reader = io::BufReader::with_capacity(1 << 16, reader);
    let (blocks, received): (SyncSender<io::Result<Vec<u8>>>, _) = std::sync::mpsc::sync_channel(16);
    // Never joined: after a stop it may stay blocked on a quiet pipe until the process exits.
    std::thread::Builder::new()
        .name("import-reader".to_owned())
        .spawn(move || {
            loop {
                let mut block = Vec::with_capacity(1 << 16);
                loop {
                    match reader.read_until(b'\n', &mut block) {
                        Ok(0) => {
                            if !block.is_empty() {
                                let _ = blocks.send(Ok(block));
                            }
                            return;
                        }
                        Ok(_) if block.len() >= 1 << 16 || reader.buffer().is_empty() => break,
                        Ok(_) => {}
                        Err(error) => {
                            let _ = blocks.send(Err(error));
                            return;
                        }
                    }
                }
                if blocks.send(Ok(block)).is_err() {
                    return;
                }
            }
        })
        .map_err(Error::Thread)?;
    Ok(received)
}

fn read_all(mut reader: impl Read) -> io::Result<Vec<u8>> {
    let mut document = Vec::new();
    reader.read_to_end(&mut document)?;
    Ok(document)
}
