//! Pre-ranking: the funnel's cheap stage between retrieval and the ranker.
//!
//! Retrieval hands over a pool of campaigns that may bid (up to `serving.prerank_candidates`);
//! when the pool holds more than the ranker should score (`serving.max_candidates`), each is
//! scored by its expected value per thousand impressions at its prior click and conversion
//! rates times the probability that its pacing throttle lets it bid, and the best are kept, in
//! retrieval's order.

use super::auction::expected_ecpm;
use super::retrieval::Retrieved;
use crate::ranker::prior::PriorRanker;

/// The pre-ranking score of a campaign bidding `billing`/`bid_micros` with prior rates
/// `pctr`/`pcvr` and pass probability `pass`: expected eCPM micros times `pass`.
pub fn prerank_score(
    billing: crate::events::Billing,
    bid_micros: u64,
    pctr: f64,
    pcvr: f64,
    pass: f64,
) -> f64 {
    expected_ecpm(billing, bid_micros, pctr, pcvr) as f64 * pass.clamp(0.0, 1.0)
}

/// The best `keep` of `pool` by [`prerank_score`] at `prior` and `pass` (ties: retrieval's
/// order), in retrieval's order; the pool itself when it holds no more than `keep`.
pub fn prerank<'a>(
    mut pool: Vec<Retrieved<'a>>,
    keep: usize,
    prior: &PriorRanker,
    pass: impl Fn(&Retrieved<'a>) -> f64,
) -> Vec<Retrieved<'a>> {
    if pool.len() <= keep {
        return pool;
    }
    let mut scored: Vec<(f64, usize)> = pool
        .iter()
        .enumerate()
        .map(|(at, r)| {
            let c = &r.listed.campaign;
            let p = prior.predict(&c.campaign_id);
            let score = prerank_score(c.billing, c.bid_micros, p.pctr, p.pcvr, pass(r));
            (score, at)
        })
        .collect();
    let better = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if keep == 0 {
        return Vec::new();
    }
    scored.select_nth_unstable_by(keep - 1, better);
    let mut kept = vec![false; pool.len()];
    for (_, at) in &scored[..keep] {
        if let Some(k) = kept.get_mut(*at) {
            *k = true;
        }
    }
    let mut flags = kept.into_iter();
    pool.retain(|_| flags.next().unwrap_or(false));
    pool
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Billing, Campaign};
    use crate::ledger::status::BudgetBook;
    use crate::records::{CatalogUpdate, LedgerState};
    use crate::request::parse_request;
    use crate::serve::retrieval::{retrieve, CampaignIndex, Funnel, Pace};
    use crate::time::EventTime;
    use proptest::prelude::*;

    fn book(campaigns: &[(Billing, u64)]) -> BudgetBook {
        let mut book = BudgetBook::default();
        for (i, (billing, bid)) in campaigns.iter().enumerate() {
            let json = format!(
                r#"{{"campaign_id":"c{i:03}","advertiser_id":"a{i}","daily_budget_micros":1000000,"timezone":"UTC","billing":"{}","bid_micros":{bid},"creatives":[{{"ad_id":"ad{i}"}}]}}"#,
                billing.as_str()
            );
            let c = Campaign::parse(json.as_bytes()).expect("valid campaign");
            book.apply(&LedgerState::Campaign(CatalogUpdate::new(
                c.campaign_id.clone(),
                Some(Box::new(c)),
            )));
        }
        book
    }

    fn ids(found: &[Retrieved]) -> Vec<String> {
        found
            .iter()
            .map(|r| r.listed.campaign.campaign_id.clone())
            .collect()
    }

    #[test]
    fn keeps_the_best_expected_value_times_pass_in_retrieval_order() {
        // c000: CPM 3.0; c001: CPC 0.2 at 2 % = eCPM 4.0; c002: CPM 2.5; c003: CPA, tiny.
        let book = book(&[
            (Billing::Cpm, 3_000_000),
            (Billing::Cpc, 200_000),
            (Billing::Cpm, 2_500_000),
            (Billing::Cpa, 100_000),
        ]);
        let prior = PriorRanker::default();
        let index = CampaignIndex::build(&book, &prior);
        let request = parse_request(br#"{"id":"r","imp":[{"id":"1"}]}"#).expect("request");
        let now = EventTime::now();
        let pool = retrieve(
            &book,
            &index,
            &request,
            now,
            Funnel::ALL,
            |_, _, _| Pace::Bid { weight: 1.0 },
            |_, _| {},
        )
        .0;
        assert_eq!(ids(&pool), ["c001", "c000", "c002", "c003"], "by value");
        let kept = prerank(pool.clone(), 2, &prior, |_| 1.0);
        assert_eq!(ids(&kept), ["c001", "c000"]);
        // The throttle halves c001's chances: c002 goes before it.
        let kept = prerank(pool.clone(), 2, &prior, |r| {
            if r.listed.campaign.campaign_id == "c001" {
                0.5
            } else {
                1.0
            }
        });
        assert_eq!(ids(&kept), ["c000", "c002"]);
        assert_eq!(prerank(pool.clone(), 10, &prior, |_| 1.0).len(), 4);
        assert!(prerank(pool, 0, &prior, |_| 1.0).is_empty());
    }

    proptest! {
        /// Pre-ranking keeps exactly `keep` (or all), a subset in retrieval's order, and no
        /// campaign left out scores above one kept.
        #[test]
        fn keeps_a_best_subset(
            bids in proptest::collection::vec((0u8..3, 1u64..5_000_000), 1..40),
            keep in 0usize..45,
            passes in proptest::collection::vec(0.0f64..=1.0, 40),
        ) {
            let campaigns: Vec<(Billing, u64)> = bids
                .iter()
                .map(|(b, bid)| ([Billing::Cpm, Billing::Cpc, Billing::Cpa][*b as usize], *bid))
                .collect();
            let book = book(&campaigns);
            let prior = PriorRanker::default();
            let index = CampaignIndex::build(&book, &prior);
            let request = parse_request(br#"{"id":"r","imp":[{"id":"1"}]}"#).expect("request");
            let pool = retrieve(&book, &index, &request, EventTime::now(), Funnel::ALL, |_, _, _| Pace::Bid { weight: 1.0 }, |_, _| {}).0;
            let pass_of = |r: &Retrieved| {
                let i: usize = r.listed.campaign.campaign_id[1..].parse().unwrap_or(0);
                passes[i % passes.len()]
            };
            let score = |r: &Retrieved| {
                let c = &r.listed.campaign;
                let p = prior.predict(&c.campaign_id);
                prerank_score(c.billing, c.bid_micros, p.pctr, p.pcvr, pass_of(r))
            };
            let kept = prerank(pool.clone(), keep, &prior, pass_of);
            prop_assert_eq!(kept.len(), keep.min(pool.len()));
            let kept_ids = ids(&kept);
            let order: Vec<String> = ids(&pool).into_iter().filter(|id| kept_ids.contains(id)).collect();
            prop_assert_eq!(&order, &kept_ids, "retrieval's order");
            let worst_kept = kept.iter().map(score).fold(f64::INFINITY, f64::min);
            for r in pool.iter().filter(|r| !kept_ids.contains(&r.listed.campaign.campaign_id)) {
                prop_assert!(score(r) <= worst_kept);
            }
        }
    }
}
