//! Budget pacing: spend each campaign's daily budget smoothly over its local day, fully when
//! demand allows, and never much beyond it.
//!
//! # The control law
//!
//! **Target.** The budget day (midnight to midnight in the campaign's time zone) is cut into
//! `slots` equal slots. A [`profile::TrafficProfile`] learns, per campaign, how many requests the
//! campaign could bid on in each slot (an exponentially weighted average over past days, started
//! from the pooled profile of all campaigns and flat before that). The target cumulative spend
//! at time `t` is the budget times the share of the day's reachable traffic before `t`:
//!
//! ```text
//! target(t) = budget * (w[0] + ... + w[k-1] + w[k] * f) / (w[0] + ... + w[S-1])
//! ```
//!
//! with `k` the slot of `t` and `f` the elapsed fraction of it. A budget change mid-day moves the
//! whole curve: the campaign aims at the new budget's curve from then on.
//!
//! **Controller.** Every `interval` the [`controller::Controller`] sets the probability `p` that
//! the campaign takes part in an auction it qualifies for (throttling, the LinkedIn/Yahoo form).
//! It does not nudge `p` by fixed steps; it estimates the campaign's spend rate at full
//! participation `R` from the committed spend (charged + reserved) of the last interval divided
//! by the `p` in force, smoothed, and aims to rejoin the target curve over the catch-up horizon
//! `H`:
//!
//! ```text
//! desired = max(0, target(t + H) - committed(t)) / H
//! p       = clamp(desired / R, min_pass, 1)
//! ```
//!
//! Committed spend includes reservations (below), so the controller sees a win at once, not when
//! its billing event arrives: event delay does not make it overshoot. When `R` is unknown (no
//! spend yet), `p` doubles each interval from its floor, exploring. A campaign that is behind with
//! `p = 1` is demand-limited; one with `committed >= budget` is exhausted.
//!
//! **Reservations and the overspend bound.** At win time serving reserves the win's expected
//! cost against the campaign: the exact charge for CPM, charge x pCTR for CPC, charge x pCTR x
//! pCVR for CPA ([`reservation::expected_cost`]). The reservation is settled by the billing event
//! of that win, or expires after `reservation_ttl`. A campaign stops winning once
//! `spend + reserved + cost of this win > budget`. For CPM, if every impression arrives within
//! the TTL, one serving replica cannot overspend at all; `R` replicas that each see the others'
//! reservations only through the broadcast (latency `L`) can overspend by at most the wins they
//! make in that window once the budget is nearly gone, which the gate limits to one win each:
//!
//! ```text
//! overspend <= replicas * max_charge                       (CPM, delay <= TTL)
//! overspend <= replicas * max_charge + sum of charges of events delayed beyond the TTL
//! ```
//!
//! For CPC the reservation is an expectation: the bound holds in expectation, and the realised
//! overspend is the excess of actual clicks over predicted ones among the wins outstanding when
//! the budget runs out. CPA conversions arrive hours after the win, beyond any practical TTL, so
//! CPA falls under the second line: its reservations only smooth the first minutes.

pub mod controller;
pub mod profile;
pub mod reservation;

use serde::{Deserialize, Serialize};

/// Pacing settings (pipeline section `[pacing]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PacingConfig {
    /// Slots per budget day.
    pub slots: usize,
    /// Controller period, ms.
    pub interval_ms: i64,
    /// Catch-up horizon, ms.
    pub horizon_ms: i64,
    /// Lowest participation probability.
    pub min_pass: f64,
    /// Weight of the newest interval in the full-rate estimate (0..1).
    pub rate_smoothing: f64,
    /// Weight of the newest day in the traffic profile (0..1).
    pub profile_smoothing: f64,
    /// How long a reservation waits for its billing event, ms.
    pub reservation_ttl_ms: i64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            slots: 96,
            interval_ms: 10_000,
            horizon_ms: 3_600_000,
            min_pass: 0.0001,
            rate_smoothing: 0.3,
            profile_smoothing: 0.3,
            reservation_ttl_ms: 120_000,
        }
    }
}

/// What serving needs of a campaign's pacing, and what the API shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PacingState {
    /// `paced`, `demand_limited` (behind with full participation), `exhausted`, or `asap`.
    pub mode: String,
    /// Probability of taking part in an auction the campaign qualifies for.
    pub pass_probability: f64,
    /// Target cumulative spend now, micros.
    pub target_micros: u64,
    /// Charged plus reserved, micros.
    pub committed_micros: u64,
}
