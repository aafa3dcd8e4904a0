//! Pipeline files: the declarative description of one adstream deployment.
//!
//! A pipeline file is TOML ([`Pipeline`]). Unknown keys are errors, and every error names the
//! file, the line and the field (`pipelines/ads.toml:12:1: field `checkpoint.interval_ms`: ...`).
//! Secrets are never written in the file itself when it is shared: `env:NAME` and `file:PATH`
//! indirections are resolved at start-up and the value is never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use adstream_operators::records::StreamId;
use adstream_operators::report::{Dimension, Measure, ReportSpec, SpecError};

/// An error in a pipeline file, located.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct PipelineError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

/// The whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Identity, secret, state and parallelism.
    pub pipeline: PipelineSection,
    /// Kafka connection.
    pub kafka: KafkaSection,
    /// Topic names and layout.
    #[serde(default)]
    pub topics: TopicsSection,
    /// Event-time handling.
    #[serde(default)]
    pub time: TimeSection,
    /// Checkpoints.
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    /// Readiness and the Kafka monitor.
    #[serde(default)]
    pub health: HealthSection,
    /// Charging rules.
    #[serde(default)]
    pub billing: BillingSection,
    /// Conversion attribution.
    #[serde(default)]
    pub attribution: AttributionSection,
    /// HTTP API.
    #[serde(default)]
    pub api: ApiSection,
    /// Ad serving.
    #[serde(default)]
    pub serving: ServingSection,
    /// Budget pacing.
    #[serde(default)]
    pub pacing: PacingSection,
    /// The label join.
    #[serde(default)]
    pub labels: LabelsSection,
    /// The online ranker.
    #[serde(default)]
    pub model: ModelSection,
    /// Reporting topics.
    #[serde(default)]
    pub reporting: ReportingSection,
}

/// `[reporting]`: the aggregates published on `report.*` topics (`operators/src/report`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportingSection {
    /// Keep and publish reports (false: no reporting operators run).
    pub enabled: Spanned<bool>,
    /// The reports (`[[reporting.reports]]`); absent: campaign × minute, advertiser × hour and
    /// country × device × hour with every measure.
    pub reports: Option<Vec<ReportEntry>>,
}

impl Default for ReportingSection {
    fn default() -> Self {
        ReportingSection {
            enabled: spanned(true),
            reports: None,
        }
    }
}

/// One `[[reporting.reports]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportEntry {
    /// Name (`[a-z0-9_]+`), in every row.
    pub name: Spanned<String>,
    /// Topic (default `report.<name>`).
    pub topic: Option<Spanned<String>>,
    /// Group-by fields: `campaign_id`, `advertiser_id`, `ad_id`, `country`, `device`, `billing`.
    pub dimensions: Spanned<Vec<Spanned<String>>>,
    /// Tumbling window, ms.
    pub window_ms: Spanned<i64>,
    /// A window is final this long after its end, ms (default: one window).
    pub final_after_ms: Option<Spanned<i64>>,
    /// Changed rows are re-published at most this often in event time, ms (default 1000).
    pub update_ms: Option<Spanned<i64>>,
    /// Columns (default: every measure).
    pub measures: Option<Spanned<Vec<Spanned<String>>>>,
}

type FieldError = (std::ops::Range<usize>, String);

impl ReportEntry {
    fn spec(&self, field: &str) -> Result<ReportSpec, FieldError> {
        let named = |span: std::ops::Range<usize>, e: String| (span, format!("field `{field}.{e}"));
        let mut dimensions = Vec::new();
        for d in self.dimensions.get_ref() {
            dimensions.push(
                Dimension::parse(d.get_ref())
                    .map_err(|e| named(d.span(), format!("dimensions`: {e}")))?,
            );
        }
        let measures = match &self.measures {
            None => Measure::ALL.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for m in list.get_ref() {
                    out.push(
                        Measure::parse(m.get_ref())
                            .map_err(|e| named(m.span(), format!("measures`: {e}")))?,
                    );
                }
                out
            }
        };
        let window_ms = *self.window_ms.get_ref();
        let spec = ReportSpec {
            name: self.name.get_ref().clone(),
            topic: self.topic.as_ref().map_or_else(
                || format!("report.{}", self.name.get_ref()),
                |t| t.get_ref().clone(),
            ),
            dimensions,
            window_ms,
            final_after_ms: self
                .final_after_ms
                .as_ref()
                .map_or(window_ms, |f| *f.get_ref()),
            update_ms: self.update_ms.as_ref().map_or(1_000, |u| *u.get_ref()),
            measures,
        };
        spec.validate().map_err(|e| {
            let span = match &e {
                SpecError::Invalid { field: "name", .. } => self.name.span(),
                SpecError::Invalid { field: "topic", .. } => {
                    self.topic.as_ref().map_or(self.name.span(), |t| t.span())
                }
                SpecError::Invalid {
                    field: "dimensions",
                    ..
                } => self.dimensions.span(),
                SpecError::Invalid {
                    field: "measures", ..
                } => self
                    .measures
                    .as_ref()
                    .map_or(self.name.span(), |m| m.span()),
                SpecError::Invalid {
                    field: "final_after_ms",
                    ..
                } => self
                    .final_after_ms
                    .as_ref()
                    .map_or(self.window_ms.span(), |f| f.span()),
                SpecError::Invalid {
                    field: "update_ms", ..
                } => self
                    .update_ms
                    .as_ref()
                    .map_or(self.window_ms.span(), |u| u.span()),
                _ => self.window_ms.span(),
            };
            named(span, e.to_string().replacen(": ", "`: ", 1))
        })?;
        Ok(spec)
    }
}

impl ReportingSection {
    /// The reports to run (none when disabled); errors name the entry and field.
    pub fn specs(&self) -> Result<Vec<ReportSpec>, FieldError> {
        if !*self.enabled.get_ref() {
            return Ok(Vec::new());
        }
        let Some(entries) = &self.reports else {
            return Ok(ReportSpec::defaults());
        };
        let mut specs: Vec<ReportSpec> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let spec = entry.spec(&format!("reporting.reports[{i}]"))?;
            if specs.iter().any(|s| s.name == spec.name) {
                return Err((
                    entry.name.span(),
                    format!(
                        "field `reporting.reports[{i}].name`: {:?} is declared twice",
                        spec.name
                    ),
                ));
            }
            if specs.iter().any(|s| s.topic == spec.topic) {
                return Err((
                    entry.topic.as_ref().map_or(entry.name.span(), |t| t.span()),
                    format!(
                        "field `reporting.reports[{i}].topic`: {:?} is used by two reports",
                        spec.topic
                    ),
                ));
            }
            specs.push(spec);
        }
        Ok(specs)
    }
}

