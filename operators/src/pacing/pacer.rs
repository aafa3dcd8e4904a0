//! One campaign's pacing on the worker that owns it: its day plan, traffic profile, controller,
//! the spend the ledger reports and the reservations serving replicas hold against it.
//!
//! # What an advertiser sees
//!
//! - **A normal day** follows the traffic-shaped target from midnight (local time) to midnight:
//!   the plan is anchored at the day's start with nothing spent.
//! - **Any change mid-day** re-anchors the plan at that moment: what is left of the budget is
//!   spread over what is left of the day's reachable traffic. That holds for a campaign created
//!   or started mid-day, one resumed after a pause (paused time is not made up in a burst), and a
//!   budget change (raising it spreads the extra over the rest of the day; lowering it below
//!   today's spend stops the campaign until midnight, and nothing already spent is undone).
//! - **Pausing** stops serving at once (retrieval skips paused campaigns); the plan and the
//!   learned profile are kept, and the state shows `paused`.
//! - **Day rollover** happens at midnight in the campaign's time zone: today's spend starts at
//!   zero, the previous day's reachable traffic is folded into the profile, and wins reserved
//!   before midnight still count until their billing events arrive (they are charged to the day of
//!   the event).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::controller::Controller;
use super::delays::DelayCurve;
use super::profile::{position, DayPosition, TrafficProfile};
use super::reservation::{Reservations, WinKey};
use super::{PacingConfig, PacingState};
use crate::events::Billing;
use crate::time::day::{budget_day, day_start};
use crate::time::EventTime;

/// What pacing needs of a campaign's definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Terms {
    /// Daily budget, micros.
    pub budget_micros: u64,
    /// Time zone of the budget day.
    pub tz: Tz,
    /// A change of zone not in effect yet: `(previous zone, until)` (see [`crate::catalog`]).
    pub zone_change: Option<(Tz, EventTime)>,
    /// Active (not paused).
    pub active: bool,
    /// Flight start, if any.
    pub start: Option<EventTime>,
    /// Flight end, if any.
    pub end: Option<EventTime>,
    /// Which event is charged.
    pub billing: Billing,
}

impl Terms {
    /// The zone the budget day runs in at `t`.
    pub fn zone(&self, t: EventTime) -> Tz {
        match self.zone_change {
            Some((previous, until)) if t < until => previous,
            _ => self.tz,
        }
    }

    /// Whether the campaign may serve at `now`.
    pub fn live(&self, now: EventTime) -> bool {
        self.active && self.start.is_none_or(|s| now >= s) && self.end.is_none_or(|e| now < e)
    }
}

/// The day's spending plan: from `anchor_micros` at `anchor_share` of the day's traffic up to the
/// budget at its end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DayPlan {
    /// The local budget day.
    pub day: NaiveDate,
    /// The budget the plan spends, micros.
    pub budget_micros: u64,
    /// Share of the day's traffic already past when the plan was made (0 at midnight).
    pub anchor_share: f64,
    /// Committed spend when the plan was made, micros.
    pub anchor_micros: u64,
}

impl DayPlan {
    /// Target cumulative spend once `share` of the day's traffic has passed.
    pub fn target(&self, share: f64) -> u64 {
        if self.budget_micros <= self.anchor_micros {
            return self.budget_micros;
        }
        let rest = 1.0 - self.anchor_share;
        let f = if rest <= 1e-9 {
            1.0
        } else {
            ((share - self.anchor_share) / rest).clamp(0.0, 1.0)
        };
        self.anchor_micros + ((self.budget_micros - self.anchor_micros) as f64 * f).round() as u64
    }
}

/// One campaign's pacing. The profile, controller and plan are checkpointed; spend comes back
/// from the ledger at restart, and reservations (short-lived) are not kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CampaignPacer {
    /// Reachable traffic per slot of the day.
    pub profile: TrafficProfile,
    /// The throttle controller.
    pub controller: Controller,
    /// Today's plan, once made.
    pub plan: Option<DayPlan>,
    /// Whether the campaign was live at the last control step (a resume re-anchors the plan).
    pub was_live: bool,
    #[serde(skip)]
    terms: Option<Terms>,
    #[serde(skip)]
    spend: BTreeMap<NaiveDate, u64>,
    #[serde(skip)]
    reservations: Reservations<usize>,
    /// CPA wins' expected conversion cost by win time (buckets of [`CONVERSION_BUCKET_MS`]).
    #[serde(default)]
    conversions: BTreeMap<i64, u64>,
    /// What was last broadcast of it (not kept: after a restart everything is published anew).
    #[serde(skip)]
    pub(super) published: Option<Published>,
    /// Control steps since it was last written to the store.
    #[serde(skip)]
    pub(super) unsaved_steps: u32,
}

