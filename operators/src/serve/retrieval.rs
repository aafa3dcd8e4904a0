//! Retrieval: from the replicated catalog and budget state to the candidates of one request.
//!
//! An index by targeted country and device (each with a posting for the campaigns that target
//! every country or every device) narrows the catalog before any per-campaign check, so a
//! request only visits the campaigns that can match its geography and device, and holds the
//! campaigns themselves (shared with the catalog), so none is looked up by id per request. A
//! campaign qualifies ([`qualify`]) when it is active and in flight, matches the request's
//! geography (country, region, metro), device and interests, has a creative that fits one of
//! its slots, and is not blocked by the request's block lists; then pacing may hold it back and
//! it needs budget left today. At most `per_advertiser` campaigns of one advertiser go on.

use std::sync::Arc;

use super::brand_safety::{blocked, Blocked};
use super::formats::best_creative;
use crate::catalog::Listed;
use crate::events::CampaignStatus;
use crate::hash::HashMap;
use crate::ledger::status::BudgetBook;
use crate::time::EventTime;

use crate::request::AdRequest;

/// The postings of one country, by device.
type ByDevice = HashMap<Box<str>, Vec<Arc<Listed>>>;

/// The posting key of "any country" and "any device".
const ANY: &str = "*";

/// The campaigns of a catalog by targeted country (upper case) and device (lower case), `*`
/// standing for no targeting on that axis. A campaign is in one posting per (country, device)
/// pair it targets; a request, with one country and one device, finds it in at most one.
#[derive(Debug, Default)]
pub struct CampaignIndex {
    postings: HashMap<Box<str>, ByDevice>,
    campaigns: usize,
}

impl CampaignIndex {
    /// Builds the index over every campaign of `book`.
    pub fn build(book: &BudgetBook) -> Self {
        let mut index = CampaignIndex::default();
        for listed in book.catalog().shared() {
            let t = &listed.campaign.targeting;
            let countries: Vec<String> = if t.countries.is_empty() {
                vec![ANY.into()]
            } else {
                t.countries.iter().map(|c| c.to_ascii_uppercase()).collect()
            };
            let mut devices: Vec<String> = if t.devices.is_empty() {
                vec![ANY.into()]
            } else {
                t.devices.iter().map(|d| d.to_ascii_lowercase()).collect()
            };
            devices.sort();
            devices.dedup();
            let mut countries = countries;
            countries.sort();
            countries.dedup();
            for country in &countries {
                let by_device = index.postings.entry(country.as_str().into()).or_default();
                for device in &devices {
                    by_device
                        .entry(device.as_str().into())
                        .or_default()
                        .push(listed.clone());
                }
            }
            index.campaigns += 1;
        }
        index
    }

    /// The campaigns whose country and device targeting admit `country` and `device` (each at
    /// most once).
    pub fn lookup<'a>(
        &'a self,
        country: Option<&str>,
        device: Option<&str>,
    ) -> impl Iterator<Item = &'a Listed> + 'a {
        let device = device.map(str::to_ascii_lowercase);
        let mut lists: Vec<&'a [Arc<Listed>]> = Vec::with_capacity(4);
        for c in [Some(ANY), country].into_iter().flatten() {
            let Some(by_device) = self.postings.get(c) else {
                continue;
            };
            for d in [Some(ANY), device.as_deref()].into_iter().flatten() {
                if let Some(list) = by_device.get(d) {
                    lists.push(list);
                }
            }
        }
        lists.into_iter().flatten().map(|l| &**l)
    }

    /// Campaigns indexed.
    pub fn len(&self) -> usize {
        self.campaigns
    }

    /// Whether no campaign is indexed.
    pub fn is_empty(&self) -> bool {
        self.campaigns == 0
    }
}

/// The budget day of each time zone at one instant: campaigns share a handful of zones, and
/// converting an instant to a local date is the costly part of a budget check.
#[derive(Default)]
struct BudgetDays {
    known: Vec<(chrono_tz::Tz, chrono::NaiveDate)>,
}