fn spanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

/// `[labels]`: how served ads become labelled examples (`operators/src/labels`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsSection {
    /// A rendered ad without a click this long after its impression is a negative, ms.
    pub click_window_ms: Spanned<i64>,
    /// How long a served ad waits for its impression (and an outcome for its served record), ms.
    pub impression_wait_ms: Spanned<i64>,
    /// How long after its click a conversion still labels the example, ms.
    pub conversion_window_ms: Spanned<i64>,
    /// Most examples waiting for labels (oldest evicted beyond it).
    pub max_pending: Spanned<usize>,
}

impl Default for LabelsSection {
    fn default() -> Self {
        let d = adstream_operators::labels::LabelConfig::default();
        LabelsSection {
            click_window_ms: spanned(d.click_window_ms),
            impression_wait_ms: spanned(d.impression_wait_ms),
            conversion_window_ms: spanned(d.conversion_window_ms),
            max_pending: spanned(d.max_pending),
        }
    }
}

impl LabelsSection {
    /// The operator's configuration.
    pub fn config(&self) -> adstream_operators::labels::LabelConfig {
        adstream_operators::labels::LabelConfig {
            click_window_ms: *self.click_window_ms.get_ref(),
            impression_wait_ms: *self.impression_wait_ms.get_ref(),
            conversion_window_ms: *self.conversion_window_ms.get_ref(),
            max_pending: *self.max_pending.get_ref(),
        }
    }
}

/// `[model]`: the online DNN ranker (`operators/src/ranker`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Train and publish models (false: serving ranks with the per-campaign prior).
    pub enabled: Spanned<bool>,
    /// A feature spec file (default: the shipped `schemas/features.json`).
    pub features: Option<Spanned<String>>,
    /// `auto` (a CUDA GPU when built with `cuda` and present), `cpu` or `cuda`.
    pub device: Spanned<String>,
    /// Width of every embedding.
    pub embedding_dim: Spanned<usize>,
    /// DCN-v2 cross layers.
    pub cross_layers: Spanned<usize>,
    /// MLP hidden widths.
    pub hidden: Spanned<Vec<usize>>,
    /// AdamW step size.
    pub learning_rate: Spanned<f64>,
    /// AdamW decoupled weight decay (dense layers).
    pub weight_decay: Spanned<f64>,
    /// Examples per update.
    pub batch_size: Spanned<usize>,
    /// Weight of the conversion loss.
    pub conversion_weight: Spanned<f64>,
    /// How often a snapshot is judged for publishing, ms.
    pub snapshot_ms: Spanned<u64>,
    /// Examples per task in the progressive-validation window.
    pub validation_window: Spanned<usize>,
    /// Versions kept on disk.
    pub keep_versions: Spanned<usize>,
    /// Examples queued for the trainer before the graph drops them.
    pub queue: Spanned<usize>,
    /// Publish guards.
    pub guards: GuardsSection,
}

/// `[model.guards]`: when a new version may replace the live one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardsSection {
    /// Click-labelled examples a candidate is judged on, at least.
    pub min_examples: Spanned<usize>,
    /// Click positives among them, at least.
    pub min_positives: Spanned<usize>,
    /// Largest accepted AUC drop below the live model.
    pub max_auc_drop: Spanned<f64>,
    /// Accepted calibration range `[lo, hi]`.
    pub calibration: Spanned<Vec<f64>>,
    /// Largest accepted ratio of mean predictions, either way.
    pub max_prediction_shift: Spanned<f64>,
    /// Conversion positives before the conversion head is judged.
    pub min_conversion_positives: Spanned<usize>,
}

impl Default for GuardsSection {
    fn default() -> Self {
        let d = adstream_operators::ranker::guards::GuardConfig::default();
        GuardsSection {
            min_examples: spanned(d.min_examples),
            min_positives: spanned(d.min_positives),
            max_auc_drop: spanned(d.max_auc_drop),
            calibration: spanned(d.calibration.to_vec()),
            max_prediction_shift: spanned(d.max_prediction_shift),
            min_conversion_positives: spanned(d.min_conversion_positives),
        }
    }
}

impl Default for ModelSection {
    fn default() -> Self {
        let d = adstream_operators::ranker::trainer::TrainerConfig::default();
        ModelSection {
            enabled: spanned(true),
            features: None,
            device: spanned("auto".into()),
            embedding_dim: spanned(d.model.embedding_dim),
            cross_layers: spanned(d.model.cross_layers),
            hidden: spanned(d.model.hidden),
            learning_rate: spanned(d.optimizer.learning_rate),
            weight_decay: spanned(d.optimizer.weight_decay),
            batch_size: spanned(d.batch_size),
            conversion_weight: spanned(d.conversion_weight),
            snapshot_ms: spanned(d.snapshot_interval.as_millis() as u64),
            validation_window: spanned(d.validation_window),
            keep_versions: spanned(d.keep_versions),
            queue: spanned(d.queue),
            guards: GuardsSection::default(),
        }
    }
}

impl ModelSection {
    /// The trainer's configuration.
    pub fn config(&self) -> adstream_operators::ranker::trainer::TrainerConfig {
        use adstream_operators::ranker::trainer::{DevicePreference, TrainerConfig};
        let d = TrainerConfig::default();
        let g = &self.guards;
        let calibration = g.calibration.get_ref();
        TrainerConfig {
            model: adstream_operators::ranker::model::ModelConfig {
                embedding_dim: *self.embedding_dim.get_ref(),
                cross_layers: *self.cross_layers.get_ref(),
                hidden: self.hidden.get_ref().clone(),
            },
            optimizer: adstream_operators::ranker::optim::AdamWConfig {
                learning_rate: *self.learning_rate.get_ref(),
                weight_decay: *self.weight_decay.get_ref(),
                ..d.optimizer
            },
            batch_size: *self.batch_size.get_ref(),
            conversion_weight: *self.conversion_weight.get_ref(),
            snapshot_interval: std::time::Duration::from_millis(*self.snapshot_ms.get_ref()),
            validation_window: *self.validation_window.get_ref(),
            guards: adstream_operators::ranker::guards::GuardConfig {
                min_examples: *g.min_examples.get_ref(),
                min_positives: *g.min_positives.get_ref(),
                max_auc_drop: *g.max_auc_drop.get_ref(),
                calibration: [
                    calibration.first().copied().unwrap_or(0.0),
                    calibration.get(1).copied().unwrap_or(f64::MAX),
                ],
                max_prediction_shift: *g.max_prediction_shift.get_ref(),
                min_conversion_positives: *g.min_conversion_positives.get_ref(),
            },
            keep_versions: *self.keep_versions.get_ref(),
            device: match self.device.get_ref().as_str() {
                "cpu" => DevicePreference::Cpu,
                "cuda" => DevicePreference::Cuda,
                _ => DevicePreference::Auto,
            },
            queue: *self.queue.get_ref(),
            ..d
        }
    }

