//! A set of billing identities already charged, bounded by time rather than by memory.
//!
//! Every entry expires when the event-time frontier passes the end of its charging window (the
//! token's issue time plus the horizon for its event kind). Once a window has closed no event of
//! it can be charged any more (see [`crate::ledger::Ledger`]), so forgetting it is safe.
//! Each entry remembers where it was first read, which tells a replay after a restart (same
//! Kafka position: ignored) from a true duplicate (another position: dead-lettered).

use std::collections::BTreeMap;

use crate::hash::HashMap;

use serde::{Deserialize, Serialize};

use crate::records::{DedupKey, Origin};

/// Hashes the parts of an identity into a [`DedupKey`], unambiguously (parts are length-prefixed).
pub fn dedup_key(parts: &[&str]) -> DedupKey {
    crate::hash::digest(parts)
}

/// The answer of [`DedupSet::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Never charged.
    New,
    /// Charged from this very Kafka position: a replay after restart.
    Replay,
    /// Charged from another position: a duplicate event.
    Duplicate(Origin),
}

/// A persisted dedup entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    /// Event-time millisecond after which the entry may be forgotten.
    pub expires: i64,
    /// Where it was first charged.
    pub origin: Origin,
    /// Routing hash of the campaign charged (the shard the entry is filed under).
    pub shard: u64,
    /// What the charge billed and delivered free, micros, so that a replay reports the very
    /// amounts of the first charge. `None` in entries written before budgets were capped (then
    /// the whole price was billed).
    #[serde(default)]
    pub amounts: Option<(u64, u64)>,
}

const BUCKET_MS: i64 = 60_000;

/// The time-bounded set.
#[derive(Default, Debug)]
pub struct DedupSet {
    entries: HashMap<DedupKey, DedupEntry>,
    by_expiry: BTreeMap<i64, Vec<DedupKey>>,
}

impl DedupSet {
    /// Whether `key` was charged, and from where.
    pub fn check(&self, key: DedupKey, origin: Origin) -> Seen {
        match self.entries.get(&key) {
            None => Seen::New,
            Some(e) if e.origin == origin => Seen::Replay,
            Some(e) => Seen::Duplicate(e.origin),
        }
    }

    /// Records `key` as charged.
    pub fn insert(&mut self, key: DedupKey, entry: DedupEntry) {
        if self.entries.insert(key, entry).is_none() {
            self.by_expiry
                .entry(entry.expires.div_euclid(BUCKET_MS))
                .or_default()
                .push(key);
        }
    }

    /// Forgets every entry that expires before `frontier`; returns the entries dropped.
    pub fn expire(&mut self, frontier: i64) -> Vec<(DedupKey, DedupEntry)> {
        let mut dropped = Vec::new();
        let last_full_bucket = frontier.div_euclid(BUCKET_MS);
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() > last_full_bucket {
                break;
            }
            let bucket = *entry.key();
            let keys = entry.remove();
            let mut keep = Vec::new();
            for k in keys {
                match self.entries.get(&k) {
                    Some(e) if e.expires < frontier => {
                        let e = *e;
                        self.entries.remove(&k);
                        dropped.push((k, e));
                    }
                    Some(_) => keep.push(k),
                    None => {}
                }
            }
            if !keep.is_empty() {
                // Only the frontier's own bucket can keep entries; stop after re-filing it.
                self.by_expiry.insert(bucket, keep);
                break;
            }
        }
        dropped
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `key`, if any.
    pub fn get(&self, key: DedupKey) -> Option<DedupEntry> {
        self.entries.get(&key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn origin(offset: i64) -> Origin {
        Origin {
            stream: 1,
            partition: 0,
            offset,
        }
    }

    #[test]
    fn replay_and_duplicate_differ() {
        let mut set = DedupSet::default();
        let k = dedup_key(&["r", "1", "click"]);
        assert_eq!(set.check(k, origin(5)), Seen::New);
        set.insert(
            k,
            DedupEntry {
                expires: 100,
                origin: origin(5),
                shard: 0,
                amounts: None,
            },
        );
        assert_eq!(set.check(k, origin(5)), Seen::Replay);
        assert_eq!(set.check(k, origin(6)), Seen::Duplicate(origin(5)));
        assert_ne!(dedup_key(&["ab", "c"]), dedup_key(&["a", "bc"]));
    }

    proptest! {
        /// After expiring at `frontier`, exactly the entries expiring at or after it remain.
        #[test]
        fn expiry_keeps_exactly_the_open_windows(
            expiries in proptest::collection::vec(0i64..1_000_000, 0..200),
            frontier in 0i64..1_100_000,
        ) {
            let mut set = DedupSet::default();
            for (i, e) in expiries.iter().enumerate() {
                set.insert(i as u128, DedupEntry { expires: *e, origin: origin(i as i64), shard: 0, amounts: None });
            }
            let dropped = set.expire(frontier);
            for (i, e) in expiries.iter().enumerate() {
                let present = set.get(i as u128).is_some();
                prop_assert_eq!(present, *e >= frontier);
                prop_assert_eq!(dropped.iter().any(|(k, _)| *k == i as u128), *e < frontier);
            }
            // Expiring again later drops the rest too.
            set.expire(i64::MAX);
            prop_assert!(set.is_empty());
        }
    }
}
