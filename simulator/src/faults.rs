//! Bad input the simulator injects on purpose, at configurable rates: duplicates, late events,
//! malformed messages and forged billing tokens. The pipeline must charge none of them twice or
//! wrongly, and dead-letter the ones that are invalid.

use rand::Rng;

/// Injection rates (per produced event) and the lateness of late events.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Share of events produced a second time, shortly after the first.
    pub duplicate: f64,
    /// Share of events held back by `late_by_ms` (keeping their `ts`); late for the pipeline
    /// when `late_by_ms` exceeds its `time.lateness_ms` (5 s against 2 s by default).
    pub late: f64,
    /// How long a late event is held back, ms.
    pub late_by_ms: i64,
    /// Extra malformed messages per event.
    pub malformed: f64,
    /// Extra copies with a forged billing token per event.
    pub forged: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            duplicate: 0.01,
            late: 0.01,
            late_by_ms: 5_000,
            malformed: 0.002,
            forged: 0.002,
        }
    }
}

/// Why fault rates were refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("--{name} must be a rate between 0 and 1, got {value}")]
pub struct RateError {
    /// The flag.
    pub name: &'static str,
    /// What was given.
    pub value: f64,
}

impl Faults {
    /// Checks that every rate lies in 0..=1.
    pub fn validate(&self) -> Result<(), RateError> {
        for (name, value) in [
            ("duplicates", self.duplicate),
            ("late", self.late),
            ("malformed", self.malformed),
            ("forged", self.forged),
        ] {
            if !(0.0..=1.0).contains(&value) || value.is_nan() {
                return Err(RateError { name, value });
            }
        }
        Ok(())
    }
}

/// A token whose claims were altered after signing (a raised price), so its signature fails.
pub fn forge(token: &str) -> String {
    // v1.<claims>.<mac>: flip one character of the claims part.
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    if let Some(claims) = parts.get_mut(1) {
        let mut bytes = claims.clone().into_bytes();
        let middle = bytes.len() / 2;
        if let Some(b) = bytes.get_mut(middle) {
            *b = if *b == b'A' { b'B' } else { b'A' };
        }
        *claims = String::from_utf8_lossy(&bytes).into_owned();
        return parts.join(".");
    }
    format!("{token}x")
}

/// A malformed message of one of the kinds real pipelines see.
pub fn malformed(rng: &mut impl Rng, valid: &str) -> Vec<u8> {
    match rng.random_range(0..5) {
        // Truncated JSON.
        0 => valid.as_bytes()[..valid.len() / 2].to_vec(),
        // Not JSON at all.
        1 => b"\x00\x9f garbage \xff".to_vec(),
        // A required field missing.
        2 => valid.replacen("\"event_id\"", "\"event\"", 1).into_bytes(),
        // A field of the wrong type.
        3 => valid
            .replacen("\"ts\":", "\"ts\":\"yesterday\",\"was\":", 1)
            .into_bytes(),
        // An empty object.
        _ => b"{}".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adstream_operators::events::AdEvent;
    use adstream_operators::events::Billing;
    use adstream_operators::time::EventTime;
    use adstream_operators::token::{sign, verify, WinClaims};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn forged_tokens_fail_verification() {
        let claims = WinClaims {
            request_id: "r".into(),
            imp_id: "1".into(),
            campaign_id: "c".into(),
            advertiser_id: "a".into(),
            ad_id: "ad".into(),
            billing: Billing::Cpm,
            charge_micros: 1000,
            issued: EventTime(5),
            country: None,
            device: None,
        };
        let token = sign(b"k", &claims);
        assert!(verify(b"k", &token).is_ok());
        assert!(verify(b"k", &forge(&token)).is_err());
    }

    #[test]
    fn malformed_messages_do_not_parse() {
        let valid = r#"{"event_id":"e","ts":1,"request_id":"r","imp_id":"1","campaign_id":"c","ad_id":"a","user_id":"u","billing_token":"t"}"#;
        AdEvent::parse(valid.as_bytes()).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let bad = malformed(&mut rng, valid);
            assert!(
                AdEvent::parse(&bad).is_err(),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    #[test]
    fn rates_are_checked() {
        assert!(Faults::default().validate().is_ok());
        let f = Faults {
            late: 1.5,
            ..Faults::default()
        };
        assert_eq!(
            f.validate(),
            Err(RateError {
                name: "late",
                value: 1.5
            })
        );
    }
}
