//! Pipeline files: the declarative description of one adstream deployment.
//!
//! A pipeline file is TOML, read in two phases:
//!
//! ```text
//!   text ──toml──▶ raw::RawPipeline ──resolve──▶ Pipeline ──unlock──▶ Unlocked
//!        syntax,     every value with   every field    plain values and    the configs that
//!        types,      its position       checked, all   the operators'      hold a secret
//!        unknown                        errors at      config types        (env:/file: read
//!        keys                           once                               at start-up)
//! ```
//!
//! 1. `raw` mirrors the file: a field per key with its position, the defaults of keys left
//!    out, unknown keys refused. A syntax, type or unknown-key error stops reading there.
//! 2. `resolve` takes the raw file apart by exhaustive destructuring (a new key that is not
//!    handled does not compile), checks every field and builds [`Pipeline`]: plain values and
//!    the operators' own config types ([`SourceConfig`], [`Horizons`], [`Windows`],
//!    [`LabelConfig`], [`PacingConfig`], [`TrainerConfig`], [`ReportSpec`]s, the server's
//!    [`Limits`], the monitor's [`MonitorSettings`]). Every error is reported, not only the
//!    first, each naming the file, line, column and field
//!    (`pipelines/ads.toml:12:1: field `checkpoint.interval_ms`: must be at least 10`).
//!
//! Resolution reads the feature spec file but nothing from the environment, so `validate`
//! checks a file wherever it is. Secrets (`env:NAME` and `file:PATH` indirections, or a literal
//! for development) are resolved by [`Pipeline::unlock`] at start-up, and never logged.

mod errors;
mod raw;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use adstream_operators::attribution::Windows;
use adstream_operators::history::HistoryConfig;
use adstream_operators::ingest::{DecodeConfig, StreamId};
use adstream_operators::labels::LabelConfig;
use adstream_operators::ledger::Horizons;
use adstream_operators::pacing::PacingConfig;
use adstream_operators::ranker::features::FeatureSpec;
use adstream_operators::ranker::trainer::TrainerConfig;
use adstream_operators::report::ReportSpec;
use adstream_operators::serve::operator::ServeConfig;
use adstream_operators::source::SourceConfig;

use crate::kafka::monitor::MonitorSettings;
use crate::server::Limits;

pub use errors::{PipelineError, PipelineErrors};

/// The billing secret shipped in `pipelines/ads.toml`: fine for the demo and local tries, never
/// for real money, so `run` refuses it unless `allow_development_secret = true`.
pub const DEVELOPMENT_SECRET: &str = "dev-secret-change-me";

/// A pipeline file, checked and resolved: what every part of adstream reads.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// `pipeline.name`: used in consumer group ids and logs.
    pub name: String,
    /// `pipeline.secret`: the billing-token HMAC key, unresolved (see [`Pipeline::secret`]).
    pub secret: Secret,
    /// `pipeline.allow_development_secret`: lets [`Pipeline::secret`] return
    /// [`DEVELOPMENT_SECRET`].
    pub allow_development_secret: bool,
    /// `pipeline.state_dir`: where RocksDB state lives (one sub-directory per process).
    pub state_dir: PathBuf,
    /// `pipeline.workers`: timely worker threads per process.
    pub workers: usize,
    /// `[kafka]`.
    pub kafka: Kafka,
    /// `[topics]`.
    pub topics: Topics,
    /// The sources' settings: `[time]` and `checkpoint.interval_ms`.
    pub source: SourceConfig,
    /// `[checkpoint]`.
    pub checkpoint: Checkpoint,
    /// The Kafka monitor behind `/readyz`: `[health]`.
    pub monitor: MonitorSettings,
    /// The ledger's charging windows: `[billing]`, with conversions charged for
    /// `attribution.click_window_ms` plus a day.
    pub horizons: Horizons,
    /// `billing.max_message_bytes`: larger messages are dead-lettered.
    pub max_message_bytes: usize,
    /// `[attribution]`.
    pub windows: Windows,
    /// `[api]`.
    pub api: Api,
    /// `[serving]`.
    pub serving: Serving,
    /// `[currency]`.
    pub currency: adstream_operators::serve::currency::Rates,
    /// `[pacing]`, with `conversion_window_ms` = `attribution.click_window_ms`.
    pub pacing: PacingConfig,
    /// `[labels]`.
    pub labels: LabelConfig,
    /// `[history]`.
    pub history: HistoryConfig,
    /// `[model]`.
    pub model: Model,
    /// The reports to keep: `[reporting]` (none when disabled).
    pub reports: Arc<[ReportSpec]>,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
}

