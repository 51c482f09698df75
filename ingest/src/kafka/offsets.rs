//! What the group learns about the lake's progress: the offsets committed
//! epochs cover are stored in Kafka only after the commit (never ahead of
//! the lake), and the lag of each held partition is measured against them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::Source;
use crate::metrics::PipelineMetrics;

/// Stores in the group the next offsets that committed epochs cover
/// (`positions` of each), for the partitions this member `held`: for lag
/// monitoring, and for a restart that finds no lake record. librdkafka
/// commits stored offsets in the background.
pub fn store_committed<'a, C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    held: &BTreeSet<(String, i32)>,
    committed: impl IntoIterator<Item = &'a BTreeMap<String, u64>>,
) {
    let mut tpl = TopicPartitionList::new();
    for positions in committed {
        for (topic, partition) in held {
            if let Some(next) = Source::new(topic, *partition).position(positions) {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(next));
            }
        }
    }
    if tpl.count() > 0
        && let Err(error) = consumer.store_offsets(&tpl)
    {
        // A partition revoked since the commit: its new owner stores its own.
        tracing::debug!(%error, "cannot store offsets (partition moved)");
    }
}

/// Sets `patchtrail_consumer_lag_messages` of each held partition: its end
/// offset (asked of `watermarks`, a [`super::watermark_client`]) minus the
/// next offset the task will apply (`next`, by partition). The first query
/// that fails ends the round (the brokers are slow or away): the caller's
/// loop is held up by one timeout at most, and the other gauges keep their
/// last values.
pub fn report_lag(
    watermarks: &BaseConsumer,
    metrics: &PipelineMetrics,
    held: &BTreeSet<(String, i32)>,
    next: impl Fn(&str, i32) -> Option<i64>,
) {
    for (topic, partition) in held {
        let Ok((_, high)) = watermarks.fetch_watermarks(topic, *partition, Duration::from_secs(1)) else { return };
        let next = next(topic, *partition).unwrap_or(0);
        metrics.consumer_lag.with_label_values(&[topic.as_str(), &partition.to_string()]).set((high - next).max(0));
    }
}
