//! Features: one definition, `schemas/features.json`, for serving and training.
//!
//! A [`FeatureContext`] is the raw material of one (request, candidate) pair. Serving builds it
//! from the request and the listed campaign ([`FeatureContext::for_candidate`]); training builds
//! it from the logged `ads.served` record ([`FeatureContext::from_served`]), which carries the
//! same raw values. Both go through the same [`FeatureSpec::encode`], so the model sees the same
//! numbers for the same ad in both places (the seeds' "unified feature representation").
//!
//! The user-history sources (`history_*`) read the user's [`Engagement`]: serving's replica of
//! the graph's user-history state at the serving time, logged in the served record, so
//! training reads what serving read.
//!
//! Types: `categorical` (hashed into `buckets` embedding rows, row 0 = missing),
//! `multi_categorical` (a bag of values hashed the same way and mean-pooled, at most
//! `max_values`), `numeric` (optional `log1p`, clipped, then `(x - mean) / std`) and `dense`
//! (a fixed-size vector).
//!
//! Features of the serving time (the `time_of_day` vector) leak labels in online training: a
//! click is trained on at once, its negatives only when their click window closes, so the newest
//! examples are the positives and a model that reads the time learns "recent means clicked". The
//! shipped spec leaves them out; add them only with a click window short next to their period.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::catalog::Listed;
use crate::events::Billing;
use crate::ranker::prior::Prediction;
use crate::records::{Engagement, Served};
use crate::request::AdRequest;
use crate::time::EventTime;

/// The feature spec shipped in `schemas/features.json`.
pub const DEFAULT_SPEC: &str = include_str!("../../../schemas/features.json");

