//! `adstream bench --pacing`: the pacing law against an as-soon-as-possible (ASAP) baseline,
//! over simulated days in virtual time.
//!
//! Both arms see the same seeded world (about 60 campaigns: CPM, CPC and CPA, log-normal budgets)
//! and the same request stream along the diurnal curve. Every request is answered by serving's
//! own [`answer`]: its retrieval (targeting, throttle, budget left), its headroom per campaign
//! ([`PacingBoard::headroom`], fed with the pacers' broadcast state as the pacing operator
//! publishes it) and its gated GSP auction and pricing, on one serving replica with the
//! pipeline's default serving settings. Billing events arrive late: impressions ~1 s after the
//! win, clicks seconds to minutes later, 5% of events another 0-5 minutes late, conversions hours
//! later. The paced arm also throttles each campaign with [`adstream_operators::pacing`]; the
//! ASAP arm takes part in every auction it qualifies for. Day 1 trains the traffic profiles;
//! day 2 is measured. Every campaign runs on UTC days here, so both days line up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use adstream_operators::catalog::Listed;
use adstream_operators::events::{Billing, CampaignStatus};
use adstream_operators::ledger::split_charge;
use adstream_operators::pacing::board::PacingBoard;
use adstream_operators::pacing::delays::DelayCurve;
use adstream_operators::pacing::pacer::{CampaignPacer, Terms};
use adstream_operators::pacing::profile::position;
use adstream_operators::pacing::reservation::expected_cost;
use adstream_operators::pacing::{PacingConfig, PacingUpdate};
use adstream_operators::ranker::prior::PriorRanker;
use adstream_operators::ranker::prior::{Prediction, Ranker};
use adstream_operators::records::{win_key, DaySpend, Engagement, LedgerState};
use adstream_operators::request::{AdRequest, Slot};
use adstream_operators::serve::auction::Candidate;
use adstream_operators::serve::operator::{answer, ServeConfig};
use adstream_operators::serve::reach::ReachCounts;
use adstream_operators::serve::retrieval::CampaignIndex;
use adstream_operators::serve::spend_cache::SpendCache;
use adstream_operators::time::day::budget_day;
use adstream_operators::time::EventTime;
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal};

use super::market::Market;
use crate::outcomes::{draw, OutcomeParams};
use crate::traffic::{DailyCurve, SimClock};
use crate::world::{World, WorldConfig};

const DAY_MS: i64 = 86_400_000;
/// 2026-01-05T00:00:00Z.
const START_MS: i64 = 1_767_571_200_000;

/// Per-campaign predictions: the campaign's mean true CTR and CVR over the users serving's
/// retrieval shows it to, as serving's per-campaign prior learns them (calibrated on average,
/// blind to the user).
fn calibrated_predictions(market: &Market<'_>, seed: u64) -> Vec<(f64, f64)> {
    let world = market.world;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut sums = vec![(0.0, 0.0, 0.0); world.campaigns.len()];
    for _ in 0..20_000 {
        let u = world.sample_user_index(&mut rng);
        let user = &world.users[u];
        for c in market.eligible(u, EventTime(START_MS)) {
            let sc = &world.campaigns[c];
            let (ctr, cvr, n) = &mut sums[c];
            *ctr += world.true_ctr(user, &sc.ads[0], sc);
            *cvr += world.true_cvr(user, sc);
            *n += 1.0;
        }
    }
    sums.into_iter()
        .map(|(ctr, cvr, n)| {
            if n == 0.0 {
                (0.02, 0.05)
            } else {
                (ctr / n, cvr / n)
            }
        })
        .collect()
}

/// Serving's ranker in the bench: each campaign's calibrated prediction.
struct Calibrated(HashMap<String, Prediction>);

impl Ranker for Calibrated {
    fn score(
        &self,
        _: &AdRequest,
        _: &Engagement,
        candidates: &[&Listed],
        _: &[Prediction],
        _: EventTime,
    ) -> Vec<Prediction> {
        candidates
            .iter()
            .map(|l| {
                self.0
                    .get(&l.campaign.campaign_id)
                    .copied()
                    .unwrap_or_default()
            })
            .collect()
    }

