//! The discrete-event model of a zero-trust estate that produces the events.
//!
//! Every actor (asset agent, scanner, posture service, policy decision point,
//! canary controller, patch orchestrator, network policy engine, intel feed)
//! is a timer in one min-heap ordered by (time, sequence). Popping a timer runs
//! its handler, which emits events at that time and schedules the actor's next
//! step. All randomness comes from one seeded generator consumed in heap order,
//! so a seed gives the same stream, byte for byte. Memory grows with the fleet
//! (timers and per-asset state), never with the number of events.
//!
//! This file holds the estate's state, its construction and the dispatch of
//! timers; the actors' steps are split by concern: [`estate`] (inventory,
//! scans, posture, decisions, flows) and [`patching`] (intel, releases,
//! rollouts, deployments), each an `impl Fleet` over this state; [`timers`]
//! is the calendar queue.

mod estate;
mod patching;
mod timers;

use std::collections::VecDeque;

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use schemas::*;

use super::catalog::{DEPLOY_ERRORS, FLOWS, Os, POSTURE_CHECKS, PRODUCTS, SEGMENTS};
use super::{Due, ScenarioConfig};
use timers::TimerQueue;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// The simulated estate; an iterator of valid events in event-time order.
pub struct Fleet {
    rng: Pcg64Mcg,
    seed: u64,
    start: i64,
    end: i64,
    drift_ratio: f64,
    timers: TimerQueue,
    next_seq: u64,
    assets: Vec<Asset>,
    n_shadows: u32,
    /// Per product: every asset running it.
    product_assets: Vec<Vec<u32>>,
    /// Per segment: its assets.
    segment_assets: Vec<Vec<u32>>,
    cves: Vec<Cve>,
    patches: Vec<Patch>,
    /// Per product: the patch collecting CVEs for the next regular release.
    open_release: Vec<Option<u32>>,
    rollouts: Vec<Rollout>,
    /// Per flow rule: whether it drifts from the intended policy this hour.
    drifting: Vec<bool>,
    out: VecDeque<CloudEvent>,
    n_events: u64,
    n_deployments: u32,
    clock: i64,
}

enum Action {
    Inventory(u32),
    Scan(u32),
    Posture(u32),
    PostPatchPosture { asset: u32, deployment: u32 },
    Decision(u32),
    ShadowDecision(u32),
    FlowExport,
    PublishCve(u32),
    EpssUpdate(u32),
    ReleasePatch(u32),
    StartStage { rollout: u32, stage: u8 },
    StageVerdict { rollout: u32, stage: u8 },
    DeployQueue { asset: u32, rollout: u32, attempt: u8 },
    DeployRun { asset: u32, rollout: u32, attempt: u8, deployment: u32 },
    DeployFinish { asset: u32, rollout: u32, attempt: u8, deployment: u32 },
    RollBack { asset: u32, rollout: u32, deployment: u32 },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    NotReported,
    Open,
    Fixed,
    Suppressed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Install {
    Unverified,
    Verified,
}

/// One CVE on one asset, as the scanner and the patch state see it.
struct AssetCve {
    cve: u32,
    seen: Seen,
    installed: bool,
    /// Risk accepted: the scanner will report it suppressed (unmanaged assets only).
    suppress: bool,
}

struct Asset {
    id: String,
    segment: u8,
    criticality: Criticality,
    exposed: bool,
    managed: bool,
    /// A broken patch agent: most deployments fail.
    flaky: bool,
    ring: Ring,
    trust_base: f64,
    trust: Option<f64>,
    compliant: bool,
    regressed: bool,
    /// Event time of this asset's last event: its events get strictly
    /// increasing times, so their event-time order is never a tie.
    last_ms: i64,
    scan_weekday: i64,
    cves: Vec<AssetCve>,
    patches: Vec<(u32, Install)>,
}

struct Cve {
    id: String,
    product: u8,
    published: i64,
    cvss: f64,
    cvss_version: &'static str,
    epss: f64,
    kev: bool,
    kev_added: Option<Date>,
    kev_due: Option<Date>,
    exploitation: Exploitation,
    automatable: bool,
    /// Share of the product's assets that run a vulnerable version.
    vulnerable_share: f64,
    /// Set for the backlog, whose patches are decided up front.
    backlog: bool,
    fixed_version: String,
}

struct Patch {
    id: String,
    product: u8,
    released: i64,
    cves: Vec<u32>,
    sha: String,
    emergency: bool,
    n_rollouts: u8,
}

struct Rollout {
    id: String,
    patch: u32,
    emergency: bool,
    /// The stage whose analysis will fail (a bad patch or deployment config).
    bad_stage: Option<u8>,
    aborted: bool,
    pauses: u8,
    cohort: u64,
    installs: Vec<(u32, u32)>,
}

impl Fleet {
    /// Builds the estate and schedules every actor's first step.
    pub fn new(config: &ScenarioConfig) -> Self {
        let start = config.start.millis();
        let mut fleet = Fleet {
            rng: Pcg64Mcg::seed_from_u64(config.seed),
            seed: config.seed,
            start,
            end: start + i64::from(config.days) * DAY,
            drift_ratio: config.drift_ratio,
            timers: TimerQueue::new(start),
            next_seq: 0,
            assets: Vec::with_capacity(config.assets as usize),
            n_shadows: (config.assets / 250).max(1),
            product_assets: vec![Vec::new(); PRODUCTS.len()],
            segment_assets: vec![Vec::new(); SEGMENTS.len()],
            cves: Vec::new(),
            patches: Vec::new(),
            open_release: vec![None; PRODUCTS.len()],
            rollouts: Vec::new(),
            drifting: vec![false; FLOWS.len()],
            out: VecDeque::new(),
            n_events: 0,
            n_deployments: 0,
            clock: start,
        };
        fleet.build_assets(config.assets);
        fleet.build_cves();
        for shadow in 0..fleet.n_shadows {
            let at = start + HOUR + fleet.exp(12.0 * HOUR as f64);
            fleet.schedule(at, Action::ShadowDecision(shadow));
        }
        fleet.schedule(start, Action::FlowExport);
        fleet
    }

