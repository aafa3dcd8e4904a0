//! The event types of the product contract (`SPEC.md`) and their validating parsers.
//!
//! Every parser names the field that is wrong, so a dead letter says exactly why it was refused.
//! Unknown fields are ignored (producers may add fields); money is integer micros.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::time::EventTime;

/// Why a message could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a JSON document at all.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// JSON, but a field is missing, has the wrong type or an invalid value.
    #[error("field `{field}`: {message}")]
    Field {
        /// Dotted path of the offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ParseError {
    pub(crate) fn field(field: &str, message: impl Into<String>) -> Self {
        ParseError::Field {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Deserialises `bytes` as `T`, with no explanation of a failure. The document is checked to
/// be UTF-8 once, as a whole: parsed from bytes, serde_json checks each string on its own, at a
/// fixed cost per string that was a tenth of decoding an event (an event has about 16).
fn from_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    serde_json::from_str(std::str::from_utf8(bytes).ok()?).ok()
}

/// Deserialises `bytes` as `T`, reporting the path of the first bad field.
pub fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ParseError> {
    // Fast path; the path-tracking parser only runs to explain a failure.
    if let Some(value) = from_json(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => de
            .end()
            .map(|_| value)
            .map_err(|e| ParseError::Malformed(e.to_string())),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ParseError::Malformed(inner.to_string()));
            }
            let message = inner.to_string();
            // serde reports a missing field at its parent; name the field itself.
            let field = match message.strip_prefix("missing field `") {
                Some(rest) => {
                    let name = rest.split('`').next().unwrap_or_default();
                    if path == "." {
                        name.to_string()
                    } else {
                        format!("{path}.{name}")
                    }
                }
                None => path,
            };
            let message = match message.find(" at line ") {
                Some(i) => message[..i].to_string(),
                None => message,
            };
            Err(ParseError::Field { field, message })
        }
    }
}

/// The longest id accepted anywhere (campaign, advertiser, ad, request, impression, user and
/// event ids; Kafka keys that are ids; ids in HTTP paths and bodies), in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Why a string is not a valid id (see [`check_id`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty or only white space.
    #[error("must not be empty")]
    Empty,
    /// Longer than [`MAX_ID_BYTES`].
    #[error("is {0} bytes long; ids are at most {MAX_ID_BYTES} bytes")]
    TooLong(usize),
    /// Holds a control character (Unicode general category Cc: NUL, tab, newline, DEL, C1...).
    #[error("contains the control character U+{code:04X} at byte {at}; ids may not contain control characters")]
    Control {
        /// The character's code point.
        code: u32,
        /// Its byte offset in the id.
        at: usize,
    },
}

/// The one rule for ids, at every input: not blank, at most [`MAX_ID_BYTES`] bytes of UTF-8,
/// and no control character (general category Cc). Anything else (spaces inside, `%`, `/`,
/// quotes, any non-ASCII letter or symbol) is a valid id.
pub fn check_id(value: &str) -> Result<(), IdError> {
    check_optional_id(value)?;
    // An id that starts with a visible ASCII character is not blank (most ids): no trimming.
    let visible_first = value
        .as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_graphic());
    if !visible_first && value.trim().is_empty() {
        return Err(IdError::Empty);
    }
    Ok(())
}

/// [`check_id`] for an optional id (OpenRTB's `user.id` and `tagid`): empty is allowed (it
/// means absent), the length and control-character rules are not relaxed.
pub fn check_optional_id(value: &str) -> Result<(), IdError> {
    if value.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong(value.len()));
    }
    // Printable ASCII (most ids) holds no control character: checked a byte at a time.
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    if let Some((at, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(IdError::Control { code: c as u32, at });
    }
    Ok(())
}

/// [`check_id`] for the field `field`, as a [`ParseError`] naming it.
pub fn require_id(field: &str, value: &str) -> Result<(), ParseError> {
    check_id(value).map_err(|e| ParseError::field(field, e.to_string()))
}

/// [`check_optional_id`] for the field `field`, as a [`ParseError`] naming it.
pub fn require_optional_id(field: &str, value: Option<&str>) -> Result<(), ParseError> {
    value.map_or(Ok(()), |v| {
        check_optional_id(v).map_err(|e| ParseError::field(field, e.to_string()))
    })
}

/// Which event a campaign pays for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Billing {
    /// Cost per mille: charged per impression, bids are per 1000 impressions.
    Cpm,
    /// Cost per click.
    Cpc,
    /// Cost per action: charged per attributed conversion.
    Cpa,
}

