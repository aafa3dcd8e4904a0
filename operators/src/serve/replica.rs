//! One worker's serving state as plain data: the replica of the catalog and budget state, the
//! prior ranker it learns, this replica's reservations (on the shared [`PacingBoard`]) and the
//! reach counts owed to pacing.
//!
//! [`ServingReplica::apply`] takes in the replicated ledger stream, [`ServingReplica::tick`]
//! expires reservations and reindexes, and [`ServingReplica::handle`] answers a request: retrieval,
//! ranking (the live model, else the prior), the gated auction, then a reservation per win with its
//! pacing feedback and its `ads.served` record, collected by [`ServingReplica::take_outputs`].
//! The [`super::operator`] shell only moves data between timely and these methods.

use crate::hash::HashSet;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::auction::{run_gated_auction, Candidate, Win};
use super::explain::{Explanation, Nbr, MAX_EXPLAINED};
use super::formats::{markup, BidMarkup};
use super::prerank::prerank;
use super::reach::ReachCounts;
use super::retrieval::{qualify, retrieve, CampaignIndex, Funnel, NoBid, Retrieved};
use super::spend_cache::{Budgets, SpendCache};
use super::throttle::{pace, passes, reach_sample, request_key};
use crate::catalog::Listed;
use crate::hash::HashMap;
use crate::ledger::status::BudgetBook;
use crate::pacing::board::PacingBoard;
use crate::pacing::reservation::expected_cost;
use crate::ranker::prior::{Prediction, PriorRanker, Ranker};
use crate::ranker::scoring::ModelSlot;
use crate::records::{
    win_key, Engagement, LedgerState, PacingFeedback, ReplicaUpdate, Served, UserHistory,
};
use crate::request::AdRequest;
use crate::routing::route;
use crate::time::EventTime;
use crate::token::{sign, WinClaims};

/// A won slot with its signed billing token and what the bid says about its ad.
#[derive(Debug, Clone)]
pub struct SignedWin {
    /// The auction's result.
    pub win: Win<'static>,
    /// `billing_token` for the win's events.
    pub token: String,
    /// Type, size and markup of the creative shown.
    pub markup: BidMarkup,
    /// The campaign's landing domains (`adomain`).
    pub adomain: Vec<String>,
    /// The campaign's IAB categories (`cat`).
    pub cat: Vec<String>,
    /// The advertised app (`bundle`).
    pub bundle: Option<String>,
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
    /// Why nothing was bid (set when `wins` is empty).
    pub nbr: Option<Nbr>,
    /// With `ext.debug`: every campaign's part in the request, by id.
    pub explanation: Option<Vec<Explanation>>,
}

impl Served {
    /// The log record of `win` in `request`, with the raw feature values the ranker used and
    /// the campaign's `prior` (`ranker::features::FeatureContext::from_served` reads them back
    /// for training).
    pub fn from_win(
        request: &AdRequest,
        history: &Engagement,
        win: &Win,
        ad_interests: &[String],
        prior: Prediction,
        now: EventTime,
        model_version: &str,
    ) -> Served {
        let c = &win.candidate;
        Served {
            request_id: request.id.clone(),
            imp_id: win.imp_id.clone(),
            ts: now,
            campaign_id: c.campaign_id.to_string(),
            advertiser_id: c.advertiser_id.to_string(),
            ad_id: c.ad_id.to_string(),
            billing: c.billing,
            charge_micros: win.charge_micros,
            price_ecpm_micros: win.price_ecpm_micros,
            pctr: c.pctr,
            pcvr: c.pcvr,
            prior_pctr: Some(prior.pctr),
            prior_pcvr: Some(prior.pcvr),
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
            history: history.clone(),
            billing_token: String::new(),
        }
    }

