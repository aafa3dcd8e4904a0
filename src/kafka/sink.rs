//! The producer for what the pipeline writes: dead letters, budget status, served ads and report
//! rows. Nothing leaves silently: every record is delivered or counted and logged per topic and
//! reason, a full queue holds the inputs instead of a worker, and dead letters an earlier run
//! published are not published again. The policy is plain logic in [`super::output`]; the
//! dead-letter rule in [`super::deadletters`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use adstream_operators::deliver::Receipt;
use adstream_operators::ledger::status::BudgetStatus;
use adstream_operators::records::{DeadLetter, StreamId};
use anyhow::Context;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use super::deadletters::DeadLetterGate;
use super::output::{congested, on_failure, reason, Backlog, Failure, Waiting, BACKLOG_BYTES};
use crate::live::LiveState;
use crate::metrics::Metrics;
use crate::pipeline::Topics;

/// Exit status of a process whose producer hit a fatal error (its idempotence is broken): it
/// stops at once so that it restarts from its checkpoint, and no undelivered output is lost.
pub const EXIT_PRODUCER_FATAL: i32 = 74;

/// Header names of a dead letter (the record's key and value are the original message's):
/// why it was refused and where it was read, as Kafka Connect's dead-letter queues carry theirs.
pub mod dead_letter_header {
    /// The reason, snake_case (`malformed_json`, `bad_token`, ...).
    pub const REASON: &str = "adstream.error.reason";
    /// Human-readable detail naming the field or check.
    pub const DETAIL: &str = "adstream.error.detail";
    /// The source topic.
    pub const TOPIC: &str = "adstream.source.topic";
    /// The source partition, in decimal.
    pub const PARTITION: &str = "adstream.source.partition";
    /// The source offset, in decimal.
    pub const OFFSET: &str = "adstream.source.offset";
    /// `true` when the value holds only the first bytes of an oversize message, else `false`.
    pub const TRUNCATED: &str = "adstream.payload.truncated";
}

/// The headers of the dead letter of `dead`, read from `topic`.
pub fn dead_letter_headers(dead: &DeadLetter, topic: &str) -> Vec<(String, Vec<u8>)> {
    use dead_letter_header as h;
    [
        (h::REASON, dead.reason.as_str().to_string()),
        (h::DETAIL, dead.detail.clone()),
        (h::TOPIC, topic.to_string()),
        (h::PARTITION, dead.origin.partition.to_string()),
        (h::OFFSET, dead.origin.offset.to_string()),
        (h::TRUNCATED, dead.truncated.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_bytes()))
    .collect()
}

/// `headers` for a librdkafka record, `None` when there are none.
fn owned_headers(headers: &[(String, Vec<u8>)]) -> Option<OwnedHeaders> {
    if headers.is_empty() {
        return None;
    }
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: Some(value),
        });
    }
    Some(owned)
}

/// What the delivery callback needs of a record.
#[derive(Debug, Default)]
pub struct Meta {
    receipt: Option<Receipt>,
    retries: u32,
}

impl Meta {
    fn settle(&self) {
        if let Some(r) = &self.receipt {
            r.settle();
        }
    }
}

/// Logs the first failure of each (topic, reason) at once, then at most one line per
/// [`LOG_EVERY`] with the count since.
#[derive(Default)]
struct LogLimiter {
    last: Mutex<HashMap<TopicReason, (Option<Instant>, u64)>>,
}

/// A (topic, failure reason) pair.
type TopicReason = (String, String);

const LOG_EVERY: Duration = Duration::from_secs(10);

impl LogLimiter {
    fn failed(&self, topic: &str, why: &str, outcome: &str) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let now = Instant::now();
        let entry = last
            .entry((topic.to_string(), why.to_string()))
            .or_insert((None, 0));
        entry.1 += 1;
        if entry.0.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            tracing::error!(
                topic,
                reason = why,
                outcome,
                records = entry.1,
                "output records not delivered"
            );
            *entry = (Some(now), 0);
        }
    }
}

/// State shared by the senders, the delivery callback and the backlog drainer.
struct Shared {
    backlog: Mutex<Backlog<Box<Meta>>>,
    wake: Condvar,
    in_producer: AtomicUsize,
    congested: Arc<AtomicBool>,
    metrics: Metrics,
    pending_producer: prometheus::IntGauge,
    pending_backlog: prometheus::IntGauge,
    live: Arc<LiveState>,
    log: LogLimiter,
}

