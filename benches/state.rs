//! Does the processor's state level off over months? Feeds a simulated fleet
//! through the processor (as `replay` does, without the lake's writes) and,
//! every 30 simulated days, prints the size of every task's snapshot (the
//! state `run` restores on start, and roughly what it holds in memory) and
//! the process's resident memory.
//!
//!   cargo bench --bench state                       20,000 assets, 365 days
//!   STATE_ASSETS=2000 STATE_DAYS=120 cargo bench --bench state
//!   STATE_RETENTION_DAYS=0 cargo bench --bench state   (keep every settled key; default 90)
//!   STATE_PROCESSOR=0 cargo bench --bench state   (the simulator alone: its own RSS, which
//!     grows with the days it simulates, to subtract from the RSS column of a full run)
//!
//! Prints one row per 30 days; the last columns are what a planner needs:
//! snapshot bytes per asset, resident memory, the bytes live on the heap
//! (RSS less what the allocator keeps but the program has freed), and the
//! growth of the snapshots over the last 30 days.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ingest::simulate::{ScenarioConfig, Simulator};
use processor::{Processor, config::ProcessorConfig};
use schemas::InputTopic;

#[global_allocator]
static GLOBAL: Counting = Counting;

/// mimalloc, counting the bytes live on the heap: RSS less what the
/// allocator holds but the program does not.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed through to mimalloc unchanged; the counter
// only observes sizes. (The workspace denies unsafe code; a global allocator
// cannot be written without it.)
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Bytes the program has allocated and not freed, MiB.
fn heap_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

/// Lines per epoch: each epoch ends with a flush, as `replay`'s default does.
const EPOCH_LINES: u64 = 200_000;
const DAY_MICROS: i64 = 86_400_000_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident memory of this process, MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The column of a topic: assets, rollouts, network, intel.
fn topic_slot(topic: InputTopic) -> usize {
    match topic {
        InputTopic::Assets => 0,
        InputTopic::Rollouts => 1,
        InputTopic::Network => 2,
        InputTopic::Intel => 3,
    }
}

/// Snapshot bytes of every task, summed by topic (assets, rollouts, network, intel).
fn snapshot_bytes(processor: &Processor) -> [usize; 4] {
    let mut sums = [0; 4];
    for id in processor.tasks().map(|task| task.id()).collect::<Vec<_>>() {
        sums[topic_slot(id.topic)] += processor.snapshot(id).expect("a snapshot").len();
    }
    sums
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not use.
    let assets = env("STATE_ASSETS", 20_000) as u32;
    let days = env("STATE_DAYS", 365) as u32;
    let partitions = env("STATE_PARTITIONS", 4) as u32;
    let config =
        ScenarioConfig { assets, days, seed: 7, late_ratio: 0.01, duplicate_ratio: 0.005, ..ScenarioConfig::default() };
    let start = config.start;
    let mut simulator = Simulator::new(config, false);
    let defaults = ProcessorConfig::default();
    let retention_days = env("STATE_RETENTION_DAYS", (defaults.settled_retention_us / DAY_MICROS) as u64);
    let processor_config = ProcessorConfig { settled_retention_us: retention_days as i64 * DAY_MICROS, ..defaults };
    let mut processor = Processor::new(processor_config, partitions);
    let feed = env("STATE_PROCESSOR", 1) != 0;
    if !feed {
        println!("the simulator alone (STATE_PROCESSOR=0): the state columns stay empty, RSS is the simulator's");
    }
    println!(
        "state of {assets} assets over {days} simulated days, {partitions} partitions per keyed topic, \
         settled keys kept {retention_days} days (0: forever)"
    );
    println!(
        "{:>5} {:>12} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9} {:>9} {:>10}",
        "day", "events", "assets B", "rollouts B", "network B", "intel B", "B/asset", "RSS MiB", "heap MiB", "Δ30d B"
    );
    let started = Instant::now();
    let (mut lines, mut next_report, mut previous) = (0u64, 30i64, 0usize);
    let mut report = |processor: &mut Processor, day: i64, lines: u64| {
        processor.flush();
        let sums = snapshot_bytes(processor);
        let total: usize = sums.iter().sum();
        println!(
            "{day:>5} {lines:>12} {:>11} {:>11} {:>11} {:>11} {:>9.0} {:>9.0} {:>9.0} {:>+10}",
            sums[0],
            sums[1],
            sums[2],
            sums[3],
            total as f64 / f64::from(assets),
            rss_mib(),
            heap_mib(),
            total as i64 - previous as i64,
        );
        previous = total;
    };
    while let Some(line) = simulator.next_line() {
        lines += 1;
        let Ok(event) = schemas::decode(&line.payload) else { continue };
        let day = (event.time.micros() - start.micros()) / DAY_MICROS;
        if day >= next_report {
            report(&mut processor, next_report, lines);
            next_report += 30;
        }
        if feed {
            processor.apply("bench", lines, &event);
        }
        if lines.is_multiple_of(EPOCH_LINES) {
            processor.flush();
        }
    }
    processor.finish_input();
    report(&mut processor, i64::from(days), lines);
    let mut parts: Vec<(&str, usize)> = Vec::new();
    for task in processor.tasks() {
        for (name, bytes) in task.census() {
            match parts.iter_mut().find(|(n, _)| *n == name) {
                Some(part) => part.1 += bytes,
                None => parts.push((name, bytes)),
            }
        }
    }
    println!("assets tasks' state by part, bytes: {parts:?}");
    let forgotten: u64 = processor.tasks().map(|task| task.forgotten()).sum();
    let dead_letters: u64 = processor.tasks().map(|task| task.counts().dead_letters).sum();
    println!("keys forgotten by retention: {forgotten}; dead letters (invalid or beyond retention): {dead_letters}");
    // Each task replaced by itself restored from its snapshot (as `run` does
    // on start): the live heap it held beyond what its state needs (capacity
    // kept from peaks), by topic.
    let mut slack = [0f64; 4];
    for (id, bytes) in processor
        .tasks()
        .map(|task| (task.id(), processor.snapshot(task.id()).expect("a snapshot")))
        .collect::<Vec<_>>()
    {
        let before = heap_mib();
        processor.restore(id, &bytes, "bench").expect("a snapshot just taken restores");
        slack[topic_slot(id.topic)] += before - heap_mib();
    }
    println!(
        "heap MiB held beyond the restored state: assets {:.1}, rollouts {:.1}, network {:.1}, intel {:.1}",
        slack[0], slack[1], slack[2], slack[3]
    );
    let seconds = started.elapsed().as_secs_f64();
    println!("{lines} lines in {seconds:.0} s ({:.0} lines/s)", lines as f64 / seconds);
}
