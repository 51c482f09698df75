//! Retention of settled keys (`processor.settled_retention_days`): over
//! months of a simulated fleet, forgetting what has settled changes no row
//! and no alert, while the state stops holding every pair ever seen; an event
//! older than the retention is a dead letter, not a revision of a forgotten
//! row; a pair seen again after it was forgotten supersedes its old rows.

use std::collections::BTreeMap;

use ingest::simulate::{ScenarioConfig, Simulator};
use processor::Processor;
use processor::config::ProcessorConfig;
use processor::rows::EpochRows;
use schemas::time::MICROS_PER_DAY;
use schemas::{CloudEvent, Timestamp};

/// The latest revision of every row, without its revision, and every alert.
#[derive(Default)]
struct Latest {
    rows: BTreeMap<String, (i64, String)>,
    alerts: BTreeMap<String, String>,
    dead_letters: Vec<String>,
}

impl Latest {
    fn put(&mut self, key: String, revision: i64, row: String) {
        if let Some((previous, _)) = self.rows.get(&key) {
            assert!(revision > *previous, "{key}: revision {revision} after {previous}");
        }
        self.rows.insert(key, (revision, row));
    }

    fn merge(&mut self, epoch: EpochRows) {
        for mut r in epoch.exposures {
            let (key, revision) = (format!("exposure {}/{}", r.asset_id, r.cve_id), r.revision);
            (r.revision, r.updated_at) = (0, Timestamp(0));
            self.put(key, revision, format!("{r:?}"));
        }
        for mut r in epoch.patch_outcomes {
            let (key, revision) = (format!("outcome {}/{}", r.asset_id, r.patch_id), r.revision);
            (r.revision, r.updated_at) = (0, Timestamp(0));
            self.put(key, revision, format!("{r:?}"));
        }
        for mut r in epoch.canary_rollups {
            let (key, revision) = (format!("rollout {}", r.rollout_id), r.revision);
            r.revision = 0;
            self.put(key, revision, format!("{r:?}"));
        }
        for mut r in epoch.segment_drift {
            let (key, revision) = (format!("drift {}/{}/{}", r.window_start, r.src_segment, r.dst_segment), r.revision);
            r.revision = 0;
            self.put(key, revision, format!("{r:?}"));
        }
        for mut r in epoch.assets {
            let (key, revision) = (format!("asset {}", r.asset_id), r.revision);
            (r.revision, r.updated_at) = (0, Timestamp(0));
            self.put(key, revision, format!("{r:?}"));
        }
        for alert in epoch.alerts {
            assert!(self.alerts.insert(alert.alert_id.clone(), format!("{alert:?}")).is_none(), "alert fired twice");
        }
        self.dead_letters.extend(epoch.dead_letters.into_iter().map(|letter| letter.error));
    }
}

fn config(retention_days: i64) -> ProcessorConfig {
    ProcessorConfig { settled_retention_us: retention_days * MICROS_PER_DAY, ..ProcessorConfig::default() }
}

/// Feeds a simulated fleet to a processor, flushing every `epoch` lines.
fn run(scenario: &ScenarioConfig, config: ProcessorConfig, epoch: usize) -> (Latest, usize, u64) {
    let mut processor = Processor::new(config, 4);
    let mut simulator = Simulator::new(scenario.clone(), false);
    let mut latest = Latest::default();
    let mut offset = 0;
    while let Some(line) = simulator.next_line() {
        crate::common::take(&mut processor, offset, &line);
        offset += 1;
        if offset % epoch == 0 {
            processor.flush().into_iter().for_each(|(_, rows)| latest.merge(rows));
        }
    }
    processor.finish_input();
    processor.flush().into_iter().for_each(|(_, rows)| latest.merge(rows));
    let ids: Vec<_> = processor.tasks().map(|task| task.id()).collect();
    let bytes = ids.iter().map(|&id| processor.snapshot(id).expect("a snapshot").len()).sum();
    let forgotten = processor.tasks().map(|task| task.forgotten()).sum();
    (latest, bytes, forgotten)
}

