//! The `patchtrail` binary: parses the command line, sets up logging once, and
//! wires the library crates together. No domain logic lives here.

mod cli;
mod config;
mod demo;
mod import;
mod lake;
mod replay;
mod run;
mod serve;
mod signals;
mod simulate;
mod sql;
mod tasks;
mod validate;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, ConfigCommand, LogFormat};
use crate::config::Config;
use schemas::ErrorClass;

// Events are decoded on one thread and freed on another; mimalloc handles
// that (and the many small allocations of rows) far better than glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo talks to people through its progress bars and summary: only
    // warnings and errors in between, unless RUST_LOG asks for more.
    let default_filter = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    init_logging(cli.log_format, default_filter);
    if matches!(cli.command, Command::Run(_) | Command::Replay(_) | Command::Demo(_)) {
        keep_freed_memory();
    }
    let environment: Vec<(String, String)> = std::env::vars().collect();
    if let Command::Config(ConfigCommand::Check { file }) = &cli.command {
        return match Config::load(Some(file), environment) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(problems) => usage_error(&problems),
        };
    }
    let config = match Config::load(cli.config.as_deref(), environment) {
        Ok(config) => config,
        Err(problems) => return usage_error(&problems),
    };
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(args, config),
        Command::Validate(args) => validate::run(args),
        Command::Import(args) => import::run(args, config),
        Command::Demo(args) => demo::run(args, config),
        Command::Run(args) => run::run(args, config),
        Command::Replay(args) => replay::run(args, config),
        Command::Serve(args) => serve::run(args, config),
        Command::Sql(args) => sql::run(args, config),
        Command::Lake(command) => lake::run(command, config),
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.show());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { .. }) => unreachable!("handled above"),
        Command::QueryWorker => serve::query_worker(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", schemas::class::one_line(error.as_ref()));
            // Configuration the libraries refuse is the user's to fix, like a bad flag.
            if class_of(&error) == Some(ErrorClass::Input) { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// The class of the first error in the chain that has one.
fn class_of(error: &anyhow::Error) -> Option<ErrorClass> {
    error.chain().find_map(|cause| {
        if let Some(kafka) = cause.downcast_ref::<ingest::kafka::Error>() {
            Some(kafka.class())
        } else if let Some(worker) = cause.downcast_ref::<ingest::worker::Error>() {
            Some(worker.class())
        } else if let Some(lake) = cause.downcast_ref::<processor::error::Error>() {
            Some(lake.class())
        } else {
            cause.downcast_ref::<queries::QueryError>().map(queries::QueryError::class)
        }
    })
}

/// mimalloc's `mi_option_purge_delay` (`mi_option_e` of mimalloc 3's
/// header; the test below checks it still is).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The pipeline commands allocate and free tens of megabytes per epoch (state
/// snapshots, row batches). mimalloc gives freed memory back to the OS after
/// a second, so every epoch faulted the same pages in again and the kernel
/// zeroed them (huge pages): a tenth of `replay`'s time. Keeping the memory
/// makes `replay` of 4.7 M events 18.2 → 14.5 s; the process keeps its
/// high-water mark (765 MiB there) instead of shrinking between epochs.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table;
    // -1 means "never purge", a documented value of this option.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Prints every problem with the command line and exits with status 2.
pub fn usage_error(problems: &[String]) -> ExitCode {
    for problem in problems {
        eprintln!("error: {problem}");
    }
    ExitCode::from(2)
}

/// One subscriber for the whole process, on standard error (standard output
/// carries command results), filtered by RUST_LOG (default `info`, `warn` for `demo`).
fn init_logging(format: LogFormat, default_filter: &str) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // delta-rs and its kernel log every snapshot they build at info: quiet
    // them to warnings unless RUST_LOG names them.
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    if !asked.contains("kernel") && !asked.contains("delta") {
        for directive in ["buoyant_kernel=warn", "buoyant_kernel_engine=warn", "deltalake_core=warn"] {
            if let Ok(directive) = directive.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_we_set() {
        // mimalloc 3's purge delay defaults to 1000 ms, no other option does:
        // if its option numbering changes, this fails before a wrong option is set.
        // SAFETY: reading an option has no preconditions.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000);
    }
}
