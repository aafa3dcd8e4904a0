//! Kafka clients: the partition reader behind each source, the monitor behind readiness and
//! partition discovery, the producer behind the sinks (its policy in [`output`], the
//! dead-letter gate in [`deadletters`]), and topic administration.

pub mod admin;
pub mod deadletters;
pub mod monitor;
pub mod output;
pub mod reader;
pub mod sink;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::pipeline::Pipeline;

/// Whether a consumer error is the connection to the brokers coming and going (librdkafka
/// reconnects by itself): a loop reading to a deadline waits on, rather than fail at once.
pub fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
    )
}

/// A librdkafka configuration for `brokers` with the pipeline's pass-through properties
/// (SASL/SSL...), secrets resolved.
pub fn client_config(pipeline: &Pipeline, brokers: &str) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in &pipeline.kafka.properties {
        config.set(
            k,
            v.resolve()
                .with_context(|| format!("kafka.properties.{k}"))?,
        );
    }
    Ok(config)
}

/// The latest JSON value of every key of `topic` (a compacted upsert topic such as `report.*`),
/// read from the beginning up to the end each partition has now; a tombstone, or a value that
/// is not JSON, removes its key. Fails if the end is not reached within `timeout`.
pub fn read_latest(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<Vec<u8>, serde_json::Value>> {
    let mut latest = BTreeMap::new();
    read_to_end(config, topic, timeout, |key, payload| {
        match payload.map(serde_json::from_slice::<serde_json::Value>) {
            Some(Ok(value)) => {
                latest.insert(key.to_vec(), value);
            }
            _ => {
                latest.remove(key);
            }
        }
    })?;
    Ok(latest)
}

/// Every record of `topic` (key, payload) from the beginning up to the end each partition has
/// now, in partition order. Fails if the end is not reached within `timeout`.
pub fn read_to_end(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
    mut visit: impl FnMut(&[u8], Option<&[u8]>),
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "adstream-read-latest")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka client")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    let mut ends = BTreeMap::new();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .with_context(|| format!("reading the end of {topic}[{}]", p.id()))?;
        if high > 0 {
            ends.insert(p.id(), high);
            assignment.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)?;
        }
    }
    if !ends.is_empty() {
        consumer.assign(&assignment)?;
    }
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "could not read {topic} to its end within {timeout:?}"
        );
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) if is_transient(&e) => {
                tracing::warn!(error = %e, topic, "reading: broker connection lost, retrying");
                continue;
            }
            Some(message) => message.with_context(|| format!("reading {topic}"))?,
        };
        visit(m.key().unwrap_or_default(), m.payload());
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lost_connections_are_transient() {
        let error = |code| KafkaError::MessageConsumption(code);
        assert!(is_transient(&error(RDKafkaErrorCode::AllBrokersDown)));
        assert!(is_transient(&error(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
        assert!(!is_transient(&error(RDKafkaErrorCode::OffsetOutOfRange)));
        assert!(!is_transient(&error(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
    }
}