#[test]
fn forgetting_settled_keys_changes_no_row_and_no_alert() {
    // Five months of 150 assets, with late and duplicate events, kept for 30 days.
    let scenario = ScenarioConfig {
        assets: 150,
        days: 150,
        seed: 23,
        late_ratio: 0.01,
        duplicate_ratio: 0.005,
        ..Default::default()
    };
    let (full, full_bytes, none) = run(&scenario, config(0), 7_000);
    let (kept, kept_bytes, forgotten) = run(&scenario, config(30), 7_000);
    assert_eq!(none, 0, "retention 0 forgets nothing");
    eprintln!("forgot {forgotten} keys; state {kept_bytes} B with retention, {full_bytes} B without");
    assert!(forgotten > 1_000, "retention forgot {forgotten} keys");
    assert!(
        kept_bytes * 10 < full_bytes * 8,
        "state with retention {kept_bytes} B, without {full_bytes} B: at least a fifth smaller"
    );
    assert_eq!(full.dead_letters.len(), kept.dead_letters.len(), "no simulated event is 30 days late");
    let differing: Vec<&String> = full
        .rows
        .iter()
        .filter(|(key, (_, row))| kept.rows.get(*key).map(|(_, r)| r) != Some(row))
        .map(|(key, _)| key)
        .collect();
    assert!(differing.is_empty(), "{} rows differ, first {:?}", differing.len(), &differing[..differing.len().min(5)]);
    assert_eq!(full.rows.len(), kept.rows.len());
    assert_eq!(full.alerts, kept.alerts, "the same alerts");
}

fn event(json: &str) -> CloudEvent {
    schemas::decode(json.as_bytes()).expect("a valid event")
}

fn finding(id: &str, day: u32, status: &str) -> CloudEvent {
    event(&format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"urn:scanner","type":"vuln.finding.v1","time":"2026-{:02}-{:02}T00:00:00Z","subject":"a-1","data":{{"asset_id":"a-1","cve_id":"CVE-2026-0001","status":"{status}","scanner":"s","scanner_severity":"high"}}}}"#,
        1 + day / 28,
        1 + day % 28
    ))
}

#[test]
fn an_event_older_than_the_retention_is_a_dead_letter_and_a_new_finding_a_new_exposure() {
    let mut processor = Processor::new(config(30), 1);
    let mut rows = Latest::default();
    let mut offset = 0;
    let mut feed = |processor: &mut Processor, event: CloudEvent, rows: &mut Latest| {
        processor.apply("test", offset, &event);
        offset += 1;
        processor.flush().into_iter().for_each(|(_, epoch)| rows.merge(epoch));
    };
    feed(&mut processor, finding("f-1", 0, "open"), &mut rows);
    feed(&mut processor, finding("f-2", 2, "fixed"), &mut rows);
    // Quiet for the exposure; the fleet goes on (a finding of another CVE).
    let other = |id: &str, day: u32| {
        event(&format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"urn:scanner","type":"vuln.finding.v1","time":"2026-{:02}-{:02}T00:00:00Z","subject":"a-1","data":{{"asset_id":"a-1","cve_id":"CVE-2026-0002","status":"open","scanner":"s","scanner_severity":"low"}}}}"#,
            1 + day / 28,
            1 + day % 28
        ))
    };
    feed(&mut processor, other("o-1", 60), &mut rows);
    let first = rows.rows["exposure a-1/CVE-2026-0001"].clone();
    assert!(first.1.contains("status: \"remediated\""), "{first:?}");
    assert_eq!(processor.tasks().map(|t| t.forgotten()).sum::<u64>(), 1, "the settled exposure is forgotten");
    // A finding of day 5 is now 55 days behind the newest event: a dead letter.
    feed(&mut processor, finding("f-3", 5, "open"), &mut rows);
    assert_eq!(rows.dead_letters.len(), 1);
    assert!(rows.dead_letters[0].starts_with("beyond retention: event time 2026-01-06"), "{:?}", rows.dead_letters);
    assert_eq!(rows.rows["exposure a-1/CVE-2026-0001"], first, "no revision of the forgotten row");
    // Found again today: a new exposure, detected today, whose row supersedes the old one.
    feed(&mut processor, finding("f-4", 61, "open"), &mut rows);
    let again = &rows.rows["exposure a-1/CVE-2026-0001"];
    assert!(again.0 > first.0, "revision {} after {}", again.0, first.0);
    assert!(again.1.contains("status: \"open\"") && again.1.contains("detected_at: 2026-03-06"), "{again:?}");
}

