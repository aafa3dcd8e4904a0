//! The API's side of serving: validated requests handed to the workers' serving operators.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adstream_operators::request::AdRequest;
use adstream_operators::serve::currency::Rates;
use adstream_operators::serve::explain::Nbr;
use adstream_operators::serve::operator::{ServeOutcome, ServeRequest};
use serde_json::json;
use timely::scheduling::SyncActivator;

/// One worker's request queue and the activator that wakes its serving operator.
pub struct WorkerQueue {
    /// Bounded queue.
    pub sender: SyncSender<ServeRequest>,
    /// Published by the operator once built.
    pub activator: Arc<Mutex<Option<SyncActivator>>>,
}

/// The API's serving settings: where billing notices go, the seat, currencies, how a no-bid
/// is answered.
#[derive(Debug, Clone)]
pub struct ServingSettings {
    /// The API's public base URL (no trailing slash).
    pub public_url: String,
    /// adstream's buyer seat.
    pub seat: String,
    /// Exchange rates.
    pub rates: Rates,
    /// Answer a no-bid with a BidResponse carrying `nbr` (else an empty 204).
    pub nbr_body: bool,
}

impl Default for ServingSettings {
    fn default() -> Self {
        ServingSettings {
            public_url: "http://127.0.0.1:8080".into(),
            seat: "adstream".into(),
            rates: Rates::default(),
            nbr_body: false,
        }
    }
}

/// What `POST /v1/openrtb` needs.
pub struct Serving {
    /// The process's workers.
    pub queues: Vec<WorkerQueue>,
    next: AtomicUsize,
    /// Settings.
    pub settings: ServingSettings,
}

/// How a request ended.
pub enum Answer {
    /// Wins to return.
    Filled(ServeOutcome),
    /// Nothing to bid, and why; with the per-campaign explanation in debug mode.
    NoFill(Nbr, Option<ServeOutcome>),
    /// Every queue is full: 503.
    Overloaded,
}

impl Serving {
    /// Queues for `queues.len()` workers.
    pub fn new(queues: Vec<WorkerQueue>, settings: ServingSettings) -> Self {
        Serving {
            queues,
            next: AtomicUsize::new(0),
            settings,
        }
    }

    /// The billing notice URL of a win: `{public_url}/v1/billing?token=...&u=...`.
    pub fn burl(&self, token: &str, user_id: Option<&str>) -> String {
        let mut url = format!("{}/v1/billing?token={token}", self.settings.public_url);
        if let Some(user) = user_id {
            url.push_str("&u=");
            url.extend(form_urlencoded::byte_serialize(user.as_bytes()));
        }
        url
    }

