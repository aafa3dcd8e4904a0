//! Stable routing of keys to workers, shared by exchanges and by state restoration, and the one
//! encoding of state keys.
//!
//! # State keys
//!
//! Every state entry that belongs to one worker is filed as
//!
//! ```text
//!   {family prefix}{routing hash:016x}/{component}\0{component}\0...
//! ```
//!
//! by a [`KeyFamily`] ([`LEDGER_SPEND`], [`LEDGER_DEDUP`], [`ATTRIBUTION`], [`LABELS`],
//! [`PACING`], [`REPORT_SEEN`], [`REPORT_ROWS`], [`USER_HISTORY`], [`CAMPAIGN_ACTIVITY`]): the hash says which worker owns the entry
//! (`hash % peers`), the components are the ids the entry is about. Each component is escaped
//! before it is joined: `%` becomes `%25` and every control character (general category Cc,
//! NUL included) becomes `%XX` for each byte of its UTF-8 form, so a component never holds a
//! NUL, and NUL between components cannot be confused with anything inside one. Decoding
//! accepts only that canonical form (and the family's number of components), so the encoding is
//! a bijection between component lists and keys: no id, valid or not, can make two entries share
//! a key or make a key unreadable. Ids are also checked at every input
//! ([`crate::events::check_id`]); the key encoding does not rely on it.
//!
//! # Format versions
//!
//! The store holds its key format under [`FORMAT_KEY`] (`meta/format`), written when the store
//! is opened. Version 0 (no marker: adstream before the escaping above) wrote components raw.
//! A store without the marker is migrated when it is opened ([`migrate_v0`]), in the same atomic
//! write as the marker: every key whose components need escaping (ids holding `%` or a control
//! character) is rewritten in the new form, every other key is already in it. A version-0 key
//! that cannot be read unambiguously (an id holding a NUL, which version 0 used as its
//! separator, in a family of two ids) stops the opening with an error naming the key, rather
//! than guess which entry it was: version 0 could not restore such an entry either, and ids with
//! a NUL are now refused at every input. A store marked with another version is refused.

use std::fmt::Write as _;

pub use crate::checkpoint::{show_key, KeyError};
use crate::checkpoint::{RestoreError, StateBatch, StateStore};

/// Stable 64-bit hash of a routing key; `route(key) % peers` is the worker that owns it.
pub fn route(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// Whether worker `index` of `peers` owns the key with hash `hash`.
pub fn owns(hash: u64, index: usize, peers: usize) -> bool {
    hash % peers.max(1) as u64 == index as u64
}

/// Where the store records its key format.
pub const FORMAT_KEY: &[u8] = b"meta/format";

/// The key format this build reads and writes.
pub const FORMAT_VERSION: &str = "1";

/// Escapes one component (see the module doc) onto `out`.
fn escape_into(component: &str, out: &mut String) {
    for c in component.chars() {
        if c == '%' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

/// `value` as 32 lower-case hex digits (`format!("{value:032x}")` without the allocation).
pub fn hex128(value: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&hex64((value >> 64) as u64));
    out[16..].copy_from_slice(&hex64(value as u64));
    out
}

/// `value` as 16 lower-case hex digits (`format!("{value:016x}")` without the allocation),
/// eight digits at a time: each 32-bit half's nibbles are spread one to a byte, and every byte
/// becomes `'0' + n`, plus the distance from `'9' + 1` to `'a'` where `n` is ten or more
/// (checkpoints write a hex routing hash in every key).
pub fn hex64(value: u64) -> [u8; 16] {
    /// The eight nibbles of `half`, most significant first, one per byte of a big-endian word.
    fn spread(half: u32) -> u64 {
        let x = u64::from(half);
        // 32 bits to 2 x 16, 4 x 8, then 8 x 4 in the low nibble of each byte.
        let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
        let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
        let x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
        // Byte i holds nibble i (least significant first): reversed, the first digit is the
        // word's lowest byte, the first in memory once written little-endian.
        x.swap_bytes()
    }
    fn digits(nibbles: u64) -> u64 {
        // 1 in a byte whose nibble is ten or more (n + 6 carries into 0x10).
        let letters = ((nibbles + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        nibbles + 0x3030_3030_3030_3030 + letters * (b'a' - b'9' - 1) as u64
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&digits(spread((value >> 32) as u32)).to_le_bytes());
    out[8..].copy_from_slice(&digits(spread(value as u32)).to_le_bytes());
    out
}

/// Whether `bytes` are all printable ASCII other than `%` (kept as they are in a key), eight
/// at a time: a key's components are ids and hex digests, checked in every checkpoint key.
pub fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let x = u64::from_le_bytes(w);
        // Some byte below 0x20, above 0x7e, or equal to `%` (exact tests, no false alarms).
        let below = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let above = (x.wrapping_add(ONES) | x) & HIGH;
        let percent = x ^ (ONES * u64::from(b'%'));
        let percent = percent.wrapping_sub(ONES) & !percent & HIGH;
        if below | above | percent != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|b| (0x20..0x7f).contains(b) && *b != b'%')
}

/// The escaped form of `components` joined by NUL (at least one component: `[]` and `[""]`
/// would both be empty).
pub fn encode_components(components: &[&str]) -> String {
    let mut out = String::with_capacity(components.iter().map(|c| c.len() + 1).sum());
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            out.push('\0');
        }
        escape_into(c, &mut out);
    }
    out
}