    fn version(&self) -> String {
        "calibrated".into()
    }
}

/// Serving's settings in the bench: the pipeline's defaults (`serving.per_advertiser` 2,
/// `serving.max_candidates` 200), a market-wide reserve of 0.01 CPM.
fn serve_config(pacing: &PacingConfig) -> ServeConfig {
    ServeConfig {
        secret: b"bench-secret".to_vec(),
        reserve_ecpm_micros: 10_000,
        per_advertiser: 2,
        max_candidates: 200,
        prerank_candidates: 400,
        reservation_ttl_ms: pacing.reservation_ttl_ms,
    }
}

/// Settings of the evaluation.
#[derive(Clone, Debug)]
pub struct PacingBench {
    /// World and traffic seed.
    pub seed: u64,
    /// Mean requests per second (virtual time).
    pub rate: f64,
    /// Median daily budget, micros.
    pub median_budget_micros: u64,
    /// The pacing law's settings.
    pub pacing: PacingConfig,
    /// How much faster clicks come than serving predicts (1: calibrated; 10: a click flood, a
    /// new campaign or a bad model).
    pub click_surprise: f64,
}

impl Default for PacingBench {
    fn default() -> Self {
        PacingBench {
            seed: 7,
            rate: 10.0,
            median_budget_micros: 15_000_000,
            pacing: PacingConfig::default(),
            click_surprise: 1.0,
        }
    }
}

/// Day-2 results of one campaign in one arm.
#[derive(Clone, Debug, Default)]
pub struct CampaignDay {
    /// Billed on day 2, micros (the ledger's cap: never above the budget).
    pub spend: u64,
    /// Delivered on day 2 past the budget (free to the advertiser), micros.
    pub overdelivery: u64,
    /// Cumulative spend at the start of each slot.
    pub spend_curve: Vec<u64>,
    /// Target at the start of each slot.
    pub target_curve: Vec<u64>,
    /// The budget gate refused the campaign at least once (demand exceeded the budget).
    pub budget_bound: bool,
    /// Billing units charged (impressions for CPM, clicks for CPC, conversions for CPA).
    pub units: u64,
    /// Largest single charge, micros.
    pub max_charge: u64,
}

/// A billing event to come: (arrival ms, win number, campaign, charge micros, win ms, request
/// number, slot number).
type BillingEvent = (i64, u64, usize, u64, i64, u64, u32);