impl BudgetDays {
    /// `listed`'s budget day at `now` (always `now`: one instance per request).
    fn day(&mut self, listed: &Listed, now: EventTime) -> chrono::NaiveDate {
        let tz = listed.tz_at(now);
        if let Some((_, day)) = self.known.iter().find(|(z, _)| *z == tz) {
            return *day;
        }
        let day = crate::time::day::budget_day(now, tz);
        self.known.push((tz, day));
        day
    }
}

/// Why a campaign did not bid on a request: the answer to "why didn't my ad serve", in the
/// order the stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoBid {
    /// Paused.
    Paused,
    /// Before its start or after its end.
    OutOfFlight,
    /// It has no creative.
    NoCreative,
    /// Country targeting.
    Country,
    /// Region targeting.
    Region,
    /// Metro targeting.
    Metro,
    /// Device targeting.
    Device,
    /// Interest targeting.
    Interests,
    /// None of its creatives fits a slot.
    Format,
    /// A block list of the request.
    Blocked(Blocked),
    /// Its pacing throttle held it back from this request.
    Pacing,
    /// No budget left today.
    Budget,
    /// Another campaign of its advertiser went on instead.
    AdvertiserLimit,
    /// More candidates than ranking takes.
    CandidateLimit,
    /// Its expected value is below every floor it could bid on.
    Floor,
    /// Another bid was higher.
    Outbid,
    /// What its win would reserve exceeds what it may still reserve today.
    BudgetGate,
}

impl NoBid {
    /// The name used in explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            NoBid::Paused => "paused",
            NoBid::OutOfFlight => "out_of_flight",
            NoBid::NoCreative => "no_creative",
            NoBid::Country => "targeting_country",
            NoBid::Region => "targeting_region",
            NoBid::Metro => "targeting_metro",
            NoBid::Device => "targeting_device",
            NoBid::Interests => "targeting_interests",
            NoBid::Blocked(b) => b.as_str(),
            NoBid::Format => "format",
            NoBid::Pacing => "pacing",
            NoBid::Budget => "budget",
            NoBid::AdvertiserLimit => "advertiser_limit",
            NoBid::CandidateLimit => "candidate_limit",
            NoBid::Floor => "floor",
            NoBid::Outbid => "outbid",
            NoBid::BudgetGate => "budget_gate",
        }
    }
}

fn listed_in(list: &[String], value: Option<&str>, eq: fn(&str, &str) -> bool) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|x| eq(x, v)))
}

fn same(a: &str, b: &str) -> bool {
    a == b
}

fn same_ignoring_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether `listed` may bid on `request` at `now` as far as the campaign and the request alone
/// say (status, flight, targeting, formats, block lists); if so, the best creative of each slot
/// (by index into its creatives).
pub fn qualify(
    listed: &Listed,
    request: &AdRequest,
    now: EventTime,
) -> Result<Vec<Option<usize>>, NoBid> {
    qualify_checked(listed, request, now, false)
}

/// [`qualify`], skipping the country and device checks when `indexed` (the campaign was found
/// in the [`CampaignIndex`] posting of the request's country and device, which is that check).
fn qualify_checked(
    listed: &Listed,
    request: &AdRequest,
    now: EventTime,
    indexed: bool,
) -> Result<Vec<Option<usize>>, NoBid> {
    let c = &listed.campaign;
    let t = &c.targeting;
    if c.status != CampaignStatus::Active {
        return Err(NoBid::Paused);
    }
    if !c.in_flight(now) {
        return Err(NoBid::OutOfFlight);
    }
    if c.creatives.is_empty() {
        return Err(NoBid::NoCreative);
    }
    if !indexed && !listed_in(&t.countries, request.country.as_deref(), same) {
        return Err(NoBid::Country);
    }
    if !listed_in(&t.regions, request.region.as_deref(), same) {
        return Err(NoBid::Region);
    }
    if !listed_in(&t.metros, request.metro.as_deref(), same) {
        return Err(NoBid::Metro);
    }
    if !indexed && !listed_in(&t.devices, request.device.as_deref(), same_ignoring_case) {
        return Err(NoBid::Device);
    }
    let interests_ok = t.interests.is_empty()
        || request
            .interests
            .iter()
            .any(|i| t.interests.iter().any(|x| x.eq_ignore_ascii_case(i)));
    if !interests_ok {
        return Err(NoBid::Interests);
    }
    let fits: Vec<Option<usize>> = request
        .slots
        .iter()
        .map(|slot| best_creative(&c.creatives, &slot.formats))
        .collect();
    if fits.iter().all(Option::is_none) {
        return Err(NoBid::Format);
    }
    // After formats: a request whose only fitting campaign is blocked says "blocked".
    if let Some(b) = blocked(c, &request.blocks) {
        return Err(NoBid::Blocked(b));
    }
    Ok(fits)
}

