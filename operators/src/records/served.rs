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
    /// The per-campaign prior's CTR at serving time (what a model with `prior_offset`
    /// corrects); `None` in records of earlier versions, which read the global prior.
    #[serde(default)]
    pub prior_pctr: Option<f64>,
    /// The per-campaign prior's conversion rate per click at serving time.
    #[serde(default)]
    pub prior_pcvr: Option<f64>,
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

/// The global prior click rate: a campaign's before it has been observed (the ranker's
/// `PriorRanker` starts from it).
pub const GLOBAL_CTR: f64 = 0.02;
/// The global prior conversion rate per click.
pub const GLOBAL_CVR: f64 = 0.05;

impl Served {
    /// The prior's (CTR, conversion rate per click) when it was served: the logged ones, else
    /// the global prior.
    pub fn prior(&self) -> (f64, f64) {
        (
            self.prior_pctr.unwrap_or(GLOBAL_CTR),
            self.prior_pcvr.unwrap_or(GLOBAL_CVR),
        )
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_without_a_prior_read_the_global_prior() {
        let line = r#"{"request_id":"r","imp_id":"1","ts":5,"campaign_id":"c","advertiser_id":"a","ad_id":"x","billing":"cpc","charge_micros":1,"price_ecpm_micros":1,"pctr":0.3,"pcvr":0.2,"model_version":"v1","user_id":null,"country":null,"device":null,"interests":[],"tag_id":null}"#;
        let s: Served = serde_json::from_str(line).expect("an earlier version's record");
        assert_eq!((s.prior_pctr, s.prior_pcvr), (None, None));
        assert_eq!(s.prior(), (GLOBAL_CTR, GLOBAL_CVR));
        // A record written now carries its prior through a round trip.
        let s = Served {
            prior_pctr: Some(0.07),
            prior_pcvr: Some(0.01),
            ..s
        };
        assert_eq!(s.prior(), (0.07, 0.01));
        let back: Served =
            serde_json::from_slice(&serde_json::to_vec(&s).expect("json")).expect("parse");
        assert_eq!(back, s);
    }
}