#[test]
fn with_retention_zero_an_old_event_still_revises_its_row() {
    let mut processor = Processor::new(config(0), 1);
    let mut rows = Latest::default();
    for (offset, event) in
        [finding("f-1", 0, "open"), finding("f-2", 80, "fixed"), finding("f-3", 1, "fixed")].into_iter().enumerate()
    {
        processor.apply("test", offset as u64, &event);
        processor.flush().into_iter().for_each(|(_, epoch)| rows.merge(epoch));
    }
    assert!(rows.dead_letters.is_empty());
    let row = &rows.rows["exposure a-1/CVE-2026-0001"].1;
    assert!(row.contains("remediated_at: Some(2026-01-02"), "the late fix of day 1 remediated it: {row}");
}

fn at(day: u32) -> String {
    format!("2026-{:02}-{:02}T00:00:00Z", 1 + day / 28, 1 + day % 28)
}

fn deployment(id: &str, day: u32, phase: &str) -> CloudEvent {
    event(&format!(
        r#"{{"specversion":"1.0","id":"{id}-{phase}","source":"urn:orchestrator","type":"patch.deployment.v1","time":"{}","subject":"a-1","data":{{"deployment_id":"{id}","asset_id":"a-1","patch_id":"KB-1","phase":"{phase}","signature_verified":true}}}}"#,
        at(day)
    ))
}

#[test]
fn what_an_open_exposure_still_needs_is_kept() {
    // CVE-1 is fixed by KB-1; a deployment of it succeeds, then rolls back,
    // so CVE-1 is open again with an old outcome behind it. CVE-3 is found
    // open once and never scanned again. Two months later both are still
    // open: neither they nor the outcome may be forgotten.
    let mut processor = Processor::new(config(30), 1);
    let mut rows = Latest::default();
    let release = event(
        r#"{"specversion":"1.0","id":"rel-1","source":"urn:vendor","type":"patch.release.v1","time":"2026-01-01T00:00:00Z","subject":"KB-1","data":{"patch_id":"KB-1","vendor":"v","product":"p","released_at":"2026-01-01T00:00:00Z","fixes_cves":["CVE-2026-0001"]}}"#,
    );
    let cve3 = |id: &str, day: u32, status: &str| {
        event(&format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"urn:scanner","type":"vuln.finding.v1","time":"{}","subject":"a-1","data":{{"asset_id":"a-1","cve_id":"CVE-2026-0003","status":"{status}","scanner_severity":"low"}}}}"#,
            at(day)
        ))
    };
    let events = [
        release,
        finding("f-1", 0, "open"),
        cve3("c-1", 0, "open"),
        deployment("d-1", 1, "started"),
        deployment("d-1", 1, "succeeded"),
        deployment("d-1", 2, "rolled_back"),
        // The fleet goes on: another CVE, scanned daily, moves time two months on.
        finding("f-2", 2, "open"),
    ];
    let mut offset = 0u64;
    for event in events.into_iter().chain((3..=60).map(|day| {
        event(&format!(
            r#"{{"specversion":"1.0","id":"o-{day}","source":"urn:scanner","type":"vuln.finding.v1","time":"{}","subject":"a-1","data":{{"asset_id":"a-1","cve_id":"CVE-2026-0002","status":"open","scanner_severity":"low"}}}}"#,
            at(day)
        ))
    })) {
        processor.apply("test", offset, &event);
        offset += 1;
        processor.flush().into_iter().for_each(|(_, epoch)| rows.merge(epoch));
    }
    assert_eq!(processor.tasks().map(|t| t.forgotten()).sum::<u64>(), 0, "nothing settled, nothing forgotten");
    // Day 61: KB-1 succeeds again, and CVE-3 is scanned fixed.
    for event in [deployment("d-2", 61, "started"), deployment("d-2", 61, "succeeded"), cve3("c-2", 61, "fixed")] {
        processor.apply("test", offset, &event);
        offset += 1;
        processor.flush().into_iter().for_each(|(_, epoch)| rows.merge(epoch));
    }
    let outcome = &rows.rows["outcome a-1/KB-1"].1;
    assert!(outcome.contains("first_attempt_at: Some(2026-01-02") && outcome.contains("attempts: 2"), "{outcome}");
    for cve in ["CVE-2026-0001", "CVE-2026-0003"] {
        let exposure = &rows.rows[&format!("exposure a-1/{cve}")].1;
        assert!(
            exposure.contains("detected_at: 2026-01-01")
                && exposure.contains("status: \"remediated\"")
                && exposure.contains("remediated_at: Some(2026-03-06"),
            "{exposure}"
        );
    }
}
