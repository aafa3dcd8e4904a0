//! Phase 2: the raw file checked and resolved into [`Pipeline`], every error collected.
//!
//! Each section is taken apart by exhaustive destructuring (no `..`): a key added to a
//! [`super::raw`] type does not compile until it is checked and mapped here. Operator configs
//! are built field by field for the same reason, settings the file does not hold taken from the
//! operator's default by name. A field with an error still yields a value (the checked one or a
//! default) so that resolution goes on and finds the other errors; a pipeline with errors is
//! never returned ([`Collector::finish`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde_spanned::Spanned;

use adstream_operators::attribution::Windows;
use adstream_operators::history::{HistoryConfig, HOUR_MS};
use adstream_operators::labels::LabelConfig;
use adstream_operators::ledger::Horizons;
use adstream_operators::pacing::PacingConfig;
use adstream_operators::ranker::features::{FeatureSpec, DEFAULT_SPEC};
use adstream_operators::ranker::guards::GuardConfig;
use adstream_operators::ranker::model::ModelConfig;
use adstream_operators::ranker::optim::AdamWConfig;
use adstream_operators::ranker::trainer::{DevicePreference, TrainerConfig};
use adstream_operators::report::{Dimension, Measure, ReportSpec, SpecError};
use adstream_operators::source::SourceConfig;

use super::errors::Collector;
use super::raw::*;
use super::{
    Api, Checkpoint, Kafka, MetricsSettings, Model, Pipeline, Serving, Topics, MIN_READ_TOKEN,
};
use crate::kafka::monitor::MonitorSettings;
use crate::server::Limits;

/// How much longer than the click window conversions may be charged, ms.
const CONVERSION_SLACK_MS: i64 = 86_400_000;

impl Collector<'_> {
    /// The value of `v`, with an error on `field` unless `ok` holds for it.
    fn check<T>(
        &mut self,
        v: Spanned<T>,
        field: &str,
        ok: impl FnOnce(&T) -> bool,
        what: &str,
    ) -> T {
        if !ok(v.get_ref()) {
            self.error(v.span(), field, what);
        }
        v.into_inner()
    }
}

/// `raw` checked and resolved; every error goes to `errors`.
pub(super) fn resolve(raw: RawPipeline, errors: &mut Collector<'_>) -> Pipeline {
    let RawPipeline {
        pipeline,
        kafka,
        topics,
        time,
        checkpoint,
        health,
        billing,
        attribution,
        api,
        serving,
        currency,
        pacing,
        labels,
        history,
        model,
        reporting,
        metrics,
    } = raw;
    let RawPipelineSection {
        name,
        secret,
        state_dir,
        workers,
        allow_development_secret,
    } = pipeline;
    let name = errors.check(
        name,
        "pipeline.name",
        |n| !n.trim().is_empty(),
        "must not be empty",
    );
    let secret = errors.check(
        secret,
        "pipeline.secret",
        |s| s.as_written().len() >= 8,
        "must be at least 8 characters (or env:NAME / file:PATH)",
    );
    let workers = errors.check(
        workers,
        "pipeline.workers",
        |w| (1..=256).contains(w),
        "must be between 1 and 256",
    );
    let checkpoint = resolve_checkpoint(checkpoint, errors);
    let windows = resolve_attribution(attribution, errors);
    let (horizons, max_message_bytes) = resolve_billing(billing, windows, errors);
    let pacing = resolve_pacing(pacing, windows, errors);
    let serving = resolve_serving(serving, &pacing, errors);
    let topics = resolve_topics(topics, errors);
    let reports = resolve_reporting(reporting, errors);
    Pipeline {
        name,
        secret,
        allow_development_secret,
        state_dir,
        workers,
        kafka: resolve_kafka(kafka, errors),
        topics,
        source: resolve_time(time, checkpoint, errors),
        checkpoint,
        monitor: resolve_health(health, errors),
        horizons,
        max_message_bytes,
        windows,
        api: resolve_api(api, errors),
        serving,
        currency: resolve_currency(currency, errors),
        pacing,
        labels: resolve_labels(labels, errors),
        history: resolve_history(history, errors),
        model: resolve_model(model, errors),
        reports: reports.into(),
        metrics: resolve_metrics(metrics),
    }
}

fn resolve_metrics(raw: RawMetrics) -> MetricsSettings {
    let RawMetrics { per_campaign } = raw;
    MetricsSettings { per_campaign }
}

