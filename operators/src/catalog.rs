//! The campaign catalog: the latest definition of each campaign, from the compacted topic.

use std::collections::HashMap;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::events::Campaign;

/// An upsert (`Some`) or delete (`None`) of one campaign, as it flows through the graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogUpdate {
    /// The campaign.
    pub campaign_id: String,
    /// Its new definition, or `None` when it was deleted.
    pub campaign: Option<Box<Campaign>>,
}

/// A campaign with its parsed time zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    /// The definition.
    pub campaign: Campaign,
    /// Its budget day's time zone.
    pub tz: Tz,
}

/// Campaigns by id.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    entries: HashMap<String, Listed>,
}

impl Catalog {
    /// Applies an update; returns whether anything changed.
    pub fn apply(&mut self, update: &CatalogUpdate) -> bool {
        match &update.campaign {
            Some(c) => {
                // Campaigns are validated at decode time, so the zone parses; UTC is a guard.
                let tz = c.tz().unwrap_or(chrono_tz::UTC);
                let listed = Listed {
                    campaign: (**c).clone(),
                    tz,
                };
                self.entries
                    .insert(update.campaign_id.clone(), listed.clone())
                    != Some(listed)
            }
            None => self.entries.remove(&update.campaign_id).is_some(),
        }
    }

    /// The campaign named `id`.
    pub fn get(&self, id: &str) -> Option<&Listed> {
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
        let up = CatalogUpdate {
            campaign_id: "c".into(),
            campaign: Some(Box::new(c)),
        };
        assert!(cat.apply(&up));
        assert!(!cat.apply(&up), "same definition is no change");
        assert_eq!(cat.get("c").unwrap().tz, chrono_tz::Asia::Tokyo);
        assert!(cat.apply(&CatalogUpdate {
            campaign_id: "c".into(),
            campaign: None
        }));
        assert!(cat.is_empty());
    }
}
