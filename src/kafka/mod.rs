//! Kafka clients: the partition reader behind each source, the producers behind each sink, and
//! topic administration.

pub mod admin;
pub mod reader;
pub mod sink;

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::pipeline::{resolve_secret, Pipeline};

/// A librdkafka configuration for `brokers` with the pipeline's pass-through properties
/// (SASL/SSL...), secrets resolved.
pub fn client_config(pipeline: &Pipeline, brokers: &str) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in &pipeline.kafka.properties {
        config.set(k, resolve_secret(v.get_ref())?);
    }
    Ok(config)
}

/// Sends `record`, waiting 1 ms and trying again while the producer's queue is full, at most
/// `attempts` times; then the queue-full error is returned. Any other error returns at once.
pub fn send_waiting<'a, K, P, C>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
    attempts: usize,
) -> Result<(), KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    C: ProducerContext + 'static,
{
    for _ in 0..attempts {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
    Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
}
