//! Any delivery order of the same events within the allowed lateness gives
//! the same tables and the same alerts, wherever the epochs are cut.

use std::collections::BTreeMap;

use ingest::simulate::{ScenarioConfig, Simulator};
use processor::Processor;
use processor::config::ProcessorConfig;
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use schemas::CloudEvent;

/// Latest content of every row (revision and updated_at left out) and every alert.
fn tables(events: &[&CloudEvent], flush_points: &[usize]) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut processor = Processor::new(ProcessorConfig::default(), 2);
    let mut rows = BTreeMap::new();
    let mut alerts = BTreeMap::new();
    let mut collect = |processor: &mut Processor| {
        for (_, epoch) in processor.flush() {
            let mut put = |key: String, debug: String| {
                rows.insert(key, debug);
            };
            for mut r in epoch.exposures {
                (r.revision, r.updated_at) = (0, Default::default());
                put(format!("exposure {} {}", r.asset_id, r.cve_id), format!("{r:?}"));
            }
            for mut r in epoch.patch_outcomes {
                (r.revision, r.updated_at) = (0, Default::default());
                put(format!("outcome {} {}", r.asset_id, r.patch_id), format!("{r:?}"));
            }
            for mut r in epoch.canary_rollups {
                (r.revision, r.updated_at) = (0, Default::default());
                put(format!("rollout {}", r.rollout_id), format!("{r:?}"));
            }
            for mut r in epoch.segment_drift {
                (r.revision, r.updated_at) = (0, Default::default());
                put(format!("drift {} {} {}", r.window_start, r.src_segment, r.dst_segment), format!("{r:?}"));
            }
            for mut r in epoch.assets {
                (r.revision, r.updated_at) = (0, Default::default());
                put(format!("asset {}", r.asset_id), format!("{r:?}"));
            }
            for r in epoch.alerts {
                alerts.insert(r.alert_id.clone(), format!("{} {} {} {}", r.rule, r.entity_id, r.time, r.ocsf));
            }
        }
    };
    for (offset, event) in events.iter().enumerate() {
        processor.apply("test", offset as u64, event);
        if flush_points.contains(&offset) {
            collect(&mut processor);
        }
    }
    processor.finish_input();
    collect(&mut processor);
    (rows, alerts)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn any_order_within_the_lateness_gives_the_same_tables(seed in 0u64..1_000, shuffle in any::<u64>()) {
        let config = ScenarioConfig { assets: 60, days: 4, seed, ..ScenarioConfig::default() };
        let mut simulator = Simulator::new(config, false);
        let events: Vec<CloudEvent> = std::iter::from_fn(|| simulator.next_line())
            .filter_map(|line| schemas::decode(&line.payload).ok())
            .collect();
        let lateness = ProcessorConfig::default().allowed_lateness_us;
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(shuffle);
        // Deliver each keyed event up to (not including) the lateness after its
        // time; intel stays in place, as it is a catalog read ahead of the tasks.
        let mut delivery: Vec<(i64, usize, &CloudEvent)> = events
            .iter()
            .enumerate()
            .map(|(idx, event)| {
                let delay = if event.event_type().topic() == schemas::InputTopic::Intel { 0 } else { rng.random_range(0..lateness) };
                (event.time.micros() + delay, idx, event)
            })
            .collect();
        delivery.sort_by_key(|&(at, idx, _)| (at, idx));
        let shuffled: Vec<&CloudEvent> = delivery.iter().map(|&(_, _, event)| event).collect();
        let in_order: Vec<&CloudEvent> = events.iter().collect();
        prop_assume!(shuffled.iter().zip(&in_order).any(|(a, b)| a.id != b.id));
        let flush_points: Vec<usize> = (0..5).map(|_| rng.random_range(0..events.len())).collect();
        let (expected_rows, expected_alerts) = tables(&in_order, &[events.len() / 2]);
        let (rows, alerts) = tables(&shuffled, &flush_points);
        prop_assert_eq!(rows.len(), expected_rows.len());
        for (key, row) in &expected_rows {
            prop_assert_eq!(rows.get(key), Some(row), "row {}", key);
        }
        prop_assert!(expected_alerts.len() > 10, "a scenario with alerts");
        for (id, alert) in &expected_alerts {
            prop_assert_eq!(alerts.get(id), Some(alert), "alert {}", id);
        }
        let extra: Vec<&String> = alerts.iter().filter(|(id, _)| !expected_alerts.contains_key(*id)).map(|(_, a)| a).collect();
        let extra: Vec<&str> = extra.iter().map(|a| a.split(" {").next().unwrap_or_default()).collect();
        prop_assert!(extra.is_empty(), "alerts only in the shuffled run: {:?}", extra);
    }
}
