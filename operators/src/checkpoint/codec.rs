//! The on-disk format of checkpointed values: versioned, compact binary, read back or refused.
//!
//! Every value an operator checkpoints is written as a two-byte header, [`BINARY`] then
//! [`VALUE_VERSION`], followed by the value in [postcard](https://docs.rs/postcard)'s wire format
//! (varint integers, length-prefixed strings; postcard 1.x documents it as stable). Reading:
//! - the current version decodes;
//! - a value without the header is the state adstream wrote before this format (JSON documents,
//!   and numbers as text): it is migrated on read by the operator's legacy decoder, and rewritten
//!   in the current format the next time it changes;
//! - any other version (state written by a newer adstream, or damaged) is refused with an error
//!   that names the key and the versions: the process stops rather than guess.
//!
//! Legacy values can never be mistaken for binary ones: JSON and numbers never start with a zero
//! byte.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::RestoreError;

/// First byte of every value in the binary format (never the first byte of JSON or text).
pub const BINARY: u8 = 0;

/// The format version this build writes and reads. Bump it when a checkpointed type changes
/// shape, and teach [`decode_with`] to migrate the version before.
///
/// - 1: the first binary format.
/// - 2: the served record in the label join's entries logs the prior (`prior_pctr`,
///   `prior_pcvr`). Every other type's layout is that of version 1, so their version-1 values
///   decode as they are; the label join reads its version-1 entries through
///   [`decode_migrating`].
pub const VALUE_VERSION: u8 = 2;

/// The earlier binary version this build still reads.
pub const PREVIOUS_VERSION: u8 = 1;

/// A value could not be encoded: a bug in a state type (a field the format cannot carry), never
/// a property of the input. Operators stop on it rather than write a partial checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("encoding a checkpoint value: {0}")]
pub struct EncodeError(#[from] postcard::Error);

/// `value` in the current format, header included.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    Ok(to_vec_after(&[BINARY, VALUE_VERSION], value)?)
}

/// Values up to this size are written once, into a buffer of their exact size.
const STACK_BYTES: usize = 1024;

/// `head` followed by `value` in postcard's wire format, in a vector of exactly that size: the
/// value is written on the stack first, then copied once, where writing it into a growing
/// vector would reallocate it several times (a checkpoint encodes every changed entry). A
/// value larger than [`STACK_BYTES`] is written into a growing vector instead.
pub fn to_vec_after<T: Serialize + ?Sized>(
    head: &[u8],
    value: &T,
) -> Result<Vec<u8>, postcard::Error> {
    let mut stack = [0u8; STACK_BYTES];
    match postcard::to_slice(value, &mut stack) {
        Ok(body) => {
            let mut out = Vec::with_capacity(head.len() + body.len());
            out.extend_from_slice(head);
            out.extend_from_slice(body);
            Ok(out)
        }
        Err(postcard::Error::SerializeBufferFull) => {
            let mut out = Vec::with_capacity(head.len() + 2 * STACK_BYTES);
            out.extend_from_slice(head);
            postcard::to_extend(value, out)
        }
        Err(e) => Err(e),
    }
}

/// A value in the current format with nothing after its header yet, and room for `capacity`
/// more bytes: for state that writes its values from parts it keeps encoded.
pub fn started(capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + capacity);
    out.extend_from_slice(&[BINARY, VALUE_VERSION]);
    out
}

/// Appends a sequence's length as the format writes it before the sequence's elements
/// (postcard's varint: LEB128, seven bits a byte, low bits first).
pub fn push_length(out: &mut Vec<u8>, len: usize) {
    push_unsigned(out, len as u64);
}

