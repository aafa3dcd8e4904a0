//! Brand safety: a request's block lists against what a campaign declares.
//!
//! - `bcat`: a blocked IAB category also blocks its subcategories (`IAB25` blocks `IAB25-3`);
//! - `badv`: a blocked domain also blocks its subdomains (`brand.com` blocks `shop.brand.com`);
//! - `bapp`: the store id of an advertised app (`bundle`);
//! - `bseat`/`wseat`: adstream's own seat, for the whole request.
//!
//! A campaign that does not declare its categories (or domains) cannot be shown to be safe, so
//! it does not bid on a request that blocks any category (or domain).

use crate::events::Campaign;
use crate::request::Blocks;

/// Why a campaign is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Blocked {
    /// By `bcat`.
    Category,
    /// By `badv`.
    AdvertiserDomain,
    /// By `bapp`.
    App,
}

impl Blocked {
    /// The name used in explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            Blocked::Category => "blocked_category",
            Blocked::AdvertiserDomain => "blocked_advertiser",
            Blocked::App => "blocked_app",
        }
    }
}

fn category_blocked(category: &str, blocked: &str) -> bool {
    category.eq_ignore_ascii_case(blocked)
        || (category.len() > blocked.len()
            && category.as_bytes()[blocked.len()] == b'-'
            && category[..blocked.len()].eq_ignore_ascii_case(blocked))
}

fn domain_blocked(domain: &str, blocked: &str) -> bool {
    domain == blocked
        || (domain.len() > blocked.len()
            && domain.ends_with(blocked)
            && domain.as_bytes()[domain.len() - blocked.len() - 1] == b'.')
}

/// Whether `blocks` refuses `campaign`, and by which list.
pub fn blocked(campaign: &Campaign, blocks: &Blocks) -> Option<Blocked> {
    if !blocks.bcat.is_empty()
        && (campaign.cat.is_empty()
            || campaign
                .cat
                .iter()
                .any(|c| blocks.bcat.iter().any(|b| category_blocked(c, b))))
    {
        return Some(Blocked::Category);
    }
    if !blocks.badv.is_empty()
        && (campaign.adomain.is_empty()
            || campaign
                .adomain
                .iter()
                .any(|d| blocks.badv.iter().any(|b| domain_blocked(d, b))))
    {
        return Some(Blocked::AdvertiserDomain);
    }
    // Only a request with app blocks reads the campaign's bundle: with no block list, the
    // campaign's definition is not read at all.
    if !blocks.bapp.is_empty() {
        if let Some(bundle) = &campaign.bundle {
            if blocks.bapp.iter().any(|b| b == bundle) {
                return Some(Blocked::App);
            }
        }
    }
    None
}

/// Whether `seat` may bid at all: not in `bseat`, and in `wseat` when that is given.
pub fn seat_allowed(seat: &str, blocks: &Blocks) -> bool {
    !blocks.bseat.iter().any(|s| s == seat)
        && (blocks.wseat.is_empty() || blocks.wseat.iter().any(|s| s == seat))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(extra: &str) -> Campaign {
        Campaign::parse(format!(r#"{{"campaign_id":"c","advertiser_id":"a","daily_budget_micros":5,"timezone":"UTC","billing":"cpm","bid_micros":1{extra}}}"#).as_bytes()).unwrap()
    }

    fn blocks(bcat: &[&str], badv: &[&str], bapp: &[&str]) -> Blocks {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Blocks {
            bcat: v(bcat),
            badv: v(badv),
            bapp: v(bapp),
            ..Blocks::default()
        }
    }

    #[test]
    fn categories_block_their_subcategories() {
        let c = campaign(r#","cat":["IAB25-3","IAB1"],"adomain":["Shop.Brand.com."]"#);
        assert_eq!(c.adomain, vec!["shop.brand.com"], "normalised at parse");
        assert_eq!(
            blocked(&c, &blocks(&["IAB25"], &[], &[])),
            Some(Blocked::Category)
        );
        assert_eq!(
            blocked(&c, &blocks(&["iab1"], &[], &[])),
            Some(Blocked::Category)
        );
        assert_eq!(
            blocked(&c, &blocks(&["IAB2"], &[], &[])),
            None,
            "IAB2 is not IAB25's parent"
        );
        assert_eq!(blocked(&c, &blocks(&["IAB25-30"], &[], &[])), None);
        assert_eq!(
            blocked(&c, &blocks(&[], &["brand.com"], &[])),
            Some(Blocked::AdvertiserDomain)
        );
        assert_eq!(
            blocked(&c, &blocks(&[], &["shop.brand.com"], &[])),
            Some(Blocked::AdvertiserDomain)
        );
        assert_eq!(
            blocked(&c, &blocks(&[], &["rand.com"], &[])),
            None,
            "not a subdomain"
        );
        assert_eq!(
            blocked(&c, &blocks(&[], &[], &["com.brand.app"])),
            None,
            "no app advertised"
        );
    }

    #[test]
    fn undeclared_is_unsafe_only_where_something_is_blocked() {
        let c = campaign("");
        assert_eq!(blocked(&c, &Blocks::default()), None);
        assert_eq!(
            blocked(&c, &blocks(&["IAB7"], &[], &[])),
            Some(Blocked::Category)
        );
        assert_eq!(
            blocked(&c, &blocks(&[], &["x.com"], &[])),
            Some(Blocked::AdvertiserDomain)
        );
        let app = campaign(r#","bundle":"com.game.app","cat":["IAB9"],"adomain":["game.com"]"#);
        assert_eq!(
            blocked(&app, &blocks(&[], &[], &["com.game.app"])),
            Some(Blocked::App)
        );
    }

    #[test]
    fn seats() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let with = |bseat: &[&str], wseat: &[&str]| Blocks {
            bseat: v(bseat),
            wseat: v(wseat),
            ..Blocks::default()
        };
        assert!(seat_allowed("adstream", &with(&[], &[])));
        assert!(!seat_allowed("adstream", &with(&["adstream"], &[])));
        assert!(!seat_allowed("adstream", &with(&[], &["other"])));
        assert!(seat_allowed(
            "adstream",
            &with(&["x"], &["other", "adstream"])
        ));
    }
}
