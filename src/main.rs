//! The `patchtrail` binary: parses the command line, sets up logging once, and
//! wires the library crates together. No domain logic lives here.

mod cli;
mod config;
mod demo;
mod metrics;
mod replay;
mod run;
mod serve;
mod signals;
mod simulate;
mod sql;
mod validate;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, ConfigCommand, LogFormat};
use crate::config::Config;

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
        Command::Demo(args) => demo::run(args, config),
        Command::Run(args) => run::run(args, config),
        Command::Replay(args) => replay::run(args, config),
        Command::Serve(args) => serve::run(args, config),
        Command::Sql(args) => sql::run(args, config),
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.show());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check { .. }) => unreachable!("handled above"),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
