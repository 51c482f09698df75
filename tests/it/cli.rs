//! The `patchtrail` binary as a user runs it: simulate, validate, help, errors.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn patchtrail(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_patchtrail")).args(args).output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn simulate(dir: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let out = dir.join(name);
    let out_arg = out.to_str().expect("utf-8 path");
    let mut args = vec!["simulate", "--assets", "300", "--days", "5", "--seed", "7", "--out", out_arg];
    args.extend_from_slice(extra);
    let output = patchtrail(&args);
    assert!(output.status.success(), "simulate failed: {}", text(&output.stderr));
    out
}

#[test]
fn a_simulated_stream_validates_and_has_a_truth_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let truth = dir.path().join("truth.json");
    let events = simulate(dir.path(), "e.jsonl", &["--truth", truth.to_str().expect("utf-8")]);
    let output = patchtrail(&["validate", events.to_str().expect("utf-8")]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains(" 0 invalid (0.00 %)"), "{stdout}");
    for event_type in schemas::EventType::ALL {
        assert!(stdout.contains(event_type.as_str()), "{event_type} in {stdout}");
    }
    let truth: serde_json::Value = serde_json::from_slice(&std::fs::read(truth).expect("truth written")).expect("JSON");
    assert_eq!(truth["format"], "patchtrail-truth/1");
    assert_eq!(truth["scenario"]["seed"], 7);
    assert!(truth["exposures"].as_array().is_some_and(|rows| !rows.is_empty()));
}

#[test]
fn malformed_lines_are_reported_with_their_line_and_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = simulate(dir.path(), "e.jsonl", &["--malformed-ratio", "0.01"]);
    let output = patchtrail(&["validate", "--max-errors", "5", events.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1), "invalid lines mean exit 1");
    let stdout = text(&output.stdout);
    let problems: Vec<&str> = stdout.lines().filter(|line| line.starts_with("line ")).collect();
    assert!(problems.len() >= 5, "{stdout}");
    assert!(problems.iter().all(|line| line.split(": ").count() >= 2), "{stdout}");
    let summary = stdout.lines().find(|line| line.contains(" invalid (")).expect("a summary line");
    let share: f64 = summary
        .split(" invalid (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a share");
    assert!((0.7..1.3).contains(&share), "about 1 % invalid: {summary}");
}

#[test]
fn the_same_seed_gives_the_same_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = ["--late-ratio", "0.02", "--duplicate-ratio", "0.01", "--malformed-ratio", "0.01"];
    let first = std::fs::read(simulate(dir.path(), "a.jsonl", &flags)).expect("read");
    let second = std::fs::read(simulate(dir.path(), "b.jsonl", &flags)).expect("read");
    assert!(first.len() > 1_000_000);
    assert!(first == second, "byte-identical output");
}

#[test]
fn validate_reads_standard_input() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawns");
    let examples = include_bytes!("../../schemas/tests/data/examples.jsonl");
    let mut input = examples.to_vec();
    input.extend_from_slice(b"\n{\"specversion\":\"1.0\"}\n");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &input).expect("writes");
    let output = child.wait_with_output().expect("finishes");
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("line 14: id: is required"), "{stdout}");
    assert!(stdout.contains("12 valid, 1 invalid"), "{stdout}");
}

