//! `patchtrail validate`: checks a JSONL file of events against the contract.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::ValidateArgs;

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
    let (mut shown, mut failed) = (0, None);
    let summary = ingest::file::validate(input, |line, errors| {
        if shown < args.max_errors && failed.is_none() {
            shown += 1;
            failed = errors.iter().find_map(|error| writeln!(out, "line {line}: {error}").err());
        }
    })
    .with_context(|| format!("cannot read {name}"))?;
    if let Some(error) = failed {
        return Err(error.into());
    }
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
