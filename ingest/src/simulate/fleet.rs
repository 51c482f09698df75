//! The discrete-event model of a zero-trust estate that produces the events.
//!
//! Every actor (asset agent, scanner, posture service, policy decision point,
//! canary controller, patch orchestrator, network policy engine, intel feed)
//! is a timer in one min-heap ordered by (time, sequence). Popping a timer runs
//! its handler, which emits events at that time and schedules the actor's next
//! step. All randomness comes from one seeded generator consumed in heap order,
//! so a seed gives the same stream, byte for byte. Memory grows with the fleet
//! (timers and per-asset state), never with the number of events.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use schemas::*;

use super::catalog::{DEPLOY_ERRORS, FLOWS, Os, POSTURE_CHECKS, PRODUCTS, SEGMENTS};
use super::{Due, ScenarioConfig};

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

/// An actor's next step.
type Timer = Due<i64, Action>;

/// A calendar queue of timers, popped in (time, sequence) order.
///
/// A binary heap of every pending timer (hundreds of thousands for a large
/// fleet) misses the cache on each pop. Here only the current minute's timers
/// are in a heap; later ones wait in one bucket per minute over a horizon of
/// a few days, and the rare timers beyond that in an overflow heap.
struct TimerQueue {
    current: BinaryHeap<Reverse<Timer>>,
    /// Start of the minute `current` holds.
    slot_start: i64,
    slots: Vec<Vec<Reverse<Timer>>>,
    in_slots: usize,
    beyond: BinaryHeap<Reverse<Timer>>,
}

const SLOT_MS: i64 = MINUTE;
const N_SLOTS: usize = 4096;

impl TimerQueue {
    fn new(start: i64) -> Self {
        TimerQueue {
            current: BinaryHeap::new(),
            slot_start: start.div_euclid(SLOT_MS) * SLOT_MS,
            slots: (0..N_SLOTS).map(|_| Vec::new()).collect(),
            in_slots: 0,
            beyond: BinaryHeap::new(),
        }
    }

    fn slot_of(at: i64) -> usize {
        at.div_euclid(SLOT_MS).rem_euclid(N_SLOTS as i64) as usize
    }

    fn push(&mut self, timer: Timer) {
        if timer.at < self.slot_start + SLOT_MS {
            self.current.push(Reverse(timer));
        } else if timer.at < self.slot_start + SLOT_MS * N_SLOTS as i64 {
            self.slots[Self::slot_of(timer.at)].push(Reverse(timer));
            self.in_slots += 1;
        } else {
            self.beyond.push(Reverse(timer));
        }
    }

    fn pop(&mut self) -> Option<Timer> {
        loop {
            if let Some(Reverse(timer)) = self.current.pop() {
                return Some(timer);
            }
            if self.in_slots == 0 {
                // Nothing within the horizon: jump to the next overflow timer.
                let Reverse(next) = self.beyond.peek()?;
                self.slot_start = self.slot_start.max(next.at.div_euclid(SLOT_MS) * SLOT_MS - SLOT_MS);
            }
            self.slot_start += SLOT_MS;
            let mut batch = std::mem::take(&mut self.slots[Self::slot_of(self.slot_start)]);
            self.in_slots -= batch.len();
            while let Some(Reverse(next)) = self.beyond.peek()
                && next.at < self.slot_start + SLOT_MS
            {
                batch.extend(self.beyond.pop());
            }
            let mut spent = std::mem::replace(&mut self.current, BinaryHeap::from(batch)).into_vec();
            spent.clear();
            self.slots[Self::slot_of(self.slot_start)] = spent;
        }
    }
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

