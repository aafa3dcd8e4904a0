//! Turning raw Kafka messages into typed, verified records, and everything else into dead letters.
//!
//! Errors are data here (as in Materialize's "oks and errs"): [`decode`] never fails, it returns
//! either a record the graph can use or a [`DeadLetter`] that says why not and where it came from.

use crate::events::{
    check_id, parse_json, require_id, require_optional_id, AdEventRef, Campaign, Conversion,
    EventKind, ParseError,
};
use crate::records::Served;
pub use crate::records::{DeadLetter, Ingested, RawBytes, RawMessage, Reason, StreamId};
use crate::time::EventTime;
use crate::token::{self, TokenError};

/// Parses a served-ad record; its ids follow the id rule ([`crate::events::check_id`]).
fn parse_served(bytes: &[u8]) -> Result<Served, ParseError> {
    let served: Served = parse_json(bytes)?;
    for (field, value) in [
        ("request_id", &served.request_id),
        ("imp_id", &served.imp_id),
        ("campaign_id", &served.campaign_id),
        ("advertiser_id", &served.advertiser_id),
        ("ad_id", &served.ad_id),
    ] {
        require_id(field, value)?;
    }
    require_optional_id("user_id", served.user_id.as_deref())?;
    require_optional_id("tag_id", served.tag_id.as_deref())?;
    Ok(served)
}