impl Shared {
    fn count(&self, topic: &str, outcome: &str) {
        self.metrics
            .output_records
            .with_label_values(&[topic, outcome])
            .inc();
    }

    fn fail(&self, topic: &str, why: &str, outcome: &str, meta: &Meta) {
        self.count(topic, outcome);
        self.metrics
            .output_failures
            .with_label_values(&[topic, why])
            .inc();
        self.log.failed(topic, why, outcome);
        meta.settle();
    }

    /// Recomputes the congestion flag and the pending gauges.
    fn update(&self, in_backlog: usize) {
        let in_producer = self.in_producer.load(Ordering::Acquire);
        let was = self.congested.load(Ordering::Relaxed);
        let now = congested(was, in_producer, in_backlog);
        if now != was {
            self.congested.store(now, Ordering::Relaxed);
            if now {
                tracing::warn!(
                    in_producer,
                    in_backlog,
                    "output congested: inputs held until the producer catches up"
                );
            } else {
                tracing::info!("output flowing again: inputs resume");
            }
        }
        self.pending_producer.set(in_producer as i64);
        self.pending_backlog.set(in_backlog as i64);
    }

    /// Queues `record` behind the backlog, or drops it (counted) when the backlog is full.
    fn wait_in_backlog(&self, backlog: &mut Backlog<Box<Meta>>, record: Waiting<Box<Meta>>) {
        if let Err(refused) = backlog.push(record) {
            self.fail(&refused.topic, "backlog_full", "dropped", &refused.meta);
        }
        self.wake.notify_one();
    }
}

/// The producer's librdkafka context: the delivery callback and the client error callback.
pub struct OutputContext {
    shared: Arc<Shared>,
}

impl ClientContext for OutputContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                tracing::error!(reason, "kafka producer: all brokers down");
                self.shared
                    .live
                    .health
                    .set_broker_unreachable(Some(format!("producer: {reason}")));
            }
            Some(RDKafkaErrorCode::Fatal) => {
                tracing::error!(reason, "kafka producer: fatal error; exiting so that the process restarts from its checkpoint");
                std::process::exit(EXIT_PRODUCER_FATAL);
            }
            _ => tracing::warn!(error = %error, reason, "kafka producer error"),
        }
    }
}

impl ProducerContext for OutputContext {
    type DeliveryOpaque = Box<Meta>;

    fn delivery(&self, result: &DeliveryResult<'_>, mut meta: Box<Meta>) {
        let s = &self.shared;
        s.in_producer.fetch_sub(1, Ordering::AcqRel);
        match result {
            Ok(m) => {
                s.count(m.topic(), "delivered");
                meta.settle();
            }
            Err((e, m)) => {
                let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                match on_failure(code) {
                    Failure::Retry => {
                        s.count(m.topic(), "retried");
                        meta.retries += 1;
                        let headers = m.headers().map_or_else(Vec::new, |h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        });
                        let record = Waiting {
                            topic: m.topic().to_string(),
                            key: m.key().unwrap_or_default().to_vec(),
                            payload: m.payload().unwrap_or_default().to_vec(),
                            headers,
                            meta,
                        };
                        if let Ok(mut backlog) = s.backlog.lock() {
                            s.wait_in_backlog(&mut backlog, record);
                        }
                    }
                    Failure::Purged => s.fail(m.topic(), &reason(code), "undelivered", &meta),
                    Failure::Fail(why) => s.fail(m.topic(), &why, "failed", &meta),
                }
            }
        }
        let in_backlog = s.backlog.lock().map(|b| b.len()).unwrap_or(0);
        s.update(in_backlog);
    }
}

/// One idempotent producer shared by a process's workers.
#[derive(Clone)]
pub struct Sinks {
    producer: Arc<ThreadedProducer<OutputContext>>,
    shared: Arc<Shared>,
    topics: Topics,
    gate: Arc<Mutex<DeadLetterGate>>,
}

