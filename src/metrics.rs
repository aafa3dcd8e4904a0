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
        let process = Registry::new();
        process
            .register(Box::new(process::ProcessCollector::new()))
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

/// The standard `process_*` families, read from `/proc/self` when scraped (Linux; elsewhere
/// they are absent).
mod process {
    use prometheus::core::{Collector, Desc};
    use prometheus::proto::MetricFamily;
    use prometheus::{Counter, Gauge};

    /// Clock ticks per second of `/proc/*/stat`'s times: `USER_HZ`, fixed at 100 by the
    /// Linux ABI.
    const TICKS_PER_SECOND: f64 = 100.0;

    /// `process_cpu_seconds_total`, memory, file descriptors, threads and start time.
    pub struct ProcessCollector {
        cpu: Counter,
        resident: Gauge,
        virtual_memory: Gauge,
        open_fds: Gauge,
        max_fds: Gauge,
        threads: Gauge,
        start_time: Gauge,
        descs: Vec<Desc>,
    }

    impl ProcessCollector {
        pub fn new() -> Self {
            let cpu = Counter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )
            .expect("valid");
            let gauge = |name: &str, help: &str| Gauge::new(name, help).expect("valid");
            let resident = gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            );
            let virtual_memory = gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            );
            let open_fds = gauge("process_open_fds", "Number of open file descriptors.");
            let max_fds = gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            );
            let threads = gauge("process_threads", "Number of OS threads in the process.");
            let start_time = gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            );
            let descs = [
                cpu.desc(),
                resident.desc(),
                virtual_memory.desc(),
                open_fds.desc(),
                max_fds.desc(),
                threads.desc(),
                start_time.desc(),
            ]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
            ProcessCollector {
                cpu,
                resident,
                virtual_memory,
                open_fds,
                max_fds,
                threads,
                start_time,
                descs,
            }
        }
    }

    /// What `/proc/self` says now (`None` for what cannot be read).
    #[derive(Debug, Default, PartialEq)]
    struct Sample {
        cpu_seconds: Option<f64>,
        resident_bytes: Option<f64>,
        virtual_bytes: Option<f64>,
        threads: Option<f64>,
        start_time: Option<f64>,
        open_fds: Option<f64>,
        max_fds: Option<f64>,
    }

    /// The fields of `/proc/PID/stat` after the command name (field 3, the state, is `[0]`).
    fn stat_fields(stat: &str) -> Vec<&str> {
        stat.rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default()
    }

    /// `key:   N kB` of `/proc/PID/status`, in bytes.
    fn status_kib(status: &str, key: &str) -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kib: f64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024.0)
    }

    fn sample() -> Sample {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let mut out = Sample::default();
        if let Some(stat) = read("/proc/self/stat") {
            let fields = stat_fields(&stat);
            let number = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            // utime and stime are fields 14 and 15, starttime 22 (1-based).
            if let (Some(user), Some(system)) = (number(11), number(12)) {
                out.cpu_seconds = Some((user + system) / TICKS_PER_SECOND);
            }
            let boot = read("/proc/stat").and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
            });
            if let (Some(boot), Some(start)) = (boot, number(19)) {
                out.start_time = Some(boot + start / TICKS_PER_SECOND);
            }
        }
        if let Some(status) = read("/proc/self/status") {
            out.resident_bytes = status_kib(&status, "VmRSS:");
            out.virtual_bytes = status_kib(&status, "VmSize:");
            out.threads = status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok());
        }
        out.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as f64);
        out.max_fds = read("/proc/self/limits").and_then(|limits| {
            limits
                .lines()
                .find_map(|l| l.strip_prefix("Max open files")?.split_whitespace().next())
                .and_then(|soft| soft.parse().ok())
        });
        out
    }

    impl Collector for ProcessCollector {
        fn desc(&self) -> Vec<&Desc> {
            self.descs.iter().collect()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let now = sample();
            let mut families = Vec::new();
            if let Some(cpu) = now.cpu_seconds {
                let seen = self.cpu.get();
                if cpu > seen {
                    self.cpu.inc_by(cpu - seen);
                }
                families.extend(self.cpu.collect());
            }
            for (gauge, value) in [
                (&self.resident, now.resident_bytes),
                (&self.virtual_memory, now.virtual_bytes),
                (&self.open_fds, now.open_fds),
                (&self.max_fds, now.max_fds),
                (&self.threads, now.threads),
                (&self.start_time, now.start_time),
            ] {
                if let Some(v) = value {
                    gauge.set(v);
                    families.extend(gauge.collect());
                }
            }
            families
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stat_fields_start_after_the_command_name() {
            // A command name with spaces and parentheses.
            let stat =
                "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1234 1000 200";
            let fields = stat_fields(stat);
            assert_eq!(fields[0], "S");
            assert_eq!(fields[11], "250", "utime");
            assert_eq!(fields[12], "50", "stime");
            assert_eq!(fields[19], "1234", "starttime");
            assert_eq!(
                status_kib("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"),
                Some(2_097_152.0)
            );
        }

        #[cfg(target_os = "linux")]
        #[test]
        fn this_process_is_sampled() {
            let s = sample();
            assert!(s.resident_bytes.is_some_and(|b| b > 0.0), "{s:?}");
            assert!(s.open_fds.is_some_and(|n| n >= 1.0), "{s:?}");
            assert!(s.start_time.is_some_and(|t| t > 1.6e9), "{s:?}");
            assert!(s.cpu_seconds.is_some(), "{s:?}");
        }
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
