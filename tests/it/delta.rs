//! The lake's tables are Delta Lake tables: another engine (the `deltalake`
//! Python package, delta-rs, which also backs polars' `read_delta`) reads
//! every table with no knowledge of patchtrail and finds the rows `patchtrail
//! sql` finds; a lake of the earlier layout is refused with the command that
//! converts it, and converted by it.

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::*;
use serde_json::Value;

/// Per table: the columns that identify a row among all its revisions.
const KEYS: [(&str, &[&str]); 9] = [
    ("assets", &["asset_id", "revision"]),
    ("cves", &["cve_id", "revision"]),
    ("patches", &["patch_id", "revision"]),
    ("exposures", &["asset_id", "cve_id", "revision"]),
    ("patch_outcomes", &["asset_id", "patch_id", "revision"]),
    ("canary_rollups", &["rollout_id", "revision"]),
    ("segment_drift", &["src_segment", "dst_segment", "connections", "revision"]),
    ("alerts", &["alert_id", "rule"]),
    ("dead_letters", &["offset", "error"]),
];

fn has_python_deltalake() -> bool {
    Command::new("python3").args(["-c", "import deltalake"]).status().is_ok_and(|status| status.success())
}

/// The key tuples of every row of `table` as the Python `deltalake` package reads it.
fn read_with_python(lake: &std::path::Path, table: &str, keys: &[&str]) -> Vec<Vec<String>> {
    let script = format!(
        "import json, os, deltalake\n\
         t = deltalake.DeltaTable('{}/{table}').to_pyarrow_table()\n\
         rows = [[str(row[k]) for k in {keys:?}] for row in t.to_pylist()]\n\
         print(json.dumps(sorted(rows)), flush=True)\n\
         os._exit(0)",
        path(lake)
    );
    let output = Command::new("python3").args(["-c", &script]).output().expect("python runs");
    assert!(output.status.success(), "{table}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON rows")
}

fn read_with_patchtrail(lake: &std::path::Path, table: &str, keys: &[&str]) -> Vec<Vec<String>> {
    let columns: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    let rows = sql(lake, &format!("SELECT {} FROM {table}_history", columns.join(", ")));
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut rows: Vec<Vec<String>> = rows.iter().map(|row| keys.iter().map(|k| text(&row[*k])).collect()).collect();
    rows.sort();
    rows
}

#[test]
fn python_deltalake_reads_every_table_as_patchtrail_does() {
    if tool_missing(has_python_deltalake(), "the deltalake Python package") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 150, 10, 3, true);
    let lake = dir.path().join("lake");
    // Many small epochs, as `run` commits them.
    replay(&events, &lake, &["--partitions", "3", "--epoch-lines", "1000"]);
    for (table, keys) in KEYS {
        let (theirs, ours) = (read_with_python(&lake, table, keys), read_with_patchtrail(&lake, table, keys));
        assert_eq!(theirs.len(), ours.len(), "{table}: rows");
        assert!(theirs == ours, "{table}: the same rows");
        assert!(!ours.is_empty(), "{table} has rows");
        // Both read the same log: a file published twice would fool the comparison, not this.
        if table != "segment_drift" {
            assert_eq!(ours.iter().collect::<BTreeSet<_>>().len(), ours.len(), "{table}: a row twice");
        }
    }
}

#[test]
fn a_lake_of_the_earlier_layout_is_refused_then_migrated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 40, 3, 5, false);
    let lake = dir.path().join("lake");
    replay(&events, &lake, &[]);
    let count = |lake: &std::path::Path| sql(lake, "SELECT count(*) AS n FROM exposures_history")[0]["n"].as_u64();
    let before = count(&lake);
    assert!(before.is_some_and(|n| n > 0));
    // What the earlier layout had: the commit log and the files, no Delta logs.
    // (One epoch per task here, so publishing pruned no commit record.)
    for entry in std::fs::read_dir(&lake).expect("lake") {
        let table = entry.expect("entry").path();
        let log = table.join("_delta_log");
        if log.is_dir() {
            std::fs::remove_dir_all(log).expect("removes the log");
        }
    }
    std::fs::remove_file(lake.join("_published.json")).expect("removes the stamp");
    let refused = patchtrail(&["sql", "--lake", path(&lake), "SELECT count(*) FROM exposures"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("patchtrail lake migrate"), "{stderr}");
    let migrated = patchtrail(&["lake", "migrate", "--lake", path(&lake)]);
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    assert_eq!(count(&lake), before);
    // Idempotent: a second run adds nothing.
    let again = patchtrail(&["lake", "migrate", "--lake", path(&lake)]);
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("published 0 epochs"));
    assert_eq!(count(&lake), before);
}