/// A refused feature spec; names the feature and field.
#[derive(Debug, Error, PartialEq)]
pub enum SpecError {
    /// Not valid JSON for a spec.
    #[error("feature spec: {0}")]
    Parse(String),
    /// A field has an invalid value.
    #[error("feature spec: features[{index}] ({name}): field `{field}`: {message}")]
    Field {
        /// Position in `features`.
        index: usize,
        /// The feature's name.
        name: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A `conversion_interactions` pair is invalid.
    #[error("feature spec: conversion_interactions[{index}]: {message}")]
    Interaction {
        /// Position in `conversion_interactions`.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// Where a feature's raw value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The request's user.
    UserId,
    /// The request's country.
    Country,
    /// The request's device type.
    Device,
    /// `site` or `app`.
    Inventory,
    /// The slot's tag id (serving scores with the request's first slot).
    TagId,
    /// The candidate campaign.
    CampaignId,
    /// Its advertiser.
    AdvertiserId,
    /// Its ad.
    AdId,
    /// Its billing unit.
    Billing,
    /// The user's interests.
    Interests,
    /// The campaign's targeted interests.
    AdInterests,
    /// The campaign's bid, micros per billing unit.
    BidMicros,
    /// How many of the user's interests the campaign targets.
    InterestOverlap,
    /// `[sin, cos]` of the UTC time of day.
    TimeOfDay,
    /// The campaigns of the user's recent clicks (a list, newest first).
    HistoryCampaigns,
    /// The advertisers of the user's recent clicks (a list).
    HistoryAdvertisers,
    /// The ads of the user's recent clicks (a list).
    HistoryAds,
    /// The user's impressions in the hour of serving and the 23 before it.
    HistoryImpressions,
    /// The user's clicks in those hours.
    HistoryClicks,
    /// The user's click rate in those hours, smoothed towards 2 % by 25 pseudo-impressions:
    /// `(clicks + 0.5) / (impressions + 25)`.
    HistoryClickRate,
    /// How many of the user's recent clicks were on the candidate's advertiser.
    HistoryAdvertiserClicks,
    /// How many of the user's recent clicks were on the candidate campaign.
    HistoryCampaignClicks,
}

impl Source {
    fn is_list(self) -> bool {
        matches!(
            self,
            Source::Interests
                | Source::AdInterests
                | Source::HistoryCampaigns
                | Source::HistoryAdvertisers
                | Source::HistoryAds
        )
    }

    fn is_number(self) -> bool {
        matches!(
            self,
            Source::BidMicros
                | Source::InterestOverlap
                | Source::HistoryImpressions
                | Source::HistoryClicks
                | Source::HistoryClickRate
                | Source::HistoryAdvertiserClicks
                | Source::HistoryCampaignClicks
        )
    }

    fn is_text(self) -> bool {
        matches!(
            self,
            Source::UserId
                | Source::Country
                | Source::Device
                | Source::Inventory
                | Source::TagId
                | Source::CampaignId
                | Source::AdvertiserId
                | Source::AdId
                | Source::Billing
        )
    }
}

/// One feature's definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Feature {
    /// A single value hashed into an embedding table.
    Categorical {
        /// Name (embedding tables are named after it).
        name: String,
        /// Where the value comes from.
        source: Source,
        /// Rows of the table.
        buckets: u32,
    },
    /// A bag of values, hashed and mean-pooled.
    MultiCategorical {
        /// Name.
        name: String,
        /// Where the values come from.
        source: Source,
        /// Rows of the table.
        buckets: u32,
        /// Values beyond this many are ignored.
        max_values: usize,
    },
    /// A number, transformed and normalised.
    Numeric {
        /// Name.
        name: String,
        /// Where the value comes from.
        source: Source,
        /// Apply `ln(1 + x)` first.
        #[serde(default)]
        log1p: bool,
        /// Clip to `[lo, hi]` (after `log1p`).
        clip: [f64; 2],
        /// Subtracted after clipping.
        mean: f64,
        /// Divides after subtracting the mean.
        std: f64,
    },
    /// A fixed-size vector.
    Dense {
        /// Name.
        name: String,
        /// Where the vector comes from.
        source: Source,
        /// Its length.
        dim: usize,
    },
}

impl Feature {
    /// The feature's name.
    pub fn name(&self) -> &str {
        match self {
            Feature::Categorical { name, .. }
            | Feature::MultiCategorical { name, .. }
            | Feature::Numeric { name, .. }
            | Feature::Dense { name, .. } => name,
        }
    }
}

/// The whole spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// What the file is.
    #[serde(default)]
    pub description: String,
    /// Bumped when encodings change (a model is tied to it).
    pub version: u32,
    /// The features, in model input order.
    pub features: Vec<Feature>,
    /// Whether the model's heads learn a correction to the per-campaign prior serving logged
    /// with the example (its click log-odds and log conversion rate are added to the heads'
    /// logits: see [`prior_offsets`]) instead of the whole rate. A campaign's own rate is then
    /// known from its first counts on, and the network spends its updates on what the prior
    /// cannot see (the user, the slot, the history).
    #[serde(default)]
    pub prior_offset: bool,
    /// Whether the conversion head alone learns a correction to the prior (the click head
    /// its whole rate), when `prior_offset` is off. Conversions are rare (a few hundred a day
    /// per million ads served): counts know a campaign's rate long before SGD learns it into
    /// an embedding row, while clicks are plenty and the click prior of a young pipeline is
    /// still moving.
    #[serde(default)]
    pub conversion_prior_offset: bool,
    /// Pairs of categorical or multi-categorical features whose interaction the conversion
    /// head learns on its own: each named feature gets a small embedding table of its own
    /// ([`INTERACTION_DIM`] wide, trained by the conversion loss alone), and the dot product
    /// of each pair's embeddings is added to the conversion logit. Whether a click converts
    /// depends on who the user is and what the advertiser offers; the shared layers, which
    /// the clicks train, do not carry that, and the few conversions cannot train a wide
    /// interaction of every feature with every other.
    #[serde(default)]
    pub conversion_interactions: Vec<[String; 2]>,
}

/// Width of the conversion head's interaction embeddings
/// ([`FeatureSpec::conversion_interactions`]).
pub const INTERACTION_DIM: usize = 4;

