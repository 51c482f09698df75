//! What every processor test does with a simulated line: apply it if it is a
//! valid event, record it as a dead letter of its task if not.

use ingest::simulate::SimLine;
use processor::Processor;
use processor::rows::DeadLetterRow;
use schemas::Timestamp;

/// Feeds the line at `offset` of the simulated source to `processor`.
pub fn take(processor: &mut Processor, offset: usize, line: &SimLine) {
    match schemas::decode(&line.payload) {
        Ok(event) => {
            processor.apply("sim", offset as u64, &event);
        }
        Err(invalid) => {
            let task = processor.route_topic(line.topic, &line.key);
            let topic = line.topic.default_topic_name();
            let key = Some(line.key.as_str());
            let (partition, error) = (task.partition as i32, invalid.to_string());
            let row = DeadLetterRow::new(topic, partition, offset as i64, key, error, &line.payload, Timestamp(0));
            processor.dead_letter(task, "sim", offset as u64, row);
        }
    }
}