fn simulate(market: &Market<'_>, bench: &PacingBench, paced: bool) -> Vec<CampaignDay> {
    let world = market.world;
    let cfg = &bench.pacing;
    let serve = serve_config(cfg);
    let n = world.campaigns.len();
    let slots = cfg.slots.max(1);
    let mut rng = StdRng::seed_from_u64(bench.seed);
    let curve = DailyCurve::diurnal();
    let clock = SimClock::new(START_MS, 0.0, DAY_MS);
    let params = OutcomeParams {
        impression_delay_ms: 1_000.0,
        ..OutcomeParams::default()
    };
    // Serving's replica of the budget state, and its view of pacing (one serving replica here).
    let mut book = world.budget_book();
    let mut board = PacingBoard::new(0, 1);
    let mut reach = ReachCounts::default();
    // Pre-ranking's prior (the pipeline's global rates; the ranker itself is calibrated).
    let prior = PriorRanker::default();
    // Serving's index, holding the pass probabilities of the board's updates.
    let mut index = CampaignIndex::build(&book, &PriorRanker::default());
    // The live pacing state of each campaign: plan, profile, controller and reservations.
    let mut pacers: Vec<CampaignPacer> = world
        .campaigns
        .iter()
        .map(|sc| {
            let mut p = CampaignPacer::new(cfg);
            p.set_terms(Some(Terms {
                budget_micros: sc.campaign.daily_budget_micros,
                tz: chrono_tz::UTC,
                zone_change: None,
                active: sc.campaign.status == CampaignStatus::Active,
                start: None,
                end: None,
                billing: sc.campaign.billing,
            }));
            p
        })
        .collect();
    let mut spend = vec![0u64; n];
    // Conversion delays, learned from all campaigns' conversions (one worker here).
    let mut delays = DelayCurve::default();
    let predicted: Vec<(f64, f64)> = calibrated_predictions(market, bench.seed)
        .into_iter()
        .map(|(ctr, cvr)| (ctr / bench.click_surprise.max(1e-9), cvr))
        .collect();
    let ranker = Calibrated(
        world
            .campaigns
            .iter()
            .zip(&predicted)
            .map(|(sc, (pctr, pcvr))| {
                (
                    sc.campaign.campaign_id.clone(),
                    Prediction {
                        pctr: *pctr,
                        pcvr: *pcvr,
                    },
                )
            })
            .collect(),
    );
    // Billed and overdelivered micros per budget day (0, 1, and 2 for late events past the end)
    // and campaign, as the ledger splits them.
    let mut billed = vec![vec![0u64; n]; 3];
    let mut over = vec![vec![0u64; n]; 3];
    let mut pending: BinaryHeap<Reverse<BillingEvent>> = BinaryHeap::new();
    let mut out: Vec<CampaignDay> = vec![CampaignDay::default(); n];
    let mut t = START_MS as f64;
    let end = START_MS + 2 * DAY_MS;
    let mut next_control = START_MS;
    let mut current_day = 0i64;
    let mut last_slot = usize::MAX;
    let mut seq = 0u64;
    let mut requests = 0u64;
    let late: Exp<f64> = Exp::new(1.0 / 150_000.0).expect("valid rate");
    let floors = LogNormal::new(0.0, 0.8).expect("valid log-normal");
    loop {
        let hour = clock.hour(t as i64);
        let per_ms = bench.rate * curve.at(hour) / 1000.0;
        let gap: f64 = Exp::new(per_ms.max(1e-9)).map_or(1.0, |e| e.sample(&mut rng));
        t += gap;
        let now = t as i64;
        if now >= end {
            break;
        }
        // Billing events and controller steps due by now, in time order (so an event just after
        // midnight is charged to the new day, as the ledger charges by event time).
        loop {
            let event_at = pending
                .peek()
                .map(|Reverse((at, ..))| *at)
                .filter(|at| *at <= now);
            let control_first = next_control <= now && event_at.is_none_or(|at| next_control <= at);
            if control_first {
                let day = (next_control - START_MS) / DAY_MS;
                if day != current_day {
                    current_day = day;
                    spend = billed[(current_day as usize).min(2)].clone();
                }
                let at = EventTime(next_control);
                let slot = position(at, chrono_tz::UTC, slots).slot;
                board.expire(next_control);
                for (c, p) in pacers.iter_mut().enumerate() {
                    p.expire(next_control);
                    p.control(at, cfg, &delays, paced);
                    // What serving sees: the state the pacing operator broadcasts, here at each
                    // control step.
                    let Some(state) = p.state(at, cfg, &delays, paced) else {
                        continue;
                    };
                    if day == 1 && slot != last_slot {
                        let o = &mut out[c];
                        o.spend_curve.push(spend[c]);
                        o.target_curve.push(state.target_micros);
                    }
                    let id = &world.campaigns[c].campaign.campaign_id;
                    board.apply(PacingUpdate {
                        campaign_id: id.clone(),
                        state,
                        reserved_by_replica: p.reserved_by_replica(1),
                    });
                    index.set_passes(&board, [id.as_str()]);
                }
                last_slot = slot;
                next_control += cfg.interval_ms;
                continue;
            }
            if event_at.is_none() {
                break;
            }
            let Some(Reverse((at, _, campaign, charge, won, request, imp))) = pending.pop() else {
                break;
            };
            let win = win_key(&request.to_string(), &imp.to_string());
            let p = &mut pacers[campaign];
            p.settle(win);
            board.settle(win);
            let camp = &world.campaigns[campaign].campaign;
            if camp.billing == Billing::Cpa {
                delays.observe(at - won);
            }
            // The ledger charges the budget day of the win, at most what is left of its budget.
            let day = ((won - START_MS) / DAY_MS).clamp(0, 2) as usize;
            let (b, o) = split_charge(charge, billed[day][campaign], camp.daily_budget_micros);
            billed[day][campaign] += b;
            over[day][campaign] += o;
            if day as i64 == current_day {
                spend[campaign] = billed[day][campaign];
            }
            let won_day = budget_day(EventTime(won), chrono_tz::UTC);
            p.record_spend(won_day, billed[day][campaign]);
            book.apply(&LedgerState::Spend(DaySpend {
                campaign_id: camp.campaign_id.as_str().into(),
                day: won_day,
                spend_micros: billed[day][campaign],
                overdelivery_micros: over[day][campaign],
            }));
            if day == 1 {
                let o = &mut out[campaign];
                o.units += 1;
                o.max_charge = o.max_charge.max(charge);
            }
        }
        // One request, answered by serving: retrieval (targeting, reach, throttle, budget left),
        // headroom and the gated auction.
        let u = world.sample_user_index(&mut rng);
        let user = &world.users[u];
        let Some(template) = market.requests.get(u) else {
            continue;
        };
        requests += 1;
        let floor: f64 = floors.sample(&mut rng);
        let request = AdRequest {
            id: requests.to_string(),
            slots: (1..=if rng.random_bool(0.3) { 2 } else { 1 })
                .map(|i| Slot {
                    imp_id: i.to_string(),
                    tag_id: None,
                    floor_ecpm_micros: (floor * 1e6) as u64,
                    floor_currency: "USD".into(),
                    formats: adstream_operators::serve::formats::ImpFormats::anything(),
                })
                .collect(),
            ..template.clone()
        };
        let at = EventTime(now);
        let outcome = answer(
            &book,
            &index,
            &board,
            &SpendCache::default(),
            &mut reach,
            &prior,
            &ranker,
            &serve,
            &request,
            &Engagement::default(),
            at,
        );
        // What pacing learns of the request: every campaign it could reach. Demand exceeded a
        // campaign's budget once a win at its bid no longer fits its headroom.
        for (id, count) in reach.take(&index) {
            let Some(c) = world.campaign_index(&id) else {
                continue;
            };
            pacers[c].observe_reach(at, count, cfg);
            if current_day == 1 && !out[c].budget_bound {
                let Some(listed) = book.catalog().get(&id) else {
                    continue;
                };
                let camp = &listed.campaign;
                let max_charge = Candidate {
                    campaign_id: id.as_str().into(),
                    advertiser_id: camp.advertiser_id.as_str().into(),
                    ad_id: "".into(),
                    billing: camp.billing,
                    bid_micros: camp.bid_micros,
                    pctr: predicted[c].0,
                    pcvr: predicted[c].1,
                    fits: adstream_operators::serve::auction::FITS_ALL,
                }
                .max_charge_micros();
                let at_bid =
                    expected_cost(camp.billing, max_charge, predicted[c].0, predicted[c].1);
                if board.headroom(&id, book.remaining(listed, at)) < at_bid {
                    out[c].budget_bound = true;
                }
            }
        }
        for signed in outcome.wins {
            let win = signed.win;
            let Some(c) = world.campaign_index(&win.candidate.campaign_id) else {
                continue;
            };
            seq += 1;
            // The reservation serving makes, and the feedback pacing takes it from.
            let cost = expected_cost(
                win.candidate.billing,
                win.charge_micros,
                win.candidate.pctr,
                win.candidate.pcvr,
            );
            let expires = now + serve.reservation_ttl_ms;
            let key = win_key(&request.id, &win.imp_id);
            board.reserve(&win.candidate.campaign_id, key, cost, expires);
            pacers[c].reserve(0, key, cost, now, expires);
            let sc = &world.campaigns[c];
            let ad = &sc.ads[0];
            let fate = draw(
                &mut rng,
                &params,
                &clock,
                world.true_ctr(user, ad, sc),
                world.true_cvr(user, sc),
            );
            let offset = match win.candidate.billing {
                Billing::Cpm => fate.impression_ms,
                Billing::Cpc => fate.click_ms,
                Billing::Cpa => fate.conversion_ms,
            };
            let Some(offset) = offset else { continue };
            let extra = if rng.random_bool(0.05) {
                late.sample(&mut rng).min(300_000.0) as i64
            } else {
                0
            };
            let imp = win.imp_id.parse::<u32>().unwrap_or(0);
            pending.push(Reverse((
                now + offset + extra,
                seq,
                c,
                win.charge_micros,
                now,
                requests,
                imp,
            )));
        }
    }
    for (c, o) in out.iter_mut().enumerate() {
        o.spend = billed[1][c];
        o.overdelivery = over[1][c];
    }
    out
}