    /// The feature spec: the file named by `model.features`, or the shipped one.
    pub fn feature_spec(
        &self,
    ) -> Result<adstream_operators::ranker::features::FeatureSpec, String> {
        use adstream_operators::ranker::features::FeatureSpec;
        match &self.features {
            None => FeatureSpec::parse(adstream_operators::ranker::features::DEFAULT_SPEC)
                .map_err(|e| e.to_string()),
            Some(path) => {
                let text = std::fs::read_to_string(path.get_ref())
                    .map_err(|e| format!("reading {}: {e}", path.get_ref()))?;
                FeatureSpec::parse(&text).map_err(|e| format!("{}: {e}", path.get_ref()))
            }
        }
    }
}

/// `[pacing]`: the control law's settings (`operators/src/pacing`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacingSection {
    /// Throttle campaigns along their target curve (false: ASAP, only the budget gate holds
    /// them).
    pub enabled: Spanned<bool>,
    /// Slots per budget day of the traffic profile.
    pub slots: Spanned<usize>,
    /// Controller period, ms.
    pub interval_ms: Spanned<i64>,
    /// Catch-up horizon, ms.
    pub horizon_ms: Spanned<i64>,
    /// Lowest participation probability.
    pub min_pass: Spanned<f64>,
    /// Weight of the newest interval in the full-rate estimate.
    pub rate_smoothing: Spanned<f64>,
    /// Weight of the newest day in the traffic profile.
    pub profile_smoothing: Spanned<f64>,
    /// How long a reservation waits for its billing event, ms.
    pub reservation_ttl_ms: Spanned<i64>,
    /// How often changed pacing state is broadcast to serving, ms.
    pub publish_ms: Spanned<i64>,
    /// Mean delay from a CPA win to its conversion, ms.
    pub conversion_delay_ms: Spanned<i64>,
}

impl Default for PacingSection {
    fn default() -> Self {
        let d = adstream_operators::pacing::PacingConfig::default();
        PacingSection {
            enabled: Spanned::new(0..0, d.enabled),
            slots: Spanned::new(0..0, d.slots),
            interval_ms: Spanned::new(0..0, d.interval_ms),
            horizon_ms: Spanned::new(0..0, d.horizon_ms),
            min_pass: Spanned::new(0..0, d.min_pass),
            rate_smoothing: Spanned::new(0..0, d.rate_smoothing),
            profile_smoothing: Spanned::new(0..0, d.profile_smoothing),
            reservation_ttl_ms: Spanned::new(0..0, d.reservation_ttl_ms),
            publish_ms: Spanned::new(0..0, d.publish_ms),
            conversion_delay_ms: Spanned::new(0..0, d.conversion_delay_ms),
        }
    }
}

impl PacingSection {
    /// The operators' configuration.
    pub fn config(&self) -> adstream_operators::pacing::PacingConfig {
        adstream_operators::pacing::PacingConfig {
            enabled: *self.enabled.get_ref(),
            slots: *self.slots.get_ref(),
            interval_ms: *self.interval_ms.get_ref(),
            horizon_ms: *self.horizon_ms.get_ref(),
            min_pass: *self.min_pass.get_ref(),
            rate_smoothing: *self.rate_smoothing.get_ref(),
            profile_smoothing: *self.profile_smoothing.get_ref(),
            reservation_ttl_ms: *self.reservation_ttl_ms.get_ref(),
            publish_ms: *self.publish_ms.get_ref(),
            conversion_delay_ms: *self.conversion_delay_ms.get_ref(),
            ..adstream_operators::pacing::PacingConfig::default()
        }
    }
}

/// `[serving]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingSection {
    /// Pipeline-wide reserve price, CPM in currency units (the request's floor applies too).
    pub reserve_cpm: Spanned<f64>,
    /// At most this many campaigns of one advertiser reach ranking per request.
    pub per_advertiser: Spanned<usize>,
    /// At most this many candidates are scored per request.
    pub max_candidates: Spanned<usize>,
    /// Requests queued per worker before the API answers 503.
    pub queue: Spanned<usize>,
    /// Base of the billing notice URL (`burl`) returned with each win.
    pub burl_base: String,
}

impl Default for ServingSection {
    fn default() -> Self {
        ServingSection {
            reserve_cpm: Spanned::new(0..0, 0.01),
            per_advertiser: Spanned::new(0..0, 2),
            max_candidates: Spanned::new(0..0, 200),
            queue: Spanned::new(0..0, 1024),
            burl_base: "http://127.0.0.1:8080/v1/billing".into(),
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Name, used in consumer group ids and logs.
    pub name: Spanned<String>,
    /// Billing-token HMAC key: a literal, `env:NAME` or `file:PATH`.
    pub secret: Secret,
    /// Where RocksDB state lives (one sub-directory per process).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Timely worker threads per process.
    #[serde(default = "default_workers")]
    pub workers: Spanned<usize>,
    /// Lets the pipeline run with the shipped development secret ([`DEVELOPMENT_SECRET`]), which
    /// anyone can read in this repository and so sign billing tokens with. Off by default.
    #[serde(default)]
    pub allow_development_secret: bool,
}

/// The billing secret shipped in `pipelines/ads.toml`: fine for the demo and local tries, never
/// for real money, so `run` refuses it unless `allow_development_secret = true`.
pub const DEVELOPMENT_SECRET: &str = "dev-secret-change-me";

fn default_state_dir() -> PathBuf {
    PathBuf::from(".state")
}

fn default_workers() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}

/// `[kafka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap servers, `host:port,...`.
    pub brokers: Spanned<String>,
    /// Extra librdkafka properties (SASL/SSL settings pass through here); values may use `env:`
    /// or `file:` indirections.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, Secret>,
}