    /// Fraction of the simulated time already generated, for progress output.
    pub fn progress(&self) -> f64 {
        ((self.clock - self.start) as f64 / (self.end - self.start).max(1) as f64).clamp(0.0, 1.0)
    }

    fn build_assets(&mut self, n_assets: u32) {
        let total_weight: f64 = SEGMENTS.iter().map(|s| s.weight).sum();
        for idx in 0..n_assets {
            let mut pick = self.uniform() * total_weight;
            let segment = SEGMENTS.iter().position(|s| {
                pick -= s.weight;
                pick < 0.0
            });
            let segment_idx = segment.unwrap_or(SEGMENTS.len() - 1);
            let segment = &SEGMENTS[segment_idx];
            let data_tier = matches!(segment.name, "cloud-data" | "core-db" | "branch-gw");
            let criticality = match self.uniform() {
                x if x < if data_tier { 0.6 } else { 0.2 } => Criticality::High,
                x if x < 0.65 => Criticality::Moderate,
                _ => Criticality::Low,
            };
            let managed = self.uniform() < if segment.os == Os::Appliance { 0.93 } else { 0.98 };
            let ring = match self.uniform() {
                x if x < 0.05 => Ring::Canary,
                x if x < 0.25 => Ring::Pilot,
                _ => Ring::Broad,
            };
            let flaky = managed && self.uniform() < 0.03;
            let trust_base = if self.uniform() < 0.08 { self.between(55.0, 72.0) } else { self.between(74.0, 97.0) };
            let asset = Asset {
                id: format!("{}-{idx:05}", segment.host_prefix),
                segment: segment_idx as u8,
                criticality,
                exposed: self.uniform() < segment.exposed,
                managed,
                flaky,
                ring,
                trust_base,
                trust: None,
                compliant: true,
                regressed: false,
                last_ms: i64::MIN,
                scan_weekday: self.rng.random_range(0..7),
                cves: Vec::new(),
                patches: Vec::new(),
            };
            for &product in segment.products {
                self.product_assets[product].push(idx);
            }
            self.segment_assets[segment_idx].push(idx);
            self.assets.push(asset);
            // Inventory first (spread over the first half hour), then the agents.
            let inventory_at = self.start + i64::from(idx) * 30 * MINUTE / i64::from(n_assets.max(1));
            self.schedule(inventory_at, Action::Inventory(idx));
            let scan_at = self.start + HOUR + self.rng.random_range(0..DAY);
            self.schedule(scan_at, Action::Scan(idx));
            if managed {
                let posture_at = self.start + 40 * MINUTE + self.rng.random_range(0..12 * HOUR);
                self.schedule(posture_at, Action::Posture(idx));
            }
            let decision_at = self.start + 45 * MINUTE + self.exp(8.0 * HOUR as f64);
            self.schedule(decision_at, Action::Decision(idx));
        }
    }