fn resolve_kafka(raw: RawKafka, errors: &mut Collector<'_>) -> Kafka {
    let RawKafka {
        brokers,
        properties,
    } = raw;
    let brokers = errors.check(
        brokers,
        "kafka.brokers",
        |brokers| {
            !brokers.is_empty()
                && brokers.split(',').all(|b| {
                    b.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                })
        },
        "must be a comma-separated list of host:port",
    );
    for key in properties.keys() {
        if let Some(why) = crate::kafka::properties::refusal(key) {
            let span = errors.find(&format!("\"{key}\""));
            errors.error(
                span,
                format!("kafka.properties.{key}"),
                format!("adstream sets this property itself and it may not be changed: {why}"),
            );
        }
    }
    Kafka {
        brokers,
        properties,
    }
}

/// Whether `name` is a valid Kafka topic name.
fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
}

const TOPIC_NAME: &str = "must be a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'";

fn resolve_topics(raw: RawTopics, errors: &mut Collector<'_>) -> Topics {
    let RawTopics {
        campaigns,
        impressions,
        clicks,
        conversions,
        served,
        deadletter,
        budget_status,
        partitions,
        replication,
    } = raw;
    let mut name =
        |v: Spanned<String>, field: &str| errors.check(v, field, |n| valid_topic(n), TOPIC_NAME);
    let campaigns = name(campaigns, "topics.campaigns");
    let impressions = name(impressions, "topics.impressions");
    let clicks = name(clicks, "topics.clicks");
    let conversions = name(conversions, "topics.conversions");
    let served = name(served, "topics.served");
    let deadletter = name(deadletter, "topics.deadletter");
    let budget_status = name(budget_status, "topics.budget_status");
    Topics {
        campaigns,
        impressions,
        clicks,
        conversions,
        served,
        deadletter,
        budget_status,
        partitions: errors.check(
            partitions,
            "topics.partitions",
            |p| (1..=10_000).contains(p),
            "must be between 1 and 10000",
        ),
        replication: errors.check(
            replication,
            "topics.replication",
            |r| (1..=16).contains(r),
            "must be between 1 and 16",
        ),
    }
}

fn resolve_checkpoint(raw: RawCheckpoint, errors: &mut Collector<'_>) -> Checkpoint {
    let RawCheckpoint { interval_ms, fsync } = raw;
    Checkpoint {
        interval_ms: errors.check(
            interval_ms,
            "checkpoint.interval_ms",
            |i| *i >= 10,
            "must be at least 10",
        ),
        fsync,
    }
}

fn resolve_time(raw: RawTime, checkpoint: Checkpoint, errors: &mut Collector<'_>) -> SourceConfig {
    let RawTime {
        tick_ms,
        lateness_ms,
        max_skew_ms,
    } = raw;
    let d = SourceConfig::default();
    SourceConfig {
        tick_ms: errors.check(
            tick_ms,
            "time.tick_ms",
            |t| (1..=60_000).contains(t),
            "must be between 1 and 60000",
        ),
        lateness_ms: errors.check(
            lateness_ms,
            "time.lateness_ms",
            |l| *l >= 0,
            "must not be negative",
        ),
        max_skew_ms: errors.check(
            max_skew_ms,
            "time.max_skew_ms",
            |s| *s >= 0,
            "must not be negative",
        ),
        checkpoint_interval_ms: i64::try_from(checkpoint.interval_ms).unwrap_or(i64::MAX),
        batch: d.batch,
        serving_batch: d.serving_batch,
        poll_interval: d.poll_interval,
    }
}

fn resolve_health(raw: RawHealth, errors: &mut Collector<'_>) -> MonitorSettings {
    let RawHealth {
        interval_ms,
        broker_timeout_ms,
        max_lag_messages,
    } = raw;
    MonitorSettings {
        interval: Duration::from_millis(errors.check(
            interval_ms,
            "health.interval_ms",
            |i| (50..=60_000).contains(i),
            "must be between 50 and 60000",
        )),
        timeout: Duration::from_millis(errors.check(
            broker_timeout_ms,
            "health.broker_timeout_ms",
            |t| (100..=300_000).contains(t),
            "must be between 100 and 300000",
        )),
        max_lag: errors.check(
            max_lag_messages,
            "health.max_lag_messages",
            |m| *m >= 1,
            "must be at least 1",
        ),
    }
}

