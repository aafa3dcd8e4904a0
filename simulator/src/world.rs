//! The ground-truth marketplace: users, advertisers, campaigns and creatives with latent traits,
//! and the true click and conversion probabilities that follow from them.
//!
//! Everything is drawn from one seed, so the same seed gives the same world. The click model is
//! logistic in a user-ad affinity (a dot product of latent vectors), the creative's quality, an
//! interest match and a device effect; the conversion model (after a click) is logistic in a
//! user-advertiser affinity and the campaign's offer strength. Averages land near 2% CTR and 5%
//! CVR, the magnitudes of display advertising.

use std::collections::HashMap;

use adstream_operators::events::{
    Billing, Campaign, CampaignStatus, Creative, Objective, Targeting,
};
use adstream_operators::ledger::status::BudgetBook;
use adstream_operators::records::CatalogUpdate;
use adstream_operators::request::{parse_request, AdRequest, RequestError};
use rand::distr::weighted::WeightedIndex;
use rand::prelude::*;
use rand::rngs::StdRng;
use rand_distr::{LogNormal, Normal};

/// Countries users come from, with their share of traffic.
pub const COUNTRIES: [(&str, f64); 8] = [
    ("US", 0.35),
    ("GB", 0.10),
    ("DE", 0.10),
    ("FR", 0.10),
    ("BR", 0.10),
    ("IN", 0.10),
    ("JP", 0.10),
    ("CA", 0.05),
];

/// OpenRTB device types users have (`devicetype` code, name, share).
pub const DEVICES: [(u32, &str, f64); 3] =
    [(4, "mobile", 0.6), (2, "desktop", 0.3), (5, "tablet", 0.1)];

/// Interest labels; each user holds a few, derived from their latent vector.
pub const INTERESTS: [&str; 8] = [
    "sports", "travel", "fashion", "tech", "food", "finance", "gaming", "home",
];

const TIMEZONES: [&str; 8] = [
    "UTC",
    "America/New_York",
    "Europe/Paris",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Europe/London",
    "Australia/Sydney",
    "America/Sao_Paulo",
];

/// How big a world to draw.
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// Users.
    pub users: usize,
    /// Advertisers (each runs 2 to 4 campaigns).
    pub advertisers: usize,
    /// Latent dimensions of users and ads.
    pub latent_dim: usize,
    /// Median daily budget, micros; budgets are log-normal around it.
    pub median_budget_micros: u64,
    /// Prefix of every id, so that two simulators on one topic do not collide.
    pub id_prefix: String,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            users: 20_000,
            advertisers: 20,
            latent_dim: 8,
            median_budget_micros: 20_000_000,
            id_prefix: "sim".into(),
        }
    }
}

/// A user and their hidden traits.
#[derive(Clone, Debug)]
pub struct User {
    /// `user.id` in requests and events.
    pub id: String,
    /// ISO country code.
    pub country: &'static str,
    /// OpenRTB `devicetype`.
    pub devicetype: u32,
    /// Interest labels (sent as `user.keywords`).
    pub interests: Vec<&'static str>,
    /// Hidden taste vector.
    pub latent: Vec<f64>,
}

impl User {
    /// The OpenRTB 2.6 BidRequest of one visit of this user from a site: `slots` impressions
    /// (`imp.id` 1, 2, ...; `tagid` `feed-N`) with the publisher's floor `floor_cpm` (CPM,
    /// currency units), answered within `tmax_ms`. What the simulator posts to `/v1/openrtb`.
    pub fn bid_request(
        &self,
        request_id: &str,
        slots: usize,
        floor_cpm: f64,
        tmax_ms: u64,
    ) -> serde_json::Value {
        let imps: Vec<serde_json::Value> = (1..=slots)
            .map(|i| {
                serde_json::json!({"id": i.to_string(), "tagid": format!("feed-{i}"), "bidfloor": (floor_cpm * 100.0).round() / 100.0})
            })
            .collect();
        serde_json::json!({
            "id": request_id,
            "imp": imps,
            "user": {"id": self.id, "keywords": self.interests.join(",")},
            "device": {"geo": {"country": self.country}, "devicetype": self.devicetype},
            "site": {"domain": "news.example"},
            "tmax": tmax_ms,
        })
    }

