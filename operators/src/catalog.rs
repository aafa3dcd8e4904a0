//! The campaign catalog: the latest definition of each campaign, from the compacted topic, with
//! the bit of history that money depends on ([`History`]).
//!
//! **Time-zone changes take effect at a day boundary.** A campaign whose zone changes mid-day
//! would otherwise jump to another date (Los Angeles at noon is already tomorrow in Tokyo) and
//! spend a fresh budget the same day. The old zone stays in effect until the later of the two
//! zones' next midnights after the change, so budget dates only move forward: the day of the
//! change ends in the old zone, and the new zone's first day is a fresh date.
//!
//! **Bids are remembered for the charging horizon**, so that the ledger checks a token's price
//! against what the campaign bid when the auction ran, not against a later edit.
//!
//! The ledger's catalog computes the history from the updates it reads (at their event time),
//! checkpoints it (the compacted topic keeps only the latest definition) and sends it along with
//! every update, so that every replica (serving, pacing, the live view) decides budget days and
//! bids exactly as the ledger does.

use std::sync::Arc;

use crate::hash::HashMap;

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::events::{Billing, Campaign};
pub use crate::records::{CatalogUpdate, History, ZoneChange};
use crate::time::day::{budget_day, day_start};
use crate::time::EventTime;

/// Bids kept per campaign (older ones are folded into the oldest kept).
const BIDS_KEPT: usize = 16;

impl History {
    /// The history of a campaign first seen at `at` with `campaign`.
    pub fn first(campaign: &Campaign, at: EventTime) -> Self {
        History {
            timezone: campaign.timezone.clone(),
            zone_change: None,
            bids: vec![(at, campaign.bid_micros)],
        }
    }

    /// The history after `campaign` was defined at `at` (returns whether anything changed).
    pub fn update(&mut self, campaign: &Campaign, at: EventTime) -> bool {
        let mut changed = false;
        if campaign.timezone != self.timezone {
            let old = self.tz_at(at);
            if let Ok(new) = campaign.tz() {
                let day = budget_day(at, old);
                self.zone_change = day.succ_opt().map(|next| ZoneChange {
                    previous: old.name().to_string(),
                    until: day_start(next, old).max(day_start(next, new)).max(at),
                });
                if old == new {
                    self.zone_change = None;
                }
            }
            self.timezone = campaign.timezone.clone();
            changed = true;
        }
        if self.bids.last().map(|(_, b)| *b) != Some(campaign.bid_micros) {
            // An update stamped before the last one (a replay, a reordered topic) still only adds.
            let from = self.bids.last().map_or(at, |(t, _)| at.max(*t));
            self.bids.push((from, campaign.bid_micros));
            if self.bids.len() > BIDS_KEPT {
                let folded = self.bids.remove(0).1;
                if let Some(first) = self.bids.first_mut() {
                    first.1 = first.1.max(folded);
                }
            }
            changed = true;
        }
        changed
    }

    /// The zone budget days run in at `t`.
    pub fn tz_at(&self, t: EventTime) -> Tz {
        let current = self.timezone.parse().unwrap_or(chrono_tz::UTC);
        match &self.zone_change {
            Some(change) if t < change.until => change.previous.parse().unwrap_or(current),
            _ => current,
        }
    }

    /// The highest bid (micros per billing unit) in effect at any time from `slack_ms` before
    /// `t` to `t`: an auction may run on a replica that has not seen the latest edit yet.
    pub fn bid_at(&self, t: EventTime, slack_ms: i64) -> Option<u64> {
        let since = EventTime(t.millis().saturating_sub(slack_ms));
        let mut best = None;
        for (i, (from, bid)) in self.bids.iter().enumerate() {
            let next = self.bids.get(i + 1).map(|(n, _)| *n);
            let starts_in_time = i == 0 || *from <= t;
            let still_in_effect = next.is_none_or(|n| n > since);
            if starts_in_time && still_in_effect {
                best = Some(best.map_or(*bid, |b: u64| b.max(*bid)));
            }
        }
        best
    }
}

/// A campaign with its parsed time zone and its history.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    /// The definition.
    pub campaign: Campaign,
    /// The time zone of the definition (see [`Listed::day_of`] for the zone in effect).
    pub tz: Tz,
    /// Zone changes and bids.
    pub history: History,
}

/// How long after an edit an auction may still run on the previous bid (replicas catch up).
pub const BID_PROPAGATION_MS: i64 = 60_000;

impl Listed {
    /// The budget day of instant `t`, in the zone in effect then (without parsing the zone's
    /// name in the usual case: the ledger asks once per charge).
    pub fn day_of(&self, t: EventTime) -> NaiveDate {
        budget_day(t, self.tz_at(t))
    }