/// One arm's summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct ArmSummary {
    /// Campaigns above budget + one max charge.
    pub over_bound: usize,
    /// Worst overspend, % of budget.
    pub worst_overspend_pct: f64,
    /// Mean utilisation of budget-bound campaigns, %.
    pub utilisation_pct: f64,
    /// Lowest utilisation among them, %.
    pub min_utilisation_pct: f64,
    /// Budget-bound campaigns.
    pub bound: usize,
    /// Worst max |actual - target| over the day, % of budget.
    pub worst_deviation_pct: f64,
    /// Median of the campaigns' max |actual - target|, % of budget.
    pub median_deviation_pct: f64,
    /// Worst max |actual - target| among campaigns whose largest charge is at most 1% of their
    /// budget (a campaign paying a quarter of its budget per conversion cannot be smooth).
    pub worst_fine_deviation_pct: f64,
    /// How many campaigns that is.
    pub fine: usize,
    /// Average CPM paid by CPM campaigns, currency units.
    pub cpm: f64,
    /// Average CPC paid by CPC campaigns, currency units.
    pub cpc: f64,
    /// Overdelivery (delivered past the budget, free), % of the budgets, by billing type (CPM,
    /// CPC, CPA), over every campaign of that type.
    pub overdelivery_pct: [f64; 3],
    /// The worst campaign's overdelivery, % of its budget, by billing type.
    pub worst_overdelivery_pct: [f64; 3],
}

