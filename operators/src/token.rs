//! Billing tokens: the auction's signed statement of a win and its price.
//!
//! A token is `v2.<claims>.<mac>`: the claims are base64url postcard ([`WinClaims`], its fields
//! in order) and the mac is HMAC-SHA256 over `v2.<claims>` keyed by the pipeline's secret. The
//! ledger charges only what a valid token says, so a forged or altered event can never move
//! spend. Tokens of the earlier format, `v1.<claims>.<mac>` with base64url JSON claims, still
//! verify: wins served before an upgrade are charged after it.
//!
//! Every billing event carries its token and the pipeline verifies each one, so the format is
//! binary: about half the length of the JSON one, and decoded without parsing field names or
//! scanning for escapes. The claims' fields are its layout: a change to [`WinClaims`] needs a
//! new version (and the old one kept verifiable), not an edit of this one. A pipeline rolled
//! back to a release before v2 refuses the v2 tokens of wins served since (dead letters,
//! `bad_token`, which can be replayed once it runs this release again).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::events::{AdEvent, Billing};
use crate::time::EventTime;

/// The format [`sign`] writes.
const VERSION: &str = "v2";
/// The earlier format, still verified.
const VERSION_JSON: &str = "v1";

/// A win's claims shared by every record made from one event (charge, touch, report fact):
/// cloned by reference count, never field by field.
pub type SharedClaims = std::sync::Arc<WinClaims>;

