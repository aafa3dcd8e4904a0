//! Each indexed campaign's spend on its latest budget day, by entry number: retrieval's budget
//! check ("budget left today?") without a lookup by campaign id per visited campaign.
//!
//! The cache follows the replicated [`BudgetBook`]: the replica refreshes a campaign's row when
//! its spend arrives and when the index renumbers or adds it. A row answers only what it knows
//! exactly ([`SpendCache::remaining`]); anything else is asked of the book.

use chrono::NaiveDate;

use super::retrieval::{BudgetLeft, CampaignIndex, Entry};
use crate::ledger::status::BudgetBook;

/// What the cache knows of one entry's spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Latest {
    /// Not cached: ask the book.
    #[default]
    Unknown,
    /// No spend recorded on any day.
    None,
    /// The latest day with spend recorded, and that day's spend, micros.
    Day(NaiveDate, u64),
}

/// Spend by entry number (see the module doc).
#[derive(Debug, Default)]
pub struct SpendCache {
    latest: Vec<Latest>,
}

impl SpendCache {
    /// The cache of every campaign of `index`, from `book`.
    pub fn of(index: &CampaignIndex, book: &BudgetBook) -> Self {
        let mut cache = SpendCache::default();
        cache.refresh_all(index, book);
        cache
    }

    /// Budget left on budget day `day` for entry `number` (`entry`, holding its daily budget):
    /// `None` when the cache does not know (not cached, or a day before its latest day).
    pub fn remaining(&self, number: u32, entry: &Entry, day: NaiveDate) -> Option<u64> {
        let spent = match self.latest.get(number as usize)? {
            Latest::Unknown => return None,
            Latest::None => 0,
            Latest::Day(latest, billed) if *latest == day => *billed,
            // Nothing is recorded after the latest day.
            Latest::Day(latest, _) if *latest < day => 0,
            Latest::Day(..) => return None,
        };
        Some(entry.daily_budget_micros.saturating_sub(spent))
    }

    /// Copies from `book` the spend of every campaign of `index`.
    pub fn refresh_all(&mut self, index: &CampaignIndex, book: &BudgetBook) {
        self.latest.clear();
        self.latest.resize(index.numbers(), Latest::Unknown);
        for (number, row) in self.latest.iter_mut().enumerate() {
            if let Some(entry) = index.entry(number as u32) {
                *row = latest_of(book, &entry.listed.campaign.campaign_id);
            }
        }
    }

    /// Copies from `book` the spend of the campaigns named by `ids` (whose spend arrived, or
    /// that the index added or renumbered).
    pub fn refresh<'s>(
        &mut self,
        index: &CampaignIndex,
        book: &BudgetBook,
        ids: impl IntoIterator<Item = &'s str>,
    ) {
        if self.latest.len() < index.numbers() {
            self.latest.resize(index.numbers(), Latest::Unknown);
        }
        for id in ids {
            if let Some(row) = index
                .number_of(id)
                .and_then(|n| self.latest.get_mut(n as usize))
            {
                *row = latest_of(book, id);
            }
        }
    }
}

/// Retrieval's budget check: the cache where it knows, else the book.
#[derive(Debug, Clone, Copy)]
pub struct Budgets<'a> {
    /// The replicated ledger state.
    pub book: &'a BudgetBook,
    /// Its spend by entry number.
    pub cache: &'a SpendCache,
}

impl BudgetLeft for Budgets<'_> {
    fn remaining(&self, number: u32, entry: &Entry, day: NaiveDate) -> u64 {
        self.cache
            .remaining(number, entry, day)
            .unwrap_or_else(|| self.book.remaining_on(&entry.listed, day))
    }
}

