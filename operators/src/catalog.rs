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
    #[serde(with = "campaign_as_json")]
    pub campaign: Option<Box<Campaign>>,
}

/// Campaigns cross process boundaries as JSON text: their free-form creative fields need a
/// self-describing format, which the workers' binary exchange format is not.
mod campaign_as_json {
    use super::Campaign;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(c: &Option<Box<Campaign>>, s: S) -> Result<S::Ok, S::Error> {
        let text = match c {
            Some(c) => Some(serde_json::to_string(c).map_err(serde::ser::Error::custom)?),
            None => None,
        };
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<Campaign>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
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

    #[test]
    fn updates_survive_the_binary_exchange_format() {
        let c = Campaign::parse(br#"{"campaign_id":"c","advertiser_id":"a","daily_budget_micros":5,"timezone":"UTC","billing":"cpm","bid_micros":1,"start":"2026-01-01T00:00:00Z","creatives":[{"ad_id":"x","adomain":"a.b"}]}"#).unwrap();
        let up = CatalogUpdate {
            campaign_id: "c".into(),
            campaign: Some(Box::new(c)),
        };
        let bytes = bincode::serialize(&up).unwrap();
        assert_eq!(bincode::deserialize::<CatalogUpdate>(&bytes).unwrap(), up);
    }
}
