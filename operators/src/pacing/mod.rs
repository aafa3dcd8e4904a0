//! Budget pacing: spend each campaign's daily budget smoothly over its local day, fully when
//! demand allows, and never much beyond it.
//!
//! # The control law
//!
//! **Target.** The budget day (midnight to midnight in the campaign's time zone) is cut into
//! `slots` equal slots. A [`profile::TrafficProfile`] learns, per campaign, how many requests the
//! campaign could bid on in each slot (counted by serving before the budget gate and the
//! throttle; an exponentially weighted average over past days, flat until a day has been seen).
//! The target cumulative spend at time `t` is the budget times the share of the day's reachable
//! traffic before `t`:
//!
//! ```text
//! target(t) = budget * (w[0] + ... + w[k-1] + w[k] * f) / (w[0] + ... + w[S-1])
//! ```
//!
//! with `k` the slot of `t` and `f` the elapsed fraction of it. A change mid-day (created or
//! resumed mid-day, budget changed) re-anchors the curve at that moment: what is left of the
//! budget is spread over what is left of the day's traffic ([`pacer`] documents each case).
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
//! spend yet), `p` starts at 1% and grows 4x per interval until the first spend measures `R`: a
//! campaign whose market could spend its budget in minutes spends at most 1% of that rate while
//! it is measured, and a small one reaches full participation within four intervals.
//! A campaign that is behind with `p = 1` is demand-limited; one with `committed >= budget` is
//! exhausted.
//!
//! **Reservations and the overspend bound.** At win time serving reserves the win's expected
//! cost against the campaign: the exact charge for CPM, charge x pCTR for CPC, charge x pCTR x
//! pCVR for CPA ([`reservation::expected_cost`]). The reservation is settled by the billing event
//! of that win, or expires after `reservation_ttl`. A campaign stops winning once its
//! reservations would exceed the budget left (budget - spend).
//!
//! Each serving replica knows its own reservations exactly and the other replicas' as of the
//! last broadcast (at most `publish_ms` old, plus the exchange, plus the few activations over
//! which a publish of thousands of campaigns is spread: [`shard::PUBLISH_PER_TICK`]). A replica may reserve only its
//! share `1/R` of the budget left beside what the others hold ([`board::PacingBoard::headroom`]):
//! the shares of `R` replicas sum to at most the budget left, however stale each one's view of the
//! others, so staleness costs no overspend, only (near exhaustion) a little throughput. Spend and
//! the settlement of the win it pays reach a replica in the same ledger batch. So for CPM, where a
//! reservation is the exact charge:
//!
//! ```text
//! overspend <= charges of billing events that arrive after their reservation's TTL
//! ```
//!
//! and 0 when every impression arrives within the TTL, for any number of replicas.
//!
//! For CPC the reservation is an expectation: the bound holds in expectation, and the realised
//! overspend is the excess of actual clicks over predicted ones among the wins outstanding when
//! the budget runs out (with clicks arriving within the TTL, at most `max_charge` times that
//! excess). CPA conversions arrive hours after the win, beyond any practical TTL: a CPA win's
//! expected cost goes instead into 5-minute buckets by win time, and the expected cost of the
//! conversions still to come today counts against the budget at the gate; the controller counts
//! those expected by `now + H`, the time its target looks at. The
//! share still to come at each age is learned per campaign from the delays of the conversions
//! charged ([`delays::DelayCurve`]); until 30 are seen it is taken as exponential with mean
//! `conversion_delay`, cut at the attribution window.
//! The bound then holds in expectation; the realised overspend is the excess of actual
//! conversions over expected ones.

pub mod board;
pub mod controller;
pub mod delays;
pub mod operator;
pub mod pacer;
pub mod profile;
pub mod reservation;
pub mod shard;

pub use crate::records::{PacingFeedback, PacingState, PacingUpdate};
use serde::{Deserialize, Serialize};

/// Pacing settings (pipeline section `[pacing]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PacingConfig {
    /// Whether campaigns are throttled; when off they take part in every auction they qualify
    /// for (ASAP) and only the budget gate with reservations holds them.
    pub enabled: bool,
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
    /// How often changed pacing state is broadcast to the serving replicas, ms.
    pub publish_ms: i64,
    /// Mean delay from a CPA win to its conversion, ms (the expected cost of conversions still to
    /// come is counted as committed).
    pub conversion_delay_ms: i64,
    /// No conversion is charged later than this after its win (the click attribution window), ms.
    pub conversion_window_ms: i64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            enabled: true,
            slots: 96,
            interval_ms: 10_000,
            horizon_ms: 3_600_000,
            min_pass: 0.0001,
            rate_smoothing: 0.3,
            profile_smoothing: 0.3,
            reservation_ttl_ms: 120_000,
            publish_ms: 200,
            conversion_delay_ms: 6 * 3_600_000,
            conversion_window_ms: 7 * 86_400_000,
        }
    }
}
