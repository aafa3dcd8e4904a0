//! The output policy, as plain logic: which delivery failures are retried, when the sinks count
//! as congested, and the bounded backlog that takes records while librdkafka's queue is full.
//!
//! Every output record ends in exactly one counted outcome (`adstream_output_records_total`):
//! `delivered`; `failed` for an error that no retry can mend (too large, no such topic, not
//! authorised), with its reason in `adstream_output_failures_total`; `dropped` when the backlog
//! is full; or `undelivered` when the process stops before delivery. Retriable errors are
//! retried by librdkafka itself (the producer's `message.timeout.ms` is 0: no deadline, so an
//! outage delays records instead of dropping them, in order and without duplicates thanks to
//! idempotence); one that still reaches the delivery callback is sent again ([`on_failure`]).
//!
//! Backpressure: a record librdkafka's queue refuses waits in the [`Backlog`] (behind it, every
//! later record, so order is kept), and the sinks are congested ([`congested`]) from the moment
//! the backlog holds anything or the producer holds [`HIGH_WATER`] records until it is empty
//! and the producer is back under [`LOW_WATER`]. Congested sinks hold the sources (they read
//! nothing more) and make `/readyz` 503; serving never waits: its `ads.served` records join the
//! backlog, and only a full backlog ([`BACKLOG_BYTES`]) drops them, counted and logged.

use std::collections::VecDeque;

use rdkafka::types::RDKafkaErrorCode;

/// Records in the producer at which the sinks become congested.
pub const HIGH_WATER: usize = 100_000;
/// Records in the producer under which congested sinks recover (once the backlog is empty).
pub const LOW_WATER: usize = 50_000;
/// Bytes the backlog holds at most; a record beyond is dropped (counted and logged).
pub const BACKLOG_BYTES: usize = 64 << 20;

/// What to do with a record whose delivery failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Send it again (a transient error librdkafka gave up on).
    Retry,
    /// Count it as `failed` with this reason: no retry can mend it.
    Fail(String),
    /// The process is stopping and the record was purged from the queue: `undelivered`.
    Purged,
}

/// The policy for a delivery error.
pub fn on_failure(code: RDKafkaErrorCode) -> Failure {
    use RDKafkaErrorCode as E;
    match code {
        E::MessageTimedOut
        | E::QueueFull
        | E::BrokerTransportFailure
        | E::AllBrokersDown
        | E::RequestTimedOut
        | E::NotLeaderForPartition
        | E::LeaderNotAvailable
        | E::NotEnoughReplicas
        | E::NotEnoughReplicasAfterAppend
        | E::NetworkException
        | E::KafkaStorageError
        | E::BrokerNotAvailable
        | E::ReplicaNotAvailable
        | E::OperationTimedOut
        | E::TimedOutQueue => Failure::Retry,
        E::PurgeQueue | E::PurgeInflight => Failure::Purged,
        other => Failure::Fail(reason(other)),
    }
}