    /// The CVE catalog: a backlog published before the window (patched on part
    /// of the fleet already), then a Poisson stream per product over the window.
    fn build_cves(&mut self) {
        let mut published = Vec::new();
        for n in 0..25 {
            let product = self.rng.random_range(0..PRODUCTS.len());
            let at = self.start - self.rng.random_range(2 * DAY..45 * DAY);
            published.push((at, product, true, n));
        }
        for (product_idx, product) in PRODUCTS.iter().enumerate() {
            let mut at = self.start;
            loop {
                at += self.exp(DAY as f64 / product.cves_per_day);
                if at >= self.end {
                    break;
                }
                published.push((at, product_idx, false, 0));
            }
        }
        published.sort_by_key(|&(at, product, backlog, n)| (at, product, backlog, n));
        for (serial, (at, product, backlog, _)) in published.into_iter().enumerate() {
            let cve_idx = self.cves.len() as u32;
            let cve = self.new_cve(serial, at, product as u8, backlog);
            self.cves.push(cve);
            if backlog {
                // The feed syncs the backlog as the window opens; most of it
                // was already fixed by a vendor patch.
                self.schedule(self.start + 5 * MINUTE + i64::from(cve_idx) * 1000, Action::PublishCve(cve_idx));
                let released = if self.uniform() < 0.85 {
                    at + self.rng.random_range(DAY..10 * DAY)
                } else {
                    at + self.rng.random_range(14 * DAY..40 * DAY)
                };
                if released < self.start {
                    // Released before the window: the feed syncs it as the window opens.
                    let patch = self.new_patch(product as u8, released, vec![cve_idx], false);
                    self.schedule(self.start + 10 * MINUTE + i64::from(patch) * 1000, Action::ReleasePatch(patch));
                } else {
                    self.release_later(product as u8, released, cve_idx, false);
                }
            } else {
                let feed_delay = self.rng.random_range(0..2 * HOUR);
                self.schedule(at + feed_delay, Action::PublishCve(cve_idx));
            }
        }
    }

    fn new_cve(&mut self, serial: usize, published: i64, product: u8, backlog: bool) -> Cve {
        let cvss = match self.uniform() {
            x if x < 0.12 => self.between(9.0, 10.0),
            x if x < 0.50 => self.between(7.0, 8.95),
            x if x < 0.92 => self.between(4.0, 6.95),
            _ => self.between(1.5, 3.95),
        };
        let cvss = (cvss * 10.0).round() / 10.0;
        let kev = self.uniform() < if cvss >= 9.0 { 0.15 } else { 0.05 };
        let mut epss = (self.between(0.0005f64.ln(), 0.2f64.ln())).exp();
        if kev || self.uniform() < 0.04 {
            epss = self.between(0.2, 0.97);
        }
        let exploitation = if kev {
            Exploitation::Active
        } else if self.uniform() < 0.15 {
            Exploitation::Poc
        } else {
            Exploitation::None
        };
        let published_date = Timestamp::from_millis(published).date();
        let kev_due_days = [7, 14, 21, 21][self.rng.random_range(0..4)];
        let year = published_date.to_string()[..4].to_owned();
        Cve {
            id: format!("CVE-{year}-{}", 40_000 + serial),
            product,
            published,
            cvss,
            cvss_version: if self.uniform() < 0.2 { "4.0" } else { "3.1" },
            epss: round(epss, 5),
            kev,
            kev_added: kev.then_some(published_date),
            kev_due: kev.then_some(published_date.add_days(kev_due_days)),
            exploitation,
            automatable: self.uniform() < 0.3,
            vulnerable_share: if backlog { 0.35 } else { self.between(0.6, 0.95) },
            backlog,
            fixed_version: format!("{}.{}.{}", 1 + serial % 7, serial % 13, 1 + serial % 29),
        }
    }

    fn new_patch(&mut self, product: u8, released: i64, cves: Vec<u32>, emergency: bool) -> u32 {
        let serial = self.patches.len();
        let vendor = PRODUCTS[product as usize].vendor;
        let year = &Timestamp::from_millis(released).date().to_string()[..4];
        let id = match vendor {
            "microsoft" => format!("KB{}", 5_051_000 + serial),
            "linux" => format!("USN-{}-1", 7_100 + serial),
            _ => format!("{}-{year}-{:04}", vendor.to_ascii_uppercase(), serial),
        };
        let sha = (0..4).map(|_| format!("{:016x}", self.rng.random::<u64>())).collect();
        self.patches.push(Patch { id, product, released, cves, sha, emergency, n_rollouts: 0 });
        (self.patches.len() - 1) as u32
    }