/// `[topics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsSection {
    /// Campaign definitions (compacted).
    pub campaigns: String,
    /// Impressions.
    pub impressions: String,
    /// Clicks.
    pub clicks: String,
    /// Conversions.
    pub conversions: String,
    /// Served ads with their features.
    pub served: String,
    /// Refused input.
    pub deadletter: String,
    /// Per-campaign budget status (compacted).
    pub budget_status: String,
    /// Partitions of topics that `topics create` makes.
    pub partitions: Spanned<i32>,
    /// Replication factor of topics that `topics create` makes.
    pub replication: Spanned<i32>,
}

impl Default for TopicsSection {
    fn default() -> Self {
        TopicsSection {
            campaigns: "ads.campaigns".into(),
            impressions: "ads.impressions".into(),
            clicks: "ads.clicks".into(),
            conversions: "ads.conversions".into(),
            served: "ads.served".into(),
            deadletter: "ads.deadletter".into(),
            budget_status: "budget.status".into(),
            partitions: Spanned::new(0..0, 4),
            replication: Spanned::new(0..0, 1),
        }
    }
}

impl TopicsSection {
    /// The topic an input stream is read from.
    pub fn input(&self, stream: StreamId) -> &str {
        match stream {
            StreamId::Campaigns => &self.campaigns,
            StreamId::Impressions => &self.impressions,
            StreamId::Clicks => &self.clicks,
            StreamId::Conversions => &self.conversions,
            StreamId::Served => &self.served,
        }
    }

    /// Every topic with whether it is compacted.
    pub fn all(&self) -> Vec<(&str, bool)> {
        vec![
            (&self.campaigns, true),
            (&self.impressions, false),
            (&self.clicks, false),
            (&self.conversions, false),
            (&self.served, false),
            (&self.deadletter, false),
            (&self.budget_status, true),
        ]
    }
}

/// `[time]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeSection {
    /// Granularity of dataflow timestamps, ms.
    pub tick_ms: Spanned<u64>,
    /// Allowed out-of-orderness, ms.
    pub lateness_ms: Spanned<i64>,
    /// Event times further in the future than this are clamped, ms.
    pub max_skew_ms: Spanned<i64>,
}

impl Default for TimeSection {
    fn default() -> Self {
        TimeSection {
            tick_ms: Spanned::new(0..0, 100),
            lateness_ms: Spanned::new(0..0, 2_000),
            max_skew_ms: Spanned::new(0..0, 60_000),
        }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Checkpoint interval, ms of event time.
    pub interval_ms: Spanned<u64>,
    /// fsync every checkpoint (survives power loss, not only process crashes).
    pub fsync: bool,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        CheckpointSection {
            interval_ms: Spanned::new(0..0, 1_000),
            fsync: false,
        }
    }
}

/// `[health]`: what `/readyz` holds a process to, and how often the brokers are asked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// How often the monitor probes the brokers, measures every partition's lag and looks for
    /// partitions added to the input topics, ms.
    pub interval_ms: Spanned<u64>,
    /// A broker request unanswered this long makes the process unready, ms.
    pub broker_timeout_ms: Spanned<u64>,
    /// A partition more messages than this behind its end makes the process unready.
    pub max_lag_messages: Spanned<i64>,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            interval_ms: Spanned::new(0..0, 1_000),
            broker_timeout_ms: Spanned::new(0..0, 5_000),
            max_lag_messages: Spanned::new(0..0, 100_000),
        }
    }
}

/// `[billing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSection {
    /// How long after the auction impressions may be charged, ms.
    pub impression_horizon_ms: Spanned<i64>,
    /// How long after the auction clicks may be charged, ms.
    pub event_horizon_ms: Spanned<i64>,
    /// How much earlier than its win's issue time a billing event may be stamped, ms.
    pub max_clock_skew_ms: Spanned<i64>,
    /// Larger messages are dead-lettered, bytes.
    pub max_message_bytes: Spanned<usize>,
}

impl Default for BillingSection {
    fn default() -> Self {
        BillingSection {
            impression_horizon_ms: Spanned::new(0..0, 3_600_000),
            event_horizon_ms: Spanned::new(0..0, 86_400_000),
            max_clock_skew_ms: Spanned::new(0..0, 60_000),
            max_message_bytes: Spanned::new(0..0, 64 * 1024),
        }
    }
}

/// `[attribution]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributionSection {
    /// Click-through window, ms.
    pub click_window_ms: Spanned<i64>,
    /// View-through window, ms.
    pub view_window_ms: Spanned<i64>,
}

impl Default for AttributionSection {
    fn default() -> Self {
        AttributionSection {
            click_window_ms: Spanned::new(0..0, 7 * 86_400_000),
            view_window_ms: Spanned::new(0..0, 86_400_000),
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Listen address of the HTTP API.
    pub listen: Spanned<String>,
    /// When set, admin routes (`POST /v1/models/{v}/promote`) need `Authorization: Bearer
    /// TOKEN`; a literal, `env:NAME` or `file:PATH`.
    pub admin_token: Option<Secret>,
    /// A request head must arrive in full within this long of a connection opening, or of the
    /// first byte of a later request on a kept-alive connection, ms.
    pub header_read_timeout_ms: Spanned<u64>,
    /// A kept-alive connection that sends nothing for this long after its last response is
    /// closed, ms.
    pub idle_timeout_ms: Spanned<u64>,
    /// Open connections at most; a connection beyond them is answered 503 at once and closed.
    pub max_connections: Spanned<usize>,
    /// On SIGTERM, once the workers have drained, requests under way get this long to finish
    /// before every connection is dropped, ms.
    pub shutdown_grace_ms: Spanned<u64>,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: Spanned::new(0..0, "127.0.0.1:8080".into()),
            admin_token: None,
            header_read_timeout_ms: spanned(10_000),
            idle_timeout_ms: spanned(60_000),
            max_connections: spanned(1_024),
            shutdown_grace_ms: spanned(5_000),
        }
    }
}

impl ApiSection {
    /// The HTTP server's limits.
    pub fn limits(&self) -> crate::server::Limits {
        let ms = |v: &Spanned<u64>| std::time::Duration::from_millis(*v.get_ref());
        crate::server::Limits {
            header_read_timeout: ms(&self.header_read_timeout_ms),
            idle_timeout: ms(&self.idle_timeout_ms),
            max_connections: *self.max_connections.get_ref(),
            shutdown_grace: ms(&self.shutdown_grace_ms),
        }
    }

    /// The admin token, resolved (`None`: admin routes are open).
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        self.admin_token
            .as_ref()
            .map(|t| resolve_secret(t.get_ref()))
            .transpose()
    }
}

/// A pipeline value that may be a secret: a literal, `env:NAME` or `file:PATH`. Its `Debug`
/// never shows a literal (only an indirection), so printing a pipeline leaks nothing.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(Spanned<String>);

