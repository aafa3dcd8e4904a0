//! A campaign's budget status: what `budget.status` publishes and `GET /v1/campaigns/{id}` shows.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::DayTotals;
use crate::catalog::Catalog;
use crate::events::CampaignStatus;
use crate::hash::{by_str_or_insert_with, StrMap};
use crate::records::CatalogUpdate;
use crate::records::{LedgerState, PacingState, PacingUpdate};
use crate::time::EventTime;

/// Budget status of one campaign on its current budget day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// Campaign.
    pub campaign_id: String,
    /// The local budget day.
    pub day: NaiveDate,
    /// The time zone the budget day runs in now.
    pub timezone: String,
    /// A change of time zone that takes effect when the current budget day has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone_change: Option<TimezoneChange>,
    /// Daily budget, micros.
    pub budget_micros: u64,
    /// Billed today, micros (never above the budget).
    pub spend_micros: u64,
    /// Delivered today past the budget, free to the advertiser, micros.
    #[serde(default)]
    pub overdelivery_micros: u64,
    /// Reserved by wins whose billing events have not arrived yet, micros.
    pub reserved_micros: u64,
    /// Budget left: budget - spend - reserved, never negative.
    pub remaining_micros: u64,
    /// `active`, `paused` or `deleted`.
    pub status: String,
    /// When this status was computed, ms since the epoch.
    pub updated_ms: i64,
    /// Pacing of that day (absent until the pacing operator has reported on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing: Option<PacingState>,
}

/// A scheduled change of a campaign's time zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimezoneChange {
    /// The new zone.
    pub timezone: String,
    /// When it takes effect, ms since the epoch.
    pub at_ms: i64,
}

/// Catalog plus recent spend: enough to compute every campaign's [`BudgetStatus`].
#[derive(Debug, Default)]
pub struct BudgetBook {
    catalog: Catalog,
    spend: StrMap<BTreeMap<NaiveDate, DayTotals>>,
    pacing: HashMap<String, PacingUpdate>,
}