    fn inventory(&mut self, at: i64, asset_idx: u32) {
        let asset = &self.assets[asset_idx as usize];
        let segment = &SEGMENTS[asset.segment as usize];
        let os_version = match segment.os {
            Os::Linux => "6.1.112",
            Os::Windows => "10.0.26100",
            Os::Appliance => "4.2.1",
        };
        let site = ["lyon", "austin", "osaka", "leeds", "porto"][asset_idx as usize % 5];
        let data = EventData::AssetInventory(AssetInventory {
            asset_id: asset.id.clone(),
            hostname: Some(format!("{}.{}.example", asset.id, segment.environment)),
            environment: segment.environment,
            criticality: asset.criticality,
            internet_exposed: asset.exposed,
            segment: segment.name.to_owned(),
            os_family: Some(segment.os.family().to_owned()),
            os_version: Some(os_version.to_owned()),
            managed: asset.managed,
            labels: [("site".to_owned(), site.to_owned())].into(),
        });
        self.emit_for_asset(asset_idx, "inv", "urn:cmdb:servicenow", at, data);
        self.schedule(at + 7 * DAY, Action::Inventory(asset_idx));
    }

    /// The daily scan reports changes (new, fixed, reopened) and, once a week,
    /// every finding that is still open or suppressed.
    fn scan(&mut self, at: i64, asset_idx: u32) {
        let asset = &mut self.assets[asset_idx as usize];
        let full_report = (at - self.start) / DAY % 7 == asset.scan_weekday;
        let mut findings = Vec::new();
        for entry in &mut asset.cves {
            let status = match (entry.seen, entry.installed) {
                (Seen::Open | Seen::Suppressed, true) => Some(FindingStatus::Fixed),
                (Seen::NotReported | Seen::Fixed, false) => Some(FindingStatus::Open),
                (Seen::Open, false) if entry.suppress => Some(FindingStatus::Suppressed),
                (Seen::Open, false) if full_report => Some(FindingStatus::Open),
                (Seen::Suppressed, false) if full_report => Some(FindingStatus::Suppressed),
                _ => None,
            };
            if let Some(status) = status {
                entry.seen = match status {
                    FindingStatus::Open => Seen::Open,
                    FindingStatus::Fixed => Seen::Fixed,
                    FindingStatus::Suppressed => Seen::Suppressed,
                };
                findings.push((entry.cve, status));
            }
        }
        let source = if asset.managed { "urn:scanner:agent" } else { "urn:scanner:network" };
        for (cve_idx, status) in findings {
            let cve = &self.cves[cve_idx as usize];
            let product = &PRODUCTS[cve.product as usize];
            let data = EventData::VulnFinding(VulnFinding {
                asset_id: self.assets[asset_idx as usize].id.clone(),
                cve_id: cve.id.clone(),
                status,
                package: Some(product.package.to_owned()),
                installed_version: None,
                fixed_version: Some(cve.fixed_version.clone()),
                scanner_cvss: None,
                scanner_severity: None,
                scanner: None,
            });
            self.emit_for_asset(asset_idx, "scan", source, at, data);
        }
        let next = at + DAY + self.ms(-10 * MINUTE, 10 * MINUTE);
        self.schedule(next, Action::Scan(asset_idx));
    }

    fn posture(&mut self, at: i64, asset_idx: u32, deployment: Option<u32>) {
        let regression = deployment.is_some() && self.uniform() < 0.04;
        let noise = self.between(-2.0, 2.0);
        let asset = &mut self.assets[asset_idx as usize];
        let cves = &self.cves;
        let open_severe = asset
            .cves
            .iter()
            .filter(|c| c.seen == Seen::Open && !c.installed && cves[c.cve as usize].cvss >= 7.0)
            .count()
            .min(8);
        asset.regressed = regression;
        let mut trust = asset.trust_base - 2.5 * open_severe as f64 + noise;
        if regression {
            trust -= 25.0;
        }
        let trust = round(trust.clamp(0.0, 100.0), 1);
        let compliant = trust >= 70.0 && !regression;
        let mut failed_checks = Vec::new();
        if !compliant && open_severe > 0 {
            failed_checks.push(POSTURE_CHECKS[0].to_owned());
        }
        if regression || trust < 60.0 {
            failed_checks.push(POSTURE_CHECKS[1].to_owned());
        }
        if regression {
            failed_checks.push(POSTURE_CHECKS[3].to_owned());
        }
        asset.trust = Some(trust);
        asset.compliant = compliant;
        let data = EventData::PostureAssessment(PostureAssessment {
            asset_id: asset.id.clone(),
            trust_score: trust,
            compliant,
            trigger: Some(if deployment.is_some() { PostureTrigger::PostPatch } else { PostureTrigger::Scheduled }),
            deployment_id: deployment.map(|n| self.deployment_id(n)),
            failed_checks,
        });
        self.emit_for_asset(asset_idx, "pst", "urn:posture:edr", at, data);
    }

