//! The spend ledger: what each campaign has been charged, per budget day, exactly once.
//!
//! A [`Charge`] is what a valid billing token says a billing event costs. The ledger accepts it
//! only if none of its billing identities ([`Charge::dedup_keys`]) was charged before, its event
//! time lies within a bounded window of the win's issue time, its price is within what the
//! campaign bid ([`Terms`]) and its charging window is still open. Spend goes to the budget day
//! of the *win* (the day the auction spent that day's budget on it), in the campaign's time zone.
//!
//! **The budget is a hard limit on what is billed.** Each charge bills what is left of the day's
//! budget, at most its price; the rest is delivered free and recorded as overdelivery. For a
//! given budget the billed total of a day is therefore `min(sum of prices, budget)` whatever the
//! order in which events arrive (property-tested), and never above the budget.
//! Everything here is plain data so that it can be property-tested and checkpointed.
//!
//! Why replays are harmless: the dedup entries and the spend they justify change together and
//! are checkpointed together, and Kafka offsets are only checkpointed once the ledger state
//! covering them is durable. A restart therefore re-reads some events the ledger already holds;
//! their keys are known with the same Kafka position ([`Seen::Replay`]) and they are skipped.

pub use crate::time::day;
pub mod dedup;
pub mod operator;
pub mod status;

use std::collections::BTreeMap;

use crate::hash::{by_str_or_insert_with, StrMap};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::events::EventKind;
pub use crate::records::{Charge, Charged, DaySpend, DedupKey, Origin};
use crate::time::EventTime;
pub use dedup::{dedup_key, DedupEntry, DedupSet, Seen};

/// How long after the auction each kind of billing event may still be charged, and how far
/// before it (clock skew between the auction and the event's logger).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizons {
    /// For impressions, milliseconds after the token was issued.
    pub impression_ms: i64,
    /// For clicks, milliseconds after the token was issued.
    pub event_ms: i64,
    /// For conversions (the attribution window plus slack), milliseconds.
    pub conversion_ms: i64,
    /// How much earlier than its win's issue time an event may be stamped, milliseconds.
    pub skew_ms: i64,
}

impl Default for Horizons {
    fn default() -> Self {
        Horizons {
            impression_ms: 3_600_000,
            event_ms: 24 * 3_600_000,
            conversion_ms: 8 * 24 * 3_600_000,
            skew_ms: 60_000,
        }
    }
}

impl Horizons {
    /// How long after its win an event of `kind` may be charged, milliseconds.
    pub fn horizon(&self, kind: EventKind) -> i64 {
        match kind {
            EventKind::Impression => self.impression_ms,
            EventKind::Click => self.event_ms,
            EventKind::Conversion => self.conversion_ms,
        }
    }
}

/// What the campaign's definition says about one charge: the budget day it goes to, the day's
/// budget, and the most one billing event of this win may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terms {
    /// The budget day of the win.
    pub day: NaiveDate,
    /// That day's budget, micros.
    pub budget_micros: u64,
    /// The highest price one billing event of the win may carry (the campaign's bid per billing
    /// unit when the auction ran), micros.
    pub max_charge_micros: u64,
}

impl Charge {
    /// The charge of an impression or click whose verified win bills on that very event.
    pub fn for_event(
        kind: EventKind,
        ts: EventTime,
        claims: crate::token::SharedClaims,
        origin: Origin,
        raw: crate::records::RawBytes,
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
        self.claims
            .issued
            .millis()
            .saturating_add(horizons.horizon(self.kind))
    }

    /// Whether the event's time lies within `[issued - skew, window end]`: an event stamped in
    /// seconds instead of milliseconds, days ahead or days behind its win is not charged.
    pub fn time_error(&self, horizons: &Horizons) -> Option<String> {
        let (ts, issued) = (self.ts.millis(), self.claims.issued.millis());
        if ts < issued.saturating_sub(horizons.skew_ms) {
            Some(format!(
                "event time {ts} is {} ms before its win was issued ({issued}); at most {} ms of clock skew is allowed (a timestamp in seconds?)",
                issued.saturating_sub(ts),
                horizons.skew_ms
            ))
        } else if ts > self.window_end(horizons) {
            Some(format!(
                "event time {ts} is {} ms after its win was issued ({issued}); a {} is charged within {} ms",
                ts.saturating_sub(issued),
                self.kind.as_str(),
                horizons.horizon(self.kind)
            ))
        } else {
            None
        }
    }
}

