//! Campaign definitions as they flow through the graph, with the history money depends on.

use serde::{Deserialize, Serialize};

use crate::events::Campaign;
use crate::time::EventTime;

/// An upsert (`Some`) or delete (`None`) of one campaign, as it flows through the graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogUpdate {
    /// The campaign.
    pub campaign_id: String,
    /// Its new definition, or `None` when it was deleted.
    #[serde(with = "campaign_as_json")]
    pub campaign: Option<Box<Campaign>>,
    /// The campaign's history as the ledger decided it (`None` on the way into the ledger).
    #[serde(default)]
    pub history: Option<History>,
}

impl CatalogUpdate {
    /// An update as read from the campaigns topic.
    pub fn new(campaign_id: String, campaign: Option<Box<Campaign>>) -> Self {
        CatalogUpdate {
            campaign_id,
            campaign,
            history: None,
        }
    }
}

/// A time-zone change not yet in effect: `previous` still rules until `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneChange {
    /// The zone in effect before `until` (IANA name).
    pub previous: String,
    /// When the new zone takes over.
    pub until: EventTime,
}

/// What the ledger remembers of a campaign beyond its latest definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The zone of the latest definition (IANA name).
    pub timezone: String,
    /// A change of zone not yet in effect.
    #[serde(default)]
    pub zone_change: Option<ZoneChange>,
    /// `(from, bid_micros)`: the bids of the campaign, each in effect from its instant, oldest
    /// first (the first one also covers everything before it).
    #[serde(default)]
    pub bids: Vec<(EventTime, u64)>,
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