    fn decision(&mut self, at: i64, asset_idx: u32) {
        let stale_cache = self.uniform() < 0.015;
        let roll = self.uniform();
        let user = self.rng.random_range(0..5000);
        let app = self.rng.random_range(0..40);
        let asset = &self.assets[asset_idx as usize];
        let decision = match (asset.managed, asset.trust) {
            _ if stale_cache => Decision::Allow,
            (false, _) => {
                if roll < 0.3 {
                    Decision::Allow
                } else if roll < 0.8 {
                    Decision::StepUp
                } else {
                    Decision::Deny
                }
            }
            (true, None) => Decision::StepUp,
            (true, Some(_)) if asset.compliant => Decision::Allow,
            (true, Some(trust)) if trust >= 50.0 => Decision::StepUp,
            _ => Decision::Deny,
        };
        let segment = SEGMENTS[asset.segment as usize].name;
        let data = EventData::PolicyDecision(PolicyDecision {
            decision_id: format!("pdp-{:x}-{}", self.seed, self.n_events + 1),
            asset_id: asset.id.clone(),
            decision,
            policy_id: format!("{segment}-access"),
            policy_version: Some("17".to_owned()),
            subject_id: Some(format!("user-{user:04}")),
            resource: Some(format!("https://app-{app:02}.internal.example")),
            trust_score: asset.trust,
        });
        self.emit_for_asset(asset_idx, "pdp", "urn:pdp:opa", at, data);
        let next = at + self.exp(8.0 * HOUR as f64);
        self.schedule(next, Action::Decision(asset_idx));
    }

    /// Devices the CMDB has never seen (BYOD, rogue) still ask for access.
    fn shadow_decision(&mut self, at: i64, shadow: u32) {
        let roll = self.uniform();
        let decision = if roll < 0.35 {
            Decision::Allow
        } else if roll < 0.8 {
            Decision::StepUp
        } else {
            Decision::Deny
        };
        let data = EventData::PolicyDecision(PolicyDecision {
            decision_id: format!("pdp-{:x}-{}", self.seed, self.n_events + 1),
            asset_id: format!("byod-{:04x}", 0x1000 + shadow),
            decision,
            policy_id: "byod-access".to_owned(),
            policy_version: Some("4".to_owned()),
            subject_id: Some(format!("user-{:04}", self.rng.random_range(0..5000))),
            resource: Some("https://mail.internal.example".to_owned()),
            trust_score: None,
        });
        self.emit("pdp", "urn:pdp:opa", at, data);
        let next = at + self.exp(12.0 * HOUR as f64);
        self.schedule(next, Action::ShadowDecision(shadow));
    }

