//! [`Totals`]: the base counters of a report row, and differential dataflow's difference type
//! for it (rows are sums of facts, so they add, subtract and vanish at zero).

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Semigroup};
use serde::{Deserialize, Serialize};

/// Additive counters of one row (or one fact). Ratios (CTR, CPC...) are derived from these when a
/// row is written, never summed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Totals {
    /// Wins served (slots filled).
    pub won: i64,
    /// Verified impressions, distinct.
    pub impressions: i64,
    /// Verified clicks, distinct.
    pub clicks: i64,
    /// Conversions attributed to a touch of the group, distinct.
    pub conversions: i64,
    /// Their value, micros.
    pub conversion_value_micros: i64,
    /// Spend charged by the ledger, micros.
    pub spend_micros: i64,
    /// Delivered past the budget (free), micros.
    pub overdelivery_micros: i64,
    /// Sum over wins of the predicted CTR, in billionths.
    pub pctr_nanos: i64,
}

impl Totals {
    /// Each counter of `self` plus `other`'s.
    pub fn add(&mut self, other: &Totals) {
        self.won = self.won.wrapping_add(other.won);
        self.impressions = self.impressions.wrapping_add(other.impressions);
        self.clicks = self.clicks.wrapping_add(other.clicks);
        self.conversions = self.conversions.wrapping_add(other.conversions);
        self.conversion_value_micros = self
            .conversion_value_micros
            .wrapping_add(other.conversion_value_micros);
        self.spend_micros = self.spend_micros.wrapping_add(other.spend_micros);
        self.overdelivery_micros = self
            .overdelivery_micros
            .wrapping_add(other.overdelivery_micros);
        self.pctr_nanos = self.pctr_nanos.wrapping_add(other.pctr_nanos);
    }

    /// Every counter negated.
    pub fn negated(&self) -> Totals {
        let mut t = *self;
        t.negate();
        t
    }

    /// Predicted CTR as stored: billionths, rounded.
    pub fn pctr_to_nanos(pctr: f64) -> i64 {
        if pctr.is_finite() {
            (pctr.clamp(0.0, 1.0) * 1e9).round() as i64
        } else {
            0
        }
    }
}

impl IsZero for Totals {
    fn is_zero(&self) -> bool {
        *self == Totals::default()
    }
}

impl Semigroup for Totals {
    fn plus_equals(&mut self, rhs: &Self) {
        self.add(rhs);
    }
}

impl Monoid for Totals {
    fn zero() -> Self {
        Totals::default()
    }
}

impl Abelian for Totals {
    fn negate(&mut self) {
        self.won = self.won.wrapping_neg();
        self.impressions = self.impressions.wrapping_neg();
        self.clicks = self.clicks.wrapping_neg();
        self.conversions = self.conversions.wrapping_neg();
        self.conversion_value_micros = self.conversion_value_micros.wrapping_neg();
        self.spend_micros = self.spend_micros.wrapping_neg();
        self.overdelivery_micros = self.overdelivery_micros.wrapping_neg();
        self.pctr_nanos = self.pctr_nanos.wrapping_neg();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_negates_and_vanishes() {
        let a = Totals {
            won: 2,
            spend_micros: 1_500,
            pctr_nanos: Totals::pctr_to_nanos(0.0125),
            ..Totals::default()
        };
        let mut sum = a;
        sum.plus_equals(&a);
        assert_eq!(sum.won, 4);
        assert_eq!(sum.pctr_nanos, 25_000_000);
        sum.plus_equals(&a.negated());
        sum.plus_equals(&a.negated());
        assert!(sum.is_zero());
        assert_eq!(Totals::pctr_to_nanos(f64::NAN), 0);
        assert_eq!(Totals::pctr_to_nanos(2.0), 1_000_000_000);
    }
}