/// The raw values of one (request, candidate) pair.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureContext<'a> {
    /// User.
    pub user_id: Option<&'a str>,
    /// Country.
    pub country: Option<&'a str>,
    /// Device.
    pub device: Option<&'a str>,
    /// `site` or `app`.
    pub inventory: Option<&'a str>,
    /// Slot tag.
    pub tag_id: Option<&'a str>,
    /// Campaign.
    pub campaign_id: &'a str,
    /// Advertiser.
    pub advertiser_id: &'a str,
    /// Ad.
    pub ad_id: &'a str,
    /// Billing unit.
    pub billing: Option<Billing>,
    /// The user's interests.
    pub interests: &'a [String],
    /// The campaign's targeted interests.
    pub ad_interests: &'a [String],
    /// Bid, micros.
    pub bid_micros: u64,
    /// When.
    pub ts: EventTime,
    /// The user's engagement at `ts` (none: no history).
    pub history: Option<&'a Engagement>,
    /// The per-campaign prior's rates for the candidate at `ts` (serving's
    /// [`crate::ranker::prior::PriorRanker`]).
    pub prior: Prediction,
}

impl<'a> FeatureContext<'a> {
    /// Serving: `request`, its user's engagement `history` and one of its candidates, whose
    /// prior is `prior`, at `now`.
    pub fn for_candidate(
        request: &'a AdRequest,
        history: &'a Engagement,
        listed: &'a Listed,
        prior: Prediction,
        now: EventTime,
    ) -> Self {
        let c = &listed.campaign;
        FeatureContext {
            user_id: request.user_id.as_deref(),
            country: request.country.as_deref(),
            device: request.device.as_deref(),
            inventory: Some(if request.is_site { "site" } else { "app" }),
            tag_id: request.slots.first().and_then(|s| s.tag_id.as_deref()),
            campaign_id: &c.campaign_id,
            advertiser_id: &c.advertiser_id,
            ad_id: c.creatives.first().map_or("", |cr| cr.ad_id.as_str()),
            billing: Some(c.billing),
            interests: &request.interests,
            ad_interests: &c.targeting.interests,
            bid_micros: c.bid_micros,
            ts: now,
            history: Some(history),
            prior,
        }
    }

    /// Training: what serving logged.
    pub fn from_served(s: &'a Served) -> Self {
        FeatureContext {
            user_id: s.user_id.as_deref(),
            country: s.country.as_deref(),
            device: s.device.as_deref(),
            inventory: s.inventory.as_deref(),
            tag_id: s.tag_id.as_deref(),
            campaign_id: &s.campaign_id,
            advertiser_id: &s.advertiser_id,
            ad_id: &s.ad_id,
            billing: Some(s.billing),
            interests: &s.interests,
            ad_interests: &s.ad_interests,
            bid_micros: s.bid_micros,
            ts: s.ts,
            history: Some(&s.history),
            prior: {
                let (pctr, pcvr) = s.prior();
                Prediction { pctr, pcvr }
            },
        }
    }

    fn text(&self, source: Source) -> Option<&str> {
        match source {
            Source::UserId => self.user_id,
            Source::Country => self.country,
            Source::Device => self.device,
            Source::Inventory => self.inventory,
            Source::TagId => self.tag_id,
            Source::CampaignId => Some(self.campaign_id),
            Source::AdvertiserId => Some(self.advertiser_id),
            Source::AdId => Some(self.ad_id),
            Source::Billing => self.billing.map(Billing::as_str),
            _ => None,
        }
        .filter(|s| !s.is_empty())
    }

    fn bag(&self, source: Source) -> &[String] {
        match (source, self.history) {
            (Source::Interests, _) => self.interests,
            (Source::AdInterests, _) => self.ad_interests,
            (Source::HistoryCampaigns, Some(h)) => &h.clicked_campaigns,
            (Source::HistoryAdvertisers, Some(h)) => &h.clicked_advertisers,
            (Source::HistoryAds, Some(h)) => &h.clicked_ads,
            _ => &[],
        }
    }

