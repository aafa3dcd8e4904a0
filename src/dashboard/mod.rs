//! The dashboard at `GET /`: a plain HTML page with one small chart library (uPlot, vendored
//! in `assets/`), fed by `GET /v1/dashboard` from a [`History`] this process samples itself.
//!
//! The history keeps, per campaign, spend vs budget vs the pacing target (for the
//! [`TRACKED_CAMPAIGNS`] campaigns with the most spend at each sample: a catalog of 100,000
//! campaigns costs neither 100,000 series per sample nor a pass building every campaign's
//! status while the worker waits to update the book); requests per second and fill rate; the model's click AUC and calibration; dead letters by reason. It holds at most
//! [`MAX_SAMPLES`] samples: when full, every other one is dropped and the period doubles, so a
//! day of history fits in bounded memory at a resolution that degrades gracefully.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::live::LiveState;
use crate::metrics::Metrics;
use adstream_operators::ranker::scoring::ModelSlot;
use adstream_operators::ranker::trainer::TrainerControl;
use adstream_operators::time::EventTime;

/// Most samples kept.
pub const MAX_SAMPLES: usize = 1_800;

/// Campaigns sampled each time: those with the most spend on their latest budget day (every
/// campaign, in a catalog this small or smaller). The page shows the first of them.
pub const TRACKED_CAMPAIGNS: usize = 100;

/// One campaign at one sample.
#[derive(Clone, Debug, PartialEq)]
struct CampaignPoint {
    spend_micros: u64,
    budget_micros: u64,
    target_micros: Option<u64>,
}

/// Everything the page plots, at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// When, ms since the epoch.
    pub at_ms: i64,
    campaigns: BTreeMap<String, CampaignPoint>,
    /// Ad requests answered so far (every outcome).
    pub requests: u64,
    /// Of which filled.
    pub filled: u64,
    /// The model in training's click AUC and calibration (progressive validation).
    pub click_auc: Option<f64>,
    /// Its calibration (mean prediction over observed rate).
    pub click_calibration: Option<f64>,
    /// Dead letters so far.
    pub dead_letters: u64,
}

/// The latest state of each campaign (for the page's titles).
#[derive(Clone, Debug, Default)]
struct CampaignNow {
    day: String,
    timezone: String,
    mode: String,
    budget_micros: u64,
    spend_micros: u64,
}

/// The sampled history of this process.
#[derive(Debug)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    period: Duration,
    samples: VecDeque<Sample>,
    campaigns: BTreeMap<String, CampaignNow>,
    /// Campaigns known at the last sample (tracked or not).
    campaigns_known: usize,
    dead_by_reason: BTreeMap<String, u64>,
    live_version: Option<String>,
}

impl History {
    /// An empty history sampled every `period`.
    pub fn new(period: Duration) -> Self {
        History {
            inner: Mutex::new(Inner {
                period,
                samples: VecDeque::new(),
                campaigns: BTreeMap::new(),
                campaigns_known: 0,
                dead_by_reason: BTreeMap::new(),
                live_version: None,
            }),
        }
    }

    /// The current sampling period (it doubles each time the history is thinned).
    pub fn period(&self) -> Duration {
        self.inner
            .lock()
            .map(|i| i.period)
            .unwrap_or(Duration::from_secs(2))
    }

