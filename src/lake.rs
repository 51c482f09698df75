//! `patchtrail lake`: publish a lake's committed epochs to its Delta tables,
//! convert a lake of an earlier layout (`processor::migrate`), compact and
//! vacuum them.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use processor::lake::Lake;

use crate::cli::LakeCommand;
use crate::config::Config;

pub fn run(command: LakeCommand, mut config: Config) -> anyhow::Result<ExitCode> {
    let (LakeCommand::Publish(args)
    | LakeCommand::Migrate(args)
    | LakeCommand::Optimize(args)
    | LakeCommand::Vacuum(crate::cli::VacuumArgs { lake: args, .. })) = &command;
    crate::config::set(&mut config.lake.location, &args.lake);
    if let LakeCommand::Vacuum(vacuum) = &command {
        crate::config::set(&mut config.lake.vacuum_retain_hours, &vacuum.retain_hours);
    }
    let mut problems = config.problems();
    let location = config.lake.location.clone();
    problems.extend(config.lake.missing_lake());
    if !problems.is_empty() {
        return Ok(crate::usage_error(&problems));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start a runtime")?;
    let lake = Lake::open(&location)?;
    let started = Instant::now();
    let seconds = || started.elapsed().as_secs_f64();
    match command {
        LakeCommand::Publish(_) | LakeCommand::Migrate(_) => {
            let report = match command {
                LakeCommand::Migrate(_) => runtime.block_on(lake.migrate())?,
                _ => runtime.block_on(lake.publish())?,
            };
            println!(
                "published {} epochs ({} files) to the Delta tables of {location} in {:.2} s: {} commits, {} retried, {} commit records pruned",
                report.epochs,
                report.files,
                seconds(),
                report.commits,
                report.conflicts,
                report.pruned
            );
        }
        LakeCommand::Optimize(_) => {
            let report = runtime.block_on(lake.optimize())?;
            println!(
                "merged {} files into {} in {:.2} s (the merged files stay until `patchtrail lake vacuum`)",
                report.files_removed,
                report.files_added,
                seconds()
            );
        }
        LakeCommand::Vacuum(_) => {
            let retain = Duration::from_secs(config.lake.vacuum_retain_hours * 3600);
            let deleted = runtime.block_on(lake.vacuum(retain))?;
            println!(
                "deleted {deleted} files removed from the tables more than {} h ago, in {:.2} s",
                config.lake.vacuum_retain_hours,
                seconds()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
