//! Retrieval: from the replicated catalog and budget state to the candidates of one request.
//!
//! An index by targeted country (plus the campaigns that target everyone) narrows the catalog
//! before any per-campaign check, so a request never scans every campaign. A campaign qualifies
//! when it is active and in flight, has budget left today, matches the request's device and
//! interests, and has a creative; at most `per_advertiser` campaigns of one advertiser go on.

use std::collections::HashMap;

use crate::catalog::Listed;
use crate::events::CampaignStatus;
use crate::ledger::status::BudgetBook;
use crate::time::EventTime;

use crate::request::AdRequest;

const EVERYWHERE: &str = "*";

/// Campaign ids by targeted country (`*` for campaigns without country targeting).
#[derive(Debug, Default)]
pub struct CampaignIndex {
    by_country: HashMap<String, Vec<String>>,
}

impl CampaignIndex {
    /// Builds the index over every campaign of `book`.
    pub fn build(book: &BudgetBook) -> Self {
        let mut by_country: HashMap<String, Vec<String>> = HashMap::new();
        for listed in book.catalog().iter() {
            let c = &listed.campaign;
            if c.targeting.countries.is_empty() {
                by_country
                    .entry(EVERYWHERE.into())
                    .or_default()
                    .push(c.campaign_id.clone());
            }
            for country in &c.targeting.countries {
                by_country
                    .entry(country.to_ascii_uppercase())
                    .or_default()
                    .push(c.campaign_id.clone());
            }
        }
        CampaignIndex { by_country }
    }

    /// Ids of campaigns whose country targeting admits `country`.
    pub fn lookup<'a>(&'a self, country: Option<&str>) -> impl Iterator<Item = &'a String> + 'a {
        let everywhere = self.by_country.get(EVERYWHERE).into_iter().flatten();
        let local = country
            .and_then(|c| self.by_country.get(c))
            .into_iter()
            .flatten();
        everywhere.chain(local)
    }
}

fn admits(listed: &Listed, request: &AdRequest) -> bool {
    let t = &listed.campaign.targeting;
    let device_ok = t.devices.is_empty()
        || request
            .device
            .as_ref()
            .is_some_and(|d| t.devices.iter().any(|x| x.eq_ignore_ascii_case(d)));
    let interests_ok = t.interests.is_empty()
        || request
            .interests
            .iter()
            .any(|i| t.interests.iter().any(|x| x.eq_ignore_ascii_case(i)));
    device_ok && interests_ok
}

/// The campaigns that may bid on `request` at `now`, best bid first, at most `per_advertiser`
/// per advertiser and `limit` in all. `pace` is asked about every campaign the request reaches
/// (live and targeted, before the budget check): pacing counts it there, and it returns whether
/// the campaign takes part in this auction.
pub fn retrieve<'a>(
    book: &'a BudgetBook,
    index: &CampaignIndex,
    request: &AdRequest,
    now: EventTime,
    per_advertiser: usize,
    limit: usize,
    mut pace: impl FnMut(&Listed) -> bool,
) -> Vec<&'a Listed> {
    let mut found: Vec<&Listed> = index
        .lookup(request.country.as_deref())
        .filter_map(|id| book.catalog().get(id))
        .filter(|l| {
            l.campaign.status == CampaignStatus::Active
                && l.campaign.in_flight(now)
                && !l.campaign.creatives.is_empty()
        })
        .filter(|l| admits(l, request))
        .filter(|l| pace(l))
        .filter(|l| book.remaining(l, now) > 0)
        .collect();
    found.sort_by(|a, b| {
        b.campaign
            .bid_micros
            .cmp(&a.campaign.bid_micros)
            .then_with(|| a.campaign.campaign_id.cmp(&b.campaign.campaign_id))
    });
    let mut per: HashMap<&str, usize> = HashMap::new();
    found.retain(|l| {
        let n = per.entry(l.campaign.advertiser_id.as_str()).or_default();
        *n += 1;
        *n <= per_advertiser
    });
    found.truncate(limit);
    found
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
                .iter()
                .map(|l| l.campaign.campaign_id.clone())
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
        let found = retrieve(&book, &index, &r, now, 5, 100, |l| {
            reached.push(l.campaign.campaign_id.clone());
            l.campaign.campaign_id != "all-2"
        });
        assert_eq!(found.len(), 1);
        reached.sort();
        assert_eq!(reached, vec!["all-1", "all-2", "fr"]);
    }
}