    /// Ten-minute flow exports of the network policy engine. Drift comes in
    /// episodes of an hour: a misapplied or audit-mode policy on one kind of traffic.
    fn flows(&mut self, at: i64) {
        if at % HOUR == 0 {
            for idx in 0..FLOWS.len() {
                self.drifting[idx] = self.uniform() < self.drift_ratio;
            }
        }
        let hour_of_day = at % DAY / HOUR;
        let daily = if (7..19).contains(&hour_of_day) { 1.0 } else { 0.45 };
        for (idx, rule) in FLOWS.iter().enumerate() {
            let population = self.segment_assets[rule.src].len().max(1) as f64;
            let connections = (rule.rate * population * daily * self.between(0.6, 1.4)).round() as u64;
            if connections == 0 {
                continue;
            }
            let (enforced, mode) = match (rule.intended, self.drifting[idx]) {
                (IntendedAction::Deny, false) => (FlowAction::Deny, EnforcementMode::Full),
                (IntendedAction::Deny, true) => {
                    let mode =
                        if self.uniform() < 0.5 { EnforcementMode::Audit } else { EnforcementMode::VisibilityOnly };
                    (FlowAction::Allow, mode)
                }
                (IntendedAction::Allow, true) => (FlowAction::Deny, EnforcementMode::Full),
                _ => (FlowAction::Allow, EnforcementMode::Full),
            };
            let members = &self.segment_assets[rule.src];
            let src_asset_id = if members.is_empty() {
                None
            } else {
                let pick = members[self.rng.random_range(0..members.len())];
                Some(self.assets[pick as usize].id.clone())
            };
            let data = EventData::FlowObservation(FlowObservation {
                src_segment: SEGMENTS[rule.src].name.to_owned(),
                dst_segment: SEGMENTS[rule.dst].name.to_owned(),
                dst_port: rule.port,
                protocol: Some("tcp".to_owned()),
                enforced_action: enforced,
                intended_action: rule.intended,
                enforcement_mode: Some(mode),
                connections,
                src_asset_id,
                dst_asset_id: None,
            });
            self.emit("flow", "urn:cni:cilium", at, data);
        }
        self.schedule(at + 10 * MINUTE, Action::FlowExport);
    }

    fn intel(&self, cve: &Cve) -> EventData {
        let percentile = epss_percentile(cve.epss);
        EventData::VulnIntel(VulnIntel {
            cve_id: cve.id.clone(),
            published_at: Timestamp::from_millis(cve.published),
            cvss_base: cve.cvss,
            cvss_version: Some(cve.cvss_version.to_owned()),
            epss: Some(cve.epss),
            epss_percentile: Some(percentile),
            kev: cve.kev,
            kev_date_added: cve.kev_added,
            kev_due_date: cve.kev_due,
            exploitation: Some(cve.exploitation),
            automatable: Some(cve.automatable),
            technical_impact: Some(if cve.cvss >= 8.0 { TechnicalImpact::Total } else { TechnicalImpact::Partial }),
        })
    }

    fn publish_cve(&mut self, at: i64, cve_idx: u32) {
        let data = self.intel(&self.cves[cve_idx as usize]);
        self.emit("intel", "urn:feeds:nvd-kev-epss", at, data);
        let cve = &self.cves[cve_idx as usize];
        if let (true, Some(date_added)) = (cve.kev, cve.kev_added) {
            // The KEV catalog lists it too, as CISA's feed says it (the same dates).
            let data = EventData::VulnKev(VulnKev {
                cve_id: cve.id.clone(),
                date_added,
                due_date: cve.kev_due,
                vendor: None,
                product: None,
                ransomware_use: Some(RansomwareUse::Unknown),
            });
            self.emit("intel", "urn:feeds:cisa-kev", at, data);
        }
        let cve = &self.cves[cve_idx as usize];
        let (product, share, backlog) = (cve.product, cve.vulnerable_share, cve.backlog);
        for position in 0..self.product_assets[product as usize].len() {
            let asset_idx = self.product_assets[product as usize][position];
            if self.uniform() < share {
                let suppress = !self.assets[asset_idx as usize].managed && self.uniform() < 0.4;
                self.assets[asset_idx as usize].cves.push(AssetCve {
                    cve: cve_idx,
                    seen: Seen::NotReported,
                    installed: false,
                    suppress,
                });
            }
        }
        if !backlog {
            self.plan_patch(cve_idx);
        }
        let next = at + self.ms(DAY, 4 * DAY);
        self.schedule(next, Action::EpssUpdate(cve_idx));
    }

