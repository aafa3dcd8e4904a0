//! Charges, what the ledger decided about them, and the replicated spend state it publishes.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{CatalogUpdate, Origin};
use crate::events::EventKind;
use crate::time::EventTime;

/// 128-bit digest of a billing identity such as `(request_id, imp_id, "click")`.
pub type DedupKey = u128;

/// A billing event backed by a verified token: what to charge, to whom, once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// The win, as signed by the auction.
    pub claims: crate::token::SharedClaims,
    /// The billing event's kind (matches `claims.billing`).
    pub kind: EventKind,
    /// The billing event's time.
    pub ts: EventTime,
    /// For conversions, the conversion's own event id (a conversion is charged at most once).
    pub conversion_id: Option<String>,
    /// Where the billing event was read.
    pub origin: Origin,
    /// The billing event's Kafka key, kept for a dead letter.
    pub key: Option<Vec<u8>>,
    /// The billing event's original bytes, kept for a dead letter.
    pub payload: Vec<u8>,
}

/// A charged billing event, as reports count it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charged {
    /// The win charged.
    pub claims: crate::token::SharedClaims,
    /// The billing event's kind.
    pub kind: EventKind,
    /// The billing event's time.
    pub ts: EventTime,
    /// The charge's identity (its first dedup key: one charge per win and billing event).
    pub identity: DedupKey,
    /// What the advertiser was billed for it, micros (its price, or what was left of the budget).
    pub billed_micros: u64,
    /// What was delivered past the budget, free to the advertiser, micros.
    pub overdelivery_micros: u64,
    /// Whether this is a replay of a charge made before a restart (its amounts are the first
    /// charge's; counters must not count it again).
    pub replayed: bool,
}

/// Spend of one campaign and day, as persisted and published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
pub struct DaySpend {
    /// Campaign (shared: the state goes to pacing, budget status and every replica, and a
    /// copy costs no allocation).
    pub campaign_id: std::sync::Arc<str>,
    /// Local budget day.
    pub day: NaiveDate,
    /// Billed that day, micros (never above the day's budget).
    pub spend_micros: u64,
    /// Delivered past the budget that day, free to the advertiser, micros.
    #[serde(default)]
    pub overdelivery_micros: u64,
}

/// A change to the ledger's replicated state: what serving replicas, pacing, budget status and
/// the live view follow. Charges and refusals are the ledger's other outputs (see
/// `ledger::operator::LedgerStreams`); they are not state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LedgerState {
    /// A campaign's spend on a day changed (or was restored).
    Spend(DaySpend),
    /// A campaign was defined, changed or deleted.
    Campaign(CatalogUpdate),
    /// Wins of a campaign whose billing events the ledger has just judged (charged, replayed or
    /// refused): their reservations are released. Given after the spend they changed.
    Settled {
        /// Campaign (shared, as [`DaySpend::campaign_id`]).
        campaign_id: std::sync::Arc<str>,
        /// Each win, as [`win_key`] of its request and slot.
        wins: Vec<WinKey>,
        /// For the conversions charged among them: time from win to conversion, ms.
        conversion_delays_ms: Vec<i64>,
    },
}

impl LedgerState {
    /// The campaign the change is about.
    pub fn campaign_id(&self) -> &str {
        match self {
            LedgerState::Spend(s) => &s.campaign_id,
            LedgerState::Campaign(u) => &u.campaign_id,
            LedgerState::Settled { campaign_id, .. } => campaign_id,
        }
    }
}

/// What a serving replica follows: the ledger's state, and the outcomes counted per campaign
/// (what serving's prior ranker learns from), both broadcast to every worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplicaUpdate {
    /// A change to the ledger's state.
    Ledger(LedgerState),
    /// Impressions, clicks and attributed conversions per campaign in one batch of touches.
    Activity(Vec<CampaignActivity>),
    /// A user's history changed.
    History(super::HistoryUpdate),
}

/// Outcome counts of one campaign over a batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignActivity {
    /// Campaign.
    pub campaign_id: String,
    /// Verified impressions.
    pub impressions: u64,
    /// Verified clicks.
    pub clicks: u64,
    /// Conversions attributed to a click (of any billing type).
    pub conversions: u64,
}

/// A win's identity: the digest of its (`request_id`, `imp_id`), as [`win_key`] makes it. State
/// that follows wins (reservations, settled wins) keeps this rather than the ids' text: no
/// allocation per win, and a fixed 16 bytes where it crosses workers.
pub type WinKey = u128;

/// The [`WinKey`] of the win in slot `imp_id` of request `request_id`.
pub fn win_key(request_id: &str, imp_id: &str) -> WinKey {
    crate::hash::digest(&["win", request_id, imp_id])
}