impl Charged {
    /// What reports keep of `charge`, billed `billed_micros` with `overdelivery_micros` free.
    pub fn of(charge: &Charge, billed_micros: u64, overdelivery_micros: u64) -> Self {
        Charged {
            claims: charge.claims.clone(),
            kind: charge.kind,
            ts: charge.ts,
            identity: dedup_key(&[
                &charge.claims.request_id,
                &charge.claims.imp_id,
                charge.kind.as_str(),
            ]),
            billed_micros,
            overdelivery_micros,
            replayed: false,
        }
    }
}

/// Why a charge was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Already charged from this very position (replay after restart): not an error. Carries
    /// what the first charge billed and delivered free, micros.
    #[error("replayed event already charged")]
    Replay {
        /// Billed by the first charge.
        billed_micros: u64,
        /// Delivered free by the first charge.
        overdelivery_micros: u64,
    },
    /// Already charged from another position.
    #[error("duplicate billing event (first charged from partition {} offset {})", .0.partition, .0.offset)]
    Duplicate(Origin),
    /// The charging window has closed.
    #[error("billing event outside its charging window")]
    Expired,
    /// The event's time is not within the bounded window around its win's issue time.
    #[error("{0}")]
    BadTime(String),
    /// The token's price is above what the campaign bid for that win.
    #[error("price {price} micros is above the campaign's bid of {max} micros per billing event")]
    PriceAboveBid {
        /// The token's price.
        price: u64,
        /// The most the campaign's bid allows.
        max: u64,
    },
}

/// The result of an applied charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The budget day charged.
    pub day: NaiveDate,
    /// That day's billed spend after the charge.
    pub spend_micros: u64,
    /// That day's overdelivery after the charge.
    pub overdelivery_micros: u64,
    /// What this charge billed.
    pub billed_micros: u64,
    /// What this charge delivered past the budget, free.
    pub over_micros: u64,
}

/// Billed and overdelivered micros of one campaign-day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DayTotals {
    /// Billed.
    pub billed: u64,
    /// Delivered free past the budget.
    pub over: u64,
}

/// Splits a charge of `price` against a day that has billed `billed` of `budget`: what is
/// billed (what is left of the budget, at most the price) and what is delivered free.
pub fn split_charge(price: u64, billed: u64, budget: u64) -> (u64, u64) {
    let billable = price.min(budget.saturating_sub(billed));
    (billable, price - billable)
}

/// The ledger shard held by one worker.
#[derive(Debug, Default)]
pub struct Ledger {
    spend: StrMap<BTreeMap<NaiveDate, DayTotals>>,
    dedup: DedupSet,
    horizons: Horizons,
    /// Windows ending before this were forgotten: their events can no longer be charged.
    closed_before: i64,
    /// The days of each campaign whose spend changed since the last checkpoint.
    dirty_spend: StrMap<Vec<NaiveDate>>,
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

