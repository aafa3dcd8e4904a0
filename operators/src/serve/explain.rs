//! Explaining a no-bid: the response's `nbr` code, and in debug mode the reason each campaign
//! did or did not bid.
//!
//! `nbr` uses OpenRTB 2.6's codes where one fits (1 technical error, 15 insufficient auction
//! time) and exchange-specific codes from 500 for the rest ([`Nbr`]); the code of a request no
//! campaign bid on is that of the furthest stage any campaign reached.

use super::retrieval::NoBid;

/// A no-bid reason code (`BidResponse.nbr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nbr(pub u16);

impl Nbr {
    /// Something failed on adstream's side (every queue full).
    pub const TECHNICAL_ERROR: Nbr = Nbr(1);
    /// The request's `tmax` passed before it was answered.
    pub const INSUFFICIENT_TIME: Nbr = Nbr(15);
    /// No campaign targets this request (or there are no campaigns).
    pub const NO_MATCHING_CAMPAIGN: Nbr = Nbr(500);
    /// Campaigns matched, but no creative fits the slots' formats.
    pub const NO_FITTING_CREATIVE: Nbr = Nbr(501);
    /// Every matching campaign is on the request's block lists (`bcat`, `badv`, `bapp`).
    pub const BLOCKED: Nbr = Nbr(502);
    /// adstream's seat is blocked (`bseat`) or not allowed (`wseat`).
    pub const SEAT_BLOCKED: Nbr = Nbr(503);
    /// No slot's floor currency, or none of the request's `cur`, has a rate.
    pub const UNSUPPORTED_CURRENCY: Nbr = Nbr(504);
    /// The matching campaigns are out of budget or held back by pacing.
    pub const BUDGET_OR_PACING: Nbr = Nbr(505);
    /// The bids are below the floors.
    pub const BELOW_FLOOR: Nbr = Nbr(506);

    /// The code of a request whose furthest-reaching campaign stopped at `why` (`None`: no
    /// campaign was reached at all).
    pub fn of(why: Option<NoBid>) -> Nbr {
        match why {
            None
            | Some(
                NoBid::Paused
                | NoBid::OutOfFlight
                | NoBid::NoCreative
                | NoBid::Country
                | NoBid::Region
                | NoBid::Metro
                | NoBid::Device
                | NoBid::Interests,
            ) => Nbr::NO_MATCHING_CAMPAIGN,
            Some(NoBid::Blocked(_)) => Nbr::BLOCKED,
            Some(NoBid::Format) => Nbr::NO_FITTING_CREATIVE,
            Some(NoBid::Pacing | NoBid::Budget | NoBid::BudgetGate) => Nbr::BUDGET_OR_PACING,
            Some(NoBid::Floor | NoBid::Outbid | NoBid::AdvertiserLimit | NoBid::CandidateLimit) => {
                Nbr::BELOW_FLOOR
            }
        }
    }
}

/// One campaign's part in a debugged request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// The campaign.
    pub campaign_id: String,
    /// `won`, or why it did not bid ([`NoBid::as_str`]).
    pub outcome: &'static str,
}

/// The most campaigns a debug answer lists.
pub const MAX_EXPLAINED: usize = 1_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::brand_safety::Blocked;

    #[test]
    fn the_furthest_stage_names_the_no_bid() {
        assert_eq!(Nbr::of(None), Nbr::NO_MATCHING_CAMPAIGN);
        assert_eq!(Nbr::of(Some(NoBid::Device)), Nbr::NO_MATCHING_CAMPAIGN);
        assert_eq!(
            Nbr::of(Some(NoBid::Blocked(Blocked::Category))),
            Nbr::BLOCKED
        );
        assert_eq!(Nbr::of(Some(NoBid::Format)), Nbr::NO_FITTING_CREATIVE);
        assert_eq!(Nbr::of(Some(NoBid::Budget)), Nbr::BUDGET_OR_PACING);
        assert_eq!(Nbr::of(Some(NoBid::Floor)), Nbr::BELOW_FLOOR);
        // Stages are ordered as they run: a later one is further.
        assert!(NoBid::Blocked(Blocked::Category) > NoBid::Format);
        assert!(NoBid::Format > NoBid::Interests);
        assert!(NoBid::Floor > NoBid::Budget);
    }
}