    /// Samples the process's state now.
    pub fn sample(
        &self,
        live: &LiveState,
        metrics: &Metrics,
        models: &ModelSlot,
        trainer: Option<&TrainerControl>,
    ) {
        let mut sample = Sample {
            at_ms: EventTime::now().millis(),
            ..Sample::default()
        };
        let mut now = BTreeMap::new();
        let (tracked, known) = live.top(TRACKED_CAMPAIGNS);
        for status in tracked {
            let pacing = status.pacing.as_ref();
            sample.campaigns.insert(
                status.campaign_id.clone(),
                CampaignPoint {
                    spend_micros: status.spend_micros,
                    budget_micros: status.budget_micros,
                    target_micros: pacing.map(|p| p.target_micros),
                },
            );
            now.insert(
                status.campaign_id.clone(),
                CampaignNow {
                    day: status.day.to_string(),
                    timezone: status.timezone.clone(),
                    mode: pacing.map_or_else(
                        || {
                            if status.status == "active" {
                                "pending".to_string()
                            } else {
                                status.status.clone()
                            }
                        },
                        |p| p.mode.clone(),
                    ),
                    budget_micros: status.budget_micros,
                    spend_micros: status.spend_micros,
                },
            );
        }
        for outcome in ["filled", "no_fill", "overloaded", "bad_request"] {
            let n = metrics.requests.with_label_values(&[outcome]).get();
            sample.requests += n;
            if outcome == "filled" {
                sample.filled = n;
            }
        }
        if let Some(status) = trainer.and_then(|t| t.status.lock().ok()) {
            sample.click_auc = status.click.auc;
            sample.click_calibration = status.click.calibration;
        }
        let dead = metrics.dead_letters_by_reason();
        sample.dead_letters = dead.values().sum();
        self.push(
            sample,
            now,
            known,
            dead,
            models.current().map(|m| m.name.clone()),
        );
    }

    /// Stores a sample and the state beside it under one hold of the lock, so that a reader
    /// sees the tracked campaigns with the count of known campaigns taken with them.
    fn push(
        &self,
        sample: Sample,
        campaigns: BTreeMap<String, CampaignNow>,
        campaigns_known: usize,
        dead: BTreeMap<String, u64>,
        live_version: Option<String>,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.samples.push_back(sample);
        if inner.samples.len() > MAX_SAMPLES {
            let kept: VecDeque<Sample> = inner.samples.drain(..).step_by(2).collect();
            inner.samples = kept;
            inner.period *= 2;
        }
        inner.campaigns = campaigns;
        inner.campaigns_known = campaigns_known;
        inner.dead_by_reason = dead;
        inner.live_version = live_version;
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.samples.len()).unwrap_or(0)
    }

    /// Whether no sample has been taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The document of `GET /v1/dashboard` (see `assets/dashboard.js` for its use).
    pub fn document(&self) -> Value {
        let Ok(inner) = self.inner.lock() else {
            return json!({});
        };
        let samples = &inner.samples;
        let t: Vec<i64> = samples.iter().map(|s| s.at_ms).collect();
        let campaigns: Vec<Value> = inner
            .campaigns
            .iter()
            .map(|(id, now)| {
                let points: Vec<Option<&CampaignPoint>> =
                    samples.iter().map(|s| s.campaigns.get(id)).collect();
                json!({
                    "campaign_id": id,
                    "day": now.day,
                    "timezone": now.timezone,
                    "mode": now.mode,
                    "budget_micros": now.budget_micros,
                    "spend_micros": now.spend_micros,
                    "series": {
                        "t": t,
                        "spend_micros": points.iter().map(|p| p.map(|p| p.spend_micros)).collect::<Vec<_>>(),
                        "budget_micros": points.iter().map(|p| p.map(|p| p.budget_micros)).collect::<Vec<_>>(),
                        "target_micros": points.iter().map(|p| p.and_then(|p| p.target_micros)).collect::<Vec<_>>(),
                    }
                })
            })
            .collect();
        // Rates are differences between consecutive samples (the first has none).
        let mut rps = Vec::with_capacity(samples.len());
        let mut fill = Vec::with_capacity(samples.len());
        let mut prev: Option<&Sample> = None;
        for s in samples {
            match prev {
                Some(p) if s.at_ms > p.at_ms && s.requests >= p.requests => {
                    let requests = s.requests - p.requests;
                    let secs = (s.at_ms - p.at_ms) as f64 / 1000.0;
                    rps.push(Some(requests as f64 / secs));
                    fill.push(
                        (requests > 0)
                            .then(|| s.filled.saturating_sub(p.filled) as f64 / requests as f64),
                    );
                }
                _ => {
                    rps.push(None);
                    fill.push(None);
                }
            }
            prev = Some(s);
        }
        json!({
            "now_ms": EventTime::now().millis(),
            "sample_ms": inner.period.as_millis() as u64,
            "campaigns": campaigns,
            "campaigns_known": inner.campaigns_known,
            "traffic": { "t": t, "requests_per_second": rps, "fill_rate": fill },
            "model": {
                "live_version": inner.live_version,
                "t": t,
                "click_auc": samples.iter().map(|s| s.click_auc).collect::<Vec<_>>(),
                "click_calibration": samples.iter().map(|s| s.click_calibration).collect::<Vec<_>>(),
            },
            "dead_letters": {
                "by_reason": inner.dead_by_reason,
                "t": t,
                "total": samples.iter().map(|s| s.dead_letters).collect::<Vec<_>>(),
            },
        })
    }
}

