//! A campaign's creatives: what kind of ad each is (banner, video, audio, native), what it fits
//! (sizes, mime types, duration, protocols, native assets) and the markup a bid carries.
//!
//! A creative that declares no `type` is a banner; one that declares no size fits only slots
//! that ask for none (requests without a media object, as the simulator sends).
//! [`crate::serve::formats`] matches creatives with a request's impressions.

use serde::{Deserialize, Serialize};

use crate::events::{require_id, ParseError};

/// What kind of ad a creative is; its number is OpenRTB 2.6's `mtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CreativeKind {
    /// Display (`imp.banner`).
    #[default]
    Banner,
    /// Video (`imp.video`), VAST markup.
    Video,
    /// Audio (`imp.audio`), VAST/DAAST markup.
    Audio,
    /// Native (`imp.native`): assets assembled into a native response.
    Native,
}

impl CreativeKind {
    /// OpenRTB 2.6 `bid.mtype`.
    pub fn mtype(self) -> u8 {
        match self {
            CreativeKind::Banner => 1,
            CreativeKind::Video => 2,
            CreativeKind::Audio => 3,
            CreativeKind::Native => 4,
        }
    }

    /// The name used in campaigns and explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            CreativeKind::Banner => "banner",
            CreativeKind::Video => "video",
            CreativeKind::Audio => "audio",
            CreativeKind::Native => "native",
        }
    }
}

/// An image of a native creative.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeImage {
    /// Where the image is.
    pub url: String,
    /// Width, pixels.
    pub w: u32,
    /// Height, pixels.
    pub h: u32,
}

/// The assets of a native creative (OpenRTB Native 1.2 asset types it can fill).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NativeAssets {
    /// Headline (title asset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Body text (data asset type 2, `desc`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Brand name (data asset type 1, `sponsored`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sponsored: Option<String>,
    /// Call to action (data asset type 12, `ctatext`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cta: Option<String>,
    /// Main image (image asset type 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<NativeImage>,
    /// Icon (image asset type 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<NativeImage>,
    /// Where a click goes (the native response's `link.url`).
    pub click_url: String,
}

/// One creative of a campaign. Fields beyond those named here are kept as given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Creative {
    /// The ad's identifier.
    pub ad_id: String,
    /// Banner (default), video, audio or native.
    #[serde(rename = "type", default)]
    pub kind: CreativeKind,
    /// Width in pixels (banners: the size it fits; video: the player size it was made for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<u32>,
    /// Height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h: Option<u32>,
    /// Video and audio: the mime types of its media files (`video/mp4`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mimes: Vec<String>,
    /// Video and audio: its length, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    /// Video and audio: the OpenRTB protocols (AdCOM list: 2 = VAST 2.0, 3 = VAST 3.0, 7 =
    /// VAST 4.0...) its markup is valid in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<u32>,
    /// The markup served inline (`bid.adm`): HTML for banners, VAST XML for video and audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adm: Option<String>,
    /// Where the exchange fetches the markup when there is no `adm` (`bid.nurl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nurl: Option<String>,
    /// Native creatives: the assets the native response is built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeAssets>,
    /// Everything else the advertiser attached.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The longest markup a creative may carry inline, bytes.
pub const MAX_ADM_BYTES: usize = 32 * 1024;

/// The longest duration of a video or audio creative, seconds.
pub const MAX_DURATION_S: u32 = 3_600;