    /// The zone budget days run in at `t`.
    pub fn tz_at(&self, t: EventTime) -> Tz {
        // The usual case without parsing the zone's name (serving asks once per candidate).
        if self.history.zone_change.is_none() && self.history.timezone == self.tz.name() {
            return self.tz;
        }
        self.history.tz_at(t)
    }

    /// The most one billing event of a win issued at `issued` may cost: the campaign's bid per
    /// billing unit then (per impression for CPM, rounded up).
    pub fn max_charge_at(&self, issued: EventTime) -> u64 {
        let bid = self
            .history
            .bid_at(issued, BID_PROPAGATION_MS)
            .unwrap_or(self.campaign.bid_micros);
        match self.campaign.billing {
            Billing::Cpm => bid.div_ceil(1000),
            Billing::Cpc | Billing::Cpa => bid,
        }
    }
}

/// Campaigns by id. Each definition is shared ([`Arc`]): serving's index holds the same ones
/// without copying or looking them up by id per request.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    entries: HashMap<String, Arc<Listed>>,
    /// Histories of campaigns restored from a checkpoint or deleted, until defined again.
    dormant: HashMap<String, History>,
}

impl Catalog {
    /// Applies an update read at `at`; returns whether anything changed. An update that carries
    /// its history (from the ledger) is taken as it is; otherwise the history is evolved here.
    pub fn apply(&mut self, update: &CatalogUpdate, at: EventTime) -> bool {
        match &update.campaign {
            Some(c) => {
                // Campaigns are validated at decode time, so the zone parses; UTC is a guard.
                let tz = c.tz().unwrap_or(chrono_tz::UTC);
                let history = match &update.history {
                    Some(h) => h.clone(),
                    None => {
                        let known = self
                            .entries
                            .get(&update.campaign_id)
                            .map(|l| l.history.clone())
                            .or_else(|| self.dormant.remove(&update.campaign_id));
                        match known {
                            Some(mut h) => {
                                h.update(c, at);
                                h
                            }
                            None => History::first(c, at),
                        }
                    }
                };
                let listed = Listed {
                    campaign: (**c).clone(),
                    tz,
                    history,
                };
                let changed = self
                    .entries
                    .get(&update.campaign_id)
                    .is_none_or(|old| **old != listed);
                if changed {
                    self.entries
                        .insert(update.campaign_id.clone(), Arc::new(listed));
                }
                changed
            }
            None => match self.entries.remove(&update.campaign_id) {
                Some(listed) => {
                    let history =
                        Arc::try_unwrap(listed).map_or_else(|l| l.history.clone(), |l| l.history);
                    self.dormant.insert(update.campaign_id.clone(), history);
                    true
                }
                None => false,
            },
        }
    }

    /// Remembers the checkpointed history of a campaign, for when its definition is read again.
    pub fn restore_history(&mut self, campaign_id: String, history: History) {
        self.dormant.insert(campaign_id, history);
    }

    /// The history of `campaign_id` (defined, deleted or restored).
    pub fn history(&self, campaign_id: &str) -> Option<&History> {
        self.entries
            .get(campaign_id)
            .map(|l| &l.history)
            .or_else(|| self.dormant.get(campaign_id))
    }

    /// The campaign named `id`.
    pub fn get(&self, id: &str) -> Option<&Listed> {
        self.entries.get(id).map(|l| &**l)
    }

    /// The campaign named `id`, shared.
    pub fn get_shared(&self, id: &str) -> Option<&Arc<Listed>> {
        self.entries.get(id)
    }

    /// Number of campaigns.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every campaign.
    pub fn iter(&self) -> impl Iterator<Item = &Listed> {
        self.entries.values().map(|l| &**l)
    }