/// A librdkafka error code as a metric label: `MessageSizeTooLarge` -> `message_size_too_large`.
pub fn reason(code: RDKafkaErrorCode) -> String {
    let name = format!("{code:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Whether the sinks are congested now, given whether they were, the records in the producer
/// and the records in the backlog (hysteresis between [`HIGH_WATER`] and [`LOW_WATER`]).
pub fn congested(was: bool, in_producer: usize, in_backlog: usize) -> bool {
    if in_backlog > 0 || in_producer >= HIGH_WATER {
        true
    } else if was {
        in_producer > LOW_WATER
    } else {
        false
    }
}

/// A record waiting for room in the producer's queue.
#[derive(Debug)]
pub struct Waiting<M> {
    /// Topic.
    pub topic: String,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub payload: Vec<u8>,
    /// Kafka headers (name, value), in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// What the delivery callback needs (receipt, retries).
    pub meta: M,
}

impl<M> Waiting<M> {
    fn bytes(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.topic.len() + self.key.len() + self.payload.len() + headers + 64
    }
}

/// Records waiting, in order, at most `cap` bytes of them.
#[derive(Debug)]
pub struct Backlog<M> {
    records: VecDeque<Waiting<M>>,
    bytes: usize,
    cap: usize,
}

impl<M> Backlog<M> {
    /// An empty backlog of at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Backlog {
            records: VecDeque::new(),
            bytes: 0,
            cap,
        }
    }

    /// Appends `record`, or gives it back when the backlog is full (the caller drops it,
    /// counted). One record is always taken into an empty backlog, whatever its size.
    pub fn push(&mut self, record: Waiting<M>) -> Result<(), Waiting<M>> {
        let size = record.bytes();
        if !self.records.is_empty() && self.bytes + size > self.cap {
            return Err(record);
        }
        self.bytes += size;
        self.records.push_back(record);
        Ok(())
    }

    /// Takes the oldest record.
    pub fn pop(&mut self) -> Option<Waiting<M>> {
        let record = self.records.pop_front()?;
        self.bytes -= record.bytes();
        Some(record)
    }

    /// Puts back the record just taken (the producer's queue was still full), first in line.
    pub fn unpop(&mut self, record: Waiting<M>) {
        self.bytes += record.bytes();
        self.records.push_front(record);
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8, size: usize) -> Waiting<u8> {
        Waiting {
            topic: "t".into(),
            key: vec![n],
            payload: vec![0; size],
            headers: Vec::new(),
            meta: n,
        }
    }

    #[test]
    fn transient_errors_are_retried_and_the_rest_fail_with_a_named_reason() {
        assert_eq!(
            on_failure(RDKafkaErrorCode::MessageTimedOut),
            Failure::Retry
        );
        assert_eq!(on_failure(RDKafkaErrorCode::AllBrokersDown), Failure::Retry);
        assert_eq!(
            on_failure(RDKafkaErrorCode::NotLeaderForPartition),
            Failure::Retry
        );
        assert_eq!(
            on_failure(RDKafkaErrorCode::MessageSizeTooLarge),
            Failure::Fail("message_size_too_large".into())
        );
        assert_eq!(
            on_failure(RDKafkaErrorCode::UnknownTopic),
            Failure::Fail("unknown_topic".into())
        );
        assert_eq!(
            on_failure(RDKafkaErrorCode::TopicAuthorizationFailed),
            Failure::Fail("topic_authorization_failed".into())
        );
        assert_eq!(on_failure(RDKafkaErrorCode::PurgeQueue), Failure::Purged);
    }

    #[test]
    fn congestion_has_hysteresis_and_any_backlog_congests() {
        assert!(!congested(false, 0, 0));
        assert!(congested(false, 0, 1), "a record waits");
        assert!(congested(false, HIGH_WATER, 0));
        assert!(!congested(false, HIGH_WATER - 1, 0));
        assert!(congested(true, LOW_WATER + 1, 0), "not yet recovered");
        assert!(!congested(true, LOW_WATER, 0));
        assert!(congested(true, 0, 3));
    }

    #[test]
    fn the_backlog_keeps_order_and_refuses_beyond_its_cap() {
        let mut b = Backlog::new(400);
        assert!(b.push(record(1, 100)).is_ok());
        assert!(b.push(record(2, 100)).is_ok());
        let refused = b.push(record(3, 100)).unwrap_err();
        assert_eq!(refused.meta, 3);
        assert_eq!(b.len(), 2);
        let first = b.pop().unwrap();
        assert_eq!(first.meta, 1);
        b.unpop(first);
        assert_eq!(b.pop().unwrap().meta, 1, "put back first in line");
        assert_eq!(b.pop().unwrap().meta, 2);
        assert!(b.is_empty());
        assert!(
            b.push(record(4, 10_000)).is_ok(),
            "an empty backlog takes any one record"
        );
    }
}
