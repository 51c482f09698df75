//! `patchtrail demo` as a newcomer runs it: the default fleet through the
//! embedded broker, the pipeline and the query server; the summary's figures
//! are the lake's, the lake is the one `replay` builds from the same stream,
//! the server answers until Ctrl-C.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn get(address: &str, route: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connects");
    write!(stream, "GET {route} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status line");
    (status, response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default())
}

#[test]
fn demo_streams_the_default_fleet_serves_it_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = dir.path().join("lake");
    let address = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .args(["demo", "--listen", &address, "--lake", path(&lake)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let started = Instant::now();
    let stdout = child.stdout.take().expect("stdout");
    let mut summary = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        summary.push_str(&line);
        summary.push('\n');
        if line.starts_with("serving on") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "demo too slow:\n{summary}");
    }
    assert!(summary.contains("serving on"), "no serving line:\n{summary}");
    for section in [
        "Time to patch",
        "SLA compliance",
        "open KEV exposures past due",
        "Canary gates",
        "worst segment pairs",
        "Priority queue, top 10",
        "Alerts",
        "curl -s",
        "patchtrail sql --lake",
    ] {
        assert!(summary.contains(section), "{section} missing:\n{summary}");
    }
    assert!(summary.contains("rollback"), "the default fleet has failed canaries:\n{summary}");
    assert!(summary.contains("SLA_BREACH"), "{summary}");
    assert!(summary.contains("    10. "), "ten rows of the queue:\n{summary}");

    // The server is up, publishing and answering from the same lake.
    let (status, body) = get(&address, "/v1/priorities?limit=3");
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["count"], 3, "{body}");
    let (status, metrics) = get(&address, "/metrics");
    assert_eq!(status, 200);
    let open_in_metrics: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("patchtrail_open_exposures{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    let open = sql(&lake, "SELECT count(*) AS n FROM exposures WHERE status = 'open'")[0]["n"].as_f64();
    assert!(open > Some(0.0), "the fleet has open exposures");
    assert_eq!(Some(open_in_metrics), open, "{metrics}");

    // Nothing was lost on the way: the lake equals `replay` of the same stream.
    let events = dir.path().join("events.jsonl");
    let flags = ["--malformed-ratio", "0.001", "--duplicate-ratio", "0.005", "--late-ratio", "0.01"];
    let output = patchtrail(&[&["simulate", "--seed", "1", "--out", path(&events)][..], &flags].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let replayed = dir.path().join("replayed");
    replay(&events, &replayed, &[]);
    let figures = "SELECT (SELECT count(*) FROM exposures) AS exposures, \
                   (SELECT count(*) FROM exposures WHERE breached) AS breached, \
                   (SELECT count(*) FROM patch_outcomes) AS outcomes, \
                   (SELECT round(sum(time_to_patch_s)) FROM patch_outcomes) AS ttp, \
                   (SELECT count(*) FROM dead_letters) AS dead, \
                   (SELECT count(*) FROM segment_drift) AS windows";
    let demo = sql(&lake, figures);
    assert_eq!(demo, sql(&replayed, figures));
    assert!(demo[0]["breached"].as_u64() > Some(0), "{demo:?}");

    // Ctrl-C stops it cleanly.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo did not stop on Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("reads");
    assert!(status.success(), "{status:?}: {stderr}");
}

#[test]
fn demo_refuses_a_directory_that_holds_a_lake_and_reports_every_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("_commits")).expect("dir");
    let output = patchtrail(&["demo", "--once", "--lake", path(dir.path()), "--listen", "nowhere", "--assets", "0"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for problem in ["already holds a lake", "--listen", "assets"] {
        assert!(stderr.contains(problem), "{problem}: {stderr}");
    }
}