    /// Exploited criticals get an emergency patch; a few CVEs wait weeks for
    /// their vendor; the rest ship in the product's next regular release.
    fn plan_patch(&mut self, cve_idx: u32) {
        let cve = &self.cves[cve_idx as usize];
        let (product, published) = (cve.product, cve.published);
        let emergency = cve.kev || (cve.cvss >= 9.0 && cve.exploitation != Exploitation::None);
        if emergency {
            let released = published + self.ms(6 * HOUR, 48 * HOUR);
            self.release_later(product, released, cve_idx, true);
        } else if self.uniform() < 0.08 {
            let released = published + self.ms(14 * DAY, 40 * DAY);
            self.release_later(product, released, cve_idx, false);
        } else {
            let slot = self.next_release_slot(product, published + DAY);
            match self.open_release[product as usize] {
                Some(patch) if self.patches[patch as usize].released == slot => {
                    self.patches[patch as usize].cves.push(cve_idx);
                }
                _ => {
                    let patch = self.new_patch(product, slot, vec![cve_idx], false);
                    self.open_release[product as usize] = Some(patch);
                    if slot < self.end {
                        self.schedule(slot, Action::ReleasePatch(patch));
                    }
                }
            }
        }
    }

    /// The product's first regular release at or after `after`.
    fn next_release_slot(&self, product: u8, after: i64) -> i64 {
        let product = &PRODUCTS[product as usize];
        // 1970-01-01 was a Thursday: day 0 is weekday 3 (Monday = 0).
        let mut day = after.div_euclid(DAY);
        loop {
            let slot = day * DAY + i64::from(product.release_hour) * HOUR;
            if (day + 3).rem_euclid(7) == i64::from(product.release_weekday) && slot >= after {
                return slot;
            }
            day += 1;
        }
    }

    fn epss_update(&mut self, at: i64, cve_idx: u32) {
        let factor = self.between(-0.5, 0.6).exp();
        let cve = &mut self.cves[cve_idx as usize];
        cve.epss = round((cve.epss * factor).clamp(0.0001, 0.99), 5);
        // A new score comes from the EPSS feed alone: it replaces only the EPSS fields.
        let data = EventData::VulnEpss(VulnEpss {
            cve_id: cve.id.clone(),
            epss: cve.epss,
            percentile: Some(epss_percentile(cve.epss)),
            score_date: Timestamp::from_millis(at).date(),
            model_version: Some(EPSS_MODEL.to_owned()),
        });
        self.emit("intel", "urn:feeds:first-epss", at, data);
        let next = at + self.ms(2 * DAY, 6 * DAY);
        self.schedule(next, Action::EpssUpdate(cve_idx));
    }

    fn release_patch(&mut self, at: i64, patch_idx: u32) {
        let patch = &self.patches[patch_idx as usize];
        let product = &PRODUCTS[patch.product as usize];
        let data = EventData::PatchRelease(PatchRelease {
            patch_id: patch.id.clone(),
            vendor: product.vendor.to_owned(),
            product: product.name.to_owned(),
            released_at: Timestamp::from_millis(patch.released),
            fixes_cves: patch.cves.iter().map(|&c| self.cves[c as usize].id.clone()).collect(),
            artifact_sha256: Some(patch.sha.clone()),
            signed: Some(true),
        });
        let source = format!("urn:vendor:{}", product.vendor);
        let (emergency, released) = (patch.emergency, patch.released);
        self.emit("rel", &source, at, data);
        let lead = if emergency {
            self.ms(HOUR, 6 * HOUR)
        } else if released < self.start {
            self.ms(HOUR, 3 * DAY)
        } else {
            self.ms(12 * HOUR, 36 * HOUR)
        };
        self.new_rollout(at + lead, patch_idx, 0.07);
    }

