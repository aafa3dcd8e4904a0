//! What each input event adds to reports: a [`ReportEvent`] has an identity (duplicates and
//! replays share it), an event time, the dimensions it is grouped by and the [`Totals`] it adds.

use serde::{Deserialize, Serialize};

use super::spec::Dimension;
use super::totals::Totals;
use crate::events::{Billing, EventKind};
use crate::ledger::dedup::dedup_key;
use crate::records::AttributedConversion;
use crate::records::Charged;
use crate::records::DedupKey;
use crate::records::Served;
use crate::time::EventTime;
use crate::token::WinClaims;

/// An event reports count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReportEvent {
    /// A win served (read back from `ads.served`).
    Won(Box<Served>),
    /// A verified impression or click.
    Touch {
        /// Impression or click.
        kind: EventKind,
        /// The win it is for.
        claims: crate::token::SharedClaims,
        /// When it happened.
        ts: EventTime,
    },
    /// A billing event the ledger charged.
    Charged(Box<Charged>),
    /// A conversion attributed to a touch.
    Converted(Box<AttributedConversion>),
}

/// The values of every dimension for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dims<'a> {
    /// Campaign.
    pub campaign_id: &'a str,
    /// Advertiser.
    pub advertiser_id: &'a str,
    /// Ad.
    pub ad_id: &'a str,
    /// Country, if the request gave one.
    pub country: Option<&'a str>,
    /// Device type, if the request gave one.
    pub device: Option<&'a str>,
    /// Billing unit.
    pub billing: Billing,
}

impl<'a> Dims<'a> {
    fn of(claims: &'a WinClaims) -> Self {
        Dims {
            campaign_id: &claims.campaign_id,
            advertiser_id: &claims.advertiser_id,
            ad_id: &claims.ad_id,
            country: claims.country.as_deref(),
            device: claims.device.as_deref(),
            billing: claims.billing,
        }
    }

    /// The value of `dimension` (`unknown` for a missing country or device).
    pub fn value(&self, dimension: Dimension) -> &'a str {
        match dimension {
            Dimension::Campaign => self.campaign_id,
            Dimension::Advertiser => self.advertiser_id,
            Dimension::Ad => self.ad_id,
            Dimension::Country => self.country.unwrap_or("unknown"),
            Dimension::Device => self.device.unwrap_or("unknown"),
            Dimension::Billing => self.billing.as_str(),
        }
    }

    /// The group key of a report grouped by `dimensions`.
    pub fn group(&self, dimensions: &[Dimension]) -> Vec<String> {
        dimensions
            .iter()
            .map(|d| self.value(*d).to_string())
            .collect()
    }
}

impl ReportEvent {
    /// The event's identity: duplicates of one event, and its replays after a restart, share it.
    pub fn identity(&self) -> DedupKey {
        match self {
            ReportEvent::Won(s) => dedup_key(&["won", &s.request_id, &s.imp_id]),
            ReportEvent::Touch { kind, claims, .. } => {
                dedup_key(&[kind.as_str(), &claims.request_id, &claims.imp_id])
            }
            ReportEvent::Charged(c) => {
                let hex = crate::routing::hex128(c.identity);
                // Hex digits are ASCII.
                dedup_key(&["charged", std::str::from_utf8(&hex).unwrap_or_default()])
            }
            ReportEvent::Converted(c) => {
                dedup_key(&["converted", &c.claims.advertiser_id, &c.conversion_id])
            }
        }
    }

    /// Its event time (the window it counts in).
    pub fn ts(&self) -> EventTime {
        match self {
            ReportEvent::Won(s) => s.ts,
            ReportEvent::Touch { ts, .. } => *ts,
            ReportEvent::Charged(c) => c.ts,
            ReportEvent::Converted(c) => c.ts,
        }
    }

    /// The values it is grouped by.
    pub fn dims(&self) -> Dims<'_> {
        match self {
            ReportEvent::Won(s) => Dims {
                campaign_id: &s.campaign_id,
                advertiser_id: &s.advertiser_id,
                ad_id: &s.ad_id,
                country: s.country.as_deref(),
                device: s.device.as_deref(),
                billing: s.billing,
            },
            ReportEvent::Touch { claims, .. } => Dims::of(claims),
            ReportEvent::Charged(c) => Dims::of(&c.claims),
            ReportEvent::Converted(c) => Dims::of(&c.claims),
        }
    }

    /// What it adds to a row.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        match self {
            ReportEvent::Won(s) => {
                t.won = 1;
                t.pctr_nanos = Totals::pctr_to_nanos(s.pctr);
            }
            ReportEvent::Touch { kind, .. } => match kind {
                EventKind::Click => t.clicks = 1,
                _ => t.impressions = 1,
            },
            ReportEvent::Charged(c) => {
                t.spend_micros = i64::try_from(c.billed_micros).unwrap_or(i64::MAX);
                t.overdelivery_micros = i64::try_from(c.overdelivery_micros).unwrap_or(i64::MAX);
            }
            ReportEvent::Converted(c) => {
                t.conversions = 1;
                t.conversion_value_micros = i64::try_from(c.value_micros).unwrap_or(i64::MAX);
            }
        }
        t
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn claims(rid: &str, campaign: &str, price: u64) -> WinClaims {
        WinClaims {
            request_id: rid.into(),
            imp_id: "1".into(),
            campaign_id: campaign.into(),
            advertiser_id: format!("adv-{campaign}"),
            ad_id: format!("{campaign}-ad"),
            billing: Billing::Cpc,
            charge_micros: price,
            issued: EventTime(0),
            country: Some("DE".into()),
            device: None,
        }
    }

    #[test]
    fn identities_separate_kinds_and_ignore_origin() {
        let c = claims("r1", "c1", 500);
        let imp = ReportEvent::Touch {
            kind: EventKind::Impression,
            claims: std::sync::Arc::new(c.clone()),
            ts: EventTime(10),
        };
        let imp_later = ReportEvent::Touch {
            kind: EventKind::Impression,
            claims: std::sync::Arc::new(c.clone()),
            ts: EventTime(99),
        };
        let click = ReportEvent::Touch {
            kind: EventKind::Click,
            claims: std::sync::Arc::new(c.clone()),
            ts: EventTime(10),
        };
        assert_eq!(imp.identity(), imp_later.identity());
        assert_ne!(imp.identity(), click.identity());
        assert_eq!(click.totals().clicks, 1);
        let dims = imp.dims();
        assert_eq!(
            dims.group(&[Dimension::Country, Dimension::Device]),
            ["DE", "unknown"]
        );
        assert_eq!(dims.value(Dimension::Billing), "cpc");
    }
}
