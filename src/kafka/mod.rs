//! Kafka clients: the partition reader behind each source, the monitor behind readiness and
//! partition discovery, the producer behind the sinks (its policy in [`output`], the
//! dead-letter gate in [`deadletters`]), and topic administration.

pub mod admin;
pub mod deadletters;
pub mod monitor;
pub mod output;
pub mod properties;
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

/// What a connection check saw of the client's errors.
#[derive(Default)]
struct ConnectionProbe {
    /// An error no retry will cure (bad credentials, an untrusted certificate), as reported.
    fatal: std::sync::Mutex<Option<String>>,
    /// The last other error (the brokers cannot be reached...).
    last: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for ConnectionProbe {
    fn error(&self, error: KafkaError, reason: &str) {
        let slot = if connection_fatal(&error, reason) {
            &self.fatal
        } else {
            &self.last
        };
        if let Ok(mut slot) = slot.lock() {
            *slot = Some(reason.to_string());
        }
    }

    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, _fac: &str, _log_message: &str) {}
}

impl rdkafka::producer::ProducerContext for ConnectionProbe {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// Whether a client error is one that retrying cannot cure: the brokers refused the
/// credentials, or the TLS handshake failed (an untrusted or mismatched certificate, a
/// plaintext port).
pub fn connection_fatal(error: &KafkaError, reason: &str) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
    ) || [
        "SSL handshake failed",
        "certificate verify failed",
        "SASL authentication",
    ]
    .iter()
    .any(|needle| reason.contains(needle))
}

/// Connects to the brokers of `config` (`brokers`, for messages) and reads the cluster's
/// metadata, so that a wrong password, an untrusted certificate or unreachable brokers are a
/// clear error at once instead of a client retrying in silence. Fails at the first error that
/// retrying cannot cure, or when no metadata comes within `timeout`.
pub fn check_connection(
    config: &ClientConfig,
    brokers: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    use rdkafka::producer::Producer;
    let probe: rdkafka::producer::BaseProducer<ConnectionProbe> = config
        .clone()
        .create_with_context(ConnectionProbe::default())
        .context("creating a Kafka client (check [kafka.properties])")?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(reason) = probe.context().fatal.lock().ok().and_then(|mut f| f.take()) {
            let hint = if reason.contains("SASL") || reason.contains("uthenticat") {
                "check sasl.mechanism, sasl.username and sasl.password in [kafka.properties]"
            } else {
                "check security.protocol and ssl.ca.location (the CA that signed the brokers' \
                 certificates) in [kafka.properties]"
            };
            anyhow::bail!("Kafka at {brokers} refused the connection: {reason} ({hint})");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let last = probe.context().last.lock().ok().and_then(|l| l.clone());
            anyhow::bail!(
                "cannot reach Kafka at {brokers} within {}s{}",
                timeout.as_secs(),
                last.map(|l| format!(": {l}")).unwrap_or_default()
            );
        }
        if probe
            .client()
            .fetch_metadata(None, left.min(Duration::from_millis(500)))
            .is_ok()
        {
            return Ok(());
        }
        // Serves the client's error callbacks.
        probe.poll(Duration::from_millis(50));
    }
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
