//! A served ad as logged to `ads.served`: the win and the features it was scored with.

use serde::{Deserialize, Serialize};

use super::Engagement;
use crate::events::Billing;
use crate::time::EventTime;
use crate::token::WinClaims;

/// A served ad, logged to `ads.served` with what was used to score it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// Request.
    pub request_id: String,
    /// Slot.
    pub imp_id: String,
    /// When it was served.
    pub ts: EventTime,
    /// Winning campaign.
    pub campaign_id: String,
    /// Its advertiser.
    pub advertiser_id: String,
    /// Winning ad.
    pub ad_id: String,
    /// Billing unit.
    pub billing: Billing,
    /// What the billing event will be charged, micros.
    pub charge_micros: u64,
    /// Clearing price as eCPM, micros.
    pub price_ecpm_micros: u64,
    /// Predicted CTR used.
    pub pctr: f64,
    /// Predicted CVR used.
    pub pcvr: f64,
    /// Model used.
    pub model_version: String,
    /// Features: user.
    pub user_id: Option<String>,
    /// Features: country.
    pub country: Option<String>,
    /// Features: device.
    pub device: Option<String>,
    /// Features: interests.
    pub interests: Vec<String>,
    /// Features: tag id of the slot.
    pub tag_id: Option<String>,
    /// Features: `site` or `app`.
    #[serde(default)]
    pub inventory: Option<String>,
    /// Features: the campaign's bid, micros per billing unit.
    #[serde(default)]
    pub bid_micros: u64,
    /// Features: the campaign's targeted interests.
    #[serde(default)]
    pub ad_interests: Vec<String>,
    /// Features: the user's recent engagement at `ts`, as serving read it.
    #[serde(default)]
    pub history: Engagement,
    /// The win's signed billing token: what makes a record read back from `ads.served`
    /// trustworthy (its claims must be this record's; see the ingest stage).
    #[serde(default)]
    pub billing_token: String,
}

impl Served {
    /// The claims the win's billing token carries (without the signature).
    pub fn claims(&self) -> WinClaims {
        WinClaims {
            request_id: self.request_id.clone(),
            imp_id: self.imp_id.clone(),
            campaign_id: self.campaign_id.clone(),
            advertiser_id: self.advertiser_id.clone(),
            ad_id: self.ad_id.clone(),
            billing: self.billing,
            charge_micros: self.charge_micros,
            issued: self.ts,
            country: self.country.clone(),
            device: self.device.clone(),
        }
    }
}
