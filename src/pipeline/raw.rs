//! Phase 1: the pipeline file as written, with the position of every value.
//!
//! These types mirror the TOML one to one: a section per table, a field per key, the defaults of
//! keys left out, and nothing else. Unknown keys are errors (`deny_unknown_fields`). Nothing here
//! is checked or converted: [`super::resolve`] does that, once, into the operators' own config
//! types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_spanned::Spanned;

use adstream_operators::history::{HistoryConfig, HOUR_MS};
use adstream_operators::labels::LabelConfig;
use adstream_operators::pacing::PacingConfig;
use adstream_operators::ranker::guards::GuardConfig;
use adstream_operators::ranker::trainer::TrainerConfig;
use adstream_operators::source::SourceConfig;

use super::Secret;
use crate::server::Limits;

/// A default value: it has no position in the file (reported at 1:1).
fn spanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

/// The whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    /// `[pipeline]`.
    pub pipeline: RawPipelineSection,
    /// `[kafka]`.
    pub kafka: RawKafka,
    /// `[topics]`.
    #[serde(default)]
    pub topics: RawTopics,
    /// `[time]`.
    #[serde(default)]
    pub time: RawTime,
    /// `[checkpoint]`.
    #[serde(default)]
    pub checkpoint: RawCheckpoint,
    /// `[health]`.
    #[serde(default)]
    pub health: RawHealth,
    /// `[billing]`.
    #[serde(default)]
    pub billing: RawBilling,
    /// `[attribution]`.
    #[serde(default)]
    pub attribution: RawAttribution,
    /// `[api]`.
    #[serde(default)]
    pub api: RawApi,
    /// `[serving]`.
    #[serde(default)]
    pub serving: RawServing,
    /// `[currency]`.
    #[serde(default)]
    pub currency: RawCurrency,
    /// `[pacing]`.
    #[serde(default)]
    pub pacing: RawPacing,
    /// `[labels]`.
    #[serde(default)]
    pub labels: RawLabels,
    /// `[history]`.
    #[serde(default)]
    pub history: RawHistory,
    /// `[model]` and `[model.guards]`.
    #[serde(default)]
    pub model: RawModel,
    /// `[reporting]` and `[[reporting.reports]]`.
    #[serde(default)]
    pub reporting: RawReporting,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: RawMetrics,
}

/// `[pipeline]`: identity, secret, state and parallelism.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipelineSection {
    /// Name, used in consumer group ids and logs.
    pub name: Spanned<String>,
    /// Billing-token HMAC key: a literal, `env:NAME` or `file:PATH`.
    pub secret: Spanned<Secret>,
    /// Where RocksDB state lives (one sub-directory per process).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Timely worker threads per process.
    #[serde(default = "default_workers")]
    pub workers: Spanned<usize>,
    /// Lets the pipeline run with the shipped development secret.
    #[serde(default)]
    pub allow_development_secret: bool,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".state")
}

fn default_workers() -> Spanned<usize> {
    spanned(1)
}

/// `[kafka]`: the connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// Bootstrap servers, `host:port,...`.
    pub brokers: Spanned<String>,
    /// Extra librdkafka properties (`[kafka.properties]`); values may be `env:` or `file:`.
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
}

/// `[topics]`: topic names and the layout `topics create` makes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTopics {
    /// Campaign definitions (compacted).
    pub campaigns: Spanned<String>,
    /// Impressions.
    pub impressions: Spanned<String>,
    /// Clicks.
    pub clicks: Spanned<String>,
    /// Conversions.
    pub conversions: Spanned<String>,
    /// Served ads with their features.
    pub served: Spanned<String>,
    /// Refused input.
    pub deadletter: Spanned<String>,
    /// Per-campaign budget status (compacted).
    pub budget_status: Spanned<String>,
    /// Partitions of the topics `topics create` makes.
    pub partitions: Spanned<i32>,
    /// Replication factor of the topics `topics create` makes.
    pub replication: Spanned<i32>,
}

impl Default for RawTopics {
    fn default() -> Self {
        let d = super::Topics::default();
        RawTopics {
            campaigns: spanned(d.campaigns),
            impressions: spanned(d.impressions),
            clicks: spanned(d.clicks),
            conversions: spanned(d.conversions),
            served: spanned(d.served),
            deadletter: spanned(d.deadletter),
            budget_status: spanned(d.budget_status),
            partitions: spanned(d.partitions),
            replication: spanned(d.replication),
        }
    }
}

