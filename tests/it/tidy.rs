//! What can be checked about the code by reading it (rust-analyzer's
//! `tidy.rs` is the model): every Rust file says what it is for, the paths
//! ARCHITECTURE.md names exist, ARCHITECTURE.md stays short, threads and
//! tasks start only where ARCHITECTURE.md "Threads and tasks" says, metric
//! names live in `metrics.rs` files.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace's Rust files, as paths relative to the root.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if name.ends_with(".rs") {
                out.push(path.strip_prefix(root()).expect("under the root").to_path_buf());
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["schemas", "ingest", "processor", "queries", "src", "tests", "benches", "fuzz"] {
        walk(&root().join(dir), &mut files);
    }
    files.sort();
    assert!(files.len() > 100, "the walk found only {} files", files.len());
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of a file outside its `#[cfg(test)]` module (which, by the
/// crates' convention, comes last).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().take_while(|(_, line)| line.trim() != "#[cfg(test)]").map(|(n, line)| (n + 1, line))
}

/// Every line of the crates' and the binary's code outside tests, benches
/// and the fuzzer: (file, line number, line).
fn library_lines() -> Vec<(String, usize, String)> {
    let mut lines = Vec::new();
    for path in rust_files() {
        let name = path.to_string_lossy().into_owned();
        let elsewhere = ["tests/", "benches/", "fuzz/"].iter().any(|dir| name.starts_with(dir));
        if elsewhere || name.contains("/tests/") {
            continue;
        }
        let text = read(&path);
        lines.extend(code_lines(&text).map(|(number, line)| (name.clone(), number, line.to_owned())));
    }
    lines
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|path| !read(path).starts_with("//!"))
        .map(|path| path.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a `//!` first line saying what they are for: {missing:?}");
}

#[test]
fn architecture_is_short_and_names_only_what_exists() {
    let text = read(Path::new("ARCHITECTURE.md"));
    let lines = text.lines().count();
    assert!(lines <= 300, "ARCHITECTURE.md has {lines} lines; keep it at 300 at most (measurements go to the README)");
    let files = rust_files();
    let mut missing = Vec::new();
    let mut named = 0;
    for (number, line) in text.lines().enumerate() {
        for (at, quoted) in line.split('`').enumerate() {
            // The odd pieces are the ones inside backticks.
            if at % 2 == 0 || quoted.contains([' ', '<', '*', '=', '…']) {
                continue;
            }
            let path = quoted.trim_end_matches([':', ',']);
            let path = path.split_once("::").map_or(path, |(file, _)| file);
            let is_path = path.ends_with(".rs")
                || path.ends_with(".md") && path.contains('/')
                || path.ends_with('/') && !path.starts_with('_') && !path.starts_with('/');
            if !is_path || path.starts_with("../") || path.contains("://") {
                continue;
            }
            named += 1;
            // A path from the root, or the end of one (`kafka/consumer.rs` in ingest's paragraph).
            let wanted = path.trim_end_matches('/');
            let exists = root().join(wanted).exists()
                || files.iter().any(|file| file.ancestors().any(|at| at.ends_with(wanted) && at != Path::new("")));
            if !exists {
                missing.push(format!("line {}: `{quoted}`", number + 1));
            }
        }
    }
    assert!(named > 30, "ARCHITECTURE.md names only {named} paths: is the check reading it?");
    assert!(missing.is_empty(), "ARCHITECTURE.md names paths that do not exist: {missing:?}");
    for krate in ["schemas", "ingest", "processor", "queries"] {
        assert!(text.contains(&format!("### `{krate}`")), "ARCHITECTURE.md's code map has no section for {krate}");
        assert!(root().join(krate).join("Cargo.toml").exists(), "{krate} is not a crate");
    }
}

/// Where a thread or task may start without the Supervisor (`src/tasks.rs`),
/// and why; ARCHITECTURE.md "Threads and tasks" says the same.
const SPAWNS_ALLOWED: &[(&str, &str)] = &[
    ("src/tasks.rs", "the Supervisor itself"),
    ("src/signals.rs", "the signal listener lives as long as the process; the deadline thread must outlive every join"),
    ("ingest/src/import/input.rs", "the reader of a quiet pipe can block for ever; the process exit ends it"),
    ("src/sql.rs", "the query runs on a worker thread for its stack size, awaited at once"),
    ("ingest/src/worker/batch.rs", "scoped threads, joined by their scope"),
    ("ingest/src/simulate/mod.rs", "a scoped thread, joined by its scope"),
    ("processor/src/pipeline.rs", "the epoch writer, owned and joined by the Pipeline"),
    ("queries/src/server/listener.rs", "connection tasks in a JoinSet the listener owns"),
    ("queries/src/server/mod.rs", "blocking work awaited at once"),
    ("queries/src/server/worker.rs", "the query worker process's own runtime"),
];

#[test]
fn threads_and_tasks_start_only_where_architecture_says() {
    const PATTERNS: &[&str] = &[
        "thread::spawn(",
        "thread::Builder",
        "tokio::spawn(",
        "spawn_blocking(",
        ".spawn(async",
        "scope.spawn(",
        "spawn_on(",
    ];
    let architecture = read(Path::new("ARCHITECTURE.md"));
    let mut found = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (name, number, line) in library_lines() {
        if line.trim_start().starts_with("//") || !PATTERNS.iter().any(|p| line.contains(p)) {
            continue;
        }
        match SPAWNS_ALLOWED.iter().find(|(file, _)| *file == name) {
            Some((file, _)) => {
                used.insert(*file);
            }
            None => found.push(format!("{name}:{number}: {}", line.trim())),
        }
    }
    assert!(found.is_empty(), "threads or tasks started outside the Supervisor, not in SPAWNS_ALLOWED: {found:#?}");
    for (file, _) in SPAWNS_ALLOWED {
        assert!(used.contains(file), "{file} is allowed to start threads but starts none: drop it from SPAWNS_ALLOWED");
        assert!(
            architecture.contains(&format!("`{file}`")),
            "ARCHITECTURE.md \"Threads and tasks\" does not name {file}"
        );
    }
}

#[test]
fn metric_names_live_in_metrics_files() {
    let mut found = Vec::new();
    let mut in_metrics = 0;
    for (name, number, line) in library_lines() {
        if !line.contains("\"patchtrail_") {
            continue;
        }
        if name.ends_with("/metrics.rs") {
            in_metrics += 1;
        } else {
            found.push(format!("{name}:{number}: {}", line.trim()));
        }
    }
    assert!(in_metrics >= 15, "only {in_metrics} metric names found in metrics.rs files: is the check reading them?");
    assert!(found.is_empty(), "metric names outside a metrics.rs: {found:#?}");
}