fn resolve_attribution(raw: RawAttribution, errors: &mut Collector<'_>) -> Windows {
    let RawAttribution {
        click_window_ms,
        view_window_ms,
    } = raw;
    Windows {
        click_ms: errors.check(
            click_window_ms,
            "attribution.click_window_ms",
            |w| *w > 0,
            "must be positive",
        ),
        view_ms: errors.check(
            view_window_ms,
            "attribution.view_window_ms",
            |w| *w > 0,
            "must be positive",
        ),
    }
}

fn resolve_billing(
    raw: RawBilling,
    windows: Windows,
    errors: &mut Collector<'_>,
) -> (Horizons, usize) {
    let RawBilling {
        impression_horizon_ms,
        event_horizon_ms,
        max_clock_skew_ms,
        max_message_bytes,
    } = raw;
    let event_ms = errors.check(
        event_horizon_ms,
        "billing.event_horizon_ms",
        |e| *e >= 60_000,
        "must be at least 60000 (one minute)",
    );
    let horizons = Horizons {
        impression_ms: errors.check(
            impression_horizon_ms,
            "billing.impression_horizon_ms",
            |i| (60_000..=event_ms).contains(i),
            "must be at least 60000 (one minute) and at most billing.event_horizon_ms",
        ),
        event_ms,
        conversion_ms: windows.click_ms.saturating_add(CONVERSION_SLACK_MS),
        skew_ms: errors.check(
            max_clock_skew_ms,
            "billing.max_clock_skew_ms",
            |s| (0..=3_600_000).contains(s),
            "must be between 0 and 3600000 (one hour)",
        ),
    };
    let max_message_bytes = errors.check(
        max_message_bytes,
        "billing.max_message_bytes",
        |b| (256..=16 << 20).contains(b),
        "must be between 256 and 16 MiB",
    );
    (horizons, max_message_bytes)
}