    /// Applies `charge` under the campaign's `terms`: bills what is left of the day's budget,
    /// at most the charge's price, and records the rest as overdelivery.
    pub fn apply(&mut self, charge: &Charge, terms: &Terms) -> Result<Applied, Refusal> {
        let keys = charge.dedup_keys();
        for key in &keys {
            match self.dedup.check(*key, charge.origin) {
                Seen::New => {}
                Seen::Replay => {
                    let price = charge.claims.charge_micros;
                    let (billed_micros, overdelivery_micros) = self
                        .dedup
                        .get(*key)
                        .and_then(|e| e.amounts)
                        .unwrap_or((price, 0));
                    return Err(Refusal::Replay {
                        billed_micros,
                        overdelivery_micros,
                    });
                }
                Seen::Duplicate(first) => return Err(Refusal::Duplicate(first)),
            }
        }
        if let Some(detail) = charge.time_error(&self.horizons) {
            return Err(Refusal::BadTime(detail));
        }
        let window_end = charge.window_end(&self.horizons);
        if window_end < self.closed_before {
            return Err(Refusal::Expired);
        }
        let price = charge.claims.charge_micros;
        if price > terms.max_charge_micros {
            return Err(Refusal::PriceAboveBid {
                price,
                max: terms.max_charge_micros,
            });
        }
        let day = terms.day;
        let campaign = charge.claims.campaign_id.as_str();
        // The campaign's id is copied only the first time it is charged, not per charge.
        let days = by_str_or_insert_with(&mut self.spend, campaign, BTreeMap::new);
        let totals = days.entry(day).or_default();
        let (billed_micros, over_micros) = split_charge(price, totals.billed, terms.budget_micros);
        totals.billed += billed_micros;
        totals.over = totals.over.saturating_add(over_micros);
        let totals = *totals;
        while days.len() > DAYS_KEPT {
            days.pop_first();
        }
        for key in keys {
            self.dedup.insert(
                key,
                DedupEntry {
                    expires: window_end,
                    origin: charge.origin,
                    shard: crate::routing::route(&charge.claims.campaign_id),
                    amounts: Some((billed_micros, over_micros)),
                },
            );
            self.dirty_keys.push(key);
        }
        let dirty = by_str_or_insert_with(&mut self.dirty_spend, campaign, Vec::new);
        if !dirty.contains(&day) {
            dirty.push(day);
        }
        Ok(Applied {
            day,
            spend_micros: totals.billed,
            overdelivery_micros: totals.over,
            billed_micros,
            over_micros,
        })
    }

    /// Billed spend of `campaign` on `day`.
    pub fn spend(&self, campaign: &str, day: NaiveDate) -> u64 {
        self.totals(campaign, day).billed
    }

    /// Billed and overdelivered micros of `campaign` on `day`.
    pub fn totals(&self, campaign: &str, day: NaiveDate) -> DayTotals {
        self.spend
            .get(campaign)
            .and_then(|d| d.get(&day))
            .copied()
            .unwrap_or_default()
    }