/// `[metrics]`: what `GET /metrics` exports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Export per-campaign series (one per campaign: unbounded, so opt-in).
    pub per_campaign: bool,
}

/// `[kafka]`: the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kafka {
    /// Bootstrap servers, `host:port,...`.
    pub brokers: String,
    /// Extra librdkafka properties (SASL/SSL settings pass through here), unresolved.
    pub properties: BTreeMap<String, Secret>,
}

/// `[topics]`: topic names and the layout `topics create` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
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
    pub partitions: i32,
    /// Replication factor of topics that `topics create` makes.
    pub replication: i32,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            campaigns: "ads.campaigns".into(),
            impressions: "ads.impressions".into(),
            clicks: "ads.clicks".into(),
            conversions: "ads.conversions".into(),
            served: "ads.served".into(),
            deadletter: "ads.deadletter".into(),
            budget_status: "budget.status".into(),
            partitions: 4,
            replication: 1,
        }
    }
}

impl Topics {
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

    /// Every topic of `[topics]` with whether it is compacted.
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

/// `[checkpoint]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Checkpoint interval, ms of event time.
    pub interval_ms: u64,
    /// fsync every checkpoint (survives power loss, not only process crashes).
    pub fsync: bool,
}

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// Listen address.
    pub listen: SocketAddr,
    /// Listen address of the admin API; `None`: `listen` serves every route.
    pub admin_listen: Option<SocketAddr>,
    /// When set, admin routes need `Authorization: Bearer TOKEN`; unresolved.
    pub admin_token: Option<Secret>,
    /// Advertiser id → its read token (campaign reads of its own campaigns); unresolved.
    pub advertiser_tokens: BTreeMap<String, Secret>,
    /// The server's limits.
    pub limits: Limits,
}

/// `[serving]`: everything of [`ServeConfig`] but its key, and the request queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// Pipeline-wide reserve, eCPM micros (`reserve_cpm` × 10⁶).
    pub reserve_ecpm_micros: u64,
    /// At most this many campaigns of one advertiser reach ranking per request.
    pub per_advertiser: usize,
    /// At most this many candidates are scored per request.
    pub max_candidates: usize,
    /// Retrieval stops once this many campaigns may bid (pre-ranking's pool).
    pub prerank_candidates: usize,
    /// How long a win's reservation waits for its billing event, ms
    /// (`pacing.reservation_ttl_ms`).
    pub reservation_ttl_ms: i64,
    /// Requests queued per worker before the API answers 503.
    pub queue: usize,
    /// The API's public base URL (`burl` is `{public_url}/v1/billing?...`); `None`: the address
    /// the API is bound to.
    pub public_url: Option<String>,
    /// adstream's buyer seat.
    pub seat: String,
    /// Answer a no-bid with a BidResponse carrying `nbr` (else an empty 204).
    pub nbr_body: bool,
}

/// `[model]`: the online ranker.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Train and publish models (false: serving ranks with the per-campaign prior).
    pub enabled: bool,
    /// The feature spec: `model.features`' file, or the shipped one.
    pub features: FeatureSpec,
    /// The trainer's settings, `[model.guards]` included.
    pub trainer: TrainerConfig,
}

/// The operator configs that hold a secret, built at start-up once the secrets are resolved.
#[derive(Debug, Clone)]
pub struct Unlocked {
    /// Serving's settings and the billing key it signs tokens with.
    pub serve: ServeConfig,
    /// Decoding's settings and the billing key it checks tokens with.
    pub decode: DecodeConfig,
    /// The admin token (`None`: admin routes are open).
    pub admin_token: Option<String>,
    /// (advertiser id, read token) pairs.
    pub advertiser_tokens: Vec<(String, String)>,
}

