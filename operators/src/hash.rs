//! The hash maps and sets of per-event state: aHash, keyed at random per process, in place of
//! std's SipHash, which was the largest part of a lookup on the billing path. The keys come
//! from events, so the hash stays keyed: crafted ids cannot be made to collide.

/// A hash map of per-event state.
pub type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// A hash set of per-event state.
pub type HashSet<K> = std::collections::HashSet<K, ahash::RandomState>;

/// A key hashed once: its keyed aHash computed when it is made, and handed to the maps and
/// sets of [`HashedMap`] and [`HashedSet`] as it is, so that state holding one key in several
/// of them (a map, a dirty set, a checkpoint's lookups) does not hash the key's text each time.
/// Equality still compares the keys themselves.
#[derive(Clone, Debug)]
pub struct Hashed<K> {
    hash: u64,
    key: K,
}

/// The keyed hash of every [`Hashed`] key of the process (random per process, as
/// [`HashMap`]'s).
fn hashed_state() -> &'static ahash::RandomState {
    static STATE: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new)
}

impl<K: std::hash::Hash> Hashed<K> {
    /// `key`, hashed.
    pub fn new(key: K) -> Self {
        Hashed {
            hash: hashed_state().hash_one(&key),
            key,
        }
    }

    /// Changes the key in place (reusing its allocations) and hashes it again.
    pub fn replace_with(&mut self, change: impl FnOnce(&mut K)) {
        change(&mut self.key);
        self.hash = hashed_state().hash_one(&self.key);
    }
}

impl<K> Hashed<K> {
    /// The key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The key, unwrapped.
    pub fn into_key(self) -> K {
        self.key
    }
}

impl<K: std::hash::Hash + Default> Default for Hashed<K> {
    fn default() -> Self {
        Hashed::new(K::default())
    }
}

impl<K: PartialEq> PartialEq for Hashed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Hashed<K> {}

impl<K> std::hash::Hash for Hashed<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The hasher of [`HashedMap`] and [`HashedSet`]: it passes a [`Hashed`] key's hash through.
#[derive(Default, Clone, Copy, Debug)]
pub struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is meant to be called (by `Hashed`); anything else still hashes.
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// A map of per-event state keyed by an id's text and found by `&str`
/// ([`by_str_or_insert_with`]): aHash-keyed as [`HashMap`], in hashbrown's map, whose
/// `entry_ref` finds or inserts by a borrowed key with one hash and one probe.
pub type StrMap<V> = hashbrown::HashMap<String, V, ahash::RandomState>;

/// The value of `map` under `key`, made by `make` when there is none: one hash and one probe,
/// and the key's text copied only when it is new (per-event state is found by ids that are
/// nearly always there already; std's `entry` would need an owned key, so an allocation, on
/// every call).
pub fn by_str_or_insert_with<'m, V>(
    map: &'m mut StrMap<V>,
    key: &str,
    make: impl FnOnce() -> V,
) -> &'m mut V {
    map.entry_ref(key).or_insert_with(make)
}

/// A 128-bit digest of an identity made of several ids: xxh3 over the parts, each prefixed
/// with its length, so that no two different lists of parts frame the same bytes. Used where
/// state keeps an identity rather than its text (billing identities, wins); the ids come from
/// signed tokens and served records, so they cannot be chosen to collide.
pub fn digest(parts: &[&str]) -> u128 {
    let len: usize = parts.iter().map(|p| p.len() + 4).sum();
    // Ids are short: the framed parts fit a buffer on the stack, not one on the heap per call.
    let mut stack = [0u8; 512];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    for p in parts {
        buf[at..at + 4].copy_from_slice(&(p.len() as u32).to_le_bytes());
        buf[at + 4..at + 4 + p.len()].copy_from_slice(p.as_bytes());
        at += 4 + p.len();
    }
    xxhash_rust::xxh3::xxh3_128(buf)
}

/// A hash map keyed by [`Hashed`] keys (or shared pointers to them).
pub type HashedMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<PassThrough>>;

/// A hash set of [`Hashed`] keys (or shared pointers to them).
pub type HashedSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<PassThrough>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_by_str_is_made_once() {
        let mut map: StrMap<u32> = StrMap::default();
        let mut made = 0;
        for _ in 0..3 {
            *by_str_or_insert_with(&mut map, "c1", || {
                made += 1;
                0
            }) += 1;
        }
        assert_eq!((made, map.get("c1")), (1, Some(&3)));
    }

    #[test]
    fn digests_frame_their_parts() {
        // The same bytes split differently are different identities.
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_ne!(digest(&["abc"]), digest(&["abc", ""]));
        assert_ne!(digest(&["win", "r1", "1"]), digest(&["win", "r1", "2"]));
        assert_eq!(digest(&["win", "r1", "1"]), digest(&["win", "r1", "1"]));
        // Ids longer than the stack buffer are framed on the heap, the same way.
        let long = "x".repeat(600);
        assert_eq!(digest(&[&long, "1"]), digest(&[&long, "1"]));
        assert_ne!(digest(&[&long, "1"]), digest(&[&long[..599], "x1"]));
        // A win is not a billing identity of the same ids.
        assert_ne!(
            crate::records::win_key("r1", "1"),
            digest(&["r1", "1"]),
            "win keys are digested under their own tag"
        );
    }

    #[test]
    fn hashed_keys_find_each_other_and_only_each_other() {
        let mut map: HashedMap<std::rc::Rc<Hashed<(String, String)>>, u32> = HashedMap::default();
        for i in 0..1_000u32 {
            map.insert(
                std::rc::Rc::new(Hashed::new((format!("r{i}"), "1".to_string()))),
                i,
            );
        }
        for i in 0..1_000u32 {
            let key = Hashed::new((format!("r{i}"), "1".to_string()));
            assert_eq!(map.get(&key), Some(&i));
        }
        assert_eq!(
            map.get(&Hashed::new(("r1".to_string(), "2".to_string()))),
            None
        );
        assert_eq!(Hashed::new("a"), Hashed::new("a"));
        assert_ne!(Hashed::new("a"), Hashed::new("b"));
    }
}
