//! DOMAIN.md "Exact or refused": every event the processor applies is
//! answered as if no state had ever been trimmed. Random streams of one
//! asset's events (inventories, findings, postures, deployments, decisions),
//! some delivered late by up to the lateness limit, give the same rows and
//! alerts with the retained state compacted as with nothing ever trimmed.

use std::collections::BTreeMap;

use processor::Processor;
use processor::config::ProcessorConfig;
use processor::rows::EpochRows;
use proptest::prelude::*;
use rand::{Rng, RngExt, SeedableRng};
use schemas::time::{MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_SECOND};
use schemas::{CloudEvent, Timestamp};

/// The lateness limit of the compacted run; short, so that short streams compact.
const LIMIT: i64 = MICROS_PER_DAY;

fn compacted() -> ProcessorConfig {
    ProcessorConfig {
        late_alert_horizon_us: LIMIT,
        settled_retention_us: 365 * MICROS_PER_DAY,
        dedupe_capacity: 1_000,
        ..ProcessorConfig::default()
    }
}

fn untrimmed() -> ProcessorConfig {
    ProcessorConfig { settled_retention_us: 0, ..compacted() }
}

fn rfc3339(micros: i64) -> String {
    Timestamp(micros).to_string()
}

fn event(id: usize, kind: &str, time: i64, subject: &str, data: String) -> CloudEvent {
    let json = format!(
        r#"{{"specversion":"1.0","id":"e-{id}","source":"urn:test","type":"{kind}","time":"{}","subject":"{subject}","data":{data}}}"#,
        rfc3339(time)
    );
    schemas::decode(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

const START: i64 = 1_767_225_600 * MICROS_PER_SECOND; // 2026-01-01

/// The catalog every stream starts from: a KEV CVE due on day 3, a medium
/// one, and a signed patch fixing both.
fn intel() -> Vec<CloudEvent> {
    vec![
        event(
            0,
            "vuln.intel.v1",
            START,
            "CVE-2026-0001",
            r#"{"cve_id":"CVE-2026-0001","published_at":"2025-12-31T00:00:00Z","cvss_base":9.8,"kev":true,"kev_date_added":"2026-01-01","kev_due_date":"2026-01-03"}"#.to_owned(),
        ),
        event(
            1,
            "vuln.intel.v1",
            START,
            "CVE-2026-0002",
            r#"{"cve_id":"CVE-2026-0002","published_at":"2025-12-31T00:00:00Z","cvss_base":5.0,"kev":false}"#.to_owned(),
        ),
        event(
            2,
            "patch.release.v1",
            START,
            "KB-1",
            format!(
                r#"{{"patch_id":"KB-1","vendor":"v","product":"p","released_at":"{}","fixes_cves":["CVE-2026-0001","CVE-2026-0002"],"artifact_sha256":"{}","signed":true}}"#,
                rfc3339(START),
                "a".repeat(64)
            ),
        ),
    ]
}

/// One asset's events, in event time, `count` of them over about `days`.
fn stream(rng: &mut impl Rng, count: usize, days: i64) -> Vec<CloudEvent> {
    let step = days * MICROS_PER_DAY / count as i64;
    let mut time = START + MICROS_PER_HOUR;
    let mut status = ["open", "open"];
    let mut deployment = 0;
    let mut events = Vec::with_capacity(count);
    for id in 10..10 + count {
        time += rng.random_range(1..2 * step);
        let data = match rng.random_range(0..100) {
            0..25 => {
                // Every alert names the device as its inventory said then.
                let managed = rng.random_range(0..6) > 0;
                let segment = ["a", "b"][rng.random_range(0..2)];
                let version = ["1", "2"][rng.random_range(0..2)];
                format!(
                    r#"{{"asset_id":"a-1","environment":"cloud","criticality":"high","internet_exposed":false,"segment":"{segment}","managed":{managed},"hostname":"h-{segment}","os_family":"linux","os_version":"{version}"}}"#
                )
            }
            25..55 => {
                let cve = rng.random_range(0..2);
                if rng.random_range(0..4) == 0 {
                    status[cve] = ["open", "fixed", "suppressed"][rng.random_range(0..3)];
                }
                format!(r#"{{"asset_id":"a-1","cve_id":"CVE-2026-000{}","status":"{}"}}"#, cve + 1, status[cve])
            }
            55..72 => {
                let score = rng.random_range(40..100);
                let compliant = rng.random_range(0..5) > 0;
                format!(r#"{{"asset_id":"a-1","trust_score":{score},"compliant":{compliant}}}"#)
            }
            72..86 => {
                let phase = ["started", "succeeded", "succeeded", "failed", "rolled_back"][rng.random_range(0..5)];
                if phase == "started" {
                    deployment += 1;
                }
                format!(
                    r#"{{"deployment_id":"d-{deployment}","asset_id":"a-1","patch_id":"KB-1","phase":"{phase}","signature_verified":true,"artifact_sha256":"{}"}}"#,
                    "a".repeat(64)
                )
            }
            _ => {
                let decision = ["allow", "allow", "deny"][rng.random_range(0..3)];
                format!(
                    r#"{{"decision_id":"p-{id}","asset_id":"a-1","decision":"{decision}","policy_id":"p","subject_id":"s","resource":"r"}}"#
                )
            }
        };
        let kind = if data.contains("\"environment\"") {
            "asset.inventory.v1"
        } else if data.contains("\"cve_id\"") {
            "vuln.finding.v1"
        } else if data.contains("\"trust_score\"") {
            "posture.assessment.v1"
        } else if data.contains("\"deployment_id\"") {
            "patch.deployment.v1"
        } else {
            "policy.decision.v1"
        };
        events.push(event(id, kind, time, "a-1", data));
    }
    events
}

/// Latest content of every row (revision and update time left out), every
/// alert, and the dead letters.
#[derive(Default, Debug, PartialEq)]
struct Answers {
    rows: BTreeMap<String, String>,
    alerts: BTreeMap<String, String>,
    dead_letters: Vec<String>,
}

impl Answers {
    fn merge(&mut self, epoch: EpochRows) {
        for mut r in epoch.exposures {
            (r.revision, r.updated_at) = (0, Timestamp(0));
            self.rows.insert(format!("exposure {}", r.cve_id), format!("{r:?}"));
        }
        for mut r in epoch.patch_outcomes {
            (r.revision, r.updated_at) = (0, Timestamp(0));
            self.rows.insert(format!("outcome {}", r.patch_id), format!("{r:?}"));
        }
        for mut r in epoch.assets {
            (r.revision, r.updated_at) = (0, Timestamp(0));
            self.rows.insert("asset".to_owned(), format!("{r:?}"));
        }
        for r in epoch.alerts {
            self.alerts.insert(r.alert_id.clone(), format!("{} {} {} {}", r.rule, r.entity_id, r.time, r.ocsf));
        }
        self.dead_letters.extend(epoch.dead_letters.into_iter().map(|letter| letter.error));
    }
}

fn answers(config: ProcessorConfig, delivery: &[&CloudEvent], every: usize) -> Answers {
    let mut processor = Processor::new(config, 1);
    let mut answers = Answers::default();
    for (offset, event) in delivery.iter().enumerate() {
        processor.apply("test", offset as u64, event);
        if offset % every == 0 {
            processor.flush().into_iter().for_each(|(_, rows)| answers.merge(rows));
        }
    }
    processor.finish_input();
    processor.flush().into_iter().for_each(|(_, rows)| answers.merge(rows));
    answers
}

/// The stream of `seed`, delivered with some events late by less than the
/// limit (so none is refused), and how often to flush.
fn case(seed: u64) -> (Vec<CloudEvent>, usize) {
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    let count = rng.random_range(40..160);
    let days = rng.random_range(2..8);
    let events = stream(&mut rng, count, days);
    let mut delivery: Vec<(i64, usize, CloudEvent)> = events
        .into_iter()
        .enumerate()
        .map(|(idx, event)| {
            let delay = if rng.random_range(0..4) == 0 { rng.random_range(0..LIMIT) } else { 0 };
            (event.time.micros() + delay, idx, event)
        })
        .collect();
    delivery.sort_by_key(|(at, idx, _)| (*at, *idx));
    let mut all = intel();
    all.extend(delivery.into_iter().map(|(_, _, event)| event));
    (all, rng.random_range(1..25))
}

proptest! {
    // 10,000 cases (about a minute in release); PROPTEST_CASES sets another count.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_event_applied_is_answered_as_without_retention(seed in any::<u64>()) {
        let (events, every) = case(seed);
        let delivery: Vec<&CloudEvent> = events.iter().collect();
        let full = answers(untrimmed(), &delivery, every);
        let kept = answers(compacted(), &delivery, every);
        prop_assert!(full.dead_letters.is_empty() && kept.dead_letters.is_empty(), "{:?}", kept.dead_letters);
        prop_assert_eq!(&full.rows, &kept.rows);
        prop_assert_eq!(&full.alerts, &kept.alerts);
    }
}

#[test]
fn an_event_later_than_the_limit_is_refused() {
    let mut events = intel();
    let finding = |id, time, status: &str| {
        event(
            id,
            "vuln.finding.v1",
            time,
            "a-1",
            format!(r#"{{"asset_id":"a-1","cve_id":"CVE-2026-0002","status":"{status}"}}"#),
        )
    };
    events.push(finding(10, START + 3 * LIMIT, "open"));
    events.push(finding(11, START + LIMIT, "fixed"));
    let delivery: Vec<&CloudEvent> = events.iter().collect();
    let kept = answers(compacted(), &delivery, 1);
    assert_eq!(kept.dead_letters.len(), 1, "{:?}", kept.dead_letters);
    assert!(
        kept.dead_letters[0].contains("more than 1 day (processor.late_alert_horizon_secs)"),
        "{:?}",
        kept.dead_letters
    );
    let full = answers(untrimmed(), &delivery, 1);
    assert!(full.dead_letters.is_empty(), "retention 0 applies events of any age");
}