    /// A record for `listed` winning `request`'s first slot, for tests.
    #[cfg(test)]
    pub fn for_test(
        request: &AdRequest,
        history: &Engagement,
        listed: &crate::catalog::Listed,
        now: EventTime,
    ) -> Self {
        let c = &listed.campaign;
        let win = Win {
            imp_id: request
                .slots
                .first()
                .map_or(String::new(), |s| s.imp_id.clone()),
            candidate: super::auction::Candidate {
                campaign_id: c.campaign_id.as_str().into(),
                advertiser_id: c.advertiser_id.as_str().into(),
                ad_id: c.creatives.first().map_or("", |a| a.ad_id.as_str()).into(),
                billing: c.billing,
                bid_micros: c.bid_micros,
                pctr: 0.02,
                pcvr: 0.05,
                fits: super::auction::FITS_ALL,
            },
            slot: 0,
            ecpm_micros: 0,
            price_ecpm_micros: 0,
            charge_micros: 0,
        };
        Served::from_win(
            request,
            history,
            &win,
            &c.targeting.interests,
            Prediction::default(),
            now,
            "test",
        )
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
    /// At most this many candidates are scored per request (pre-ranking keeps the best).
    pub max_candidates: usize,
    /// Retrieval stops once this many campaigns may bid (the pre-ranking pool; at least
    /// `max_candidates`).
    pub prerank_candidates: usize,
    /// How long a win's reservation waits for its billing event, ms.
    pub reservation_ttl_ms: i64,
}

/// How often reach counts go to pacing. They only feed the traffic forecast, whose slots are
/// minutes long; each flush sends one record per reached campaign (100k campaigns: 100k
/// records), so it is not sent more often.
pub const REACH_FLUSH: Duration = Duration::from_secs(5);

/// Answers one request against `book` and the pacing `board` (whose pass probabilities
/// `index` holds in its postings, [`CampaignIndex::set_passes`]): retrieval over `index` (the
/// campaigns it reaches are counted in `reach`), pre-ranking at `prior`, ranking by `ranker`,
/// the gated auction and signing. `history` is the requesting user's engagement at `now` (the ranker's user-history
/// features).
#[allow(clippy::too_many_arguments)]
pub fn answer(
    book: &BudgetBook,
    index: &CampaignIndex,
    board: &PacingBoard,
    spent: &SpendCache,
    reach: &mut ReachCounts,
    prior: &PriorRanker,
    ranker: &dyn Ranker,
    config: &ServeConfig,
    request: &AdRequest,
    history: &Engagement,
    now: EventTime,
) -> ServeOutcome {
    let funnel = Funnel {
        per_advertiser: config.per_advertiser,
        pool: config.prerank_candidates.max(config.max_candidates),
    };
    let sample = reach_sample(index.len());
    let key = request_key(&request.id);
    let (pool, furthest) = retrieve(
        &Budgets { book, cache: spent },
        index,
        request,
        now,
        funnel,
        |_, route, pass| pace(pass, key, route, sample),
        |number, weight| reach.add(number, weight),
    );
    let retrieved = prerank(pool, config.max_candidates, prior, |r| r.pass);
    let listed: Vec<&Listed> = retrieved.iter().map(|r| r.listed).collect();
    let priors: Vec<Prediction> = listed
        .iter()
        .map(|l| prior.predict(&l.campaign.campaign_id))
        .collect();
    let predictions = ranker.score(request, history, &listed, &priors, now);
    let candidates: Vec<Candidate> = retrieved
        .iter()
        .zip(predictions)
        .filter_map(|(r, p)| {
            let c = &r.listed.campaign;
            let first = r.creatives.iter().flatten().next()?;
            Some(Candidate {
                campaign_id: c.campaign_id.as_str().into(),
                advertiser_id: c.advertiser_id.as_str().into(),
                ad_id: c.creatives.get(*first)?.ad_id.as_str().into(),
                billing: c.billing,
                bid_micros: c.bid_micros,
                pctr: p.pctr,
                pcvr: p.pcvr,
                fits: r.fits(),
            })
        })
        .collect();
    // What this replica may still reserve for a candidate (asked of the auction's winners only).
    let headroom = |id: &str| {
        listed
            .iter()
            .find(|l| l.campaign.campaign_id == id)
            .map_or(0, |l| board.headroom(id, book.remaining(l, now)))
    };
    let explained = request.debug.then(|| candidates.clone());
    let (wins, gated) = run_gated_auction(
        &request.slots,
        candidates,
        headroom,
        config.reserve_ecpm_micros,
    );
    let wins: Vec<SignedWin> = wins
        .into_iter()
        .filter_map(|mut win| {
            let r = retrieved
                .iter()
                .find(|r| r.listed.campaign.campaign_id == win.candidate.campaign_id)?;
            let campaign = &r.listed.campaign;
            let creative = campaign
                .creatives
                .get(r.creatives.get(win.slot).copied().flatten()?)?;
            let slot = request.slots.get(win.slot)?;
            win.candidate.ad_id = creative.ad_id.as_str().into();
            let claims = WinClaims {
                request_id: request.id.clone(),
                imp_id: win.imp_id.clone(),
                campaign_id: win.candidate.campaign_id.to_string(),
                advertiser_id: win.candidate.advertiser_id.to_string(),
                ad_id: win.candidate.ad_id.to_string(),
                billing: win.candidate.billing,
                charge_micros: win.charge_micros,
                issued: now,
                country: request.country.clone(),
                device: request.device.clone(),
            };
            Some(SignedWin {
                token: sign(&config.secret, &claims),
                markup: markup(creative, &slot.formats),
                adomain: campaign.adomain.clone(),
                cat: campaign.cat.clone(),
                bundle: campaign.bundle.clone(),
                win: win.into_owned(),
            })
        })
        .collect();
    let nbr = wins.is_empty().then(|| {
        let auction = if !gated.is_empty() {
            Some(NoBid::BudgetGate)
        } else if !retrieved.is_empty() {
            Some(NoBid::Floor)
        } else {
            None
        };
        Nbr::of(auction.max(furthest))
    });
    let explanation = explained.map(|candidates| {
        explain(
            book,
            board,
            request,
            now,
            config,
            &retrieved,
            &candidates,
            &wins,
            &gated,
        )
    });
    ServeOutcome {
        wins,
        model_version: ranker.version(),
        late: false,
        nbr,
        explanation,
    }
}

/// Every campaign's part in `request` (at most [`MAX_EXPLAINED`], by id): the stage it stopped
/// at, or its fate in the auction. The checks are the ones [`answer`] ran: [`qualify`], the
/// pacing coin, the budget, and the auction's candidates, wins and gate.
#[allow(clippy::too_many_arguments)]
fn explain(
    book: &BudgetBook,
    board: &PacingBoard,
    request: &AdRequest,
    now: EventTime,
    config: &ServeConfig,
    retrieved: &[Retrieved],
    candidates: &[Candidate],
    wins: &[SignedWin],
    gated: &[String],
) -> Vec<Explanation> {
    let mut all: Vec<&Listed> = book.catalog().iter().collect();
    all.sort_by(|a, b| a.campaign.campaign_id.cmp(&b.campaign.campaign_id));
    all.truncate(MAX_EXPLAINED);
    let advertisers_on: HashSet<&str> = retrieved
        .iter()
        .map(|r| r.listed.campaign.advertiser_id.as_str())
        .collect();
    all.into_iter()
        .map(|l| {
            let id = l.campaign.campaign_id.as_str();
            let outcome = if wins.iter().any(|w| w.win.candidate.campaign_id == id) {
                "won"
            } else if let Err(why) = qualify(l, request, now) {
                why.as_str()
            } else if !passes(board.pass(id), request_key(&request.id), route(id)) {
                NoBid::Pacing.as_str()
            } else if book.remaining(l, now) == 0 {
                NoBid::Budget.as_str()
            } else if gated.iter().any(|g| g == id) {
                NoBid::BudgetGate.as_str()
            } else if let Some(c) = candidates.iter().find(|c| c.campaign_id == id) {
                let ecpm = c.ecpm_micros();
                let clears_a_floor = request.slots.iter().enumerate().any(|(i, s)| {
                    c.fits & (1u16.checked_shl(i as u32).unwrap_or(0)) != 0
                        && ecpm > 0
                        && ecpm >= s.floor_ecpm_micros.max(config.reserve_ecpm_micros)
                });
                if clears_a_floor {
                    NoBid::Outbid.as_str()
                } else {
                    NoBid::Floor.as_str()
                }
            } else if advertisers_on.contains(l.campaign.advertiser_id.as_str())
                && !retrieved
                    .iter()
                    .any(|r| r.listed.campaign.campaign_id == id)
            {
                NoBid::AdvertiserLimit.as_str()
            } else {
                NoBid::CandidateLimit.as_str()
            };
            Explanation {
                campaign_id: id.to_string(),
                outcome,
            }
        })
        .collect()
}

/// Whether a request received at `received` is past its `tmax` deadline at `at`.
pub fn past_deadline(request: &AdRequest, received: Instant, at: Instant) -> bool {
    at >= received + Duration::from_millis(request.tmax_ms)
}

/// What one serving replica (one worker) knows and owes: the replicated catalog and spend, the
/// prior ranker, the shared pacing board of its worker, the live model slot, the reach counts not
/// yet sent to pacing, and the outputs of the requests handled since the last
/// [`ServingReplica::take_outputs`].
pub struct ServingReplica {
    replica: usize,
    config: ServeConfig,
    board: Rc<RefCell<PacingBoard>>,
    models: Arc<ModelSlot>,
    book: BudgetBook,
    index: CampaignIndex,
    /// Campaigns changed since the index was last brought up to date.
    changed: Vec<String>,
    ranker: PriorRanker,
    reach: ReachCounts,
    spent: SpendCache,
    last_flush: Instant,
    outputs: Vec<ServeOutput>,
    /// Every user's recent engagement, from the user-history stage's broadcast.
    users: HashMap<Arc<str>, Arc<UserHistory>>,
}

impl ServingReplica {
    /// The empty replica of worker `replica`, reading pacing from `board` (kept current by the
    /// runtime from pacing's broadcast) and ranking with the model in `models` when one is live.
    pub fn new(
        replica: usize,
        config: ServeConfig,
        board: Rc<RefCell<PacingBoard>>,
        models: Arc<ModelSlot>,
    ) -> Self {
        ServingReplica {
            replica,
            config,
            board,
            models,
            book: BudgetBook::default(),
            index: CampaignIndex::default(),
            changed: Vec::new(),
            ranker: PriorRanker::default(),
            reach: ReachCounts::default(),
            spent: SpendCache::default(),
            last_flush: Instant::now(),
            outputs: Vec::new(),
            users: HashMap::default(),
        }
    }

