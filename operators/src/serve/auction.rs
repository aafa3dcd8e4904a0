//! The auction: generalized second price with reserves, one winner per slot, no advertiser twice.
//!
//! Candidates are compared by expected value per thousand impressions (eCPM): the bid itself for
//! CPM, `bid x pCTR x 1000` for CPC and `bid x pCTR x pCVR x 1000` for CPA. Slots are filled in
//! request order by the best remaining candidate whose advertiser has not won yet and whose eCPM
//! clears the slot's reserve (the larger of the request's floor and the pipeline's reserve). The
//! winner pays the larger of the reserve and the next eligible candidate's eCPM (the second
//! price), never more than its own eCPM; that price is turned back into the winner's billing
//! unit (per impression, click or conversion), never above its bid.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::events::Billing;
use crate::pacing::reservation::expected_cost;

use crate::request::Slot;

/// Expected value per thousand impressions, micros, of a `billing` bid of `bid_micros` at click
/// rate `pctr` and conversion rate `pcvr`: the bid for CPM, `bid x pCTR x 1000` for CPC,
/// `bid x pCTR x pCVR x 1000` for CPA (0 when not a positive finite number).
pub fn expected_ecpm(billing: Billing, bid_micros: u64, pctr: f64, pcvr: f64) -> u64 {
    let bid = bid_micros as f64;
    let ecpm = match billing {
        Billing::Cpm => bid,
        Billing::Cpc => bid * pctr * 1000.0,
        Billing::Cpa => bid * pctr * pcvr * 1000.0,
    };
    if ecpm.is_finite() && ecpm > 0.0 {
        ecpm.min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// A scored ad that may bid. Its ids borrow from the catalog while a request is answered (a
/// request scores hundreds of candidates and keeps a few); [`Candidate::into_owned`] keeps one.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    /// Campaign.
    pub campaign_id: Cow<'a, str>,
    /// Its advertiser.
    pub advertiser_id: Cow<'a, str>,
    /// The creative.
    pub ad_id: Cow<'a, str>,
    /// Billing unit.
    pub billing: Billing,
    /// Max bid per billing unit, micros (per 1000 impressions for CPM).
    pub bid_micros: u64,
    /// Predicted click probability.
    pub pctr: f64,
    /// Predicted conversion probability after a click.
    pub pcvr: f64,
    /// The slots (by index: bit `i` is `slots[i]`) it has a creative for.
    pub fits: u16,
}

/// A candidate that fits every slot.
pub const FITS_ALL: u16 = u16::MAX;

impl Candidate<'_> {
    /// The same candidate, owning its ids.
    pub fn into_owned(self) -> Candidate<'static> {
        Candidate {
            campaign_id: Cow::Owned(self.campaign_id.into_owned()),
            advertiser_id: Cow::Owned(self.advertiser_id.into_owned()),
            ad_id: Cow::Owned(self.ad_id.into_owned()),
            billing: self.billing,
            bid_micros: self.bid_micros,
            pctr: self.pctr,
            pcvr: self.pcvr,
            fits: self.fits,
        }
    }

    /// Expected value per thousand impressions, micros.
    pub fn ecpm_micros(&self) -> u64 {
        expected_ecpm(self.billing, self.bid_micros, self.pctr, self.pcvr)
    }

    /// The most one billing event of a win can cost: the bid per unit.
    pub fn max_charge_micros(&self) -> u64 {
        match self.billing {
            Billing::Cpm => self.bid_micros / 1000,
            Billing::Cpc | Billing::Cpa => self.bid_micros,
        }
    }

    /// What the billing event costs when the win is priced at `price_ecpm` micros, never above
    /// the bid per unit.
    pub fn charge_for(&self, price_ecpm: u64) -> u64 {
        let price = price_ecpm as f64;
        let (charge, cap) = match self.billing {
            Billing::Cpm => (price / 1000.0, self.bid_micros as f64 / 1000.0),
            Billing::Cpc => (price / (self.pctr * 1000.0), self.bid_micros as f64),
            Billing::Cpa => (
                price / (self.pctr * self.pcvr * 1000.0),
                self.bid_micros as f64,
            ),
        };
        let charge = if charge.is_finite() {
            charge.min(cap)
        } else {
            cap
        };
        charge.max(0.0).floor() as u64
    }
}

/// A won slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Win<'a> {
    /// The slot.
    pub imp_id: String,
    /// Its index in the request.
    pub slot: usize,
    /// Who won.
    pub candidate: Candidate<'a>,
    /// The winner's eCPM, micros.
    pub ecpm_micros: u64,
    /// The clearing price as eCPM, micros.
    pub price_ecpm_micros: u64,
    /// What the winner's billing event will be charged, micros.
    pub charge_micros: u64,
}

