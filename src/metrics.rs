//! Prometheus metrics of a process, served at `GET /metrics`.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use adstream_operators::ranker::trainer::TrainerStatus;

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
    /// The version serving in this process (0: the prior).
    pub model_live_version: IntGauge,
    /// From a click to a model trained on it serving here, by the newest and oldest click
    /// of the version.
    pub model_click_to_live_seconds: HistogramVec,
    /// Progressive-validation quality of the model in training, by task and measure.
    pub model_quality: GaugeVec,
    /// Examples trained on since start.
    pub model_examples: IntGauge,
    /// Examples dropped because the trainer's queue was full.
    pub model_examples_dropped: IntGauge,
    /// Training throughput.
    pub model_examples_per_second: Gauge,
    /// Failed training steps and snapshots.
    pub model_training_errors: IntGauge,
    /// Label join outcomes (examples by label, late clicks, evictions...).
    pub labels: IntCounterVec,
    /// Events offered to the reports, by outcome (`counted`, `duplicate`, `late`, `partly_late`).
    pub report_events: IntCounterVec,
    /// Report rows published, by report and state (`open` or `final`).
    pub report_rows: IntCounterVec,
    /// Ad requests answered, by outcome (`filled`, `no_fill`, `overloaded`, `bad_request`).
    pub requests: IntCounterVec,
    /// Ad requests not bid on, by OpenRTB no-bid reason code (`nbr`).
    pub no_bids: IntCounterVec,
    /// Impressions left out of an auction, by reason (`unknown_currency`).
    pub skipped_imps: IntCounterVec,
    /// Billing notices (`GET /v1/billing`), by outcome (`published`, `repeat`, `refused`,
    /// `failed`).
    pub billing_notices: IntCounterVec,
    /// From receiving an ad request to answering it, seconds (every outcome).
    pub serving_latency_seconds: Histogram,
    /// Messages behind the high watermark, per input partition this process reads.
    pub consumer_lag: IntGaugeVec,
    /// Seconds since the last checkpoint write (set when scraped).
    pub checkpoint_age_seconds: Gauge,
    /// Spend today over the daily budget, per campaign (set when scraped).
    pub budget_utilisation: GaugeVec,
    /// Micros of charged billing events, by billing type and part: `billed` to the advertiser,
    /// or `overdelivery` (delivered past the budget, free to the advertiser).
    pub charged_micros: IntCounterVec,
    /// Open connections to the HTTP API.
    pub http_connections: IntGauge,
    /// API connections the server closed, by reason (`header_timeout`, `idle_timeout`,
    /// `overloaded`: beyond `api.max_connections`, answered 503; `shutdown`: still open at the
    /// end of the shutdown grace).
    pub http_connections_closed: IntCounterVec,
    /// Output records by topic and outcome: `delivered`, `failed` (for good), `dropped` (the
    /// backlog was full), `retried`, `undelivered` (left at shutdown), `already_published`
    /// (a dead letter an earlier run published).
    pub output_records: IntCounterVec,
    /// Output records that failed, by topic and reason (librdkafka's error, snake_case).
    pub output_failures: IntCounterVec,
    /// Output records not settled yet, by stage (`producer`: in librdkafka's queue or in
    /// flight; `backlog`: waiting for room in that queue).
    pub output_pending: IntGaugeVec,
    /// Input messages deleted (retention) before they were read, per partition.
    pub offsets_lost: IntCounterVec,
    /// 1 while the brokers answer, 0 while they do not.
    pub broker_reachable: IntGauge,
    /// Partitions of each input topic, as last seen in the brokers' metadata.
    pub input_partitions: IntGaugeVec,
    families: Vec<String>,
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
        let model_live_version = IntGauge::new(
            "model_live_version",
            "Model version serving in this process (0: the per-campaign prior)",
        )
        .expect("valid");
        let model_click_to_live_seconds = HistogramVec::new(
            HistogramOpts::new(
                "model_click_to_live_seconds",
                "From a click to a model trained on it serving, by the version's oldest and newest click",
            )
            .buckets(vec![1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0]),
            &["click"],
        )
        .expect("valid");
        let model_quality = GaugeVec::new(
            Opts::new(
                "model_quality",
                "Progressive validation of the model in training over its rolling window",
            ),
            &["task", "measure"],
        )
        .expect("valid");
        let model_examples =
            IntGauge::new("model_examples_trained", "Examples trained on since start")
                .expect("valid");
        let model_examples_dropped = IntGauge::new(
            "model_examples_dropped",
            "Examples dropped because the trainer's queue was full",
        )
        .expect("valid");
        let model_examples_per_second =
            Gauge::new("model_examples_per_second", "Training throughput").expect("valid");
        let model_training_errors = IntGauge::new(
            "model_training_errors",
            "Failed training steps and snapshots",
        )
        .expect("valid");
        let labels = IntCounterVec::new(
            Opts::new("labels_total", "Label join outcomes, by kind"),
            &["kind"],
        )
        .expect("valid");
        let report_events = IntCounterVec::new(
            Opts::new(
                "report_events_total",
                "Events offered to the reports, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid");
        let report_rows = IntCounterVec::new(
            Opts::new(
                "report_rows_total",
                "Report rows published, by report and state",
            ),
            &["report", "state"],
        )
        .expect("valid");
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Ad requests answered, by outcome"),
            &["outcome"],
        )
        .expect("valid");
        let no_bids = IntCounterVec::new(
            Opts::new(
                "no_bids_total",
                "Ad requests not bid on, by OpenRTB no-bid reason code",
            ),
            &["nbr"],
        )
        .expect("valid");
        let skipped_imps = IntCounterVec::new(
            Opts::new(
                "skipped_imps_total",
                "Impressions left out of an auction, by reason",
            ),
            &["reason"],
        )
        .expect("valid");
        let billing_notices = IntCounterVec::new(
            Opts::new("billing_notices_total", "Billing notices, by outcome"),
            &["outcome"],
        )
        .expect("valid");
        let serving_latency_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "serving_latency_seconds",
                "From receiving an ad request to answering it",
            )
            .buckets(vec![
                0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
            ]),
        )
        .expect("valid");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "consumer_lag",
                "Messages behind the high watermark, per input partition read here",
            ),
            &["topic", "partition"],
        )
        .expect("valid");
        let checkpoint_age_seconds = Gauge::new(
            "checkpoint_age_seconds",
            "Seconds since the last checkpoint write",
        )
        .expect("valid");
        let budget_utilisation = GaugeVec::new(
            Opts::new(
                "budget_utilisation",
                "Spend today over the daily budget, per campaign",
            ),
            &["campaign"],
        )
        .expect("valid");
        let charged_micros = IntCounterVec::new(
            Opts::new(
                "charged_micros_total",
                "Micros of charged billing events, by billing type and part (billed or overdelivery: past the budget, free to the advertiser)",
            ),
            &["billing", "part"],
        )
        .expect("valid");
        let http_connections =
            IntGauge::new("http_connections", "Open connections to the HTTP API").expect("valid");
        let http_connections_closed = IntCounterVec::new(
            Opts::new(
                "http_connections_closed_total",
                "API connections the server closed, by reason",
            ),
            &["reason"],
        )
        .expect("valid");
        let output_records = IntCounterVec::new(
            Opts::new(
                "output_records_total",
                "Output records, by topic and outcome",
            ),
            &["topic", "outcome"],
        )
        .expect("valid");
        let output_failures = IntCounterVec::new(
            Opts::new(
                "output_failures_total",
                "Output records that failed, by topic and reason",
            ),
            &["topic", "reason"],
        )
        .expect("valid");
        let output_pending = IntGaugeVec::new(
            Opts::new(
                "output_pending_records",
                "Output records not delivered yet, by stage (producer, backlog)",
            ),
            &["stage"],
        )
        .expect("valid");
        let offsets_lost = IntCounterVec::new(
            Opts::new(
                "offsets_lost_total",
                "Input messages deleted by retention before they were read, per partition",
            ),
            &["topic", "partition"],
        )
        .expect("valid");
        let broker_reachable = IntGauge::new(
            "broker_reachable",
            "1 while the Kafka brokers answer, 0 while they do not",
        )
        .expect("valid");
        let input_partitions = IntGaugeVec::new(
            Opts::new("input_partitions", "Partitions of each input topic"),
            &["topic"],
        )
        .expect("valid");
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(http_connections.clone()),
            Box::new(http_connections_closed.clone()),
            Box::new(charged_micros.clone()),
            Box::new(output_records.clone()),
            Box::new(output_failures.clone()),
            Box::new(output_pending.clone()),
            Box::new(offsets_lost.clone()),
            Box::new(broker_reachable.clone()),
            Box::new(input_partitions.clone()),
            Box::new(report_events.clone()),
            Box::new(report_rows.clone()),
            Box::new(requests.clone()),
            Box::new(no_bids.clone()),
            Box::new(skipped_imps.clone()),
            Box::new(billing_notices.clone()),
            Box::new(serving_latency_seconds.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(checkpoint_age_seconds.clone()),
            Box::new(budget_utilisation.clone()),
            Box::new(model_live_version.clone()),
            Box::new(model_click_to_live_seconds.clone()),
            Box::new(model_quality.clone()),
            Box::new(model_examples.clone()),
            Box::new(model_examples_dropped.clone()),
            Box::new(model_examples_per_second.clone()),
            Box::new(model_training_errors.clone()),
            Box::new(labels.clone()),
            Box::new(events.clone()),
            Box::new(dead_letters.clone()),
            Box::new(checkpoint_seconds.clone()),
            Box::new(checkpoint_entries.clone()),
            Box::new(checkpoint_last_ms.clone()),
            Box::new(campaigns.clone()),
            Box::new(ingest_delay_seconds.clone()),
        ];
        let mut families = Vec::new();
        for c in collectors {
            families.extend(c.desc().iter().map(|d| format!("adstream_{}", d.fq_name)));
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            charged_micros,
            events,
            dead_letters,
            checkpoint_seconds,
            checkpoint_entries,
            checkpoint_last_ms,
            campaigns,
            ingest_delay_seconds,
            model_live_version,
            model_click_to_live_seconds,
            model_quality,
            model_examples,
            model_examples_dropped,
            model_examples_per_second,
            model_training_errors,
            labels,
            report_events,
            report_rows,
            requests,
            no_bids,
            skipped_imps,
            billing_notices,
            serving_latency_seconds,
            consumer_lag,
            checkpoint_age_seconds,
            budget_utilisation,
            http_connections,
            http_connections_closed,
            output_records,
            output_failures,
            output_pending,
            offsets_lost,
            broker_reachable,
            input_partitions,
            families,
        }
    }

    /// Every metric family this process exports (`adstream_...`), whether it has samples yet
    /// or not (dashboards and alerts are checked against this list).
    pub fn families(&self) -> Vec<String> {
        let mut names = self.families.clone();
        names.sort();
        names
    }

    /// Copies the trainer's latest status into the model gauges.
    pub fn observe_trainer(&self, status: &TrainerStatus, dropped: u64) {
        self.model_examples.set(status.examples as i64);
        self.model_examples_dropped.set(dropped as i64);
        self.model_examples_per_second
            .set(status.examples_per_second);
        self.model_training_errors.set(status.errors as i64);
        for (task, m) in [("click", &status.click), ("conversion", &status.conversion)] {
            for (measure, value) in [
                ("auc", m.auc),
                ("log_loss", m.log_loss),
                ("normalised_entropy", m.normalised_entropy),
                ("calibration", m.calibration),
            ] {
                if let Some(v) = value {
                    self.model_quality
                        .with_label_values(&[task, measure])
                        .set(v);
                }
            }
        }
    }

    /// Dead letters counted so far, by reason (every reason listed, zeros included).
    pub fn dead_letters_by_reason(&self) -> std::collections::BTreeMap<String, u64> {
        adstream_operators::records::Reason::ALL
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