#[test]
fn bad_flags_are_all_reported_with_exit_2() {
    let output = patchtrail(&["simulate", "--days", "0", "--late-ratio", "2", "--start", "soon", "--out", "/dev/null"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    for expected in
        ["--days must be between 1 and 3650, got 0", "--late-ratio must be between 0 and 1, got 2", "--start must be"]
    {
        assert!(stderr.contains(expected), "{expected} in {stderr}");
    }
    let output = patchtrail(&["lake", "vacuum", "--retain-hours", "6", "--lake", "/nonexistent/lake"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("lake.vacuum_retain_hours must be below 6"), "{stderr}");
}

/// The subcommand names `--help` lists under "Commands:".
fn listed_commands(help: &str) -> Vec<String> {
    let section = help.split_once("Commands:").map(|(_, rest)| rest).unwrap_or("");
    let section = section.split_once("Options:").map(|(commands, _)| commands).unwrap_or(section);
    section
        .lines()
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_explains_every_command() {
    let stdout = text(&patchtrail(&["--help"]).stdout);
    let commands = listed_commands(&stdout);
    let expected =
        ["simulate", "validate", "import", "replay", "run", "serve", "sql", "demo", "lake", "config", "help"];
    let mut listed = commands.clone();
    listed.sort();
    let mut wanted: Vec<String> = expected.iter().map(|c| (*c).to_owned()).collect();
    wanted.sort();
    assert_eq!(listed, wanted, "the commands --help lists");
    for command in expected.iter().filter(|c| **c != "help") {
        // Each is explained on its line, and has a help of its own.
        let line = stdout.lines().find(|line| line.trim_start().starts_with(&format!("{command} "))).unwrap_or("");
        assert!(line.split_whitespace().count() >= 3, "{command} has no explanation under Commands: {line:?}");
        let help = patchtrail(&[command, "--help"]);
        assert!(help.status.success(), "{command} --help: {}", text(&help.stderr));
        assert!(text(&help.stdout).contains(&format!("Usage: patchtrail {command}")), "{command} --help");
    }
    for flag in ["--log-format", "--config"] {
        assert!(stdout.lines().any(|line| line.trim_start().starts_with(flag)), "{flag} in {stdout}");
    }
    // `import --help` names every format, in the summary and as a value.
    let import = text(&patchtrail(&["import", "--help"]).stdout);
    let short = text(&patchtrail(&["--help"]).stdout);
    let formats = [
        "kev",
        "epss",
        "nvd",
        "trivy",
        "grype",
        "inventory",
        "hubble",
        "vpc-flow",
        "opa",
        "argo-rollouts",
        "policy-report",
    ];
    for format in formats {
        assert!(
            import.lines().any(|line| line.trim_start().starts_with(&format!("{format}:"))
                || line.trim_start().starts_with(&format!("- {format}:"))),
            "{format} is not a value of import --help:\n{import}"
        );
        assert!(
            import.contains(&format!("{format},"))
                || import.contains(&format!("{format})"))
                || import.contains(&format!("({format}")),
            "{format} is not in import's summary:\n{import}"
        );
    }
    assert!(short.contains("policy-report"), "the command list's line for import names the runtime formats: {short}");
    let stdout = text(&patchtrail(&["simulate", "--help"]).stdout);
    for flag in ["--truth", "--malformed-ratio", "--duplicate-ratio", "--late-ratio", "--seed"] {
        assert!(stdout.lines().any(|line| line.trim_start().starts_with(flag)), "{flag} in {stdout}");
    }
    assert!(stdout.contains("docs/truth.md"), "{stdout}");
}

#[test]
fn run_refuses_a_configuration_librdkafka_refuses_at_once_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = dir.path().join("lake");
    let lake = lake.to_str().expect("utf-8");
    // Nothing listens on port 1: a transient error would be retried for minutes.
    let cases: [&[&str]; 2] =
        [&["-X", "no.such.property=1"], &["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=NOPE"]];
    for properties in cases {
        let started = std::time::Instant::now();
        let mut args = vec!["run", "--brokers", "127.0.0.1:1", "--lake", lake, "--metrics-listen", "127.0.0.1:0"];
        args.extend_from_slice(properties);
        let output = patchtrail(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{properties:?}: {stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{properties:?} took {:?}", started.elapsed());
        assert!(!stderr.contains("retrying"), "{properties:?} was retried: {stderr}");
    }
}

#[test]
fn serve_reports_every_bad_flag_at_once() {
    let output = patchtrail(&["serve", "--lake", "/nonexistent/lake", "--max-rows", "0", "--query-timeout-secs", "0"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    for problem in ["--lake", "--max-rows", "--query-timeout-secs"] {
        assert!(stderr.contains(problem), "{problem} in {stderr}");
    }
}

#[test]
fn settings_past_their_sane_maxima_and_endless_files_are_refused_by_name() {
    // Values that once overflowed: a time limit near u64::MAX, a pool of 2^44 MiB.
    let output = patchtrail(&[
        "serve",
        "--lake",
        "/nonexistent/lake",
        "--query-timeout-secs",
        "18446744073709551615",
        "--memory-limit-mib",
        "17592186044416",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    for problem in [
        "server.query_timeout_secs (--query-timeout-secs) must be between 1 and 86400 (a day), got 18446744073709551615",
        "server.memory_limit_mib (--memory-limit-mib) must be between 16 and 1048576 (1 TiB), got 17592186044416",
    ] {
        assert!(stderr.contains(problem), "{problem} in {stderr}");
    }
    // A token file or a config file that never ends is refused, not read until memory runs out.
    let output = patchtrail(&["serve", "--lake", "/nonexistent/lake", "--token-file", "/dev/zero"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("/dev/zero cannot be read: it holds more than 1024 KiB"),
        "{}",
        text(&output.stderr)
    );
    let output = patchtrail(&["config", "check", "/dev/zero"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("it holds more than 1024 KiB"), "{}", text(&output.stderr));
}

#[test]
fn a_typo_in_the_config_file_names_the_key_and_the_line_and_every_layer_applies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("patchtrail.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9000\"\nmax_row = 5\n\n[sla]\nhigh_days = 0\n")
        .expect("writes");
    let output = patchtrail(&["config", "check", file.to_str().expect("UTF-8")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("patchtrail.toml:3: unknown key `server.max_row`"), "{stderr}");
    assert!(stderr.contains("max_rows"), "the keys it could be: {stderr}");
    assert!(stderr.contains("sla.high_days must be between 1 and 3650, got 0"), "{stderr}");
    // The same file on any command stops it with the same report.
    let output = patchtrail(&["--config", file.to_str().expect("UTF-8"), "sql", "SELECT 1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains(":3: unknown key"));

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("patchtrail.example.toml");
    let output = patchtrail(&["config", "check", example.to_str().expect("UTF-8")]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    // File, then environment, then flags; secrets masked.
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9000\"\nmax_rows = 5\n").expect("writes");
    let output = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .args(["--config", file.to_str().expect("UTF-8"), "config", "show"])
        .env("PATCHTRAIL__SERVER__MAX_ROWS", "7")
        .env("PATCHTRAIL__AUTH__TOKEN", "hunter2")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown = text(&output.stdout);
    assert!(shown.contains("listen = \"127.0.0.1:9000\""), "{shown}");
    assert!(shown.contains("max_rows = 7"), "{shown}");
    assert!(!shown.contains("hunter2") && shown.contains("token = \"********\""), "{shown}");
    let output = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .args(["sql", "--lake", "/nonexistent/flag", "SELECT 1"])
        .env("PATCHTRAIL__LAKE__LOCATION", "/nonexistent/env")
        .output()
        .expect("runs");
    assert!(text(&output.stderr).contains("/nonexistent/flag"), "the flag wins: {}", text(&output.stderr));
}

/// `config show` with the environment given (and no `--config`), as TOML.
fn shown_config(file: Option<&Path>, env: &[(&str, &str)]) -> toml::Table {
    let mut command = Command::new(env!("CARGO_BIN_EXE_patchtrail"));
    if let Some(file) = file {
        command.args(["--config", file.to_str().expect("UTF-8")]);
    }
    let output = command.args(["config", "show"]).envs(env.iter().copied()).output().expect("runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout).parse().expect("config show prints TOML")
}

#[test]
fn the_example_file_states_every_default_and_documents_every_key() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("patchtrail.example.toml");
    let defaults = shown_config(None, &[]);
    assert_eq!(shown_config(Some(&example), &[]), defaults, "the example states the defaults");
    let text = std::fs::read_to_string(&example).expect("reads");
    let mut keys = 0;
    for (section, values) in &defaults {
        for key in values.as_table().expect("a section").keys() {
            keys += 1;
            let documented = schemas::layers::line_of(&text, &format!("{section}.{key}")).is_some()
                || text.contains(&format!("# {key} ="))
                || text.contains(&format!("[{section}.{key}]"));
            assert!(documented, "{section}.{key} is not in the example");
        }
    }
    // The token has no default, so `show` leaves it out: the example must still say it.
    assert!(text.contains("# token ="), "auth.token is not in the example");
    assert!(keys > 40, "only {keys} keys shown: is `config show` printing the whole tree?");
}

#[test]
fn the_environment_sets_client_properties_and_show_masks_their_secrets() {
    let env = [
        ("PATCHTRAIL__KAFKA__PROPERTIES__SECURITY_PROTOCOL", "SASL_SSL"),
        ("PATCHTRAIL__KAFKA__PROPERTIES__SASL_PASSWORD", "hunter3"),
        ("PATCHTRAIL__KAFKA__PROPERTIES__SASL_OAUTHBEARER_CONFIG", "clientId=app clientSecret=hunter4"),
        ("PATCHTRAIL__SLA__CRITICAL_DAYS", "7"),
    ];
    let shown = shown_config(None, &env);
    let properties = shown["kafka"]["properties"].as_table().expect("a table");
    assert_eq!(properties["security.protocol"].as_str(), Some("SASL_SSL"));
    assert_eq!(properties["sasl.password"].as_str(), Some("********"));
    assert_eq!(properties["sasl.oauthbearer.config"].as_str(), Some("********"));
    assert_eq!(shown["sla"]["critical_days"].as_integer(), Some(7));
}

#[test]
fn every_problem_of_a_file_and_the_environment_is_reported_with_its_line_or_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("patchtrail.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:9000\"\nlisen = 1\n\n[sla]\ncritcal_days = 7\nhigh_days = 0\n",
    )
    .expect("writes");
    let output = Command::new(env!("CARGO_BIN_EXE_patchtrail"))
        .args(["config", "check", file.to_str().expect("UTF-8")])
        .env("PATCHTRAIL__SERVER__MAX_ROW", "9")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let problems: Vec<String> = text(&output.stderr).lines().map(str::to_owned).collect();
    let all = problems.join("\n");
    assert!(all.contains(":3: unknown key `server.lisen`"), "{all}");
    assert!(all.contains("(keys of [server]: ") && all.contains(" listen, "), "{all}");
    assert!(all.contains(":6: unknown key `sla.critcal_days`"), "{all}");
    assert!(all.contains("PATCHTRAIL__SERVER__MAX_ROW: unknown key `server.max_row`"), "{all}");
    assert!(all.contains("sla.high_days must be between 1 and 3650, got 0"), "{all}");
    assert_eq!(problems.len(), 4, "{all}");

    std::fs::write(&file, "[pipeline]\ncommit_interval_ms = \"soon\"\n").expect("writes");
    let output = patchtrail(&["config", "check", file.to_str().expect("UTF-8")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("line 2") && stderr.contains("commit_interval_ms"), "{stderr}");
}