impl Secret {
    /// The value as written (an indirection is not resolved: see [`resolve_secret`]).
    pub fn get_ref(&self) -> &String {
        self.0.get_ref()
    }

    /// Where it is in the file.
    pub fn span(&self) -> std::ops::Range<usize> {
        self.0.span()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(Spanned::new(0..0, value.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0.get_ref();
        if v.starts_with("env:") || v.starts_with("file:") {
            write!(f, "{v:?}")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

/// `section.key` of the `key = value` on 1-based `line`, if that line holds one.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let (key, _) = here.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, PipelineError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        Pipeline::parse(&file, &text)
    }

    /// Parses and validates pipeline `text` read from `file`.
    pub fn parse(file: &str, text: &str) -> Result<Pipeline, PipelineError> {
        let pipeline: Pipeline = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            let message = e.message().trim();
            // Type errors point at a value without naming it: name the field.
            let message = match key_at_line(text, line) {
                Some(key) if !message.contains(&key) => format!("field `{key}`: {message}"),
                _ => message.to_string(),
            };
            PipelineError {
                file: file.to_string(),
                line,
                column,
                message,
            }
        })?;
        pipeline.validate().map_err(|(span, message)| {
            let (line, column) = line_col(text, span.start);
            PipelineError {
                file: file.to_string(),
                line,
                column,
                message,
            }
        })?;
        Ok(pipeline)
    }

    fn validate(&self) -> Result<(), (std::ops::Range<usize>, String)> {
        fn check<T>(
            v: &Spanned<T>,
            ok: bool,
            field: &str,
            what: &str,
        ) -> Result<(), (std::ops::Range<usize>, String)> {
            if ok {
                Ok(())
            } else {
                Err((v.span(), format!("field `{field}`: {what}")))
            }
        }
        let p = &self.pipeline;
        check(
            &p.name,
            !p.name.get_ref().trim().is_empty(),
            "pipeline.name",
            "must not be empty",
        )?;
        check(
            &p.secret.0,
            p.secret.get_ref().len() >= 8,
            "pipeline.secret",
            "must be at least 8 characters (or env:NAME / file:PATH)",
        )?;
        check(
            &p.workers,
            (1..=256).contains(p.workers.get_ref()),
            "pipeline.workers",
            "must be between 1 and 256",
        )?;
        let brokers = self.kafka.brokers.get_ref();
        let brokers_ok = !brokers.is_empty()
            && brokers.split(',').all(|b| {
                b.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            });
        check(
            &self.kafka.brokers,
            brokers_ok,
            "kafka.brokers",
            "must be a comma-separated list of host:port",
        )?;
        let t = &self.topics;
        check(
            &t.partitions,
            (1..=10_000).contains(t.partitions.get_ref()),
            "topics.partitions",
            "must be between 1 and 10000",
        )?;
        check(
            &t.replication,
            (1..=16).contains(t.replication.get_ref()),
            "topics.replication",
            "must be between 1 and 16",
        )?;
        let tm = &self.time;
        check(
            &tm.tick_ms,
            (1..=60_000).contains(tm.tick_ms.get_ref()),
            "time.tick_ms",
            "must be between 1 and 60000",
        )?;
        check(
            &tm.lateness_ms,
            *tm.lateness_ms.get_ref() >= 0,
            "time.lateness_ms",
            "must not be negative",
        )?;
        check(
            &tm.max_skew_ms,
            *tm.max_skew_ms.get_ref() >= 0,
            "time.max_skew_ms",
            "must not be negative",
        )?;
        let c = &self.checkpoint;
        check(
            &c.interval_ms,
            *c.interval_ms.get_ref() >= 10,
            "checkpoint.interval_ms",
            "must be at least 10",
        )?;
        let h = &self.health;
        check(
            &h.interval_ms,
            (50..=60_000).contains(h.interval_ms.get_ref()),
            "health.interval_ms",
            "must be between 50 and 60000",
        )?;
        check(
            &h.broker_timeout_ms,
            (100..=300_000).contains(h.broker_timeout_ms.get_ref()),
            "health.broker_timeout_ms",
            "must be between 100 and 300000",
        )?;
        check(
            &h.max_lag_messages,
            *h.max_lag_messages.get_ref() >= 1,
            "health.max_lag_messages",
            "must be at least 1",
        )?;
        let pc = &self.pacing;
        check(
            &pc.slots,
            (1..=1_440).contains(pc.slots.get_ref()),
            "pacing.slots",
            "must be between 1 and 1440",
        )?;
        check(
            &pc.interval_ms,
            (100..=3_600_000).contains(pc.interval_ms.get_ref()),
            "pacing.interval_ms",
            "must be between 100 and 3600000",
        )?;
        check(
            &pc.horizon_ms,
            *pc.horizon_ms.get_ref() >= *pc.interval_ms.get_ref(),
            "pacing.horizon_ms",
            "must be at least pacing.interval_ms",
        )?;
        check(
            &pc.min_pass,
            *pc.min_pass.get_ref() > 0.0 && *pc.min_pass.get_ref() <= 1.0,
            "pacing.min_pass",
            "must be above 0 and at most 1",
        )?;
        for (v, field) in [
            (&pc.rate_smoothing, "pacing.rate_smoothing"),
            (&pc.profile_smoothing, "pacing.profile_smoothing"),
        ] {
            check(
                v,
                *v.get_ref() > 0.0 && *v.get_ref() <= 1.0,
                field,
                "must be above 0 and at most 1",
            )?;
        }
        check(
            &pc.reservation_ttl_ms,
            *pc.reservation_ttl_ms.get_ref() >= 1_000,
            "pacing.reservation_ttl_ms",
            "must be at least 1000",
        )?;
        check(
            &pc.publish_ms,
            (10..=1_000).contains(pc.publish_ms.get_ref()),
            "pacing.publish_ms",
            "must be between 10 and 1000 (serving must see a change within a second)",
        )?;
        check(
            &pc.conversion_delay_ms,
            *pc.conversion_delay_ms.get_ref() >= 1_000,
            "pacing.conversion_delay_ms",
            "must be at least 1000",
        )?;
        let l = &self.labels;
        for (v, field) in [
            (&l.click_window_ms, "labels.click_window_ms"),
            (&l.impression_wait_ms, "labels.impression_wait_ms"),
            (&l.conversion_window_ms, "labels.conversion_window_ms"),
        ] {
            check(v, *v.get_ref() >= 100, field, "must be at least 100")?;
        }
        check(
            &l.max_pending,
            *l.max_pending.get_ref() >= 1,
            "labels.max_pending",
            "must be at least 1",
        )?;
        let m = &self.model;
        check(
            &m.device,
            ["auto", "cpu", "cuda"].contains(&m.device.get_ref().as_str()),
            "model.device",
            "must be \"auto\", \"cpu\" or \"cuda\"",
        )?;
        if let Some(path) = &m.features {
            if let Err(e) = m.feature_spec() {
                return Err((path.span(), format!("field `model.features`: {e}")));
            }
        }
        check(
            &m.embedding_dim,
            (1..=256).contains(m.embedding_dim.get_ref()),
            "model.embedding_dim",
            "must be between 1 and 256",
        )?;
        check(
            &m.cross_layers,
            *m.cross_layers.get_ref() <= 8,
            "model.cross_layers",
            "must be at most 8",
        )?;
        check(
            &m.hidden,
            !m.hidden.get_ref().is_empty()
                && m.hidden.get_ref().len() <= 8
                && m.hidden.get_ref().iter().all(|w| (1..=4096).contains(w)),
            "model.hidden",
            "must list 1 to 8 layer widths, each between 1 and 4096",
        )?;
        check(
            &m.learning_rate,
            *m.learning_rate.get_ref() > 0.0 && *m.learning_rate.get_ref() <= 1.0,
            "model.learning_rate",
            "must be above 0 and at most 1",
        )?;
        check(
            &m.weight_decay,
            (0.0..1.0).contains(m.weight_decay.get_ref()),
            "model.weight_decay",
            "must be at least 0 and below 1",
        )?;
        check(
            &m.batch_size,
            (1..=65_536).contains(m.batch_size.get_ref()),
            "model.batch_size",
            "must be between 1 and 65536",
        )?;
        check(
            &m.conversion_weight,
            (0.0..=100.0).contains(m.conversion_weight.get_ref()),
            "model.conversion_weight",
            "must be between 0 and 100",
        )?;
        check(
            &m.snapshot_ms,
            *m.snapshot_ms.get_ref() >= 100,
            "model.snapshot_ms",
            "must be at least 100",
        )?;
        check(
            &m.validation_window,
            (10..=10_000_000).contains(m.validation_window.get_ref()),
            "model.validation_window",
            "must be between 10 and 10000000",
        )?;
        check(
            &m.keep_versions,
            *m.keep_versions.get_ref() >= 1,
            "model.keep_versions",
            "must be at least 1",
        )?;
        check(
            &m.queue,
            *m.queue.get_ref() >= 1,
            "model.queue",
            "must be at least 1",
        )?;
        let g = &m.guards;
        check(
            &g.max_auc_drop,
            (0.0..=1.0).contains(g.max_auc_drop.get_ref()),
            "model.guards.max_auc_drop",
            "must be between 0 and 1",
        )?;
        let cal = g.calibration.get_ref();
        check(
            &g.calibration,
            cal.len() == 2 && cal[0] > 0.0 && cal[0] < cal[1],
            "model.guards.calibration",
            "must be [lo, hi] with 0 < lo < hi",
        )?;
        check(
            &g.max_prediction_shift,
            *g.max_prediction_shift.get_ref() >= 1.0,
            "model.guards.max_prediction_shift",
            "must be at least 1",
        )?;
        check(
            &g.min_examples,
            *g.min_examples.get_ref() >= 1,
            "model.guards.min_examples",
            "must be at least 1",
        )?;
        let b = &self.billing;
        check(
            &b.event_horizon_ms,
            *b.event_horizon_ms.get_ref() >= 60_000,
            "billing.event_horizon_ms",
            "must be at least 60000 (one minute)",
        )?;
        check(
            &b.impression_horizon_ms,
            (60_000..=*b.event_horizon_ms.get_ref()).contains(b.impression_horizon_ms.get_ref()),
            "billing.impression_horizon_ms",
            "must be at least 60000 (one minute) and at most billing.event_horizon_ms",
        )?;
        check(
            &b.max_clock_skew_ms,
            (0..=3_600_000).contains(b.max_clock_skew_ms.get_ref()),
            "billing.max_clock_skew_ms",
            "must be between 0 and 3600000 (one hour)",
        )?;
        check(
            &b.max_message_bytes,
            (256..=16 << 20).contains(b.max_message_bytes.get_ref()),
            "billing.max_message_bytes",
            "must be between 256 and 16 MiB",
        )?;
        let a = &self.attribution;
        check(
            &a.click_window_ms,
            *a.click_window_ms.get_ref() > 0,
            "attribution.click_window_ms",
            "must be positive",
        )?;
        check(
            &a.view_window_ms,
            *a.view_window_ms.get_ref() > 0,
            "attribution.view_window_ms",
            "must be positive",
        )?;
        if let Some(token) = &self.api.admin_token {
            check(
                &token.0,
                !token.get_ref().trim().is_empty(),
                "api.admin_token",
                "must not be empty (a literal, env:NAME or file:PATH)",
            )?;
        }
        check(
            &self.api.listen,
            self.api.listen.get_ref().parse::<SocketAddr>().is_ok(),
            "api.listen",
            "must be an address such as 127.0.0.1:8080",
        )?;
        let api = &self.api;
        for (v, field) in [
            (&api.header_read_timeout_ms, "api.header_read_timeout_ms"),
            (&api.idle_timeout_ms, "api.idle_timeout_ms"),
        ] {
            check(
                v,
                (100..=3_600_000).contains(v.get_ref()),
                field,
                "must be between 100 and 3600000 (an hour)",
            )?;
        }
        check(
            &api.max_connections,
            (1..=1_000_000).contains(api.max_connections.get_ref()),
            "api.max_connections",
            "must be between 1 and 1000000 (and below the process's open-file limit)",
        )?;
        check(
            &api.shutdown_grace_ms,
            *api.shutdown_grace_ms.get_ref() <= 600_000,
            "api.shutdown_grace_ms",
            "must be at most 600000 (ten minutes)",
        )?;
        self.reporting.specs()?;
        for (name, _) in self.all_topics() {
            if name.is_empty()
                || name.len() > 249
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
            {
                return Err((
                    0..0,
                    format!("topic name {name:?} is not a valid Kafka topic name"),
                ));
            }
        }
        Ok(())
    }

    /// Every topic the pipeline reads or writes, with whether it is compacted: the inputs and
    /// outputs of `[topics]` and each report's topic.
    pub fn all_topics(&self) -> Vec<(String, bool)> {
        let mut topics: Vec<(String, bool)> = self
            .topics
            .all()
            .into_iter()
            .map(|(t, compacted)| (t.to_string(), compacted))
            .collect();
        for spec in self.reporting.specs().unwrap_or_default() {
            topics.push((spec.topic, true));
        }
        topics
    }

    /// The billing secret, with `env:`/`file:` resolved. The shipped development secret is
    /// refused unless the pipeline allows it explicitly.
    pub fn secret(&self) -> anyhow::Result<Vec<u8>> {
        let secret = resolve_secret(self.pipeline.secret.get_ref())?;
        if secret == DEVELOPMENT_SECRET {
            if !self.pipeline.allow_development_secret {
                anyhow::bail!(
                    "pipeline.secret is the development secret shipped with adstream ({:?}), which anyone can sign billing tokens with: set a secret of your own (env:NAME or file:PATH), or set `allow_development_secret = true` under [pipeline] for a local try",
                    DEVELOPMENT_SECRET
                );
            }
            tracing::warn!("running with the development billing secret (allow_development_secret = true): never use it for real money");
        }
        Ok(secret.into_bytes())
    }
}

/// Resolves `env:NAME`, `file:PATH` or a literal.
pub fn resolve_secret(value: &str) -> anyhow::Result<String> {
    if let Some(name) = value.strip_prefix("env:") {
        std::env::var(name)
            .map_err(|_| anyhow::anyhow!("secret: environment variable {name} is not set"))
    } else if let Some(path) = value.strip_prefix("file:") {
        Ok(std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("secret: cannot read {path}: {e}"))?
            .trim_end()
            .to_string())
    } else {
        Ok(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[pipeline]
name = "t"
secret = "0123456789"

[kafka]
brokers = "127.0.0.1:9092"
"#;

    #[test]
    fn minimal_file_gets_defaults() {
        let p = Pipeline::parse("t.toml", OK).unwrap();
        assert_eq!(*p.pipeline.workers.get_ref(), 1);
        assert_eq!(p.topics.campaigns, "ads.campaigns");
    }

    #[test]
    fn unknown_keys_are_errors_with_line() {
        let text = format!("{OK}\n[checkpoint]\nintervall_ms = 5\n");
        let err = Pipeline::parse("t.toml", &text).unwrap_err();
        assert_eq!(err.line, 10, "{err}");
        assert!(err.to_string().starts_with("t.toml:10:"), "{err}");
        assert!(err.message.contains("intervall_ms"), "{err}");
    }

    #[test]
    fn semantic_errors_name_field_and_line() {
        let text = OK.replace("brokers = \"127.0.0.1:9092\"", "brokers = \"nohost\"");
        let err = Pipeline::parse("t.toml", &text).unwrap_err();
        assert_eq!(err.line, 7, "{err}");
        assert!(err.message.contains("kafka.brokers"), "{err}");
        let text = format!("{OK}\n[checkpoint]\ninterval_ms = 0\n");
        let err = Pipeline::parse("t.toml", &text).unwrap_err();
        assert!(err.message.contains("checkpoint.interval_ms"), "{err}");
        assert_eq!(err.line, 10);
        let err = Pipeline::parse("t.toml", "[pipeline]\nname = \"x\"\n").unwrap_err();
        assert!(err.message.contains("secret"), "{err}");
    }

    #[test]
    fn model_and_label_settings_are_checked() {
        let p = Pipeline::parse("t.toml", OK).unwrap();
        assert_eq!(p.model.config().model.hidden, vec![128, 64]);
        assert_eq!(p.labels.config().click_window_ms, 900_000);
        let text = format!("{OK}\n[model]\nhidden = [64]\ndevice = \"cpu\"\n[model.guards]\nmax_auc_drop = 0.02\n[labels]\nclick_window_ms = 5000\n");
        let p = Pipeline::parse("t.toml", &text).unwrap();
        assert_eq!(p.model.config().model.hidden, vec![64]);
        assert_eq!(p.model.config().guards.max_auc_drop, 0.02);
        assert_eq!(p.labels.config().click_window_ms, 5_000);
        for (bad, field) in [
            ("[model]\ndevice = \"tpu\"", "model.device"),
            ("[model]\nhidden = []", "model.hidden"),
            ("[model]\nlearning_rate = 0.0", "model.learning_rate"),
            (
                "[model.guards]\ncalibration = [2.0, 1.0]",
                "model.guards.calibration",
            ),
            ("[labels]\nclick_window_ms = -5", "labels.click_window_ms"),
            (
                "[model]\nfeatures = \"/nonexistent/features.json\"",
                "model.features",
            ),
            ("[model]\nbatch_size = \"big\"", "model.batch_size"),
            (
                "[[reporting.reports]]\nname = \"r\"\ndimensions = [\"city\"]\nwindow_ms = 60000",
                "reporting.reports[0].dimensions",
            ),
            (
                "[[reporting.reports]]\nname = \"r\"\ndimensions = [\"country\"]\nwindow_ms = 60000\nmeasures = [\"roas\"]",
                "reporting.reports[0].measures",
            ),
            (
                "[[reporting.reports]]\nname = \"r\"\ndimensions = [\"country\"]\nwindow_ms = 0",
                "reporting.reports[0].window_ms",
            ),
            (
                "[[reporting.reports]]\nname = \"Bad\"\ndimensions = [\"country\"]\nwindow_ms = 1000",
                "reporting.reports[0].name",
            ),
            (
                "[[reporting.reports]]\nname = \"a\"\ndimensions = [\"ad_id\"]\nwindow_ms = 1000\n[[reporting.reports]]\nname = \"a\"\ndimensions = [\"ad_id\"]\nwindow_ms = 1000",
                "reporting.reports[1].name",
            ),
            (
                "[[reporting.reports]]\nname = \"r\"\ndimensions = [\"country\"]\nwindow_ms = 1000\nfinal_after_ms = -1",
                "reporting.reports[0].final_after_ms",
            ),
            ("[[reporting.reports]]\nname = \"r\"\nwindow_ms = 1000", "dimensions"),
            ("[reporting]\nenabled = \"yes\"", "enabled"),
        ] {
            let err = Pipeline::parse("t.toml", &format!("{OK}\n{bad}\n")).unwrap_err();
            assert!(err.message.contains(field), "{bad}: {err}");
            assert!(err.line > 8, "{bad}: {err}");
        }
    }

    #[test]
    fn api_limits_default_parse_and_are_checked() {
        let limits = Pipeline::parse("t.toml", OK).unwrap().api.limits();
        assert_eq!(limits.header_read_timeout.as_millis(), 10_000);
        assert_eq!(limits.idle_timeout.as_millis(), 60_000);
        assert_eq!(limits.max_connections, 1_024);
        assert_eq!(limits.shutdown_grace.as_millis(), 5_000);
        let text = format!("{OK}\n[api]\nheader_read_timeout_ms = 500\nidle_timeout_ms = 2000\nmax_connections = 8\nshutdown_grace_ms = 0\n");
        let limits = Pipeline::parse("t.toml", &text).unwrap().api.limits();
        assert_eq!(limits.header_read_timeout.as_millis(), 500);
        assert_eq!(limits.idle_timeout.as_millis(), 2_000);
        assert_eq!(limits.max_connections, 8);
        assert_eq!(limits.shutdown_grace.as_millis(), 0);
        for (bad, field, line) in [
            (
                "header_read_timeout_ms = 0",
                "api.header_read_timeout_ms",
                10,
            ),
            ("idle_timeout_ms = 99", "api.idle_timeout_ms", 10),
            ("max_connections = 0", "api.max_connections", 10),
            ("shutdown_grace_ms = 600001", "api.shutdown_grace_ms", 10),
            ("max_connections = -1", "api.max_connections", 10),
            ("idle_timeout = 5", "idle_timeout", 10),
        ] {
            let err = Pipeline::parse("t.toml", &format!("{OK}\n[api]\n{bad}\n")).unwrap_err();
            assert!(err.message.contains(field), "{bad}: {err}");
            assert_eq!(err.line, line, "{bad}: {err}");
        }
    }

    #[test]
    fn secrets_are_never_printed_and_admin_tokens_are_checked() {
        let text = format!(
            "{OK}\n[kafka.properties]\n\"sasl.password\" = \"hunter2-literal\"\n\"sasl.username\" = \"env:KAFKA_USER\"\n[api]\nadmin_token = \"tok-literal-123\"\n"
        );
        let p = Pipeline::parse("t.toml", &text).unwrap();
        let printed = format!("{p:?}");
        for secret in ["hunter2-literal", "tok-literal-123", "0123456789"] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
        assert!(printed.contains("env:KAFKA_USER"), "indirections are shown");
        assert_eq!(
            p.api.admin_token().unwrap().as_deref(),
            Some("tok-literal-123")
        );
        let err =
            Pipeline::parse("t.toml", &format!("{OK}\n[api]\nadmin_token = \" \"\n")).unwrap_err();
        assert!(err.message.contains("api.admin_token"), "{err}");
    }

    #[test]
    fn reports_default_parse_and_disable() {
        let p = Pipeline::parse("t.toml", OK).unwrap();
        let names: Vec<String> = p
            .reporting
            .specs()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            ["campaign_minute", "advertiser_hour", "country_device_hour"]
        );
        assert!(p
            .all_topics()
            .contains(&("report.campaign_minute".to_string(), true)));
        let shipped =
            Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/ads.toml"))
                .unwrap();
        let specs = shipped.reporting.specs().unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[2].measures.len(), 12);
        assert_eq!(specs[1].update_ms, 1_000);
        let text = format!("{OK}\n[[reporting.reports]]\nname = \"ads\"\ntopic = \"an.ads.report\"\ndimensions = [\"ad_id\", \"billing\"]\nwindow_ms = 300000\n");
        let p = Pipeline::parse("t.toml", &text).unwrap();
        let spec = &p.reporting.specs().unwrap()[0];
        assert_eq!(
            (spec.topic.as_str(), spec.final_after_ms),
            ("an.ads.report", 300_000)
        );
        let p =
            Pipeline::parse("t.toml", &format!("{OK}\n[reporting]\nenabled = false\n")).unwrap();
        assert!(p.reporting.specs().unwrap().is_empty());
    }

