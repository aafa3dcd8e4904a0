//! Pacing's state as serving and the API read it, and serving's feedback to pacing.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// What serving needs of a campaign's pacing, and what the API shows as `pacing`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PacingState {
    /// `paced`, `demand_limited` (behind target with full participation), `exhausted`
    /// (committed spend reached the budget), `paused` (paused or outside its flight), or `asap`
    /// (pacing disabled).
    pub mode: String,
    /// Probability of taking part in an auction the campaign qualifies for.
    pub pass_probability: f64,
    /// Target cumulative spend now, micros.
    pub target_micros: u64,
    /// Charged plus reserved today, plus the expected cost of CPA conversions still to come
    /// today, micros.
    pub committed_micros: u64,
    /// The expected cost of CPA conversions still to come today (part of committed), micros.
    #[serde(default)]
    pub conversions_pending_micros: u64,
    /// The local budget day this state is for.
    pub day: NaiveDate,
    /// Estimated spend rate at full participation, micros per hour (once measured).
    pub full_rate_micros_per_hour: Option<u64>,
    /// When it was computed, ms since the epoch.
    pub updated_ms: i64,
}

/// A campaign's pacing state as broadcast from the worker that owns it to every serving replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PacingUpdate {
    /// Campaign.
    pub campaign_id: String,
    /// Its state.
    pub state: PacingState,
    /// Outstanding reservations per serving replica (index = worker), micros.
    pub reserved_by_replica: Vec<u64>,
}

impl PacingUpdate {
    /// Outstanding reservations of all replicas, micros.
    pub fn reserved_micros(&self) -> u64 {
        self.reserved_by_replica.iter().sum()
    }
}

/// What serving tells pacing: wins reserved and traffic the campaign could reach.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PacingFeedback {
    /// Replica `replica` reserved `micros` for a win until `expires_ms`.
    Reserve {
        /// Campaign.
        campaign_id: String,
        /// Serving replica (worker index).
        replica: usize,
        /// The win ([`super::win_key`] of its request and slot).
        win: super::WinKey,
        /// Expected cost, micros.
        micros: u64,
        /// When the reservation lapses, ms since the epoch.
        expires_ms: i64,
    },
    /// `count` requests the campaign qualified for (before budget and throttle) around `at_ms`.
    Reach {
        /// Campaign.
        campaign_id: String,
        /// When, ms since the epoch.
        at_ms: i64,
        /// How many.
        count: u64,
    },
}

impl PacingFeedback {
    /// The campaign it concerns.
    pub fn campaign_id(&self) -> &str {
        match self {
            PacingFeedback::Reserve { campaign_id, .. }
            | PacingFeedback::Reach { campaign_id, .. } => campaign_id,
        }
    }
}
