//! Campaign activity: each campaign's verified impressions, clicks and click-through
//! conversions, the counts behind serving's per-campaign prior
//! ([`crate::ranker::prior::PriorRanker`]), which ranks until a model is live, pre-ranks the
//! funnel, and is what a model with a `prior_offset` feature spec corrects.
//!
//! [`activity_of`] sums one batch of events per campaign; [`ActivityTotals`] keeps a worker's
//! share of the campaigns' totals, so that they survive a restart with the input offsets they
//! count (the [`operator`] checkpoints them). A prior that started over at every restart would
//! hand a model trained on mature counts the global rate for every campaign.

pub mod operator;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::EventKind;
use crate::hash::{HashMap, HashSet};
use crate::records::{CampaignActivity, LabeledExample};

/// One campaign's totals, as checkpointed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Verified impressions.
    pub impressions: u64,
    /// Verified clicks.
    pub clicks: u64,
    /// Conversions attributed to a click.
    pub conversions: u64,
}

impl Counts {
    /// `self` plus `delta` (saturating: a total never wraps).
    pub fn plus(self, delta: &CampaignActivity) -> Counts {
        Counts {
            impressions: self.impressions.saturating_add(delta.impressions),
            clicks: self.clicks.saturating_add(delta.clicks),
            conversions: self.conversions.saturating_add(delta.conversions),
        }
    }

    /// The totals as an activity record of `campaign_id`.
    pub fn of(self, campaign_id: &str) -> CampaignActivity {
        CampaignActivity {
            campaign_id: campaign_id.to_string(),
            impressions: self.impressions,
            clicks: self.clicks,
            conversions: self.conversions,
        }
    }
}

/// Impressions, clicks and conversions per campaign of one batch of events, in campaign order.
pub fn activity_of<'a>(
    events: impl Iterator<Item = (&'a str, EventKind)>,
) -> Vec<CampaignActivity> {
    let mut counts: BTreeMap<&str, CampaignActivity> = BTreeMap::new();
    for (campaign, kind) in events {
        let c = counts.entry(campaign).or_default();
        match kind {
            EventKind::Impression => c.impressions += 1,
            EventKind::Click => c.clicks += 1,
            EventKind::Conversion => c.conversions += 1,
        }
    }
    counts
        .into_iter()
        .map(|(id, mut c)| {
            c.campaign_id = id.to_string();
            c
        })
        .collect()
}

/// A worker's share of the campaigns' totals, and which changed since they were last drained.
#[derive(Debug, Default)]
pub struct ActivityTotals {
    totals: HashMap<String, Counts>,
    changed: HashSet<String>,
}

impl ActivityTotals {
    /// Adds one batch's counts of a campaign.
    pub fn add(&mut self, delta: &CampaignActivity) {
        match self.totals.get_mut(delta.campaign_id.as_str()) {
            Some(total) => *total = total.plus(delta),
            None => {
                self.totals
                    .insert(delta.campaign_id.clone(), Counts::default().plus(delta));
            }
        }
        if !self.changed.contains(delta.campaign_id.as_str()) {
            self.changed.insert(delta.campaign_id.clone());
        }
    }

    /// Counts one labelled example as the live prior counts its events: a click label is an
    /// impression (and a click when positive), a positive conversion label a conversion.
    pub fn count_example(&mut self, example: &LabeledExample) {
        let mut delta = CampaignActivity {
            campaign_id: example.served.campaign_id.clone(),
            ..CampaignActivity::default()
        };
        if let Some(clicked) = example.click {
            delta.impressions = 1;
            delta.clicks = u64::from(clicked);
        }
        if example.conversion == Some(true) {
            delta.conversions = 1;
        }
        if delta.impressions + delta.conversions > 0 {
            self.add(&delta);
        }
    }

    /// Takes a restored campaign's totals (not a change).
    pub fn restore(&mut self, campaign_id: String, counts: Counts) {
        self.totals.insert(campaign_id, counts);
    }

    /// Calls `f` with each campaign changed since the last call and its totals.
    pub fn drain_changes(&mut self, mut f: impl FnMut(&str, &Counts)) {
        for campaign in self.changed.drain() {
            if let Some(counts) = self.totals.get(&campaign) {
                f(&campaign, counts);
            }
        }
    }

