//! The processor against the simulator's expected results: every
//! time-to-patch, outcome, due date, breach flag, canary gate and drift count.

use std::collections::BTreeMap;

use ingest::simulate::{ScenarioConfig, SimLine, Simulator};
use processor::Processor;
use processor::config::ProcessorConfig;
use processor::rows::EpochRows;
use schemas::Timestamp;
use serde_json::{Value, json};

/// The latest revision of every row, as the lake's views show them.
#[derive(Default)]
struct Tables {
    rows: BTreeMap<&'static str, BTreeMap<String, (i64, Value)>>,
    alerts: BTreeMap<String, Value>,
    dead_letters: usize,
}

impl Tables {
    fn put(&mut self, table: &'static str, key: String, revision: i64, row: Value) {
        let rows = self.rows.entry(table).or_default();
        if let Some((previous, _)) = rows.get(&key) {
            assert!(revision > *previous, "{table} {key}: revision {revision} after {previous}");
        }
        rows.insert(key, (revision, row));
    }

    fn merge(&mut self, epoch: EpochRows) {
        let ts = |t: Option<Timestamp>| t.map(|t| t.to_string());
        for r in epoch.exposures {
            let row = json!({"asset_id": r.asset_id, "cve_id": r.cve_id, "status": r.status, "severity": r.severity,
                "detected_at": r.detected_at.to_string(), "remediated_at": ts(r.remediated_at), "due_at": ts(r.due_at),
                "breached": r.breached});
            self.put("exposures", format!("{}/{}", r.asset_id, r.cve_id), r.revision, row);
        }
        for r in epoch.patch_outcomes {
            let row = json!({"asset_id": r.asset_id, "patch_id": r.patch_id, "released_at": ts(r.released_at),
                "first_attempt_at": ts(r.first_attempt_at), "remediated_at": ts(r.remediated_at),
                "time_to_patch_s": r.time_to_patch_s, "attempts": r.attempts, "outcome": r.outcome});
            self.put("patch_outcomes", format!("{}/{}", r.asset_id, r.patch_id), r.revision, row);
        }
        for r in epoch.canary_rollups {
            let row = json!({"rollout_id": r.rollout_id, "patch_id": r.patch_id, "stages": r.stages, "failed": r.failed,
                "inconclusive": r.inconclusive, "failure_rate": r.failure_rate, "gate": r.gate});
            self.put("canary_rollups", r.rollout_id.clone(), r.revision, row);
        }
        for r in epoch.segment_drift {
            let row = json!({"window_start": r.window_start.to_string(), "src_segment": r.src_segment,
                "dst_segment": r.dst_segment, "connections": r.connections, "drift_connections": r.drift_connections});
            self.put(
                "segment_drift",
                format!("{}/{}/{}", r.window_start, r.src_segment, r.dst_segment),
                r.revision,
                row,
            );
        }
        for r in epoch.alerts {
            let previous = self
                .alerts
                .insert(r.alert_id.clone(), json!({"rule": r.rule, "time": r.time.to_string(), "entity": r.entity_id}));
            assert!(previous.is_none(), "alert {} emitted twice", r.alert_id);
        }
        self.dead_letters += epoch.dead_letters.len();
    }

    fn table(&self, name: &str) -> Vec<Value> {
        self.rows.get(name).map(|rows| rows.values().map(|(_, row)| row.clone()).collect()).unwrap_or_default()
    }
}

fn process(lines: &[SimLine], partitions: u32, flush_every: usize) -> Tables {
    let mut processor = Processor::new(ProcessorConfig::default(), partitions);
    let mut tables = Tables::default();
    for (offset, line) in lines.iter().enumerate() {
        crate::common::take(&mut processor, offset, line);
        if (offset + 1) % flush_every == 0 {
            for (_, epoch) in processor.flush() {
                tables.merge(epoch);
            }
        }
    }
    processor.finish_input();
    for (_, epoch) in processor.flush() {
        tables.merge(epoch);
    }
    tables
}

fn scenario(config: ScenarioConfig) -> (Vec<SimLine>, Value) {
    let mut simulator = Simulator::new(config, true);
    let lines: Vec<SimLine> = std::iter::from_fn(|| simulator.next_line()).collect();
    let truth = serde_json::to_value(simulator.truth().expect("kept")).expect("serializes");
    (lines, truth)
}

fn check(config: ScenarioConfig, partitions: u32, flush_every: usize) {
    let label = format!("seed {} late {} duplicates {}", config.seed, config.late_ratio, config.duplicate_ratio);
    let (lines, truth) = scenario(config);
    let tables = process(&lines, partitions, flush_every);
    for table in ["exposures", "patch_outcomes", "canary_rollups", "segment_drift"] {
        let expected = truth[table].as_array().expect("rows");
        let actual = tables.table(table);
        assert!(!expected.is_empty(), "{label}: the truth has {table}");
        assert_eq!(actual.len(), expected.len(), "{label}: {table} rows");
        for (actual, expected) in actual.iter().zip(expected) {
            for (field, value) in expected.as_object().expect("object") {
                let ours = actual.get(field).unwrap_or(&Value::Null);
                let same = match (ours.as_f64(), value.as_f64()) {
                    (Some(a), Some(b)) => a == b,
                    _ => ours == value,
                };
                assert!(same, "{label}: {table}.{field} {ours} != {value}\n ours: {actual}\n truth: {expected}");
            }
        }
    }
    assert_eq!(tables.dead_letters as u64, truth["lines"]["invalid"].as_u64().unwrap_or(0), "{label}: dead letters");
    let rules: std::collections::BTreeSet<_> =
        tables.alerts.values().map(|a| a["rule"].as_str().unwrap_or("").to_owned()).collect();
    assert!(rules.len() >= 5, "{label}: most alert rules fire in a realistic scenario: {rules:?}");
}

fn base(seed: u64) -> ScenarioConfig {
    ScenarioConfig { assets: 250, days: 20, seed, ..ScenarioConfig::default() }
}

#[test]
fn in_order_delivery_matches_the_truth() {
    for seed in [1, 2] {
        check(base(seed), 1, 20_000);
    }
}

#[test]
fn late_and_duplicate_delivery_matches_the_truth() {
    for seed in [3, 4] {
        let config = ScenarioConfig { late_ratio: 0.05, duplicate_ratio: 0.03, malformed_ratio: 0.01, ..base(seed) };
        check(config, 3, 7_919);
    }
}
