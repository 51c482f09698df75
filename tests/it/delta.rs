//! The lake's tables are Delta Lake tables: another engine (the `deltalake`
//! Python package, delta-rs, which also backs polars' `read_delta`) reads
//! every table with no knowledge of patchtrail and finds the rows `patchtrail
//! sql` finds: one row per key in `<table>`, every revision in
//! `<table>_history`; a lake of an earlier layout is refused with the
//! command that converts it, and converted by it.

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
    let rows = sql(lake, &format!("SELECT {} FROM {table}", columns.join(", ")));
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
    // Many small epochs, as `run` commits them, published as it goes: each
    // publication rewrites current rows the ones before wrote.
    replay(&events, &lake, &["--partitions", "3", "--epoch-lines", "1000", "--publish-every", "6"]);
    let mut revised = 0;
    for (table, keys) in KEYS {
        let mut names = vec![table.to_owned()];
        if keys.contains(&"revision") {
            names.push(format!("{table}_history"));
        }
        for name in &names {
            let (theirs, ours) = (read_with_python(&lake, name, keys), read_with_patchtrail(&lake, name, keys));
            assert_eq!(theirs.len(), ours.len(), "{name}: rows");
            assert!(theirs == ours, "{name}: the same rows");
            assert!(!ours.is_empty(), "{name} has rows");
            // Both read the same log: a file published twice would fool the comparison, not this.
            if table != "segment_drift" {
                assert_eq!(ours.iter().collect::<BTreeSet<_>>().len(), ours.len(), "{name}: a row twice");
            }
        }
    }
    // `<table>` is one row per key, as another engine reads it: no key twice,
    // every key of the history once.
    for (table, key) in REVISED_TABLES {
        let key: Vec<&str> = key.split(", ").collect();
        let current = read_with_python(&lake, table, &key);
        assert_eq!(current.iter().collect::<BTreeSet<_>>().len(), current.len(), "{table}: a key twice");
        let history = read_with_python(&lake, &format!("{table}_history"), &key);
        assert_eq!(current.len(), history.iter().collect::<BTreeSet<_>>().len(), "{table}: every key once");
        revised += usize::from(current.len() < history.len());
    }
    assert!(revised >= 3, "only {revised} tables have a row revised: the test shows nothing");
}

/// Puts `lake` back into an earlier layout: each revised table's history
/// moved to `<table>/` where its current rows were, and, for the first
/// layout, no Delta log at all.
fn to_earlier_layout(lake: &std::path::Path, without_delta_logs: bool) {
    for (table, _) in REVISED_TABLES {
        std::fs::remove_dir_all(lake.join(table)).expect("removes the current rows");
        std::fs::rename(lake.join(format!("{table}_history")), lake.join(table)).expect("moves the history");
    }
    if without_delta_logs {
        for entry in std::fs::read_dir(lake).expect("lake") {
            let log = entry.expect("entry").path().join("_delta_log");
            if log.is_dir() {
                std::fs::remove_dir_all(log).expect("removes the log");
            }
        }
        std::fs::remove_file(lake.join("_published.json")).expect("removes the stamp");
    }
}

/// Every revised table's rows and history, ordered, every column.
fn every_row(lake: &std::path::Path) -> Vec<Vec<Value>> {
    REVISED_TABLES
        .iter()
        .flat_map(|(table, keys)| {
            [
                sql(lake, &format!("SELECT * FROM {table} ORDER BY {keys}")),
                sql(lake, &format!("SELECT * FROM {table}_history ORDER BY {keys}, revision")),
            ]
        })
        .collect()
}

/// Both earlier layouts (no Delta logs; every revision in `<table>/`) are
/// refused with the command that converts them, and converted by it: the
/// same rows as before, current and history, however many commit records
/// were pruned (the second layout's epochs are known from its Delta log).
#[test]
fn a_lake_of_an_earlier_layout_is_refused_then_migrated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 40, 3, 5, false);
    for (name, without_delta_logs, flags) in
        [("first", true, &[][..]), ("second", false, &["--partitions", "2", "--epoch-lines", "40"][..])]
    {
        let lake = dir.path().join(name);
        // (One epoch per task for the first layout, so publishing pruned no commit record.)
        replay(&events, &lake, flags);
        let before = every_row(&lake);
        assert!(!before[0].is_empty());
        to_earlier_layout(&lake, without_delta_logs);
        let refused = patchtrail(&["sql", "--lake", path(&lake), "SELECT count(*) FROM exposures"]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && stderr.contains("patchtrail lake migrate"), "{name}: {stderr}");
        let published = patchtrail(&["lake", "publish", "--lake", path(&lake)]);
        let stderr = String::from_utf8_lossy(&published.stderr);
        assert!(!published.status.success() && stderr.contains("patchtrail lake migrate"), "{name}: {stderr}");
        let migrated = patchtrail(&["lake", "migrate", "--lake", path(&lake)]);
        assert!(migrated.status.success(), "{name}: {}", String::from_utf8_lossy(&migrated.stderr));
        assert!(every_row(&lake) == before, "{name}: the same rows after migrating");
        // Idempotent: a second run adds nothing.
        let again = patchtrail(&["lake", "migrate", "--lake", path(&lake)]);
        assert!(String::from_utf8_lossy(&again.stdout).starts_with("published 0 epochs"), "{name}");
        assert!(every_row(&lake) == before, "{name}: the same rows after migrating again");
    }
}

