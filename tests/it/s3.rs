//! A lake in an S3 bucket (`s3://BUCKET/PREFIX`) goes through the same code
//! as a local one: `replay` writes it, `sql` reads it, a second `replay`
//! commits nothing. The bucket is moto's S3 server (`pip install
//! "moto[server]"`), started here on 127.0.0.1.

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A running moto S3 server, stopped when dropped.
struct Moto {
    child: Child,
    address: String,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs (pip install \"moto[server]\")");
        let started = Instant::now();
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "moto_server did not listen on {address}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, address }
    }

    fn create_bucket(&self, bucket: &str) {
        let mut stream = std::net::TcpStream::connect(&self.address).expect("connects");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.address
        )
        .expect("writes");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("reads");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// `patchtrail` with the AWS environment pointing at this server.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_patchtrail"));
        command
            .args(args)
            .env("AWS_ENDPOINT", format!("http://{}", self.address))
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "patchtrail")
            .env("AWS_SECRET_ACCESS_KEY", "patchtrail")
            .env("AWS_REGION", "us-east-1");
        command
    }

    fn patchtrail(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("runs")
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel
    /// and never answered, as with a stalled endpoint; `thaw` resumes it.
    fn freeze(&self) {
        let status = Command::new("kill").args(["-STOP", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    fn thaw(&self) {
        let status = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FIGURES: &str = "SELECT (SELECT count(*) FROM exposures) AS exposures, \
    (SELECT count(*) FROM exposures WHERE breached) AS breached, \
    (SELECT count(*) FROM exposures_history) AS revisions, \
    (SELECT count(*) FROM patch_outcomes) AS outcomes, \
    (SELECT round(sum(time_to_patch_s)) FROM patch_outcomes) AS ttp, \
    (SELECT count(*) FROM alerts) AS alerts, \
    (SELECT count(*) FROM dead_letters) AS dead, \
    (SELECT count(*) FROM priorities) AS queue";

/// A moto with the lake's bucket, 150 simulated assets × 6 days of events
/// (`seed`), and the lake a local replay of them with `flags` writes: the
/// reference a lake in the bucket must equal.
fn bucket_and_local_lake(
    seed: u64,
    flags: &[&str],
) -> (Moto, tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let moto = Moto::start();
    moto.create_bucket("patchtrail-lake");
    let dir = tempfile::tempdir().expect("temp dir");
    let (events, _) = simulate(dir.path(), 150, 6, seed, true);
    let local = dir.path().join("lake");
    replay(&events, &local, flags);
    (moto, dir, events, local)
}

/// The figures of the lake at `lake` in the bucket equal those of `local`; returns them.
fn assert_same_figures(moto: &Moto, lake: &str, local: &std::path::Path) -> Vec<serde_json::Value> {
    let output = moto.patchtrail(&["sql", "--lake", lake, "--format", "json", FIGURES]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let in_bucket: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let on_disk = sql(local, FIGURES);
    assert_eq!(in_bucket.as_array().expect("rows"), &on_disk);
    on_disk
}

#[test]
fn a_lake_in_an_s3_bucket_is_written_read_and_resumed_like_a_local_one() {
    let (moto, _dir, events, local) = bucket_and_local_lake(8, &["--partitions", "2", "--epoch-lines", "5000"]);

    let lake = "s3://patchtrail-lake/lakes/one";
    let args = ["replay", "--input", path(&events), "--lake", lake, "--partitions", "2", "--epoch-lines", "5000"];
    let output = moto.patchtrail(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("rows written"));

    let on_disk = assert_same_figures(&moto, lake, &local);
    assert!(on_disk[0]["exposures"].as_u64() > Some(0));

    // The same file again: everything is already in the lake.
    let output = moto.patchtrail(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("none (already replayed)"));

    // A wrong bucket is a clear error, not a hang.
    let output = moto.patchtrail(&["sql", "--lake", "s3://no-such-bucket/lake", "SELECT 1"]);
    assert!(!output.status.success());
    assert!(!output.stderr.is_empty());
}

/// The endpoint stalls for 10 s in the middle of a replay: requests time out
/// and are retried (object_store's retry policy, up to 3 minutes), the replay
/// finishes once the endpoint answers again, and the lake holds exactly what
/// a replay without the stall writes.
#[test]
fn an_s3_endpoint_that_stalls_mid_replay_delays_it_and_loses_nothing() {
    let flags = ["--partitions", "2", "--epoch-lines", "300"];
    let (moto, _dir, events, local) = bucket_and_local_lake(9, &flags);

    let lake = "s3://patchtrail-lake/lakes/stalled";
    let started = Instant::now();
    let child = moto
        .command(&[&["replay", "--input", path(&events), "--lake", lake][..], &flags[..]].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    std::thread::sleep(Duration::from_millis(1500));
    moto.freeze();
    let pid = child.id().to_string();
    let running = Command::new("kill").args(["-0", &pid]).status().is_ok_and(|s| s.success());
    std::thread::sleep(Duration::from_secs(10));
    moto.thaw();
    let output = child.wait_with_output().expect("waits");
    let took = started.elapsed().as_secs_f64();
    assert!(running, "the replay had finished before the stall: give it more epochs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    eprintln!("replay with a 10 s stall of the endpoint: {took:.1} s");

    assert_same_figures(&moto, lake, &local);
}

/// The endpoint stops answering for longer than the retry budget
/// (`PATCHTRAIL_S3_RETRY_SECS`, 180 s by default, 4 s here with 1 s request
/// timeouts): the replay stops with one error naming the storage, the lake
/// keeps its last commit, and once the endpoint is back the same command
/// resumes to the lake a replay without the outage writes.
#[test]
fn an_s3_outage_longer_than_the_retry_budget_stops_replay_cleanly_and_it_resumes() {
    let flags = ["--partitions", "2", "--epoch-lines", "300"];
    let (moto, _dir, events, local) = bucket_and_local_lake(9, &flags);

    let lake = "s3://patchtrail-lake/lakes/outage";
    let args = [&["replay", "--input", path(&events), "--lake", lake][..], &flags[..]].concat();
    let child = moto
        .command(&args)
        .env("PATCHTRAIL_S3_RETRY_SECS", "4")
        .env("AWS_TIMEOUT", "1s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    std::thread::sleep(Duration::from_millis(1500));
    moto.freeze();
    let stopped = Instant::now();
    let output = child.wait_with_output().expect("waits");
    let took = stopped.elapsed().as_secs_f64();
    moto.thaw();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the replay finished before the outage: give it more epochs");
    let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(errors[0].contains("lake storage failed at"), "the error names the storage: {stderr}");
    eprintln!("replay stopped {took:.1} s into the outage: {}", errors[0]);

    let resumed = Instant::now();
    let output = moto.patchtrail(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    eprintln!("resumed and finished in {:.1} s", resumed.elapsed().as_secs_f64());
    assert_same_figures(&moto, lake, &local);
}

#[test]
fn a_retry_budget_that_is_not_seconds_is_refused() {
    let moto = Moto::start();
    let output = moto
        .command(&["sql", "--lake", "s3://patchtrail-lake/x", "SELECT 1"])
        .env("PATCHTRAIL_S3_RETRY_SECS", "3m")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PATCHTRAIL_S3_RETRY_SECS must be whole seconds from 1 to 300, got \"3m\""), "{stderr}");
}
