//! Reach counts: how many requests reached each campaign since the counts last went to pacing
//! (pacing's traffic forecast), counted per index entry in a dense array, with no lookup by id
//! per request; the ids are looked up only when the counts are taken, every flush period.
//! A request may count for more than one (a sampled count: see `replica`'s reach sampling);
//! counts are summed as weights and rounded when taken.

use super::retrieval::CampaignIndex;
use crate::hash::HashMap;

/// Requests that reached each campaign since the last [`ReachCounts::take`], by entry of the
/// [`CampaignIndex`] they were counted against.
#[derive(Debug, Default)]
pub struct ReachCounts {
    /// By entry number of the current index.
    counts: Vec<f64>,
    /// Entries whose count is not zero, in the order they first counted.
    touched: Vec<u32>,
    /// Counts made against an index that was since replaced, by campaign id.
    carried: HashMap<String, f64>,
}

impl ReachCounts {
    /// Counts one request reaching entry `number` of the current index.
    pub fn count(&mut self, number: u32) {
        self.add(number, 1.0);
    }

    /// Counts requests of total `weight` reaching entry `number` of the current index.
    pub fn add(&mut self, number: u32, weight: f64) {
        let at = number as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0.0);
        }
        if let Some(n) = self.counts.get_mut(at) {
            if *n == 0.0 {
                self.touched.push(number);
            }
            *n += weight;
        }
    }

    /// Whether no count is waiting.
    pub fn is_empty(&self) -> bool {
        self.touched.is_empty() && self.carried.is_empty()
    }

    /// Before `index`, the index the counts were made against, is replaced: keeps its counts by
    /// campaign id, so that entry numbers of the next index start from zero.
    pub fn carry(&mut self, index: &CampaignIndex) {
        for number in self.touched.drain(..) {
            let count = self
                .counts
                .get_mut(number as usize)
                .map_or(0.0, std::mem::take);
            if let Some(entry) = index.entry(number) {
                *self
                    .carried
                    .entry(entry.listed.campaign.campaign_id.clone())
                    .or_default() += count;
            }
        }
    }

    /// The counts since the last call, by campaign id (sorted), made against `index` (the
    /// current one) or carried from earlier ones; resets them.
    pub fn take(&mut self, index: &CampaignIndex) -> Vec<(String, u64)> {
        self.carry(index);
        let mut counts: Vec<(String, u64)> = self
            .carried
            .drain()
            .map(|(id, n)| (id, n.round().max(0.0) as u64))
            .filter(|(_, n)| *n > 0)
            .collect();
        counts.sort_unstable();
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Campaign;
    use crate::ledger::status::BudgetBook;
    use crate::ranker::prior::PriorRanker;
    use crate::records::{CatalogUpdate, LedgerState};

    fn index(ids: &[(&str, u64)]) -> CampaignIndex {
        let mut book = BudgetBook::default();
        for (id, bid) in ids {
            let json = format!(
                r#"{{"campaign_id":"{id}","advertiser_id":"a","daily_budget_micros":1000,"timezone":"UTC","billing":"cpm","bid_micros":{bid},"creatives":[{{"ad_id":"x"}}]}}"#
            );
            let c = Campaign::parse(json.as_bytes()).expect("valid campaign");
            book.apply(&LedgerState::Campaign(CatalogUpdate::new(
                c.campaign_id.clone(),
                Some(Box::new(c)),
            )));
        }
        CampaignIndex::build(&book, &PriorRanker::default())
    }

    #[test]
    fn counts_go_out_by_campaign_id_and_survive_a_new_index() {
        let old = index(&[("a", 3), ("b", 2)]);
        let mut reach = ReachCounts::default();
        assert!(reach.is_empty());
        reach.count(0); // a (numbered by id)
        reach.count(0);
        reach.count(1); // b
        assert!(!reach.is_empty());
        reach.carry(&old);
        // A new index: "0" comes before "a", so a is entry 1 and b entry 2 there.
        let new = index(&[("a", 3), ("b", 2), ("0", 9)]);
        reach.count(0);
        reach.add(1, 0.5);
        reach.add(1, 0.75);
        assert_eq!(
            reach.take(&new),
            vec![("0".into(), 1), ("a".into(), 3), ("b".into(), 1)]
        );
        assert!(reach.is_empty());
        assert!(reach.take(&new).is_empty());
    }
}
