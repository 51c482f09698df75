//! Storage faults: the lake's disk fills up in the middle of `replay` and of
//! `run`. Each stops with one clear error, the lake keeps its last commit
//! (readable, nothing partial in it), and once there is room again the same
//! command resumes to a lake equal to a clean run's.
//!
//! The full disk is a real one: a tmpfs of a few MiB mounted over a directory
//! of the test's own, unmounted when the test ends. Mounting needs root (CI
//! runs as root); elsewhere the tests say they are skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A tmpfs mounted at `dir`, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// `None` where this process may not mount (not root, no tmpfs).
    fn mount(dir: &Path, bytes: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs", path(dir)])
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| SmallDisk { dir: dir.to_owned() })
    }

    /// The fault clears: the same filesystem, `bytes` large, its files kept.
    fn grow(&self, bytes: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}"), path(&self.dir)])
            .status()
            .expect("mount runs");
        assert!(status.success(), "cannot grow the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", path(&self.dir)]).status();
    }
}

/// Bytes under `dir`, every file.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() { bytes_under(&entry.path()) } else { meta.len() };
    }
    total
}

/// The one-error contract: a failure status, an `error:` line that names the
/// cause, and no panic.
fn assert_one_clear_error(output: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{what} succeeded on a full disk:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line\n{stderr}");
    assert_eq!(errors[0].matches("No space left on device").count(), 1, "{what}: the cause, named once\n{stderr}");
    stderr
}

/// What a reader finds in a lake: every table's row count, or the error.
fn readable(lake: &Path) -> Result<i64, String> {
    let output = patchtrail(&["sql", "--lake", path(lake), "--format", "json", "SELECT count(*) AS n FROM exposures"]);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("JSON rows");
    Ok(rows[0]["n"].as_i64().unwrap_or_default())
}

#[test]
fn replay_stops_cleanly_on_a_full_disk_and_resumes_to_the_clean_lake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 300, 12, 41, true);
    let flags = ["--partitions", "3", "--epoch-lines", "3000", "--publish-every", "4"];
    let clean = dir.path().join("clean");
    replay(&events, &clean, &flags);
    let size = bytes_under(&clean);
    // Half of what the lake needs: the disk fills in the middle of the input.
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), size / 2) else {
        tool_missing(false, "mounting a tmpfs (root)");
        return;
    };
    let lake = disk.dir.join("lake");
    let mut args = vec!["replay", "--input", path(&events), "--lake", path(&lake)];
    args.extend(flags);
    let failed = patchtrail(&args);
    let stderr = assert_one_clear_error(&failed, "replay");
    eprintln!("replay on a full disk ({} of {size} bytes):\n{stderr}", size / 2);
    // The last commit is intact: a reader opens the lake and counts its rows.
    let before = readable(&lake).unwrap_or_else(|error| panic!("the lake is unreadable after the fault: {error}"));

    disk.grow(size * 4);
    let started = Instant::now();
    let resumed = patchtrail(&args);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    eprintln!(
        "resumed in {:.1} s; exposures readable before: {before}, after: {:?}",
        started.elapsed().as_secs_f64(),
        readable(&lake)
    );
    assert_same_tables(&lake, &clean);
}

#[test]
fn run_stops_cleanly_on_a_full_disk_and_resumes_to_the_lake_of_replay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = embedded_broker(3);
    let brokers = broker.bootstrap_servers();
    // Small enough for the mock cluster, which keeps 5 MiB per partition and drops the oldest beyond.
    let common = ["simulate", "--assets", "200", "--days", "10", "--seed", "43", "--malformed-ratio", "0.01"];
    let events = dir.path().join("events.jsonl");
    let output = patchtrail(&[&common[..], &["--out", path(&events)]].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = patchtrail(&[&common[..], &["--brokers", &brokers, "--partitions", "3"]].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let replayed = dir.path().join("replayed");
    replay(&events, &replayed, &["--partitions", "3"]);
    // `run` commits an epoch per task every 300 ms: many small epochs.
    let size = bytes_under(&replayed);
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), size / 2) else {
        tool_missing(false, "mounting a tmpfs (root)");
        return;
    };
    let lake = disk.dir.join("lake");
    let run = |label: &str| -> Output {
        let metrics = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
            .args(["run", "--brokers", &brokers, "--lake", path(&lake), "--stop-at-end", "--metrics-listen", &metrics])
            .args(["--commit-interval-ms", "300", "--epoch-messages", "2000"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        let id = child.id();
        let watchdog = std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(180) {
                std::thread::sleep(Duration::from_millis(200));
                if Command::new("kill")
                    .args(["-0", &id.to_string()])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| !s.success())
                {
                    return false;
                }
            }
            let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
            true
        });
        let output = child.wait_with_output().expect("waits");
        assert!(!watchdog.join().unwrap_or(false), "{label}: run did not end within 180 s");
        output
    };
    let failed = run("on a full disk");
    let stderr = assert_one_clear_error(&failed, "run");
    eprintln!(
        "run on a full disk ({} of {size} bytes):\n{}",
        size / 2,
        stderr.lines().rev().take(3).collect::<Vec<_>>().join("\n")
    );
    readable(&lake).unwrap_or_else(|error| panic!("the lake is unreadable after the fault: {error}"));

    disk.grow(size * 8);
    let started = Instant::now();
    let resumed = run("after the fault");
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    eprintln!("run resumed and finished in {:.1} s", started.elapsed().as_secs_f64());
    assert_same_tables(&lake, &replayed);
}