/// Checks that a served record read back was written by this pipeline's serving: its billing
/// token verifies, and the token's claims are the record's own (so a forged record, or one
/// whose time, price or ids were altered, is refused).
pub fn verify_served(key: &token::TokenKey, served: &Served) -> Result<(), TokenError> {
    if served.billing_token.is_empty() {
        return Err(TokenError::Missing);
    }
    let signed = token::verify_with(key, &served.billing_token)?;
    let claimed = served.claims();
    let fields: [(&'static str, bool); 10] = [
        ("request_id", signed.request_id == claimed.request_id),
        ("imp_id", signed.imp_id == claimed.imp_id),
        ("campaign_id", signed.campaign_id == claimed.campaign_id),
        (
            "advertiser_id",
            signed.advertiser_id == claimed.advertiser_id,
        ),
        ("ad_id", signed.ad_id == claimed.ad_id),
        ("billing", signed.billing == claimed.billing),
        (
            "charge_micros",
            signed.charge_micros == claimed.charge_micros,
        ),
        ("ts", signed.issued == claimed.issued),
        ("country", signed.country == claimed.country),
        ("device", signed.device == claimed.device),
    ];
    match fields.into_iter().find(|(_, same)| !same) {
        Some((field, _)) => Err(TokenError::Mismatch(field)),
        None => Ok(()),
    }
}

fn token_reason(err: &TokenError) -> Reason {
    match err {
        TokenError::Missing => Reason::MissingToken,
        TokenError::Mismatch(_) => Reason::TokenMismatch,
        TokenError::Malformed(_) | TokenError::BadSignature => Reason::BadToken,
    }
}

/// The key of an `ads.campaigns` message, which is the campaign's id: UTF-8 and a valid id.
fn campaign_key(msg: &RawMessage) -> Result<Option<&str>, String> {
    let Some(key) = msg.key.as_deref() else {
        return Ok(None);
    };
    let key = std::str::from_utf8(key)
        .map_err(|_| "field `key` (the campaign_id): not UTF-8".to_string())?;
    check_id(key).map_err(|e| format!("field `key` (the campaign_id): {e}"))?;
    Ok(Some(key))
}

/// What [`decode`] needs from the pipeline.
#[derive(Clone, Debug)]
pub struct DecodeConfig {
    /// HMAC key of billing tokens.
    pub secret: Vec<u8>,
    /// Larger messages are dead-lettered (and truncated to this size there).
    pub max_message_bytes: usize,
    /// `secret` as a verifying key, made once.
    key: token::TokenKey,
}

impl DecodeConfig {
    /// The settings of a pipeline whose tokens are signed with `secret`.
    pub fn new(secret: Vec<u8>, max_message_bytes: usize) -> Self {
        DecodeConfig {
            key: token::TokenKey::new(&secret),
            secret,
            max_message_bytes,
        }
    }
}

/// A conversion, its message's bytes moved into the record.
fn decode_conversion(msg: RawMessage) -> (Option<EventTime>, Ingested) {
    let kafka_time = msg.timestamp_ms.map(EventTime);
    let bytes = msg.payload.as_deref().unwrap_or_default();
    match Conversion::parse(bytes) {
        Ok(event) => {
            let origin = msg.origin();
            (
                Some(event.ts),
                Ingested::Conversion {
                    event,
                    origin,
                    raw: Box::new(RawBytes {
                        key: msg.key,
                        payload: msg.payload.unwrap_or_default(),
                    }),
                },
            )
        }
        Err(e) => (kafka_time, refuse_parse(&msg, e)),
    }
}

fn refuse_parse(msg: &RawMessage, err: ParseError) -> Ingested {
    let reason = match err {
        ParseError::Malformed(_) => Reason::MalformedJson,
        ParseError::Field { .. } => Reason::InvalidField,
    };
    Ingested::Dead(Box::new(DeadLetter::of(msg, reason, err.to_string())))
}

/// An impression or click: parsed in place, verified against its token, and kept as what the
/// graph needs (its time, its viewer, the claims), the message's bytes moved, not copied, into
/// the record for a dead letter downstream.
fn decode_ad(
    msg: RawMessage,
    kind: EventKind,
    cfg: &DecodeConfig,
) -> (Option<EventTime>, Ingested) {
    let kafka_time = msg.timestamp_ms.map(EventTime);
    let bytes = msg.payload.as_deref().unwrap_or_default();
    let event = match AdEventRef::parse(bytes) {
        Ok(e) => e,
        Err(e) => return (kafka_time, refuse_parse(&msg, e)),
    };
    let ts = event.ts;
    let verified = token::verify_win(
        &cfg.key,
        event.billing_token.as_deref(),
        [
            &event.request_id,
            &event.imp_id,
            &event.campaign_id,
            &event.ad_id,
        ],
    );
    match verified {
        Ok(claims) => {
            let user_id = event.user_id.into_owned();
            let origin = msg.origin();
            (
                Some(ts),
                Ingested::Ad {
                    kind,
                    ts,
                    user_id,
                    claims: claims.into(),
                    origin,
                    raw: Box::new(RawBytes {
                        key: msg.key,
                        payload: msg.payload.unwrap_or_default(),
                    }),
                },
            )
        }
        Err(err) => (
            Some(ts),
            Ingested::Dead(Box::new(DeadLetter::of(
                &msg,
                token_reason(&err),
                err.to_string(),
            ))),
        ),
    }
}

/// Decodes one message; returns its event time (if it has one) and the record.
pub fn decode(msg: RawMessage, cfg: &DecodeConfig) -> (Option<EventTime>, Ingested) {
    let kafka_time = msg.timestamp_ms.map(EventTime);
    let size = msg.payload.as_ref().map_or(0, Vec::len);
    if size > cfg.max_message_bytes {
        let mut dead = DeadLetter::of(
            &msg,
            Reason::Oversize,
            format!(
                "message of {size} bytes exceeds max_message_bytes = {}",
                cfg.max_message_bytes
            ),
        );
        dead.payload.truncate(cfg.max_message_bytes);
        dead.truncated = true;
        return (kafka_time, Ingested::Dead(Box::new(dead)));
    }
    match msg.stream {
        StreamId::Impressions => decode_ad(msg, EventKind::Impression, cfg),
        StreamId::Clicks => decode_ad(msg, EventKind::Click, cfg),
        StreamId::Conversions => decode_conversion(msg),
        StreamId::Campaigns => (kafka_time, decode_campaign(&msg)),
        StreamId::Served => decode_served(&msg, cfg),
    }
}

/// A campaign upsert, or a tombstone, keyed by its id.
fn decode_campaign(msg: &RawMessage) -> Ingested {
    let key = match campaign_key(msg) {
        Ok(key) => key,
        Err(detail) => {
            return Ingested::Dead(Box::new(DeadLetter::of(msg, Reason::InvalidField, detail)))
        }
    };
    match &msg.payload {
        None => match key {
            Some(id) => Ingested::Campaign {
                campaign_id: id.to_string(),
                campaign: None,
            },
            _ => Ingested::Dead(Box::new(DeadLetter::of(
                msg,
                Reason::InvalidField,
                "tombstone without a campaign_id key",
            ))),
        },
        Some(bytes) => match Campaign::parse(bytes) {
            Ok(c) => match key {
                Some(k) if k != c.campaign_id => Ingested::Dead(Box::new(DeadLetter::of(
                    msg,
                    Reason::InvalidField,
                    format!(
                        "field `campaign_id`: {:?} differs from the message key {k:?}",
                        c.campaign_id
                    ),
                ))),
                _ => Ingested::Campaign {
                    campaign_id: c.campaign_id.clone(),
                    campaign: Some(Box::new(c)),
                },
            },
            Err(e) => refuse_parse(msg, e),
        },
    }
}

/// A served record read back, verified against its own token.
fn decode_served(msg: &RawMessage, cfg: &DecodeConfig) -> (Option<EventTime>, Ingested) {
    let kafka_time = msg.timestamp_ms.map(EventTime);
    let bytes = msg.payload.as_deref().unwrap_or_default();
    match parse_served(bytes) {
        Ok(served) => match verify_served(&cfg.key, &served) {
            Ok(()) => (Some(served.ts), Ingested::Served(Box::new(served))),
            // Dated by Kafka, not by the record's own (unverified) time.
            Err(err) => (
                kafka_time,
                Ingested::Dead(Box::new(DeadLetter::of(
                    msg,
                    token_reason(&err),
                    format!("served record: {err}"),
                ))),
            ),
        },
        Err(e) => (kafka_time, refuse_parse(msg, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Billing;
    use crate::records::Origin;
    use crate::token::WinClaims;

    fn cfg() -> DecodeConfig {
        DecodeConfig::new(b"s".to_vec(), 4096)
    }

    fn msg(stream: StreamId, payload: &[u8]) -> RawMessage {
        RawMessage {
            stream,
            partition: 2,
            offset: 40,
            key: Some(b"k".to_vec()),
            payload: Some(payload.to_vec()),
            timestamp_ms: Some(5),
        }
    }

    fn click(token: &str) -> String {
        format!(
            r#"{{"event_id":"e1","ts":1000,"request_id":"r","imp_id":"1","campaign_id":"c","ad_id":"a","user_id":"u","billing_token":"{token}"}}"#
        )
    }

    fn claims() -> WinClaims {
        WinClaims {
            request_id: "r".into(),
            imp_id: "1".into(),
            campaign_id: "c".into(),
            advertiser_id: "adv".into(),
            ad_id: "a".into(),
            billing: Billing::Cpc,
            charge_micros: 10,
            issued: EventTime(900),
            country: None,
            device: None,
        }
    }

    fn reason(i: &Ingested) -> Option<Reason> {
        match i {
            Ingested::Dead(d) => Some(d.reason),
            _ => None,
        }
    }

    #[test]
    fn verified_click_decodes() {
        let t = token::sign(b"s", &claims());
        let (ts, rec) = decode(msg(StreamId::Clicks, click(&t).as_bytes()), &cfg());
        assert_eq!(ts, Some(EventTime(1000)));
        assert!(matches!(
            rec,
            Ingested::Ad {
                kind: EventKind::Click,
                ..
            }
        ));
    }

    #[test]
    fn escaped_ids_decode_as_their_text_and_the_message_is_kept_byte_for_byte() {
        let t = token::sign(b"s", &claims());
        // `\u0072` is `r`, `\u0031` is `1`, `\u0075` is `u`: escaped ids read as their text.
        let body = format!(
            r#"{{"event_id":"e1","ts":1000,"request_id":"\u0072","imp_id":"\u0031","campaign_id":"c","ad_id":"a","user_id":"\u0075","billing_token":"{t}"}}"#
        );
        let (_, rec) = decode(msg(StreamId::Clicks, body.as_bytes()), &cfg());
        let Ingested::Ad {
            user_id,
            claims: c,
            raw,
            ..
        } = rec
        else {
            panic!("not decoded: {rec:?}")
        };
        assert_eq!(user_id, "u");
        assert_eq!(*c, claims());
        assert_eq!(raw.payload, body.as_bytes());
        assert_eq!(raw.key.as_deref(), Some(&b"k"[..]));
        // A control character, escaped or not, is still refused, naming the field.
        let bad = body.replace(r#""\u0075""#, r#""\u0007""#);
        let (_, rec) = decode(msg(StreamId::Clicks, bad.as_bytes()), &cfg());
        let Ingested::Dead(dead) = rec else {
            panic!("accepted a control character")
        };
        assert_eq!(dead.reason, Reason::InvalidField);
        assert!(dead.detail.contains("user_id"), "{}", dead.detail);
    }

    #[test]
    fn every_kind_of_bad_input_is_a_dead_letter_with_its_reason() {
        let good = token::sign(b"s", &claims());
        let forged = token::sign(b"not-the-secret", &claims());
        let mut other = claims();
        other.request_id = "r2".into();
        let other = token::sign(b"s", &other);
        let cases: Vec<(RawMessage, Reason)> = vec![
            (msg(StreamId::Clicks, b"{not json"), Reason::MalformedJson),
            (
                msg(StreamId::Clicks, br#"{"event_id":"e"}"#),
                Reason::InvalidField,
            ),
            (
                msg(StreamId::Clicks, click(&forged).as_bytes()),
                Reason::BadToken,
            ),
            (
                msg(StreamId::Clicks, click("v1.x.y").as_bytes()),
                Reason::BadToken,
            ),
            (
                msg(StreamId::Clicks, click(&other).as_bytes()),
                Reason::TokenMismatch,
            ),
            (
                msg(
                    StreamId::Clicks,
                    click(&good)
                        .replace(",\"billing_token\"", ",\"x\"")
                        .as_bytes(),
                ),
                Reason::MissingToken,
            ),
            (
                msg(StreamId::Conversions, br#"{"event_id":"e","ts":"soon"}"#),
                Reason::InvalidField,
            ),
            (
                msg(StreamId::Campaigns, br#"{"campaign_id":1}"#),
                Reason::InvalidField,
            ),
            (
                msg(StreamId::Impressions, &vec![b' '; 5000]),
                Reason::Oversize,
            ),
        ];
        for (m, want) in cases {
            let (_, rec) = decode(m.clone(), &cfg());
            assert_eq!(
                reason(&rec),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(m.payload.as_deref().unwrap())
            );
            if let Ingested::Dead(d) = rec {
                assert_eq!(
                    d.origin,
                    Origin {
                        stream: m.stream as u8,
                        partition: 2,
                        offset: 40
                    }
                );
                assert!(d.payload.len() <= 4096);
            }
        }
    }

    #[test]
    fn campaign_tombstones_and_key_checks() {
        let mut m = msg(StreamId::Campaigns, b"");
        m.payload = None;
        let (_, rec) = decode(m.clone(), &cfg());
        assert_eq!(
            rec,
            Ingested::Campaign {
                campaign_id: "k".into(),
                campaign: None
            }
        );
        let body = br#"{"campaign_id":"c9","advertiser_id":"a","daily_budget_micros":1,"timezone":"UTC","billing":"cpm","bid_micros":1}"#;
        let (_, rec) = decode(msg(StreamId::Campaigns, body), &cfg());
        assert_eq!(reason(&rec), Some(Reason::InvalidField));
        let mut m = msg(StreamId::Campaigns, body);
        m.key = Some(b"c9".to_vec());
        assert!(matches!(
            decode(m, &cfg()).1,
            Ingested::Campaign {
                campaign: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn campaign_keys_follow_the_id_rule() {
        let body = br#"{"campaign_id":"c\u0000","advertiser_id":"a","daily_budget_micros":1,"timezone":"UTC","billing":"cpm","bid_micros":1}"#;
        for (key, payload, named) in [
            (b"c\0".to_vec(), None, "field `key`"),
            (b"c\n".to_vec(), None, "field `key`"),
            (vec![0xff, b'c'], None, "not UTF-8"),
            (vec![b'k'; 257], None, "257 bytes"),
            (b"c\0".to_vec(), Some(body.to_vec()), "field `key`"),
            (b"c".to_vec(), Some(body.to_vec()), "field `campaign_id`"),
        ] {
            let mut m = msg(StreamId::Campaigns, b"");
            m.key = Some(key);
            m.payload = payload;
            match decode(m, &cfg()).1 {
                Ingested::Dead(d) => {
                    assert_eq!(d.reason, Reason::InvalidField);
                    assert!(d.detail.contains(named), "{}", d.detail);
                }
                other => panic!("accepted: {other:?}"),
            }
        }
        let mut m = msg(StreamId::Campaigns, b"");
        m.key = Some("50% off/été".as_bytes().to_vec());
        m.payload = None;
        assert!(matches!(
            decode(m, &cfg()).1,
            Ingested::Campaign { campaign: None, .. }
        ));
    }

    #[test]
    fn served_records_decode_at_their_time_and_bad_ones_are_dead_letters() {
        let mut doc = serde_json::json!({
            "request_id": "r", "imp_id": "1", "ts": 1234, "campaign_id": "c",
            "advertiser_id": "adv", "ad_id": "a", "billing": "cpc", "charge_micros": 10,
            "price_ecpm_micros": 10, "pctr": 0.01, "pcvr": 0.1, "model_version": "m",
            "user_id": "u", "country": "FR", "device": null, "interests": ["x"], "tag_id": null,
        });
        let served: Served = serde_json::from_value(doc.clone()).unwrap();
        let signed = token::sign(&cfg().secret, &served.claims());
        doc["billing_token"] = signed.clone().into();
        let body = serde_json::to_vec(&doc).unwrap();
        let (ts, rec) = decode(msg(StreamId::Served, &body), &cfg());
        assert_eq!(ts, Some(EventTime(1234)));
        match rec {
            Ingested::Served(s) => {
                assert_eq!((s.request_id.as_str(), s.ts), ("r", EventTime(1234)))
            }
            other => panic!("not a served record: {other:?}"),
        }
        let field = |name: &str, value: serde_json::Value| {
            let mut d = doc.clone();
            match value {
                serde_json::Value::Null => d.as_object_mut().unwrap().remove(name),
                v => d.as_object_mut().unwrap().insert(name.into(), v),
            };
            serde_json::to_vec(&d).unwrap()
        };
        let cases = [
            (
                b"{\"request_id\":".to_vec(),
                Reason::MalformedJson,
                "malformed JSON",
            ),
            (
                field("ts", serde_json::Value::Null),
                Reason::InvalidField,
                "`ts`",
            ),
            (field("ts", "soon".into()), Reason::InvalidField, "`ts`"),
            (field("imp_id", "".into()), Reason::InvalidField, "`imp_id`"),
            (
                field("request_id", 7.into()),
                Reason::InvalidField,
                "`request_id`",
            ),
            // Forged records: no token, a token signed with another key, a valid token on a
            // record dated ahead, at another price or for another campaign.
            (
                field("billing_token", serde_json::Value::Null),
                Reason::MissingToken,
                "billing_token",
            ),
            (
                field(
                    "billing_token",
                    token::sign(b"other", &served.claims()).into(),
                ),
                Reason::BadToken,
                "signature",
            ),
            (
                field("ts", (1234 + 86_400_000).into()),
                Reason::TokenMismatch,
                "`ts`",
            ),
            (
                field("charge_micros", 1_000_000.into()),
                Reason::TokenMismatch,
                "`charge_micros`",
            ),
            (
                field("campaign_id", "c2".into()),
                Reason::TokenMismatch,
                "`campaign_id`",
            ),
            (
                field("request_id", "r\u{0}1".into()),
                Reason::InvalidField,
                "`request_id`",
            ),
            (
                field("campaign_id", "c\n".into()),
                Reason::InvalidField,
                "`campaign_id`",
            ),
            (
                field("advertiser_id", "x".repeat(257).into()),
                Reason::InvalidField,
                "`advertiser_id`",
            ),
            (
                field("ad_id", "\u{7f}".into()),
                Reason::InvalidField,
                "`ad_id`",
            ),
            (
                field("user_id", "u\t".into()),
                Reason::InvalidField,
                "`user_id`",
            ),
            (
                field("tag_id", "t\u{0}".into()),
                Reason::InvalidField,
                "`tag_id`",
            ),
        ];
        for (body, want, named) in cases {
            let (ts, rec) = decode(msg(StreamId::Served, &body), &cfg());
            assert_eq!(ts, Some(EventTime(5)), "the Kafka time");
            match rec {
                Ingested::Dead(d) => {
                    assert_eq!(d.reason, want, "{}", d.detail);
                    assert!(d.detail.contains(named), "{}", d.detail);
                    assert_eq!(d.origin.stream, StreamId::Served as u8);
                }
                other => panic!("accepted: {other:?}"),
            }
        }
        assert_eq!(StreamId::from_u8(4), Some(StreamId::Served));
        assert_eq!(StreamId::Served.as_str(), "served");
    }
}
