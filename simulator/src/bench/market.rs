//! The simulated world as serving sees it, for the benches: its campaigns in a serving replica's
//! budget book with serving's targeting index, and each user's request as the product parses it.
//!
//! Which campaigns may bid on a visit is decided by serving's own retrieval
//! ([`adstream_operators::serve::retrieval::retrieve`]: status, flight, country, device and
//! interest targeting, case-insensitive, budget left), never by a copy of it here.

use adstream_operators::ledger::status::BudgetBook;
use adstream_operators::ranker::prior::PriorRanker;
use adstream_operators::request::AdRequest;
use adstream_operators::serve::retrieval::{retrieve, CampaignIndex, Funnel, Pace};
use adstream_operators::time::EventTime;
use anyhow::Context;

use crate::world::World;

/// A world's campaigns and users in serving's terms.
pub struct Market<'w> {
    /// The world.
    pub world: &'w World,
    /// Its campaigns, with the spend applied so far.
    pub book: BudgetBook,
    /// Serving's targeting index over them.
    pub index: CampaignIndex,
    /// Each user's request (by index in [`World::users`]), one slot, as serving parses it.
    pub requests: Vec<AdRequest>,
}

impl<'w> Market<'w> {
    /// Lists every campaign of `world` and parses every user's request.
    pub fn new(world: &'w World) -> anyhow::Result<Self> {
        let book = world.budget_book();
        let index = CampaignIndex::build(&book, &PriorRanker::default());
        let requests = world
            .users
            .iter()
            .map(|u| {
                u.ad_request("bench")
                    .with_context(|| format!("the request of user {}", u.id))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Market {
            world,
            book,
            index,
            requests,
        })
    }

    /// Indices in [`World::campaigns`] of the campaigns serving's retrieval admits for user
    /// `user`'s visit at `now`, every advertiser's all, no throttle.
    pub fn eligible(&self, user: usize, now: EventTime) -> Vec<usize> {
        let Some(request) = self.requests.get(user) else {
            return Vec::new();
        };
        retrieve(
            &self.book,
            &self.index,
            request,
            now,
            Funnel::ALL,
            |_, _, _| Pace::Bid { weight: 1.0 },
            |_, _| {},
        )
        .0
        .into_iter()
        .filter_map(|r| self.world.campaign_index(&r.listed.campaign.campaign_id))
        .collect()
    }
}