    fn number(&self, source: Source) -> f64 {
        match source {
            Source::BidMicros => self.bid_micros as f64,
            Source::InterestOverlap => self
                .interests
                .iter()
                .filter(|i| self.ad_interests.contains(i))
                .count() as f64,
            Source::HistoryImpressions => self.history.map_or(0.0, |h| h.impressions_24h.into()),
            Source::HistoryClicks => self.history.map_or(0.0, |h| h.clicks_24h.into()),
            Source::HistoryClickRate => {
                let (clicks, impressions) = self.history.map_or((0.0, 0.0), |h| {
                    (f64::from(h.clicks_24h), f64::from(h.impressions_24h))
                });
                (clicks + 0.5) / (impressions + 25.0)
            }
            Source::HistoryAdvertiserClicks => {
                occurrences(self.bag(Source::HistoryAdvertisers), self.advertiser_id)
            }
            Source::HistoryCampaignClicks => {
                occurrences(self.bag(Source::HistoryCampaigns), self.campaign_id)
            }
            _ => 0.0,
        }
    }

    fn vector(&self, source: Source, out: &mut Vec<f32>) {
        if source == Source::TimeOfDay {
            let day = self.ts.millis().rem_euclid(86_400_000) as f64 / 86_400_000.0;
            let angle = day * std::f64::consts::TAU;
            out.push(angle.sin() as f32);
            out.push(angle.cos() as f32);
        }
    }
}

/// How many times `id` is in `list`.
fn occurrences(list: &[String], id: &str) -> f64 {
    list.iter().filter(|v| *v == id).count() as f64
}

/// Rows of a batch, encoded: what the model's input tensors are made of.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedBatch {
    /// Rows.
    pub len: usize,
    /// Per categorical feature: one row index per example.
    pub categorical: Vec<Vec<u32>>,
    /// Per multi-categorical feature: `max_values` row indices per example, and the pooling
    /// weight of each (1/n for the n values present, 0 for padding).
    pub bags: Vec<(Vec<u32>, Vec<f32>)>,
    /// Numeric and dense values, `dense_dim` per example.
    pub dense: Vec<f32>,
    /// Per example, the heads' offsets from its prior ([`prior_offsets`]): click, then
    /// conversion (empty unless the spec has `prior_offset` or `conversion_prior_offset`; the
    /// click offset is 0 with the latter alone).
    pub offsets: Vec<f32>,
}

/// The prior's rates as the two heads' logit offsets: the click log-odds `ln(pctr / (1 -
/// pctr))`, and for the conversion head, which learns `q = p / (1 + p)` with fake negatives,
/// `logit(q) = ln(p)`. Rates are kept inside `[1e-6, 1 - 1e-6]` (click) and `[1e-6, 1]`
/// (conversion), so a prior of 0 or 1 gives a finite offset.
pub fn prior_offsets(prior: Prediction) -> [f32; 2] {
    let ctr = prior.pctr.clamp(1e-6, 1.0 - 1e-6);
    let cvr = prior.pcvr.clamp(1e-6, 1.0);
    [(ctr / (1.0 - ctr)).ln() as f32, cvr.ln() as f32]
}

fn hash_bucket(feature: &str, value: &str, buckets: u32) -> u32 {
    if buckets <= 1 {
        return 0;
    }
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(value.as_bytes(), crate::routing::route(feature));
    1 + (h % u64::from(buckets - 1)) as u32
}