    /// The engagement of `request`'s user at `now` (empty for an unknown or anonymous user).
    pub fn engagement(&self, request: &AdRequest, now: EventTime) -> Engagement {
        request
            .user_id
            .as_deref()
            .and_then(|u| self.users.get(u))
            .map_or_else(Engagement::default, |h| h.engagement_at(now))
    }

    /// Users whose history this replica holds.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Takes in one replicated update: campaigns and spend go to the book (a campaign marks the
    /// index stale), settled wins release this replica's reservations, activity goes to the
    /// prior ranker.
    pub fn apply(&mut self, update: &ReplicaUpdate) {
        match update {
            ReplicaUpdate::Ledger(state) => {
                if let LedgerState::Campaign(update) = state {
                    self.changed.push(update.campaign_id.clone());
                }
                if let LedgerState::Settled { wins, .. } = state {
                    let mut board = self.board.borrow_mut();
                    for win in wins {
                        board.settle(*win);
                    }
                }
                self.book.apply(state);
                if let LedgerState::Spend(s) = state {
                    // A campaign not indexed yet is cached when the index takes it in.
                    self.spent
                        .refresh(&self.index, &self.book, [&*s.campaign_id]);
                }
            }
            ReplicaUpdate::History(update) => match &update.history {
                Some(h) => {
                    self.users.insert(update.user_id.clone(), h.clone());
                }
                None => {
                    self.users.remove(&*update.user_id);
                }
            },
            ReplicaUpdate::Activity(counts) => {
                for c in counts {
                    self.ranker.observe(
                        &c.campaign_id,
                        c.impressions as f64,
                        c.clicks as f64,
                        c.conversions as f64,
                    );
                }
            }
        }
    }