fn unescape(part: &[u8]) -> Option<String> {
    let mut bytes = Vec::with_capacity(part.len());
    let mut i = 0;
    while i < part.len() {
        if part[i] == b'%' {
            let hex = part.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(part[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(bytes).ok()?;
    // Only the canonical form: anything else would let two keys name the same entry.
    let mut again = String::with_capacity(part.len());
    escape_into(&s, &mut again);
    (again.as_bytes() == part).then_some(s)
}

/// Decodes what [`encode_components`] made: exactly `arity` components, each in canonical form.
pub fn decode_components(encoded: &[u8], arity: usize) -> Result<Vec<String>, String> {
    let parts: Vec<&[u8]> = encoded.split(|b| *b == 0).collect();
    if parts.len() != arity {
        return Err(format!(
            "holds {} component(s) where {arity} are expected",
            parts.len()
        ));
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            unescape(p).ok_or_else(|| {
                format!("component {i} is not in the escaped form (`%XX` for `%` and control characters, UTF-8)")
            })
        })
        .collect()
}

/// How version 0 of the format is read back, for [`migrate_v0`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Legacy {
    /// Components were written raw, joined by NUL.
    Raw,
    /// As `Raw`, but the last component never holds a NUL (a date): split at the last NUL.
    RawLastPlain,
    /// Components never needed escaping (hexadecimal digests): nothing to migrate.
    Hex,
}

/// A kind of state entry: its key prefix and how many components follow the routing hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyFamily {
    /// The key prefix, ending in `/`.
    pub prefix: &'static str,
    /// Components after the hash.
    pub arity: usize,
    legacy: Legacy,
}

/// A campaign's spend on a day: `[campaign_id, day]`, routed by campaign.
pub const LEDGER_SPEND: KeyFamily = KeyFamily {
    prefix: "ledger/spend/",
    arity: 2,
    legacy: Legacy::RawLastPlain,
};
/// A charged billing identity: `[digest as 32 hex digits]`, routed by the campaign's shard.
pub const LEDGER_DEDUP: KeyFamily = KeyFamily {
    prefix: "ledger/dedup/",
    arity: 1,
    legacy: Legacy::Hex,
};
/// A user's touches of an advertiser: `[user_id, advertiser_id]`, routed by user.
pub const ATTRIBUTION: KeyFamily = KeyFamily {
    prefix: "attr/",
    arity: 2,
    legacy: Legacy::Raw,
};
/// A served ad waiting for its outcomes: `[request_id, imp_id]`, routed by request.
pub const LABELS: KeyFamily = KeyFamily {
    prefix: "labels/",
    arity: 2,
    legacy: Legacy::Raw,
};
/// A campaign's pacer: `[campaign_id]`, routed by campaign.
pub const PACING: KeyFamily = KeyFamily {
    prefix: "pacing/",
    arity: 1,
    legacy: Legacy::Raw,
};
/// An event identity counted in the reports: `[digest as 32 hex digits]`.
pub const REPORT_SEEN: KeyFamily = KeyFamily {
    prefix: "report/seen/",
    arity: 1,
    legacy: Legacy::Hex,
};
/// A worker's share of a report row: `[row as JSON]`, filed under the writer's worker index.
pub const REPORT_ROWS: KeyFamily = KeyFamily {
    prefix: "report/rows/",
    arity: 1,
    legacy: Legacy::Raw,
};

/// What the ledger remembers of a campaign (zone changes, bids): `[campaign_id]`, routed by
/// campaign.
pub const LEDGER_CAMPAIGN: KeyFamily = KeyFamily {
    prefix: "ledger/campaign/",
    arity: 1,
    legacy: Legacy::Raw,
};

/// A user's recent engagement: `[user_id]`, routed by user. (Newer than key format 0, so not
/// among the [`FAMILIES`] it migrates.)
pub const USER_HISTORY: KeyFamily = KeyFamily {
    prefix: "history/",
    arity: 1,
    legacy: Legacy::Raw,
};

/// A campaign's impressions, clicks and click-through conversions since it was first seen
/// (serving's prior): `[campaign_id]`, routed by campaign. (Newer than key format 0.)
pub const CAMPAIGN_ACTIVITY: KeyFamily = KeyFamily {
    prefix: "activity/",
    arity: 1,
    legacy: Legacy::Raw,
};

/// Every family, for [`migrate_v0`].
pub const FAMILIES: [KeyFamily; 8] = [
    LEDGER_SPEND,
    LEDGER_CAMPAIGN,
    LEDGER_DEDUP,
    ATTRIBUTION,
    LABELS,
    PACING,
    REPORT_SEEN,
    REPORT_ROWS,
];

impl KeyFamily {
    /// The key of the entry about `components` (exactly [`KeyFamily::arity`] of them), owned by
    /// the worker of `hash`.
    pub fn key(&self, hash: u64, components: &[&str]) -> Vec<u8> {
        debug_assert_eq!(components.len(), self.arity, "{}", self.prefix);
        // Built in one buffer (checkpoints write one key per changed entry).
        let mut out = Vec::with_capacity(
            self.prefix.len() + 17 + components.iter().map(|c| c.len() + 1).sum::<usize>(),
        );
        out.extend_from_slice(self.prefix.as_bytes());
        // The low 16 of 32 digits: the hash's own.
        out.extend_from_slice(&hex64(hash));
        out.push(b'/');
        for (i, c) in components.iter().enumerate() {
            if i > 0 {
                out.push(0);
            }
            if is_plain(c.as_bytes()) {
                out.extend_from_slice(c.as_bytes());
            } else {
                let mut escaped = String::new();
                escape_into(c, &mut escaped);
                out.extend_from_slice(escaped.as_bytes());
            }
        }
        out
    }

    /// The routing hash of `key` and the rest after it, undecoded.
    fn split<'k>(&self, key: &'k [u8]) -> Result<(u64, &'k [u8]), KeyError> {
        let rest = key
            .strip_prefix(self.prefix.as_bytes())
            .ok_or_else(|| KeyError::new(key, format!("does not start with {}", self.prefix)))?;
        let hash = rest
            .get(..16)
            .filter(|_| rest.get(16) == Some(&b'/'))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or_else(|| {
                KeyError::new(
                    key,
                    "has no routing hash (16 hex digits and `/`) after its prefix",
                )
            })?;
        Ok((hash, &rest[17..]))
    }

    /// The routing hash of `key` (enough to tell which worker owns it).
    pub fn hash(&self, key: &[u8]) -> Result<u64, KeyError> {
        self.split(key).map(|(hash, _)| hash)
    }

    /// Decodes a key this family wrote: its routing hash and its components.
    pub fn parse(&self, key: &[u8]) -> Result<(u64, Vec<String>), KeyError> {
        let (hash, rest) = self.split(key)?;
        let components = decode_components(rest, self.arity).map_err(|m| KeyError::new(key, m))?;
        Ok((hash, components))
    }

    /// Calls `take` with the components, key and value of every entry of this family in
    /// `store` that worker `index` of `peers` owns (the restore of a keyed operator's state);
    /// entries of other workers are skipped. A store read error, a key that cannot be
    /// decoded, or an error of `take` stops the scan and is returned.
    pub fn restore_owned<const N: usize>(
        &self,
        store: &dyn StateStore,
        index: usize,
        peers: usize,
        mut take: impl FnMut([String; N], &[u8], &[u8]) -> Result<(), RestoreError>,
    ) -> Result<(), RestoreError> {
        for (k, v) in store.scan(self.prefix.as_bytes())? {
            let (hash, components) = self.parse_as::<N>(&k)?;
            if owns(hash, index, peers) {
                take(components, &k, &v)?;
            }
        }
        Ok(())
    }

    /// [`KeyFamily::parse`] into an array of the family's `N` components.
    pub fn parse_as<const N: usize>(&self, key: &[u8]) -> Result<(u64, [String; N]), KeyError> {
        let (hash, components) = self.parse(key)?;
        let components = <[String; N]>::try_from(components).map_err(|c| {
            KeyError::new(
                key,
                format!("holds {} component(s) where {N} are expected", c.len()),
            )
        })?;
        Ok((hash, components))
    }

    /// Reads a version-0 key: `Ok(None)` when it is already in the current form.
    fn migrate(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KeyError> {
        let (hash, rest) = self.split(key)?;
        if self.legacy == Legacy::Hex {
            // Hexadecimal digests: the same bytes either way.
            return Ok(None);
        }
        let raw = std::str::from_utf8(rest)
            .map_err(|_| KeyError::new(key, "version-0 key is not UTF-8"))?;
        let components: Vec<&str> = match (self.arity, self.legacy) {
            (1, _) => vec![raw],
            (2, Legacy::RawLastPlain) => match raw.rsplit_once('\0') {
                Some((first, last)) => vec![first, last],
                None => return Err(KeyError::new(key, "version-0 key has no NUL separator")),
            },
            _ => {
                let parts: Vec<&str> = raw.split('\0').collect();
                if parts.len() != self.arity {
                    return Err(KeyError::new(
                        key,
                        format!(
                            "version-0 key holds {} NUL-separated parts where {} are expected: \
                             an id with a NUL byte makes it ambiguous. Remove the entry, or \
                             start from a fresh state directory",
                            parts.len(),
                            self.arity
                        ),
                    ));
                }
                parts
            }
        };
        let new = self.key(hash, &components);
        Ok((new != key).then_some(new))
    }
}

/// The writes that bring the entries of a version-0 store (no [`FORMAT_KEY`]) to the current
/// format: each key that changes is deleted and its value put under the new key. Keys of no
/// [`KeyFamily`] (offsets, checkpoint marks, metadata) are left as they are.
pub fn migrate_v0(
    entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Result<StateBatch, KeyError> {
    let mut batch = StateBatch::default();
    for (key, value) in entries {
        let Some(family) = FAMILIES
            .iter()
            .find(|f| key.starts_with(f.prefix.as_bytes()))
        else {
            continue;
        };
        if let Some(new) = family.migrate(&key)? {
            batch.deletes.push(key);
            batch.puts.push((new, value));
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escaping_is_readable_and_only_where_needed() {
        assert_eq!(
            encode_components(&["c1", "2026-01-02"]),
            "c1\u{0}2026-01-02"
        );
        assert_eq!(
            encode_components(&["50% off/été", "a\u{0}b\n\u{85}"]),
            "50%25 off/été\u{0}a%00b%0A%C2%85"
        );
        let key = LEDGER_SPEND.key(0xab, &["c\u{0}x", "2026-01-02"]);
        assert_eq!(
            show_key(&key),
            "\"ledger/spend/00000000000000ab/c%00x\\x002026-01-02\""
        );
        assert_eq!(
            LEDGER_SPEND.parse(&key),
            Ok((0xab, vec!["c\u{0}x".to_string(), "2026-01-02".to_string()]))
        );
    }

    #[test]
    fn unreadable_keys_are_errors_naming_the_key() {
        let bad: [&[u8]; 7] = [
            b"ledger/spend/00000000000000ab/c",
            b"ledger/spend/00000000000000ab/c\0d\0e",
            b"ledger/spend/zz/c\0d",
            b"ledger/spend/00000000000000ab/50%zz\0d",
            b"ledger/spend/00000000000000ab/%41\0d",
            b"ledger/spend/00000000000000ab/a\nb\0d",
            b"ledger/spend/00000000000000ab/\xff\0d",
        ];
        for key in bad {
            let e = LEDGER_SPEND.parse(key).unwrap_err();
            assert_eq!(e.key, show_key(key));
            assert!(
                e.to_string().starts_with("state key \"ledger/spend/"),
                "{e}"
            );
        }
        assert!(PACING.parse(b"ledger/spend/00000000000000ab/c").is_err());
    }

    #[test]
    fn version_0_keys_are_migrated_or_refused() {
        let value = b"42".to_vec();
        let raw = |family: KeyFamily, rest: &str| {
            let mut k = format!("{}{:016x}/", family.prefix, 7).into_bytes();
            k.extend_from_slice(rest.as_bytes());
            k
        };
        let entries = vec![
            (raw(LEDGER_SPEND, "plain\u{0}2026-01-02"), value.clone()),
            (raw(LEDGER_SPEND, "50%\u{0}2026-01-02"), value.clone()),
            (raw(LEDGER_SPEND, "a\u{0}b\u{0}2026-01-02"), value.clone()),
            (raw(PACING, "tab\there"), value.clone()),
            (raw(ATTRIBUTION, "u%\u{0}adv"), value.clone()),
            (raw(REPORT_ROWS, r#"{"group":["10%"]}"#), value.clone()),
            (raw(LEDGER_DEDUP, &format!("{:032x}", 5)), value.clone()),
            (b"offsets/clicks/0".to_vec(), value.clone()),
        ];
        let batch = migrate_v0(entries.clone()).unwrap();
        assert_eq!(
            batch.deletes,
            vec![
                entries[1].0.clone(),
                entries[2].0.clone(),
                entries[3].0.clone(),
                entries[4].0.clone(),
                entries[5].0.clone()
            ]
        );
        let moved: Vec<(u64, Vec<String>)> = batch
            .puts
            .iter()
            .map(|(k, v)| {
                assert_eq!(v, &value);
                let family = FAMILIES
                    .iter()
                    .find(|f| k.starts_with(f.prefix.as_bytes()))
                    .unwrap();
                family.parse(k).unwrap()
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            moved,
            vec![
                (7, s(&["50%", "2026-01-02"])),
                (7, s(&["a\u{0}b", "2026-01-02"])),
                (7, s(&["tab\there"])),
                (7, s(&["u%", "adv"])),
                (7, s(&[r#"{"group":["10%"]}"#])),
            ]
        );
        // A version-0 id that looks escaped is still read as written.
        let batch = migrate_v0([(raw(PACING, "%25"), value.clone())]).unwrap();
        assert_eq!(PACING.parse(&batch.puts[0].0).unwrap().1, s(&["%25"]));
        // Two ids, one with a NUL: ambiguous.
        let e = migrate_v0([(raw(LABELS, "r\u{0}x\u{0}1"), value)]).unwrap_err();
        assert!(e.to_string().contains("ambiguous"), "{e}");
        assert!(
            e.key.starts_with("\"labels/0000000000000007/r\\x00x"),
            "{e}"
        );
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            proptest::collection::vec(
                prop_oneof![
                    Just('%'),
                    Just('\0'),
                    Just('\n'),
                    Just('\u{85}'),
                    Just('/'),
                    Just('0'),
                    Just('A'),
                    Just('é'),
                ],
                0..8
            )
            .prop_map(|cs| cs.into_iter().collect()),
        ]
    }

    #[test]
    fn hex_digits_are_formats() {
        let mut v = 0x0123_4567_89ab_cdefu64;
        for _ in 0..10_000 {
            assert_eq!(hex64(v), *format!("{v:016x}").as_bytes());
            v = v.rotate_left(7).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (v >> 3);
        }
        for v in [0, u64::MAX, 9, 10, 15, 16, 0xa000_0000_0000_0009] {
            assert_eq!(hex64(v), *format!("{v:016x}").as_bytes());
        }
    }

    proptest! {
        /// The word-at-a-time check is the byte rule.
        #[test]
        fn plain_is_printable_ascii_without_percent(
            bytes in proptest::collection::vec(prop_oneof![any::<u8>(), 0x1fu8..0x28, 0x7du8..0x81], 0..40)
        ) {
            let simple = bytes.iter().all(|b| (0x20..0x7f).contains(b) && *b != b'%');
            prop_assert_eq!(is_plain(&bytes), simple);
        }
    }

    proptest! {
        #[test]
        fn components_round_trip(parts in proptest::collection::vec(component(), 1..5)) {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let encoded = encode_components(&refs);
            prop_assert_eq!(decode_components(encoded.as_bytes(), parts.len()), Ok(parts.clone()));
            prop_assert!(!encoded.chars().any(|c| c.is_control() && c != '\0'));
            let family = KeyFamily { prefix: "t/", arity: parts.len(), legacy: Legacy::Raw };
            let key = family.key(route(&parts[0]), &refs);
            // The one-buffer key is the documented format, byte for byte.
            let formatted = format!("t/{:016x}/{encoded}", route(&parts[0]));
            prop_assert_eq!(&key, &formatted.into_bytes());
            let value = u128::from(route(&parts[0])) << 64 | u128::from(route(&refs.concat()));
            let formatted = format!("{value:032x}");
            prop_assert_eq!(&hex128(value)[..], formatted.as_bytes());
            let low = format!("{:016x}", route(&parts[0]));
            prop_assert_eq!(&hex64(route(&parts[0]))[..], low.as_bytes());
            prop_assert_eq!(family.parse(&key), Ok((route(&parts[0]), parts)));
        }

        #[test]
        fn distinct_component_lists_give_distinct_keys(
            a in proptest::collection::vec(component(), 1..4),
            b in proptest::collection::vec(component(), 1..4),
        ) {
            let ea = encode_components(&a.iter().map(String::as_str).collect::<Vec<_>>());
            let eb = encode_components(&b.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert_eq!(a == b, ea == eb);
        }
    }
}