    /// A patch of its own, released at `released` if that is in the window.
    fn release_later(&mut self, product: u8, released: i64, cve: u32, emergency: bool) {
        let patch = self.new_patch(product, released, vec![cve], emergency);
        if released < self.end {
            self.schedule(released, Action::ReleasePatch(patch));
        }
    }

    fn schedule(&mut self, at: i64, action: Action) {
        self.next_seq += 1;
        self.timers.push(Due { at, seq: self.next_seq, value: action });
    }

    fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    fn ms(&mut self, low: i64, high: i64) -> i64 {
        self.rng.random_range(low..high)
    }

    /// An exponentially distributed delay with the given mean, in ms.
    fn exp(&mut self, mean_ms: f64) -> i64 {
        (-mean_ms * (1.0 - self.uniform()).ln()) as i64 + 1
    }

    fn emit(&mut self, prefix: &str, source: &str, at: i64, data: EventData) {
        self.n_events += 1;
        self.out.push_back(CloudEvent {
            id: format!("{prefix}-{:x}-{}", self.seed, self.n_events),
            source: source.to_owned(),
            time: Timestamp::from_millis(at),
            subject: data.subject().to_owned(),
            data,
        });
    }

    /// Emits an event keyed by an asset, at a time strictly after the asset's last one.
    fn emit_for_asset(&mut self, asset: u32, prefix: &str, source: &str, at: i64, data: EventData) {
        let state = &mut self.assets[asset as usize];
        let at = at.max(state.last_ms.saturating_add(1));
        state.last_ms = at;
        self.emit(prefix, source, at, data);
    }

    fn run(&mut self, at: i64, action: Action) {
        match action {
            Action::Inventory(asset) => self.inventory(at, asset),
            Action::Scan(asset) => self.scan(at, asset),
            Action::Posture(asset) => {
                self.posture(at, asset, None);
                let next = at + 12 * HOUR + self.ms(-30 * MINUTE, 30 * MINUTE);
                self.schedule(next, Action::Posture(asset));
            }
            Action::PostPatchPosture { asset, deployment } => self.posture(at, asset, Some(deployment)),
            Action::Decision(asset) => self.decision(at, asset),
            Action::ShadowDecision(shadow) => self.shadow_decision(at, shadow),
            Action::FlowExport => self.flows(at),
            Action::PublishCve(cve) => self.publish_cve(at, cve),
            Action::EpssUpdate(cve) => self.epss_update(at, cve),
            Action::ReleasePatch(patch) => self.release_patch(at, patch),
            Action::StartStage { rollout, stage } => self.start_stage(at, rollout, stage),
            Action::StageVerdict { rollout, stage } => self.stage_verdict(at, rollout, stage),
            Action::DeployQueue { asset, rollout, attempt } => self.deploy_queue(at, asset, rollout, attempt),
            Action::DeployRun { asset, rollout, attempt, deployment } => {
                self.deploy_run(at, asset, rollout, attempt, deployment)
            }
            Action::DeployFinish { asset, rollout, attempt, deployment } => {
                self.deploy_finish(at, asset, rollout, attempt, deployment)
            }
            Action::RollBack { asset, rollout, deployment } => self.roll_back(at, asset, rollout, deployment),
        }
    }
}

impl Iterator for Fleet {
    type Item = CloudEvent;

    fn next(&mut self) -> Option<CloudEvent> {
        while self.out.is_empty() {
            let timer = self.timers.pop()?;
            if timer.at >= self.end {
                self.timers = TimerQueue::new(self.end);
                self.clock = self.end;
                return None;
            }
            self.clock = timer.at;
            self.run(timer.at, timer.value);
        }
        self.out.pop_front()
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// The EPSS model version the simulated scores claim.
const EPSS_MODEL: &str = "v2025.03.14";

/// A simulated EPSS percentile, rising with the score.
fn epss_percentile(epss: f64) -> f64 {
    round(((epss.ln() + 9.21) / 9.21).clamp(0.0, 1.0).powf(0.35), 4)
}