impl Win<'_> {
    /// The same win, owning its candidate's ids (kept past the request's catalog borrow).
    pub fn into_owned(self) -> Win<'static> {
        Win {
            imp_id: self.imp_id,
            slot: self.slot,
            candidate: self.candidate.into_owned(),
            ecpm_micros: self.ecpm_micros,
            price_ecpm_micros: self.price_ecpm_micros,
            charge_micros: self.charge_micros,
        }
    }
}

/// The auction under the budget gate: a win whose expected cost
/// ([`crate::pacing::reservation::expected_cost`]) exceeds its campaign's `headroom` (what may
/// still be reserved for it) is not taken; the campaign leaves and the auction runs again
/// without it, so the slot goes to the next bidder at its own price. Returns the wins and the
/// campaigns the gate sent away.
pub fn run_gated_auction<'a>(
    slots: &[Slot],
    mut candidates: Vec<Candidate<'a>>,
    headroom: impl Fn(&str) -> u64,
    reserve_ecpm_micros: u64,
) -> (Vec<Win<'a>>, Vec<String>) {
    let mut gated = Vec::new();
    loop {
        let wins = run_auction(slots, &candidates, reserve_ecpm_micros);
        let over = wins.iter().find(|w| {
            let c = &w.candidate;
            headroom(&c.campaign_id) < expected_cost(c.billing, w.charge_micros, c.pctr, c.pcvr)
        });
        match over {
            None => return (wins, gated),
            Some(w) => {
                let out = w.candidate.campaign_id.to_string();
                candidates.retain(|c| c.campaign_id != out);
                gated.push(out);
            }
        }
    }
}