fn summarise(world: &World, days: &[CampaignDay], bound_by: &[CampaignDay]) -> ArmSummary {
    let mut s = ArmSummary {
        min_utilisation_pct: f64::INFINITY,
        ..ArmSummary::default()
    };
    let mut devs = Vec::new();
    let (mut cpm_spend, mut imps, mut cpc_spend, mut clicks) = (0u64, 0u64, 0u64, 0u64);
    let mut util = Vec::new();
    let (mut over_sum, mut budget_sum) = ([0.0f64; 3], [0.0f64; 3]);
    for (c, d) in days.iter().enumerate() {
        let camp = &world.campaigns[c].campaign;
        let budget = camp.daily_budget_micros.max(1);
        if d.spend > budget + d.max_charge {
            s.over_bound += 1;
        }
        let k = match camp.billing {
            Billing::Cpm => 0,
            Billing::Cpc => 1,
            Billing::Cpa => 2,
        };
        over_sum[k] += d.overdelivery as f64;
        budget_sum[k] += budget as f64;
        s.worst_overdelivery_pct[k] =
            s.worst_overdelivery_pct[k].max(d.overdelivery as f64 / budget as f64 * 100.0);
        s.worst_overspend_pct = s
            .worst_overspend_pct
            .max((d.spend as f64 - budget as f64) / budget as f64 * 100.0);
        if bound_by[c].budget_bound {
            let u = d.spend as f64 / budget as f64 * 100.0;
            util.push(u);
            s.min_utilisation_pct = s.min_utilisation_pct.min(u);
            let dev = d
                .spend_curve
                .iter()
                .zip(&d.target_curve)
                .map(|(a, t)| (*a as f64 - *t as f64).abs() / budget as f64 * 100.0)
                .fold(0.0, f64::max);
            devs.push(dev);
            if d.max_charge * 100 <= budget {
                s.fine += 1;
                s.worst_fine_deviation_pct = s.worst_fine_deviation_pct.max(dev);
            }
        }
        match camp.billing {
            Billing::Cpm => {
                cpm_spend += d.spend;
                imps += d.units;
            }
            Billing::Cpc => {
                cpc_spend += d.spend;
                clicks += d.units;
            }
            Billing::Cpa => {}
        }
    }
    for k in 0..3 {
        s.overdelivery_pct[k] = over_sum[k] / budget_sum[k].max(1.0) * 100.0;
    }
    s.bound = util.len();
    s.utilisation_pct = util.iter().sum::<f64>() / util.len().max(1) as f64;
    devs.sort_by(f64::total_cmp);
    s.worst_deviation_pct = devs.last().copied().unwrap_or(0.0);
    s.median_deviation_pct = devs.get(devs.len() / 2).copied().unwrap_or(0.0);
    s.cpm = cpm_spend as f64 / imps.max(1) as f64 * 1000.0 / 1e6;
    s.cpc = cpc_spend as f64 / clicks.max(1) as f64 / 1e6;
    s
}

