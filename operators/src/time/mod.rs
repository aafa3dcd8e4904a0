//! Event time: milliseconds since the Unix epoch, read from RFC 3339 strings or integers.

pub mod day;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC. Every event time in adstream is one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventTime(pub i64);

impl EventTime {
    /// The current wall-clock time.
    pub fn now() -> Self {
        EventTime(chrono::Utc::now().timestamp_millis())
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 string (`2026-11-25T10:00:00Z`) or decimal milliseconds.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(ms) = text.parse::<i64>() {
            return Ok(EventTime(ms));
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| EventTime(t.timestamp_millis()))
            .map_err(|e| format!("not an RFC 3339 time or integer milliseconds ({e})"))
    }

    /// RFC 3339 rendering with millisecond precision, in UTC.
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = EventTime;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 time string or integer milliseconds since the epoch")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<EventTime, E> {
                Ok(EventTime(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EventTime, E> {
                i64::try_from(v)
                    .map(EventTime)
                    .map_err(|_| E::custom("time out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EventTime, E> {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| EventTime(t.timestamp_millis()))
                    .map_err(|e| E::custom(format!("not an RFC 3339 time ({e})")))
            }
        }
        // Binary formats between workers (bincode) are not self-describing: there it is an i64.
        if d.is_human_readable() {
            d.deserialize_any(Visitor)
        } else {
            d.deserialize_i64(Visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let a: EventTime = serde_json::from_str("\"2026-01-01T00:00:01Z\"").unwrap();
        let b: EventTime = serde_json::from_str("1767225601000").unwrap();
        assert_eq!(a, b);
        assert_eq!(EventTime::parse("1767225601000").unwrap(), a);
        assert!(serde_json::from_str::<EventTime>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<EventTime>("1.5").is_err());
    }
}
