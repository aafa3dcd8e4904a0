//! The serving operator: answers ad requests on a worker from that worker's replica of the
//! catalog and budget state.
//!
//! Requests arrive on a channel from the HTTP API, which wakes the operator through a
//! [`SyncActivator`]; answers go back through each request's reply callback. The replica is the
//! ledger's broadcast output, so every worker sees every campaign's spend and serving never
//! crosses workers. The operator never waits for frontiers or training: it answers what it has.
//! What it keeps and how it answers is a [`ServingReplica`]; this file only moves data.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

use super::auction::Win;
use super::replica::{past_deadline, ServingReplica, REACH_FLUSH};
use super::request::AdRequest;
use crate::checkpoint::follow_frontier;
use crate::events::Billing;
use crate::ledger::operator::LedgerOutput;
use crate::pacing::board::PacingBoard;
use crate::pacing::PacingFeedback;
use crate::ranker::scoring::ModelSlot;
use crate::time::EventTime;
use crate::token::WinClaims;

pub use super::replica::answer;

/// A won slot with its signed billing token.
#[derive(Debug, Clone)]
pub struct SignedWin {
    /// The auction's result.
    pub win: Win,
    /// `billing_token` for the win's events.
    pub token: String,
}

/// The answer to one request.
#[derive(Debug, Clone, Default)]
pub struct ServeOutcome {
    /// Wins, one per filled slot (empty: no fill).
    pub wins: Vec<SignedWin>,
    /// Model that ranked.
    pub model_version: String,
    /// Whether the deadline had passed before the request was reached.
    pub late: bool,
}

/// A request handed to a serving operator.
pub struct ServeRequest {
    /// The validated request.
    pub request: AdRequest,
    /// When the API received it (the `tmax` deadline counts from here).
    pub received: Instant,
    /// Called once with the answer.
    pub reply: Box<dyn FnOnce(ServeOutcome) + Send>,
}

/// A served ad, logged to `ads.served` with what was used to score it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// Request.
    pub request_id: String,
    /// Slot.
    pub imp_id: String,
    /// When it was served.
    pub ts: EventTime,
    /// Winning campaign.
    pub campaign_id: String,
    /// Its advertiser.
    pub advertiser_id: String,
    /// Winning ad.
    pub ad_id: String,
    /// Billing unit.
    pub billing: Billing,
    /// What the billing event will be charged, micros.
    pub charge_micros: u64,
    /// Clearing price as eCPM, micros.
    pub price_ecpm_micros: u64,
    /// Predicted CTR used.
    pub pctr: f64,
    /// Predicted CVR used.
    pub pcvr: f64,
    /// Model used.
    pub model_version: String,
    /// Features: user.
    pub user_id: Option<String>,
    /// Features: country.
    pub country: Option<String>,
    /// Features: device.
    pub device: Option<String>,
    /// Features: interests.
    pub interests: Vec<String>,
    /// Features: tag id of the slot.
    pub tag_id: Option<String>,
    /// Features: `site` or `app`.
    #[serde(default)]
    pub inventory: Option<String>,
    /// Features: the campaign's bid, micros per billing unit.
    #[serde(default)]
    pub bid_micros: u64,
    /// Features: the campaign's targeted interests.
    #[serde(default)]
    pub ad_interests: Vec<String>,
    /// The win's signed billing token: what makes a record read back from `ads.served`
    /// trustworthy (its claims must be this record's; see [`crate::ingest`]).
    #[serde(default)]
    pub billing_token: String,
}

impl Served {
    /// The claims the win's billing token carries (without the signature).
    pub fn claims(&self) -> WinClaims {
        WinClaims {
            request_id: self.request_id.clone(),
            imp_id: self.imp_id.clone(),
            campaign_id: self.campaign_id.clone(),
            advertiser_id: self.advertiser_id.clone(),
            ad_id: self.ad_id.clone(),
            billing: self.billing,
            charge_micros: self.charge_micros,
            issued: self.ts,
            country: self.country.clone(),
            device: self.device.clone(),
        }
    }

    /// The log record of `win` in `request`, with the raw feature values the ranker used
    /// (`ranker::features::FeatureContext::from_served` reads them back for training).
    pub fn from_win(
        request: &AdRequest,
        win: &Win,
        ad_interests: &[String],
        now: EventTime,
        model_version: &str,
    ) -> Served {
        let c = &win.candidate;
        Served {
            request_id: request.id.clone(),
            imp_id: win.imp_id.clone(),
            ts: now,
            campaign_id: c.campaign_id.clone(),
            advertiser_id: c.advertiser_id.clone(),
            ad_id: c.ad_id.clone(),
            billing: c.billing,
            charge_micros: win.charge_micros,
            price_ecpm_micros: win.price_ecpm_micros,
            pctr: c.pctr,
            pcvr: c.pcvr,
            model_version: model_version.to_string(),
            user_id: request.user_id.clone(),
            country: request.country.clone(),
            device: request.device.clone(),
            interests: request.interests.clone(),
            tag_id: request
                .slots
                .iter()
                .find(|s| s.imp_id == win.imp_id)
                .and_then(|s| s.tag_id.clone()),
            inventory: Some(if request.is_site { "site" } else { "app" }.to_string()),
            bid_micros: c.bid_micros,
            ad_interests: ad_interests.to_vec(),
            billing_token: String::new(),
        }
    }

