//! `patchtrail replay` and `patchtrail sql` end to end: the lake against the
//! simulator's truth, idempotent re-runs, continuing with a further file,
//! other engines reading the Parquet, and SIGKILL at random moments.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[test]
fn replay_builds_the_lake_the_truth_describes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, truth) = simulate(dir.path(), 250, 12, 5, true);
    let lake = dir.path().join("lake");
    let summary = replay(&events, &lake, &["--partitions", "3", "--epoch-lines", "10000"]);
    // The summary counts what the lake holds: every line, every revision.
    let lines = &truth["lines"];
    let (total, invalid) = (lines["total"].as_u64().expect("total"), lines["invalid"].as_u64().expect("invalid"));
    let counts = format!("events {}, invalid {invalid} (dead letters), already in the lake 0,", total - invalid);
    assert!(summary.contains(&counts), "{counts:?} in {summary}");
    let revisions = sql(&lake, "SELECT count(*) AS n FROM exposures_history")[0]["n"].as_u64().expect("a count");
    let written = summary.lines().find_map(|line| line.trim().strip_prefix("rows written: ")).unwrap_or_default();
    let exposures = format!("exposures {revisions}");
    assert!(written.split(", ").any(|item| item == exposures), "{exposures:?} among the rows written: {summary}");
    compare(&lake, &truth, "exposures", "asset_id, cve_id");
    compare(&lake, &truth, "patch_outcomes", "asset_id, patch_id");
    compare(&lake, &truth, "canary_rollups", "rollout_id");
    compare(&lake, &truth, "segment_drift", "window_start, src_segment, dst_segment");
    let dead = sql(&lake, "SELECT count(*) AS n FROM dead_letters");
    assert_eq!(dead[0]["n"], truth["lines"]["invalid"]);
    // Only the latest state snapshots are kept, and the latest record's is there.
    let snapshots: Vec<_> = std::fs::read_dir(lake.join("_state/assets/0")).expect("snapshots").collect();
    let records = std::fs::read_dir(lake.join("_commits/assets/0")).expect("records").count();
    assert!(records > 3, "the test needs several epochs, got {records}");
    assert_eq!(snapshots.len(), 3, "{snapshots:?}");
    let latest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lake.join(format!("_commits/assets/0/{records:010}.json"))).expect("the latest record"),
    )
    .expect("JSON");
    assert!(lake.join(latest["state"].as_str().expect("state")).is_file());
    let queue = sql(&lake, "SELECT rank, score, blocked_by_canary FROM priorities ORDER BY rank LIMIT 5");
    assert_eq!(queue.len(), 5, "an open exposure backlog to rank");
    assert_eq!(queue[0]["rank"], 1);

    // A second run over the same file commits nothing.
    let before = std::fs::read_dir(lake.join("_commits/assets/0")).expect("commits").count();
    let summary = replay(&events, &lake, &["--partitions", "3", "--epoch-lines", "10000"]);
    assert!(summary.contains("none (already replayed)"), "{summary}");
    assert_eq!(std::fs::read_dir(lake.join("_commits/assets/0")).expect("commits").count(), before);
    compare(&lake, &truth, "exposures", "asset_id, cve_id");
}

#[test]
fn a_further_file_continues_from_the_lake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 120, 8, 6, false);
    let text = std::fs::read_to_string(&events).expect("events");
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let (day1, day2) = (dir.path().join("part1.jsonl"), dir.path().join("part2.jsonl"));
    std::fs::write(&day1, first.join("\n")).expect("write");
    std::fs::write(&day2, second.join("\n")).expect("write");
    let (whole, parts) = (dir.path().join("whole"), dir.path().join("parts"));
    replay(&events, &whole, &[]);
    replay(&day1, &parts, &[]);
    replay(&day2, &parts, &[]);
    for query in [
        "SELECT asset_id, cve_id, status, detected_at, remediated_at, due_at, breached FROM exposures ORDER BY 1, 2",
        "SELECT asset_id, patch_id, outcome, time_to_patch_s, posture_after FROM patch_outcomes ORDER BY 1, 2",
        "SELECT rollout_id, gate, stages FROM canary_rollups ORDER BY 1",
        "SELECT window_start, src_segment, dst_segment, connections FROM segment_drift ORDER BY 1, 2, 3",
    ] {
        assert_eq!(sql(&parts, query), sql(&whole, query), "{query}");
    }
}

#[test]
fn other_engines_read_the_lake_as_plain_parquet() {
    let probe = Command::new("python3").args(["-c", "import duckdb"]).status();
    if tool_missing(probe.is_ok_and(|status| status.success()), "the duckdb Python package") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 80, 5, 7, true);
    let lake = dir.path().join("lake");
    replay(&events, &lake, &[]);
    for table in ["patch_outcomes", "exposures", "alerts", "dead_letters"] {
        let ours = sql(&lake, &format!("SELECT count(*) AS n FROM {table}_history"))[0]["n"].as_u64();
        // Every revision, as the tasks committed them (the current rows are
        // for Delta readers: a rewritten file stays on disk until vacuumed).
        let dir =
            if ["alerts", "dead_letters"].contains(&table) { table.to_owned() } else { format!("{table}_history") };
        let script = format!(
            "import duckdb; print(duckdb.sql(\"select count(*) from read_parquet('{}/{dir}/date=*/*.parquet', hive_partitioning=true)\").fetchall()[0][0])",
            path(&lake)
        );
        let output = Command::new("python3").args(["-c", &script]).output().expect("python runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let theirs: u64 = String::from_utf8_lossy(&output.stdout).trim().parse().expect("a count");
        assert_eq!(ours, Some(theirs), "{table}");
        assert!(theirs > 0, "{table} has rows");
    }
}

#[test]
fn sigkill_at_any_moment_then_resume_gives_the_same_lake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 1200, 15, 9, true);
    let flags = ["--partitions", "2", "--epoch-lines", "4000"];
    let clean = dir.path().join("clean");
    replay(&events, &clean, &flags);
    let crashed = dir.path().join("crashed");
    let mut kills = 0;
    // A fixed spread of moments, from start-up to the last commits; each run
    // resumes from what the killed ones committed.
    for delay_ms in [10u64, 40, 70, 100, 130, 25, 55, 85, 115, 145, 35, 65, 95, 125, 160, 190] {
        let mut args = vec!["replay", "--input", path(&events), "--lake", path(&crashed)];
        args.extend_from_slice(&flags);
        let child = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawns");
        kills += usize::from(kill_after(child, Duration::from_millis(delay_ms)));
    }
    eprintln!("killed mid-run {kills} times");
    assert!(kills >= 10, "killed mid-run {kills} times");
    replay(&events, &crashed, &flags);
    for (table, key) in REVISED_TABLES {
        let query = format!("SELECT * EXCLUDE (updated_at) FROM {table}_history ORDER BY {key}, revision");
        let (a, b) = (sql(&crashed, &query), sql(&clean, &query));
        assert_eq!(a.len(), b.len(), "{table}: rows (every revision)");
        assert!(a == b, "{table}: same rows");
    }
    for (table, key) in [("alerts", "alert_id"), ("dead_letters", "\"offset\"")] {
        let query = format!("SELECT * FROM {table} ORDER BY {key}");
        assert_eq!(sql(&crashed, &query), sql(&clean, &query), "{table}");
    }
}
