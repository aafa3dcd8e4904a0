//! A serving replica's view of pacing: the latest broadcast state of every campaign, plus the
//! reservations this replica made itself (known exactly, at once).

use crate::hash::{HashMap, HashSet};

use super::reservation::{Reservations, WinKey};
use super::PacingUpdate;

/// What one serving replica knows of every campaign's pacing.
#[derive(Debug, Default)]
pub struct PacingBoard {
    replica: usize,
    replicas: usize,
    states: HashMap<String, PacingUpdate>,
    own: Reservations<String>,
    /// Campaigns whose state changed since the last [`PacingBoard::take_changed`] (at most
    /// one entry per campaign).
    changed: HashSet<String>,
}

impl PacingBoard {
    /// The board of serving replica `replica` (its worker index) of `replicas`.
    pub fn new(replica: usize, replicas: usize) -> Self {
        PacingBoard {
            replica,
            replicas: replicas.max(1),
            ..PacingBoard::default()
        }
    }

    /// Takes in a broadcast update.
    pub fn apply(&mut self, update: PacingUpdate) {
        if !self.changed.contains(&update.campaign_id) {
            self.changed.insert(update.campaign_id.clone());
        }
        self.states.insert(update.campaign_id.clone(), update);
    }

    /// The campaigns whose state changed since the last call (for serving's cache of pass
    /// probabilities).
    pub fn take_changed(&mut self) -> Vec<String> {
        self.changed.drain().collect()
    }

    /// The latest update of `campaign`.
    pub fn get(&self, campaign: &str) -> Option<&PacingUpdate> {
        self.states.get(campaign)
    }

    /// Probability that `campaign` takes part in an auction it qualifies for (1 until its first
    /// state arrives).
    pub fn pass(&self, campaign: &str) -> f64 {
        self.states
            .get(campaign)
            .map_or(1.0, |u| u.state.pass_probability)
    }

    /// The other replicas' reservations as last broadcast, plus the expected cost of CPA
    /// conversions still to come today.
    fn others(&self, campaign: &str) -> u64 {
        self.states.get(campaign).map_or(0, |u| {
            let others: u64 = u
                .reserved_by_replica
                .iter()
                .enumerate()
                .filter(|(r, _)| *r != self.replica)
                .map(|(_, m)| *m)
                .sum();
            others + u.state.conversions_pending_micros
        })
    }

    /// Outstanding reservations against `campaign`: this replica's own, exactly, plus the other
    /// replicas' as last broadcast (and CPA conversions still to come today).
    pub fn reserved(&self, campaign: &str) -> u64 {
        self.others(campaign) + self.own.reserved(campaign)
    }

    /// What this replica may still reserve for `campaign` with `remaining` budget left today
    /// (budget - spend): its share `1/replicas` of what the other replicas do not hold, less its
    /// own reservations. The shares sum to at most `remaining`, however stale the broadcast view
    /// of the others is, so the replicas together never reserve more than the budget left.
    pub fn headroom(&self, campaign: &str, remaining: u64) -> u64 {
        let share = remaining.saturating_sub(self.others(campaign)) / self.replicas as u64;
        share.saturating_sub(self.own.reserved(campaign))
    }

    /// Records a win of this replica.
    pub fn reserve(&mut self, campaign: &str, win: WinKey, micros: u64, expires_ms: i64) {
        self.own
            .reserve(win, campaign.to_string(), micros, expires_ms);
    }

    /// A win was charged (a no-op for other replicas' wins).
    pub fn settle(&mut self, win: WinKey) {
        self.own.settle(win);
    }

    /// Drops this replica's reservations that expired by `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        self.own.expire(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::win_key;
    use crate::records::PacingState;

    fn update(reserved: Vec<u64>, pass: f64) -> PacingUpdate {
        PacingUpdate {
            campaign_id: "c".into(),
            state: PacingState {
                mode: "paced".into(),
                pass_probability: pass,
                target_micros: 0,
                committed_micros: 0,
                conversions_pending_micros: 0,
                day: "2026-03-01".parse().unwrap(),
                full_rate_micros_per_hour: None,
                updated_ms: 0,
            },
            reserved_by_replica: reserved,
        }
    }

    #[test]
    fn own_reservations_count_at_once_and_others_as_broadcast() {
        let mut b = PacingBoard::new(1, 2);
        assert_eq!(b.pass("c"), 1.0);
        b.reserve("c", win_key("r1", "1"), 300, 1_000);
        assert_eq!(b.reserved("c"), 300);
        // The broadcast counts replica 1's reservations too: the board uses its own instead.
        b.apply(update(vec![200, 250], 0.5));
        assert_eq!(b.reserved("c"), 200 + 300);
        assert_eq!(b.pass("c"), 0.5);
        // 1000 left: the other replica holds 200; this one's share of the 800 is 400, of which
        // it holds 300.
        assert_eq!(b.headroom("c", 1_000), 100);
        b.settle(win_key("r1", "1"));
        assert_eq!(b.reserved("c"), 200);
        b.reserve("c", win_key("r2", "1"), 50, 1_000);
        b.expire(1_000);
        assert_eq!(b.reserved("c"), 200);
    }

    proptest::proptest! {
        /// Replicas that each reserve up to their headroom, seeing the others' reservations
        /// through a broadcast of any staleness, never reserve more than the budget left.
        #[test]
        fn replicas_together_stay_within_the_budget(
            remaining in 0u64..10_000,
            replicas in 1usize..5,
            wins in proptest::collection::vec((0usize..5, 1u64..500, proptest::bool::ANY), 1..200),
        ) {
            let mut boards: Vec<PacingBoard> = (0..replicas).map(|r| PacingBoard::new(r, replicas)).collect();
            let mut own = vec![0u64; replicas];
            for (n, (r, cost, publish)) in wins.into_iter().enumerate() {
                let r = r % replicas;
                if boards[r].headroom("c", remaining) >= cost {
                    boards[r].reserve("c", win_key(&n.to_string(), "1"), cost, i64::MAX);
                    own[r] += cost;
                }
                if publish {
                    // Some replica hears the current totals; the others keep an older view.
                    let listener = n % replicas;
                    boards[listener].apply(update(own.clone(), 1.0));
                }
                proptest::prop_assert!(own.iter().sum::<u64>() <= remaining);
            }
        }
    }
}
