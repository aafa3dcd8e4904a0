//! The hash maps and sets of per-event state: aHash, keyed at random per process, in place of
//! std's SipHash, which was the largest part of a lookup on the billing path. The keys come
//! from events, so the hash stays keyed: crafted ids cannot be made to collide.

/// A hash map of per-event state.
pub type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// A hash set of per-event state.
pub type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;