impl BudgetBook {
    /// Folds a change to the ledger's state in; returns the campaign it concerns, if any.
    pub fn apply<'a>(&mut self, out: &'a LedgerState) -> Option<&'a str> {
        match out {
            LedgerState::Spend(s) => {
                let days = by_str_or_insert_with(&mut self.spend, &s.campaign_id, BTreeMap::new);
                // Spend of a day only grows, and updates may arrive out of order (batches of
                // different times are not ordered across channels): keep the largest.
                let totals = days.entry(s.day).or_default();
                totals.billed = totals.billed.max(s.spend_micros);
                totals.over = totals.over.max(s.overdelivery_micros);
                while days.len() > super::DAYS_KEPT {
                    days.pop_first();
                }
                Some(&s.campaign_id)
            }
            LedgerState::Campaign(update) => {
                self.catalog.apply(update, EventTime::now());
                Some(&update.campaign_id)
            }
            LedgerState::Settled { .. } => None,
        }
    }

    /// Takes in a campaign's pacing update; returns the campaign.
    pub fn apply_pacing(&mut self, update: &PacingUpdate) -> String {
        let id = update.campaign_id.clone();
        self.pacing.insert(id.clone(), update.clone());
        id
    }

    /// Applies a catalog update directly.
    pub fn apply_catalog(&mut self, update: &CatalogUpdate) {
        self.catalog.apply(update, EventTime::now());
    }

    /// Spend of `campaign` on `day`.
    pub fn spend(&self, campaign: &str, day: NaiveDate) -> u64 {
        self.totals(campaign, day).billed
    }

    /// The latest budget day `campaign` has spend recorded on, and that day's spend (`None`:
    /// none recorded). Spend of any later day is 0.
    pub fn latest_spend(&self, campaign: &str) -> Option<(NaiveDate, u64)> {
        let (day, totals) = self.spend.get(campaign)?.last_key_value()?;
        Some((*day, totals.billed))
    }

    /// Billed and overdelivered micros of `campaign` on `day`.
    pub fn totals(&self, campaign: &str, day: NaiveDate) -> DayTotals {
        self.spend
            .get(campaign)
            .and_then(|d| d.get(&day))
            .copied()
            .unwrap_or_default()
    }

    /// The campaign's status at `now`; `None` if neither defined nor ever charged.
    pub fn status(&self, campaign: &str, now: EventTime) -> Option<BudgetStatus> {
        let day = match self.catalog.get(campaign) {
            Some(listed) => listed.day_of(now),
            None => super::day::budget_day(now, chrono_tz::UTC),
        };
        self.status_on(campaign, day, now)
    }

    /// The campaign's status for budget day `day` (today or a recent day), computed at `now`.
    pub fn status_on(
        &self,
        campaign: &str,
        day: NaiveDate,
        now: EventTime,
    ) -> Option<BudgetStatus> {
        let listed = self.catalog.get(campaign);
        if listed.is_none() && !self.spend.contains_key(campaign) {
            return None;
        }
        let tz = listed.map_or(chrono_tz::UTC, |l| l.tz_at(now));
        let totals = self.totals(campaign, day);
        let spend_micros = totals.billed;
        let budget_micros = listed.map_or(0, |l| l.campaign.daily_budget_micros);
        let pacing = self.pacing.get(campaign).filter(|u| u.state.day == day);
        let reserved_micros = pacing.map_or(0, PacingUpdate::reserved_micros);
        Some(BudgetStatus {
            campaign_id: campaign.to_string(),
            day,
            timezone: tz.name().to_string(),
            timezone_change: listed.and_then(|l| {
                let change = l.history.zone_change.as_ref()?;
                (now < change.until).then(|| TimezoneChange {
                    timezone: l.history.timezone.clone(),
                    at_ms: change.until.millis(),
                })
            }),
            budget_micros,
            spend_micros,
            overdelivery_micros: totals.over,
            reserved_micros,
            remaining_micros: budget_micros
                .saturating_sub(spend_micros)
                .saturating_sub(reserved_micros),
            status: match listed.map(|l| l.campaign.status) {
                Some(CampaignStatus::Active) => "active",
                Some(CampaignStatus::Paused) => "paused",
                None => "deleted",
            }
            .to_string(),
            updated_ms: now.millis(),
            pacing: pacing.map(|u| u.state.clone()),
        })
    }

    /// Budget left today for a listed campaign at `now`, without building a full status
    /// (the serving hot path).
    pub fn remaining(&self, listed: &crate::catalog::Listed, now: EventTime) -> u64 {
        self.remaining_on(listed, listed.day_of(now))
    }

    /// Budget left on budget day `day` for a listed campaign.
    pub fn remaining_on(&self, listed: &crate::catalog::Listed, day: NaiveDate) -> u64 {
        listed
            .campaign
            .daily_budget_micros
            .saturating_sub(self.spend(&listed.campaign.campaign_id, day))
    }

    /// Every campaign id known.
    pub fn campaign_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .catalog
            .iter()
            .map(|l| l.campaign.campaign_id.clone())
            .collect();
        ids.extend(self.spend.keys().cloned());
        ids.sort();
        ids.dedup();
        ids
    }

    /// Visits every defined campaign with its spend today (its budget day at `now`) and its
    /// daily budget, as [`BudgetBook::status`] would give them, without building statuses: one
    /// pass for gauges over a large catalog.
    pub fn visit_spend_today(&self, now: EventTime, mut visit: impl FnMut(&str, u64, u64)) {
        let mut days: Vec<(chrono_tz::Tz, NaiveDate)> = Vec::new();
        for listed in self.catalog.iter() {
            let tz = listed.tz_at(now);
            let day = match days.iter().find(|(z, _)| *z == tz) {
                Some((_, day)) => *day,
                None => {
                    let day = super::day::budget_day(now, tz);
                    days.push((tz, day));
                    day
                }
            };
            let c = &listed.campaign;
            visit(
                &c.campaign_id,
                self.spend(&c.campaign_id, day),
                c.daily_budget_micros,
            );
        }
    }

    /// Of every campaign known (defined, or charged), the at most `k` with the most spend on
    /// their latest budget day with spend, most first (ties by id), and how many are known.
    /// Costs one pass over the campaigns, without building their statuses: for views that
    /// follow a bounded number of a large catalog's campaigns.
    pub fn top_spenders(&self, k: usize) -> (Vec<&str>, usize) {
        let mut all: Vec<(u64, &str)> = self
            .catalog
            .iter()
            .map(|l| l.campaign.campaign_id.as_str())
            .chain(
                self.spend
                    .keys()
                    .map(String::as_str)
                    .filter(|id| self.catalog.get(id).is_none()),
            )
            .map(|id| (self.latest_spend(id).map_or(0, |(_, billed)| billed), id))
            .collect();
        let known = all.len();
        let order = |a: &(u64, &str), b: &(u64, &str)| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
        if k < all.len() {
            all.select_nth_unstable_by(k, order);
            all.truncate(k);
        }
        all.sort_unstable_by(order);
        (all.into_iter().map(|(_, id)| id).collect(), known)
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Campaign;
    use crate::records::DaySpend;

    #[test]
    fn spend_today_is_the_status_spend_in_each_campaigns_zone() {
        let mut book = BudgetBook::default();
        for (id, zone) in [
            ("t", "Asia/Tokyo"),
            ("u", "UTC"),
            ("l", "America/Los_Angeles"),
        ] {
            let json = format!(
                r#"{{"campaign_id":"{id}","advertiser_id":"x","daily_budget_micros":1000,"timezone":"{zone}","billing":"cpm","bid_micros":1}}"#
            );
            let c = Campaign::parse(json.as_bytes()).unwrap();
            book.apply(&LedgerState::Campaign(CatalogUpdate::new(
                id.into(),
                Some(Box::new(c)),
            )));
        }
        // 01:00 on May 2nd in Tokyo, 16:00 on May 1st in UTC, 09:00 on May 1st in Los Angeles.
        let now = EventTime::parse("2026-05-01T16:00:00Z").unwrap();
        for (id, d, micros) in [("t", 2, 70), ("t", 1, 900), ("u", 1, 300), ("l", 1, 20)] {
            book.apply(&LedgerState::Spend(DaySpend {
                campaign_id: id.into(),
                day: NaiveDate::from_ymd_opt(2026, 5, d).unwrap(),
                spend_micros: micros,
                overdelivery_micros: 0,
            }));
        }
        let mut seen = Vec::new();
        book.visit_spend_today(now, |id, spend, budget| {
            let status = book.status(id, now).unwrap();
            assert_eq!(
                (spend, budget),
                (status.spend_micros, status.budget_micros),
                "{id}"
            );
            seen.push((id.to_string(), spend));
        });
        seen.sort();
        assert_eq!(
            seen,
            [
                ("l".to_string(), 20),
                ("t".to_string(), 70),
                ("u".to_string(), 300)
            ]
        );
    }

    #[test]
    fn top_spenders_rank_by_the_latest_day_with_spend_then_by_id() {
        let mut book = BudgetBook::default();
        for id in ["a", "b", "c", "e"] {
            let json = format!(
                r#"{{"campaign_id":"{id}","advertiser_id":"x","daily_budget_micros":1000,"timezone":"UTC","billing":"cpm","bid_micros":1}}"#
            );
            let c = Campaign::parse(json.as_bytes()).unwrap();
            book.apply(&LedgerState::Campaign(CatalogUpdate::new(
                id.into(),
                Some(Box::new(c)),
            )));
        }
        let day = |d| NaiveDate::from_ymd_opt(2026, 5, d).unwrap();
        // b's latest day counts, not its largest; d was charged but is not defined (deleted).
        for (id, d, micros) in [("b", 1, 900), ("b", 2, 300), ("c", 2, 300), ("d", 1, 500)] {
            book.apply(&LedgerState::Spend(DaySpend {
                campaign_id: id.into(),
                day: day(d),
                spend_micros: micros,
                overdelivery_micros: 0,
            }));
        }
        assert_eq!(book.top_spenders(2), (vec!["d", "b"], 5));
        assert_eq!(book.top_spenders(10), (vec!["d", "b", "c", "a", "e"], 5));
        assert_eq!(book.top_spenders(0), (vec![], 5));
    }

    #[test]
    fn status_is_for_the_local_day() {
        let c = Campaign::parse(br#"{"campaign_id":"c","advertiser_id":"a","daily_budget_micros":1000,"timezone":"Asia/Tokyo","billing":"cpm","bid_micros":1}"#).unwrap();
        let mut book = BudgetBook::default();
        book.apply(&LedgerState::Campaign(CatalogUpdate::new(
            "c".into(),
            Some(Box::new(c)),
        )));
        let now = EventTime::parse("2026-05-01T16:00:00Z").unwrap(); // 01:00 on May 2nd in Tokyo
        let today = NaiveDate::from_ymd_opt(2026, 5, 2).unwrap();
        let yesterday = NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
        book.apply(&LedgerState::Spend(DaySpend {
            campaign_id: "c".into(),
            day: yesterday,
            spend_micros: 900,
            overdelivery_micros: 0,
        }));
        book.apply(&LedgerState::Spend(DaySpend {
            campaign_id: "c".into(),
            day: today,
            spend_micros: 300,
            overdelivery_micros: 0,
        }));
        let s = book.status("c", now).unwrap();
        assert_eq!(
            (s.day, s.spend_micros, s.remaining_micros),
            (today, 300, 700)
        );
        assert!(book.status("nope", now).is_none());
    }

    /// Regression: updates of different times can arrive out of order; an older, smaller
    /// total must not overwrite a newer one.
    #[test]
    fn late_arriving_older_totals_do_not_lower_spend() {
        let mut book = BudgetBook::default();
        let day = NaiveDate::from_ymd_opt(2026, 5, 2).unwrap();
        for spend_micros in [500, 300, 700, 600] {
            book.apply(&LedgerState::Spend(DaySpend {
                campaign_id: "c".into(),
                day,
                spend_micros,
                overdelivery_micros: 0,
            }));
        }
        assert_eq!(book.spend("c", day), 700);
    }
}
