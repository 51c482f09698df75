//! `patchtrail validate`: checks a JSONL file of events against the contract.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::ValidateArgs;

/// What was found in the input.
#[derive(Debug, Default)]
struct Summary {
    lines: u64,
    blank: u64,
    valid: u64,
    invalid: u64,
    by_type: BTreeMap<&'static str, u64>,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let name = args.input.display().to_string();
    let input: Box<dyn BufRead> = if name == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.input).with_context(|| format!("cannot open {name}"))?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let summary = validate(input, &mut out, args.max_errors).with_context(|| format!("cannot read {name}"))?;
    let share = 100.0 * summary.invalid as f64 / (summary.valid + summary.invalid).max(1) as f64;
    if summary.invalid as usize > args.max_errors {
        writeln!(
            out,
            "… {} more invalid lines not shown (--max-errors {})",
            summary.invalid as usize - args.max_errors,
            args.max_errors
        )?;
    }
    writeln!(
        out,
        "{name}: {} lines, {} valid, {} invalid ({share:.2} %){}",
        summary.lines,
        summary.valid,
        summary.invalid,
        if summary.blank > 0 { format!(", {} blank", summary.blank) } else { String::new() }
    )?;
    for (event_type, count) in &summary.by_type {
        writeln!(out, "  {event_type:<24} {count:>12}")?;
    }
    out.flush()?;
    Ok(if summary.invalid > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Checks every line, printing up to `max_errors` invalid lines with every problem of each.
fn validate(mut input: impl BufRead, out: &mut impl Write, max_errors: usize) -> io::Result<Summary> {
    let mut summary = Summary::default();
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        summary.lines += 1;
        let trimmed = line.strip_suffix(b"\n").unwrap_or(&line);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            summary.blank += 1;
            continue;
        }
        match schemas::decode(trimmed) {
            Ok(event) => {
                summary.valid += 1;
                *summary.by_type.entry(event.event_type().as_str()).or_default() += 1;
            }
            Err(invalid) => {
                summary.invalid += 1;
                if summary.invalid as usize <= max_errors {
                    for error in &invalid.errors {
                        writeln!(out, "line {}: {error}", summary.lines)?;
                    }
                }
            }
        }
    }
    Ok(summary)
}
