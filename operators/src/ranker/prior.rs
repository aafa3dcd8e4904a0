//! Ranking: predicted click and conversion probabilities for a request's candidates.
//!
//! The [`Ranker`] trait scores a batch; until a trained model is live (and whenever one fails)
//! the [`PriorRanker`] answers with a prior per campaign, so ranking never errors. The trained
//! model is `crate::ranker::scoring::ScoringModel`.

use crate::hash::HashMap;

use crate::catalog::Listed;
use crate::records::Engagement;
use crate::time::EventTime;

use crate::request::AdRequest;

/// Predictions for one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// P(click | impression).
    pub pctr: f64,
    /// P(conversion | click).
    pub pcvr: f64,
}

pub use crate::records::{GLOBAL_CTR, GLOBAL_CVR};

impl Default for Prediction {
    /// The global prior.
    fn default() -> Self {
        Prediction {
            pctr: GLOBAL_CTR,
            pcvr: GLOBAL_CVR,
        }
    }
}

/// Scores candidates in one batch.
pub trait Ranker {
    /// One prediction per candidate, in order; `priors` holds each candidate's prior (the
    /// serving replica's [`PriorRanker`]), what a ranker falls back to and what a model with
    /// a `prior_offset` spec corrects.
    fn score(
        &self,
        request: &AdRequest,
        history: &Engagement,
        candidates: &[&Listed],
        priors: &[Prediction],
        now: EventTime,
    ) -> Vec<Prediction>;
    /// The model version that produced the scores.
    fn version(&self) -> String;
}

/// A smoothed prior per campaign: `(clicks + a) / (impressions + a + b)`, the same for
/// conversions per click; campaigns without observations get the global prior.
#[derive(Debug, Clone)]
pub struct PriorRanker {
    /// Global prior click rate.
    pub ctr: f64,
    /// Global prior conversion rate per click.
    pub cvr: f64,
    /// Pseudo-impressions behind the global prior.
    pub strength: f64,
    observed: HashMap<String, (f64, f64, f64)>,
}

impl Default for PriorRanker {
    fn default() -> Self {
        PriorRanker {
            ctr: GLOBAL_CTR,
            cvr: GLOBAL_CVR,
            strength: 1_000.0,
            observed: HashMap::default(),
        }
    }
}

impl PriorRanker {
    /// Records observed impressions, clicks and conversions of a campaign.
    pub fn observe(&mut self, campaign: &str, impressions: f64, clicks: f64, conversions: f64) {
        let e = self.observed.entry(campaign.to_string()).or_default();
        e.0 += impressions;
        e.1 += clicks;
        e.2 += conversions;
    }

    /// The prior of one campaign.
    pub fn predict(&self, campaign: &str) -> Prediction {
        let (imps, clicks, convs) = self.observed.get(campaign).copied().unwrap_or_default();
        let k = self.strength;
        let click_k = (k * self.ctr).max(1.0);
        Prediction {
            pctr: (clicks + k * self.ctr) / (imps + k),
            pcvr: (convs + click_k * self.cvr) / (clicks + click_k),
        }
    }
}

impl Ranker for PriorRanker {
    fn score(
        &self,
        _request: &AdRequest,
        _history: &Engagement,
        candidates: &[&Listed],
        priors: &[Prediction],
        _now: EventTime,
    ) -> Vec<Prediction> {
        if priors.len() == candidates.len() {
            return priors.to_vec();
        }
        candidates
            .iter()
            .map(|l| self.predict(&l.campaign.campaign_id))
            .collect()
    }

    fn version(&self) -> String {
        "prior".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_moves_toward_observations() {
        let mut r = PriorRanker::default();
        assert!((r.predict("c").pctr - 0.02).abs() < 1e-12);
        r.observe("c", 100_000.0, 5_000.0, 50.0);
        let p = r.predict("c");
        assert!(p.pctr > 0.045 && p.pctr < 0.05, "{p:?}");
        assert!(p.pcvr < 0.05);
    }
}
