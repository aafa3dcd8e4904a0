//! The serving operator: answers ad requests on a worker from that worker's replica of the
//! catalog and budget state.
//!
//! Requests arrive on a channel from the HTTP API, which wakes the operator through a
//! [`SyncActivator`]; answers go back through each request's reply callback. The replica is the
//! ledger's broadcast output, so every worker sees every campaign's spend and serving never
//! crosses workers. The operator never waits for frontiers or training: it answers what it has.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

use super::auction::{run_gated_auction, Candidate, Win};
use super::retrieval::{retrieve, CampaignIndex};
use crate::checkpoint::follow_frontier;
use crate::ledger::status::BudgetBook;
use crate::pacing::board::PacingBoard;
use crate::pacing::reservation::expected_cost;
use crate::ranker::prior::{PriorRanker, Ranker};
use crate::ranker::scoring::ModelSlot;
use crate::records::LedgerOutput;
use crate::records::PacingFeedback;
pub use crate::records::Served;
use crate::request::AdRequest;
use crate::routing::route;
use crate::time::EventTime;
use crate::token::{sign, WinClaims};

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

impl Served {
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
            candidate: Candidate {
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

/// Uniform in [0, 1) from the request and campaign: the throttle's coin, reproducible for a
/// request and independent across campaigns.
fn coin(request_id: &str, campaign_id: &str) -> f64 {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(request_id.as_bytes(), route(campaign_id));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether `campaign` takes part in the auction of `request_id` (its throttle) and counts the
/// request as reachable.
fn pace(
    board: &PacingBoard,
    reach: &mut HashMap<String, u64>,
    request_id: &str,
    campaign_id: &str,
) -> bool {
    match reach.get_mut(campaign_id) {
        Some(n) => *n += 1,
        None => {
            reach.insert(campaign_id.to_string(), 1);
        }
    }
    let pass = board.pass(campaign_id);
    pass >= 1.0 || coin(request_id, campaign_id) < pass
}

/// Answers one request against `book` and the pacing `board`; every campaign the request
/// reaches is counted in `reach`.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    book: &BudgetBook,
    index: &CampaignIndex,
    board: &PacingBoard,
    reach: &mut HashMap<String, u64>,
    ranker: &dyn Ranker,
    config: &ServeConfig,
    request: &AdRequest,
    now: EventTime,
) -> ServeOutcome {
    let listed = retrieve(
        book,
        index,
        request,
        now,
        config.per_advertiser,
        config.max_candidates,
        |l| pace(board, reach, &request.id, &l.campaign.campaign_id),
    );
    let predictions = ranker.score(request, &listed, now);
    let candidates: Vec<Candidate> = listed
        .iter()
        .zip(predictions)
        .filter_map(|(l, p)| {
            Some(Candidate {
                campaign_id: l.campaign.campaign_id.clone(),
                advertiser_id: l.campaign.advertiser_id.clone(),
                ad_id: l.campaign.creatives.first()?.ad_id.clone(),
                billing: l.campaign.billing,
                bid_micros: l.campaign.bid_micros,
                pctr: p.pctr,
                pcvr: p.pcvr,
            })
        })
        .collect();
    // What this replica may still reserve, per candidate.
    let headroom: HashMap<&str, u64> = listed
        .iter()
        .map(|l| {
            let id = l.campaign.campaign_id.as_str();
            (id, board.headroom(id, book.remaining(l, now)))
        })
        .collect();
    let wins = run_gated_auction(
        &request.slots,
        candidates,
        |id| headroom.get(id).copied().unwrap_or(0),
        config.reserve_ecpm_micros,
    )
    .into_iter()
    .map(|win| {
        let claims = WinClaims {
            request_id: request.id.clone(),
            imp_id: win.imp_id.clone(),
            campaign_id: win.candidate.campaign_id.clone(),
            advertiser_id: win.candidate.advertiser_id.clone(),
            ad_id: win.candidate.ad_id.clone(),
            billing: win.candidate.billing,
            charge_micros: win.charge_micros,
            issued: now,
            country: request.country.clone(),
            device: request.device.clone(),
        };
        SignedWin {
            token: sign(&config.secret, &claims),
            win,
        }
    })
    .collect();
    ServeOutcome {
        wins,
        model_version: ranker.version(),
        late: false,
    }
}

/// How often reach counts go to pacing.
const REACH_FLUSH: Duration = Duration::from_millis(100);

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
        let mut book = BudgetBook::default();
        let mut index = CampaignIndex::default();
        let mut index_stale = false;
        let mut ranker = PriorRanker::default();
        let mut reach: HashMap<String, u64> = HashMap::new();
        let mut last_flush = Instant::now();
        let wake = scope.activator_for(info.address.clone());
        move |(input, frontier), output| {
            input.for_each(|_cap, data| {
                for update in data.drain(..) {
                    index_stale |= matches!(update, LedgerOutput::Campaign(_));
                    if let LedgerOutput::Activity(counts) = &update {
                        for c in counts {
                            ranker.observe(
                                &c.campaign_id,
                                c.impressions as f64,
                                c.clicks as f64,
                                c.conversions as f64,
                            );
                        }
                    }
                    if let LedgerOutput::Settled { wins, .. } = &update {
                        let mut board = board.borrow_mut();
                        for (request_id, imp_id) in wins {
                            board.settle(request_id, imp_id);
                        }
                    }
                    book.apply(&update);
                }
            });
            board.borrow_mut().expire(EventTime::now().millis());
            if index_stale {
                index = CampaignIndex::build(&book);
                index_stale = false;
            }
            // Keep a capability at the replica's frontier, to log served ads with.
            follow_frontier(&mut cap, frontier.frontier().first());
            for round in 0..=256 {
                if round == 256 {
                    // More are queued: yield to the rest of the graph, then continue.
                    wake.activate();
                    break;
                }
                let job = match requests.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                };
                let deadline = job.received + Duration::from_millis(job.request.tmax_ms);
                if Instant::now() >= deadline {
                    (job.reply)(ServeOutcome {
                        late: true,
                        ..Default::default()
                    });
                    continue;
                }
                let now = EventTime::now();
                let model = models.current();
                let ranking: &dyn Ranker = match &model {
                    Some(m) => m.as_ref(),
                    None => &ranker,
                };
                let outcome = answer(
                    &book,
                    &index,
                    &board.borrow(),
                    &mut reach,
                    ranking,
                    &config,
                    &job.request,
                    now,
                );
                if let Some(c) = cap.as_ref() {
                    let r = &job.request;
                    let mut session = output.session(c);
                    let mut board = board.borrow_mut();
                    for w in &outcome.wins {
                        let candidate = &w.win.candidate;
                        let micros = expected_cost(
                            candidate.billing,
                            w.win.charge_micros,
                            candidate.pctr,
                            candidate.pcvr,
                        );
                        let expires_ms = now.millis() + config.reservation_ttl_ms;
                        board.reserve(
                            &candidate.campaign_id,
                            &r.id,
                            &w.win.imp_id,
                            micros,
                            expires_ms,
                        );
                        session.give(ServeOutput::Pacing(PacingFeedback::Reserve {
                            campaign_id: candidate.campaign_id.clone(),
                            replica: replica_index,
                            request_id: r.id.clone(),
                            imp_id: w.win.imp_id.clone(),
                            micros,
                            expires_ms,
                        }));
                        let ad_interests = book
                            .catalog()
                            .get(&candidate.campaign_id)
                            .map_or(&[][..], |l| &l.campaign.targeting.interests[..]);
                        let mut served =
                            Served::from_win(r, &w.win, ad_interests, now, &outcome.model_version);
                        served.billing_token = w.token.clone();
                        session.give(ServeOutput::Served(Box::new(served)));
                    }
                }
                (job.reply)(outcome);
            }
            if !reach.is_empty() && last_flush.elapsed() >= REACH_FLUSH {
                if let Some(c) = cap.as_ref() {
                    let at_ms = EventTime::now().millis();
                    output
                        .session(c)
                        .give_iterator(reach.drain().map(|(campaign_id, count)| {
                            ServeOutput::Pacing(PacingFeedback::Reach {
                                campaign_id,
                                at_ms,
                                count,
                            })
                        }));
                }
                last_flush = Instant::now();
            }
            if !reach.is_empty() {
                // Flush the rest even if no request comes.
                wake.activate_after(REACH_FLUSH);
            }
        }
    })
}
