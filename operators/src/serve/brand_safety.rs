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

/// Bit of a campaign that declares no categories, and of a request that blocks some.
const NO_CATEGORIES: u64 = 1;
/// Bit of a campaign that declares no domains, and of a request that blocks some.
const NO_DOMAINS: u64 = 2;

/// One of the 62 hashed bits of a [`BlockMask`]: the xxh3 hash of `text` (lower-cased when
/// `fold_case`), seeded per list so that a category and a domain rarely share a bit.
fn hashed_bit(salt: u64, text: &str, fold_case: bool) -> u64 {
    let h = if fold_case && text.bytes().any(|b| b.is_ascii_uppercase()) {
        xxhash_rust::xxh3::xxh3_64_with_seed(text.to_ascii_lowercase().as_bytes(), salt)
    } else {
        xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), salt)
    };
    1u64 << (2 + (h >> 32) % 62)
}

/// The bits of `values` and of each one's parents (`parents`: what also blocks a value).
fn mask_of<'v, P: Iterator<Item = &'v str>>(
    values: &'v [String],
    salt: u64,
    fold_case: bool,
    parents: impl Fn(&'v str) -> P,
) -> u64 {
    values
        .iter()
        .flat_map(|v| std::iter::once(v.as_str()).chain(parents(v)))
        .fold(0, |bits, text| bits | hashed_bit(salt, text, fold_case))
}

/// A category's parents: `IAB25-3-1` has `IAB25-3` and `IAB25`.
fn parent_categories(category: &str) -> impl Iterator<Item = &str> {
    category.match_indices('-').map(|(i, _)| &category[..i])
}

/// A domain's parents: `shop.brand.com` has `brand.com` and `com`.
fn parent_domains(domain: &str) -> impl Iterator<Item = &str> {
    domain.match_indices('.').map(|(i, _)| &domain[i + 1..])
}

/// A list entry blocks only itself.
fn no_parents(_: &str) -> std::iter::Empty<&str> {
    std::iter::empty()
}

const CATEGORY_SALT: u64 = 0x9e37_79b9_7f4a_7c15;
const DOMAIN_SALT: u64 = 0xc2b2_ae3d_27d4_eb4f;
const APP_SALT: u64 = 0x1656_67b1_9e37_79f9;

/// A Bloom filter of what could block a campaign, or of what a request blocks: a campaign is
/// read for [`blocked`] only when its mask and the request's share a bit. A campaign's mask
/// holds each of its categories and their parents (`IAB25-3` and `IAB25`), its domains and
/// their parents (`shop.brand.com`, `brand.com`, `com`), its app, and a bit for a list it leaves
/// undeclared; a request's holds each blocked entry as it is and a bit for a list it uses.
/// Whatever [`blocked`] would refuse shares a bit with the request (the same text hashes to the
/// same bit, case folded where [`blocked`] folds it), so a mask that shares none settles that
/// nothing is blocked without reading the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockMask(u64);

impl BlockMask {
    /// The mask of what could block `campaign`.
    pub fn of_campaign(campaign: &Campaign) -> BlockMask {
        let mut bits = mask_of(&campaign.cat, CATEGORY_SALT, true, parent_categories)
            | mask_of(&campaign.adomain, DOMAIN_SALT, false, parent_domains);
        if campaign.cat.is_empty() {
            bits |= NO_CATEGORIES;
        }
        if campaign.adomain.is_empty() {
            bits |= NO_DOMAINS;
        }
        if let Some(bundle) = &campaign.bundle {
            bits |= hashed_bit(APP_SALT, bundle, false);
        }
        BlockMask(bits)
    }

    /// The mask of what `blocks` refuses.
    pub fn of_request(blocks: &Blocks) -> BlockMask {
        let mut bits = mask_of(&blocks.bcat, CATEGORY_SALT, true, no_parents)
            | mask_of(&blocks.badv, DOMAIN_SALT, false, no_parents)
            | mask_of(&blocks.bapp, APP_SALT, false, no_parents);
        if !blocks.bcat.is_empty() {
            bits |= NO_CATEGORIES;
        }
        if !blocks.badv.is_empty() {
            bits |= NO_DOMAINS;
        }
        BlockMask(bits)
    }

    /// Whether a campaign of this mask may be blocked by a request of `request`'s: when not,
    /// [`blocked`] is certain to answer `None`.
    pub fn may_block(self, request: BlockMask) -> bool {
        self.0 & request.0 != 0
    }
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

    fn any_campaign() -> impl proptest::strategy::Strategy<Value = Campaign> {
        use proptest::prelude::*;
        (
            proptest::collection::vec("(IAB|iab)[0-9]{1,2}(-[0-9]{1,2}){0,2}", 0..3),
            proptest::collection::vec("([a-c]{1,2}\\.){1,2}(com|org)", 0..3),
            proptest::option::of("com\\.[a-c]{1,2}"),
        )
            .prop_map(|(cat, adomain, bundle)| {
                let mut extra = format!(
                    r#","cat":{},"adomain":{}"#,
                    serde_json::to_string(&cat).unwrap(),
                    serde_json::to_string(&adomain).unwrap()
                );
                if let Some(b) = bundle {
                    extra.push_str(&format!(r#","bundle":"{b}""#));
                }
                campaign(&extra)
            })
    }

    proptest::proptest! {
        /// A campaign whose mask shares no bit with a request's is never blocked by it: the
        /// mask only ever skips reading campaigns that would have passed.
        #[test]
        fn a_mask_without_a_shared_bit_means_nothing_is_blocked(
            c in any_campaign(),
            bcat in proptest::collection::vec("(IAB|Iab)[0-9]{1,2}(-[0-9]{1,2}){0,1}", 0..3),
            badv in proptest::collection::vec("([a-c]{1,2}\\.){0,2}(com|org)", 0..3),
            bapp in proptest::collection::vec("com\\.[a-c]{1,2}", 0..2),
        ) {
            let b = blocks(
                &bcat.iter().map(String::as_str).collect::<Vec<_>>(),
                &badv.iter().map(String::as_str).collect::<Vec<_>>(),
                &bapp.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            let may = BlockMask::of_campaign(&c).may_block(BlockMask::of_request(&b));
            if !may {
                proptest::prop_assert_eq!(blocked(&c, &b), None);
            }
        }
    }

    #[test]
    fn masks_catch_parents_case_and_undeclared_lists() {
        let c = campaign(r#","cat":["IAB25-3"],"adomain":["shop.brand.com"],"bundle":"com.x""#);
        let m = BlockMask::of_campaign(&c);
        for b in [
            blocks(&["iab25"], &[], &[]),
            blocks(&["IAB25-3"], &[], &[]),
            blocks(&[], &["brand.com"], &[]),
            blocks(&[], &["com"], &[]),
            blocks(&[], &[], &["com.x"]),
        ] {
            assert!(blocked(&c, &b).is_some());
            assert!(m.may_block(BlockMask::of_request(&b)), "{b:?}");
        }
        let undeclared = BlockMask::of_campaign(&campaign(""));
        assert!(undeclared.may_block(BlockMask::of_request(&blocks(&["IAB1"], &[], &[]))));
        assert!(undeclared.may_block(BlockMask::of_request(&blocks(&[], &["a.com"], &[]))));
        assert!(!undeclared.may_block(BlockMask::of_request(&Blocks::default())));
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