impl FeatureSpec {
    /// Parses and checks a spec; errors name the feature and field.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let spec: FeatureSpec =
            serde_json::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.check()?;
        Ok(spec)
    }

    /// The shipped spec.
    pub fn default_spec() -> Self {
        // Checked by a unit test; a broken file cannot ship.
        Self::parse(DEFAULT_SPEC).unwrap_or_else(|e| panic!("schemas/features.json: {e}"))
    }

    fn check(&self) -> Result<(), SpecError> {
        if self.features.is_empty() {
            return Err(SpecError::Parse("`features` is empty".into()));
        }
        for (index, pair) in self.conversion_interactions.iter().enumerate() {
            if pair[0] == pair[1] {
                return Err(SpecError::Interaction {
                    index,
                    message: format!("pairs `{}` with itself", pair[0]),
                });
            }
            for name in pair {
                if !self.tables().iter().any(|(t, _)| t == name) {
                    return Err(SpecError::Interaction {
                        index,
                        message: format!(
                            "`{name}` is not a categorical or multi_categorical feature"
                        ),
                    });
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (index, f) in self.features.iter().enumerate() {
            let err = |field: &'static str, message: String| SpecError::Field {
                index,
                name: f.name().to_string(),
                field,
                message,
            };
            if f.name().is_empty() {
                return Err(err("name", "must not be empty".into()));
            }
            if !seen.insert(f.name()) {
                return Err(err("name", "appears twice".into()));
            }
            match f {
                Feature::Categorical {
                    source, buckets, ..
                } => {
                    if !source.is_text() {
                        return Err(err("source", format!("{source:?} is not a single value")));
                    }
                    if *buckets < 2 {
                        return Err(err("buckets", format!("{buckets} < 2")));
                    }
                }
                Feature::MultiCategorical {
                    source,
                    buckets,
                    max_values,
                    ..
                } => {
                    if !source.is_list() {
                        return Err(err("source", format!("{source:?} is not a list")));
                    }
                    if *buckets < 2 {
                        return Err(err("buckets", format!("{buckets} < 2")));
                    }
                    if *max_values == 0 || *max_values > 256 {
                        return Err(err("max_values", format!("{max_values} not in 1..=256")));
                    }
                }
                Feature::Numeric {
                    source,
                    clip,
                    mean,
                    std,
                    ..
                } => {
                    if !source.is_number() {
                        return Err(err("source", format!("{source:?} is not a number")));
                    }
                    if clip[0].partial_cmp(&clip[1]) != Some(std::cmp::Ordering::Less) {
                        return Err(err("clip", format!("{clip:?}: lo must be below hi")));
                    }
                    if !mean.is_finite() {
                        return Err(err("mean", "must be finite".into()));
                    }
                    if !(*std > 0.0 && std.is_finite()) {
                        return Err(err("std", format!("{std} must be > 0")));
                    }
                }
                Feature::Dense { source, dim, .. } => {
                    if *source != Source::TimeOfDay {
                        return Err(err("source", format!("{source:?} is not a vector")));
                    }
                    if *dim != 2 {
                        return Err(err("dim", format!("time_of_day has 2 values, not {dim}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// The features named in `conversion_interactions`, each once, as their places in
    /// [`FeatureSpec::tables`], in that order; and each pair as two indices into that list.
    pub fn interaction_tables(&self) -> (Vec<usize>, Vec<[usize; 2]>) {
        let tables = self.tables();
        let place = |name: &str| tables.iter().position(|(t, _)| t == name);
        let mut named: Vec<usize> = self
            .conversion_interactions
            .iter()
            .flatten()
            .filter_map(|n| place(n))
            .collect();
        named.sort_unstable();
        named.dedup();
        let pairs = self
            .conversion_interactions
            .iter()
            .filter_map(|[a, b]| {
                let at = |n: &str| place(n).and_then(|p| named.iter().position(|q| *q == p));
                Some([at(a)?, at(b)?])
            })
            .collect();
        (named, pairs)
    }

    /// Embedding tables: (feature name, rows), categorical then multi-categorical, in order.
    pub fn tables(&self) -> Vec<(String, usize)> {
        let cats = self.features.iter().filter_map(|f| match f {
            Feature::Categorical { name, buckets, .. } => Some((name.clone(), *buckets as usize)),
            _ => None,
        });
        let bags = self.features.iter().filter_map(|f| match f {
            Feature::MultiCategorical { name, buckets, .. } => {
                Some((name.clone(), *buckets as usize))
            }
            _ => None,
        });
        cats.chain(bags).collect()
    }

    /// Number of categorical features.
    pub fn categorical_count(&self) -> usize {
        self.features
            .iter()
            .filter(|f| matches!(f, Feature::Categorical { .. }))
            .count()
    }

    /// `max_values` of each multi-categorical feature, in order.
    pub fn bag_widths(&self) -> Vec<usize> {
        self.features
            .iter()
            .filter_map(|f| match f {
                Feature::MultiCategorical { max_values, .. } => Some(*max_values),
                _ => None,
            })
            .collect()
    }

    /// Numeric and dense values per example.
    pub fn dense_dim(&self) -> usize {
        self.features
            .iter()
            .map(|f| match f {
                Feature::Numeric { .. } => 1,
                Feature::Dense { dim, .. } => *dim,
                _ => 0,
            })
            .sum()
    }

    /// An empty batch shaped for this spec.
    pub fn batch(&self) -> EncodedBatch {
        EncodedBatch {
            len: 0,
            categorical: vec![Vec::new(); self.categorical_count()],
            bags: vec![(Vec::new(), Vec::new()); self.bag_widths().len()],
            dense: Vec::new(),
            offsets: Vec::new(),
        }
    }

    /// Appends one example to `batch`.
    pub fn encode(&self, ctx: &FeatureContext<'_>, batch: &mut EncodedBatch) {
        let (mut c, mut b) = (0, 0);
        for f in &self.features {
            match f {
                Feature::Categorical {
                    name,
                    source,
                    buckets,
                } => {
                    let row = ctx
                        .text(*source)
                        .map_or(0, |v| hash_bucket(name, v, *buckets));
                    if let Some(col) = batch.categorical.get_mut(c) {
                        col.push(row);
                    }
                    c += 1;
                }
                Feature::MultiCategorical {
                    name,
                    source,
                    buckets,
                    max_values,
                } => {
                    let values: Vec<&String> = ctx
                        .bag(*source)
                        .iter()
                        .filter(|v| !v.is_empty())
                        .take(*max_values)
                        .collect();
                    if let Some((ids, weights)) = batch.bags.get_mut(b) {
                        if values.is_empty() {
                            // An empty bag is the "missing" row.
                            ids.push(0);
                            weights.push(1.0);
                            ids.extend(std::iter::repeat_n(0, max_values - 1));
                            weights.extend(std::iter::repeat_n(0.0, max_values - 1));
                        } else {
                            let w = 1.0 / values.len() as f32;
                            for v in &values {
                                ids.push(hash_bucket(name, v, *buckets));
                                weights.push(w);
                            }
                            let pad = max_values - values.len();
                            ids.extend(std::iter::repeat_n(0, pad));
                            weights.extend(std::iter::repeat_n(0.0, pad));
                        }
                    }
                    b += 1;
                }
                Feature::Numeric {
                    source,
                    log1p,
                    clip,
                    mean,
                    std,
                    ..
                } => {
                    let mut x = ctx.number(*source);
                    if *log1p {
                        x = x.max(0.0).ln_1p();
                    }
                    let x = x.clamp(clip[0], clip[1]);
                    batch.dense.push(((x - mean) / std) as f32);
                }
                Feature::Dense { source, .. } => ctx.vector(*source, &mut batch.dense),
            }
        }
        if self.prior_offset {
            batch.offsets.extend(prior_offsets(ctx.prior));
        } else if self.conversion_prior_offset {
            batch.offsets.extend([0.0, prior_offsets(ctx.prior)[1]]);
        }
        batch.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Campaign;

    fn campaign() -> Listed {
        let json = br#"{"campaign_id":"c1","advertiser_id":"a1","status":"active",
            "daily_budget_micros":1000000,"timezone":"UTC","billing":"cpc","bid_micros":500000,
            "objective":"clicks","targeting":{"interests":["golf","tennis"]},
            "creatives":[{"ad_id":"ad1"}]}"#;
        let campaign = Campaign::parse(json).expect("campaign");
        Listed {
            history: crate::records::History::first(&campaign, crate::time::EventTime(0)),
            campaign,
            tz: chrono_tz::UTC,
        }
    }

    fn request() -> AdRequest {
        crate::request::parse_request(
            br#"{"id":"r1","imp":[{"id":"1","tagid":"top"}],"user":{"id":"u1"},
                "device":{"geo":{"country":"DE"},"devicetype":4},"site":{}}"#,
        )
        .expect("request")
    }

    #[test]
    fn shipped_spec_parses() {
        let spec = FeatureSpec::default_spec();
        assert_eq!(spec.categorical_count(), 9);
        assert_eq!(spec.bag_widths(), vec![8, 8, 16, 16]);
        assert_eq!(spec.dense_dim(), 4);
    }

    #[test]
    fn serving_and_training_encode_the_same_row() {
        let mut spec = FeatureSpec::default_spec();
        spec.prior_offset = true;
        let mut req = request();
        req.interests = vec!["golf".into(), "chess".into()];
        let listed = campaign();
        let now = EventTime(1_700_000_123_456);
        let history = Engagement {
            clicked_campaigns: vec!["c1".into(), "c9".into()],
            clicked_advertisers: vec!["a1".into(), "a1".into()],
            clicked_ads: vec!["ad1".into(), "ad9".into()],
            impressions_24h: 40,
            clicks_24h: 2,
        };
        let prior = Prediction {
            pctr: 0.031,
            pcvr: 0.12,
        };
        let mut at_serving = spec.batch();
        spec.encode(
            &FeatureContext::for_candidate(&req, &history, &listed, prior, now),
            &mut at_serving,
        );
        let mut served = Served::for_test(&req, &history, &listed, now);
        (served.prior_pctr, served.prior_pcvr) = (Some(prior.pctr), Some(prior.pcvr));
        let round_trip: Served =
            serde_json::from_slice(&serde_json::to_vec(&served).expect("json")).expect("parse");
        let mut at_training = spec.batch();
        spec.encode(&FeatureContext::from_served(&round_trip), &mut at_training);
        assert_eq!(at_serving, at_training);
        assert_eq!(at_serving.len, 1);
        // The prior's click log-odds and log conversion rate.
        assert!((at_serving.offsets[0] - (0.031f32 / 0.969).ln()).abs() < 1e-5);
        assert!((at_serving.offsets[1] - 0.12f32.ln()).abs() < 1e-5);
        // One overlapping interest: (1 - 0.5) / 1.
        assert!((at_serving.dense[1] - 0.5).abs() < 1e-6);
        // A click rate of (2 + 0.5) / (40 + 25), then two of the user's recent clicks were on
        // this advertiser: (ln 3 - 0.2) / 0.5.
        let rate = (2.5f32 / 65.0 - 0.03) / 0.05;
        assert!(
            (at_serving.dense[2] - rate).abs() < 1e-5,
            "{:?}",
            at_serving.dense
        );
        assert!((at_serving.dense[3] - ((3f32).ln() - 0.2) / 0.5).abs() < 1e-5);
        // The clicked campaigns pool two rows.
        assert_eq!(at_serving.bags[2].1[..3], [0.5, 0.5, 0.0]);
        // Without history, the same candidate reads the missing rows.
        let mut none = spec.batch();
        spec.encode(
            &FeatureContext::for_candidate(&req, &Engagement::default(), &listed, prior, now),
            &mut none,
        );
        assert_eq!(none.bags[2].0[0], 0);
        assert_ne!(none, at_serving);
        // With `conversion_prior_offset` alone, the click offset is 0.
        spec.prior_offset = false;
        spec.conversion_prior_offset = true;
        let mut batch = spec.batch();
        spec.encode(
            &FeatureContext::for_candidate(&req, &history, &listed, prior, now),
            &mut batch,
        );
        assert_eq!(batch.offsets, [0.0, at_serving.offsets[1]]);
        spec.conversion_prior_offset = false;
        // A spec without `prior_offset` encodes no offsets.
        spec.prior_offset = false;
        let mut plain = spec.batch();
        spec.encode(
            &FeatureContext::for_candidate(&req, &history, &listed, prior, now),
            &mut plain,
        );
        assert!(plain.offsets.is_empty());
        assert_eq!(plain.dense, at_serving.dense);
    }

    #[test]
    fn missing_values_take_row_zero_and_bags_pool() {
        let spec = FeatureSpec::default_spec();
        let ctx = FeatureContext {
            campaign_id: "c",
            advertiser_id: "a",
            ad_id: "x",
            interests: &[],
            ..FeatureContext::default()
        };
        let mut batch = spec.batch();
        spec.encode(&ctx, &mut batch);
        assert_eq!(batch.categorical[0], vec![0]); // no user
        assert_ne!(batch.categorical[5], vec![0]); // campaign
        let (ids, w) = &batch.bags[0];
        assert_eq!(ids.len(), 8);
        assert_eq!(w.iter().sum::<f32>(), 1.0);
    }

    #[test]
    fn bad_specs_name_the_feature_and_field() {
        let bad = r#"{"version":1,"features":[
            {"name":"u","type":"categorical","source":"user_id","buckets":100},
            {"name":"b","type":"numeric","source":"bid_micros","clip":[5,1],"mean":0,"std":1}]}"#;
        let e = FeatureSpec::parse(bad).expect_err("bad clip");
        assert_eq!(
            e.to_string(),
            "feature spec: features[1] (b): field `clip`: [5.0, 1.0]: lo must be below hi"
        );
        let bad = r#"{"version":1,"features":[{"name":"u","type":"categorical","source":"interests","buckets":9}]}"#;
        assert!(FeatureSpec::parse(bad)
            .expect_err("list as single")
            .to_string()
            .contains("field `source`"));
        let bad = r#"{"version":1,"features":[{"name":"u","type":"wide","source":"user_id"}]}"#;
        assert!(matches!(FeatureSpec::parse(bad), Err(SpecError::Parse(_))));
    }

    #[test]
    fn conversion_interactions_pair_two_embedded_features() {
        let with = |pairs: &str| {
            FeatureSpec::parse(&format!(
                r#"{{"version":1,"features":[
                {{"name":"u","type":"categorical","source":"user_id","buckets":100}},
                {{"name":"a","type":"categorical","source":"advertiser_id","buckets":10}},
                {{"name":"i","type":"multi_categorical","source":"interests","buckets":9,"max_values":4}},
                {{"name":"b","type":"numeric","source":"bid_micros","clip":[0,1],"mean":0,"std":1}}],
                "conversion_interactions":{pairs}}}"#
            ))
        };
        let spec = with(r#"[["i","a"],["u","a"]]"#).expect("valid");
        // Tables: u, a, i; the named ones each once, in table order, and the pairs by them.
        assert_eq!(
            spec.interaction_tables(),
            (vec![0, 1, 2], vec![[2, 1], [0, 1]])
        );
        assert_eq!(
            with("[]").expect("none").interaction_tables(),
            (vec![], vec![])
        );
        for (pairs, message) in [
            (
                r#"[["i","a"],["a","b"]]"#,
                "conversion_interactions[1]: `b` is not a categorical or multi_categorical feature",
            ),
            (
                r#"[["x","a"]]"#,
                "conversion_interactions[0]: `x` is not a categorical or multi_categorical feature",
            ),
            (
                r#"[["a","a"]]"#,
                "conversion_interactions[0]: pairs `a` with itself",
            ),
        ] {
            let e = with(pairs).expect_err(pairs);
            assert_eq!(e.to_string(), format!("feature spec: {message}"), "{pairs}");
        }
        assert!(matches!(with(r#"[["a"]]"#), Err(SpecError::Parse(_))));
    }
}