impl Billing {
    /// The contract's name for this billing type.
    pub fn as_str(self) -> &'static str {
        match self {
            Billing::Cpm => "cpm",
            Billing::Cpc => "cpc",
            Billing::Cpa => "cpa",
        }
    }

    /// The kind of event that is charged under this billing type.
    pub fn charged_event(self) -> EventKind {
        match self {
            Billing::Cpm => EventKind::Impression,
            Billing::Cpc => EventKind::Click,
            Billing::Cpa => EventKind::Conversion,
        }
    }
}

/// The three outcome streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// An ad was rendered.
    Impression,
    /// An ad was clicked.
    Click,
    /// A user converted (attributed to an earlier click or impression).
    Conversion,
}

impl EventKind {
    /// Lower-case name, as used in dedup keys and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Impression => "impression",
            EventKind::Click => "click",
            EventKind::Conversion => "conversion",
        }
    }
}

/// Whether a campaign may serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CampaignStatus {
    /// Serving and spending.
    #[default]
    Active,
    /// Not serving; events already in flight are still charged.
    Paused,
}

/// What a campaign optimises for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Reach.
    #[default]
    Impressions,
    /// Traffic.
    Clicks,
    /// Actions.
    Conversions,
}

/// Who a campaign wants to reach; an empty list means everyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Targeting {
    /// ISO 3166 country codes.
    pub countries: Vec<String>,
    /// Device types (`mobile`, `desktop`, `tablet`, `ctv`...).
    pub devices: Vec<String>,
    /// Interest labels.
    pub interests: Vec<String>,
    /// ISO 3166-2 subdivisions, `CC-SUB` (`US-CA`); matched against `device.geo.region`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Metro areas (`device.geo.metro`: Nielsen DMA codes in the US, `803`), as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metros: Vec<String>,
}

pub mod creative;

pub use creative::{Creative, CreativeKind};

/// The largest daily budget a campaign may declare, micros: a guard against unit mistakes and
/// overflow (10 million currency units a day).
pub const MAX_DAILY_BUDGET_MICROS: u64 = 10_000_000_000_000;

/// The largest bid per billing unit (per 1000 impressions for CPM), micros: 10,000 currency units.
pub const MAX_BID_MICROS: u64 = 10_000_000_000;

/// A campaign definition from the compacted `ads.campaigns` topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// Unique id; also the Kafka key.
    pub campaign_id: String,
    /// Owner.
    pub advertiser_id: String,
    /// `active` or `paused`.
    #[serde(default)]
    pub status: CampaignStatus,
    /// Daily budget in micros of the account currency.
    pub daily_budget_micros: u64,
    /// IANA time zone in which the budget day runs.
    pub timezone: String,
    /// Which event is charged.
    pub billing: Billing,
    /// Maximum bid per billing unit (per 1000 impressions for CPM), micros.
    pub bid_micros: u64,
    /// What the campaign optimises for.
    #[serde(default)]
    pub objective: Objective,
    /// Audience.
    #[serde(default)]
    pub targeting: Targeting,
    /// Ads of this campaign.
    #[serde(default)]
    pub creatives: Vec<Creative>,
    /// The advertiser's landing domains (`bid.adomain`, checked against a request's `badv`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adomain: Vec<String>,
    /// IAB content categories of the ads (`bid.cat`, checked against a request's `bcat`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cat: Vec<String>,
    /// The advertised app's store id, for app-install ads (`bid.bundle`, checked against `bapp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// Flight start; absent = already started.
    #[serde(default)]
    pub start: Option<EventTime>,
    /// Flight end; absent = open-ended.
    #[serde(default)]
    pub end: Option<EventTime>,
}