    #[test]
    fn pacing_settings_are_checked() {
        let p = Pipeline::parse("t.toml", OK).unwrap();
        assert_eq!(
            p.pacing.config(),
            adstream_operators::pacing::PacingConfig::default()
        );
        let text = format!("{OK}\n[pacing]\nslots = 48\nmin_pass = 0.5\n");
        let p = Pipeline::parse("t.toml", &text).unwrap();
        assert_eq!(p.pacing.config().slots, 48);
        let text = format!("{OK}\n[pacing]\nmin_pass = 2.0\n");
        let err = Pipeline::parse("t.toml", &text).unwrap_err();
        assert!(err.message.contains("pacing.min_pass"), "{err}");
        assert_eq!(err.line, 10, "{err}");
        let text = format!("{OK}\n[pacing]\npublish_ms = 5000\n");
        let err = Pipeline::parse("t.toml", &text).unwrap_err();
        assert!(err.message.contains("pacing.publish_ms"), "{err}");
        let text = format!("{OK}\n[pacing]\nenabled = \"yes\"\n");
        let err = Pipeline::parse("t.toml", &text).unwrap_err();
        assert!(err.message.contains("field `pacing.enabled`"), "{err}");
        assert!(err.message.contains("expected a boolean"), "{err}");
        let text = format!("{OK}\n[pacing]\ninterval_ms = 60000\nhorizon_ms = 1000\n");
        let err = Pipeline::parse("t.toml", &text).unwrap_err();
        assert!(err.message.contains("pacing.horizon_ms"), "{err}");
    }

