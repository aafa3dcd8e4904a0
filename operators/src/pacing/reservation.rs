//! Reservations: the expected cost of wins whose billing events have not arrived yet, so that
//! serving stops a campaign before its budget is gone rather than after.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::hash::Hash;

use crate::hash::HashMap;

use crate::events::Billing;
pub use crate::records::{win_key, WinKey};

/// Expected cost of a win, micros: the charge itself for CPM, times pCTR for CPC, times pCTR and
/// pCVR for CPA.
pub fn expected_cost(billing: Billing, charge_micros: u64, pctr: f64, pcvr: f64) -> u64 {
    let p = match billing {
        Billing::Cpm => 1.0,
        Billing::Cpc => pctr,
        Billing::Cpa => pctr * pcvr,
    };
    (charge_micros as f64 * p.clamp(0.0, 1.0)).ceil() as u64
}

/// Outstanding reservations per account (a campaign in serving and the bench, a serving replica
/// in the pacing operator), keyed by win.
#[derive(Clone, Debug)]
pub struct Reservations<A = String> {
    by_account: HashMap<A, u64>,
    wins: HashMap<WinKey, (A, u64, i64)>,
    expiry: BTreeMap<i64, Vec<WinKey>>,
}

impl<A> Default for Reservations<A> {
    fn default() -> Self {
        Reservations {
            by_account: HashMap::default(),
            wins: HashMap::default(),
            expiry: BTreeMap::new(),
        }
    }
}

impl<A: Clone + Eq + Hash> Reservations<A> {
    /// Reserves `micros` for the win `win` ([`win_key`]) against `account` until `expires_ms`;
    /// a win already reserved is left as it is.
    pub fn reserve(&mut self, win: WinKey, account: A, micros: u64, expires_ms: i64) {
        if self.wins.contains_key(&win) {
            return;
        }
        *self.by_account.entry(account.clone()).or_default() += micros;
        self.expiry.entry(expires_ms).or_default().push(win);
        self.wins.insert(win, (account, micros, expires_ms));
    }

    fn release(&mut self, key: &WinKey) -> Option<u64> {
        let (account, micros, _) = self.wins.remove(key)?;
        if let Some(total) = self.by_account.get_mut(&account) {
            *total = total.saturating_sub(micros);
            if *total == 0 {
                self.by_account.remove(&account);
            }
        }
        Some(micros)
    }

    /// The billing event of a win arrived: its reservation is released (the ledger now holds
    /// the real charge). Returns what was reserved.
    pub fn settle(&mut self, win: WinKey) -> Option<u64> {
        self.release(&win)
    }

    /// Releases every reservation that expired by `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        let later = self.expiry.split_off(&now_ms.saturating_add(1));
        let due = std::mem::replace(&mut self.expiry, later);
        for key in due.into_values().flatten() {
            // Settled wins are gone already; only release what still expires at that time.
            if self.wins.get(&key).is_some_and(|(_, _, e)| *e <= now_ms) {
                self.release(&key);
            }
        }
    }

    /// Outstanding reservations of `account`, micros.
    pub fn reserved<Q>(&self, account: &Q) -> u64
    where
        A: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.by_account.get(account).copied().unwrap_or(0)
    }

    /// Outstanding reservations of every account.
    pub fn accounts(&self) -> impl Iterator<Item = (&A, u64)> {
        self.by_account.iter().map(|(a, m)| (a, *m))
    }

    /// Outstanding reservations of all accounts together, micros.
    pub fn total(&self) -> u64 {
        self.by_account.values().sum()
    }

    /// Outstanding wins.
    pub fn len(&self) -> usize {
        self.wins.len()
    }

    /// Whether nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.wins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expected_costs() {
        assert_eq!(expected_cost(Billing::Cpm, 2_000, 0.5, 0.5), 2_000);
        assert_eq!(expected_cost(Billing::Cpc, 100_000, 0.02, 0.5), 2_000);
        assert_eq!(expected_cost(Billing::Cpa, 1_000_000, 0.02, 0.05), 1_000);
    }

    #[test]
    fn settle_and_expire() {
        let mut r: Reservations = Reservations::default();
        r.reserve(win_key("r1", "1"), "c".to_string(), 10, 100);
        r.reserve(win_key("r1", "1"), "c".to_string(), 10, 100); // the same win again: no double reservation
        r.reserve(win_key("r2", "1"), "c".to_string(), 5, 200);
        assert_eq!(r.reserved("c"), 15);
        assert_eq!(r.settle(win_key("r1", "1")), Some(10));
        assert_eq!(r.settle(win_key("r1", "1")), None);
        assert_eq!(r.reserved("c"), 5);
        r.expire(199);
        assert_eq!(r.reserved("c"), 5);
        r.expire(200);
        assert_eq!(r.reserved("c"), 0);
        assert!(r.is_empty());
    }

    proptest! {
        /// The per-campaign totals always equal the sum of outstanding wins, whatever the order
        /// of reserve, settle and expire.
        #[test]
        fn totals_match_outstanding(ops in proptest::collection::vec((0u8..3, 0u8..20, 1u64..1000, 0i64..100), 1..200)) {
            let mut r: Reservations = Reservations::default();
            let mut now = 0;
            for (op, win, micros, at) in ops {
                let rid = format!("r{win}");
                let campaign = if win % 2 == 0 { "a" } else { "b" };
                match op {
                    0 => r.reserve(win_key(&rid, "1"), campaign.to_string(), micros, now + at),
                    1 => { r.settle(win_key(&rid, "1")); }
                    _ => {
                        now += at;
                        r.expire(now);
                        prop_assert!(r.wins.values().all(|(_, _, e)| *e > now));
                    }
                }
                for c in ["a", "b"] {
                    let sum: u64 = r.wins.values().filter(|(x, _, _)| x == c).map(|(_, m, _)| m).sum();
                    prop_assert_eq!(r.reserved(c), sum);
                }
            }
        }
    }
}