    fn new_rollout(&mut self, at: i64, patch_idx: u32, bad_chance: f64) {
        let bad_stage = (self.uniform() < bad_chance).then(|| match self.uniform() {
            x if x < 0.7 => 0,
            x if x < 0.95 => 1,
            _ => 2,
        });
        let patch = &mut self.patches[patch_idx as usize];
        patch.n_rollouts += 1;
        let rollout = Rollout {
            id: format!("ro-{}", 100 + self.rollouts.len()),
            patch: patch_idx,
            emergency: patch.emergency,
            bad_stage,
            aborted: false,
            pauses: 0,
            cohort: 0,
            installs: Vec::new(),
        };
        self.rollouts.push(rollout);
        self.schedule(at, Action::StartStage { rollout: (self.rollouts.len() - 1) as u32, stage: 0 });
    }

    fn start_stage(&mut self, at: i64, rollout_idx: u32, stage: u8) {
        let rollout = &self.rollouts[rollout_idx as usize];
        let patch_idx = rollout.patch;
        let emergency = rollout.emergency;
        let ring = [Ring::Canary, Ring::Pilot, Ring::Broad][stage as usize];
        let (window, bake) = match ring {
            Ring::Canary => (HOUR, 4 * HOUR),
            Ring::Pilot => (4 * HOUR, 12 * HOUR),
            Ring::Broad => (24 * HOUR, 24 * HOUR),
        };
        let (window, bake) = if emergency { (window / 3, bake / 4) } else { (window, bake) };
        let product = self.patches[patch_idx as usize].product as usize;
        let mut cohort = 0;
        for position in 0..self.product_assets[product].len() {
            let asset_idx = self.product_assets[product][position];
            let asset = &self.assets[asset_idx as usize];
            let installed = asset.patches.iter().any(|&(p, state)| p == patch_idx && state == Install::Verified);
            if asset.ring != ring || !asset.managed || installed {
                continue;
            }
            cohort += 1;
            let environment = SEGMENTS[asset.segment as usize].environment;
            let mut delay = self.ms(0, window);
            // Edge devices are sometimes offline for days.
            if environment == Environment::Edge && self.uniform() < 0.12 {
                delay += self.ms(2 * DAY, 12 * DAY);
            }
            self.schedule(at + delay, Action::DeployQueue { asset: asset_idx, rollout: rollout_idx, attempt: 1 });
        }
        self.rollouts[rollout_idx as usize].cohort = cohort;
        self.schedule(at + bake, Action::StageVerdict { rollout: rollout_idx, stage });
    }