impl Sinks {
    /// Creates the producer (and the thread that moves the backlog into it). `gate` decides
    /// which dead letters an earlier run already published.
    pub fn new(
        config: &ClientConfig,
        topics: &Topics,
        metrics: Metrics,
        live: Arc<LiveState>,
        gate: DeadLetterGate,
    ) -> anyhow::Result<Self> {
        let mut config = config.clone();
        // Defaults the pipeline's properties may override.
        super::properties::set_defaults(
            &mut config,
            &[
                ("linger.ms", "5"),
                ("queue.buffering.max.messages", "1000000"),
            ],
        );
        // What correctness rests on (refused in `[kafka.properties]`).
        config
            .set("enable.idempotence", "true")
            // No deadline: librdkafka retries through an outage, in order and without
            // duplicates; the backlog and the held inputs bound what waits.
            .set("message.timeout.ms", "0")
            // Topics are made by `adstream topics create` (compaction, partitions), never by
            // a write.
            .set("allow.auto.create.topics", "false");
        let congested = Arc::new(AtomicBool::new(false));
        live.health.track_output(congested.clone());
        let shared = Arc::new(Shared {
            backlog: Mutex::new(Backlog::new(BACKLOG_BYTES)),
            wake: Condvar::new(),
            in_producer: AtomicUsize::new(0),
            congested,
            pending_producer: metrics.output_pending.with_label_values(&["producer"]),
            pending_backlog: metrics.output_pending.with_label_values(&["backlog"]),
            metrics,
            live,
            log: LogLimiter::default(),
        });
        let producer: ThreadedProducer<OutputContext> = config
            .create_with_context(OutputContext {
                shared: shared.clone(),
            })
            .context("creating the Kafka producer")?;
        let producer = Arc::new(producer);
        let (weak_producer, weak_shared) = (Arc::downgrade(&producer), Arc::downgrade(&shared));
        std::thread::Builder::new()
            .name("sink-backlog".into())
            .spawn(move || drain_backlog(weak_producer, weak_shared))
            .context("starting the backlog thread")?;
        Ok(Sinks {
            producer,
            shared,
            topics: topics.clone(),
            gate: Arc::new(Mutex::new(gate)),
        })
    }

    /// Set while the sinks are congested: the sources hold their reading.
    pub fn congested(&self) -> Arc<AtomicBool> {
        self.shared.congested.clone()
    }

    /// Sends a record without ever blocking: into librdkafka's queue, or into the backlog
    /// behind the records already waiting there.
    fn send(&self, topic: &str, key: &[u8], payload: &[u8], receipt: Option<&Receipt>) {
        self.send_with_headers(topic, key, payload, Vec::new(), receipt);
    }

