//! The baseline of `benches/kafka.sh`: a bare rdkafka consumer that reads
//! every message of the input topics and does nothing with them, with the same
//! pre-fetch settings as `patchtrail run`. Prints messages, seconds, messages/s.
//!
//!     cargo run --release --example raw_consume -- BROKERS TOPIC[,TOPIC...]

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(brokers), Some(topics)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: raw_consume BROKERS TOPIC[,TOPIC...]");
        std::process::exit(2);
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "patchtrail-raw-baseline")
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "8192")
        .set("queued.min.messages", "20000")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    let mut tpl = TopicPartitionList::new();
    let mut total = 0i64;
    for topic in topics.split(',') {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
        for partition in metadata.topics()[0].partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition.id(), Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{e}"));
            total += high - low;
            tpl.add_partition_offset(topic, partition.id(), Offset::Beginning).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    consumer.assign(&tpl).unwrap_or_else(|e| panic!("assign: {e}"));
    let started = Instant::now();
    let (mut n, mut bytes) = (0i64, 0usize);
    while n < total {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            bytes += rdkafka::Message::payload(&message).map_or(0, <[u8]>::len);
            n += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{n} {seconds:.3} {:.0} {bytes}", n as f64 / seconds);
}
