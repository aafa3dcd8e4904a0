//! Where in its budget day a campaign is, and how its reachable traffic is spread over the day.

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::time::day::{budget_day, day_length_ms, day_start};
use crate::time::EventTime;

/// A position in a budget day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DayPosition {
    /// The local budget day.
    pub day: NaiveDate,
    /// Slot index.
    pub slot: usize,
    /// Elapsed fraction of that slot (0..1).
    pub fraction: f64,
}

/// Where `t` falls in its budget day in `tz`, cut into `slots` slots.
pub fn position(t: EventTime, tz: Tz, slots: usize) -> DayPosition {
    let slots = slots.max(1);
    let day = budget_day(t, tz);
    let start = day_start(day, tz).millis();
    let len = day_length_ms(day, tz).max(1) as f64;
    let x = ((t.millis() - start) as f64 / len).clamp(0.0, 1.0 - 1e-12) * slots as f64;
    DayPosition {
        day,
        slot: (x.floor() as usize).min(slots - 1),
        fraction: x - x.floor(),
    }
}

/// Reachable requests per slot: a weighted average over past days plus today's counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficProfile {
    /// Learned weights per slot (all equal until a day has been seen).
    pub weights: Vec<f64>,
    /// Today's counts per slot.
    pub today: Vec<f64>,
    /// The day `today` belongs to.
    pub day: Option<NaiveDate>,
    /// Complete days learned.
    pub days_learned: u32,
}

impl TrafficProfile {
    /// A flat profile of `slots` slots.
    pub fn flat(slots: usize) -> Self {
        let slots = slots.max(1);
        TrafficProfile {
            weights: vec![1.0 / slots as f64; slots],
            today: vec![0.0; slots],
            day: None,
            days_learned: 0,
        }
    }

    /// Starts from another profile's shape (e.g. the pooled one of all campaigns).
    pub fn seeded(from: &TrafficProfile) -> Self {
        TrafficProfile {
            weights: from.weights.clone(),
            today: vec![0.0; from.weights.len()],
            day: None,
            days_learned: 0,
        }
    }

    /// Counts `n` reachable requests at `pos`; a new day folds the finished one in with weight
    /// `smoothing`.
    /// Counts of a day before the current one (arriving late) are dropped.
    pub fn observe(&mut self, pos: DayPosition, n: f64, smoothing: f64) {
        if self.day.is_some_and(|d| pos.day < d) {
            return;
        }
        if self.day != Some(pos.day) {
            self.roll(smoothing);
            self.day = Some(pos.day);
        }
        if let Some(c) = self.today.get_mut(pos.slot) {
            *c += n;
        }
    }

    fn roll(&mut self, smoothing: f64) {
        let total: f64 = self.today.iter().sum();
        if total > 0.0 {
            let a = if self.days_learned == 0 {
                1.0
            } else {
                smoothing.clamp(0.0, 1.0)
            };
            for (w, c) in self.weights.iter_mut().zip(&self.today) {
                *w = (1.0 - a) * *w + a * (c / total);
            }
            self.days_learned += 1;
        }
        self.today.iter_mut().for_each(|c| *c = 0.0);
    }

    /// Share of the day's reachable traffic before `pos` (0..1), from the learned weights.
    pub fn share_before(&self, pos: DayPosition) -> f64 {
        let total: f64 = self.weights.iter().sum();
        if total <= 0.0 {
            return (pos.slot as f64 + pos.fraction) / self.weights.len().max(1) as f64;
        }
        let before: f64 = self.weights.iter().take(pos.slot).sum();
        let current = self.weights.get(pos.slot).copied().unwrap_or(0.0) * pos.fraction;
        ((before + current) / total).clamp(0.0, 1.0)
    }
}

/// Target cumulative spend at `pos` for a daily `budget_micros`.
pub fn target_micros(profile: &TrafficProfile, pos: DayPosition, budget_micros: u64) -> u64 {
    (budget_micros as f64 * profile.share_before(pos)).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(day: u32, slot: usize, fraction: f64) -> DayPosition {
        DayPosition {
            day: NaiveDate::from_ymd_opt(2026, 3, day).unwrap(),
            slot,
            fraction,
        }
    }

    #[test]
    fn positions_follow_the_local_day() {
        // 2026-03-01 06:00 in Paris (UTC+1) is 05:00 UTC; slot 24 of 96.
        let t = EventTime::parse("2026-03-01T05:00:00Z").unwrap();
        let p = position(t, chrono_tz::Europe::Paris, 96);
        assert_eq!(p.day, NaiveDate::from_ymd_opt(2026, 3, 1).unwrap());
        assert_eq!(p.slot, 24);
        assert!(p.fraction.abs() < 1e-9);
        // A DST day of 23 hours still has all its slots.
        let t = EventTime::parse("2026-03-29T21:59:00Z").unwrap();
        let p = position(t, chrono_tz::Europe::Paris, 96);
        assert_eq!(p.slot, 95);
    }

    #[test]
    fn flat_until_learned_then_shaped_by_traffic() {
        let mut p = TrafficProfile::flat(4);
        assert!((p.share_before(at(1, 2, 0.0)) - 0.5).abs() < 1e-12);
        // Day 1: all the traffic in the second half of the day.
        p.observe(at(1, 2, 0.1), 30.0, 0.3);
        p.observe(at(1, 3, 0.1), 10.0, 0.3);
        // Learned when day 2 starts.
        p.observe(at(2, 0, 0.0), 0.0, 0.3);
        assert_eq!(p.days_learned, 1);
        assert!(p.share_before(at(2, 2, 0.0)).abs() < 1e-12);
        assert!((p.share_before(at(2, 3, 0.0)) - 0.75).abs() < 1e-12);
        assert!((p.share_before(at(2, 3, 0.5)) - 0.875).abs() < 1e-12);
        assert_eq!(target_micros(&p, at(2, 3, 0.0), 1_000), 750);
        // A late count of day 1 neither rolls the profile back nor counts.
        p.observe(at(2, 1, 0.0), 5.0, 0.3);
        p.observe(at(1, 1, 0.0), 5.0, 0.3);
        assert_eq!(p.day, Some(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()));
        assert_eq!(p.today.iter().sum::<f64>(), 5.0);
    }

    proptest! {
        /// The target share never decreases through the day and ends at 1.
        #[test]
        fn share_is_monotone(counts in proptest::collection::vec(0.0f64..100.0, 8), steps in 1usize..50) {
            let mut p = TrafficProfile::flat(8);
            for (slot, c) in counts.iter().enumerate() {
                p.observe(at(1, slot, 0.5), *c, 0.3);
            }
            p.observe(at(2, 0, 0.0), 1.0, 0.3);
            let mut last = 0.0;
            for i in 0..=steps * 8 {
                let x = i as f64 / steps as f64;
                let pos = at(2, (x.floor() as usize).min(7), if x >= 8.0 { 1.0 } else { x - x.floor() });
                let s = p.share_before(pos);
                prop_assert!(s + 1e-12 >= last);
                last = s;
            }
            prop_assert!((last - 1.0).abs() < 1e-9);
        }
    }
}