fn resolve_api(raw: RawApi, errors: &mut Collector<'_>) -> Api {
    let RawApi {
        listen,
        admin_listen,
        admin_token,
        advertiser_tokens,
        header_read_timeout_ms,
        idle_timeout_ms,
        max_connections,
        shutdown_grace_ms,
    } = raw;
    let listen_span = listen.span();
    let listen = listen
        .into_inner()
        .parse::<SocketAddr>()
        .unwrap_or_else(|_| {
            errors.error(
                listen_span,
                "api.listen",
                "must be an address such as 127.0.0.1:8080",
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
    let admin_listen = admin_listen.and_then(|admin| {
        let span = admin.span();
        match admin.into_inner().parse::<SocketAddr>() {
            Err(_) => {
                errors.error(
                    span,
                    "api.admin_listen",
                    "must be an address such as 127.0.0.1:9090",
                );
                None
            }
            Ok(addr) if addr == listen && addr.port() != 0 => {
                errors.error(
                    span,
                    "api.admin_listen",
                    "must differ from api.listen (the admin routes get a listener of their own)",
                );
                None
            }
            Ok(addr) => Some(addr),
        }
    });
    let advertiser_tokens = advertiser_tokens
        .into_iter()
        .map(|(advertiser, token)| {
            let field = format!("api.advertiser_tokens.{advertiser}");
            if adstream_operators::events::check_id(&advertiser).is_err() {
                errors.error(token.span(), &field, "the key must be an advertiser id");
            }
            let token = errors.check(
                token,
                &field,
                |t| {
                    let t = t.as_written();
                    match t.strip_prefix("env:").or_else(|| t.strip_prefix("file:")) {
                        Some(target) => !target.trim().is_empty(),
                        None => t.chars().count() >= MIN_READ_TOKEN,
                    }
                },
                "must be at least 16 characters (or env:NAME / file:PATH)",
            );
            (advertiser, token)
        })
        .collect();
    let admin_token = admin_token.map(|token| {
        errors.check(
            token,
            "api.admin_token",
            |t| !t.as_written().trim().is_empty(),
            "must not be empty (a literal, env:NAME or file:PATH)",
        )
    });
    let mut timeout = |v: Spanned<u64>, field: &str| {
        Duration::from_millis(errors.check(
            v,
            field,
            |ms| (100..=3_600_000).contains(ms),
            "must be between 100 and 3600000 (an hour)",
        ))
    };
    let header_read_timeout = timeout(header_read_timeout_ms, "api.header_read_timeout_ms");
    let idle_timeout = timeout(idle_timeout_ms, "api.idle_timeout_ms");
    let limits = Limits {
        header_read_timeout,
        idle_timeout,
        max_connections: errors.check(
            max_connections,
            "api.max_connections",
            |c| (1..=1_000_000).contains(c),
            "must be between 1 and 1000000 (and below the process's open-file limit)",
        ),
        shutdown_grace: Duration::from_millis(errors.check(
            shutdown_grace_ms,
            "api.shutdown_grace_ms",
            |g| *g <= 600_000,
            "must be at most 600000 (ten minutes)",
        )),
    };
    Api {
        listen,
        admin_listen,
        admin_token,
        advertiser_tokens,
        limits,
    }
}

fn resolve_serving(raw: RawServing, pacing: &PacingConfig, errors: &mut Collector<'_>) -> Serving {
    let RawServing {
        reserve_cpm,
        per_advertiser,
        max_candidates,
        prerank_candidates,
        queue,
        public_url,
        burl_base,
        seat,
        no_bid,
    } = raw;
    if let Some(old) = burl_base {
        errors.error(
            old.span(),
            "serving.burl_base",
            "was replaced by `serving.public_url`, the API's public base URL (burl is {public_url}/v1/billing)",
        );
    }
    let public_url = public_url.map(|url| {
        errors
            .check(
                url,
                "serving.public_url",
                |u| {
                    (u.starts_with("http://") || u.starts_with("https://"))
                        && !u.contains(['?', '#', ' '])
                },
                "must be an http(s) base URL without query, such as https://ads.example.com",
            )
            .trim_end_matches('/')
            .to_string()
    });
    let seat = errors.check(
        seat,
        "serving.seat",
        |s| adstream_operators::events::check_id(s).is_ok(),
        "must be a non-empty id",
    );
    let nbr_body = errors.check(
        no_bid,
        "serving.no_bid",
        |n| n == "204" || n == "nbr",
        "must be \"204\" (an empty answer) or \"nbr\" (a BidResponse with its reason)",
    ) == "nbr";
    let reserve_cpm = errors.check(
        reserve_cpm,
        "serving.reserve_cpm",
        |r| r.is_finite() && *r >= 0.0,
        "must not be negative",
    );
    let max_candidates = errors.check(
        max_candidates,
        "serving.max_candidates",
        |m| *m >= 1,
        "must be at least 1",
    );
    let prerank_candidates = match prerank_candidates {
        Some(p) => errors.check(
            p,
            "serving.prerank_candidates",
            |p| *p >= max_candidates,
            "must be at least serving.max_candidates (pre-ranking keeps that many of them)",
        ),
        None => max_candidates.saturating_mul(2),
    };
    Serving {
        reserve_ecpm_micros: (reserve_cpm * 1e6).round() as u64,
        per_advertiser: errors.check(
            per_advertiser,
            "serving.per_advertiser",
            |p| *p >= 1,
            "must be at least 1",
        ),
        max_candidates,
        prerank_candidates,
        reservation_ttl_ms: pacing.reservation_ttl_ms,
        queue: errors.check(queue, "serving.queue", |q| *q >= 1, "must be at least 1"),
        public_url,
        seat,
        nbr_body,
    }
}

fn resolve_currency(
    raw: RawCurrency,
    errors: &mut Collector<'_>,
) -> adstream_operators::serve::currency::Rates {
    use adstream_operators::serve::currency::{RateError, Rates};
    let RawCurrency { account, rates } = raw;
    let (account_span, rates_span) = (account.span(), rates.span());
    match Rates::new(account.get_ref(), rates.get_ref()) {
        Ok(table) => table,
        Err(e) => {
            let (span, field) = match &e {
                RateError::Code(c) if c.eq_ignore_ascii_case(account.get_ref()) => {
                    (account_span, "currency.account")
                }
                _ => (rates_span, "currency.rates"),
            };
            errors.error(span, field, e.to_string());
            Rates::default()
        }
    }
}

fn resolve_pacing(raw: RawPacing, windows: Windows, errors: &mut Collector<'_>) -> PacingConfig {
    let RawPacing {
        enabled,
        slots,
        interval_ms,
        horizon_ms,
        min_pass,
        rate_smoothing,
        profile_smoothing,
        reservation_ttl_ms,
        publish_ms,
        conversion_delay_ms,
    } = raw;
    let interval_ms = errors.check(
        interval_ms,
        "pacing.interval_ms",
        |i| (100..=3_600_000).contains(i),
        "must be between 100 and 3600000",
    );
    let mut fraction = |v: Spanned<f64>, field: &str| {
        errors.check(
            v,
            field,
            |f| *f > 0.0 && *f <= 1.0,
            "must be above 0 and at most 1",
        )
    };
    let min_pass = fraction(min_pass, "pacing.min_pass");
    let rate_smoothing = fraction(rate_smoothing, "pacing.rate_smoothing");
    let profile_smoothing = fraction(profile_smoothing, "pacing.profile_smoothing");
    PacingConfig {
        enabled: enabled.into_inner(),
        slots: errors.check(
            slots,
            "pacing.slots",
            |s| (1..=1_440).contains(s),
            "must be between 1 and 1440",
        ),
        interval_ms,
        horizon_ms: errors.check(
            horizon_ms,
            "pacing.horizon_ms",
            |h| *h >= interval_ms,
            "must be at least pacing.interval_ms",
        ),
        min_pass,
        rate_smoothing,
        profile_smoothing,
        reservation_ttl_ms: errors.check(
            reservation_ttl_ms,
            "pacing.reservation_ttl_ms",
            |t| *t >= 1_000,
            "must be at least 1000",
        ),
        publish_ms: errors.check(
            publish_ms,
            "pacing.publish_ms",
            |p| (10..=1_000).contains(p),
            "must be between 10 and 1000 (serving must see a change within a second)",
        ),
        conversion_delay_ms: errors.check(
            conversion_delay_ms,
            "pacing.conversion_delay_ms",
            |d| *d >= 1_000,
            "must be at least 1000",
        ),
        // Conversions are expected within the attribution window.
        conversion_window_ms: windows.click_ms,
    }
}

fn resolve_labels(raw: RawLabels, errors: &mut Collector<'_>) -> LabelConfig {
    let RawLabels {
        click_window_ms,
        impression_wait_ms,
        conversion_window_ms,
        max_pending,
    } = raw;
    let mut window = |v: Spanned<i64>, field: &str| {
        errors.check(v, field, |w| *w >= 100, "must be at least 100")
    };
    let click_window_ms = window(click_window_ms, "labels.click_window_ms");
    let impression_wait_ms = window(impression_wait_ms, "labels.impression_wait_ms");
    let conversion_window_ms = window(conversion_window_ms, "labels.conversion_window_ms");
    LabelConfig {
        click_window_ms,
        impression_wait_ms,
        conversion_window_ms,
        max_pending: errors.check(
            max_pending,
            "labels.max_pending",
            |m| *m >= 1,
            "must be at least 1",
        ),
    }
}

fn resolve_history(raw: RawHistory, errors: &mut Collector<'_>) -> HistoryConfig {
    let RawHistory {
        recent_clicks,
        retention_hours,
    } = raw;
    HistoryConfig {
        recent_clicks: errors.check(
            recent_clicks,
            "history.recent_clicks",
            |n| *n <= 256,
            "must be at most 256",
        ),
        retention_ms: errors.check(
            retention_hours,
            "history.retention_hours",
            |h| (24..=24 * 366).contains(h),
            "must be between 24 (the counts' window) and 8784 (a year)",
        ) * HOUR_MS,
    }
}

/// The feature spec at `path`, or the shipped one.
fn feature_spec(path: Option<&str>) -> Result<FeatureSpec, String> {
    match path {
        None => FeatureSpec::parse(DEFAULT_SPEC).map_err(|e| e.to_string()),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
            FeatureSpec::parse(&text).map_err(|e| format!("{path}: {e}"))
        }
    }
}

fn resolve_model(raw: RawModel, errors: &mut Collector<'_>) -> Model {
    let RawModel {
        enabled,
        features,
        device,
        embedding_dim,
        cross_layers,
        hidden,
        learning_rate,
        weight_decay,
        batch_size,
        conversion_weight,
        conversion_head_rate,
        snapshot_ms,
        validation_window,
        average_examples,
        keep_versions,
        queue,
        guards,
    } = raw;
    let d = TrainerConfig::default();
    let span = features.as_ref().map_or(0..0, |f| f.span());
    let features =
        feature_spec(features.as_ref().map(|f| f.get_ref().as_str())).unwrap_or_else(|e| {
            errors.error(span, "model.features", e);
            empty_spec()
        });
    let device_span = device.span();
    let device = match device.into_inner().as_str() {
        "auto" => DevicePreference::Auto,
        "cpu" => DevicePreference::Cpu,
        "cuda" => DevicePreference::Cuda,
        _ => {
            errors.error(
                device_span,
                "model.device",
                "must be \"auto\", \"cpu\" or \"cuda\"",
            );
            DevicePreference::Auto
        }
    };
    let model = ModelConfig {
        embedding_dim: errors.check(
            embedding_dim,
            "model.embedding_dim",
            |e| (1..=256).contains(e),
            "must be between 1 and 256",
        ),
        cross_layers: errors.check(
            cross_layers,
            "model.cross_layers",
            |c| *c <= 8,
            "must be at most 8",
        ),
        hidden: errors.check(
            hidden,
            "model.hidden",
            |h| !h.is_empty() && h.len() <= 8 && h.iter().all(|w| (1..=4096).contains(w)),
            "must list 1 to 8 layer widths, each between 1 and 4096",
        ),
    };
    let optimizer = AdamWConfig {
        learning_rate: errors.check(
            learning_rate,
            "model.learning_rate",
            |l| *l > 0.0 && *l <= 1.0,
            "must be above 0 and at most 1",
        ),
        weight_decay: errors.check(
            weight_decay,
            "model.weight_decay",
            |w| (0.0..1.0).contains(w),
            "must be at least 0 and below 1",
        ),
        beta1: d.optimizer.beta1,
        beta2: d.optimizer.beta2,
        eps: d.optimizer.eps,
    };
    let trainer = TrainerConfig {
        model,
        optimizer,
        batch_size: errors.check(
            batch_size,
            "model.batch_size",
            |b| (1..=65_536).contains(b),
            "must be between 1 and 65536",
        ),
        max_batch_wait: d.max_batch_wait,
        conversion_weight: errors.check(
            conversion_weight,
            "model.conversion_weight",
            |c| (0.0..=100.0).contains(c),
            "must be between 0 and 100",
        ),
        conversion_head_rate: errors.check(
            conversion_head_rate,
            "model.conversion_head_rate",
            |c| *c > 0.0 && *c <= 1.0,
            "must be above 0 and at most 1",
        ),
        snapshot_interval: Duration::from_millis(errors.check(
            snapshot_ms,
            "model.snapshot_ms",
            |s| *s >= 100,
            "must be at least 100",
        )),
        validation_window: errors.check(
            validation_window,
            "model.validation_window",
            |v| (10..=10_000_000).contains(v),
            "must be between 10 and 10000000",
        ),
        average_examples: errors.check(
            average_examples,
            "model.average_examples",
            |a| *a <= 100_000_000,
            "must be at most 100000000",
        ),
        guards: resolve_guards(guards, errors),
        keep_versions: errors.check(
            keep_versions,
            "model.keep_versions",
            |k| *k >= 1,
            "must be at least 1",
        ),
        device,
        queue: errors.check(queue, "model.queue", |q| *q >= 1, "must be at least 1"),
    };
    Model {
        enabled: enabled.into_inner(),
        features,
        trainer,
    }
}

/// A spec with no features: the placeholder of a pipeline that is not returned.
fn empty_spec() -> FeatureSpec {
    FeatureSpec {
        description: String::new(),
        version: 0,
        features: Vec::new(),
        prior_offset: false,
        conversion_prior_offset: false,
        conversion_interactions: Vec::new(),
    }
}

fn resolve_guards(raw: RawGuards, errors: &mut Collector<'_>) -> GuardConfig {
    let RawGuards {
        min_examples,
        min_positives,
        max_auc_drop,
        calibration,
        max_prediction_shift,
        min_conversion_positives,
    } = raw;
    let calibration_span = calibration.span();
    let calibration = match calibration.into_inner()[..] {
        [lo, hi] if lo > 0.0 && lo < hi => [lo, hi],
        _ => {
            errors.error(
                calibration_span,
                "model.guards.calibration",
                "must be [lo, hi] with 0 < lo < hi",
            );
            GuardConfig::default().calibration
        }
    };
    GuardConfig {
        min_examples: errors.check(
            min_examples,
            "model.guards.min_examples",
            |m| *m >= 1,
            "must be at least 1",
        ),
        min_positives: min_positives.into_inner(),
        max_auc_drop: errors.check(
            max_auc_drop,
            "model.guards.max_auc_drop",
            |m| (0.0..=1.0).contains(m),
            "must be between 0 and 1",
        ),
        calibration,
        max_prediction_shift: errors.check(
            max_prediction_shift,
            "model.guards.max_prediction_shift",
            |m| *m >= 1.0,
            "must be at least 1",
        ),
        min_conversion_positives: min_conversion_positives.into_inner(),
    }
}

fn resolve_reporting(raw: RawReporting, errors: &mut Collector<'_>) -> Vec<ReportSpec> {
    let RawReporting { enabled, reports } = raw;
    if !enabled.into_inner() {
        // Disabled: the entries are neither run nor checked.
        return Vec::new();
    }
    let Some(entries) = reports else {
        return ReportSpec::defaults();
    };
    let mut names = BTreeSet::new();
    let mut topics = BTreeSet::new();
    let mut specs = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let field = format!("reporting.reports[{i}]");
        let name_span = entry.name.span();
        let topic_span = entry.topic.as_ref().map_or(name_span.clone(), |t| t.span());
        let Some(spec) = resolve_report(entry, &field, errors) else {
            continue;
        };
        if !names.insert(spec.name.clone()) {
            errors.error(
                name_span,
                format!("{field}.name"),
                format!("{:?} is declared twice", spec.name),
            );
        } else if !topics.insert(spec.topic.clone()) {
            errors.error(
                topic_span,
                format!("{field}.topic"),
                format!("{:?} is used by two reports", spec.topic),
            );
        }
        specs.push(spec);
    }
    specs
}

/// One `[[reporting.reports]]` entry (`field`), or `None` after its errors.
fn resolve_report(raw: RawReport, field: &str, errors: &mut Collector<'_>) -> Option<ReportSpec> {
    let RawReport {
        name,
        topic,
        dimensions,
        window_ms,
        final_after_ms,
        update_ms,
        measures,
    } = raw;
    // Where each key of the spec is (a left-out key: the one its default comes from).
    let span_of = {
        let name = name.span();
        let topic = topic.as_ref().map_or(name.clone(), |t| t.span());
        let dimensions = dimensions.span();
        let measures = measures.as_ref().map_or(name.clone(), |m| m.span());
        let window = window_ms.span();
        let final_after = final_after_ms.as_ref().map_or(window.clone(), |f| f.span());
        let update = update_ms.as_ref().map_or(window.clone(), |u| u.span());
        move |key: &str| match key {
            "name" => name.clone(),
            "topic" => topic.clone(),
            "dimensions" => dimensions.clone(),
            "measures" => measures.clone(),
            "final_after_ms" => final_after.clone(),
            "update_ms" => update.clone(),
            _ => window.clone(),
        }
    };
    let before = errors.len();
    let mut dimension_list = Vec::new();
    for d in dimensions.into_inner() {
        match Dimension::parse(d.get_ref()) {
            Ok(dimension) => dimension_list.push(dimension),
            Err(e) => errors.error(d.span(), format!("{field}.dimensions"), e.to_string()),
        }
    }
    let measure_list = match measures {
        None => Measure::ALL.to_vec(),
        Some(list) => {
            let mut out = Vec::new();
            for m in list.into_inner() {
                match Measure::parse(m.get_ref()) {
                    Ok(measure) => out.push(measure),
                    Err(e) => errors.error(m.span(), format!("{field}.measures"), e.to_string()),
                }
            }
            out
        }
    };
    if errors.len() > before {
        return None;
    }
    let window_ms = window_ms.into_inner();
    let name = name.into_inner();
    let spec = ReportSpec {
        topic: topic.map_or_else(|| format!("report.{name}"), Spanned::into_inner),
        name,
        dimensions: dimension_list,
        window_ms,
        final_after_ms: final_after_ms.map_or(window_ms, Spanned::into_inner),
        update_ms: update_ms.map_or(1_000, Spanned::into_inner),
        measures: measure_list,
    };
    match spec.validate() {
        Ok(()) => {}
        Err(SpecError::Invalid {
            field: key,
            message,
        }) => {
            errors.error(span_of(key), format!("{field}.{key}"), message);
            return None;
        }
        Err(other) => {
            errors.error(span_of("name"), field, other.to_string());
            return None;
        }
    }
    if !valid_topic(&spec.topic) {
        errors.error(span_of("topic"), format!("{field}.topic"), TOPIC_NAME);
        return None;
    }
    Some(spec)
}