/// A campaign's pacing as last broadcast: what [`super::shard::worth_publishing`] compares a
/// new state with.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// The state.
    pub state: PacingState,
    /// Outstanding reservations per serving replica.
    pub reserved_by_replica: Vec<u64>,
}

/// Width of the time buckets CPA wins' expected costs are kept in, ms.
pub const CONVERSION_BUCKET_MS: i64 = 300_000;

/// Share of a win's conversions still to come `age_ms` after the win: conversion delays taken
/// as exponential with mean `mean_ms`, cut at the attribution window `window_ms` (no conversion
/// is charged after it).
pub fn conversions_to_come(age_ms: i64, mean_ms: i64, window_ms: i64) -> f64 {
    if age_ms >= window_ms {
        return 0.0;
    }
    let a = age_ms.max(0) as f64;
    let (tau, w) = (mean_ms.max(1) as f64, window_ms.max(1) as f64);
    let arrived = (1.0 - (-a / tau).exp()) / (1.0 - (-w / tau).exp());
    (1.0 - arrived).clamp(0.0, 1.0)
}

impl CampaignPacer {
    /// A campaign seen for the first time.
    pub fn new(config: &PacingConfig) -> Self {
        CampaignPacer {
            profile: TrafficProfile::flat(config.slots),
            controller: Controller::new(config),
            plan: None,
            was_live: false,
            terms: None,
            spend: BTreeMap::new(),
            reservations: Reservations::default(),
            conversions: BTreeMap::new(),
            published: None,
            unsaved_steps: 0,
        }
    }

    /// The campaign was defined or changed (`None`: deleted).
    pub fn set_terms(&mut self, terms: Option<Terms>) {
        self.terms = terms;
    }

    /// The campaign's definition, if known.
    pub fn terms(&self) -> Option<&Terms> {
        self.terms.as_ref()
    }

    /// The ledger's spend of `day`, micros (the largest value seen wins: updates may arrive out
    /// of order, and a day's spend only grows).
    pub fn record_spend(&mut self, day: NaiveDate, micros: u64) {
        let s = self.spend.entry(day).or_default();
        *s = (*s).max(micros);
        while self.spend.len() > 3 {
            self.spend.pop_first();
        }
    }

    /// Spend of `day`, micros.
    pub fn spend(&self, day: NaiveDate) -> u64 {
        self.spend.get(&day).copied().unwrap_or(0)
    }

    /// `n` requests the campaign could bid on arrived at `at`.
    pub fn observe_reach(&mut self, at: EventTime, n: u64, config: &PacingConfig) {
        if let Some(t) = &self.terms {
            let pos = position(at, t.zone(at), config.slots);
            self.observe_reach_at(pos, n, config);
        }
    }

    /// `n` requests the campaign could bid on arrived at `pos` of its budget day (the position
    /// of their time in the campaign's zone, worked out by the caller for many campaigns at once).
    pub fn observe_reach_at(&mut self, pos: DayPosition, n: u64, config: &PacingConfig) {
        if self.terms.is_some() {
            self.profile
                .observe(pos, n as f64, config.profile_smoothing);
        }
    }

    /// Serving replica `replica` reserved `micros` for a win made at `won_ms`, until
    /// `expires_ms`. A CPA win's expected cost goes to the conversion buckets instead: its
    /// conversion arrives hours later, long after any reservation TTL.
    #[allow(clippy::too_many_arguments)]
    pub fn reserve(
        &mut self,
        replica: usize,
        win: WinKey,
        micros: u64,
        won_ms: i64,
        expires_ms: i64,
    ) {
        if self
            .terms
            .as_ref()
            .is_some_and(|t| t.billing == Billing::Cpa)
        {
            let bucket = won_ms.div_euclid(CONVERSION_BUCKET_MS) * CONVERSION_BUCKET_MS;
            *self.conversions.entry(bucket).or_default() += micros;
            return;
        }
        self.reservations.reserve(win, replica, micros, expires_ms);
    }