    /// Before requests are answered at `now_ms`: drops this replica's expired reservations and
    /// brings the campaign index up to date with the campaigns changed since the last tick.
    pub fn tick(&mut self, now_ms: i64) {
        self.board.borrow_mut().expire(now_ms);
        let changed = std::mem::take(&mut self.changed);
        if !changed.is_empty() {
            self.index
                .update(&self.book, &self.ranker, changed.iter().map(String::as_str));
            self.spent
                .refresh(&self.index, &self.book, changed.iter().map(String::as_str));
        }
        self.refresh_passes(&changed);
    }

    /// Copies into the index's postings the pass probabilities of the campaigns in `also`
    /// (changed in the index) and of those whose pacing state arrived since the last call.
    fn refresh_passes(&mut self, also: &[String]) {
        let mut board = self.board.borrow_mut();
        let paced = board.take_changed();
        if also.is_empty() && paced.is_empty() {
            return;
        }
        self.index
            .set_passes(&board, also.iter().chain(&paced).map(String::as_str));
    }

    /// Answers `request` at `now` without reserving or logging its wins (for when nothing can be
    /// logged any more); the campaigns it reaches are counted all the same.
    pub fn answer(&mut self, request: &AdRequest, now: EventTime) -> ServeOutcome {
        let history = self.engagement(request, now);
        self.answer_with(request, &history, now)
    }

    fn answer_with(
        &mut self,
        request: &AdRequest,
        history: &Engagement,
        now: EventTime,
    ) -> ServeOutcome {
        // Pacing states that arrived since the last tick.
        self.refresh_passes(&[]);
        let model = self.models.current();
        let ranker: &dyn Ranker = match &model {
            Some(m) => m.as_ref(),
            None => &self.ranker,
        };
        answer(
            &self.book,
            &self.index,
            &self.board.borrow(),
            &self.spent,
            &mut self.reach,
            &self.ranker,
            ranker,
            &self.config,
            request,
            history,
            now,
        )
    }