    fn stage_verdict(&mut self, at: i64, rollout_idx: u32, stage: u8) {
        let roll = self.uniform();
        let rollout = &self.rollouts[rollout_idx as usize];
        if rollout.aborted {
            return;
        }
        let pause_chance = if rollout.pauses >= 3 { 0.0 } else { 0.05 / f64::from(1 + rollout.pauses) };
        let verdict = if rollout.bad_stage == Some(stage) || roll < 0.01 {
            Verdict::Failed
        } else if roll < 0.01 + pause_chance * 0.8 {
            Verdict::Inconclusive
        } else if roll < 0.01 + pause_chance {
            Verdict::Error
        } else {
            Verdict::Successful
        };
        let action = match verdict {
            Verdict::Successful => CanaryAction::Promote,
            Verdict::Failed => CanaryAction::Rollback,
            Verdict::Inconclusive | Verdict::Error => CanaryAction::Pause,
        };
        let failed_checks = if verdict == Verdict::Failed { self.rng.random_range(1..6) } else { 0 };
        let patch_id = self.patches[rollout.patch as usize].id.clone();
        let data = EventData::CanaryStage(CanaryStage {
            rollout_id: rollout.id.clone(),
            patch_id,
            stage: u32::from(stage),
            verdict,
            cohort_size: Some(rollout.cohort),
            failed_checks: Some(failed_checks),
            action: Some(action),
        });
        self.emit("canary", "urn:rollouts:argo", at, data);
        match action {
            CanaryAction::Promote if stage < 2 => {
                self.schedule(at + 15 * MINUTE, Action::StartStage { rollout: rollout_idx, stage: stage + 1 })
            }
            CanaryAction::Promote => {}
            CanaryAction::Pause => {
                self.rollouts[rollout_idx as usize].pauses += 1;
                // Usually re-analysed within hours; sometimes nobody looks for days.
                let next =
                    if self.uniform() < 0.7 { at + self.ms(2 * HOUR, 6 * HOUR) } else { at + self.ms(DAY, 5 * DAY) };
                self.schedule(next, Action::StageVerdict { rollout: rollout_idx, stage });
            }
            CanaryAction::Rollback => {
                let rollout = &mut self.rollouts[rollout_idx as usize];
                rollout.aborted = true;
                let installs = std::mem::take(&mut rollout.installs);
                let patch_idx = rollout.patch;
                for (asset, deployment) in installs {
                    let delay = self.ms(5 * MINUTE, 90 * MINUTE);
                    self.schedule(at + delay, Action::RollBack { asset, rollout: rollout_idx, deployment });
                }
                if self.patches[patch_idx as usize].n_rollouts < 3 {
                    let retry_at = at + self.ms(DAY, 4 * DAY);
                    self.new_rollout(retry_at, patch_idx, 0.03);
                }
            }
        }
    }

    fn deployment_id(&self, deployment: u32) -> String {
        format!("dep-{:x}-{deployment}", self.seed)
    }

    fn deployment(&self, asset: u32, rollout: u32, deployment: u32, phase: DeploymentPhase) -> PatchDeployment {
        let rollout = &self.rollouts[rollout as usize];
        PatchDeployment {
            deployment_id: self.deployment_id(deployment),
            asset_id: self.assets[asset as usize].id.clone(),
            patch_id: self.patches[rollout.patch as usize].id.clone(),
            phase,
            rollout_id: Some(rollout.id.clone()),
            ring: Some(self.assets[asset as usize].ring),
            error_class: None,
            artifact_sha256: None,
            signature_verified: None,
        }
    }

