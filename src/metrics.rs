//! Prometheus metrics of a process, served at `GET /metrics`.
//!
//! Named by Prometheus's conventions: every family is `adstream_*`, counters end in `_total`
//! and only go up, times are `*_timestamp_seconds` since the epoch, sizes and durations carry
//! their base unit (`_bytes`, `_seconds`). `adstream_build_info` is 1 with the version in its
//! labels, and the standard `process_*` families (CPU, memory, file descriptors, start time)
//! come from `/proc/self` on Linux. Label values are bounded (stream, topic, partition,
//! reason, outcome...); the one family with a label per campaign,
//! `adstream_budget_utilisation`, is exported only when `[metrics] per_campaign = true`.

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
    /// When the last checkpoint write finished, seconds since the epoch.
    pub last_checkpoint_timestamp_seconds: Gauge,
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
    pub model_examples: IntCounter,
    /// Examples dropped because the trainer's queue was full.
    pub model_examples_dropped: IntCounter,
    /// Training throughput.
    pub model_examples_per_second: Gauge,
    /// Failed training steps and snapshots.
    pub model_training_errors: IntCounter,
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
    /// Spend today over the daily budget, per campaign (set when scraped, and only with
    /// `[metrics] per_campaign = true`: one series per campaign).
    pub budget_utilisation: GaugeVec,
    /// Campaigns whose spend today has reached their daily budget (set when scraped).
    pub campaigns_budget_spent: IntGauge,
    /// 1, with the build in its labels (`version`, `features`).
    pub build_info: IntGaugeVec,
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
    /// The `process_*` families, without the `adstream_` prefix.
    process: Registry,
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
        let last_checkpoint_timestamp_seconds = Gauge::new(
            "last_checkpoint_timestamp_seconds",
            "When the last checkpoint write finished, seconds since the epoch",
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
        let model_examples = IntCounter::new(
            "model_examples_trained_total",
            "Examples trained on since start",
        )
        .expect("valid");
        let model_examples_dropped = IntCounter::new(
            "model_examples_dropped_total",
            "Examples dropped because the trainer's queue was full",
        )
        .expect("valid");
        let model_examples_per_second =
            Gauge::new("model_examples_per_second", "Training throughput").expect("valid");
        let model_training_errors = IntCounter::new(
            "model_training_errors_total",
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
                "Spend today over the daily budget, per campaign (only with [metrics] per_campaign = true)",
            ),
            &["campaign"],
        )
        .expect("valid");
        let campaigns_budget_spent = IntGauge::new(
            "campaigns_budget_spent",
            "Campaigns whose spend today has reached their daily budget",
        )
        .expect("valid");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "build_info",
                "1, with the version and the cargo features of this build in its labels",
            ),
            &["version", "features"],
        )
        .expect("valid");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), BUILD_FEATURES])
            .set(1);
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
            Box::new(campaigns_budget_spent.clone()),
            Box::new(build_info.clone()),
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
            Box::new(last_checkpoint_timestamp_seconds.clone()),
            Box::new(campaigns.clone()),
            Box::new(ingest_delay_seconds.clone()),
        ];
        let mut families = Vec::new();
        for c in collectors {
            families.extend(c.desc().iter().map(|d| format!("adstream_{}", d.fq_name)));
            registry.register(c).expect("metric names are unique");
        }
        // prometheus's own collector of the standard `process_*` families (CPU, memory, file
        // descriptors, threads, start time), read from procfs at each scrape (Linux).
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        process
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("one process collector");
        Metrics {
            registry,
            charged_micros,
            events,
            dead_letters,
            checkpoint_seconds,
            checkpoint_entries,
            last_checkpoint_timestamp_seconds,
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
            campaigns_budget_spent,
            build_info,
            http_connections,
            http_connections_closed,
            output_records,
            output_failures,
            output_pending,
            offsets_lost,
            broker_reachable,
            input_partitions,
            families,
            process,
        }
    }

    /// Every metric family this process exports (`adstream_...`), whether it has samples yet
    /// or not (dashboards and alerts are checked against this list).
    pub fn families(&self) -> Vec<String> {
        let mut names = self.families.clone();
        names.sort();
        names
    }

    /// Counts a checkpoint write of `entries` entries that took `took`, finished now.
    pub fn checkpoint_written(&self, entries: usize, took: std::time::Duration) {
        self.checkpoint_seconds.observe(took.as_secs_f64());
        self.checkpoint_entries.inc_by(entries as u64);
        self.last_checkpoint_timestamp_seconds.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
    }

    /// Copies the trainer's latest status into the model families (its totals only grow:
    /// the counters are raised to them).
    pub fn observe_trainer(&self, status: &TrainerStatus, dropped: u64) {
        raise(&self.model_examples, status.examples);
        raise(&self.model_examples_dropped, dropped);
        self.model_examples_per_second
            .set(status.examples_per_second);
        raise(&self.model_training_errors, status.errors);
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

    /// The text exposition format: the `adstream_*` families, then the `process_*` ones.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// The cargo features this binary was built with (the `features` label of `build_info`).
const BUILD_FEATURES: &str = match (cfg!(feature = "sim"), cfg!(feature = "cuda")) {
    (true, true) => "sim,cuda",
    (true, false) => "sim",
    (false, true) => "cuda",
    (false, false) => "",
};

/// Raises `counter` to `total`, a total kept elsewhere that only grows.
fn raise(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family follows the conventions: a gauge never ends in `_total`, every counter
    /// does; `adstream_build_info` is 1 with the version; the `process_*` families are there.
    #[test]
    fn families_follow_the_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics.model_examples.inc();
        let mut families = metrics.registry.gather();
        families.extend(metrics.process.gather());
        let mut names = Vec::new();
        for family in &families {
            let name = family.name();
            match family.get_field_type() {
                prometheus::proto::MetricType::GAUGE => {
                    assert!(!name.ends_with("_total"), "gauge {name}");
                    assert!(!name.ends_with("_ms"), "gauge {name}: times in seconds");
                }
                prometheus::proto::MetricType::COUNTER => {
                    assert!(name.ends_with("_total"), "counter {name}")
                }
                _ => {}
            }
            names.push(name.to_string());
        }
        let text = metrics.render();
        let info = format!(
            "adstream_build_info{{features=\"{BUILD_FEATURES}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.lines().any(|l| l == info), "{text}");
        if cfg!(target_os = "linux") {
            for family in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_start_time_seconds",
            ] {
                assert!(names.iter().any(|n| n == family), "{family}: {names:?}");
                assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
            }
        }
        // Every adstream family is listed for the dashboards and alerts.
        for name in names.iter().filter(|n| n.starts_with("adstream_")) {
            assert!(metrics.families().contains(name), "{name}");
        }
        for old in [
            "adstream_model_examples_trained",
            "adstream_checkpoint_last_write_ms",
        ] {
            assert!(!metrics.families().iter().any(|f| f == old), "{old}");
        }
    }

    #[test]
    fn trainer_totals_raise_the_counters() {
        let metrics = Metrics::new();
        let mut status = TrainerStatus {
            examples: 10,
            ..TrainerStatus::default()
        };
        metrics.observe_trainer(&status, 3);
        status.examples = 25;
        metrics.observe_trainer(&status, 2);
        assert_eq!(metrics.model_examples.get(), 25);
        assert_eq!(metrics.model_examples_dropped.get(), 3);
    }
}