    /// Every campaign's totals, in campaign order: what the serving replicas, which start
    /// empty, learn of this worker's campaigns after a restore.
    pub fn all(&self) -> Vec<CampaignActivity> {
        let mut all: Vec<CampaignActivity> = self
            .iter()
            .map(|(campaign, counts)| counts.of(campaign))
            .collect();
        all.sort_by(|a, b| a.campaign_id.cmp(&b.campaign_id));
        all
    }

    /// Every campaign's totals, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Counts)> {
        self.totals
            .iter()
            .map(|(campaign, counts)| (campaign.as_str(), *counts))
    }

    /// The totals of `campaign_id`.
    pub fn get(&self, campaign_id: &str) -> Option<Counts> {
        self.totals.get(campaign_id).copied()
    }

    /// Campaigns counted.
    pub fn len(&self) -> usize {
        self.totals.len()
    }

    /// Whether no campaign has been counted.
    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn delta(campaign: &str, impressions: u64, clicks: u64, conversions: u64) -> CampaignActivity {
        CampaignActivity {
            campaign_id: campaign.into(),
            impressions,
            clicks,
            conversions,
        }
    }

    #[test]
    fn a_batch_counts_each_kind_per_campaign() {
        let events = [
            ("b", EventKind::Impression),
            ("a", EventKind::Click),
            ("b", EventKind::Impression),
            ("a", EventKind::Conversion),
            ("a", EventKind::Impression),
        ];
        assert_eq!(
            activity_of(events.into_iter()),
            vec![delta("a", 1, 1, 1), delta("b", 2, 0, 0)]
        );
        assert!(activity_of(std::iter::empty()).is_empty());
    }

    #[test]
    fn totals_never_wrap() {
        let mut totals = ActivityTotals::default();
        totals.add(&delta("c", u64::MAX - 1, 0, 0));
        totals.add(&delta("c", 5, 1, 0));
        assert_eq!(totals.get("c").map(|c| c.impressions), Some(u64::MAX));
    }

    proptest! {
        /// Totals are the sums of the batches, and each drain hands over exactly the campaigns
        /// changed since the last, at their totals; restored campaigns are not changes.
        #[test]
        fn totals_are_the_sum_of_their_batches(
            restored in proptest::collection::vec((0u8..6, 0u64..100), 0..4),
            rounds in proptest::collection::vec(
                proptest::collection::vec((0u8..6, 0u64..50, 0u64..5, 0u64..2), 0..8),
                1..6,
            ),
        ) {
            let mut totals = ActivityTotals::default();
            let mut expected: std::collections::BTreeMap<String, Counts> = Default::default();
            for (c, imps) in restored {
                let counts = Counts { impressions: imps, ..Counts::default() };
                totals.restore(format!("c{c}"), counts);
                expected.insert(format!("c{c}"), counts);
            }
            let mut drained = Vec::new();
            totals.drain_changes(|c, n| drained.push((c.to_string(), *n)));
            prop_assert!(drained.is_empty());
            for round in rounds {
                let mut changed = std::collections::BTreeSet::new();
                for (c, i, k, v) in round {
                    let d = delta(&format!("c{c}"), i, k, v);
                    totals.add(&d);
                    let e = expected.entry(d.campaign_id.clone()).or_default();
                    *e = e.plus(&d);
                    changed.insert(d.campaign_id);
                }
                let mut drained = std::collections::BTreeMap::new();
                totals.drain_changes(|c, n| {
                    drained.insert(c.to_string(), *n);
                });
                prop_assert_eq!(drained.keys().cloned().collect::<std::collections::BTreeSet<_>>(), changed);
                for (c, n) in drained {
                    prop_assert_eq!(Some(&n), expected.get(&c));
                }
            }
            let all: Vec<(String, Counts)> = totals
                .all()
                .into_iter()
                .map(|a| (a.campaign_id.clone(), Counts { impressions: a.impressions, clicks: a.clicks, conversions: a.conversions }))
                .collect();
            prop_assert_eq!(all, expected.into_iter().collect::<Vec<_>>());
        }
    }
}
