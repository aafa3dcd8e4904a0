//! The label join's entries as checkpoint value format 1 wrote them, before the served record
//! logged the prior: read once after an upgrade ([`crate::checkpoint::codec::decode_migrating`])
//! and rewritten in the current format when the entry next changes. Postcard writes a struct's
//! fields in order with nothing between them, so reading the old bytes needs the old layout.

use serde::Deserialize;

use super::Entry;
use crate::events::Billing;
use crate::records::{Engagement, Served};
use crate::time::EventTime;

/// [`Served`] in format 1: the same fields less the prior.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct ServedV1 {
    request_id: String,
    imp_id: String,
    ts: EventTime,
    campaign_id: String,
    advertiser_id: String,
    ad_id: String,
    billing: Billing,
    charge_micros: u64,
    price_ecpm_micros: u64,
    pctr: f64,
    pcvr: f64,
    model_version: String,
    user_id: Option<String>,
    country: Option<String>,
    device: Option<String>,
    interests: Vec<String>,
    tag_id: Option<String>,
    inventory: Option<String>,
    bid_micros: u64,
    ad_interests: Vec<String>,
    history: Engagement,
    billing_token: String,
}

impl From<ServedV1> for Served {
    fn from(s: ServedV1) -> Self {
        Served {
            request_id: s.request_id,
            imp_id: s.imp_id,
            ts: s.ts,
            campaign_id: s.campaign_id,
            advertiser_id: s.advertiser_id,
            ad_id: s.ad_id,
            billing: s.billing,
            charge_micros: s.charge_micros,
            price_ecpm_micros: s.price_ecpm_micros,
            pctr: s.pctr,
            pcvr: s.pcvr,
            // Not logged then: training reads the global prior.
            prior_pctr: None,
            prior_pcvr: None,
            model_version: s.model_version,
            user_id: s.user_id,
            country: s.country,
            device: s.device,
            interests: s.interests,
            tag_id: s.tag_id,
            inventory: s.inventory,
            bid_micros: s.bid_micros,
            ad_interests: s.ad_interests,
            history: s.history,
            billing_token: s.billing_token,
        }
    }
}

/// [`Entry`] in format 1.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct EntryV1 {
    served: Option<Box<ServedV1>>,
    impression_ms: Option<i64>,
    click_ms: Option<i64>,
    conversion_ms: Option<i64>,
    clicked: Option<bool>,
    conversion_judged: bool,
}

impl From<EntryV1> for Entry {
    fn from(e: EntryV1) -> Self {
        Entry {
            served: e.served.map(|s| Box::new(Served::from(*s))),
            impression_ms: e.impression_ms,
            click_ms: e.click_ms,
            conversion_ms: e.conversion_ms,
            clicked: e.clicked,
            conversion_judged: e.conversion_judged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::codec;

    #[test]
    fn a_format_1_entry_reads_with_its_served_record_and_no_prior() {
        let s = crate::labels::tests::served("r1", 1_000);
        let old = EntryV1 {
            served: Some(Box::new(ServedV1 {
                request_id: s.request_id.clone(),
                imp_id: s.imp_id.clone(),
                ts: s.ts,
                campaign_id: s.campaign_id.clone(),
                advertiser_id: s.advertiser_id.clone(),
                ad_id: s.ad_id.clone(),
                billing: s.billing,
                charge_micros: s.charge_micros,
                price_ecpm_micros: s.price_ecpm_micros,
                pctr: s.pctr,
                pcvr: s.pcvr,
                model_version: s.model_version.clone(),
                user_id: s.user_id.clone(),
                country: s.country.clone(),
                device: s.device.clone(),
                interests: vec!["golf".into()],
                tag_id: s.tag_id.clone(),
                inventory: Some("site".into()),
                bid_micros: 7,
                ad_interests: vec!["golf".into(), "chess".into()],
                history: Engagement {
                    clicks_24h: 2,
                    ..Engagement::default()
                },
                billing_token: "t".into(),
            })),
            impression_ms: Some(1_010),
            click_ms: None,
            conversion_ms: None,
            clicked: Some(false),
            conversion_judged: false,
        };
        let mut bytes = codec::encode(&old).expect("encode");
        bytes[1] = codec::PREVIOUS_VERSION;
        let entry: Entry = codec::decode_migrating::<Entry, EntryV1>(b"labels/x", &bytes)
            .expect("a format-1 entry reads");
        let served = entry.served.as_deref().expect("served");
        assert_eq!(served.prior_pctr, None);
        assert_eq!(served.ad_interests, ["golf", "chess"]);
        assert_eq!(served.history.clicks_24h, 2);
        assert_eq!(served.billing_token, "t");
        assert_eq!(entry.impression_ms, Some(1_010));
        assert_eq!(entry.clicked, Some(false));
        // The current format round-trips the same entry with its prior.
        let mut current = entry.clone();
        if let Some(s) = current.served.as_deref_mut() {
            s.prior_pctr = Some(0.03);
        }
        let bytes = codec::encode(&current).expect("encode");
        assert_eq!(
            codec::decode_migrating::<Entry, EntryV1>(b"labels/x", &bytes).expect("decode"),
            current
        );
    }
}
