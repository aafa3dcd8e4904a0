//! The spend ledger: what each campaign has been charged, per budget day, exactly once.
//!
//! A [`Charge`] is what a valid billing token says a billing event costs. The ledger accepts it
//! only if none of its billing identities ([`Charge::dedup_keys`]) was charged before and its
//! charging window is still open; spend goes to the budget day of the event in the campaign's
//! time zone. Everything here is plain data so that it can be property-tested and checkpointed.
//!
//! Why replays are harmless: the dedup entries and the spend they justify change together and
//! are checkpointed together, and Kafka offsets are only checkpointed once the ledger state
//! covering them is durable. A restart therefore re-reads some events the ledger already holds;
//! their keys are known with the same Kafka position ([`Seen::Replay`]) and they are skipped.

pub mod day;
pub mod dedup;
pub mod operator;
pub mod status;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::events::EventKind;
use crate::time::EventTime;
use crate::token::WinClaims;
pub use dedup::{dedup_key, DedupEntry, DedupKey, DedupSet, Origin, Seen};

/// How long after the auction each kind of billing event may still be charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizons {
    /// For impressions and clicks, milliseconds after the token was issued.
    pub event_ms: i64,
    /// For conversions (the attribution window plus slack), milliseconds.
    pub conversion_ms: i64,
}

impl Default for Horizons {
    fn default() -> Self {
        Horizons {
            event_ms: 24 * 3_600_000,
            conversion_ms: 8 * 24 * 3_600_000,
        }
    }
}

/// A billing event backed by a verified token: what to charge, to whom, once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// The win, as signed by the auction.
    pub claims: WinClaims,
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

impl Charge {
    /// The charge of an impression or click whose verified win bills on that very event.
    pub fn for_event(
        kind: EventKind,
        ts: EventTime,
        claims: WinClaims,
        origin: Origin,
        raw: crate::ingest::RawBytes,
    ) -> Self {
        Charge {
            claims,
            kind,
            ts,
            conversion_id: None,
            origin,
            key: raw.key,
            payload: raw.payload,
        }
    }

    /// The identities this charge consumes: `(request_id, imp_id, kind)`, plus the conversion's
    /// own id for CPA charges.
    pub fn dedup_keys(&self) -> Vec<DedupKey> {
        let mut keys = vec![dedup_key(&[
            &self.claims.request_id,
            &self.claims.imp_id,
            self.kind.as_str(),
        ])];
        if let Some(conv) = &self.conversion_id {
            keys.push(dedup_key(&["conversion", &self.claims.advertiser_id, conv]));
        }
        keys
    }

    /// Event-time millisecond at which this charge's window closes.
    pub fn window_end(&self, horizons: &Horizons) -> i64 {
        let horizon = match self.kind {
            EventKind::Conversion => horizons.conversion_ms,
            _ => horizons.event_ms,
        };
        self.claims.issued.millis().saturating_add(horizon)
    }
}

/// A charged billing event, as reports count it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charged {
    /// The win charged.
    pub claims: WinClaims,
    /// The billing event's kind.
    pub kind: EventKind,
    /// The billing event's time.
    pub ts: EventTime,
    /// The charge's identity (its first dedup key: one charge per win and billing event).
    pub identity: DedupKey,
}

impl Charged {
    /// What reports keep of `charge`.
    pub fn of(charge: &Charge) -> Self {
        Charged {
            claims: charge.claims.clone(),
            kind: charge.kind,
            ts: charge.ts,
            identity: dedup_key(&[
                &charge.claims.request_id,
                &charge.claims.imp_id,
                charge.kind.as_str(),
            ]),
        }
    }
}

/// Why a charge was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Already charged from this very position (replay after restart): not an error.
    #[error("replayed event already charged")]
    Replay,
    /// Already charged from another position.
    #[error("duplicate billing event (first charged from partition {} offset {})", .0.partition, .0.offset)]
    Duplicate(Origin),
    /// The charging window has closed.
    #[error("billing event outside its charging window")]
    Expired,
}

