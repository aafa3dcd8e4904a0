//! Users' recent engagement: the state the user-history stage keeps per user, the update it
//! broadcasts to serving, and the feature values serving logs with each served ad.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::EventTime;

/// Hours in a user's engagement counts (the window of [`Engagement::impressions_24h`]).
pub const COUNT_HOURS: usize = 24;

/// One click of a user, with the win it was on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clicked {
    /// When the user clicked.
    pub ts: EventTime,
    /// The clicked win's campaign.
    pub campaign_id: String,
    /// Its advertiser.
    pub advertiser_id: String,
    /// Its ad.
    pub ad_id: String,
}

/// Impressions and clicks per clock hour, for the last [`COUNT_HOURS`] hours up to `hour`.
///
/// An hour's count saturates at 65,535 (a feature, never money): two bytes a count keep a user's
/// state and each serving replica's copy of it small. Checkpoints write the counts as varints,
/// so state written with four-byte counts reads back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCounts {
    /// The newest hour counted (milliseconds since the epoch / 3,600,000).
    pub hour: i64,
    /// Impressions in hour `h` at `h % COUNT_HOURS`.
    pub impressions: [u16; COUNT_HOURS],
    /// Clicks, the same way.
    pub clicks: [u16; COUNT_HOURS],
}

/// What the user-history stage keeps of one user (see `crate::history`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserHistory {
    /// The user's newest clicks, oldest first (at most the configured number).
    pub clicks: Vec<Clicked>,
    /// Counts per hour.
    pub counts: HourCounts,
    /// Identities of the newest events counted in `counts` (a hash of request, slot and kind,
    /// and the hour it was counted in), oldest first, so a repeated event is counted once. Only
    /// the owner keeps them: the copies broadcast to serving leave them out.
    pub seen: VecDeque<(u64, i64)>,
    /// Time of the newest event recorded (the user is forgotten a retention period after it).
    pub last: EventTime,
}

/// A user's history changed (or, with `None`, was forgotten): what serving replicas apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryUpdate {
    /// The user (shared with the stage's own state, so a copy costs no allocation).
    pub user_id: Arc<str>,
    /// The new state.
    pub history: Option<Arc<UserHistory>>,
}

/// What serving knew of a user's engagement when it scored a request: the values of the
/// user-history feature sources, logged with each served ad so that training reads exactly
/// what serving read (no event after the serving time can leak into a training example).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engagement {
    /// Campaigns of the user's recent clicks, newest first.
    #[serde(default)]
    pub clicked_campaigns: Vec<String>,
    /// Advertisers of those clicks, newest first.
    #[serde(default)]
    pub clicked_advertisers: Vec<String>,
    /// Ads of those clicks, newest first.
    #[serde(default)]
    pub clicked_ads: Vec<String>,
    /// Impressions in the clock hour of serving and the 23 before it.
    #[serde(default)]
    pub impressions_24h: u32,
    /// Clicks in the same hours.
    #[serde(default)]
    pub clicks_24h: u32,
}