/// `[time]`: event-time handling.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTime {
    /// Granularity of dataflow timestamps, ms.
    pub tick_ms: Spanned<u64>,
    /// Allowed out-of-orderness, ms.
    pub lateness_ms: Spanned<i64>,
    /// Event times further in the future than this are clamped, ms.
    pub max_skew_ms: Spanned<i64>,
}

impl Default for RawTime {
    fn default() -> Self {
        let d = SourceConfig::default();
        RawTime {
            tick_ms: spanned(d.tick_ms),
            lateness_ms: spanned(d.lateness_ms),
            max_skew_ms: spanned(d.max_skew_ms),
        }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCheckpoint {
    /// Checkpoint interval, ms of event time.
    pub interval_ms: Spanned<u64>,
    /// fsync every checkpoint (survives power loss, not only process crashes).
    pub fsync: bool,
}

impl Default for RawCheckpoint {
    fn default() -> Self {
        RawCheckpoint {
            interval_ms: spanned(1_000),
            fsync: false,
        }
    }
}

/// `[health]`: what `/readyz` holds a process to, and how often the brokers are asked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealth {
    /// How often the monitor probes the brokers, measures lag and looks for new partitions, ms.
    pub interval_ms: Spanned<u64>,
    /// A broker request unanswered this long makes the process unready, ms.
    pub broker_timeout_ms: Spanned<u64>,
    /// A partition more messages than this behind its end makes the process unready.
    pub max_lag_messages: Spanned<i64>,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            interval_ms: spanned(1_000),
            broker_timeout_ms: spanned(5_000),
            max_lag_messages: spanned(100_000),
        }
    }
}

/// `[billing]`: charging rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBilling {
    /// How long after the auction impressions may be charged, ms.
    pub impression_horizon_ms: Spanned<i64>,
    /// How long after the auction clicks may be charged, ms.
    pub event_horizon_ms: Spanned<i64>,
    /// How much earlier than its win's issue time a billing event may be stamped, ms.
    pub max_clock_skew_ms: Spanned<i64>,
    /// Larger messages are dead-lettered, bytes.
    pub max_message_bytes: Spanned<usize>,
}

impl Default for RawBilling {
    fn default() -> Self {
        RawBilling {
            impression_horizon_ms: spanned(3_600_000),
            event_horizon_ms: spanned(86_400_000),
            max_clock_skew_ms: spanned(60_000),
            max_message_bytes: spanned(64 * 1024),
        }
    }
}

/// `[attribution]`: conversion attribution windows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAttribution {
    /// Click-through window, ms.
    pub click_window_ms: Spanned<i64>,
    /// View-through window, ms.
    pub view_window_ms: Spanned<i64>,
}

impl Default for RawAttribution {
    fn default() -> Self {
        let d = adstream_operators::attribution::Windows::default();
        RawAttribution {
            click_window_ms: spanned(d.click_ms),
            view_window_ms: spanned(d.view_ms),
        }
    }
}

/// `[api]`: the HTTP API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    /// Listen address.
    pub listen: Spanned<String>,
    /// Listen address of the admin API (dashboard, metrics, models); unset: `listen` serves
    /// everything.
    pub admin_listen: Option<Spanned<String>>,
    /// Bearer token of the admin routes: a literal, `env:NAME` or `file:PATH`.
    pub admin_token: Option<Spanned<Secret>>,
    /// `[api.advertiser_tokens]`: advertiser id → bearer token that reads only that
    /// advertiser's campaigns (a literal, `env:NAME` or `file:PATH`).
    pub advertiser_tokens: BTreeMap<String, Spanned<Secret>>,
    /// A request head must arrive in full within this long, ms.
    pub header_read_timeout_ms: Spanned<u64>,
    /// A kept-alive connection silent this long after its last response is closed, ms.
    pub idle_timeout_ms: Spanned<u64>,
    /// Open connections at most.
    pub max_connections: Spanned<usize>,
    /// On SIGTERM, requests under way get this long to finish, ms.
    pub shutdown_grace_ms: Spanned<u64>,
}