    /// Every (campaign, day) spend held.
    pub fn all_spend(&self) -> impl Iterator<Item = DaySpend> + '_ {
        self.spend.iter().flat_map(|(c, days)| {
            days.iter().map(move |(d, s)| DaySpend {
                campaign_id: c.as_str().into(),
                day: *d,
                spend_micros: s.billed,
                overdelivery_micros: s.over,
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
            .flat_map(|(campaign_id, days)| {
                let held = self.spend.get(&campaign_id);
                days.into_iter().map(move |day| {
                    let totals = held.and_then(|d| d.get(&day)).copied();
                    (campaign_id.clone(), day, totals)
                })
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
            by_str_or_insert_with(&mut ledger.spend, &s.campaign_id, BTreeMap::new).insert(
                s.day,
                DayTotals {
                    billed: s.spend_micros,
                    over: s.overdelivery_micros,
                },
            );
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
    pub spend: Vec<(String, NaiveDate, Option<DayTotals>)>,
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
    use crate::hash::HashSet;
    use crate::token::WinClaims;
    use chrono_tz::Tz;
    use proptest::prelude::*;

    fn charge(rid: &str, kind: EventKind, price: u64, ts: i64, offset: i64) -> Charge {
        Charge {
            claims: std::sync::Arc::new(WinClaims {
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
            }),
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

    /// Terms of an uncapped campaign whose budget day runs in `tz`.
    fn open_terms(c: &Charge, tz: Tz) -> Terms {
        Terms {
            day: day::budget_day(c.claims.issued, tz),
            budget_micros: u64::MAX,
            max_charge_micros: u64::MAX,
        }
    }

    fn apply(l: &mut Ledger, c: &Charge, tz: Tz) -> Result<Applied, Refusal> {
        l.apply(c, &open_terms(c, tz))
    }

    #[test]
    fn charges_once() {
        let mut l = Ledger::new(Horizons::default());
        let c = charge("r1", EventKind::Click, 500, 1_000, 7);
        assert_eq!(apply(&mut l, &c, chrono_tz::UTC).unwrap().spend_micros, 500);
        assert_eq!(
            apply(&mut l, &c, chrono_tz::UTC),
            Err(Refusal::Replay {
                billed_micros: 500,
                overdelivery_micros: 0
            })
        );
        let mut dup = c.clone();
        dup.origin.offset = 8;
        assert!(matches!(
            apply(&mut l, &dup, chrono_tz::UTC),
            Err(Refusal::Duplicate(_))
        ));
        // The same win's impression is another billing event.
        assert!(apply(
            &mut l,
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
        std::sync::Arc::make_mut(&mut late.claims).issued = EventTime(0);
        assert!(matches!(
            apply(&mut l, &late, chrono_tz::UTC),
            Err(Refusal::BadTime(_))
        ));
        // A window closed by the frontier cannot be charged even if the event itself is early.
        let c = charge("r2", EventKind::Click, 5, 100, 2);
        l.advance(c.window_end(&Horizons::default()) + 1);
        assert_eq!(apply(&mut l, &c, chrono_tz::UTC), Err(Refusal::Expired));
    }

    /// The logger bugs of the field: a timestamp in seconds, one a day ahead, one two days
    /// behind. None is charged; a small clock skew and a click hours later are.
    #[test]
    fn event_times_far_from_the_win_are_refused() {
        let issued = 1_780_000_000_000; // 2026-05-28
        let at = |ts: i64, kind: EventKind, rid: &str| {
            let mut c = charge(rid, kind, 5, ts, 1);
            std::sync::Arc::make_mut(&mut c.claims).issued = EventTime(issued);
            c
        };
        let mut l = Ledger::new(Horizons::default());
        for (ts, kind) in [
            (issued / 1000, EventKind::Impression),
            (issued + 23 * 3_600_000, EventKind::Impression),
            (issued - 2 * DAY, EventKind::Click),
            (issued + 25 * 3_600_000, EventKind::Click),
            (issued - 61_000, EventKind::Impression),
        ] {
            let c = at(ts, kind, "bad");
            let refusal = apply(&mut l, &c, chrono_tz::UTC).unwrap_err();
            assert!(matches!(refusal, Refusal::BadTime(_)), "{ts}: {refusal:?}");
        }
        assert_eq!(l.dedup_len(), 0, "refused events consume no identity");
        for (i, (ts, kind)) in [
            (issued - 30_000, EventKind::Impression),
            (issued + 50 * 60_000, EventKind::Impression),
            (issued + 23 * 3_600_000, EventKind::Click),
        ]
        .into_iter()
        .enumerate()
        {
            let c = at(ts, kind, &format!("ok{i}"));
            assert!(apply(&mut l, &c, chrono_tz::UTC).is_ok(), "{ts}");
        }
    }

    #[test]
    fn prices_above_the_bid_are_refused() {
        let mut l = Ledger::new(Horizons::default());
        let c = charge("r1", EventKind::Click, 1_000_000_000_000, 1_000, 1);
        let terms = Terms {
            max_charge_micros: 2_000_000,
            ..open_terms(&c, chrono_tz::UTC)
        };
        assert_eq!(
            l.apply(&c, &terms),
            Err(Refusal::PriceAboveBid {
                price: 1_000_000_000_000,
                max: 2_000_000
            })
        );
        let ok = charge("r2", EventKind::Click, 2_000_000, 1_000, 2);
        assert!(l.apply(&ok, &terms).is_ok());
    }

    /// A late click flood: the budget bills at most what is left, the rest is overdelivery.
    #[test]
    fn the_budget_caps_what_is_billed() {
        let mut l = Ledger::new(Horizons::default());
        let mut billed = Vec::new();
        for i in 0..10 {
            let c = charge(&format!("r{i}"), EventKind::Click, 300_000, 1_000, i);
            let terms = Terms {
                budget_micros: 1_000_000,
                ..open_terms(&c, chrono_tz::UTC)
            };
            let a = l.apply(&c, &terms).unwrap();
            billed.push((a.billed_micros, a.over_micros));
        }
        assert_eq!(
            &billed[..4],
            &[(300_000, 0), (300_000, 0), (300_000, 0), (100_000, 200_000)]
        );
        assert!(billed[4..].iter().all(|b| *b == (0, 300_000)));
        let day = day::budget_day(EventTime(990), chrono_tz::UTC);
        assert_eq!(
            l.totals("c1", day),
            DayTotals {
                billed: 1_000_000,
                over: 2_000_000
            }
        );
        // A replay reports the amounts of the first charge.
        let c = charge("r3", EventKind::Click, 300_000, 1_000, 3);
        assert_eq!(
            apply(&mut l, &c, chrono_tz::UTC),
            Err(Refusal::Replay {
                billed_micros: 100_000,
                overdelivery_micros: 200_000
            })
        );
    }

    #[test]
    fn a_conversion_is_charged_once_even_if_attributed_twice() {
        let mut l = Ledger::new(Horizons::default());
        let first = charge("r1", EventKind::Conversion, 9, 1_000, 3);
        let mut second = charge("r2", EventKind::Conversion, 9, 1_000, 3);
        second.conversion_id = first.conversion_id.clone();
        assert!(apply(&mut l, &first, chrono_tz::UTC).is_ok());
        assert!(matches!(
            apply(&mut l, &second, chrono_tz::UTC),
            Err(Refusal::Replay { .. })
        ));
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
            let mut seen = HashSet::default();
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
                    *expected.entry(day::budget_day(c.claims.issued, tz)).or_default() += c.claims.charge_micros;
                }
            }
            let mut ledger = Ledger::new(Horizons::default());
            let rotate = order.index(charges.len());
            for c in charges.iter().cycle().skip(rotate).take(charges.len() * 2) {
                let _ = apply(&mut ledger, c, tz);
            }
            for (day, sum) in &expected {
                prop_assert_eq!(ledger.spend("c1", *day), *sum);
            }
            let total: u64 = ledger.all_spend().map(|s| s.spend_micros).sum();
            prop_assert_eq!(total, expected.values().sum::<u64>());
        }

        /// The hard cap: for every order of the same events (duplicates and replays included),
        /// each campaign-day bills the same total, `min(sum of prices, budget)`, never more than
        /// its budget; billed plus overdelivery is the sum of the distinct prices.
        #[test]
        fn billed_spend_is_order_independent_and_capped(
            prices in proptest::collection::vec((1u64..2_000_000, 0i64..3 * DAY), 1..120),
            budget in 0u64..20_000_000,
            perm in any::<u64>(),
            dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let tz = chrono_tz::UTC;
            let mut charges: Vec<Charge> = prices.iter().enumerate()
                .map(|(i, (p, t))| charge(&format!("r{i}"), EventKind::Click, *p, *t, i as i64))
                .collect();
            let mut expected: BTreeMap<NaiveDate, u64> = BTreeMap::new();
            for c in &charges {
                *expected.entry(day::budget_day(c.claims.issued, tz)).or_default() += c.claims.charge_micros;
            }
            let run = |order: &[Charge]| {
                let mut l = Ledger::new(Horizons::default());
                for c in order {
                    let terms = Terms { budget_micros: budget, ..open_terms(c, tz) };
                    let _ = l.apply(c, &terms);
                }
                expected.keys().map(|d| l.totals("c1", *d)).collect::<Vec<_>>()
            };
            let in_order = run(&charges);
            // Another order, with duplicates (another position) and replays (the same one).
            for d in &dups {
                let mut dup = charges[d.index(prices.len())].clone();
                dup.origin.offset += 10_000;
                charges.push(dup.clone());
                dup.origin.offset -= 10_000;
                charges.push(dup);
            }
            let mut state = perm;
            for i in (1..charges.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                charges.swap(i, (state >> 33) as usize % (i + 1));
            }
            let shuffled = run(&charges);
            prop_assert_eq!(&in_order, &shuffled);
            for (totals, sum) in in_order.iter().zip(expected.values()) {
                prop_assert!(totals.billed <= budget);
                prop_assert_eq!(totals.billed, (*sum).min(budget));
                prop_assert_eq!(totals.billed + totals.over, *sum);
            }
        }

        /// A checkpoint (changes taken, then restored) holds the same spend and dedup state.
        #[test]
        fn restore_is_lossless(n in 1usize..50) {
            let mut l = Ledger::new(Horizons::default());
            for i in 0..n {
                let _ = apply(&mut l, &charge(&format!("r{i}"), EventKind::Click, i as u64 + 1, 1_000 + i as i64, i as i64), chrono_tz::UTC);
            }
            let changes = l.take_changes();
            let restored = Ledger::restore(
                Horizons::default(),
                changes.spend.iter().map(|(c, d, s)| { let s = s.unwrap_or_default(); DaySpend { campaign_id: c.as_str().into(), day: *d, spend_micros: s.billed, overdelivery_micros: s.over } }),
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
