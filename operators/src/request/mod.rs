//! The OpenRTB 2.6 BidRequest subset adstream reads, validated into an [`AdRequest`].

use serde::Deserialize;

use crate::events::{check_id, check_optional_id, parse_json, ParseError};

pub mod formats;

/// Why a request was refused (HTTP 400), naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct RequestError {
    /// Dotted path of the offending field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> RequestError {
    RequestError {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
struct RawRequest {
    id: String,
    imp: Vec<RawImp>,
    #[serde(default)]
    user: Option<RawUser>,
    #[serde(default)]
    device: Option<RawDevice>,
    #[serde(default)]
    tmax: Option<u64>,
    #[serde(default)]
    site: Option<serde_json::Value>,
    #[serde(default)]
    app: Option<serde_json::Value>,
    #[serde(default)]
    cur: Option<Vec<String>>,
    #[serde(default)]
    bcat: Option<Vec<String>>,
    #[serde(default)]
    badv: Option<Vec<String>>,
    #[serde(default)]
    bapp: Option<Vec<String>>,
    #[serde(default)]
    bseat: Option<Vec<String>>,
    #[serde(default)]
    wseat: Option<Vec<String>>,
    #[serde(default)]
    ext: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RawImp {
    id: String,
    #[serde(default)]
    tagid: Option<String>,
    #[serde(default)]
    bidfloor: Option<f64>,
    #[serde(default)]
    bidfloorcur: Option<String>,
    #[serde(default)]
    banner: Option<serde_json::Value>,
    #[serde(default)]
    video: Option<serde_json::Value>,
    #[serde(default)]
    audio: Option<serde_json::Value>,
    #[serde(default)]
    native: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RawUser {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    keywords: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawDevice {
    #[serde(default)]
    geo: Option<RawGeo>,
    #[serde(default)]
    devicetype: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct RawGeo {
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    metro: Option<String>,
}

/// One impression slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// `imp.id`.
    pub imp_id: String,
    /// `imp.tagid`.
    pub tag_id: Option<String>,
    /// Floor as eCPM micros of the account currency once
    /// `serve::currency::Rates::price_floors` has converted it; until then, micros of
    /// `floor_currency` (OpenRTB's `bidfloor` is CPM in currency units).
    pub floor_ecpm_micros: u64,
    /// `bidfloorcur`, upper case (OpenRTB's default: `USD`).
    pub floor_currency: String,
    /// The media the slot takes.
    pub formats: formats::ImpFormats,
}

/// A validated ad request.
#[derive(Debug, Clone, PartialEq)]
pub struct AdRequest {
    /// `id`.
    pub id: String,
    /// Slots, in request order.
    pub slots: Vec<Slot>,
    /// `user.id`.
    pub user_id: Option<String>,
    /// `device.geo.country` as upper-case ISO alpha-2 (alpha-3 `USA` is `US`); absent when the
    /// request gives none or a code that is not a country.
    pub country: Option<String>,
    /// `device.geo.region` as `CC-SUB` (`US-CA`), when the country is known.
    pub region: Option<String>,
    /// `device.geo.metro`, as given.
    pub metro: Option<String>,
    /// `device.devicetype` as a name (`mobile`, `desktop`, `ctv`, `tablet`, `phone`...).
    pub device: Option<String>,
    /// Interests from `user.keywords` (comma-separated).
    pub interests: Vec<String>,
    /// Deadline in ms (`tmax`, default 50).
    pub tmax_ms: u64,
    /// Whether it came from a site (`false`: an app).
    pub is_site: bool,
    /// `cur`: currencies the bid may be in, upper case, in the request's order (empty: any).
    pub currencies: Vec<String>,
    /// Brand-safety block lists of the request.
    pub blocks: Blocks,
    /// `ext.debug`: explain per campaign why it did or did not bid (admin only).
    pub debug: bool,
}

/// What a request refuses: `bcat`, `badv`, `bapp`, `bseat`, and the allow list `wseat`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Blocks {
    /// Blocked IAB categories (`IAB25` also blocks `IAB25-3`).
    pub bcat: Vec<String>,
    /// Blocked advertiser domains (a domain also blocks its subdomains), lower case.
    pub badv: Vec<String>,
    /// Blocked apps (store ids of advertised apps).
    pub bapp: Vec<String>,
    /// Blocked buyer seats.
    pub bseat: Vec<String>,
    /// Allowed buyer seats (empty: any).
    pub wseat: Vec<String>,
}

/// OpenRTB device types (AdCOM 1.0 list) by name.
pub fn device_name(devicetype: u32) -> &'static str {
    match devicetype {
        1 | 4 => "mobile",
        2 => "desktop",
        3 | 7 => "ctv",
        5 => "tablet",
        6 => "connected",
        _ => "other",
    }
}

/// Parses and validates a BidRequest body.
pub fn parse_request(body: &[u8]) -> Result<AdRequest, RequestError> {
    let raw: RawRequest = parse_json(body).map_err(|e| match e {
        ParseError::Malformed(m) => err("body", format!("malformed JSON: {m}")),
        ParseError::Field { field, message } => err(field, message),
    })?;
    check_id(&raw.id).map_err(|e| err("id", e.to_string()))?;
    if raw.imp.is_empty() {
        return Err(err("imp", "must hold at least one impression"));
    }
    if raw.imp.len() > 16 {
        return Err(err("imp", "at most 16 impressions per request"));
    }
    let mut slots = Vec::with_capacity(raw.imp.len());
    for (i, imp) in raw.imp.iter().enumerate() {
        check_id(&imp.id).map_err(|e| err(format!("imp[{i}].id"), e.to_string()))?;
        if let Some(tag) = &imp.tagid {
            check_optional_id(tag).map_err(|e| err(format!("imp[{i}].tagid"), e.to_string()))?;
        }
        if slots.iter().any(|s: &Slot| s.imp_id == imp.id) {
            return Err(err(
                format!("imp[{i}].id"),
                "duplicates another impression's id",
            ));
        }
        let floor = imp.bidfloor.unwrap_or(0.0);
        if !floor.is_finite() || !(0.0..=1e6).contains(&floor) {
            return Err(err(
                format!("imp[{i}].bidfloor"),
                "must be a CPM between 0 and 1000000",
            ));
        }
        let floor_currency = match imp.bidfloorcur.as_deref().map(str::trim) {
            None | Some("") => "USD".to_string(),
            Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                c.to_ascii_uppercase()
            }
            Some(c) => {
                return Err(err(
                    format!("imp[{i}].bidfloorcur"),
                    format!("{c:?} is not an ISO-4217 currency code"),
                ))
            }
        };
        slots.push(Slot {
            imp_id: imp.id.clone(),
            tag_id: imp.tagid.clone(),
            floor_ecpm_micros: (floor * 1e6).round() as u64,
            floor_currency,
            formats: formats::ImpFormats::read(
                imp.banner.as_ref(),
                imp.video.as_ref(),
                imp.audio.as_ref(),
                imp.native.as_ref(),
            ),
        });
    }
    let tmax_ms = raw.tmax.unwrap_or(50);
    if tmax_ms == 0 || tmax_ms > 10_000 {
        return Err(err("tmax", "must be between 1 and 10000 ms"));
    }
    if raw.site.is_some() && raw.app.is_some() {
        return Err(err("app", "a request has a site or an app, not both"));
    }
    let user = raw.user.as_ref();
    if let Some(id) = user.and_then(|u| u.id.as_deref()) {
        check_optional_id(id).map_err(|e| err("user.id", e.to_string()))?;
    }
    let geo = raw.device.as_ref().and_then(|d| d.geo.as_ref());
    let country = geo
        .and_then(|g| g.country.as_deref())
        .and_then(crate::geo::country);
    let region = country
        .zip(geo.and_then(|g| g.region.as_deref()))
        .and_then(|(country, region)| crate::geo::request_region(country, region));
    let metro = geo
        .and_then(|g| g.metro.as_deref())
        .map(str::trim)
        .filter(|m| !m.is_empty() && m.len() <= 32)
        .map(str::to_string);
    let list = |field: &str, given: Option<Vec<String>>| -> Result<Vec<String>, RequestError> {
        let given = given.unwrap_or_default();
        if given.len() > 1_000 {
            return Err(err(field, "at most 1000 entries"));
        }
        Ok(given
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .collect())
    };
    let blocks = Blocks {
        bcat: list("bcat", raw.bcat)?,
        badv: list("badv", raw.badv)?
            .into_iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .collect(),
        bapp: list("bapp", raw.bapp)?,
        bseat: list("bseat", raw.bseat)?,
        wseat: list("wseat", raw.wseat)?,
    };
    let currencies = list("cur", raw.cur)?
        .into_iter()
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let debug = raw
        .ext
        .as_ref()
        .and_then(|e| e.get("debug"))
        .is_some_and(|d| d.as_bool() == Some(true) || d.as_i64() == Some(1));
    Ok(AdRequest {
        id: raw.id,
        slots,
        user_id: user.and_then(|u| u.id.clone()).filter(|s| !s.is_empty()),
        country: country.map(str::to_string),
        region,
        metro,
        device: raw
            .device
            .as_ref()
            .and_then(|d| d.devicetype)
            .map(|t| device_name(t).to_string()),
        interests: user
            .and_then(|u| u.keywords.as_ref())
            .map(|k| {
                k.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        tmax_ms,
        is_site: raw.app.is_none(),
        currencies,
        blocks,
        debug,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_subset_and_ignores_unknown_fields() {
        let r = parse_request(br#"{"id":"r1","imp":[{"id":"1","tagid":"t","bidfloor":0.5,"banner":{"w":300}}],
            "user":{"id":"u1","keywords":"sports, travel"},"device":{"geo":{"country":"fr"},"devicetype":4},
            "site":{"id":"s"},"tmax":80,"ext":{"x":1}}"#).unwrap();
        assert_eq!(r.slots[0].floor_ecpm_micros, 500_000);
        assert_eq!(r.country.as_deref(), Some("FR"));
        assert_eq!(r.device.as_deref(), Some("mobile"));
        assert_eq!(r.interests, vec!["sports", "travel"]);
        assert_eq!(r.tmax_ms, 80);
    }

    #[test]
    fn geography_currency_block_lists_and_debug_are_read() {
        let r = parse_request(br#"{"id":"r","imp":[{"id":"1","bidfloor":2,"bidfloorcur":"eur","video":{"mimes":["video/mp4"]}}],
            "device":{"geo":{"country":"USA","region":"ca","metro":"803"}},"cur":["eur","USD"],
            "bcat":["IAB25"," "],"badv":["Brand.COM"],"bapp":["com.x"],"bseat":["s1"],"wseat":["s2"],"ext":{"debug":1}}"#).unwrap();
        assert_eq!(r.country.as_deref(), Some("US"));
        assert_eq!(r.region.as_deref(), Some("US-CA"));
        assert_eq!(r.metro.as_deref(), Some("803"));
        assert_eq!(r.currencies, vec!["EUR", "USD"]);
        assert_eq!(r.slots[0].floor_currency, "EUR");
        assert!(r.slots[0].formats.video.is_some() && !r.slots[0].formats.any);
        assert_eq!(r.blocks.bcat, vec!["IAB25"], "blank entries dropped");
        assert_eq!(r.blocks.badv, vec!["brand.com"]);
        assert!(r.debug);
        // A country that is no country is no country (untargeted campaigns still match).
        let r = parse_request(
            br#"{"id":"r","imp":[{"id":"1"}],"device":{"geo":{"country":"XXX","region":"CA"}}}"#,
        )
        .unwrap();
        assert_eq!((r.country, r.region), (None, None));
        assert!(r.slots[0].formats.any);
        assert_eq!(r.slots[0].floor_currency, "USD", "OpenRTB's default");
        let e =
            parse_request(br#"{"id":"r","imp":[{"id":"1","bidfloorcur":"EURO"}]}"#).unwrap_err();
        assert_eq!(e.field, "imp[0].bidfloorcur");
    }

    #[test]
    fn ids_at_the_length_limit_pass_and_beyond_it_are_refused() {
        let body = |id: &str| format!(r#"{{"id":"{id}","imp":[{{"id":"1"}}]}}"#);
        let max = "%/ é".repeat(crate::events::MAX_ID_BYTES / 5) + "x";
        assert_eq!(max.len(), crate::events::MAX_ID_BYTES);
        assert_eq!(parse_request(body(&max).as_bytes()).unwrap().id, max);
        let e = parse_request(body(&format!("{max}y")).as_bytes()).unwrap_err();
        assert_eq!(e.field, "id");
        assert!(e.message.contains("at most 256 bytes"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 11] = [
            (b"{nope", "body"),
            (br#"{"imp":[{"id":"1"}]}"#, "id"),
            (br#"{"id":"r","imp":[]}"#, "imp"),
            (br#"{"id":"r","imp":[{"id":""}]}"#, "imp[0].id"),
            (
                br#"{"id":"r","imp":[{"id":"1","bidfloor":-1}]}"#,
                "imp[0].bidfloor",
            ),
            (
                br#"{"id":"r","imp":[{"id":"1","bidfloor":"cheap"}]}"#,
                "imp[0].bidfloor",
            ),
            (br#"{"id":"r","imp":[{"id":"1"}],"tmax":0}"#, "tmax"),
            (br#"{"id":"r\u0000","imp":[{"id":"1"}]}"#, "id"),
            (br#"{"id":"r","imp":[{"id":"1\n"}]}"#, "imp[0].id"),
            (
                br#"{"id":"r","imp":[{"id":"1","tagid":"t\u0085"}]}"#,
                "imp[0].tagid",
            ),
            (
                br#"{"id":"r","imp":[{"id":"1"}],"user":{"id":"u\t"}}"#,
                "user.id",
            ),
        ];
        for (body, field) in cases {
            let e = parse_request(body).unwrap_err();
            assert_eq!(e.field, field, "{e} for {}", String::from_utf8_lossy(body));
        }
    }
}