/// What a token proves: who won which slot, and what its billing event costs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinClaims {
    /// Ad request id.
    #[serde(rename = "rid")]
    pub request_id: String,
    /// Impression slot id.
    #[serde(rename = "imp")]
    pub imp_id: String,
    /// Winning campaign.
    #[serde(rename = "cid")]
    pub campaign_id: String,
    /// The campaign's advertiser (conversions are attributed per advertiser).
    #[serde(rename = "adv")]
    pub advertiser_id: String,
    /// Winning ad.
    #[serde(rename = "ad")]
    pub ad_id: String,
    /// Which event is charged.
    #[serde(rename = "bill")]
    pub billing: Billing,
    /// What that event is charged, micros (per impression for CPM, not per mille).
    #[serde(rename = "px")]
    pub charge_micros: u64,
    /// When the auction ran.
    #[serde(rename = "iat")]
    pub issued: EventTime,
    /// The request's country, when it gave one (a reporting dimension of every billing event).
    /// Absent fields are written as `null`, never skipped: claims also cross processes in
    /// bincode, which needs every field.
    #[serde(rename = "geo", default)]
    pub country: Option<String>,
    /// The request's device type, when it gave one (a reporting dimension).
    #[serde(rename = "dev", default)]
    pub device: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The event carries no token.
    #[error("missing billing_token")]
    Missing,
    /// Not of the `v2.claims.mac` (or `v1`) shape, or not decodable.
    #[error("malformed billing_token: {0}")]
    Malformed(&'static str),
    /// The signature does not match: forged or altered.
    #[error("billing_token signature does not verify")]
    BadSignature,
    /// Signed, but for another win than the event claims.
    #[error("billing_token is for another win: `{0}` differs")]
    Mismatch(&'static str),
}

type HmacSha256 = Hmac<Sha256>;

/// A pipeline's token key, with HMAC's keyed state computed once: verifying a token then hashes
/// the token alone (the key's two blocks are not hashed again for every event).
#[derive(Clone)]
pub struct TokenKey(HmacSha256);

impl TokenKey {
    /// The key of `secret`.
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        TokenKey(<HmacSha256 as Mac>::new_from_slice(secret).expect("hmac takes any key length"))
    }

    fn mac(&self, signed: &str) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(signed.as_bytes());
        mac
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

fn mac(secret: &[u8], signed: &str) -> HmacSha256 {
    TokenKey::new(secret).mac(signed)
}

/// Signs `claims` with `secret`.
pub fn sign(secret: &[u8], claims: &WinClaims) -> String {
    let encoded = postcard::to_allocvec(claims).expect("claims always serialise");
    signed_as(secret, VERSION, &encoded)
}

/// `version.<base64url(claims)>.<mac>` of already encoded `claims`.
fn signed_as(secret: &[u8], version: &str, claims: &[u8]) -> String {
    let signed = format!("{version}.{}", URL_SAFE_NO_PAD.encode(claims));
    let tag = mac(secret, &signed).finalize().into_bytes();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// The claims of a token of format `version` from their decoded bytes.
fn decode_claims(version: &str, bytes: &[u8]) -> Result<WinClaims, TokenError> {
    match version {
        VERSION => match postcard::take_from_bytes::<WinClaims>(bytes) {
            Ok((claims, [])) => Ok(claims),
            Ok(_) => Err(TokenError::Malformed("claims have trailing bytes")),
            Err(_) => Err(TokenError::Malformed("claims do not decode")),
        },
        VERSION_JSON => serde_json::from_slice(bytes)
            .map_err(|_| TokenError::Malformed("claims are not valid JSON")),
        _ => Err(TokenError::Malformed("unknown version")),
    }
}

/// Verifies a token's signature and returns its claims.
pub fn verify(secret: &[u8], token: &str) -> Result<WinClaims, TokenError> {
    verify_with(&TokenKey::new(secret), token)
}

/// [`verify`] with a key made once.
pub fn verify_with(key: &TokenKey, token: &str) -> Result<WinClaims, TokenError> {
    let (signed, tag) = token
        .rsplit_once('.')
        .ok_or(TokenError::Malformed("no signature"))?;
    let (version, claims) = signed
        .split_once('.')
        .ok_or(TokenError::Malformed("no claims"))?;
    if version != VERSION && version != VERSION_JSON {
        return Err(TokenError::Malformed("unknown version"));
    }
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    key.mac(signed)
        .verify_slice(&tag)
        .map_err(|_| TokenError::BadSignature)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(claims)
        .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
    decode_claims(version, &bytes)
}

/// Reads a token's claims WITHOUT checking its signature: for tools that hold tokens they were
/// given (the simulator reads its wins' issue times). Never use it to decide a charge.
pub fn claims_unverified(token: &str) -> Result<WinClaims, TokenError> {
    let mut parts = token.split('.');
    let (Some(version), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not of the v2.claims.mac shape"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(claims)
        .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
    decode_claims(version, &bytes)
}

/// Verifies the token an impression or click carries and that it names this very win.
pub fn verify_event(secret: &[u8], event: &AdEvent) -> Result<WinClaims, TokenError> {
    verify_win(
        &TokenKey::new(secret),
        event.billing_token.as_deref(),
        [
            &event.request_id,
            &event.imp_id,
            &event.campaign_id,
            &event.ad_id,
        ],
    )
}

/// Verifies `token` with `key` and that it names the win `[request_id, imp_id, campaign_id,
/// ad_id]` an event claims (what [`verify_event`] checks, from borrowed fields).
pub fn verify_win(
    key: &TokenKey,
    token: Option<&str>,
    [request_id, imp_id, campaign_id, ad_id]: [&str; 4],
) -> Result<WinClaims, TokenError> {
    let token = token.ok_or(TokenError::Missing)?;
    let claims = verify_with(key, token)?;
    if claims.request_id != request_id {
        return Err(TokenError::Mismatch("request_id"));
    }
    if claims.imp_id != imp_id {
        return Err(TokenError::Mismatch("imp_id"));
    }
    if claims.campaign_id != campaign_id {
        return Err(TokenError::Mismatch("campaign_id"));
    }
    if claims.ad_id != ad_id {
        return Err(TokenError::Mismatch("ad_id"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> WinClaims {
        WinClaims {
            request_id: "r1".into(),
            imp_id: "1".into(),
            campaign_id: "c1".into(),
            advertiser_id: "a1".into(),
            ad_id: "ad1".into(),
            billing: Billing::Cpc,
            charge_micros: 1234,
            issued: EventTime(1_700_000_000_000),
            country: Some("DE".into()),
            device: None,
        }
    }

    /// Claims cross processes inside charges and touches, encoded with bincode.
    #[test]
    fn claims_survive_bincode_with_and_without_country() {
        for c in [
            claims(),
            WinClaims {
                country: None,
                ..claims()
            },
        ] {
            let bytes = bincode::serialize(&c).unwrap();
            assert_eq!(bincode::deserialize::<WinClaims>(&bytes).unwrap(), c);
        }
    }

    #[test]
    fn round_trip_and_forgery() {
        let t = sign(b"secret", &claims());
        assert_eq!(verify(b"secret", &t).unwrap(), claims());
        assert_eq!(verify(b"other", &t), Err(TokenError::BadSignature));
        // Altering the price inside the claims breaks the signature.
        let mut forged = claims();
        forged.charge_micros = 1;
        let forged_claims = sign(b"attacker", &forged);
        let (_, payload) = forged_claims.split_once('.').unwrap();
        let (payload, _) = payload.rsplit_once('.').unwrap();
        let (_, tag) = t.rsplit_once('.').unwrap();
        assert_eq!(
            verify(b"secret", &format!("v2.{payload}.{tag}")),
            Err(TokenError::BadSignature)
        );
        // The same claims under the other version's name do not verify either.
        let (_, payload) = t.split_once('.').unwrap();
        assert_eq!(
            verify(b"secret", &format!("v1.{payload}")),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verify(b"secret", "garbage"),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verify(b"secret", "v3.a.b"),
            Err(TokenError::Malformed("unknown version"))
        ));
        assert!(t.starts_with("v2."));
        assert_eq!(claims_unverified(&t).unwrap(), claims());
    }

    /// The JSON format of earlier releases: wins served before an upgrade are still charged,
    /// refused when altered, and read by tools.
    #[test]
    fn tokens_of_the_earlier_format_still_verify() {
        for c in [
            claims(),
            WinClaims {
                country: None,
                request_id: "r \"quoted\" é".into(),
                ..claims()
            },
        ] {
            let v1 = signed_as(b"secret", "v1", &serde_json::to_vec(&c).unwrap());
            assert_eq!(verify(b"secret", &v1).unwrap(), c);
            assert_eq!(claims_unverified(&v1).unwrap(), c);
            assert_eq!(verify(b"other", &v1), Err(TokenError::BadSignature));
            // Signed JSON that is not claims is malformed, not a win.
            let junk = signed_as(b"secret", "v1", br#"{"rid":"r"}"#);
            assert_eq!(
                verify(b"secret", &junk),
                Err(TokenError::Malformed("claims are not valid JSON"))
            );
        }
    }

    /// Signed bytes that are not exactly one encoded claims record are refused (a token can
    /// only be made so with the secret, but a refusal names what is wrong).
    #[test]
    fn binary_claims_must_decode_whole() {
        let mut bytes = postcard::to_allocvec(&claims()).unwrap();
        bytes.push(0);
        assert_eq!(
            verify(b"secret", &signed_as(b"secret", "v2", &bytes)),
            Err(TokenError::Malformed("claims have trailing bytes"))
        );
        bytes.truncate(bytes.len() - 3);
        assert_eq!(
            verify(b"secret", &signed_as(b"secret", "v2", &bytes)),
            Err(TokenError::Malformed("claims do not decode"))
        );
    }

    /// The binary token is much shorter than the JSON one (every billing event carries it).
    #[test]
    fn binary_tokens_are_shorter() {
        let v1 = signed_as(b"k", "v1", &serde_json::to_vec(&claims()).unwrap());
        let v2 = sign(b"k", &claims());
        assert!(v2.len() * 3 < v1.len() * 2, "{} vs {}", v2.len(), v1.len());
    }

    #[test]
    fn event_must_match_claims() {
        let token = sign(b"k", &claims());
        let mut event = AdEvent {
            event_id: "e".into(),
            ts: EventTime(1),
            request_id: "r1".into(),
            imp_id: "1".into(),
            campaign_id: "c1".into(),
            ad_id: "ad1".into(),
            user_id: "u".into(),
            billing_token: Some(token),
        };
        assert!(verify_event(b"k", &event).is_ok());
        event.campaign_id = "c2".into();
        assert_eq!(
            verify_event(b"k", &event),
            Err(TokenError::Mismatch("campaign_id"))
        );
        event.billing_token = None;
        assert_eq!(verify_event(b"k", &event), Err(TokenError::Missing));
    }
}