    /// A record for `listed` winning `request`'s first slot, for tests.
    #[cfg(test)]
    pub fn for_test(request: &AdRequest, listed: &crate::catalog::Listed, now: EventTime) -> Self {
        let c = &listed.campaign;
        let win = Win {
            imp_id: request
                .slots
                .first()
                .map_or(String::new(), |s| s.imp_id.clone()),
            candidate: super::auction::Candidate {
                campaign_id: c.campaign_id.clone(),
                advertiser_id: c.advertiser_id.clone(),
                ad_id: c
                    .creatives
                    .first()
                    .map_or(String::new(), |a| a.ad_id.clone()),
                billing: c.billing,
                bid_micros: c.bid_micros,
                pctr: 0.02,
                pcvr: 0.05,
            },
            ecpm_micros: 0,
            price_ecpm_micros: 0,
            charge_micros: 0,
        };
        Served::from_win(request, &win, &c.targeting.interests, now, "test")
    }
}

/// What the serving operator emits: served ads for `ads.served`, and feedback for pacing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServeOutput {
    /// A served ad.
    Served(Box<Served>),
    /// A reservation or reach count for the campaign's pacing operator.
    Pacing(PacingFeedback),
}

/// Settings of the serving operator.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Billing-token key.
    pub secret: Vec<u8>,
    /// Pipeline-wide reserve, eCPM micros.
    pub reserve_ecpm_micros: u64,
    /// At most this many campaigns of one advertiser reach ranking.
    pub per_advertiser: usize,
    /// At most this many candidates are scored per request.
    pub max_candidates: usize,
    /// How long a win's reservation waits for its billing event, ms.
    pub reservation_ttl_ms: i64,
}

/// Requests answered per activation before yielding to the rest of the graph.
const BURST: usize = 256;

/// Builds the serving operator over the replicated ledger stream and this worker's pacing
/// `board` (kept current by the runtime from pacing's broadcast); publishes its activator into
/// `activator` so the API can wake it.
pub fn serve<'scope>(
    replica: StreamVec<'scope, u64, LedgerOutput>,
    requests: Receiver<ServeRequest>,
    config: ServeConfig,
    activator: Arc<Mutex<Option<SyncActivator>>>,
    board: Rc<RefCell<PacingBoard>>,
    models: Arc<ModelSlot>,
) -> StreamVec<'scope, u64, ServeOutput> {
    let scope = replica.scope();
    let replica_index = scope.index();
    replica.unary_frontier(Pipeline, "Serve", move |capability, info| {
        if let Ok(mut slot) = activator.lock() {
            *slot = Some(scope.worker().sync_activator_for(info.address.to_vec()));
        }
        let mut cap = Some(capability);
        let mut state = ServingReplica::new(replica_index, config, board, models);
        let wake = scope.activator_for(info.address.clone());
        move |(input, frontier), output| {
            input.for_each(|_cap, data| {
                for update in data.drain(..) {
                    state.apply(&update);
                }
            });
            state.tick(EventTime::now().millis());
            // Keep a capability at the replica's frontier, to log served ads with.
            follow_frontier(&mut cap, frontier.frontier().first());
            for round in 0..=BURST {
                if round == BURST {
                    // More are queued: yield to the rest of the graph, then continue.
                    wake.activate();
                    break;
                }
                let Ok(job) = requests.try_recv() else { break };
                let outcome = if past_deadline(&job.request, job.received, Instant::now()) {
                    ServeOutcome {
                        late: true,
                        ..Default::default()
                    }
                } else if let Some(c) = cap.as_ref() {
                    let outcome = state.handle(&job.request, EventTime::now());
                    output
                        .session(c)
                        .give_iterator(state.take_outputs().into_iter());
                    outcome
                } else {
                    // The replica is complete: nothing can be logged, so nothing is reserved.
                    state.answer(&job.request, EventTime::now())
                };
                (job.reply)(outcome);
            }
            if state.reach_due(Instant::now()) {
                if let Some(c) = cap.as_ref() {
                    let reach = state.take_reach(EventTime::now().millis());
                    output.session(c).give_iterator(reach.into_iter());
                }
            }
            if state.has_reach() {
                // Flush the rest even if no request comes.
                wake.activate_after(REACH_FLUSH);
            }
        }
    })
}
