//! How long conversions take after their win, learned from the conversions charged: the share of
//! a CPA win's conversions still to come at a given age, which pacing counts as committed.

use serde::{Deserialize, Serialize};

/// Lower edge of the first bucket, ms (one minute).
const FIRST_EDGE_MS: f64 = 60_000.0;
/// Buckets per doubling of the delay.
const PER_DOUBLING: f64 = 2.0;
/// Buckets: from one minute to about 68 days.
const BUCKETS: usize = 32;
/// Conversions seen before the learned curve replaces the configured exponential one.
pub const MIN_OBSERVED: f64 = 30.0;

/// Observed conversion delays in log-spaced buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DelayCurve {
    counts: Vec<f64>,
    total: f64,
}

fn edge(i: usize) -> f64 {
    FIRST_EDGE_MS * 2f64.powf(i as f64 / PER_DOUBLING)
}

impl DelayCurve {
    /// A curve that has seen nothing.
    pub const fn new() -> Self {
        DelayCurve {
            counts: Vec::new(),
            total: 0.0,
        }
    }

    /// Adds another curve's observations (worker curves at restore).
    pub fn merge(&mut self, other: &DelayCurve) {
        if other.counts.len() == BUCKETS + 1 {
            if self.counts.len() != BUCKETS + 1 {
                self.counts = vec![0.0; BUCKETS + 1];
            }
            for (a, b) in self.counts.iter_mut().zip(&other.counts) {
                *a += b;
            }
            self.total += other.total;
        }
    }

    /// Counts a conversion charged `delay_ms` after its win.
    pub fn observe(&mut self, delay_ms: i64) {
        if self.counts.len() != BUCKETS + 1 {
            self.counts = vec![0.0; BUCKETS + 1];
        }
        let d = delay_ms.max(0) as f64;
        let i = if d < FIRST_EDGE_MS {
            0
        } else {
            (((d / FIRST_EDGE_MS).log2() * PER_DOUBLING).floor() as usize + 1).min(BUCKETS)
        };
        self.counts[i] += 1.0;
        self.total += 1.0;
    }

    /// Conversions observed.
    pub fn observed(&self) -> f64 {
        self.total
    }

    /// Share of conversions that arrive within `age_ms` of their win (linear within a bucket);
    /// `None` until [`MIN_OBSERVED`] have been seen.
    pub fn arrived(&self, age_ms: i64) -> Option<f64> {
        if self.total < MIN_OBSERVED {
            return None;
        }
        let a = age_ms.max(0) as f64;
        let mut below = 0.0;
        for (i, c) in self.counts.iter().enumerate() {
            let lo = if i == 0 { 0.0 } else { edge(i - 1) };
            let hi = if i == BUCKETS { f64::INFINITY } else { edge(i) };
            if a >= hi {
                below += c;
                continue;
            }
            let f = if hi.is_finite() {
                (a - lo) / (hi - lo)
            } else {
                0.0
            };
            below += c * f.clamp(0.0, 1.0);
            break;
        }
        Some((below / self.total).clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_share_arrived_by_age() {
        let mut c = DelayCurve::default();
        assert_eq!(c.arrived(1_000), None);
        // Half within 10 minutes, half after two days.
        for _ in 0..50 {
            c.observe(5 * 60_000);
            c.observe(2 * 86_400_000);
        }
        let hour = 3_600_000;
        assert!((c.arrived(hour).unwrap() - 0.5).abs() < 1e-9);
        assert!(c.arrived(0).unwrap() < 0.01);
        assert!((c.arrived(5 * 86_400_000).unwrap() - 1.0).abs() < 1e-9);
        let mut last = 0.0;
        for k in 0..200 {
            let a = c.arrived(k * hour).unwrap();
            assert!(a + 1e-12 >= last);
            last = a;
        }
    }
}