fn latest_of(book: &BudgetBook, id: &str) -> Latest {
    match book.latest_spend(id) {
        Some((day, billed)) => Latest::Day(day, billed),
        None => Latest::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Campaign;
    use crate::ranker::prior::PriorRanker;
    use crate::records::{CatalogUpdate, DaySpend, LedgerState};

    fn define(book: &mut BudgetBook, id: &str, budget: u64) {
        let json = format!(
            r#"{{"campaign_id":"{id}","advertiser_id":"A","daily_budget_micros":{budget},"timezone":"UTC","billing":"cpm","bid_micros":10,"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
        );
        let c = Campaign::parse(json.as_bytes()).unwrap();
        book.apply(&LedgerState::Campaign(CatalogUpdate::new(
            id.into(),
            Some(Box::new(c)),
        )));
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
    }

    #[test]
    fn a_row_answers_its_latest_day_and_later_days_and_asks_the_book_for_earlier_ones() {
        let mut book = BudgetBook::default();
        define(&mut book, "c", 1_000);
        let index = CampaignIndex::build(&book, &PriorRanker::default());
        let mut cache = SpendCache::of(&index, &book);
        let n = index.number_of("c").unwrap();
        let entry = index.entry(n).unwrap();
        assert_eq!(
            cache.remaining(n, entry, day(5)),
            Some(1_000),
            "no spend yet"
        );
        for (d, spend) in [(5, 300), (6, 100)] {
            book.apply(&LedgerState::Spend(DaySpend {
                campaign_id: "c".into(),
                day: day(d),
                spend_micros: spend,
                overdelivery_micros: 0,
            }));
            cache.refresh(&index, &book, ["c"]);
        }
        assert_eq!(cache.remaining(n, entry, day(6)), Some(900));
        assert_eq!(cache.remaining(n, entry, day(7)), Some(1_000));
        assert_eq!(
            cache.remaining(n, entry, day(5)),
            None,
            "an earlier day is the book's"
        );
        assert_eq!(cache.remaining(n + 1, entry, day(6)), None, "not cached");
    }

    proptest::proptest! {
        /// Maintained as the serving replica maintains it (a campaign's row refreshed when its
        /// spend arrives and when the index takes in its definition), the cache never answers
        /// differently from the book, and it answers the latest day of every indexed campaign.
        #[test]
        fn the_cache_agrees_with_the_book(
            ops in proptest::collection::vec(
                (0u8..6, 0u8..3, proptest::option::weighted(0.7, (1u32..8, 0u64..1_500))),
                1..120,
            ),
        ) {
            let prior = PriorRanker::default();
            let mut book = BudgetBook::default();
            let mut index = CampaignIndex::default();
            let mut cache = SpendCache::default();
            for (id, kind, spend) in ops {
                let id = format!("c{id}");
                match (kind, spend) {
                    (0, _) => {
                        // A new definition or an edit of the budget; a tick takes it in.
                        define(&mut book, &id, spend.map_or(500, |(_, micros)| micros + 1));
                        index.update(&book, &prior, [id.as_str()]);
                        cache.refresh(&index, &book, [id.as_str()]);
                    }
                    (1, None) => {
                        book.apply(&LedgerState::Campaign(CatalogUpdate::new(id.clone(), None)));
                        index.update(&book, &prior, [id.as_str()]);
                        cache.refresh(&index, &book, [id.as_str()]);
                    }
                    (_, Some((d, micros))) => {
                        book.apply(&LedgerState::Spend(DaySpend {
                            campaign_id: id.as_str().into(),
                            day: day(d),
                            spend_micros: micros,
                            overdelivery_micros: 0,
                        }));
                        cache.refresh(&index, &book, [id.as_str()]);
                    }
                    _ => {}
                }
                for number in 0..index.numbers() as u32 {
                    let Some(entry) = index.entry(number) else { continue };
                    let listed = &entry.listed;
                    for d in 1..10 {
                        let exact = book.remaining_on(listed, day(d));
                        if let Some(cached) = cache.remaining(number, entry, day(d)) {
                            proptest::prop_assert_eq!(cached, exact, "{} on day {}", &listed.campaign.campaign_id, d);
                        }
                    }
                    let latest = book
                        .latest_spend(&listed.campaign.campaign_id)
                        .map_or(day(1), |(d, _)| d);
                    proptest::prop_assert!(cache.remaining(number, entry, latest).is_some(), "latest day cached");
                }
            }
        }
    }
}