/// Appends an unsigned integer (`u16` to `u64`) as the format writes it: postcard's varint.
pub fn push_unsigned(out: &mut Vec<u8>, mut n: u64) {
    if n < 0x80 {
        out.push(n as u8);
        return;
    }
    let mut bytes = [0u8; MAX_VARINT];
    let mut len = 0;
    while n >= 0x80 {
        bytes[len] = (n as u8) | 0x80;
        n >>= 7;
        len += 1;
    }
    bytes[len] = n as u8;
    out.extend_from_slice(&bytes[..=len]);
}

/// Appends small unsigned integers as the format writes them, one after the other: one byte
/// each when all are below 128 (as most counts are), else a varint each.
pub fn push_all_unsigned(out: &mut Vec<u8>, values: &[u16]) {
    if values.iter().all(|n| *n < 0x80) {
        out.extend(values.iter().map(|n| *n as u8));
    } else {
        for n in values {
            push_unsigned(out, u64::from(*n));
        }
    }
}

/// Appends a signed integer as the format writes it: zigzag, then a varint.
pub fn push_signed(out: &mut Vec<u8>, n: i64) {
    push_unsigned(out, ((n << 1) ^ (n >> 63)) as u64);
}

/// Appends a string as the format writes it: its length in bytes, then its bytes.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    push_length(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Bytes [`push_unsigned`] writes for a value of up to 64 bits, at most.
pub const MAX_VARINT: usize = 10;

/// Decodes the value stored under `key`: the current format, or a legacy (pre-binary) value
/// through `legacy`. Any other version is refused.
pub fn decode_with<T: DeserializeOwned>(
    key: &[u8],
    value: &[u8],
    legacy: impl FnOnce(&[u8], &[u8]) -> Result<T, RestoreError>,
) -> Result<T, RestoreError> {
    match value {
        [BINARY, VALUE_VERSION | PREVIOUS_VERSION, body @ ..] => {
            postcard::from_bytes(body).map_err(|e| RestoreError::value(key, e))
        }
        [BINARY, version, ..] => Err(RestoreError::format(key, *version)),
        [BINARY] => Err(RestoreError::value(key, "truncated format header")),
        _ => legacy(key, value),
    }
}

/// Decodes a value of a type whose layout changed in the current version: a
/// [`PREVIOUS_VERSION`] value decodes as `Previous`, that version's layout, and converts; the
/// current version and legacy JSON decode as `T`. Any other version is refused.
pub fn decode_migrating<T, Previous>(key: &[u8], value: &[u8]) -> Result<T, RestoreError>
where
    T: DeserializeOwned,
    Previous: DeserializeOwned + Into<T>,
{
    match value {
        [BINARY, PREVIOUS_VERSION, body @ ..] => postcard::from_bytes::<Previous>(body)
            .map(Into::into)
            .map_err(|e| RestoreError::value(key, e)),
        _ => decode(key, value),
    }
}

/// Decodes a value stored under `key`: the current format, or the JSON adstream wrote before it.
pub fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, RestoreError> {
    decode_with(key, value, super::json_value)
}