/// How many data files of a table are on disk, and which its Delta log holds now
/// (as the Python package lists them).
fn files_of(lake: &std::path::Path, table: &str) -> (usize, BTreeSet<String>) {
    let on_disk = walk(&lake.join(table))
        .into_iter()
        .filter(|file| file.extension().is_some_and(|ext| ext == "parquet"))
        .filter(|file| !file.to_string_lossy().contains("_delta_log"))
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
    let (on_disk, in_log) = files_of(&lake, "exposures_history");
    assert_eq!(on_disk, in_log.len(), "every file on disk is in the table");
    let optimized = patchtrail(&["lake", "optimize", "--lake", path(&lake)]);
    assert!(optimized.status.success(), "{}", String::from_utf8_lossy(&optimized.stderr));
    let (after_disk, after_log) = files_of(&lake, "exposures_history");
    let partitions = std::fs::read_dir(lake.join("exposures_history"))
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
    let (vacuumed_disk, vacuumed_log) = files_of(&lake, "exposures_history");
    assert_eq!((vacuumed_disk, &vacuumed_log), (after_log.len(), &after_log), "only the table's files are left");
    // The current rows' rewritten files go too: 16 buckets at most.
    let (current_disk, current_log) = files_of(&lake, "exposures");
    assert!(current_log.len() <= 16 && current_disk == current_log.len(), "{current_disk} files, {current_log:?}");
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
    let files = walk(&lake).into_iter().filter(|file| file.extension().is_some_and(|ext| ext == "parquet")).count();
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

/// The first three fifths of the lines of `events`, as a file in `dir`
/// (faults include bytes that are not UTF-8).
fn first_part(events: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    let bytes = std::fs::read(events).expect("events");
    let lines = bytes.iter().filter(|byte| **byte == b'\n').count();
    let end = bytes.iter().enumerate().filter(|(_, byte)| **byte == b'\n').nth(lines * 3 / 5).expect("a line").0;
    let first = dir.join("first.jsonl");
    std::fs::write(&first, &bytes[..=end]).expect("write");
    first
}

/// Per revised table: its current rows, and the latest revision of each key
/// of its history, both ordered by key, every column; `except` leaves out
/// the `assets` rows a filter matches.
fn current_and_latest(lake: &std::path::Path, except: &str) -> Vec<(String, Vec<Value>, Vec<Value>)> {
    REVISED_TABLES
        .iter()
        .map(|(table, keys)| {
            let except = if *table == "assets" { except } else { "false" };
            let current = sql(lake, &format!("SELECT * FROM {table} WHERE NOT ({except}) ORDER BY {keys}"));
            let latest = sql(
                lake,
                &format!(
                    "SELECT * EXCLUDE (rn__) FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY revision DESC) \
                     AS rn__ FROM {table}_history) WHERE rn__ = 1 AND NOT ({except}) ORDER BY {keys}"
                ),
            );
            ((*table).to_owned(), current, latest)
        })
        .collect()
}

fn assert_current_is_latest(lake: &std::path::Path, except: &str, when: &str) {
    for (table, current, latest) in current_and_latest(lake, except) {
        assert!(!current.is_empty(), "{table} {when}: no rows");
        assert!(current == latest, "{table} {when}: {} current rows, {} latest revisions", current.len(), latest.len());
    }
}

/// `<table>` is the latest revision of each key of `<table>_history`, as the
/// publisher keeps it epoch by epoch: after the first file, after a second
/// that revises many rows, after another engine rewrote a current file
/// behind patchtrail's back (a `DELETE` through delta-rs: its file is read
/// and its rows moved back to their buckets), and after optimize and vacuum.
#[test]
fn the_current_rows_are_the_latest_revision_of_every_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 150, 12, 21, true);
    let first = first_part(&events, dir.path());
    let lake = dir.path().join("lake");
    let flags = ["--partitions", "3", "--epoch-lines", "400"];
    replay(&first, &lake, &flags);
    assert_current_is_latest(&lake, "false", "after the first file");
    replay(&events, &lake, &flags);
    assert_current_is_latest(&lake, "false", "after the second file");

    let mut except = "false".to_owned();
    if has_python_deltalake() {
        let gone = sql(&lake, "SELECT min(asset_id) AS a FROM assets")[0]["a"].as_str().expect("an asset").to_owned();
        let script = format!(
            "import deltalake, os; deltalake.DeltaTable('{}/assets').delete(\"asset_id = '{gone}'\"); os._exit(0)",
            path(&lake)
        );
        let output = Command::new("python3").args(["-c", &script]).output().expect("python runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert!(sql(&lake, &format!("SELECT * FROM assets WHERE asset_id = '{gone}'")).is_empty());
        let (_, files) = files_of(&lake, "assets");
        assert!(files.iter().any(|file| !file.rsplit('/').next().unwrap_or("").starts_with('b')), "{files:?}");
        // More epochs: the foreign file is absorbed into the buckets.
        let (more, _) = simulate(dir.path(), 150, 3, 22, false);
        replay(&more, &lake, &flags);
        let (_, files) = files_of(&lake, "assets");
        assert!(files.iter().all(|file| file.rsplit('/').next().unwrap_or("").starts_with('b')), "{files:?}");
        except = format!("asset_id = '{gone}'");
        assert_current_is_latest(&lake, &except, "after another engine's delete");
    }
    let optimized = patchtrail(&["lake", "optimize", "--lake", path(&lake)]);
    assert!(optimized.status.success(), "{}", String::from_utf8_lossy(&optimized.stderr));
    assert_current_is_latest(&lake, &except, "after optimize");
    let vacuumed = patchtrail(&["lake", "vacuum", "--retain-hours", "0", "--lake", path(&lake)]);
    assert!(vacuumed.status.success(), "{}", String::from_utf8_lossy(&vacuumed.stderr));
    assert_current_is_latest(&lake, &except, "after vacuum");
}
