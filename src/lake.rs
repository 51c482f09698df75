//! `patchtrail lake`: publish a lake's committed epochs to its Delta tables
//! (and so convert a lake of the earlier layout), compact and vacuum them;
//! [`compact`], which `run` also calls on its schedule.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use processor::delta::{Compaction, Published};
use processor::lake::Lake;
use processor::latest::{LatestForm, LatestManifest};
use queries::LakeSession;
use queries::session::keeps_latest;
use schemas::Table;

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
    problems.extend(crate::config::lake_is_readable(&location));
    if !problems.is_empty() {
        return Ok(crate::usage_error(&problems));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start a runtime")?;
    let lake = Lake::open(&location)?;
    let started = Instant::now();
    let seconds = || started.elapsed().as_secs_f64();
    match command {
        LakeCommand::Publish(_) | LakeCommand::Migrate(_) => {
            let report = runtime.block_on(lake.publish())?;
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
            let report = runtime.block_on(compact(&lake))?;
            println!(
                "merged {} files into {} and wrote the latest revisions of {} tables ({} rows) in {:.2} s \
                 (the merged files stay until `patchtrail lake vacuum`)",
                report.merged.files_removed,
                report.merged.files_added,
                report.forms,
                report.latest_rows,
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

/// What one [`compact`] did.
#[derive(Debug, Default)]
pub struct Compacted {
    /// The small files merged.
    pub merged: Compaction,
    /// Tables whose latest form was written.
    pub forms: usize,
    /// Rows of those forms (one per key).
    pub latest_rows: u64,
}

/// Compacts the lake and keeps each revised table's latest form
/// (`processor::latest`):
///
/// 1. a table whose form fits the current snapshot gets a new one, read
///    through the old form and what was published since (its cost follows
///    the keys and the tail, not the history), covering the table's files
///    at its current Delta version;
/// 2. the small files are merged (`OPTIMIZE`), those tables' as of that
///    version, so every merged file holds covered rows only;
/// 3. a table with no form that fits (the first compaction, or after another
///    engine compacted it) gets one from its merged files, joining every
///    revision once;
///
/// then the manifest names the new forms. Safe while `run` publishes and
/// `serve` reads: a reader sees the previous manifest or the new one, and
/// uses a form only when its snapshot holds every file the form covers.
pub async fn compact(lake: &Lake) -> anyhow::Result<Compacted> {
    let written_ms = chrono_now_ms();
    let weights = queries::Weights::default();
    let previous = lake.latest_manifest().await?.unwrap_or_default();
    let published = lake.published().await?;
    let session = LakeSession::over(lake, &published, &previous, None, &weights).await?;
    let renewed = session.latest_forms();
    let mut report = Compacted::default();
    let mut manifest = LatestManifest { written_ms, tables: BTreeMap::new() };
    write_forms(lake, &session, &published, &renewed, &mut manifest, &mut report).await?;
    drop(session);

    let pins: BTreeMap<String, Option<u64>> = published
        .versions
        .iter()
        .filter(|(table, _)| manifest.tables.contains_key(*table))
        .map(|(table, version)| (table.clone(), *version))
        .collect();
    let (merged, merges) = lake.optimize(&pins).await?;
    report.merged = merged;
    for (table, merge) in merges {
        let Some(form) = manifest.tables.get_mut(&table) else { continue };
        match form.covers_after(&merge) {
            Some(covers) => form.covers = covers,
            // Cannot happen (the merge was of the version the form covers);
            // the table gets a form from its merged files below.
            None => {
                tracing::warn!(table, "a compaction merged files its latest form does not cover");
                manifest.tables.remove(&table);
            }
        }
    }

    let first: Vec<Table> = Table::ALL
        .into_iter()
        .filter(|table| keeps_latest(*table) && !manifest.tables.contains_key(table.name()))
        .collect();
    if !first.is_empty() {
        let published = lake.published().await?;
        let session = LakeSession::over(lake, &published, &LatestManifest::default(), None, &weights).await?;
        write_forms(lake, &session, &published, &first, &mut manifest, &mut report).await?;
    }
    lake.write_latest_manifest(&manifest).await?;
    Ok(report)
}

/// Writes the latest form of each of `tables` that has files, as `session`
/// reads its latest rows, covering the table's files in `published`.
async fn write_forms(
    lake: &Lake,
    session: &LakeSession,
    published: &Published,
    tables: &[Table],
    manifest: &mut LatestManifest,
    report: &mut Compacted,
) -> anyhow::Result<()> {
    for table in tables {
        let files = published.files.get(table.name()).map_or(&[][..], Vec::as_slice);
        if files.is_empty() {
            continue;
        }
        let rows = session.stream(&format!("SELECT * FROM {}", table.name())).await?;
        let file = lake.write_latest_file(*table, manifest.written_ms, rows).await?;
        report.forms += 1;
        report.latest_rows += file.rows;
        let covers = files.iter().map(|file| file.path.clone()).collect();
        manifest.tables.insert(table.name().to_owned(), LatestForm { covers, files: vec![file] });
    }
    Ok(())
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