impl Default for RawApi {
    fn default() -> Self {
        let d = Limits::default();
        let ms = |d: std::time::Duration| spanned(d.as_millis() as u64);
        RawApi {
            listen: spanned("127.0.0.1:8080".into()),
            admin_listen: None,
            admin_token: None,
            advertiser_tokens: BTreeMap::new(),
            header_read_timeout_ms: ms(d.header_read_timeout),
            idle_timeout_ms: ms(d.idle_timeout),
            max_connections: spanned(d.max_connections),
            shutdown_grace_ms: ms(d.shutdown_grace),
        }
    }
}

/// `[metrics]`: what `GET /metrics` exports.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Export per-campaign series (`adstream_budget_utilisation{campaign}`): one series per
    /// campaign, so off by default.
    pub per_campaign: bool,
}

/// `[serving]`: ad serving.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServing {
    /// Pipeline-wide reserve price, CPM in currency units.
    pub reserve_cpm: Spanned<f64>,
    /// At most this many campaigns of one advertiser reach ranking per request.
    pub per_advertiser: Spanned<usize>,
    /// At most this many candidates are scored per request.
    pub max_candidates: Spanned<usize>,
    /// Retrieval stops once this many campaigns may bid; pre-ranking keeps the best
    /// `max_candidates` of them. Default: 4 x `max_candidates`.
    pub prerank_candidates: Option<Spanned<usize>>,
    /// Requests queued per worker before the API answers 503.
    pub queue: Spanned<usize>,
    /// The API's public base URL, which exchanges reach: bids' billing notices (`burl`) point
    /// at `{public_url}/v1/billing`. Default: the address the API is bound to.
    pub public_url: Option<Spanned<String>>,
    /// Replaced by `public_url`; kept only to say so.
    pub burl_base: Option<Spanned<String>>,
    /// adstream's buyer seat (`seatbid.seat`, checked against `bseat`/`wseat`).
    pub seat: Spanned<String>,
    /// How a no-bid is answered: `204` (empty) or `nbr` (a BidResponse with its reason code).
    pub no_bid: Spanned<String>,
}

impl Default for RawServing {
    fn default() -> Self {
        RawServing {
            reserve_cpm: spanned(0.01),
            per_advertiser: spanned(2),
            max_candidates: spanned(200),
            prerank_candidates: None,
            queue: spanned(1024),
            public_url: None,
            burl_base: None,
            seat: spanned("adstream".into()),
            no_bid: spanned("204".into()),
        }
    }
}

/// `[currency]`: the account currency and the exchange rates of the currencies requests may
/// use (floors, `cur`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCurrency {
    /// The currency of budgets, bids and spend (ISO 4217).
    pub account: Spanned<String>,
    /// How many units of the account currency one unit of each currency is worth.
    pub rates: Spanned<std::collections::BTreeMap<String, f64>>,
}

impl Default for RawCurrency {
    fn default() -> Self {
        RawCurrency {
            account: spanned("USD".into()),
            rates: spanned(Default::default()),
        }
    }
}

/// `[pacing]`: the control law's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPacing {
    /// Throttle campaigns along their target curve (false: ASAP, only the budget gate holds).
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

impl Default for RawPacing {
    fn default() -> Self {
        let d = PacingConfig::default();
        RawPacing {
            enabled: spanned(d.enabled),
            slots: spanned(d.slots),
            interval_ms: spanned(d.interval_ms),
            horizon_ms: spanned(d.horizon_ms),
            min_pass: spanned(d.min_pass),
            rate_smoothing: spanned(d.rate_smoothing),
            profile_smoothing: spanned(d.profile_smoothing),
            reservation_ttl_ms: spanned(d.reservation_ttl_ms),
            publish_ms: spanned(d.publish_ms),
            conversion_delay_ms: spanned(d.conversion_delay_ms),
        }
    }
}

/// `[labels]`: how served ads become labelled examples.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLabels {
    /// A rendered ad without a click this long after its impression is a negative, ms.
    pub click_window_ms: Spanned<i64>,
    /// How long a served ad waits for its impression, ms.
    pub impression_wait_ms: Spanned<i64>,
    /// How long after its click a conversion still labels the example, ms.
    pub conversion_window_ms: Spanned<i64>,
    /// Most examples waiting for labels.
    pub max_pending: Spanned<usize>,
}

