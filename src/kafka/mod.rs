//! Kafka clients: the partition reader behind each source, the producers behind each sink, and
//! topic administration.

pub mod admin;
pub mod reader;
pub mod sink;

use rdkafka::ClientConfig;

use crate::pipeline::{resolve_secret, Pipeline};

/// A librdkafka configuration for `brokers` with the pipeline's pass-through properties
/// (SASL/SSL...), secrets resolved.
pub fn client_config(pipeline: &Pipeline, brokers: &str) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in &pipeline.kafka.properties {
        config.set(k, resolve_secret(v)?);
    }
    Ok(config)
}