/// The result of an applied charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The budget day charged.
    pub day: NaiveDate,
    /// That day's spend after the charge.
    pub spend_micros: u64,
}

/// Spend of one campaign and day, as persisted and published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
pub struct DaySpend {
    /// Campaign.
    pub campaign_id: String,
    /// Local budget day.
    pub day: NaiveDate,
    /// Charged that day, micros.
    pub spend_micros: u64,
}

/// The ledger shard held by one worker.
#[derive(Debug, Default)]
pub struct Ledger {
    spend: HashMap<String, BTreeMap<NaiveDate, u64>>,
    dedup: DedupSet,
    horizons: Horizons,
    /// Windows ending before this were forgotten: their events can no longer be charged.
    closed_before: i64,
    dirty_spend: HashSet<(String, NaiveDate)>,
    dirty_keys: Vec<DedupKey>,
    dropped_keys: Vec<(DedupKey, DedupEntry)>,
}

/// Days of spend kept per campaign (today, late events for recent days, and reporting).
pub(crate) const DAYS_KEPT: usize = 10;

impl Ledger {
    /// An empty ledger.
    pub fn new(horizons: Horizons) -> Self {
        Ledger {
            horizons,
            closed_before: i64::MIN,
            ..Ledger::default()
        }
    }

    /// Applies `charge` to the campaign whose budget day runs in `tz`.
    pub fn apply(&mut self, charge: &Charge, tz: Tz) -> Result<Applied, Refusal> {
        let keys = charge.dedup_keys();
        for key in &keys {
            match self.dedup.check(*key, charge.origin) {
                Seen::New => {}
                Seen::Replay => return Err(Refusal::Replay),
                Seen::Duplicate(first) => return Err(Refusal::Duplicate(first)),
            }
        }
        let window_end = charge.window_end(&self.horizons);
        if charge.ts.millis() > window_end || window_end < self.closed_before {
            return Err(Refusal::Expired);
        }
        for key in keys {
            self.dedup.insert(
                key,
                DedupEntry {
                    expires: window_end,
                    origin: charge.origin,
                    shard: crate::routing::route(&charge.claims.campaign_id),
                },
            );
            self.dirty_keys.push(key);
        }
        let day = day::budget_day(charge.ts, tz);
        let days = self
            .spend
            .entry(charge.claims.campaign_id.clone())
            .or_default();
        let spend = days.entry(day).or_insert(0);
        *spend = spend.saturating_add(charge.claims.charge_micros);
        let spend_micros = *spend;
        while days.len() > DAYS_KEPT {
            days.pop_first();
        }
        self.dirty_spend
            .insert((charge.claims.campaign_id.clone(), day));
        Ok(Applied { day, spend_micros })
    }

    /// Spend of `campaign` on `day`.
    pub fn spend(&self, campaign: &str, day: NaiveDate) -> u64 {
        self.spend
            .get(campaign)
            .and_then(|d| d.get(&day))
            .copied()
            .unwrap_or(0)
    }