    /// Expected cost of the conversions of past CPA wins that will be charged between `now`
    /// and the end of its budget day, micros, with conversion delays as `delays` learned them.
    pub fn conversions_pending(
        &self,
        now: EventTime,
        config: &PacingConfig,
        delays: &DelayCurve,
    ) -> u64 {
        let Some(terms) = &self.terms else { return 0 };
        let tz = terms.zone(now);
        let day = budget_day(now, tz);
        let end = day
            .succ_opt()
            .map_or(now.millis(), |next| day_start(next, tz).millis());
        self.conversions_between(now, end, config, delays)
    }

    /// Expected cost of the conversions of past CPA wins charged between `now` and `until_ms`.
    fn conversions_between(
        &self,
        now: EventTime,
        until_ms: i64,
        config: &PacingConfig,
        delays: &DelayCurve,
    ) -> u64 {
        if self.conversions.is_empty() || until_ms <= now.millis() {
            return 0;
        }
        let end = until_ms;
        let (mean, window) = (config.conversion_delay_ms, config.conversion_window_ms);
        let to_come = |age: i64| match delays.arrived(age) {
            Some(_) if age >= window => 0.0,
            Some(arrived) => 1.0 - arrived,
            None => conversions_to_come(age, mean, window),
        };
        let expected: f64 = self
            .conversions
            .iter()
            .map(|(bucket, micros)| {
                let won = bucket + CONVERSION_BUCKET_MS / 2;
                let share = to_come(now.millis() - won) - to_come(end - won);
                *micros as f64 * share.max(0.0)
            })
            .sum();
        expected.round() as u64
    }

    /// Drops conversion buckets past the attribution window.
    fn forget_conversions(&mut self, now_ms: i64, config: &PacingConfig) {
        let oldest = now_ms - config.conversion_window_ms - CONVERSION_BUCKET_MS;
        self.conversions = self.conversions.split_off(&oldest);
    }

    /// The billing event of a win was charged.
    pub fn settle(&mut self, win: WinKey) {
        self.reservations.settle(win);
    }

    /// Whether CPA wins' conversions are still to come (its committed spend moves with time).
    pub fn converting(&self) -> bool {
        !self.conversions.is_empty()
    }

    /// Its daily budget, micros (0 for a campaign not defined).
    pub fn budget_micros(&self) -> u64 {
        self.terms.as_ref().map_or(0, |t| t.budget_micros)
    }

    /// Drops reservations that expired by `now_ms`; returns whether any did.
    pub fn expire(&mut self, now_ms: i64) -> bool {
        let before = self.reservations.len();
        self.reservations.expire(now_ms);
        self.reservations.len() != before
    }

    /// Outstanding reservations per serving replica (index = worker), for `peers` replicas.
    pub fn reserved_by_replica(&self, peers: usize) -> Vec<u64> {
        let mut v = vec![0; peers];
        for (replica, micros) in self.reservations.accounts() {
            if let Some(slot) = v.get_mut(*replica) {
                *slot += micros;
            }
        }
        v
    }

    /// Outstanding reservations in all, micros.
    pub fn reserved(&self) -> u64 {
        self.reservations.total()
    }

    /// The plan in force at `pos` with `committed` spend: the stored one, or the one the next
    /// control step will make (new day, resume, budget change, first sight).
    fn plan_at(&self, terms: &Terms, pos: DayPosition, committed: u64) -> DayPlan {
        let anchored_now = || DayPlan {
            day: pos.day,
            budget_micros: terms.budget_micros,
            anchor_share: self.profile.share_before(pos),
            anchor_micros: committed,
        };
        match &self.plan {
            Some(p)
                if p.day == pos.day && self.was_live && p.budget_micros == terms.budget_micros =>
            {
                p.clone()
            }
            // Live through midnight: the new day starts from its beginning.
            Some(p) if p.day < pos.day && self.was_live => DayPlan {
                day: pos.day,
                budget_micros: terms.budget_micros,
                anchor_share: 0.0,
                anchor_micros: 0,
            },
            _ => anchored_now(),
        }
    }