/// How many data files of a table are on disk, and which its Delta log holds now
/// (as the Python package lists them).
fn files_of(lake: &std::path::Path, table: &str) -> (usize, BTreeSet<String>) {
    let on_disk = std::fs::read_dir(lake.join(table))
        .expect("table dir")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("date="))
        .flat_map(|dir| std::fs::read_dir(dir.path()).expect("date dir").filter_map(|entry| entry.ok()))
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".parquet"))
        .count();
    // os._exit: the package's threads abort the interpreter's normal exit (deltalake 1.6).
    let script = format!(
        "import deltalake, json, os; print(json.dumps(deltalake.DeltaTable('{}/{table}').file_uris()), flush=True); os._exit(0)",
        path(lake)
    );
    let output = Command::new("python3").args(["-c", &script]).output().expect("python runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    (on_disk, serde_json::from_slice(&output.stdout).expect("a JSON list"))
}

#[test]
fn optimize_and_vacuum_keep_every_row_and_leave_one_file_per_date() {
    if tool_missing(has_python_deltalake(), "the deltalake Python package") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 150, 10, 8, true);
    let lake = dir.path().join("lake");
    replay(&events, &lake, &["--partitions", "3", "--epoch-lines", "1000"]);
    let rows = |lake: &std::path::Path| -> Vec<Vec<Vec<String>>> {
        KEYS.iter().map(|(table, keys)| read_with_patchtrail(lake, table, keys)).collect()
    };
    let before = rows(&lake);
    let (on_disk, in_log) = files_of(&lake, "exposures");
    assert_eq!(on_disk, in_log.len(), "every file on disk is in the table");
    let optimized = patchtrail(&["lake", "optimize", "--lake", path(&lake)]);
    assert!(optimized.status.success(), "{}", String::from_utf8_lossy(&optimized.stderr));
    let (after_disk, after_log) = files_of(&lake, "exposures");
    let partitions = std::fs::read_dir(lake.join("exposures"))
        .expect("table dir")
        .filter(|entry| entry.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("date=")))
        .count();
    assert!(after_log.len() <= partitions, "{} files, then {} for {partitions} dates", in_log.len(), after_log.len());
    assert!(after_log.len() < in_log.len(), "{} files, then {}", in_log.len(), after_log.len());
    let added = after_log.difference(&in_log).count();
    assert!(added > 0);
    assert_eq!(after_disk, on_disk + added, "merged-away files stay until vacuumed");
    assert!(rows(&lake) == before, "the same rows after optimize");
    // Readers of the table (Python) see the same rows too.
    for (table, keys) in KEYS {
        assert!(read_with_python(&lake, table, keys) == read_with_patchtrail(&lake, table, keys), "{table}");
    }
    let vacuumed = patchtrail(&["lake", "vacuum", "--retain-hours", "0", "--lake", path(&lake)]);
    assert!(vacuumed.status.success(), "{}", String::from_utf8_lossy(&vacuumed.stderr));
    let (vacuumed_disk, vacuumed_log) = files_of(&lake, "exposures");
    assert_eq!((vacuumed_disk, &vacuumed_log), (after_log.len(), &after_log), "only the table's files are left");
    assert!(rows(&lake) == before, "the same rows after vacuum");
}

/// A lake of many small files (replayed in tiny epochs, as an uncompacted
/// `run` leaves it) is read under a low open-file limit (96): its files are listed
/// from the Delta logs without a request each (`queries/src/known.rs`), where
/// DataFusion's own listing held every answered file open at once and the
/// query failed with "Too many open files" once the files outnumbered the limit.
#[test]
fn a_lake_of_many_small_files_is_read_under_a_low_open_file_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 100, 4, 5, false);
    let lake = dir.path().join("lake");
    replay(&events, &lake, &["--partitions", "3", "--epoch-lines", "8"]);
    let files = walk(&lake).filter(|file| file.extension().is_some_and(|ext| ext == "parquet")).count();
    assert!(files > 2_000, "{files} files: too few to test the limit");

    let query = "SELECT (SELECT count(*) FROM exposures_history) AS revisions, (SELECT count(*) FROM alerts) AS alerts";
    let output = Command::new("prlimit")
        .args(["--nofile=96:96", "--", env!("CARGO_BIN_EXE_patchtrail"), "sql", "--lake", path(&lake)])
        .args(["--format", "json", query])
        .output()
        .expect("prlimit runs");
    assert!(output.status.success(), "{files} files under 96 open files: {}", String::from_utf8_lossy(&output.stderr));
    let limited: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let rows = sql(&lake, query);
    assert_eq!(limited.as_array().expect("rows"), &rows);
    assert!(rows[0]["revisions"].as_u64() > Some(0));
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> impl Iterator<Item = std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir").flatten() {
            let path = entry.path();
            if path.is_dir() { stack.push(path) } else { files.push(path) }
        }
    }
    files.into_iter()
}