impl Creative {
    /// A banner of no declared size and no markup: what a creative with only an `ad_id` is.
    pub fn plain(ad_id: impl Into<String>) -> Self {
        Creative {
            ad_id: ad_id.into(),
            kind: CreativeKind::Banner,
            w: None,
            h: None,
            mimes: Vec::new(),
            duration: None,
            protocols: Vec::new(),
            adm: None,
            nurl: None,
            native: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Checks the creative at `creatives[i]` (`at` is that path): ids, sizes given in pairs,
    /// what each kind needs to be served (video and audio: mimes, duration and markup; native:
    /// its assets), markup size and URLs.
    pub fn validate(&self, at: &str) -> Result<(), ParseError> {
        let field = |name: &str| format!("{at}.{name}");
        let fail = |name: &str, message: &str| Err(ParseError::field(&field(name), message));
        require_id(&field("ad_id"), &self.ad_id)?;
        match (self.w, self.h) {
            (Some(0), _) | (_, Some(0)) => return fail("w", "sizes must be positive"),
            (Some(_), None) => return fail("h", "`w` is given, so `h` must be too"),
            (None, Some(_)) => return fail("w", "`h` is given, so `w` must be too"),
            _ => {}
        }
        if let Some(adm) = &self.adm {
            if adm.trim().is_empty() {
                return fail("adm", "must not be empty");
            }
            if adm.len() > MAX_ADM_BYTES {
                return fail("adm", "is longer than 32 KiB; serve it by `nurl` instead");
            }
        }
        if let Some(nurl) = &self.nurl {
            check_url(&field("nurl"), nurl)?;
        }
        match self.kind {
            CreativeKind::Video | CreativeKind::Audio => {
                if self.mimes.is_empty() || self.mimes.iter().any(|m| !m.contains('/')) {
                    return fail(
                        "mimes",
                        "video and audio creatives list their mime types (`video/mp4`)",
                    );
                }
                match self.duration {
                    Some(d) if (1..=MAX_DURATION_S).contains(&d) => {}
                    _ => {
                        return fail(
                            "duration",
                            "video and audio creatives give their length, 1 to 3600 seconds",
                        )
                    }
                }
                if self.adm.is_none() && self.nurl.is_none() {
                    return fail("adm", "video and audio creatives carry their VAST markup (`adm`) or its URL (`nurl`)");
                }
            }
            CreativeKind::Native => {
                let Some(native) = &self.native else {
                    return fail(
                        "native",
                        "native creatives give their assets (`native.title`, `native.image`...)",
                    );
                };
                check_url(&field("native.click_url"), &native.click_url)?;
                for (name, image) in [("image", &native.image), ("icon", &native.icon)] {
                    if let Some(img) = image {
                        check_url(&field(&format!("native.{name}.url")), &img.url)?;
                        if img.w == 0 || img.h == 0 {
                            return fail(&format!("native.{name}.w"), "sizes must be positive");
                        }
                    }
                }
            }
            CreativeKind::Banner => {}
        }
        if self.native.is_some() && self.kind != CreativeKind::Native {
            return fail(
                "native",
                "only a creative of `type` native has native assets",
            );
        }
        Ok(())
    }
}

fn check_url(field: &str, url: &str) -> Result<(), ParseError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ParseError::field(
            field,
            "must be an http(s) URL of at most 2048 bytes without spaces",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Creative, ParseError> {
        let c: Creative =
            serde_json::from_str(json).map_err(|e| ParseError::Malformed(e.to_string()))?;
        c.validate("creatives[0]").map(|_| c)
    }

    fn field(r: Result<Creative, ParseError>) -> String {
        match r {
            Err(ParseError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_ad_id_alone_is_a_plain_banner() {
        let c = parse(r#"{"ad_id":"a","landing":"x"}"#).unwrap();
        assert_eq!(c.kind, CreativeKind::Banner);
        assert_eq!(c.extra["landing"], "x");
        let mut plain = Creative::plain("a");
        plain.extra.insert("landing".into(), "x".into());
        assert_eq!(c, plain);
    }

    #[test]
    fn each_kind_needs_what_it_is_served_with() {
        assert!(parse(r#"{"ad_id":"a","type":"video","mimes":["video/mp4"],"duration":15,"protocols":[3],"adm":"<VAST/>"}"#).is_ok());
        assert_eq!(
            field(parse(
                r#"{"ad_id":"a","type":"video","duration":15,"adm":"<VAST/>"}"#
            )),
            "creatives[0].mimes"
        );
        assert_eq!(
            field(parse(
                r#"{"ad_id":"a","type":"audio","mimes":["audio/mp4"],"adm":"<VAST/>"}"#
            )),
            "creatives[0].duration"
        );
        assert_eq!(
            field(parse(
                r#"{"ad_id":"a","type":"video","mimes":["video/mp4"],"duration":15}"#
            )),
            "creatives[0].adm"
        );
        assert_eq!(
            field(parse(r#"{"ad_id":"a","type":"native"}"#)),
            "creatives[0].native"
        );
        assert_eq!(
            field(parse(
                r#"{"ad_id":"a","type":"native","native":{"title":"t","click_url":"ftp://x"}}"#
            )),
            "creatives[0].native.click_url"
        );
        assert_eq!(field(parse(r#"{"ad_id":"a","w":300}"#)), "creatives[0].h");
        assert_eq!(
            field(parse(r#"{"ad_id":"a","w":0,"h":250}"#)),
            "creatives[0].w"
        );
        assert_eq!(
            field(parse(r#"{"ad_id":"a","nurl":"http://x y"}"#)),
            "creatives[0].nurl"
        );
        assert_eq!(
            field(parse(r#"{"ad_id":"a","native":{"click_url":"https://x"}}"#)),
            "creatives[0].native"
        );
        let big = format!(
            r#"{{"ad_id":"a","adm":"{}"}}"#,
            "x".repeat(MAX_ADM_BYTES + 1)
        );
        assert_eq!(field(parse(&big)), "creatives[0].adm");
        assert!(parse(r#"{"ad_id":"a","type":"hologram"}"#).is_err());
    }
}