    /// Every campaign, shared.
    pub fn shared(&self) -> impl Iterator<Item = &Arc<Listed>> {
        self.entries.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_and_tombstones() {
        let c = Campaign::parse(br#"{"campaign_id":"c","advertiser_id":"a","daily_budget_micros":5,"timezone":"Asia/Tokyo","billing":"cpm","bid_micros":1}"#).unwrap();
        let mut cat = Catalog::default();
        let up = CatalogUpdate::new("c".into(), Some(Box::new(c)));
        assert!(cat.apply(&up, EventTime(0)));
        assert!(
            !cat.apply(&up, EventTime(5)),
            "same definition is no change"
        );
        assert_eq!(cat.get("c").unwrap().tz, chrono_tz::Asia::Tokyo);
        assert!(cat.apply(&CatalogUpdate::new("c".into(), None), EventTime(6)));
        assert!(cat.is_empty());
    }

    fn campaign(tz: &str, bid: u64) -> Box<Campaign> {
        Box::new(Campaign::parse(format!(r#"{{"campaign_id":"c","advertiser_id":"a","daily_budget_micros":5,"timezone":"{tz}","billing":"cpc","bid_micros":{bid}}}"#).as_bytes()).unwrap())
    }

    fn t(s: &str) -> EventTime {
        EventTime::parse(s).unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// Los Angeles at local noon is already tomorrow in Tokyo: the day of the change ends in Los
    /// Angeles, and Tokyo's first day is a fresh date. Dates never go back.
    #[test]
    fn a_zone_change_at_local_noon_waits_for_the_day_to_end() {
        let mut cat = Catalog::default();
        let up = |tz| CatalogUpdate::new("c".into(), Some(campaign(tz, 1)));
        cat.apply(&up("America/Los_Angeles"), t("2026-06-01T00:00:00Z"));
        let noon_la = t("2026-06-10T19:00:00Z");
        cat.apply(&up("Asia/Tokyo"), noon_la);
        let l = cat.get("c").unwrap();
        assert_eq!(l.day_of(noon_la), date("2026-06-10"));
        assert_eq!(l.day_of(t("2026-06-11T06:59:00Z")), date("2026-06-10"));
        // Los Angeles' midnight (07:00Z) is 16:00 in Tokyo on the 11th: a new date.
        assert_eq!(l.day_of(t("2026-06-11T07:00:00Z")), date("2026-06-11"));
        assert_eq!(l.day_of(t("2026-06-11T15:00:00Z")), date("2026-06-12"));
        // Westward: Tokyo at noon to Los Angeles (still the day before there): the date stays
        // until both zones have reached the next one.
        let mut cat = Catalog::default();
        cat.apply(&up("Asia/Tokyo"), t("2026-06-01T00:00:00Z"));
        let noon_tokyo = t("2026-06-10T03:00:00Z");
        cat.apply(&up("America/Los_Angeles"), noon_tokyo);
        let l = cat.get("c").unwrap();
        let mut last = l.day_of(noon_tokyo);
        assert_eq!(last, date("2026-06-10"));
        for h in 0..72 {
            let d = l.day_of(EventTime(noon_tokyo.millis() + h * 3_600_000));
            assert!(d >= last, "dates went back at +{h} h");
            assert!(d <= last.succ_opt().unwrap());
            last = d;
        }
    }

    /// Any sequence of zone changes: budget dates never go back.
    #[test]
    fn dates_never_go_back_whatever_the_changes() {
        let zones = [
            "UTC",
            "Pacific/Kiritimati",
            "Pacific/Pago_Pago",
            "Asia/Kolkata",
            "America/Santiago",
        ];
        let mut cat = Catalog::default();
        let start = t("2026-03-01T00:00:00Z").millis();
        let mut last = None;
        for step in 0..400i64 {
            let at = EventTime(start + step * 2_700_000);
            if step % 7 == 0 {
                let tz = zones[(step as usize / 7) % zones.len()];
                cat.apply(&CatalogUpdate::new("c".into(), Some(campaign(tz, 1))), at);
            }
            let d = cat.get("c").unwrap().day_of(at);
            assert!(
                last.is_none_or(|l| d >= l),
                "step {step}: {d} after {last:?}"
            );
            last = Some(d);
        }
    }

    #[test]
    fn prices_are_checked_against_the_bid_when_the_auction_ran() {
        let mut cat = Catalog::default();
        let up = |bid| CatalogUpdate::new("c".into(), Some(campaign("UTC", bid)));
        cat.apply(&up(5_000), EventTime(1_000_000));
        cat.apply(&up(2_000), EventTime(2_000_000));
        let l = cat.get("c").unwrap();
        assert_eq!(
            l.max_charge_at(EventTime(0)),
            5_000,
            "before the first update"
        );
        assert_eq!(l.max_charge_at(EventTime(1_500_000)), 5_000);
        // Within the propagation slack the old bid still counts.
        assert_eq!(l.max_charge_at(EventTime(2_000_000 + 30_000)), 5_000);
        assert_eq!(l.max_charge_at(EventTime(2_000_000 + 61_000)), 2_000);
        // Deleted and defined again: the history survives.
        cat.apply(&CatalogUpdate::new("c".into(), None), EventTime(3_000_000));
        cat.apply(&up(2_000), EventTime(3_100_000));
        assert_eq!(
            cat.get("c").unwrap().max_charge_at(EventTime(1_500_000)),
            5_000
        );
    }

    #[test]
    fn updates_survive_the_binary_exchange_format() {
        let c = Campaign::parse(br#"{"campaign_id":"c","advertiser_id":"a","daily_budget_micros":5,"timezone":"UTC","billing":"cpm","bid_micros":1,"start":"2026-01-01T00:00:00Z","creatives":[{"ad_id":"x","adomain":"a.b"}]}"#).unwrap();
        let mut up = CatalogUpdate::new("c".into(), Some(Box::new(c.clone())));
        up.history = Some(History::first(&c, EventTime(7)));
        let bytes = bincode::serialize(&up).unwrap();
        assert_eq!(bincode::deserialize::<CatalogUpdate>(&bytes).unwrap(), up);
    }
}