impl Campaign {
    /// Parses and validates a campaign document, and normalises what targeting and brand
    /// safety compare: country codes to upper-case alpha-2 (`USA` is `US`), regions to `CC-SUB`,
    /// domains to lower case.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut c: Campaign = parse_json(bytes)?;
        c.normalise()?;
        c.validate()?;
        Ok(c)
    }

    /// Normalises targeting codes and domains (see [`Campaign::parse`]); unknown codes are
    /// refused, naming the entry.
    pub fn normalise(&mut self) -> Result<(), ParseError> {
        for (i, code) in self.targeting.countries.iter_mut().enumerate() {
            let Some(a2) = crate::geo::country(code) else {
                return Err(ParseError::field(
                    &format!("targeting.countries[{i}]"),
                    format!("{code:?} is not an ISO-3166-1 alpha-2 or alpha-3 country code"),
                ));
            };
            *code = a2.to_string();
        }
        for (i, code) in self.targeting.regions.iter_mut().enumerate() {
            let Some(region) = crate::geo::region(code) else {
                return Err(ParseError::field(
                    &format!("targeting.regions[{i}]"),
                    format!("{code:?} is not an ISO-3166-2 subdivision written CC-SUB (`US-CA`)"),
                ));
            };
            *code = region;
        }
        for d in &mut self.adomain {
            *d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        }
        Ok(())
    }

    /// Checks the invariants serde cannot express.
    pub fn validate(&self) -> Result<(), ParseError> {
        require_id("campaign_id", &self.campaign_id)?;
        require_id("advertiser_id", &self.advertiser_id)?;
        if self.daily_budget_micros > MAX_DAILY_BUDGET_MICROS {
            return Err(ParseError::field(
                "daily_budget_micros",
                format!(
                    "{} is above the limit of {MAX_DAILY_BUDGET_MICROS} micros (10 million a day)",
                    self.daily_budget_micros
                ),
            ));
        }
        if self.bid_micros > MAX_BID_MICROS {
            return Err(ParseError::field(
                "bid_micros",
                format!(
                    "{} is above the limit of {MAX_BID_MICROS} micros (10,000 per billing unit)",
                    self.bid_micros
                ),
            ));
        }
        self.tz()?;
        if let (Some(s), Some(e)) = (self.start, self.end) {
            if e < s {
                return Err(ParseError::field("end", "is before `start`"));
            }
        }
        for (i, c) in self.creatives.iter().enumerate() {
            c.validate(&format!("creatives[{i}]"))?;
        }
        for (i, d) in self.adomain.iter().enumerate() {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.contains('.')
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(ParseError::field(
                    &format!("adomain[{i}]"),
                    format!("{d:?} is not a domain name (`brand.com`)"),
                ));
            }
        }
        for (i, c) in self.cat.iter().enumerate() {
            require_id(&format!("cat[{i}]"), c)?;
        }
        if let Some(bundle) = &self.bundle {
            require_id("bundle", bundle)?;
        }
        Ok(())
    }

    /// The campaign's time zone.
    pub fn tz(&self) -> Result<chrono_tz::Tz, ParseError> {
        self.timezone.parse::<chrono_tz::Tz>().map_err(|_| {
            ParseError::field(
                "timezone",
                format!("unknown IANA time zone {:?}", self.timezone),
            )
        })
    }

    /// Whether the flight covers `t`.
    pub fn in_flight(&self, t: EventTime) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t < e)
    }
}

/// An impression or a click: both carry the win's identity and its billing token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdEvent {
    /// Unique id of this event (producer-side).
    pub event_id: String,
    /// When it happened.
    pub ts: EventTime,
    /// The ad request that was won.
    pub request_id: String,
    /// The impression slot within the request.
    pub imp_id: String,
    /// Winning campaign.
    pub campaign_id: String,
    /// Winning ad.
    pub ad_id: String,
    /// The viewer.
    pub user_id: String,
    /// Signed proof of the win and its price; absent on forged traffic.
    #[serde(default)]
    pub billing_token: Option<String>,
}

impl AdEvent {
    /// Parses and validates an impression or click document.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        AdEventRef::parse(bytes).map(AdEventRef::into_owned)
    }
}

/// An impression or click read in place: the fields borrow the message where they can (an
/// escaped string is unescaped into its own buffer). The ingest path parses this, checks it
/// against its token and keeps only what the graph needs; [`AdEvent`] is the owned form.
#[derive(Debug, Deserialize)]
pub struct AdEventRef<'a> {
    /// Unique id of this event (producer-side).
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    /// When it happened.
    pub ts: EventTime,
    /// The ad request that was won.
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    /// The impression slot within the request.
    #[serde(borrow)]
    pub imp_id: Cow<'a, str>,
    /// Winning campaign.
    #[serde(borrow)]
    pub campaign_id: Cow<'a, str>,
    /// Winning ad.
    #[serde(borrow)]
    pub ad_id: Cow<'a, str>,
    /// The viewer.
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    /// Signed proof of the win and its price; absent on forged traffic.
    #[serde(default, borrow)]
    pub billing_token: Option<Cow<'a, str>>,
}

