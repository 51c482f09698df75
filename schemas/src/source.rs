//! The name a source has in a task's positions and in commit records: a
//! Kafka partition is `kafka:<topic>/<partition>` (written and read only
//! here: ingest names its partitions so, the processor reads a dead
//! letter's topic and partition back), a file `file:<path>`.

use std::collections::BTreeMap;
use std::fmt;

/// One partition of one topic, as a source of a task.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

const PREFIX: &str = "kafka:";

impl Source {
    /// The source of `partition` of `topic`.
    pub fn new(topic: &str, partition: i32) -> Source {
        Source { topic: topic.to_owned(), partition }
    }

    /// Reads a source name back (`None` for other sources, such as files).
    pub fn parse(name: &str) -> Option<Source> {
        let (topic, partition) = name.strip_prefix(PREFIX)?.rsplit_once('/')?;
        Some(Source { topic: topic.to_owned(), partition: partition.parse().ok()? })
    }

    /// The next offset `positions` records for this partition.
    pub fn position(&self, positions: &BTreeMap<String, u64>) -> Option<i64> {
        positions.get(&self.to_string()).map(|&next| next as i64)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/{}", self.topic, self.partition)
    }
}

/// The task source name of a Kafka partition, as recorded in commit records.
pub fn source_name(topic: &str, partition: i32) -> String {
    Source::new(topic, partition).to_string()
}

/// The next offset `positions` records for each partition of `topic`.
pub fn topic_positions(positions: &BTreeMap<String, u64>, topic: &str) -> BTreeMap<i32, i64> {
    positions
        .iter()
        .filter_map(|(name, &next)| {
            Source::parse(name).filter(|s| s.topic == topic).map(|s| (s.partition, next as i64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_other_sources_are_not_kafka() {
        let source = Source::new("patchtrail.intel", 3);
        assert_eq!(source.to_string(), "kafka:patchtrail.intel/3");
        assert_eq!(Source::parse(&source.to_string()), Some(source));
        assert_eq!(Source::parse("file:/tmp/events.jsonl"), None);
        assert_eq!(Source::parse("kafka:t/x"), None);
        let positions: BTreeMap<String, u64> = [
            ("kafka:a/0".to_owned(), 5),
            ("kafka:a/2".to_owned(), 9),
            ("kafka:b/0".to_owned(), 1),
            ("sim".to_owned(), 3),
        ]
        .into();
        assert_eq!(topic_positions(&positions, "a"), [(0, 5), (2, 9)].into());
        assert_eq!(Source::new("b", 0).position(&positions), Some(1));
    }
}