    #[test]
    fn the_development_secret_needs_an_explicit_allowance() {
        let text = OK.replace("0123456789", DEVELOPMENT_SECRET);
        let p = Pipeline::parse("t.toml", &text).unwrap();
        let err = p.secret().unwrap_err().to_string();
        assert!(err.contains("allow_development_secret"), "{err}");
        let allowed = text.replace(
            "[pipeline]\n",
            "[pipeline]\nallow_development_secret = true\n",
        );
        let p = Pipeline::parse("t.toml", &allowed).unwrap();
        assert_eq!(p.secret().unwrap(), DEVELOPMENT_SECRET.as_bytes());
        let shipped =
            Pipeline::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/ads.toml"))
                .unwrap();
        assert!(
            shipped.secret().is_err(),
            "the shipped pipeline must not run with it silently"
        );
    }

    #[test]
    fn secrets_resolve_from_env_and_files() {
        std::env::set_var("ADSTREAM_TEST_SECRET", "from-env");
        assert_eq!(
            resolve_secret("env:ADSTREAM_TEST_SECRET").unwrap(),
            "from-env"
        );
        assert!(resolve_secret("env:ADSTREAM_NOT_SET_ANYWHERE").is_err());
        assert_eq!(resolve_secret("literal").unwrap(), "literal");
    }
}