/// Runs the auction over `candidates` for `slots` with a pipeline-wide `reserve_ecpm_micros`.
pub fn run_auction<'a>(
    slots: &[Slot],
    candidates: &[Candidate<'a>],
    reserve_ecpm_micros: u64,
) -> Vec<Win<'a>> {
    let mut ranked: Vec<(u64, &Candidate<'a>)> =
        candidates.iter().map(|c| (c.ecpm_micros(), c)).collect();
    // Highest eCPM first; ties broken by campaign id so the outcome is deterministic.
    ranked.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.campaign_id.cmp(&b.1.campaign_id))
    });
    let mut advertisers_won: HashSet<&str> = HashSet::new();
    let mut wins = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        let reserve = slot.floor_ecpm_micros.max(reserve_ecpm_micros);
        let bit = 1u16.checked_shl(index as u32).unwrap_or(0);
        let mut eligible = ranked.iter().filter(|(ecpm, c)| {
            *ecpm >= reserve
                && *ecpm > 0
                && c.fits & bit != 0
                && !advertisers_won.contains(&*c.advertiser_id)
        });
        let Some(&(ecpm, winner)) = eligible.next() else {
            continue;
        };
        let runner_up = eligible
            .find(|(_, c)| c.advertiser_id != winner.advertiser_id)
            .map_or(0, |(e, _)| *e);
        let price = runner_up.max(reserve).min(ecpm);
        advertisers_won.insert(&*winner.advertiser_id);
        wins.push(Win {
            imp_id: slot.imp_id.clone(),
            slot: index,
            candidate: winner.clone(),
            ecpm_micros: ecpm,
            price_ecpm_micros: price,
            charge_micros: winner.charge_for(price),
        });
    }
    wins
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(id: &str, adv: &str, billing: Billing, bid: u64, pctr: f64) -> Candidate<'static> {
        Candidate {
            campaign_id: id.to_string().into(),
            advertiser_id: adv.to_string().into(),
            ad_id: format!("{id}-ad").into(),
            billing,
            bid_micros: bid,
            pctr,
            pcvr: 0.1,
            fits: FITS_ALL,
        }
    }

    fn slot(id: &str, floor: u64) -> Slot {
        Slot {
            imp_id: id.into(),
            tag_id: None,
            floor_ecpm_micros: floor,
            floor_currency: "USD".into(),
            formats: crate::serve::formats::ImpFormats::anything(),
        }
    }

    #[test]
    fn the_budget_gate_passes_the_slot_to_the_next_bidder() {
        let cands = vec![
            cand("a", "A", Billing::Cpm, 3_000_000, 0.0),
            cand("b", "B", Billing::Cpm, 2_000_000, 0.0),
            cand("c", "C", Billing::Cpm, 1_000_000, 0.0),
        ];
        // a would pay 2_000 per impression but has 1_999 of headroom: b wins at c's price.
        let headroom = |id: &str| if id == "a" { 1_999 } else { u64::MAX };
        let (wins, gated) = run_gated_auction(&[slot("1", 0)], cands.clone(), headroom, 0);
        assert_eq!(gated, vec!["a".to_string()]);
        assert_eq!(wins.len(), 1);
        assert_eq!(wins[0].candidate.campaign_id, "b");
        assert_eq!(wins[0].charge_micros, 1_000);
        // With room for exactly its charge, a wins.
        let (wins, _) = run_gated_auction(&[slot("1", 0)], cands, |_| 2_000, 0);
        assert_eq!(wins[0].candidate.campaign_id, "a");
    }

    #[test]
    fn second_price_arithmetic() {
        // eCPMs: a = 3_000_000 (CPM), b = 20_000 * 0.1 * 1000 = 2_000_000 (CPC), c = 1_000_000.
        let cands = vec![
            cand("a", "A", Billing::Cpm, 3_000_000, 0.0),
            cand("b", "B", Billing::Cpc, 20_000, 0.1),
            cand("c", "C", Billing::Cpm, 1_000_000, 0.0),
        ];
        let wins = run_auction(&[slot("1", 0), slot("2", 0)], &cands, 100_000);
        assert_eq!(wins.len(), 2);
        assert_eq!(wins[0].candidate.campaign_id, "a");
        assert_eq!(wins[0].price_ecpm_micros, 2_000_000);
        assert_eq!(wins[0].charge_micros, 2_000); // per impression
        assert_eq!(wins[1].candidate.campaign_id, "b");
        assert_eq!(wins[1].price_ecpm_micros, 1_000_000);
        assert_eq!(wins[1].charge_micros, 10_000); // per click: 1_000_000 / (0.1 * 1000)
    }

    #[test]
    fn reserve_and_floor_bind() {
        let cands = vec![cand("a", "A", Billing::Cpm, 3_000_000, 0.0)];
        let wins = run_auction(&[slot("1", 2_500_000)], &cands, 100_000);
        assert_eq!(wins[0].price_ecpm_micros, 2_500_000);
        assert!(run_auction(&[slot("1", 3_000_001)], &cands, 0).is_empty());
    }

    #[test]
    fn an_advertiser_wins_once() {
        let cands = vec![
            cand("a1", "A", Billing::Cpm, 3_000_000, 0.0),
            cand("a2", "A", Billing::Cpm, 2_900_000, 0.0),
        ];
        let wins = run_auction(&[slot("1", 0), slot("2", 0)], &cands, 0);
        assert_eq!(wins.len(), 1);
        assert_eq!(wins[0].price_ecpm_micros, 0);
    }

    #[test]
    fn a_candidate_bids_only_on_the_slots_it_fits() {
        let mut video_only = cand("v", "V", Billing::Cpm, 5_000_000, 0.0);
        video_only.fits = 0b10;
        let cands = vec![video_only, cand("b", "B", Billing::Cpm, 1_000_000, 0.0)];
        let wins = run_auction(&[slot("banner", 0), slot("video", 0)], &cands, 0);
        let won: Vec<(&str, &str, usize)> = wins
            .iter()
            .map(|w| (w.imp_id.as_str(), &*w.candidate.campaign_id, w.slot))
            .collect();
        assert_eq!(won, vec![("banner", "b", 0), ("video", "v", 1)]);
        // The runner-up of a slot is a candidate that fits it: v pays the reserve, not b's bid.
        assert_eq!(wins[1].price_ecpm_micros, 0);
    }

    proptest! {
        #[test]
        fn invariants_hold(
            bids in proptest::collection::vec((0u8..6, 0u8..3, 1u64..10_000_000, 1u32..1000), 0..30),
            floors in proptest::collection::vec(0u64..5_000_000, 1..5),
            reserve in 0u64..2_000_000,
        ) {
            let cands: Vec<Candidate> = bids.iter().enumerate().map(|(i, (adv, b, bid, ctr))| Candidate {
                campaign_id: format!("c{i}").into(),
                advertiser_id: format!("adv{adv}").into(),
                ad_id: format!("ad{i}").into(),
                billing: [Billing::Cpm, Billing::Cpc, Billing::Cpa][*b as usize],
                bid_micros: *bid,
                pctr: *ctr as f64 / 10_000.0,
                pcvr: 0.2,
                fits: FITS_ALL,
            }).collect();
            let slots: Vec<Slot> = floors.iter().enumerate().map(|(i, f)| slot(&format!("s{i}"), *f)).collect();
            let wins = run_auction(&slots, &cands, reserve);
            let mut advs = HashSet::new();
            let mut imps = HashSet::new();
            for w in &wins {
                let s = slots.iter().find(|s| s.imp_id == w.imp_id).unwrap();
                let r = s.floor_ecpm_micros.max(reserve);
                prop_assert!(advs.insert(w.candidate.advertiser_id.clone()), "advertiser twice");
                prop_assert!(imps.insert(w.imp_id.clone()), "slot twice");
                prop_assert!(w.price_ecpm_micros <= w.ecpm_micros, "price above the winner's bid");
                prop_assert!(w.price_ecpm_micros >= r, "price below the reserve");
                let per_unit_bid = match w.candidate.billing { Billing::Cpm => w.candidate.bid_micros / 1000, _ => w.candidate.bid_micros };
                prop_assert!(w.charge_micros <= per_unit_bid.max(w.candidate.bid_micros / 1000), "charge above the bid");
            }
        }
    }
}
