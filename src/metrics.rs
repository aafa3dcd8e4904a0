//! Prometheus metrics of a process, served at `GET /metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the process exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Messages read, by input stream and outcome (`accepted` or `dead`).
    pub events: IntCounterVec,
    /// Dead letters, by reason.
    pub dead_letters: IntCounterVec,
    /// Checkpoint writes (group commits).
    pub checkpoint_seconds: Histogram,
    /// Entries written per checkpoint write.
    pub checkpoint_entries: IntCounter,
    /// Milliseconds since the epoch of the last checkpoint write.
    pub checkpoint_last_ms: IntGauge,
    /// Delay from a message's Kafka timestamp to its decoding in the pipeline.
    pub ingest_delay_seconds: Histogram,
    /// Campaigns in the live view.
    pub campaigns: IntGauge,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("adstream".into()), None).expect("static prefix is valid");
        let events = IntCounterVec::new(
            Opts::new("events_total", "Messages read, by input stream and outcome"),
            &["stream", "outcome"],
        )
        .expect("valid");
        let dead_letters = IntCounterVec::new(
            Opts::new("dead_letters_total", "Refused messages, by reason"),
            &["reason"],
        )
        .expect("valid");
        let checkpoint_seconds = Histogram::with_opts(
            HistogramOpts::new("checkpoint_write_seconds", "Duration of checkpoint writes")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ]),
        )
        .expect("valid");
        let checkpoint_entries = IntCounter::new(
            "checkpoint_entries_total",
            "State entries written by checkpoints",
        )
        .expect("valid");
        let checkpoint_last_ms = IntGauge::new(
            "checkpoint_last_write_ms",
            "Time of the last checkpoint write, ms since the epoch",
        )
        .expect("valid");
        let ingest_delay_seconds = Histogram::with_opts(
            HistogramOpts::new("ingest_delay_seconds", "Kafka timestamp to decode, seconds")
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
        )
        .expect("valid");
        let campaigns =
            IntGauge::new("campaigns", "Campaigns known to this process").expect("valid");
        for c in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dead_letters.clone()),
            Box::new(checkpoint_seconds.clone()),
            Box::new(checkpoint_entries.clone()),
            Box::new(checkpoint_last_ms.clone()),
            Box::new(campaigns.clone()),
            Box::new(ingest_delay_seconds.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            events,
            dead_letters,
            checkpoint_seconds,
            checkpoint_entries,
            checkpoint_last_ms,
            campaigns,
            ingest_delay_seconds,
        }
    }

    /// Dead letters counted so far, by reason (every reason listed, zeros included).
    pub fn dead_letters_by_reason(&self) -> std::collections::BTreeMap<String, u64> {
        adstream_operators::ingest::Reason::ALL
            .iter()
            .map(|r| {
                let n = self.dead_letters.with_label_values(&[r.as_str()]).get();
                (r.as_str().to_string(), n)
            })
            .collect()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
