//! Stable routing of keys to workers, shared by exchanges and by state restoration.

/// Stable 64-bit hash of a routing key; `route(key) % peers` is the worker that owns it.
pub fn route(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// Whether worker `index` of `peers` owns the key with hash `hash`.
pub fn owns(hash: u64, index: usize, peers: usize) -> bool {
    hash % peers.max(1) as u64 == index as u64
}

/// Splits a state key's `{hash:016x}/rest` (after its prefix) into the routing hash and the rest.
pub fn split_hash_prefix(key: &str) -> Option<(u64, &str)> {
    let (hash, rest) = key.split_once('/')?;
    Some((u64::from_str_radix(hash, 16).ok()?, rest))
}
