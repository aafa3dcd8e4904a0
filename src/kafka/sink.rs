//! Producers for what the pipeline writes: dead letters, budget status, served ads and report
//! rows.

use std::time::Duration;

use adstream_operators::ingest::{DeadLetter, StreamId};
use adstream_operators::ledger::status::BudgetStatus;
use anyhow::Context;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde_json::json;

use crate::pipeline::TopicsSection;

/// The dead-letter document written for `dead` read from `topic`.
pub fn dead_letter_json(dead: &DeadLetter, topic: &str) -> serde_json::Value {
    json!({
        "reason": dead.reason.as_str(),
        "detail": dead.detail,
        "topic": topic,
        "partition": dead.origin.partition,
        "offset": dead.origin.offset,
        "key": dead.key.as_deref().map(String::from_utf8_lossy),
        "payload": String::from_utf8_lossy(&dead.payload),
        "payload_truncated": dead.truncated,
    })
}

/// One idempotent producer shared by a process's workers.
#[derive(Clone)]
pub struct Sinks {
    producer: ThreadedProducer<DefaultProducerContext>,
    topics: TopicsSection,
}

impl Sinks {
    /// Creates the producer.
    pub fn new(config: &ClientConfig, topics: &TopicsSection) -> anyhow::Result<Self> {
        let mut config = config.clone();
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000");
        let producer = config.create().context("creating the Kafka producer")?;
        Ok(Sinks {
            producer,
            topics: topics.clone(),
        })
    }

    fn send(&self, topic: &str, key: &[u8], payload: &[u8]) {
        let record = BaseRecord::to(topic).key(key).payload(payload);
        match super::send_waiting(&self.producer, record, 1_000) {
            Ok(()) => {}
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                tracing::error!(topic, "producer queue stayed full; record dropped");
            }
            Err(e) => tracing::error!(error = %e, topic, "produce failed"),
        }
    }

    /// Writes a dead letter, keyed by the original key.
    pub fn dead_letter(&self, dead: &DeadLetter) {
        let source =
            StreamId::from_u8(dead.origin.stream).map_or("unknown", |s| self.topics.input(s));
        let doc = dead_letter_json(dead, source);
        self.send(
            &self.topics.deadletter,
            dead.key.as_deref().unwrap_or_default(),
            doc.to_string().as_bytes(),
        );
    }

    /// Writes a campaign's budget status, keyed by campaign.
    pub fn budget_status(&self, status: &BudgetStatus) {
        if let Ok(doc) = serde_json::to_vec(status) {
            self.send(
                &self.topics.budget_status,
                status.campaign_id.as_bytes(),
                &doc,
            );
        }
    }

    /// Logs a served ad (with its features) to `ads.served`, keyed by request.
    pub fn served(&self, served: &adstream_operators::serve::operator::Served) {
        if let Ok(doc) = serde_json::to_vec(served) {
            self.send(&self.topics.served, served.request_id.as_bytes(), &doc);
        }
    }

    /// Writes a report row (an upsert) to `topic`.
    pub fn report(&self, topic: &str, row: &adstream_operators::report::ReportRow) {
        self.send(topic, row.key.as_bytes(), row.value.to_string().as_bytes());
    }

    /// Waits for everything queued to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
    }
}