    /// Answers `request` at `now`, reserves each win's expected cost on the board until the
    /// reservation TTL, and queues for each win its pacing reservation and its served record.
    pub fn handle(&mut self, request: &AdRequest, now: EventTime) -> ServeOutcome {
        let history = self.engagement(request, now);
        let outcome = self.answer_with(request, &history, now);
        let mut board = self.board.borrow_mut();
        for w in &outcome.wins {
            let candidate = &w.win.candidate;
            let micros = expected_cost(
                candidate.billing,
                w.win.charge_micros,
                candidate.pctr,
                candidate.pcvr,
            );
            let expires_ms = now.millis() + self.config.reservation_ttl_ms;
            let win = win_key(&request.id, &w.win.imp_id);
            board.reserve(&candidate.campaign_id, win, micros, expires_ms);
            self.outputs
                .push(ServeOutput::Pacing(PacingFeedback::Reserve {
                    campaign_id: candidate.campaign_id.to_string(),
                    replica: self.replica,
                    win,
                    micros,
                    expires_ms,
                }));
            let ad_interests = self
                .book
                .catalog()
                .get(&candidate.campaign_id)
                .map_or(&[][..], |l| &l.campaign.targeting.interests[..]);
            let mut served = Served::from_win(
                request,
                &history,
                &w.win,
                ad_interests,
                self.ranker.predict(&candidate.campaign_id),
                now,
                &outcome.model_version,
            );
            served.billing_token = w.token.clone();
            self.outputs.push(ServeOutput::Served(Box::new(served)));
        }
        outcome
    }

    /// The outputs queued by [`ServingReplica::handle`] since the last call, in order.
    pub fn take_outputs(&mut self) -> Vec<ServeOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// Whether reach counts are waiting to go to pacing.
    pub fn has_reach(&self) -> bool {
        !self.reach.is_empty()
    }

    /// Whether the reach counts are due at `at` (some are waiting and [`REACH_FLUSH`] passed since
    /// the last time they were due); restarts the flush period when they are.
    pub fn reach_due(&mut self, at: Instant) -> bool {
        let due = self.has_reach() && at.saturating_duration_since(self.last_flush) >= REACH_FLUSH;
        if due {
            self.last_flush = at;
        }
        due
    }