    /// Every (campaign, day) spend held.
    pub fn all_spend(&self) -> impl Iterator<Item = DaySpend> + '_ {
        self.spend.iter().flat_map(|(c, days)| {
            days.iter().map(move |(d, s)| DaySpend {
                campaign_id: c.clone(),
                day: *d,
                spend_micros: *s,
            })
        })
    }

    /// Closes every charging window that ended before the event-time `frontier`.
    pub fn advance(&mut self, frontier: i64) {
        if frontier > self.closed_before {
            self.closed_before = frontier;
            let dropped = self.dedup.expire(frontier);
            self.dropped_keys.extend(dropped);
        }
    }

    /// Number of dedup entries held.
    pub fn dedup_len(&self) -> usize {
        self.dedup.len()
    }

    /// Takes what changed since the last call, for a checkpoint.
    pub fn take_changes(&mut self) -> LedgerChanges {
        let spend = self
            .dirty_spend
            .drain()
            .map(|(campaign_id, day)| {
                let spend_micros = self
                    .spend
                    .get(&campaign_id)
                    .and_then(|d| d.get(&day))
                    .copied();
                (campaign_id, day, spend_micros)
            })
            .collect();
        let added = self
            .dirty_keys
            .drain(..)
            .filter_map(|k| self.dedup.get(k).map(|e| (k, e)))
            .collect();
        LedgerChanges {
            spend,
            added,
            dropped: std::mem::take(&mut self.dropped_keys),
            closed_before: self.closed_before,
        }
    }

    /// Rebuilds a shard from checkpointed entries.
    pub fn restore(
        horizons: Horizons,
        spend: impl IntoIterator<Item = DaySpend>,
        dedup: impl IntoIterator<Item = (DedupKey, DedupEntry)>,
        closed_before: i64,
    ) -> Self {
        let mut ledger = Ledger::new(horizons);
        for s in spend {
            ledger
                .spend
                .entry(s.campaign_id)
                .or_default()
                .insert(s.day, s.spend_micros);
        }
        for (k, e) in dedup {
            ledger.dedup.insert(k, e);
        }
        ledger.closed_before = closed_before;
        ledger
    }
}

/// What changed in a ledger shard since the previous checkpoint.
#[derive(Debug, Default, PartialEq)]
pub struct LedgerChanges {
    /// Spend rows written (`None`: the row was pruned).
    pub spend: Vec<(String, NaiveDate, Option<u64>)>,
    /// Dedup entries added.
    pub added: Vec<(DedupKey, DedupEntry)>,
    /// Dedup entries forgotten.
    pub dropped: Vec<(DedupKey, DedupEntry)>,
    /// Charging windows ending before this are closed.
    pub closed_before: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Billing;
    use proptest::prelude::*;