    /// One visit of this user (one slot, no floor) as serving reads it: [`Self::bid_request`]
    /// through the product's parser, so country, device and interests are what serving's
    /// targeting matches. The benches run serving's retrieval on it.
    pub fn ad_request(&self, request_id: &str) -> Result<AdRequest, RequestError> {
        parse_request(
            self.bid_request(request_id, 1, 0.0, 50)
                .to_string()
                .as_bytes(),
        )
    }
}

/// A creative and its hidden quality.
#[derive(Clone, Debug)]
pub struct Ad {
    /// `ad_id`.
    pub ad_id: String,
    /// Hidden appeal vector.
    pub latent: Vec<f64>,
    /// Hidden quality, a logit offset.
    pub quality: f64,
}

/// A campaign as published, with its creatives' hidden traits and its offer strength.
#[derive(Clone, Debug)]
pub struct SimCampaign {
    /// The definition produced to the campaigns topic.
    pub campaign: Campaign,
    /// Its creatives.
    pub ads: Vec<Ad>,
    /// Hidden conversion logit offset (how good the offer is).
    pub offer: f64,
    /// The advertiser's hidden audience vector (conversion affinity).
    pub advertiser_latent: Vec<f64>,
}

/// The whole ground truth.
pub struct World {
    /// Users.
    pub users: Vec<User>,
    /// Campaigns.
    pub campaigns: Vec<SimCampaign>,
    user_pick: WeightedIndex<f64>,
    by_ad: HashMap<String, (usize, usize)>,
    by_campaign: HashMap<String, usize>,
}

fn latent(rng: &mut StdRng, dim: usize) -> Vec<f64> {
    let normal = Normal::new(0.0, 1.0).expect("unit normal");
    (0..dim).map(|_| normal.sample(rng)).collect()
}

fn affinity(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.len().max(1) as f64).sqrt()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[(T, f64)]) -> T {
    let weights: Vec<f64> = items.iter().map(|(_, w)| *w).collect();
    match WeightedIndex::new(&weights) {
        Ok(w) => items[w.sample(rng)].0,
        Err(_) => items[0].0,
    }
}

/// The interests a latent vector implies: the labels of its largest coordinates.
fn interests_of(latent: &[f64]) -> Vec<&'static str> {
    let mut dims: Vec<(usize, f64)> = latent.iter().copied().enumerate().collect();
    dims.sort_by(|a, b| b.1.total_cmp(&a.1));
    dims.iter()
        .take(2)
        .filter(|(_, v)| *v > 0.0)
        .map(|(i, _)| INTERESTS[i % INTERESTS.len()])
        .collect()
}