    /// The reach counts since the last call, as pacing feedback stamped `at_ms`, by campaign.
    pub fn take_reach(&mut self, at_ms: i64) -> Vec<ServeOutput> {
        self.reach
            .take(&self.index)
            .into_iter()
            .map(|(campaign_id, count)| {
                ServeOutput::Pacing(PacingFeedback::Reach {
                    campaign_id,
                    at_ms,
                    count,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Campaign;
    use crate::records::{CampaignActivity, CatalogUpdate, DaySpend, PacingState, PacingUpdate};
    use crate::request::parse_request;
    use crate::token::verify;

    const TTL: i64 = 120_000;

    fn config() -> ServeConfig {
        ServeConfig {
            secret: b"secret".to_vec(),
            reserve_ecpm_micros: 1_000_000,
            per_advertiser: 2,
            max_candidates: 100,
            prerank_candidates: 400,
            reservation_ttl_ms: TTL,
        }
    }

    fn replica() -> (ServingReplica, Rc<RefCell<PacingBoard>>) {
        let board = Rc::new(RefCell::new(PacingBoard::new(0, 1)));
        let r = ServingReplica::new(0, config(), board.clone(), Arc::new(ModelSlot::default()));
        (r, board)
    }

    /// A CPM campaign bidding `bid` eCPM micros: alone, it clears at the 1 000 000 reserve and
    /// pays 1 000 micros an impression.
    fn campaign(id: &str, adv: &str, budget: u64, bid: u64) -> ReplicaUpdate {
        let json = format!(
            r#"{{"campaign_id":"{id}","advertiser_id":"{adv}","daily_budget_micros":{budget},"timezone":"UTC","billing":"cpm","bid_micros":{bid},"targeting":{{"interests":["sports"]}},"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
        );
        let c = Campaign::parse(json.as_bytes()).expect("campaign");
        ReplicaUpdate::Ledger(LedgerState::Campaign(CatalogUpdate::new(
            id.into(),
            Some(Box::new(c)),
        )))
    }

    fn request(id: &str) -> AdRequest {
        let json = format!(
            r#"{{"id":"{id}","imp":[{{"id":"1","tagid":"top"}}],"site":{{}},"device":{{"geo":{{"country":"FR"}},"devicetype":2}},"user":{{"id":"u1","keywords":"sports"}}}}"#
        );
        parse_request(json.as_bytes()).expect("request")
    }

    fn winners(outcome: &ServeOutcome) -> Vec<&str> {
        outcome
            .wins
            .iter()
            .map(|w| &*w.win.candidate.campaign_id)
            .collect()
    }

    #[test]
    fn a_win_is_reserved_signed_and_logged() {
        let (mut r, board) = replica();
        r.apply(&campaign("c1", "A", 1_000_000, 2_000_000));
        r.tick(0);
        let now = EventTime::now();
        let outcome = r.handle(&request("r1"), now);
        assert_eq!(winners(&outcome), vec!["c1"]);
        assert_eq!(outcome.model_version, "prior");
        assert!(!outcome.late);
        let win = &outcome.wins[0];
        assert_eq!(win.win.charge_micros, 1_000);
        assert_eq!(board.borrow().reserved("c1"), 1_000);
        let outputs = r.take_outputs();
        assert_eq!(outputs.len(), 2);
        assert_eq!(
            outputs[0],
            ServeOutput::Pacing(PacingFeedback::Reserve {
                campaign_id: "c1".into(),
                replica: 0,
                win: win_key("r1", "1"),
                micros: 1_000,
                expires_ms: now.millis() + TTL,
            })
        );
        let ServeOutput::Served(served) = &outputs[1] else {
            panic!("expected a served record, got {:?}", outputs[1]);
        };
        assert_eq!(served.campaign_id, "c1");
        assert_eq!(served.ad_id, "c1-ad");
        assert_eq!(served.tag_id.as_deref(), Some("top"));
        assert_eq!(served.inventory.as_deref(), Some("site"));
        assert_eq!(served.ad_interests, vec!["sports".to_string()]);
        assert_eq!(served.billing_token, win.token);
        let claims = verify(b"secret", &served.billing_token).expect("token");
        assert_eq!(claims, served.claims());
        assert!(r.take_outputs().is_empty());
    }

    #[test]
    fn the_same_input_gives_the_same_outputs() {
        let run = || {
            let (mut r, _) = replica();
            for (id, adv, bid) in [
                ("a", "A", 3_000_000),
                ("b", "B", 2_000_000),
                ("c", "B", 2_500_000),
            ] {
                r.apply(&campaign(id, adv, 1_000_000, bid));
            }
            r.tick(0);
            let now = EventTime(1_764_000_000_000);
            let mut all = Vec::new();
            for i in 0..5 {
                let outcome = r.handle(&request(&format!("r{i}")), now);
                all.push(winners(&outcome).join(","));
                all.extend(r.take_outputs().iter().map(|o| format!("{o:?}")));
            }
            all.extend(r.take_reach(now.millis()).iter().map(|o| format!("{o:?}")));
            all
        };
        let first = run();
        assert_eq!(first[0], "a");
        assert_eq!(first, run());
    }

    #[test]
    fn the_budget_gate_counts_reservations_until_they_settle_or_expire() {
        let (mut r, board) = replica();
        // Room for two reservations of 1 000.
        r.apply(&campaign("c1", "A", 2_500, 2_000_000));
        r.tick(0);
        let now = EventTime::now();
        assert_eq!(winners(&r.handle(&request("r1"), now)), vec!["c1"]);
        assert_eq!(winners(&r.handle(&request("r2"), now)), vec!["c1"]);
        assert!(r.handle(&request("r3"), now).wins.is_empty());
        assert_eq!(board.borrow().reserved("c1"), 2_000);
        // The billing event of r1 settles its reservation: room for one more.
        r.apply(&ReplicaUpdate::Ledger(LedgerState::Settled {
            campaign_id: "c1".into(),
            wins: vec![win_key("r1", "1")],
            conversion_delays_ms: vec![],
        }));
        assert_eq!(board.borrow().reserved("c1"), 1_000);
        assert_eq!(winners(&r.handle(&request("r4"), now)), vec!["c1"]);
        assert!(r.handle(&request("r5"), now).wins.is_empty());
        // Reservations lapse after the TTL.
        r.tick(now.millis() + TTL);
        assert_eq!(board.borrow().reserved("c1"), 0);
        assert_eq!(winners(&r.handle(&request("r6"), now)), vec!["c1"]);
        // Spend the ledger reports counts against the budget.
        r.apply(&ReplicaUpdate::Ledger(LedgerState::Spend(DaySpend {
            campaign_id: "c1".into(),
            day: crate::time::day::budget_day(now, chrono_tz::UTC),
            spend_micros: 2_500,
            overdelivery_micros: 0,
        })));
        assert!(r.handle(&request("r7"), now).wins.is_empty());
        // Retrieval's budget check sees the spend at once, not only the auction's gate.
        let n = r.index.number_of("c1").unwrap();
        let day = crate::time::day::budget_day(now, chrono_tz::UTC);
        assert_eq!(
            r.spent.remaining(n, r.index.entry(n).unwrap(), day),
            Some(0)
        );
    }

    #[test]
    fn other_replicas_reservations_and_the_throttle_come_from_the_board() {
        let (mut r, board) = replica();
        r.apply(&campaign("c1", "A", 2_500, 2_000_000));
        r.tick(0);
        let now = EventTime::now();
        let update = |pass: f64, reserved: u64| PacingUpdate {
            campaign_id: "c1".into(),
            state: PacingState {
                mode: "paced".into(),
                pass_probability: pass,
                target_micros: 0,
                committed_micros: 0,
                conversions_pending_micros: 0,
                day: crate::time::day::budget_day(now, chrono_tz::UTC),
                full_rate_micros_per_hour: None,
                updated_ms: 0,
            },
            reserved_by_replica: vec![0, reserved],
        };
        board.borrow_mut().apply(update(1.0, 2_000));
        assert!(r.handle(&request("r1"), now).wins.is_empty());
        board.borrow_mut().apply(update(0.0, 0));
        assert!(r.handle(&request("r2"), now).wins.is_empty());
        board.borrow_mut().apply(update(1.0, 0));
        assert_eq!(winners(&r.handle(&request("r3"), now)), vec!["c1"]);
        // Throttled or not, every request counted as reachable.
        assert_eq!(
            r.take_reach(7),
            vec![ServeOutput::Pacing(PacingFeedback::Reach {
                campaign_id: "c1".into(),
                at_ms: 7,
                count: 3,
            })]
        );
    }

    #[test]
    fn answering_alone_reserves_and_logs_nothing() {
        let (mut r, board) = replica();
        r.apply(&campaign("c1", "A", 1_000_000, 2_000_000));
        r.tick(0);
        let outcome = r.answer(&request("r1"), EventTime::now());
        assert_eq!(winners(&outcome), vec!["c1"]);
        assert_eq!(board.borrow().reserved("c1"), 0);
        assert!(r.take_outputs().is_empty());
        assert!(r.has_reach());
    }

    #[test]
    fn campaigns_are_served_only_after_a_tick_reindexes() {
        let (mut r, _) = replica();
        r.apply(&campaign("c1", "A", 1_000_000, 2_000_000));
        assert!(r.handle(&request("r1"), EventTime::now()).wins.is_empty());
        r.tick(0);
        assert_eq!(
            winners(&r.handle(&request("r2"), EventTime::now())),
            vec!["c1"]
        );
    }

    #[test]
    fn activity_moves_the_prior_used_to_score() {
        let (mut r, _) = replica();
        r.apply(&campaign("c1", "A", 1_000_000, 2_000_000));
        r.tick(0);
        let pctr = |r: &mut ServingReplica, id: &str| {
            r.handle(&request(id), EventTime::now()).wins[0]
                .win
                .candidate
                .pctr
        };
        let before = pctr(&mut r, "r1");
        r.apply(&ReplicaUpdate::Activity(vec![CampaignActivity {
            campaign_id: "c1".into(),
            impressions: 1_000,
            clicks: 200,
            conversions: 0,
        }]));
        assert!(pctr(&mut r, "r2") > before);
    }

    #[test]
    fn reach_is_due_every_flush_period() {
        let (mut r, _) = replica();
        let start = Instant::now();
        assert!(!r.reach_due(start + REACH_FLUSH), "nothing to flush");
        r.apply(&campaign("c1", "A", 1_000_000, 2_000_000));
        r.tick(0);
        r.handle(&request("r1"), EventTime::now());
        let at = start + REACH_FLUSH;
        assert!(r.reach_due(at));
        assert!(!r.reach_due(at + REACH_FLUSH / 2));
        assert!(r.reach_due(at + REACH_FLUSH));
        assert_eq!(r.take_reach(0).len(), 1);
        assert!(!r.has_reach());
    }

    fn parsed(json: &str) -> AdRequest {
        parse_request(json.as_bytes()).expect("request")
    }

    #[test]
    fn a_no_bid_says_why_and_debug_explains_every_campaign() {
        let (mut r, _) = replica();
        r.apply(&campaign("rich", "A", 1_000_000, 2_000_000));
        r.apply(&campaign("cheap", "B", 1_000_000, 1_500_000));
        r.apply(&campaign("broke", "C", 0, 3_000_000));
        r.apply(&campaign("sibling", "A", 1_000_000, 1_900_000));
        r.tick(0);
        let now = EventTime::now();
        let base =
            r#""imp":[{"id":"1","bidfloor":1.8}],"site":{},"user":{"id":"u","keywords":"sports"}"#;
        let outcome = r.handle(
            &parsed(&format!(r#"{{"id":"d1",{base},"ext":{{"debug":true}}}}"#)),
            now,
        );
        assert_eq!(winners(&outcome), vec!["rich"]);
        assert_eq!(outcome.nbr, None);
        let explained: Vec<(&str, &str)> = outcome
            .explanation
            .as_ref()
            .expect("debug explains")
            .iter()
            .map(|e| (e.campaign_id.as_str(), e.outcome))
            .collect();
        assert_eq!(
            explained,
            vec![
                ("broke", "budget"),
                ("cheap", "floor"),
                ("rich", "won"),
                ("sibling", "outbid"),
            ]
        );
        // Without debug: no explanation. Above every bid: below the floor.
        let high = base.replace("1.8", "2.5");
        let outcome = r.handle(&parsed(&format!(r#"{{"id":"d2",{high}}}"#)), now);
        assert!(outcome.wins.is_empty());
        assert_eq!(outcome.nbr, Some(Nbr::BELOW_FLOOR));
        assert!(outcome.explanation.is_none());
        // Nobody targets this user's interests.
        let bored = base.replace("sports", "knitting");
        let outcome = r.handle(&parsed(&format!(r#"{{"id":"d3",{bored}}}"#)), now);
        assert_eq!(outcome.nbr, Some(Nbr::NO_MATCHING_CAMPAIGN));
        // A video slot: no creative fits.
        let video = base.replace(r#""bidfloor":1.8"#, r#""video":{"mimes":["video/mp4"]}"#);
        let outcome = r.handle(&parsed(&format!(r#"{{"id":"d4",{video}}}"#)), now);
        assert_eq!(outcome.nbr, Some(Nbr::NO_FITTING_CREATIVE));
        // Every category blocked: these campaigns declare none, so none is shown to be safe.
        let outcome = r.handle(
            &parsed(&format!(r#"{{"id":"d5",{base},"bcat":["IAB7"]}}"#)),
            now,
        );
        assert_eq!(outcome.nbr, Some(Nbr::BLOCKED));
    }

    #[test]
    fn a_win_carries_its_creatives_markup_and_the_campaigns_brand() {
        let (mut r, _) = replica();
        let json = r#"{"campaign_id":"v","advertiser_id":"A","daily_budget_micros":1000000,"timezone":"UTC","billing":"cpm","bid_micros":2000000,"adomain":["brand.com"],"cat":["IAB2"],
            "creatives":[{"ad_id":"banner","w":300,"h":250,"adm":"<img>"},{"ad_id":"spot","type":"video","mimes":["video/mp4"],"duration":15,"adm":"<VAST/>"}]}"#;
        let c = Campaign::parse(json.as_bytes()).expect("campaign");
        r.apply(&ReplicaUpdate::Ledger(LedgerState::Campaign(
            CatalogUpdate::new("v".into(), Some(Box::new(c))),
        )));
        r.tick(0);
        let request = parsed(
            r#"{"id":"m","imp":[{"id":"1","video":{"mimes":["video/mp4"],"w":640,"h":360}},{"id":"2","banner":{"w":300,"h":250}}],"site":{}}"#,
        );
        let outcome = r.handle(&request, EventTime::now());
        // One advertiser wins once: the first slot, with the creative that fits it.
        assert_eq!(outcome.wins.len(), 1);
        let w = &outcome.wins[0];
        assert_eq!(
            (w.win.imp_id.as_str(), &*w.win.candidate.ad_id),
            ("1", "spot")
        );
        assert_eq!(
            (w.markup.mtype, w.markup.w, w.markup.h),
            (2, Some(640), Some(360))
        );
        assert_eq!(w.adomain, vec!["brand.com"]);
        assert_eq!(w.cat, vec!["IAB2"]);
        let claims = verify(b"secret", &w.token).expect("token");
        assert_eq!(claims.ad_id, "spot", "the token names the creative shown");
        let outputs = r.take_outputs();
        let ServeOutput::Served(served) = &outputs[1] else {
            panic!("expected a served record");
        };
        assert_eq!(served.ad_id, "spot");
    }

    #[test]
    fn requests_past_their_tmax_are_late() {
        let r = request("r1");
        let received = Instant::now();
        let tmax = Duration::from_millis(r.tmax_ms);
        assert!(!past_deadline(&r, received, received + tmax / 2));
        assert!(past_deadline(&r, received, received + tmax));
    }
}