/// Samples `history` every period until the process ends.
pub async fn sample_forever(
    history: Arc<History>,
    live: Arc<LiveState>,
    metrics: Metrics,
    models: Arc<ModelSlot>,
    trainer: Option<Arc<TrainerControl>>,
) {
    loop {
        history.sample(&live, &metrics, &models, trainer.as_deref());
        tokio::time::sleep(history.period()).await;
    }
}

/// A file the page loads: `(name, content type, bytes)`.
const ASSETS: [(&str, &str, &[u8]); 6] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/dashboard.css"),
    ),
    (
        "uplot.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uplot.min.js"),
    ),
    (
        "uplot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uplot.min.css"),
    ),
    (
        "uplot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("assets/uplot.LICENSE"),
    ),
];

/// The asset called `name`, or 404.
pub fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no asset {name:?}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, requests: u64, filled: u64) -> Sample {
        Sample {
            at_ms,
            requests,
            filled,
            ..Sample::default()
        }
    }

    #[test]
    fn rates_come_from_consecutive_samples() {
        let h = History::new(Duration::from_secs(2));
        for (at, req, fill) in [(0, 0, 0), (2_000, 100, 40), (4_000, 100, 40)] {
            h.push(
                sample(at, req, fill),
                BTreeMap::new(),
                0,
                BTreeMap::new(),
                None,
            );
        }
        let doc = h.document();
        assert_eq!(
            doc["traffic"]["requests_per_second"],
            json!([null, 50.0, 0.0])
        );
        assert_eq!(doc["traffic"]["fill_rate"], json!([null, 0.4, null]));
        assert_eq!(doc["model"]["live_version"], Value::Null);
    }

    #[test]
    fn a_full_history_is_thinned_and_its_period_doubles() {
        let h = History::new(Duration::from_secs(2));
        for i in 0..=MAX_SAMPLES as i64 {
            h.push(sample(i, 0, 0), BTreeMap::new(), 0, BTreeMap::new(), None);
        }
        assert_eq!(h.len(), MAX_SAMPLES / 2 + 1);
        assert_eq!(h.period(), Duration::from_secs(4));
    }

    #[test]
    fn a_large_catalog_samples_only_its_top_spenders() {
        use adstream_operators::records::{DaySpend, LedgerState};
        let live = LiveState::default();
        let n = TRACKED_CAMPAIGNS + 50;
        let today = adstream_operators::time::day::budget_day(EventTime::now(), chrono_tz::UTC);
        for i in 0..n {
            let id = format!("c{i:03}");
            live.define_for_test(&id, "a", 1_000_000, "cpm", 1);
            // The last campaigns spend the most.
            live.apply(&LedgerState::Spend(DaySpend {
                campaign_id: id.into(),
                day: today,
                spend_micros: i as u64,
                overdelivery_micros: 0,
            }));
        }
        let h = History::new(Duration::from_secs(2));
        h.sample(&live, &Metrics::new(), &ModelSlot::default(), None);
        let doc = h.document();
        let ids: Vec<&str> = doc["campaigns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["campaign_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), TRACKED_CAMPAIGNS);
        assert!(
            ids.iter().all(|id| id[1..].parse::<usize>().unwrap() >= 50),
            "{ids:?}"
        );
        assert_eq!(doc["campaigns_known"], json!(n));
    }

    #[test]
    fn assets_are_served_with_their_types() {
        let r = asset("uplot.min.js");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }
}
