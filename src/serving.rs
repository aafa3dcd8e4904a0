//! The API's side of serving: validated requests handed to the workers' serving operators.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adstream_operators::request::AdRequest;
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

/// What `POST /v1/openrtb` needs.
pub struct Serving {
    /// The process's workers.
    pub queues: Vec<WorkerQueue>,
    next: AtomicUsize,
    /// Base of `burl`.
    pub burl_base: String,
}

/// How a request ended.
pub enum Answer {
    /// Wins to return.
    Filled(ServeOutcome),
    /// Nothing qualified, or the deadline passed: 204.
    NoFill,
    /// Every queue is full: 503.
    Overloaded,
}

impl Serving {
    /// Queues for `queues.len()` workers.
    pub fn new(queues: Vec<WorkerQueue>, burl_base: String) -> Self {
        Serving {
            queues,
            next: AtomicUsize::new(0),
            burl_base,
        }
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
            _ => Answer::NoFill,
        }
    }

    /// The OpenRTB BidResponse for `outcome`.
    pub fn response(&self, request_id: &str, outcome: &ServeOutcome) -> serde_json::Value {
        let bids: Vec<serde_json::Value> = outcome
            .wins
            .iter()
            .map(|w| {
                let c = &w.win.candidate;
                json!({
                    "id": format!("{request_id}-{}", w.win.imp_id),
                    "impid": w.win.imp_id,
                    "price": w.win.price_ecpm_micros as f64 / 1e6,
                    "adid": c.ad_id,
                    "crid": c.ad_id,
                    "cid": c.campaign_id,
                    "adomain": [],
                    "burl": format!("{}?token={}", self.burl_base, w.token),
                    "ext": {
                        "billing_token": w.token,
                        "billing": c.billing.as_str(),
                        "charge_micros": w.win.charge_micros,
                        "pctr": c.pctr,
                        "pcvr": c.pcvr,
                        "model_version": outcome.model_version,
                    }
                })
            })
            .collect();
        json!({ "id": request_id, "cur": "USD", "seatbid": [{ "seat": "adstream", "bid": bids }] })
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
            "http://x/b".into(),
        );
        let started = Instant::now();
        assert!(matches!(
            serving.submit(request(30), Instant::now()).await,
            Answer::NoFill
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
