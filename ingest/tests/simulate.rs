//! The simulator: determinism, delivery faults, and a truth that holds for
//! what is actually delivered.

use std::collections::HashSet;

use ingest::simulate::truth::TruthBuilder;
use ingest::simulate::{LineKind, ScenarioConfig, SimLine, Simulator};

fn config(seed: u64) -> ScenarioConfig {
    ScenarioConfig { assets: 150, days: 6, seed, ..ScenarioConfig::default() }
}

fn faulty(seed: u64) -> ScenarioConfig {
    ScenarioConfig { malformed_ratio: 0.02, duplicate_ratio: 0.03, late_ratio: 0.05, ..config(seed) }
}

fn lines(config: ScenarioConfig) -> (Vec<SimLine>, serde_json::Value) {
    let mut simulator = Simulator::new(config, true);
    let lines: Vec<SimLine> = std::iter::from_fn(|| simulator.next_line()).collect();
    let truth = serde_json::to_value(simulator.truth().expect("kept")).expect("serializes");
    (lines, truth)
}

/// The truth without the parts that describe the file rather than the estate.
fn estate(mut truth: serde_json::Value) -> serde_json::Value {
    let object = truth.as_object_mut().expect("object");
    object.remove("lines");
    object.remove("scenario");
    truth
}

fn rows<'a>(truth: &'a serde_json::Value, table: &str) -> &'a Vec<serde_json::Value> {
    truth[table].as_array().expect("rows")
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let (first, _) = lines(faulty(11));
    let (second, _) = lines(faulty(11));
    assert!(first.len() > 10_000, "a realistic volume, got {}", first.len());
    assert_eq!(first.len(), second.len());
    assert!(first.iter().zip(&second).all(|(a, b)| a.payload == b.payload));
    let (other, _) = lines(faulty(12));
    assert!(first.iter().zip(&other).any(|(a, b)| a.payload != b.payload));
}

#[test]
fn malformed_lines_and_only_they_are_invalid() {
    let (lines, truth) = lines(faulty(5));
    let mut invalid = 0u64;
    for line in &lines {
        let decoded = schemas::decode(&line.payload);
        assert_eq!(decoded.is_err(), line.kind == LineKind::Malformed, "{}", String::from_utf8_lossy(&line.payload));
        match decoded {
            Ok(event) => {
                assert_eq!(event.event_type().topic(), line.topic);
                // The key is the subject, but for the one-feed intel types (`kev/<cve>`, `epss/<cve>`).
                assert_eq!(event.event_type().key(&event.subject), line.key.as_str());
            }
            Err(_) => invalid += 1,
        }
    }
    let share = invalid as f64 / lines.len() as f64;
    assert!((0.015..0.025).contains(&share), "about 2 % malformed, got {share}");
    assert_eq!(truth["lines"]["invalid"], invalid);
    assert_eq!(truth["lines"]["total"], lines.len() as u64);
    let kinds: HashSet<_> = lines.iter().map(|l| format!("{:?}", l.kind)).collect();
    assert_eq!(kinds.len(), 4, "every kind of line occurs: {kinds:?}");
}

#[test]
fn faults_do_not_change_the_estate() {
    let (_, clean) = lines(config(9));
    let (_, with_faults) = lines(faulty(9));
    assert_eq!(estate(clean), estate(with_faults));
}

#[test]
fn the_delivered_stream_folds_back_to_the_truth() {
    let (lines, truth) = lines(faulty(3));
    assert!(lines.windows(2).any(|w| w[0].kind == LineKind::Late || w[1].kind == LineKind::Late));
    // What a correct processor does: drop invalid lines and repeated ids, then
    // take the events in event-time order (ties in arrival order).
    let mut seen = HashSet::new();
    let mut events: Vec<_> = lines
        .iter()
        .filter_map(|line| schemas::decode(&line.payload).ok())
        .filter(|event| seen.insert(event.id.clone()))
        .collect();
    events.sort_by_key(|event| event.time);
    let mut fold = TruthBuilder::default();
    for event in &events {
        fold.observe(event);
    }
    let refolded = fold.finish(serde_json::Value::Null, Default::default());
    assert_eq!(estate(serde_json::to_value(refolded).expect("serializes")), estate(truth));
}

#[test]
fn the_truth_is_realistic_and_self_consistent() {
    let (_, truth) = lines(ScenarioConfig { assets: 400, days: 20, ..config(21) });
    let count = |table: &str, field: &str, value: serde_json::Value| {
        rows(&truth, table).iter().filter(|row| row[field] == value).count()
    };
    for status in ["open", "remediated"] {
        assert!(count("exposures", "status", status.into()) > 50, "exposures {status}");
    }
    assert!(count("exposures", "breached", true.into()) > 0, "some exposures breach their SLA");
    for outcome in ["succeeded", "failed"] {
        assert!(count("patch_outcomes", "outcome", outcome.into()) > 0, "outcome {outcome}");
    }
    assert!(count("canary_rollups", "gate", "promote".into()) > 0);
    for row in rows(&truth, "patch_outcomes") {
        let remediated = !row["remediated_at"].is_null();
        assert_eq!(remediated, row["outcome"] == "succeeded", "{row}");
        assert_eq!(row["time_to_patch_s"].is_null(), !remediated || row["released_at"].is_null(), "{row}");
    }
    let sum = |field: &str| rows(&truth, "segment_drift").iter().map(|r| r[field].as_u64().unwrap_or(0)).sum::<u64>();
    let share = sum("drift_connections") as f64 / sum("connections") as f64;
    assert!((0.005..0.1).contains(&share), "drift share near the configured 3 %, got {share}");
}