    /// Target cumulative spend at `t` under `plan`; the full budget once `t` is past the day.
    fn target_at(&self, plan: &DayPlan, tz: Tz, t: EventTime, slots: usize) -> u64 {
        if budget_day(t, tz) != plan.day {
            return plan.budget_micros;
        }
        plan.target(self.profile.share_before(position(t, tz, slots)))
    }

    /// One control step at `now`: re-plans when needed and sets the participation probability.
    /// With `enabled` false the campaign takes part everywhere (ASAP) and only the budget gate
    /// holds it.
    pub fn control(
        &mut self,
        now: EventTime,
        config: &PacingConfig,
        delays: &DelayCurve,
        enabled: bool,
    ) {
        let Some(terms) = self.terms.clone() else {
            return;
        };
        let tz = terms.zone(now);
        let pos = position(now, tz, config.slots);
        // A new day folds yesterday's traffic into the profile even if no request came yet.
        self.profile.observe(pos, 0.0, config.profile_smoothing);
        self.forget_conversions(now.millis(), config);
        if !terms.live(now) {
            self.was_live = false;
            return;
        }
        // The controller compares with the target at now + horizon: conversions count as they
        // are expected to land by then (or by midnight, whichever is first).
        let day_end = pos
            .day
            .succ_opt()
            .map_or(now.millis(), |next| day_start(next, tz).millis());
        let until = (now.millis() + config.horizon_ms).min(day_end);
        let committed = self.spend(pos.day)
            + self.reserved()
            + self.conversions_between(now, until, config, delays);
        let plan = self.plan_at(&terms, pos, committed);
        let ahead = self.target_at(
            &plan,
            tz,
            EventTime(now.millis() + config.horizon_ms),
            config.slots,
        );
        self.plan = Some(plan);
        self.was_live = true;
        if enabled {
            self.controller.step(config, now.millis(), committed, ahead);
        } else {
            self.controller.pass = 1.0;
        }
    }