impl<'a> AdEventRef<'a> {
    /// Parses and validates an impression or click document, as [`AdEvent::parse`] does (and
    /// with its errors).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let e: AdEventRef<'a> = match from_json(bytes) {
            Some(e) => e,
            // The path-tracking parser explains the failure, naming the field.
            None => {
                return Err(parse_json::<AdEvent>(bytes).err().unwrap_or_else(|| {
                    ParseError::Malformed("not an impression or click document".into())
                }))
            }
        };
        for (name, value) in [
            ("event_id", &e.event_id),
            ("request_id", &e.request_id),
            ("imp_id", &e.imp_id),
            ("campaign_id", &e.campaign_id),
            ("ad_id", &e.ad_id),
            ("user_id", &e.user_id),
        ] {
            require_id(name, value)?;
        }
        Ok(e)
    }

    /// The owned form.
    pub fn into_owned(self) -> AdEvent {
        AdEvent {
            event_id: self.event_id.into_owned(),
            ts: self.ts,
            request_id: self.request_id.into_owned(),
            imp_id: self.imp_id.into_owned(),
            campaign_id: self.campaign_id.into_owned(),
            ad_id: self.ad_id.into_owned(),
            user_id: self.user_id.into_owned(),
            billing_token: self.billing_token.map(Cow::into_owned),
        }
    }
}

/// A conversion reported by an advertiser's pixel or integration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversion {
    /// Unique id of this event.
    pub event_id: String,
    /// When it happened.
    pub ts: EventTime,
    /// Who converted.
    pub user_id: String,
    /// For whom.
    pub advertiser_id: String,
    /// Advertiser-defined action type (`purchase`, `signup`...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Value of the action, micros.
    #[serde(default)]
    pub value_micros: u64,
}

impl Conversion {
    /// Parses and validates a conversion document.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let e: Conversion = parse_json(bytes)?;
        for (name, value) in [
            ("event_id", &e.event_id),
            ("user_id", &e.user_id),
            ("advertiser_id", &e.advertiser_id),
            ("type", &e.kind),
        ] {
            require_id(name, value)?;
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAMPAIGN: &str = r#"{"campaign_id":"c1","advertiser_id":"a1","status":"active",
        "daily_budget_micros":1000000,"timezone":"Europe/Paris","billing":"cpc","bid_micros":2000,
        "objective":"clicks","targeting":{"countries":["FR"]},"creatives":[{"ad_id":"ad1","adomain":"x.fr"}]}"#;

