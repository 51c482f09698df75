//! `patchtrail sql`: one read-only query against the committed lake.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use processor::lake::Lake;
use queries::LakeSession;
use queries::output::Format;

use crate::cli::{OutputFormat, SqlArgs};
use crate::config::Config;

pub fn run(args: SqlArgs, mut config: Config) -> anyhow::Result<ExitCode> {
    crate::config::set(&mut config.lake.location, &args.lake);
    let mut problems = config.problems();
    let lake_location = config.lake.location.clone();
    problems.extend(config.lake.missing_lake());
    if !problems.is_empty() {
        return Ok(crate::usage_error(&problems));
    }
    let weights = config.weights();
    // The query is planned and run on the runtime's threads, whose stacks
    // are large enough for the deepest expression the length limit allows.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(queries::server::worker::QUERY_STACK_BYTES)
        .enable_all()
        .build()
        .context("cannot start the query runtime")?;
    let started = Instant::now();
    let (sql, timing) = (args.sql.clone(), args.timing);
    let task = runtime.spawn(async move {
        let lake = Lake::open(&lake_location)?;
        let session = LakeSession::open_with(&lake, None, &weights).await?;
        let opened = started.elapsed();
        let result = session.query(&sql).await;
        if timing {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            eprintln!(
                "timing: lake opened in {:.1} ms, query ran in {:.1} ms",
                ms(opened),
                ms(started.elapsed() - opened)
            );
        }
        result
    });
    let result = runtime.block_on(task).context("the query task failed")?;
    let (schema, batches) = match result {
        Ok(result) => result,
        Err(error) if error.class() == schemas::ErrorClass::Input => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(2));
        }
        Err(error) => return Err(error.into()),
    };
    let format = match args.format {
        OutputFormat::Table => Format::Table,
        OutputFormat::Json => Format::Json,
        OutputFormat::Csv => Format::Csv,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    queries::output::write(format, &schema, &batches, &mut out).context("cannot write the answer")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
