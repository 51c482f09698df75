//! sqllogictest files (`queries/slt/*.slt`) pinning the metric views and the
//! priority queue on a small hand-made lake (`queries/slt/events.jsonl`),
//! whose figures are worked out by hand in the comments of each file.
//!
//! After a deliberate change to a view, rewrite the expected results with
//! `PATCHTRAIL_SLT_COMPLETE=1 cargo test --release --test it -- slt::` and check the
//! diff against the hand computation before committing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::*;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use processor::lake::Lake;
use queries::LakeSession;
use sqllogictest::{DBOutput, DefaultColumnType};

/// The lake session as a sqllogictest database.
struct Db(Arc<LakeSession>);

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let (schema, batches) = self.0.query(sql).await.map_err(|e| DbError(e.to_string()))?;
        let types = schema.fields().iter().map(|field| column_type(field.data_type())).collect();
        let options = FormatOptions::new().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let columns: Vec<Vec<String>> =
                batch.columns().iter().map(|column| cells(column.as_ref(), &options)).collect::<Result<_, _>>()?;
            for row in 0..batch.num_rows() {
                rows.push(columns.iter().map(|column| column[row].clone()).collect());
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "patchtrail"
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    if data_type.is_integer() {
        DefaultColumnType::Integer
    } else if data_type.is_floating() {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

/// One column's cells as text; floats rounded to 6 decimals so the files pin
/// figures, not the last bits of floating-point arithmetic.
fn cells(column: &dyn Array, options: &FormatOptions) -> Result<Vec<String>, DbError> {
    let float = |value: f64| {
        let text = format!("{value:.6}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        if text == "-0" { "0".to_owned() } else { text.to_owned() }
    };
    let null_or = |row: usize, text: String| if column.is_null(row) { "NULL".to_owned() } else { text };
    Ok(match column.data_type() {
        DataType::Float64 => {
            let values = column.as_primitive::<Float64Type>();
            (0..column.len()).map(|row| null_or(row, float(values.value(row)))).collect()
        }
        DataType::Float32 => {
            let values = column.as_primitive::<Float32Type>();
            (0..column.len()).map(|row| null_or(row, float(f64::from(values.value(row))))).collect()
        }
        _ => {
            let formatter = ArrayFormatter::try_new(column, options).map_err(|e| DbError(e.to_string()))?;
            (0..column.len()).map(|row| formatter.value(row).to_string()).collect()
        }
    })
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("queries/slt")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "slt"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_slt_files_hold_on_the_hand_made_lake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake_dir = dir.path().join("lake");
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/slt/events.jsonl");
    let summary = replay(&events, &lake_dir, &[]);
    assert!(summary.contains("invalid 0"), "the hand-made events are all valid: {summary}");
    let complete = std::env::var_os("PATCHTRAIL_SLT_COMPLETE").is_some();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let failures: Vec<String> = runtime.block_on(async {
        let lake = Lake::open(path(&lake_dir)).expect("lake");
        let session = Arc::new(LakeSession::open(&lake).await.expect("session"));
        let mut failures = Vec::new();
        let files = slt_files();
        assert!(files.len() >= 6, "one file per view and the queue, found {files:?}");
        for file in files {
            let session = Arc::clone(&session);
            let mut runner = sqllogictest::Runner::new(move || {
                let session = Arc::clone(&session);
                async move { Ok::<_, DbError>(Db(session)) }
            });
            runner.with_column_validator(sqllogictest::strict_column_validator);
            let outcome = if complete {
                runner
                    .update_test_file(
                        &file,
                        " ",
                        sqllogictest::default_validator,
                        sqllogictest::default_normalizer,
                        sqllogictest::strict_column_validator,
                    )
                    .await
                    .map_err(|e| e.to_string())
            } else {
                runner.run_file_async(&file).await.map_err(|e| e.display(false).to_string())
            };
            if let Err(message) = outcome {
                failures.push(format!("{}:\n{message}", file.display()));
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_priority_weights_come_from_the_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = dir.path().join("lake");
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/slt/events.jsonl");
    replay(&events, &lake, &[]);
    let query = "SELECT score FROM priorities WHERE asset_id = 'edge-1' AND cve_id = 'CVE-2026-0001'";
    let score = |weights: &[(&str, &str)]| -> f64 {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_patchtrail"))
            .args(["sql", "--lake", path(&lake), "--format", "json", query])
            .envs(weights.iter().copied())
            .output()
            .expect("runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        rows[0]["score"].as_f64().expect("a score")
    };
    // 0.98 × 3 × 2 (KEV) × 1.2 (edge) × 3 (urgency, clamped at 2) = 21.168, as priorities.slt says.
    assert!((score(&[]) - 21.168).abs() < 1e-9);
    // Without the KEV factor and with urgency capped at 1: 0.98 × 3 × 1.2 × 2.
    let tuned =
        score(&[("PATCHTRAIL__PRIORITIZATION__KEV_WEIGHT", "1"), ("PATCHTRAIL__PRIORITIZATION__MAX_URGENCY", "1")]);
    assert!((tuned - 7.056).abs() < 1e-9, "{tuned}");
}