    fn charge(rid: &str, kind: EventKind, price: u64, ts: i64, offset: i64) -> Charge {
        Charge {
            claims: WinClaims {
                request_id: rid.into(),
                imp_id: "1".into(),
                campaign_id: "c1".into(),
                advertiser_id: "a1".into(),
                ad_id: "ad".into(),
                billing: match kind {
                    EventKind::Impression => Billing::Cpm,
                    EventKind::Click => Billing::Cpc,
                    EventKind::Conversion => Billing::Cpa,
                },
                charge_micros: price,
                issued: EventTime(ts - 10),
                country: None,
                device: None,
            },
            kind,
            ts: EventTime(ts),
            conversion_id: (kind == EventKind::Conversion).then(|| format!("conv-{rid}")),
            origin: Origin {
                stream: 1,
                partition: 0,
                offset,
            },
            key: None,
            payload: Vec::new(),
        }
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn charges_once() {
        let mut l = Ledger::new(Horizons::default());
        let c = charge("r1", EventKind::Click, 500, 1_000, 7);
        assert_eq!(l.apply(&c, chrono_tz::UTC).unwrap().spend_micros, 500);
        assert_eq!(l.apply(&c, chrono_tz::UTC), Err(Refusal::Replay));
        let mut dup = c.clone();
        dup.origin.offset = 8;
        assert!(matches!(
            l.apply(&dup, chrono_tz::UTC),
            Err(Refusal::Duplicate(_))
        ));
        // The same win's impression is another billing event.
        assert!(l
            .apply(
                &charge("r1", EventKind::Impression, 3, 1_000, 9),
                chrono_tz::UTC
            )
            .is_ok());
        let day = day::budget_day(EventTime(1_000), chrono_tz::UTC);
        assert_eq!(l.spend("c1", day), 503);
    }

    #[test]
    fn late_beyond_horizon_is_refused() {
        let mut l = Ledger::new(Horizons::default());
        let late = charge("r1", EventKind::Click, 5, 2 * DAY, 1);
        let mut late = late;
        late.claims.issued = EventTime(0);
        assert_eq!(l.apply(&late, chrono_tz::UTC), Err(Refusal::Expired));
        // A window closed by the frontier cannot be charged even if the event itself is early.
        let c = charge("r2", EventKind::Click, 5, 100, 2);
        l.advance(c.window_end(&Horizons::default()) + 1);
        assert_eq!(l.apply(&c, chrono_tz::UTC), Err(Refusal::Expired));
    }

    #[test]
    fn a_conversion_is_charged_once_even_if_attributed_twice() {
        let mut l = Ledger::new(Horizons::default());
        let first = charge("r1", EventKind::Conversion, 9, 1_000, 3);
        let mut second = charge("r2", EventKind::Conversion, 9, 1_000, 3);
        second.conversion_id = first.conversion_id.clone();
        assert!(l.apply(&first, chrono_tz::UTC).is_ok());
        assert_eq!(l.apply(&second, chrono_tz::UTC), Err(Refusal::Replay));
    }

    proptest! {
        /// Whatever the order, duplication and replay of a stream of charges, spend per day is
        /// the sum over the distinct billing identities.
        #[test]
        fn spend_is_the_sum_over_distinct_events(
            events in proptest::collection::vec((0u8..40, 0u8..3, 1u64..10_000, 0i64..3 * DAY), 1..200),
            tz in prop::sample::select(vec!["UTC", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Chatham"]),
            order in any::<prop::sample::Index>(),
        ) {
            let tz: Tz = tz.parse().unwrap();
            // Ground truth: the first occurrence of each identity, at its own time and price.
            let mut expected: BTreeMap<NaiveDate, u64> = BTreeMap::new();
            let mut seen = HashSet::new();
            let charges: Vec<Charge> = events.iter().enumerate().map(|(i, (rid, kind, price, ts))| {
                let kind = [EventKind::Impression, EventKind::Click, EventKind::Conversion][*kind as usize];
                // Duplicates carry the same identity and price as the original.
                let original = events.iter().position(|(r, k, _, _)| r == rid && [EventKind::Impression, EventKind::Click, EventKind::Conversion][*k as usize] == kind).unwrap();
                let (_, _, p, t) = events[original];
                let _ = (price, ts);
                charge(&format!("r{rid}"), kind, p, t, i as i64)
            }).collect();
            for c in &charges {
                if seen.insert(c.dedup_keys()) {
                    *expected.entry(day::budget_day(c.ts, tz)).or_default() += c.claims.charge_micros;
                }
            }
            let mut ledger = Ledger::new(Horizons::default());
            let rotate = order.index(charges.len());
            for c in charges.iter().cycle().skip(rotate).take(charges.len() * 2) {
                let _ = ledger.apply(c, tz);
            }
            for (day, sum) in &expected {
                prop_assert_eq!(ledger.spend("c1", *day), *sum);
            }
            let total: u64 = ledger.all_spend().map(|s| s.spend_micros).sum();
            prop_assert_eq!(total, expected.values().sum::<u64>());
        }

        /// A checkpoint (changes taken, then restored) holds the same spend and dedup state.
        #[test]
        fn restore_is_lossless(n in 1usize..50) {
            let mut l = Ledger::new(Horizons::default());
            for i in 0..n {
                let _ = l.apply(&charge(&format!("r{i}"), EventKind::Click, i as u64 + 1, 1_000 + i as i64, i as i64), chrono_tz::UTC);
            }
            let changes = l.take_changes();
            let restored = Ledger::restore(
                Horizons::default(),
                changes.spend.iter().map(|(c, d, s)| DaySpend { campaign_id: c.clone(), day: *d, spend_micros: s.unwrap_or(0) }),
                changes.added.iter().copied(),
                changes.closed_before,
            );
            prop_assert_eq!(restored.all_spend().collect::<Vec<_>>(), l.all_spend().collect::<Vec<_>>());
            prop_assert_eq!(restored.dedup_len(), l.dedup_len());
            for i in 0..n {
                let c = charge(&format!("r{i}"), EventKind::Click, 1, 1_000 + i as i64, i as i64);
                prop_assert_eq!(restored.dedup.check(c.dedup_keys()[0], c.origin), Seen::Replay);
            }
        }
    }
}