    /// [`Self::send`] with Kafka `headers`.
    fn send_with_headers(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Vec<(String, Vec<u8>)>,
        receipt: Option<&Receipt>,
    ) {
        if let Some(r) = receipt {
            r.add();
        }
        let meta = Box::new(Meta {
            receipt: receipt.cloned(),
            retries: 0,
        });
        let s = &self.shared;
        let Ok(mut backlog) = s.backlog.lock() else {
            s.fail(topic, "poisoned", "failed", &meta);
            return;
        };
        let owned = owned_headers(&headers);
        let waiting = |meta, headers| Waiting {
            topic: topic.to_string(),
            key: key.to_vec(),
            payload: payload.to_vec(),
            headers,
            meta,
        };
        if !backlog.is_empty() {
            s.wait_in_backlog(&mut backlog, waiting(meta, headers));
        } else {
            let mut record = BaseRecord::with_opaque_to(topic, meta)
                .key(key)
                .payload(payload);
            if let Some(h) = owned {
                record = record.headers(h);
            }
            s.in_producer.fetch_add(1, Ordering::AcqRel);
            if let Err((e, record)) = self.producer.send(record) {
                s.in_producer.fetch_sub(1, Ordering::AcqRel);
                let meta = record.delivery_opaque;
                match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::QueueFull) => {
                        s.wait_in_backlog(&mut backlog, waiting(meta, headers));
                    }
                    code => {
                        let why = code.map_or_else(|| e.to_string(), reason);
                        s.fail(topic, &why, "failed", &meta);
                    }
                }
            }
        }
        let in_backlog = backlog.len();
        drop(backlog);
        s.update(in_backlog);
    }

    /// Writes a dead letter (the original key and bytes; the reason and source in its headers,
    /// [`dead_letter_header`]) unless an earlier run published it.
    /// `receipt` (from a [`adstream_operators::deliver`] fence) settles once it is delivered.
    pub fn dead_letter(&self, dead: &DeadLetter, receipt: Option<&Receipt>) {
        let admitted = self
            .gate
            .lock()
            .map(|mut g| g.admit(&dead.origin))
            .unwrap_or(true);
        if !admitted {
            self.shared
                .count(&self.topics.deadletter, "already_published");
            return;
        }
        let source =
            StreamId::from_u8(dead.origin.stream).map_or("unknown", |s| self.topics.input(s));
        self.send_with_headers(
            &self.topics.deadletter,
            dead.key.as_deref().unwrap_or_default(),
            &dead.payload,
            dead_letter_headers(dead, source),
            receipt,
        );
    }

    /// Writes a campaign's budget status, keyed by campaign.
    pub fn budget_status(&self, status: &BudgetStatus) {
        if let Ok(doc) = serde_json::to_vec(status) {
            self.send(
                &self.topics.budget_status,
                status.campaign_id.as_bytes(),
                &doc,
                None,
            );
        }
    }

    /// Logs a served ad (with its features) to `ads.served`, keyed by request.
    pub fn served(&self, served: &adstream_operators::records::Served) {
        if let Ok(doc) = serde_json::to_vec(served) {
            self.send(
                &self.topics.served,
                served.request_id.as_bytes(),
                &doc,
                None,
            );
        }
    }

    /// Writes a report row (an upsert) to `topic`.
    pub fn report(
        &self,
        topic: &str,
        row: &adstream_operators::report::ReportRow,
        receipt: Option<&Receipt>,
    ) {
        self.send(
            topic,
            row.key.as_bytes(),
            row.value.to_string().as_bytes(),
            receipt,
        );
    }

    /// Waits (at most `timeout`) for the backlog and the producer's queue to be delivered;
    /// what is left is counted as `undelivered` and logged.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.shared.backlog.lock().is_ok_and(|b| !b.is_empty()) && Instant::now() < deadline {
            self.shared.wake.notify_one();
            std::thread::sleep(Duration::from_millis(5));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = self.producer.flush(left) {
            tracing::error!(error = %e, "producer flush incomplete");
        }
        if let Ok(mut backlog) = self.shared.backlog.lock() {
            while let Some(r) = backlog.pop() {
                self.shared
                    .fail(&r.topic, "stopped", "undelivered", &r.meta);
            }
        }
        // Records still in librdkafka's queue are purged when the producer is dropped; the
        // delivery callback counts them as `undelivered`.
        let in_producer = self.shared.in_producer.load(Ordering::Acquire);
        if in_producer > 0 {
            tracing::error!(
                records = in_producer,
                "output records undelivered at shutdown"
            );
        }
    }
}

/// Moves backlog records into the producer as its queue frees up, oldest first, until the
/// sinks are dropped.
fn drain_backlog(producer: Weak<ThreadedProducer<OutputContext>>, shared: Weak<Shared>) {
    loop {
        let (Some(producer), Some(s)) = (producer.upgrade(), shared.upgrade()) else {
            return;
        };
        let Ok(mut backlog) = s.backlog.lock() else {
            return;
        };
        let mut full = false;
        while let Some(r) = backlog.pop() {
            let mut record = BaseRecord::with_opaque_to(&r.topic, r.meta)
                .key(&r.key)
                .payload(&r.payload);
            if let Some(h) = owned_headers(&r.headers) {
                record = record.headers(h);
            }
            s.in_producer.fetch_add(1, Ordering::AcqRel);
            match producer.send(record) {
                Ok(()) => {}
                Err((e, record)) => {
                    s.in_producer.fetch_sub(1, Ordering::AcqRel);
                    let meta = record.delivery_opaque;
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) {
                        backlog.unpop(Waiting {
                            topic: r.topic,
                            key: r.key,
                            payload: r.payload,
                            headers: r.headers,
                            meta,
                        });
                        full = true;
                        break;
                    }
                    let why = e.rdkafka_error_code().map_or_else(|| e.to_string(), reason);
                    s.fail(&r.topic, &why, "failed", &meta);
                }
            }
        }
        let in_backlog = backlog.len();
        s.update(in_backlog);
        let wait = if full {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(200)
        };
        drop(producer);
        // Sleeps until a record joins the backlog (or a little while, to retry a full queue
        // and to notice that the sinks are gone).
        let _ = s.wake.wait_timeout(backlog, wait);
    }
}