fn plot(
    path: &Path,
    world: &World,
    paced: &[CampaignDay],
    asap: &[CampaignDay],
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let cols = 8;
    let rows = paced.len().div_ceil(cols);
    let (w, h) = (200u32, 130u32);
    let root = BitMapBackend::new(path, (w * cols as u32, h * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((rows, cols));
    for (c, area) in panels.iter().enumerate().take(paced.len()) {
        let budget = world.campaigns[c].campaign.daily_budget_micros as f64;
        let area = area.margin(6, 6, 6, 6);
        let slots = paced[c].target_curve.len().max(1) as f64;
        let ymax = budget * 1.15;
        let mut chart = ChartBuilder::on(&area)
            .build_cartesian_2d(0f64..slots, 0f64..ymax)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let series = |v: &[u64]| -> Vec<(f64, f64)> {
            v.iter()
                .enumerate()
                .map(|(i, y)| (i as f64, *y as f64))
                .collect()
        };
        let frame = vec![
            (0.0, 0.0),
            (slots, 0.0),
            (slots, ymax),
            (0.0, ymax),
            (0.0, 0.0),
        ];
        let draw = |chart: &mut ChartContext<'_, BitMapBackend<'_>, _>,
                    pts: Vec<(f64, f64)>,
                    style: ShapeStyle| {
            chart
                .draw_series(LineSeries::new(pts, style))
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e}"))
        };
        draw(&mut chart, frame, RGBColor(200, 200, 200).stroke_width(1))?;
        draw(
            &mut chart,
            vec![(0.0, budget), (slots, budget)],
            BLACK.stroke_width(1),
        )?;
        draw(
            &mut chart,
            series(&paced[c].target_curve),
            RGBColor(150, 150, 150).stroke_width(2),
        )?;
        draw(
            &mut chart,
            series(&asap[c].spend_curve),
            RED.stroke_width(1),
        )?;
        draw(
            &mut chart,
            series(&paced[c].spend_curve),
            BLUE.stroke_width(2),
        )?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs both arms, prints the table and writes the plot to `png`.
pub fn run(bench: &PacingBench, png: Option<&Path>) -> anyhow::Result<()> {
    let mut world = World::generate(
        bench.seed,
        &WorldConfig {
            users: 5_000,
            median_budget_micros: bench.median_budget_micros,
            ..WorldConfig::default()
        },
    );
    for c in &mut world.campaigns {
        c.campaign.timezone = "UTC".into();
    }
    let market = Market::new(&world)?;
    let started = std::time::Instant::now();
    let asap = simulate(&market, bench, false);
    let paced = simulate(&market, bench, true);
    let a = summarise(&world, &asap, &asap);
    let p = summarise(&world, &paced, &asap);
    println!(
        "pacing vs ASAP: {} campaigns, 2 simulated days at {} req/s (day 2 measured), {} budget-bound, {:.1} s",
        world.campaigns.len(),
        bench.rate,
        a.bound,
        started.elapsed().as_secs_f64()
    );
    println!("| measure (day 2) | goal | paced | ASAP |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| campaigns above budget + one max charge | 0 | {} | {} |",
        p.over_bound, a.over_bound
    );
    println!(
        "| worst overspend, % of budget | - | {:.2} | {:.2} |",
        p.worst_overspend_pct, a.worst_overspend_pct
    );
    println!("| utilisation of budget-bound campaigns, mean (min) | >= 98% | {:.1}% ({:.1}%) | {:.1}% ({:.1}%) |", p.utilisation_pct, p.min_utilisation_pct, a.utilisation_pct, a.min_utilisation_pct);
    println!("| max abs(actual - target), worst (median), % of budget | < 5% | {:.1} ({:.1}) | {:.1} ({:.1}) |", p.worst_deviation_pct, p.median_deviation_pct, a.worst_deviation_pct, a.median_deviation_pct);
    println!(
        "| the same, worst among campaigns charged <= 1% of budget per unit ({} paced, {} ASAP) | < 5% | {:.1} | {:.1} |",
        p.fine, a.fine, p.worst_fine_deviation_pct, a.worst_fine_deviation_pct
    );
    println!("| average CPM paid | - | {:.3} | {:.3} |", p.cpm, a.cpm);
    println!("| average CPC paid | - | {:.3} | {:.3} |", p.cpc, a.cpc);
    // Overdelivery (free to the advertiser, a cost to us): as measured, and with clicks coming
    // ten times faster than serving predicts.
    let surprised = PacingBench {
        click_surprise: 10.0,
        ..bench.clone()
    };
    let asap10 = summarise(&world, &simulate(&market, &surprised, false), &asap);
    let paced10 = summarise(&world, &simulate(&market, &surprised, true), &asap);
    for (k, name) in ["CPM", "CPC", "CPA"].iter().enumerate() {
        println!(
            "| overdelivery {name}, % of budgets (worst campaign) | small | {:.2} ({:.1}) | {:.2} ({:.1}) |",
            p.overdelivery_pct[k], p.worst_overdelivery_pct[k], a.overdelivery_pct[k], a.worst_overdelivery_pct[k]
        );
    }
    for (k, name) in ["CPM", "CPC", "CPA"].iter().enumerate() {
        println!(
            "| overdelivery {name} with clicks 10x the prediction, % (worst) | - | {:.2} ({:.1}) | {:.2} ({:.1}) |",
            paced10.overdelivery_pct[k], paced10.worst_overdelivery_pct[k], asap10.overdelivery_pct[k], asap10.worst_overdelivery_pct[k]
        );
    }
    for (name, days) in [("paced", &paced), ("ASAP", &asap)] {
        let mut over: Vec<String> = days
            .iter()
            .enumerate()
            .filter(|(c, d)| {
                d.spend > world.campaigns[*c].campaign.daily_budget_micros + d.max_charge
            })
            .map(|(c, d)| {
                let camp = &world.campaigns[c].campaign;
                format!(
                    "{} {} {:+.1}%",
                    camp.campaign_id,
                    camp.billing.as_str(),
                    (d.spend as f64 / camp.daily_budget_micros.max(1) as f64 - 1.0) * 100.0
                )
            })
            .collect();
        over.sort();
        if !over.is_empty() {
            println!("{name}: above budget + one max charge: {}", over.join(", "));
        }
    }
    if let Some(path) = png {
        plot(path, &world, &paced, &asap)?;
        println!("plot: {} (one panel per campaign: grey target, blue paced spend, red ASAP spend, black budget)", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a small market, pacing tracks its target far closer than ASAP spending and keeps
    /// fewer campaigns above their budget.
    #[test]
    fn paced_tracks_the_target_better_than_asap() {
        let bench = PacingBench {
            rate: 3.0,
            ..PacingBench::default()
        };
        let mut world = World::generate(
            bench.seed,
            &WorldConfig {
                users: 2_000,
                advertisers: 8,
                median_budget_micros: bench.median_budget_micros / 3,
                ..WorldConfig::default()
            },
        );
        for c in &mut world.campaigns {
            c.campaign.timezone = "UTC".into();
        }
        let market = Market::new(&world).unwrap();
        let asap = simulate(&market, &bench, false);
        let paced = simulate(&market, &bench, true);
        let a = summarise(&world, &asap, &asap);
        let p = summarise(&world, &paced, &asap);
        assert!(a.bound > 0, "no campaign was budget-bound: {a:?}");
        assert!(
            p.median_deviation_pct < a.median_deviation_pct / 2.0,
            "paced {p:?} asap {a:?}"
        );
        assert!(p.over_bound <= a.over_bound, "paced {p:?} asap {a:?}");
        for d in &paced {
            assert_eq!(d.spend_curve.len(), bench.pacing.slots);
        }
    }
}
