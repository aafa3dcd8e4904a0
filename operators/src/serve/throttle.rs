//! The pacing throttle as serving applies it: each campaign takes part in a request's auction
//! with its pass probability (pacing's broadcast), decided by a coin reproducible from the
//! request and the campaign; and the sampling of reach counts for campaigns it holds back.
//!
//! A request's visit to a held-back campaign only matters for pacing's traffic forecast (its
//! reach count), which needs the campaign checked against the request. In a large catalog most
//! campaigns are held back most of the time, so checking each of them on every request would
//! make every request scan the catalog: instead a held-back campaign is checked and counted on
//! a sample of `reach_sample` of its requests, with weight `1 / reach_sample`, which keeps the
//! expected count exact (a campaign that bids is always checked and counts 1). Catalogs of up
//! to [`EXACT_REACH_CAMPAIGNS`] are counted exactly.

use super::retrieval::Pace;

/// Catalogs up to this size count every reach exactly; larger ones sample held-back campaigns
/// so that a request checks about this many of them.
pub const EXACT_REACH_CAMPAIGNS: usize = 4_096;

/// Seed of the reach-sampling coin (independent of the throttle's).
const SAMPLE_SEED: u64 = 0x7265_6163_685f_7361;

/// The key of a request's coins: its id hashed once, so that a request visiting thousands of
/// campaigns hashes its id once, not per campaign.
pub fn request_key(request_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(request_id.as_bytes())
}

/// A 64-bit finaliser (MurmurHash3's): every input bit moves every output bit.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Uniform in [0, 1) from the request (its [`request_key`]) and the campaign (its id's hash
/// `route`): the throttle's coin, reproducible for a request and independent across campaigns.
pub fn coin(request: u64, route: u64) -> f64 {
    (mix(request ^ route) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a campaign with pass probability `pass` (whose id hashes to `route`) takes part in
/// the auction of the request keyed `request`.
pub fn passes(pass: f64, request: u64, route: u64) -> bool {
    pass >= 1.0 || coin(request, route) < pass
}

/// The share of a held-back campaign's requests that check and count it, in a catalog of
/// `campaigns`.
pub fn reach_sample(campaigns: usize) -> f64 {
    (EXACT_REACH_CAMPAIGNS as f64 / campaigns.max(1) as f64).min(1.0)
}

/// What pacing says of a campaign with pass probability `pass` (id hash `route`) visited by the
/// request keyed `request`, sampling held-back campaigns' reach at `sample`.
pub fn pace(pass: f64, request: u64, route: u64, sample: f64) -> Pace {
    if passes(pass, request, route) {
        Pace::Bid { weight: 1.0 }
    } else if sample >= 1.0 || coin(request, route ^ SAMPLE_SEED) < sample {
        Pace::HeldBack {
            weight: 1.0 / sample,
        }
    } else {
        Pace::Skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coins_are_uniform_and_independent_across_campaigns() {
        // One request over many campaigns, and one campaign over many requests.
        let n = 100_000u64;
        let request = request_key("r-1");
        let across: f64 = (0..n).map(|c| coin(request, mix(c))).sum::<f64>() / n as f64;
        let over: f64 = (0..n)
            .map(|r| coin(request_key(&format!("r{r}")), 7))
            .sum::<f64>()
            / n as f64;
        assert!((across - 0.5).abs() < 0.01, "{across}");
        assert!((over - 0.5).abs() < 0.01, "{over}");
        // Neighbouring campaigns' coins are not correlated.
        let pairs: f64 = (0..n)
            .map(|c| (coin(request, c) - 0.5) * (coin(request, c + 1) - 0.5))
            .sum::<f64>()
            / n as f64;
        assert!(pairs.abs() < 0.005, "{pairs}");
    }

    #[test]
    fn held_back_reach_is_sampled_with_an_exact_expected_count() {
        // Pass 0.3, sample 0.1: over many requests, bids ~30 %, counts sum to the requests.
        let (mut bids, mut weight, mut checked) = (0usize, 0.0, 0usize);
        let n = 200_000;
        for r in 0..n {
            match pace(0.3, request_key(&format!("r{r}")), 42, 0.1) {
                Pace::Bid { weight: w } => {
                    bids += 1;
                    weight += w;
                    checked += 1;
                }
                Pace::HeldBack { weight: w } => {
                    weight += w;
                    checked += 1;
                }
                Pace::Skip => {}
            }
        }
        let share = bids as f64 / n as f64;
        assert!((share - 0.3).abs() < 0.01, "{share}");
        assert!(
            (weight / n as f64 - 1.0).abs() < 0.02,
            "{}",
            weight / n as f64
        );
        let checked = checked as f64 / n as f64;
        assert!((checked - (0.3 + 0.7 * 0.1)).abs() < 0.01, "{checked}");
        // Exact below the threshold: every held-back campaign is checked, with weight 1.
        assert_eq!(reach_sample(EXACT_REACH_CAMPAIGNS), 1.0);
        assert_eq!(
            pace(0.0, request_key("r"), 1, 1.0),
            Pace::HeldBack { weight: 1.0 }
        );
        assert_eq!(
            pace(1.0, request_key("r"), 1, 0.01),
            Pace::Bid { weight: 1.0 }
        );
        assert!(reach_sample(EXACT_REACH_CAMPAIGNS * 4) < 0.3);
    }
}