    fn orchestrator(&self, asset: u32) -> &'static str {
        match SEGMENTS[self.assets[asset as usize].segment as usize].os {
            Os::Windows => "urn:orchestrator:intune",
            _ => "urn:orchestrator:ansible",
        }
    }

    fn deploy_queue(&mut self, at: i64, asset: u32, rollout: u32, attempt: u8) {
        let patch = self.rollouts[rollout as usize].patch;
        let installed =
            self.assets[asset as usize].patches.iter().any(|&(p, state)| p == patch && state == Install::Verified);
        if self.rollouts[rollout as usize].aborted || installed {
            return;
        }
        self.n_deployments += 1;
        let deployment = self.n_deployments;
        if self.uniform() < 0.5 {
            let data = self.deployment(asset, rollout, deployment, DeploymentPhase::Scheduled);
            let source = self.orchestrator(asset);
            self.emit_for_asset(asset, "dep", source, at, EventData::PatchDeployment(data));
        }
        let next = at + self.ms(MINUTE, 20 * MINUTE);
        self.schedule(next, Action::DeployRun { asset, rollout, attempt, deployment });
    }

    fn deploy_run(&mut self, at: i64, asset: u32, rollout: u32, attempt: u8, deployment: u32) {
        if self.rollouts[rollout as usize].aborted {
            return;
        }
        let data = self.deployment(asset, rollout, deployment, DeploymentPhase::Started);
        let source = self.orchestrator(asset);
        self.emit_for_asset(asset, "dep", source, at, EventData::PatchDeployment(data));
        let next = at + self.ms(4 * MINUTE, 45 * MINUTE);
        self.schedule(next, Action::DeployFinish { asset, rollout, attempt, deployment });
    }

    fn deploy_finish(&mut self, at: i64, asset: u32, rollout: u32, attempt: u8, deployment: u32) {
        let source = self.orchestrator(asset);
        let mut data = self.deployment(asset, rollout, deployment, DeploymentPhase::Failed);
        if self.rollouts[rollout as usize].aborted {
            data.error_class = Some("rollout_aborted".to_owned());
            self.emit_for_asset(asset, "dep", source, at, EventData::PatchDeployment(data));
            return;
        }
        let roll = self.uniform();
        let patch = self.rollouts[rollout as usize].patch;
        let fail_chance = if self.assets[asset as usize].flaky { 0.6 } else { 0.025 };
        if roll < fail_chance {
            data.error_class = Some(DEPLOY_ERRORS[self.rng.random_range(0..DEPLOY_ERRORS.len())].to_owned());
            self.emit_for_asset(asset, "dep", source, at, EventData::PatchDeployment(data));
            if attempt < 3 {
                let retry_at = at + self.ms(HOUR, 8 * HOUR);
                self.schedule(retry_at, Action::DeployQueue { asset, rollout, attempt: attempt + 1 });
            }
            return;
        }
        data.phase = DeploymentPhase::Succeeded;
        let sha = self.patches[patch as usize].sha.clone();
        let verified = roll >= fail_chance + 0.003;
        if verified {
            data.artifact_sha256 = Some(sha);
            data.signature_verified = Some(true);
        } else if self.uniform() < 0.5 {
            data.artifact_sha256 = Some(sha);
            data.signature_verified = Some(false);
        } else {
            // A tampered or mirrored artifact: its digest differs from the release's.
            data.artifact_sha256 = Some(format!("{:064x}", self.rng.random::<u128>()));
            data.signature_verified = Some(true);
        }
        self.emit_for_asset(asset, "dep", source, at, EventData::PatchDeployment(data));
        self.install(asset, patch, if verified { Install::Verified } else { Install::Unverified });
        self.rollouts[rollout as usize].installs.push((asset, deployment));
        if verified {
            let roll = self.uniform();
            let delay = if roll < 0.90 {
                Some(self.ms(2 * MINUTE, 45 * MINUTE))
            } else if roll < 0.96 {
                Some(self.ms(4 * HOUR + 30 * MINUTE, 12 * HOUR))
            } else {
                None
            };
            if let Some(delay) = delay {
                self.schedule(at + delay, Action::PostPatchPosture { asset, deployment });
            }
        } else if attempt < 3 && self.uniform() < 0.6 {
            let retry_at = at + self.ms(2 * HOUR, 12 * HOUR);
            self.schedule(retry_at, Action::DeployQueue { asset, rollout, attempt: attempt + 1 });
        }
    }

    fn install(&mut self, asset_idx: u32, patch_idx: u32, state: Install) {
        let asset = &mut self.assets[asset_idx as usize];
        asset.patches.retain(|&(p, _)| p != patch_idx);
        asset.patches.push((patch_idx, state));
        let fixes = &self.patches[patch_idx as usize].cves;
        for entry in asset.cves.iter_mut().filter(|c| fixes.contains(&c.cve)) {
            entry.installed = true;
        }
    }

    fn roll_back(&mut self, at: i64, asset_idx: u32, rollout: u32, deployment: u32) {
        let data = self.deployment(asset_idx, rollout, deployment, DeploymentPhase::RolledBack);
        let source = self.orchestrator(asset_idx);
        self.emit_for_asset(asset_idx, "dep", source, at, EventData::PatchDeployment(data));
        let patch_idx = self.rollouts[rollout as usize].patch;
        let asset = &mut self.assets[asset_idx as usize];
        asset.patches.retain(|&(p, _)| p != patch_idx);
        let fixes = &self.patches[patch_idx as usize].cves;
        for entry in asset.cves.iter_mut().filter(|c| fixes.contains(&c.cve)) {
            entry.installed = false;
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