    /// Hands `request` to a worker (round robin, skipping full queues) and waits at most until
    /// its `tmax` for the answer.
    pub async fn submit(&self, request: AdRequest, received: Instant) -> Answer {
        let tmax = Duration::from_millis(request.tmax_ms);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut job = ServeRequest {
            request,
            received,
            reply: Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        };
        let n = self.queues.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut queued = false;
        for i in 0..n {
            let q = &self.queues[(start + i) % n];
            match q.sender.try_send(job) {
                Ok(()) => {
                    if let Ok(slot) = q.activator.lock() {
                        if let Some(a) = slot.as_ref() {
                            let _ = a.activate();
                        }
                    }
                    queued = true;
                    break;
                }
                Err(TrySendError::Full(back) | TrySendError::Disconnected(back)) => job = back,
            }
        }
        if !queued {
            return Answer::Overloaded;
        }
        let left = tmax.saturating_sub(received.elapsed());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(outcome)) if !outcome.wins.is_empty() => Answer::Filled(outcome),
            Ok(Ok(outcome)) if outcome.late => Answer::NoFill(Nbr::INSUFFICIENT_TIME, None),
            Ok(Ok(mut outcome)) => {
                let nbr = outcome.nbr.take().unwrap_or(Nbr::NO_MATCHING_CAMPAIGN);
                let debug = outcome.explanation.is_some().then_some(outcome);
                Answer::NoFill(nbr, debug)
            }
            _ => Answer::NoFill(Nbr::INSUFFICIENT_TIME, None),
        }
    }

    /// The OpenRTB BidResponse to request `request_id` (of user `user_id`) for `outcome`, priced
    /// in `currency` (worth `rate` units of the account currency).
    pub fn response(
        &self,
        request_id: &str,
        user_id: Option<&str>,
        outcome: &ServeOutcome,
        (currency, rate): (&str, f64),
    ) -> serde_json::Value {
        let bids: Vec<serde_json::Value> = outcome
            .wins
            .iter()
            .map(|w| {
                let c = &w.win.candidate;
                let mut bid = json!({
                    "id": format!("{request_id}-{}", w.win.imp_id),
                    "impid": w.win.imp_id,
                    "price": Rates::price(w.win.price_ecpm_micros, rate),
                    "adid": c.ad_id,
                    "crid": c.ad_id,
                    "cid": c.campaign_id,
                    "adomain": w.adomain,
                    "cat": w.cat,
                    "mtype": w.markup.mtype,
                    "burl": self.burl(&w.token, user_id),
                    "ext": {
                        "billing_token": w.token,
                        "billing": c.billing.as_str(),
                        "charge_micros": w.win.charge_micros,
                        "pctr": c.pctr,
                        "pcvr": c.pcvr,
                        "model_version": outcome.model_version,
                    }
                });
                let fields = [
                    ("w", w.markup.w.map(serde_json::Value::from)),
                    ("h", w.markup.h.map(serde_json::Value::from)),
                    ("adm", w.markup.adm.clone().map(serde_json::Value::from)),
                    ("nurl", w.markup.nurl.clone().map(serde_json::Value::from)),
                    ("bundle", w.bundle.clone().map(serde_json::Value::from)),
                ];
                for (key, value) in fields {
                    if let Some(v) = value {
                        bid[key] = v;
                    }
                }
                bid
            })
            .collect();
        let mut response = json!({
            "id": request_id,
            "cur": currency,
            "seatbid": [{ "seat": self.settings.seat, "bid": bids }],
        });
        if let Some(explanation) = &outcome.explanation {
            response["ext"] = json!({ "debug": { "campaigns": explanation } });
        }
        response
    }

    /// The BidResponse of a no-bid: its `nbr`, and the explanation in debug mode.
    pub fn no_bid_response(
        request_id: &str,
        nbr: Nbr,
        debug: Option<&ServeOutcome>,
    ) -> serde_json::Value {
        let mut response = json!({ "id": request_id, "nbr": nbr.0 });
        if let Some(explanation) = debug.and_then(|o| o.explanation.as_ref()) {
            response["ext"] = json!({ "debug": { "campaigns": explanation } });
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adstream_operators::request::parse_request;

    fn request(tmax: u64) -> AdRequest {
        parse_request(format!(r#"{{"id":"r","imp":[{{"id":"1"}}],"tmax":{tmax}}}"#).as_bytes())
            .unwrap()
    }

    /// A full queue answers 503 at once; a request nobody answers in time gets 204 at `tmax`.
    #[tokio::test]
    async fn overload_and_deadline() {
        let (sender, _receiver) = std::sync::mpsc::sync_channel(1);
        let serving = Serving::new(
            vec![WorkerQueue {
                sender,
                activator: Arc::new(Mutex::new(None)),
            }],
            ServingSettings::default(),
        );
        let started = Instant::now();
        assert!(matches!(
            serving.submit(request(30), Instant::now()).await,
            Answer::NoFill(Nbr::INSUFFICIENT_TIME, None)
        ));
        assert!(started.elapsed() >= Duration::from_millis(30));
        let started = Instant::now();
        assert!(matches!(
            serving.submit(request(30), Instant::now()).await,
            Answer::Overloaded
        ));
        assert!(
            started.elapsed() < Duration::from_millis(30),
            "overload must answer without waiting"
        );
    }
}