/// Every revised table's rows in `lake`, ordered by key, every column.
fn latest_rows(lake: &std::path::Path) -> Vec<(String, Vec<Value>)> {
    REVISED_TABLES
        .iter()
        .map(|(table, keys)| ((*table).to_owned(), sql(lake, &format!("SELECT * FROM {table} ORDER BY {keys}"))))
        .collect()
}

/// How `patchtrail sql` plans a read of `table`'s latest rows.
fn plan_of(lake: &std::path::Path, table: &str) -> String {
    let rows = sql(lake, &format!("EXPLAIN SELECT * FROM {table}"));
    rows.iter().filter_map(|row| row["plan"].as_str()).collect::<Vec<_>>().join("\n")
}

/// `lake optimize` writes each revised table's latest revisions once
/// (`_latest/`), and readers take those rows plus the latest of what was
/// published since (the tail), instead of joining every revision: the rows
/// are the same as a lake never compacted, after the optimize, after more
/// epochs, after another engine compacted the table behind patchtrail's back
/// (the form no longer fits and readers join every revision again), and
/// after the next optimize and vacuum.
#[test]
fn the_latest_form_and_the_tail_published_since_give_the_rows_of_every_revision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 150, 12, 21, true);
    // The first three fifths of the lines (faults include bytes that are not UTF-8).
    let bytes = std::fs::read(&events).expect("events");
    let lines = bytes.iter().filter(|byte| **byte == b'\n').count();
    let end = bytes.iter().enumerate().filter(|(_, byte)| **byte == b'\n').nth(lines * 3 / 5).expect("a line").0;
    let first = dir.path().join("first.jsonl");
    std::fs::write(&first, &bytes[..=end]).expect("write");
    let (lake, reference) = (dir.path().join("lake"), dir.path().join("reference"));
    let flags = ["--partitions", "3", "--epoch-lines", "400"];
    for target in [&lake, &reference] {
        replay(&first, target, &flags);
    }
    let optimize = |lake: &std::path::Path| {
        let output = patchtrail(&["lake", "optimize", "--lake", path(lake)]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let report = optimize(&lake);
    assert!(report.contains("wrote the latest revisions of 7 tables"), "{report}");
    let forms = || std::fs::read_dir(lake.join("_latest/exposures")).expect("the form's directory").count();
    assert_eq!(forms(), 1);
    // Right after: the form alone, no join.
    let plan = plan_of(&lake, "exposures");
    assert!(plan.contains("_latest/exposures/") && !plan.contains("Join"), "{plan}");
    assert!(latest_rows(&lake) == latest_rows(&reference), "the same rows right after optimize");

    // More epochs: a tail of files the form does not cover, read beside it.
    for target in [&lake, &reference] {
        replay(&events, target, &flags);
    }
    let plan = plan_of(&lake, "exposures");
    assert!(plan.contains("_latest/exposures/") && plan.contains("Anti"), "{plan}");
    let expected = latest_rows(&reference);
    assert!(latest_rows(&lake) == expected, "the same rows with a tail");

    // Another engine deletes one asset's rows (rewriting the files that held
    // them): the form covers files the table no longer has, so readers join
    // every revision, and the asset is gone from patchtrail's rows too.
    if has_python_deltalake() {
        let gone =
            sql(&reference, "SELECT min(asset_id) AS a FROM assets")[0]["a"].as_str().expect("an asset").to_owned();
        for target in [&lake, &reference] {
            let script = format!(
                "import deltalake, os; deltalake.DeltaTable('{}/assets').delete(\"asset_id = '{gone}'\"); os._exit(0)",
                path(target)
            );
            let output = Command::new("python3").args(["-c", &script]).output().expect("python runs");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        }
        let plan = plan_of(&lake, "assets");
        assert!(!plan.contains("_latest/assets/"), "{plan}");
        let expected = latest_rows(&reference);
        assert!(latest_rows(&lake) == expected, "the same rows once the form no longer fits");
        assert!(sql(&lake, &format!("SELECT * FROM assets WHERE asset_id = '{gone}'")).is_empty());
    }
    let expected = latest_rows(&reference);

    // The next optimize writes a form over the whole table again, and
    // vacuum deletes the one it replaced.
    optimize(&lake);
    assert_eq!(forms(), 2);
    assert!(plan_of(&lake, "exposures").contains("_latest/exposures/"));
    assert!(latest_rows(&lake) == expected, "the same rows after the second optimize");
    let vacuumed = patchtrail(&["lake", "vacuum", "--retain-hours", "0", "--lake", path(&lake)]);
    assert!(vacuumed.status.success(), "{}", String::from_utf8_lossy(&vacuumed.stderr));
    assert_eq!(forms(), 1, "the replaced form is vacuumed");
    assert!(latest_rows(&lake) == expected, "the same rows after vacuum");
}