/// Decodes a number stored under `key`: the current format, or the text adstream wrote before it.
pub fn decode_number<T>(key: &[u8], value: &[u8]) -> Result<T, RestoreError>
where
    T: DeserializeOwned + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    decode_with(key, value, super::text_value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        at: Option<i64>,
        amounts: Vec<(u64, u64)>,
    }

    fn sample() -> Sample {
        Sample {
            name: "camp-1".into(),
            at: Some(-5),
            amounts: vec![(1, 2), (u64::MAX, 0)],
        }
    }

    #[test]
    fn round_trips_with_its_header() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(&bytes[..2], &[BINARY, VALUE_VERSION]);
        assert_eq!(decode::<Sample>(b"k", &bytes), Ok(sample()));
        assert_eq!(
            decode_number::<i64>(b"k", &encode(&-42i64).unwrap()),
            Ok(-42)
        );
    }

    #[test]
    fn values_of_any_size_are_postcards_bytes_in_a_vector_of_their_size() {
        // Around the stack buffer's size: written there, or into a growing vector past it.
        for len in [
            0,
            1,
            100,
            STACK_BYTES - 20,
            STACK_BYTES - 3,
            STACK_BYTES,
            5 * STACK_BYTES,
        ] {
            let value = Sample {
                name: "x".repeat(len),
                ..sample()
            };
            let mut want = vec![BINARY, VALUE_VERSION];
            want.extend(postcard::to_allocvec(&value).unwrap());
            let bytes = encode(&value).unwrap();
            assert_eq!(bytes, want, "{len}");
            if bytes.len() <= STACK_BYTES {
                assert_eq!(bytes.capacity(), bytes.len(), "{len}: one exact allocation");
            }
            assert_eq!(decode::<Sample>(b"k", &bytes), Ok(value));
            assert_eq!(
                to_vec_after(&[], &-42i64).unwrap(),
                postcard::to_allocvec(&-42i64).unwrap()
            );
        }
    }

    #[test]
    fn is_smaller_than_the_json_it_replaces() {
        let binary = encode(&sample()).unwrap();
        let json = serde_json::to_vec(&sample()).unwrap();
        assert!(binary.len() * 2 < json.len(), "{binary:?} vs {json:?}");
    }

    #[test]
    fn migrates_legacy_json_and_text() {
        let json = serde_json::to_vec(&sample()).unwrap();
        assert_eq!(decode::<Sample>(b"k", &json), Ok(sample()));
        assert_eq!(decode_number::<i64>(b"k", b"-42"), Ok(-42));
        assert_eq!(decode_number::<u64>(b"k", b"7"), Ok(7));
    }

    #[test]
    fn refuses_other_versions_naming_the_key() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[1] = VALUE_VERSION + 1;
        let err = decode::<Sample>(b"ledger/dedup/x", &bytes).unwrap_err();
        assert!(matches!(err, RestoreError::Format { found, .. } if found == VALUE_VERSION + 1));
        let text = err.to_string();
        assert!(text.contains("ledger/dedup/x"), "{text}");
        assert!(text.contains(&format!("v{}", VALUE_VERSION + 1)), "{text}");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Grown {
        name: String,
        added: Option<u32>,
        at: Option<i64>,
        amounts: Vec<(u64, u64)>,
    }

    impl From<Sample> for Grown {
        fn from(s: Sample) -> Self {
            Grown {
                name: s.name,
                added: None,
                at: s.at,
                amounts: s.amounts,
            }
        }
    }

    #[test]
    fn reads_the_previous_version_as_it_was_or_through_its_migration() {
        let mut previous = encode(&sample()).unwrap();
        previous[1] = PREVIOUS_VERSION;
        // A type whose layout did not change reads it as it is.
        assert_eq!(decode::<Sample>(b"k", &previous), Ok(sample()));
        // A type that grew a field reads it through the previous layout...
        let grown: Grown = decode_migrating::<Grown, Sample>(b"k", &previous).unwrap();
        assert_eq!(grown, Grown::from(sample()));
        // ... and its current values, and JSON, as they are.
        let current = Grown {
            added: Some(3),
            ..Grown::from(sample())
        };
        let bytes = encode(&current).unwrap();
        assert_eq!(decode_migrating::<Grown, Sample>(b"k", &bytes), Ok(current));
        let json = serde_json::to_vec(&sample()).unwrap();
        assert_eq!(
            decode_migrating::<Grown, Sample>(b"k", &json),
            Ok(Grown::from(sample()))
        );
    }

    #[test]
    fn refuses_damaged_values() {
        let bytes = encode(&sample()).unwrap();
        assert!(decode::<Sample>(b"k", &bytes[..bytes.len() - 3]).is_err());
        assert!(decode::<Sample>(b"k", &[BINARY]).is_err());
        assert!(decode::<Sample>(b"k", b"{not json").is_err());
        assert!(decode_number::<i64>(b"k", b"12x").is_err());
    }
}