impl Default for RawLabels {
    fn default() -> Self {
        let d = LabelConfig::default();
        RawLabels {
            click_window_ms: spanned(d.click_window_ms),
            impression_wait_ms: spanned(d.impression_wait_ms),
            conversion_window_ms: spanned(d.conversion_window_ms),
            max_pending: spanned(d.max_pending),
        }
    }
}

/// `[history]`: users' recent engagement, the ranker's user-history features.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHistory {
    /// Clicks kept per user.
    pub recent_clicks: Spanned<usize>,
    /// A user with no event for this many hours is forgotten.
    pub retention_hours: Spanned<i64>,
}

impl Default for RawHistory {
    fn default() -> Self {
        let d = HistoryConfig::default();
        RawHistory {
            recent_clicks: spanned(d.recent_clicks),
            retention_hours: spanned(d.retention_ms / HOUR_MS),
        }
    }
}

/// `[model]`: the online ranker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModel {
    /// Train and publish models.
    pub enabled: Spanned<bool>,
    /// A feature spec file (default: the shipped `schemas/features.json`).
    pub features: Option<Spanned<String>>,
    /// `auto`, `cpu` or `cuda`.
    pub device: Spanned<String>,
    /// Width of every embedding.
    pub embedding_dim: Spanned<usize>,
    /// DCN-v2 cross layers.
    pub cross_layers: Spanned<usize>,
    /// MLP hidden widths.
    pub hidden: Spanned<Vec<usize>>,
    /// AdamW step size.
    pub learning_rate: Spanned<f64>,
    /// AdamW decoupled weight decay.
    pub weight_decay: Spanned<f64>,
    /// Examples per update.
    pub batch_size: Spanned<usize>,
    /// Weight of the conversion loss.
    pub conversion_weight: Spanned<f64>,
    /// The conversion head's step as a share of the learning rate.
    pub conversion_head_rate: Spanned<f64>,
    /// How often a snapshot is judged for publishing, ms.
    pub snapshot_ms: Spanned<u64>,
    /// Examples per task in the progressive-validation window.
    pub validation_window: Spanned<usize>,
    /// Horizon, in examples, of the averaged weights a snapshot serves (0: the last step's).
    pub average_examples: Spanned<usize>,
    /// Versions kept on disk.
    pub keep_versions: Spanned<usize>,
    /// Examples queued for the trainer before the graph drops them.
    pub queue: Spanned<usize>,
    /// `[model.guards]`.
    pub guards: RawGuards,
}

impl Default for RawModel {
    fn default() -> Self {
        let d = TrainerConfig::default();
        RawModel {
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
            conversion_head_rate: spanned(d.conversion_head_rate),
            snapshot_ms: spanned(d.snapshot_interval.as_millis() as u64),
            validation_window: spanned(d.validation_window),
            average_examples: spanned(d.average_examples),
            keep_versions: spanned(d.keep_versions),
            queue: spanned(d.queue),
            guards: RawGuards::default(),
        }
    }
}

/// `[model.guards]`: when a new version may replace the live one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGuards {
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

impl Default for RawGuards {
    fn default() -> Self {
        let d = GuardConfig::default();
        RawGuards {
            min_examples: spanned(d.min_examples),
            min_positives: spanned(d.min_positives),
            max_auc_drop: spanned(d.max_auc_drop),
            calibration: spanned(d.calibration.to_vec()),
            max_prediction_shift: spanned(d.max_prediction_shift),
            min_conversion_positives: spanned(d.min_conversion_positives),
        }
    }
}

/// `[reporting]`: the aggregates published on `report.*` topics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReporting {
    /// Keep and publish reports.
    pub enabled: Spanned<bool>,
    /// The reports (absent: the three defaults of [`adstream_operators::report::ReportSpec`]).
    pub reports: Option<Vec<RawReport>>,
}

impl Default for RawReporting {
    fn default() -> Self {
        RawReporting {
            enabled: spanned(true),
            reports: None,
        }
    }
}

/// One `[[reporting.reports]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    /// Name (`[a-z0-9_]+`), in every row.
    pub name: Spanned<String>,
    /// Topic (default `report.<name>`).
    pub topic: Option<Spanned<String>>,
    /// Group-by fields.
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