    /// The state serving and the API see at `now`; `None` for a campaign not defined.
    pub fn state(
        &self,
        now: EventTime,
        config: &PacingConfig,
        delays: &DelayCurve,
        enabled: bool,
    ) -> Option<PacingState> {
        let terms = self.terms.as_ref()?;
        let pos = position(now, terms.zone(now), config.slots);
        let pending = self.conversions_pending(now, config, delays);
        let committed = self.spend(pos.day) + self.reserved() + pending;
        let plan = self.plan_at(terms, pos, committed);
        let target = plan.target(self.profile.share_before(pos));
        let pass = if enabled {
            self.controller.pass.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let mode = if !terms.live(now) {
            "paused"
        } else if committed >= terms.budget_micros {
            "exhausted"
        } else if !enabled {
            "asap"
        } else if pass >= 0.999 && committed < target {
            "demand_limited"
        } else {
            "paced"
        };
        Some(PacingState {
            mode: mode.to_string(),
            pass_probability: if mode == "paused" { 0.0 } else { pass },
            target_micros: target,
            committed_micros: committed,
            conversions_pending_micros: pending,
            day: pos.day,
            full_rate_micros_per_hour: self
                .controller
                .full_rate
                .map(|r| (r * 3_600_000.0).round() as u64),
            updated_ms: now.millis(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::win_key;

    const HOUR: i64 = 3_600_000;
    /// No conversion delays learned yet.
    static NONE: DelayCurve = DelayCurve::new();

    fn config() -> PacingConfig {
        PacingConfig {
            slots: 24,
            interval_ms: 60_000,
            horizon_ms: HOUR,
            ..PacingConfig::default()
        }
    }

    fn terms(budget: u64, tz: Tz) -> Terms {
        Terms {
            budget_micros: budget,
            tz,
            zone_change: None,
            active: true,
            start: None,
            end: None,
            billing: Billing::Cpm,
        }
    }

    fn at(s: &str) -> EventTime {
        EventTime::parse(s).unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn a_normal_day_targets_the_budget_along_the_day() {
        let cfg = config();
        let mut p = CampaignPacer::new(&cfg);
        p.set_terms(Some(terms(24_000, chrono_tz::UTC)));
        p.control(at("2026-03-01T00:00:00Z"), &cfg, &NONE, true);
        let s = p
            .state(at("2026-03-01T06:00:00Z"), &cfg, &NONE, true)
            .unwrap();
        // Flat profile: a quarter of the day, a quarter of the budget.
        assert_eq!(s.target_micros, 6_000);
        assert_eq!(s.day, day("2026-03-01"));
    }

    #[test]
    fn created_mid_day_spreads_the_budget_over_the_rest_of_the_day() {
        let cfg = config();
        let mut p = CampaignPacer::new(&cfg);
        p.set_terms(Some(terms(12_000, chrono_tz::UTC)));
        p.control(at("2026-03-01T12:00:00Z"), &cfg, &NONE, true);
        assert_eq!(
            p.state(at("2026-03-01T12:00:00Z"), &cfg, &NONE, true)
                .unwrap()
                .target_micros,
            0
        );
        assert_eq!(
            p.state(at("2026-03-01T18:00:00Z"), &cfg, &NONE, true)
                .unwrap()
                .target_micros,
            6_000
        );
    }

    #[test]
    fn budget_change_mid_day_re_plans_from_what_is_spent() {
        let cfg = config();
        let mut p = CampaignPacer::new(&cfg);
        p.set_terms(Some(terms(24_000, chrono_tz::UTC)));
        p.control(at("2026-03-01T00:00:00Z"), &cfg, &NONE, true);
        p.record_spend(day("2026-03-01"), 12_000);
        // Raised at noon with half spent: the other 36k over the other half of the day.
        p.set_terms(Some(terms(48_000, chrono_tz::UTC)));
        p.control(at("2026-03-01T12:00:00Z"), &cfg, &NONE, true);
        let s = p
            .state(at("2026-03-01T18:00:00Z"), &cfg, &NONE, true)
            .unwrap();
        assert_eq!(s.target_micros, 12_000 + 18_000);
        // Lowered below today's spend: exhausted until midnight, nothing undone.
        p.set_terms(Some(terms(10_000, chrono_tz::UTC)));
        p.control(at("2026-03-01T13:00:00Z"), &cfg, &NONE, true);
        let s = p
            .state(at("2026-03-01T13:00:00Z"), &cfg, &NONE, true)
            .unwrap();
        assert_eq!(s.mode, "exhausted");
        assert_eq!(s.target_micros, 10_000);
        // The next day runs on the new budget from midnight.
        p.control(at("2026-03-02T00:00:01Z"), &cfg, &NONE, true);
        let s = p
            .state(at("2026-03-02T12:00:00Z"), &cfg, &NONE, true)
            .unwrap();
        assert_eq!((s.day, s.target_micros), (day("2026-03-02"), 5_000));
        assert_ne!(s.mode, "exhausted");
    }

    #[test]
    fn pause_and_resume_do_not_make_up_paused_time_in_a_burst() {
        let cfg = config();
        let mut p = CampaignPacer::new(&cfg);
        p.set_terms(Some(terms(24_000, chrono_tz::UTC)));
        p.control(at("2026-03-01T00:00:00Z"), &cfg, &NONE, true);
        p.record_spend(day("2026-03-01"), 6_000);
        let mut paused = terms(24_000, chrono_tz::UTC);
        paused.active = false;
        p.set_terms(Some(paused));
        p.control(at("2026-03-01T06:00:00Z"), &cfg, &NONE, true);
        let s = p
            .state(at("2026-03-01T06:00:00Z"), &cfg, &NONE, true)
            .unwrap();
        assert_eq!((s.mode.as_str(), s.pass_probability), ("paused", 0.0));
        // Resumed at 12:00 with 6k spent: 18k over the remaining 12 hours, not 12k at once.
        p.set_terms(Some(terms(24_000, chrono_tz::UTC)));
        p.control(at("2026-03-01T12:00:00Z"), &cfg, &NONE, true);
        let s = p
            .state(at("2026-03-01T12:00:00Z"), &cfg, &NONE, true)
            .unwrap();
        assert_eq!(s.target_micros, 6_000);
        let s = p
            .state(at("2026-03-01T18:00:00Z"), &cfg, &NONE, true)
            .unwrap();
        assert_eq!(s.target_micros, 15_000);
    }

    #[test]
    fn the_day_rolls_over_at_local_midnight() {
        let cfg = config();
        let mut p = CampaignPacer::new(&cfg);
        // Tokyo is UTC+9: its March 2nd starts at 15:00 UTC on March 1st.
        p.set_terms(Some(terms(24_000, chrono_tz::Asia::Tokyo)));
        p.control(at("2026-02-28T15:00:00Z"), &cfg, &NONE, true);
        p.record_spend(day("2026-03-01"), 24_000);
        let s = p
            .state(at("2026-03-01T14:59:00Z"), &cfg, &NONE, true)
            .unwrap();
        assert_eq!((s.day, s.mode.as_str()), (day("2026-03-01"), "exhausted"));
        // A win reserved just before midnight still counts after it.
        p.reserve(
            0,
            win_key("r", "1"),
            500,
            0,
            at("2026-03-01T15:02:00Z").millis(),
        );
        p.control(at("2026-03-01T15:00:30Z"), &cfg, &NONE, true);
        let s = p
            .state(at("2026-03-01T15:00:30Z"), &cfg, &NONE, true)
            .unwrap();
        assert_eq!(s.day, day("2026-03-02"));
        assert_eq!(s.committed_micros, 500);
        assert_ne!(s.mode, "exhausted");
        assert_eq!(p.plan.as_ref().unwrap().anchor_micros, 0);
        assert!(p.expire(at("2026-03-01T15:02:00Z").millis()));
        assert_eq!(p.reserved(), 0);
    }

    #[test]
    fn reservations_are_kept_per_replica_and_settled_by_billing() {
        let cfg = config();
        let mut p = CampaignPacer::new(&cfg);
        p.reserve(0, win_key("a", "1"), 100, 0, 1_000);
        p.reserve(1, win_key("b", "1"), 50, 0, 1_000);
        p.reserve(1, win_key("c", "1"), 25, 0, 1_000);
        assert_eq!(p.reserved_by_replica(2), vec![100, 75]);
        p.settle(win_key("b", "1"));
        assert_eq!(p.reserved_by_replica(2), vec![100, 25]);
        assert_eq!(p.reserved(), 125);
    }

    #[test]
    fn cpa_wins_count_their_conversions_still_to_come_today() {
        let cfg = PacingConfig {
            conversion_delay_ms: 6 * HOUR,
            conversion_window_ms: 7 * 24 * HOUR,
            ..config()
        };
        let mut p = CampaignPacer::new(&cfg);
        let mut t = terms(1_000_000, chrono_tz::UTC);
        t.billing = Billing::Cpa;
        p.set_terms(Some(t));
        let won = at("2026-03-01T06:00:00Z");
        for i in 0..100 {
            p.reserve(
                0,
                win_key(&format!("r{i}"), "1"),
                1_000,
                won.millis(),
                won.millis() + 120_000,
            );
        }
        // Not per-win reservations: 100 wins of 1,000 expected, 18 hours left in the day.
        assert_eq!(p.reserved(), 0);
        let pending = p.conversions_pending(won, &cfg, &NONE) as f64;
        let want = 100_000.0 * (1.0 - (-18.0f64 / 6.0).exp());
        assert!((pending - want).abs() < 0.02 * want, "{pending} vs {want}");
        let s = p.state(won, &cfg, &NONE, true).unwrap();
        assert_eq!(s.committed_micros, s.conversions_pending_micros);
        // Later in the day fewer are still to come; past the window none.
        assert!(
            p.conversions_pending(at("2026-03-01T20:00:00Z"), &cfg, &NONE) < pending as u64 / 2
        );
        assert_eq!(
            p.conversions_pending(at("2026-03-09T06:00:00Z"), &cfg, &NONE),
            0
        );
        assert!((conversions_to_come(0, HOUR, 7 * 24 * HOUR) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn pacing_disabled_takes_part_everywhere() {
        let cfg = config();
        let mut p = CampaignPacer::new(&cfg);
        p.set_terms(Some(terms(24_000, chrono_tz::UTC)));
        // Before its first control step too (a new campaign explores only when paced).
        let s = p
            .state(at("2026-03-01T01:00:00Z"), &cfg, &NONE, false)
            .unwrap();
        assert_eq!(s.pass_probability, 1.0);
        p.control(at("2026-03-01T01:00:00Z"), &cfg, &NONE, false);
        let s = p
            .state(at("2026-03-01T01:00:00Z"), &cfg, &NONE, false)
            .unwrap();
        assert_eq!((s.mode.as_str(), s.pass_probability), ("asap", 1.0));
    }
}