impl World {
    /// Draws a world from `seed`.
    pub fn generate(seed: u64, config: &WorldConfig) -> World {
        let mut rng = StdRng::seed_from_u64(seed);
        let dim = config.latent_dim.max(1);
        let activity = LogNormal::new(0.0, 1.0).expect("valid log-normal");
        let mut users = Vec::with_capacity(config.users);
        let mut weights = Vec::with_capacity(config.users);
        let countries: Vec<(&'static str, f64)> = COUNTRIES.to_vec();
        let devices: Vec<(u32, f64)> = DEVICES.iter().map(|(c, _, w)| (*c, *w)).collect();
        for i in 0..config.users.max(1) {
            let latent = latent(&mut rng, dim);
            users.push(User {
                id: format!("{}-u{i}", config.id_prefix),
                country: pick(&mut rng, &countries),
                devicetype: pick(&mut rng, &devices),
                interests: interests_of(&latent),
                latent,
            });
            weights.push(activity.sample(&mut rng));
        }
        let budget = LogNormal::new((config.median_budget_micros.max(1) as f64).ln(), 1.0)
            .expect("valid log-normal");
        let spread = LogNormal::new(0.0, 0.4).expect("valid log-normal");
        let quality = Normal::new(0.0, 0.5).expect("valid normal");
        let mut campaigns = Vec::new();
        for a in 0..config.advertisers.max(1) {
            let advertiser_id = format!("{}-adv{a}", config.id_prefix);
            let advertiser_latent = latent(&mut rng, dim);
            let timezone = TIMEZONES[rng.random_range(0..TIMEZONES.len())];
            for c in 0..rng.random_range(2..=4) {
                let campaign_id = format!("{}-c{a}-{c}", config.id_prefix);
                let billing = pick(
                    &mut rng,
                    &[
                        (Billing::Cpm, 0.4),
                        (Billing::Cpc, 0.4),
                        (Billing::Cpa, 0.2),
                    ],
                );
                // Bids with the same expected eCPM (~2 $ CPM at 2% CTR and 5% CVR), spread out.
                let base: f64 = match billing {
                    Billing::Cpm => 2_000_000.0,
                    Billing::Cpc => 100_000.0,
                    Billing::Cpa => 2_000_000.0,
                };
                let factor: f64 = spread.sample(&mut rng);
                let bid_micros = (base * factor).round() as u64;
                let mut targeting = Targeting::default();
                if rng.random_bool(0.5) {
                    let n = rng.random_range(1..=3);
                    let mut cs: Vec<String> = COUNTRIES
                        .choose_multiple(&mut rng, n)
                        .map(|(c, _)| c.to_string())
                        .collect();
                    cs.sort();
                    targeting.countries = cs;
                }
                if rng.random_bool(0.3) {
                    targeting.devices = vec![DEVICES[rng.random_range(0..DEVICES.len())].1.into()];
                }
                if rng.random_bool(0.3) {
                    let n = rng.random_range(1..=3);
                    targeting.interests = INTERESTS
                        .choose_multiple(&mut rng, n)
                        .map(|s| s.to_string())
                        .collect();
                }
                let ads: Vec<Ad> = (0..rng.random_range(1..=3))
                    .map(|k| Ad {
                        ad_id: format!("{campaign_id}-ad{k}"),
                        latent: latent(&mut rng, dim),
                        quality: quality.sample(&mut rng),
                    })
                    .collect();
                let campaign = Campaign {
                    campaign_id,
                    advertiser_id: advertiser_id.clone(),
                    status: CampaignStatus::Active,
                    daily_budget_micros: budget.sample(&mut rng).round().max(1_000.0) as u64,
                    timezone: timezone.to_string(),
                    billing,
                    bid_micros: bid_micros.max(1),
                    objective: match billing {
                        Billing::Cpm => Objective::Impressions,
                        Billing::Cpc => Objective::Clicks,
                        Billing::Cpa => Objective::Conversions,
                    },
                    targeting,
                    creatives: ads
                        .iter()
                        .map(|ad| Creative::plain(ad.ad_id.clone()))
                        .collect(),
                    adomain: vec![format!("adv{a}.example")],
                    cat: vec![format!("IAB{}", 1 + a % 26)],
                    bundle: None,
                    start: None,
                    end: None,
                };
                campaigns.push(SimCampaign {
                    campaign,
                    ads,
                    offer: quality.sample(&mut rng),
                    advertiser_latent: advertiser_latent.clone(),
                });
            }
        }
        let user_pick = WeightedIndex::new(&weights).expect("positive activity weights");
        let mut by_ad = HashMap::new();
        let mut by_campaign = HashMap::new();
        for (ci, c) in campaigns.iter().enumerate() {
            by_campaign.insert(c.campaign.campaign_id.clone(), ci);
            for (ai, ad) in c.ads.iter().enumerate() {
                by_ad.insert(ad.ad_id.clone(), (ci, ai));
            }
        }
        World {
            users,
            campaigns,
            user_pick,
            by_ad,
            by_campaign,
        }
    }

    /// A user drawn by activity (heavy users request more).
    pub fn sample_user(&self, rng: &mut impl Rng) -> &User {
        &self.users[self.sample_user_index(rng)]
    }

    /// The index in [`World::users`] of a user drawn as [`World::sample_user`] draws one.
    pub fn sample_user_index(&self, rng: &mut impl Rng) -> usize {
        self.user_pick.sample(rng)
    }

    /// The index in [`World::campaigns`] of the campaign with this id.
    pub fn campaign_index(&self, campaign_id: &str) -> Option<usize> {
        self.by_campaign.get(campaign_id).copied()
    }

    /// Every campaign of the world in a serving replica's budget book (its catalog), nothing
    /// spent yet: what serving's retrieval reads.
    pub fn budget_book(&self) -> BudgetBook {
        let mut book = BudgetBook::default();
        for c in &self.campaigns {
            book.apply_catalog(&CatalogUpdate::new(
                c.campaign.campaign_id.clone(),
                Some(Box::new(c.campaign.clone())),
            ));
        }
        book
    }

    /// The campaign with this id.
    pub fn campaign(&self, campaign_id: &str) -> Option<&SimCampaign> {
        self.by_campaign
            .get(campaign_id)
            .map(|i| &self.campaigns[*i])
    }

    /// The campaign and creative of `ad_id`.
    pub fn ad(&self, ad_id: &str) -> Option<(&SimCampaign, &Ad)> {
        let (c, a) = self.by_ad.get(ad_id)?;
        let campaign = &self.campaigns[*c];
        Some((campaign, &campaign.ads[*a]))
    }

    /// True P(click | impression) of `user` seeing `ad`.
    pub fn true_ctr(&self, user: &User, ad: &Ad, campaign: &SimCampaign) -> f64 {
        self.ctr_with_taste(user, &user.latent, ad, campaign)
    }

    /// P(click | impression) of `user` seeing `ad` if their hidden taste were `taste`.
    fn ctr_with_taste(&self, user: &User, taste: &[f64], ad: &Ad, campaign: &SimCampaign) -> f64 {
        let interest = campaign
            .campaign
            .targeting
            .interests
            .iter()
            .any(|i| user.interests.contains(&i.as_str()));
        let device = match user.devicetype {
            2 => -0.2,
            5 => 0.1,
            _ => 0.0,
        };
        sigmoid(
            -4.2 + ad.quality
                + 0.9 * affinity(taste, &ad.latent)
                + if interest { 0.4 } else { 0.0 }
                + device,
        )
    }

    /// Draws of a hidden taste vector from what a user's interests say of it: `n` standard
    /// normal vectors (the prior every user's taste is drawn from) whose interests are
    /// `interests`, by rejection (at most `n * 10_000` tries; fewer draws come back for an
    /// interest list no taste gives).
    pub fn tastes_like(&self, interests: &[&str], n: usize, rng: &mut impl Rng) -> Vec<Vec<f64>> {
        let dim = self.users.first().map_or(8, |u| u.latent.len()).max(1);
        let normal = Normal::new(0.0, 1.0).expect("unit normal");
        let mut out = Vec::with_capacity(n);
        for _ in 0..n.saturating_mul(10_000) {
            if out.len() >= n {
                break;
            }
            let taste: Vec<f64> = (0..dim).map(|_| normal.sample(rng)).collect();
            if interests_of(&taste) == interests {
                out.push(taste);
            }
        }
        out
    }

    /// P(click | impression) of `user` seeing `ad` as far as anything observable says (the
    /// ad's and campaign's traits, the user's device and interests), averaged over `tastes`,
    /// draws of the user's hidden taste given their interests ([`World::tastes_like`]): the best
    /// any ranker can do without learning each user's taste from their own clicks.
    pub fn observable_ctr(
        &self,
        user: &User,
        ad: &Ad,
        campaign: &SimCampaign,
        tastes: &[Vec<f64>],
    ) -> f64 {
        let sum: f64 = tastes
            .iter()
            .map(|t| self.ctr_with_taste(user, t, ad, campaign))
            .sum();
        sum / tastes.len().max(1) as f64
    }

    /// [`World::observable_ctr`] for P(conversion | click).
    pub fn observable_cvr(&self, campaign: &SimCampaign, tastes: &[Vec<f64>]) -> f64 {
        let sum: f64 = tastes.iter().map(|t| cvr_with_taste(t, campaign)).sum();
        sum / tastes.len().max(1) as f64
    }

    /// True P(conversion | click) of `user` on `campaign`.
    pub fn true_cvr(&self, user: &User, campaign: &SimCampaign) -> f64 {
        cvr_with_taste(&user.latent, campaign)
    }
}

/// P(conversion | click) on `campaign` of a user whose hidden taste is `taste`.
fn cvr_with_taste(taste: &[f64], campaign: &SimCampaign) -> f64 {
    sigmoid(-3.0 + campaign.offer + 0.8 * affinity(taste, &campaign.advertiser_latent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> WorldConfig {
        WorldConfig {
            users: 2_000,
            advertisers: 20,
            ..WorldConfig::default()
        }
    }

    #[test]
    fn same_seed_same_world() {
        let a = World::generate(7, &small());
        let b = World::generate(7, &small());
        let c = World::generate(8, &small());
        let ids = |w: &World| {
            w.campaigns
                .iter()
                .map(|c| {
                    (
                        c.campaign.campaign_id.clone(),
                        c.campaign.daily_budget_micros,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        assert_ne!(ids(&a), ids(&c));
        assert_eq!(a.users[10].latent, b.users[10].latent);
    }

    #[test]
    fn campaigns_are_valid_and_mixed() {
        let w = World::generate(1, &small());
        assert!(w.campaigns.len() >= 40, "{}", w.campaigns.len());
        for c in &w.campaigns {
            let json = serde_json::to_vec(&c.campaign).unwrap();
            Campaign::parse(&json).unwrap();
        }
        for billing in [Billing::Cpm, Billing::Cpc, Billing::Cpa] {
            assert!(w.campaigns.iter().any(|c| c.campaign.billing == billing));
        }
    }

    /// Average true rates sit in display advertising's range, and they vary across pairs.
    #[test]
    fn rates_are_realistic() {
        let w = World::generate(3, &small());
        let mut rng = StdRng::seed_from_u64(1);
        let (mut ctr, mut cvr, mut lo, mut hi) = (0.0, 0.0, 1.0f64, 0.0f64);
        let n = 20_000;
        for _ in 0..n {
            let user = w.sample_user(&mut rng);
            let c = &w.campaigns[rng.random_range(0..w.campaigns.len())];
            let ad = &c.ads[0];
            let p = w.true_ctr(user, ad, c);
            ctr += p;
            cvr += w.true_cvr(user, c);
            lo = lo.min(p);
            hi = hi.max(p);
        }
        let (ctr, cvr) = (ctr / n as f64, cvr / n as f64);
        assert!((0.01..0.04).contains(&ctr), "mean CTR {ctr}");
        assert!((0.03..0.10).contains(&cvr), "mean CVR {cvr}");
        assert!(hi / lo > 10.0, "CTR spread {lo}..{hi}");
    }

    #[test]
    fn lookups() {
        let w = World::generate(1, &small());
        let c = &w.campaigns[3];
        let ad = &c.ads[0];
        let (found, found_ad) = w.ad(&ad.ad_id).unwrap();
        assert_eq!(found.campaign.campaign_id, c.campaign.campaign_id);
        assert_eq!(found_ad.ad_id, ad.ad_id);
        assert!(w.ad("nope").is_none());
        assert!(w.campaign(&c.campaign.campaign_id).is_some());
    }

    #[test]
    fn observable_rates_average_the_tastes_a_users_interests_allow() {
        let w = World::generate(3, &small());
        let user = &w.users[0];
        let (c, ad) = (&w.campaigns[0], &w.campaigns[0].ads[0]);
        let mut rng = StdRng::seed_from_u64(5);
        let tastes = w.tastes_like(&user.interests, 64, &mut rng);
        assert_eq!(tastes.len(), 64);
        assert!(tastes.iter().all(|t| interests_of(t) == user.interests));
        // Knowing the taste itself is the oracle.
        let own = std::slice::from_ref(&user.latent);
        assert!((w.observable_ctr(user, ad, c, own) - w.true_ctr(user, ad, c)).abs() < 1e-12);
        assert!((w.observable_cvr(c, own) - w.true_cvr(user, c)).abs() < 1e-12);
        // Over the draws: their mean, so within the draws' range.
        let rates: Vec<f64> = tastes
            .iter()
            .map(|t| w.observable_ctr(user, ad, c, std::slice::from_ref(t)))
            .collect();
        let mean = w.observable_ctr(user, ad, c, &tastes);
        let (lo, hi) = rates
            .iter()
            .fold((1.0f64, 0.0f64), |(l, h), r| (l.min(*r), h.max(*r)));
        assert!(lo <= mean && mean <= hi && lo < hi, "{lo} {mean} {hi}");
    }
}