/// A campaign that may bid, with its best creative per slot.
#[derive(Debug, Clone)]
pub struct Retrieved<'a> {
    /// The campaign.
    pub listed: &'a Listed,
    /// Per slot of the request, the index of the creative it shows there (`None`: it does
    /// not fit that slot).
    pub creatives: Vec<Option<usize>>,
}

impl Retrieved<'_> {
    /// The slots it fits, as the auction's bit set.
    pub fn fits(&self) -> u16 {
        self.creatives
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .fold(0u16, |bits, (i, _)| {
                bits | 1u16.checked_shl(i as u32).unwrap_or(0)
            })
    }
}

/// The campaigns that may bid on `request` at `now`, best bid first, at most `per_advertiser`
/// per advertiser and `limit` in all, and the furthest stage a campaign that did not make it
/// reached (what a no-bid is explained by). `pace` is asked about every campaign the request
/// reaches (qualified, before the budget check): pacing counts it there, and it returns whether
/// the campaign takes part in this auction.
pub fn retrieve<'a>(
    book: &BudgetBook,
    index: &'a CampaignIndex,
    request: &AdRequest,
    now: EventTime,
    per_advertiser: usize,
    limit: usize,
    mut pace: impl FnMut(&Listed) -> bool,
) -> (Vec<Retrieved<'a>>, Option<NoBid>) {
    let mut furthest: Option<NoBid> = None;
    let mut missed = |why: NoBid| {
        furthest = Some(furthest.map_or(why, |f| f.max(why)));
    };
    let mut found: Vec<Retrieved> = Vec::new();
    let mut days = BudgetDays::default();
    for listed in index.lookup(request.country.as_deref(), request.device.as_deref()) {
        let creatives = match qualify_checked(listed, request, now, true) {
            Ok(c) => c,
            Err(why) => {
                missed(why);
                continue;
            }
        };
        if !pace(listed) {
            missed(NoBid::Pacing);
            continue;
        }
        if book.remaining_on(listed, days.day(listed, now)) == 0 {
            missed(NoBid::Budget);
            continue;
        }
        found.push(Retrieved { listed, creatives });
    }
    // A total order (ids are unique): unstable sorting gives the same result, cheaper.
    found.sort_unstable_by(|a, b| {
        let (a, b) = (&a.listed.campaign, &b.listed.campaign);
        b.bid_micros
            .cmp(&a.bid_micros)
            .then_with(|| a.campaign_id.cmp(&b.campaign_id))
    });
    let mut per: HashMap<&str, usize> = HashMap::default();
    found.retain(|r| {
        let n = per
            .entry(r.listed.campaign.advertiser_id.as_str())
            .or_default();
        *n += 1;
        *n <= per_advertiser
    });
    found.truncate(limit);
    (found, furthest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Campaign;
    use crate::records::CatalogUpdate;
    use crate::records::DaySpend;
    use crate::records::LedgerState;
    use crate::request::parse_request;

    fn add(book: &mut BudgetBook, json: &str) {
        let c = Campaign::parse(json.as_bytes()).unwrap();
        book.apply(&LedgerState::Campaign(CatalogUpdate::new(
            c.campaign_id.clone(),
            Some(Box::new(c)),
        )));
    }

    fn campaign(id: &str, adv: &str, targeting: &str, bid: u64) -> String {
        format!(
            r#"{{"campaign_id":"{id}","advertiser_id":"{adv}","daily_budget_micros":1000,"timezone":"UTC","billing":"cpm","bid_micros":{bid},"targeting":{targeting},"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
        )
    }

    #[test]
    fn the_index_visits_each_campaign_matching_country_and_device_once() {
        let mut book = BudgetBook::default();
        add(
            &mut book,
            &campaign("us-fr", "A", r#"{"countries":["US","FR","us"]}"#, 5),
        );
        add(
            &mut book,
            &campaign(
                "us-mob",
                "B",
                r#"{"countries":["US"],"devices":["Mobile","tablet"]}"#,
                5,
            ),
        );
        add(&mut book, &campaign("all", "C", "{}", 3));
        add(
            &mut book,
            &campaign("desk", "D", r#"{"devices":["desktop"]}"#, 3),
        );
        let index = CampaignIndex::build(&book);
        assert_eq!(index.len(), 4);
        let visited = |country: Option<&str>, device: Option<&str>| {
            let mut ids: Vec<String> = index
                .lookup(country, device)
                .map(|l| l.campaign.campaign_id.clone())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(
            visited(Some("US"), Some("mobile")),
            ["all", "us-fr", "us-mob"]
        );
        assert_eq!(
            visited(Some("US"), Some("desktop")),
            ["all", "desk", "us-fr"]
        );
        assert_eq!(visited(Some("FR"), Some("tablet")), ["all", "us-fr"]);
        assert_eq!(visited(Some("DE"), None), ["all"]);
        assert_eq!(visited(None, Some("DESKTOP")), ["all", "desk"]);
        assert_eq!(visited(None, None), ["all"]);
    }

    #[test]
    fn targeting_budget_and_advertiser_cap() {
        let mut book = BudgetBook::default();
        add(
            &mut book,
            &campaign("fr", "A", r#"{"countries":["FR"]}"#, 5),
        );
        add(
            &mut book,
            &campaign(
                "us-mobile",
                "B",
                r#"{"countries":["US"],"devices":["mobile"]}"#,
                5,
            ),
        );
        add(&mut book, &campaign("all-1", "C", "{}", 3));
        add(&mut book, &campaign("all-2", "C", "{}", 2));
        add(
            &mut book,
            &campaign("sports", "D", r#"{"interests":["sports"]}"#, 9),
        );
        let index = CampaignIndex::build(&book);
        let now = EventTime::now();
        let ids = |book: &BudgetBook, req: &str, k| {
            let r = parse_request(req.as_bytes()).unwrap();
            retrieve(book, &index, &r, now, k, 100, |_| true)
                .0
                .iter()
                .map(|r| r.listed.campaign.campaign_id.clone())
                .collect::<Vec<_>>()
        };
        let fr =
            r#"{"id":"r","imp":[{"id":"1"}],"device":{"geo":{"country":"FR"},"devicetype":2}}"#;
        assert_eq!(ids(&book, fr, 5), vec!["fr", "all-1", "all-2"]);
        assert_eq!(ids(&book, fr, 1), vec!["fr", "all-1"]);
        let us_mobile = r#"{"id":"r","imp":[{"id":"1"}],"device":{"geo":{"country":"US"},"devicetype":4},"user":{"keywords":"sports"}}"#;
        assert_eq!(
            ids(&book, us_mobile, 5),
            vec!["sports", "us-mobile", "all-1", "all-2"]
        );
        // Out of budget: gone.
        book.apply(&LedgerState::Spend(DaySpend {
            campaign_id: "fr".into(),
            day: crate::time::day::budget_day(now, chrono_tz::UTC),
            spend_micros: 1000,
            overdelivery_micros: 0,
        }));
        assert_eq!(ids(&book, fr, 5), vec!["all-1", "all-2"]);
        // Pacing sees every reachable campaign (out of budget included) and may hold one back.
        let r = parse_request(fr.as_bytes()).unwrap();
        let mut reached = Vec::new();
        let (found, furthest) = retrieve(&book, &index, &r, now, 5, 100, |l| {
            reached.push(l.campaign.campaign_id.clone());
            l.campaign.campaign_id != "all-2"
        });
        assert_eq!(found.len(), 1);
        assert_eq!(furthest, Some(NoBid::Budget));
        reached.sort();
        assert_eq!(reached, vec!["all-1", "all-2", "fr"]);
    }

    #[test]
    fn alpha_3_requests_meet_alpha_2_targeting_and_regions_and_metros_narrow_it() {
        let mut book = BudgetBook::default();
        add(
            &mut book,
            &campaign("us", "A", r#"{"countries":["US"]}"#, 5),
        );
        add(
            &mut book,
            &campaign("usa", "B", r#"{"countries":["usa"]}"#, 4),
        );
        add(
            &mut book,
            &campaign("ca", "C", r#"{"regions":["US-CA"]}"#, 3),
        );
        add(&mut book, &campaign("la", "D", r#"{"metros":["803"]}"#, 2));
        let index = CampaignIndex::build(&book);
        let now = EventTime::now();
        let ids = |geo: &str| {
            let r = parse_request(
                format!(r#"{{"id":"r","imp":[{{"id":"1"}}],"device":{{"geo":{geo}}}}}"#).as_bytes(),
            )
            .unwrap();
            let (found, furthest) = retrieve(&book, &index, &r, now, 5, 100, |_| true);
            let ids: Vec<String> = found
                .iter()
                .map(|r| r.listed.campaign.campaign_id.clone())
                .collect();
            (ids, furthest)
        };
        assert_eq!(ids(r#"{"country":"USA"}"#).0, vec!["us", "usa"]);
        assert_eq!(ids(r#"{"country":"us"}"#).0, vec!["us", "usa"]);
        assert_eq!(
            ids(r#"{"country":"USA","region":"CA","metro":"803"}"#).0,
            vec!["us", "usa", "ca", "la"]
        );
        assert_eq!(
            ids(r#"{"country":"USA","region":"NY"}"#).0,
            vec!["us", "usa"]
        );
        let (none, why) = ids(r#"{"country":"FRA"}"#);
        assert!(none.is_empty());
        assert_eq!(why, Some(NoBid::Metro), "the furthest stage reached");
    }

    #[test]
    fn block_lists_and_formats_leave_campaigns_out_with_their_reason() {
        let mut book = BudgetBook::default();
        add(
            &mut book,
            r#"{"campaign_id":"safe","advertiser_id":"A","daily_budget_micros":1000,"timezone":"UTC","billing":"cpm","bid_micros":5,"cat":["IAB1"],"adomain":["a.com"],"creatives":[{"ad_id":"s","w":300,"h":250}]}"#,
        );
        add(
            &mut book,
            r#"{"campaign_id":"gambling","advertiser_id":"B","daily_budget_micros":1000,"timezone":"UTC","billing":"cpm","bid_micros":9,"cat":["IAB9-7"],"adomain":["b.com"],"creatives":[{"ad_id":"g","w":300,"h":250}]}"#,
        );
        let index = CampaignIndex::build(&book);
        let now = EventTime::now();
        let run = |body: &str| {
            let r = parse_request(body.as_bytes()).unwrap();
            let (found, why) = retrieve(&book, &index, &r, now, 5, 100, |_| true);
            let ids: Vec<String> = found
                .iter()
                .map(|r| r.listed.campaign.campaign_id.clone())
                .collect();
            (ids, why)
        };
        let banner = r#"{"id":"r","imp":[{"id":"1","banner":{"w":300,"h":250}}],"bcat":["IAB9"]}"#;
        assert_eq!(
            run(banner),
            (
                vec!["safe".to_string()],
                Some(NoBid::Blocked(Blocked::Category))
            )
        );
        let video = r#"{"id":"r","imp":[{"id":"1","video":{"mimes":["video/mp4"]}}]}"#;
        assert_eq!(run(video), (vec![], Some(NoBid::Format)));
        let both = r#"{"id":"r","imp":[{"id":"1","video":{"mimes":["video/mp4"]}},{"id":"2","banner":{"w":300,"h":250}}]}"#;
        let r = parse_request(both.as_bytes()).unwrap();
        let (found, _) = retrieve(&book, &index, &r, now, 5, 100, |_| true);
        assert_eq!(found[0].creatives, vec![None, Some(0)]);
        assert_eq!(found[0].fits(), 0b10);
    }
}