impl Pipeline {
    /// Reads, checks and resolves a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, PipelineErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError {
            file: file.clone(),
            line: 0,
            column: 0,
            field: None,
            message: format!("cannot read: {e}"),
        })?;
        Pipeline::parse(&file, &text)
    }

    /// Parses, checks and resolves pipeline `text` read from `file`: every error at once.
    pub fn parse(file: &str, text: &str) -> Result<Pipeline, PipelineErrors> {
        let raw: raw::RawPipeline =
            toml::from_str(text).map_err(|e| errors::parse_error(file, text, &e))?;
        let mut collector = errors::Collector::new(file, text);
        let pipeline = resolve::resolve(raw, &mut collector);
        collector.finish(pipeline)
    }

    /// Every topic the pipeline reads or writes, with whether it is compacted: those of
    /// `[topics]` and each report's.
    pub fn all_topics(&self) -> Vec<(String, bool)> {
        let mut topics: Vec<(String, bool)> = self
            .topics
            .all()
            .into_iter()
            .map(|(t, compacted)| (t.to_string(), compacted))
            .collect();
        topics.extend(self.reports.iter().map(|spec| (spec.topic.clone(), true)));
        topics
    }

    /// The billing secret, with `env:`/`file:` resolved. The shipped development secret is
    /// refused unless the pipeline allows it explicitly.
    pub fn secret(&self) -> Result<Vec<u8>, SecretError> {
        let secret = self.secret.resolve()?;
        if secret == DEVELOPMENT_SECRET {
            if !self.allow_development_secret {
                return Err(SecretError::Development);
            }
            tracing::warn!("running with the development billing secret (allow_development_secret = true): never use it for real money");
        }
        Ok(secret.into_bytes())
    }

    /// Resolves the secrets (billing key, admin token) and builds the configs that hold them.
    pub fn unlock(&self) -> Result<Unlocked, SecretError> {
        let secret = self.secret()?;
        let admin_token = self
            .api
            .admin_token
            .as_ref()
            .map(Secret::resolve)
            .transpose()?;
        let mut advertiser_tokens = Vec::new();
        for (advertiser, token) in &self.api.advertiser_tokens {
            let token = token.resolve()?;
            if token.chars().count() < MIN_READ_TOKEN {
                return Err(SecretError::Short(format!(
                    "api.advertiser_tokens.{advertiser}"
                )));
            }
            advertiser_tokens.push((advertiser.clone(), token));
        }
        let Serving {
            reserve_ecpm_micros,
            per_advertiser,
            max_candidates,
            prerank_candidates,
            reservation_ttl_ms,
            queue: _, // the API's, not the operator's
            public_url: _,
            seat: _,
            nbr_body: _,
        } = self.serving;
        Ok(Unlocked {
            serve: ServeConfig {
                secret: secret.clone(),
                reserve_ecpm_micros,
                per_advertiser,
                max_candidates,
                prerank_candidates,
                reservation_ttl_ms,
            },
            decode: DecodeConfig::new(secret, self.max_message_bytes),
            admin_token,
            advertiser_tokens,
        })
    }
}

/// Characters an advertiser read token has at least.
pub const MIN_READ_TOKEN: usize = 16;

/// Why a secret could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `env:NAME` names an unset variable.
    #[error("secret: environment variable {0} is not set")]
    Unset(String),
    /// `file:PATH` names a file that cannot be read.
    #[error("secret: cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A token (the field named) resolved to fewer than [`MIN_READ_TOKEN`] characters.
    #[error("{0}: the token must be at least {MIN_READ_TOKEN} characters")]
    Short(String),
    /// The billing secret is [`DEVELOPMENT_SECRET`] and the pipeline does not allow it.
    #[error("pipeline.secret is the development secret shipped with adstream ({DEVELOPMENT_SECRET:?}), which anyone can sign billing tokens with: set a secret of your own (env:NAME or file:PATH), or set `allow_development_secret = true` under [pipeline] for a local try")]
    Development,
}

/// A pipeline value that may be a secret: a literal, `env:NAME` or `file:PATH`. Its `Debug`
/// never shows a literal (only an indirection), so printing a pipeline leaks nothing.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The value as written (an indirection is not resolved: see [`Secret::resolve`]).
    pub fn as_written(&self) -> &str {
        &self.0
    }

    /// Resolves `env:NAME`, `file:PATH` (its contents without trailing whitespace) or a literal.
    pub fn resolve(&self) -> Result<String, SecretError> {
        let value = &self.0;
        if let Some(name) = value.strip_prefix("env:") {
            std::env::var(name).map_err(|_| SecretError::Unset(name.to_string()))
        } else if let Some(path) = value.strip_prefix("file:") {
            Ok(std::fs::read_to_string(path)
                .map_err(|source| SecretError::Unreadable {
                    path: path.to_string(),
                    source,
                })?
                .trim_end()
                .to_string())
        } else {
            Ok(value.clone())
        }
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = &self.0;
        if v.starts_with("env:") || v.starts_with("file:") {
            write!(f, "{v:?}")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}