    #[test]
    fn campaign_round_trips() {
        let c = Campaign::parse(CAMPAIGN.as_bytes()).unwrap();
        assert_eq!(c.billing, Billing::Cpc);
        assert_eq!(c.creatives[0].extra["adomain"], "x.fr");
        let again = Campaign::parse(serde_json::to_string(&c).unwrap().as_bytes()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = CAMPAIGN.replace("\"cpc\"", "\"cpx\"");
        match Campaign::parse(bad.as_bytes()) {
            Err(ParseError::Field { field, .. }) => assert_eq!(field, "billing"),
            other => panic!("{other:?}"),
        }
        let bad = CAMPAIGN.replace("\"daily_budget_micros\":1000000,", "");
        match Campaign::parse(bad.as_bytes()) {
            Err(ParseError::Field { field, .. }) => assert_eq!(field, "daily_budget_micros"),
            other => panic!("{other:?}"),
        }
        let bad = CAMPAIGN.replace("Europe/Paris", "Mars/Olympus");
        match Campaign::parse(bad.as_bytes()) {
            Err(ParseError::Field { field, .. }) => assert_eq!(field, "timezone"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Campaign::parse(b"{nope"),
            Err(ParseError::Malformed(_))
        ));
        // bid = budget = u64::MAX: refused, not charged 9.2e17 micros.
        for field in ["daily_budget_micros", "bid_micros"] {
            let mut doc: serde_json::Value = serde_json::from_str(CAMPAIGN).unwrap();
            doc[field] = u64::MAX.into();
            match Campaign::parse(doc.to_string().as_bytes()) {
                Err(ParseError::Field { field: f, message }) => {
                    assert_eq!(f, field);
                    assert!(message.contains("limit"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        let bad = CAMPAIGN.replace("\"ad1\"", "7");
        match Campaign::parse(bad.as_bytes()) {
            Err(ParseError::Field { field, .. }) => assert_eq!(field, "creatives[0].ad_id"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ad_event_requires_ids() {
        let ok = br#"{"event_id":"e","ts":"2026-01-01T00:00:00Z","request_id":"r","imp_id":"1",
            "campaign_id":"c","ad_id":"a","user_id":"u","billing_token":"t"}"#;
        assert!(AdEvent::parse(ok).is_ok());
        let empty = br#"{"event_id":"e","ts":1,"request_id":"","imp_id":"1","campaign_id":"c","ad_id":"a","user_id":"u"}"#;
        match AdEvent::parse(empty) {
            Err(ParseError::Field { field, .. }) => assert_eq!(field, "request_id"),
            other => panic!("{other:?}"),
        }
        let conv = br#"{"event_id":"e","ts":5,"user_id":"u","advertiser_id":"a","type":"purchase","value_micros":10}"#;
        assert_eq!(Conversion::parse(conv).unwrap().kind, "purchase");
    }

    #[test]
    fn the_id_rule() {
        let max = "é".repeat(MAX_ID_BYTES / 2);
        for ok in [
            "c1",
            "50% off/summer sale",
            "ünïcødé 广告",
            "a b",
            "\"quoted\"",
            &max,
        ] {
            assert_eq!(check_id(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id("  "), Err(IdError::Empty));
        // Blank in Unicode's sense too, and not blank however it starts.
        assert_eq!(check_id("\u{3000} \u{2003}"), Err(IdError::Empty));
        assert_eq!(check_id(" a"), Ok(()));
        assert_eq!(check_id("\u{3000}x"), Ok(()));
        assert_eq!(
            check_id(&format!("{max}x")),
            Err(IdError::TooLong(MAX_ID_BYTES + 1))
        );
        for (bad, code, at) in [
            ("a\u{0}b", 0, 1),
            ("\n", 0x0a, 0),
            ("tab\there", 9, 3),
            ("del\u{7f}", 0x7f, 3),
            ("é\u{85}", 0x85, 2),
            ("\u{9f}", 0x9f, 0),
        ] {
            assert_eq!(check_id(bad), Err(IdError::Control { code, at }), "{bad:?}");
        }
        let e = require_id("imp_id", "1\u{0}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `imp_id`: contains the control character U+0000 at byte 1; ids may not contain control characters"
        );
    }

    proptest::proptest! {
        /// The byte-wise fast paths decide as the rule's plain statement does, on any text.
        #[test]
        fn the_id_rule_on_any_text(value in "(\\PC|\\pC| |\u{3000}){0,12}") {
            let plain = if value.len() > MAX_ID_BYTES {
                Err(IdError::TooLong(value.len()))
            } else if let Some((at, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
                Err(IdError::Control { code: c as u32, at })
            } else if value.trim().is_empty() {
                Err(IdError::Empty)
            } else {
                Ok(())
            };
            proptest::prop_assert_eq!(check_id(&value), plain);
        }
    }

    #[test]
    fn every_id_field_of_every_event_is_checked() {
        let field_of = |r: Result<(), ParseError>| match r {
            Err(ParseError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let ad = serde_json::json!({"event_id":"e","ts":1,"request_id":"r","imp_id":"1",
            "campaign_id":"c","ad_id":"a","user_id":"u"});
        for field in [
            "event_id",
            "request_id",
            "imp_id",
            "campaign_id",
            "ad_id",
            "user_id",
        ] {
            for bad in ["x\u{0}y", "\t", &"x".repeat(MAX_ID_BYTES + 1)] {
                let mut doc = ad.clone();
                doc[field] = bad.into();
                let body = serde_json::to_vec(&doc).unwrap();
                assert_eq!(field_of(AdEvent::parse(&body).map(|_| ())), field);
            }
        }
        let conv =
            serde_json::json!({"event_id":"e","ts":1,"user_id":"u","advertiser_id":"a","type":"t"});
        for field in ["event_id", "user_id", "advertiser_id", "type"] {
            let mut doc = conv.clone();
            doc[field] = "\u{1b}[31m".into();
            let body = serde_json::to_vec(&doc).unwrap();
            assert_eq!(field_of(Conversion::parse(&body).map(|_| ())), field);
        }
        for (from, to, field) in [
            ("\"c1\"", "\"c\\u0000\"", "campaign_id"),
            ("\"a1\"", "\"a\\n\"", "advertiser_id"),
            ("\"ad1\"", "\"ad\\u007f\"", "creatives[0].ad_id"),
        ] {
            let bad = CAMPAIGN.replace(from, to);
            assert_eq!(field_of(Campaign::parse(bad.as_bytes()).map(|_| ())), field);
        }
    }
}
