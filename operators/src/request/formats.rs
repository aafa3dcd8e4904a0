//! What an impression slot takes (`imp.banner`, `video`, `audio`, `native`), read leniently
//! from the request: a field of the wrong type is ignored, never a 400 (exchanges send many
//! dialects; what cannot be read is not offered). [`crate::serve::formats`] matches creatives
//! with it.

use serde_json::Value;

/// The media one slot takes, read leniently: a field of the wrong type is ignored, never a 400
/// (exchanges send many dialects; what cannot be read is not offered).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImpFormats {
    /// The slot has no media object: any banner, video or audio creative.
    pub any: bool,
    /// `imp.banner`.
    pub banner: Option<BannerSlot>,
    /// `imp.video`.
    pub video: Option<MediaSlot>,
    /// `imp.audio`.
    pub audio: Option<MediaSlot>,
    /// `imp.native`, when its `request` could be read.
    pub native: Option<NativeSlot>,
}

/// A banner slot's accepted sizes, best first (empty: any size).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BannerSlot {
    /// `(w, h)` pairs.
    pub sizes: Vec<(u32, u32)>,
}

/// A video or audio slot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaSlot {
    /// Accepted mime types, lower case (empty: any).
    pub mimes: Vec<String>,
    /// Shortest accepted duration, seconds.
    pub min_duration: Option<u32>,
    /// Longest accepted duration, seconds.
    pub max_duration: Option<u32>,
    /// Accepted protocols (empty: any).
    pub protocols: Vec<u32>,
    /// Player width.
    pub w: Option<u32>,
    /// Player height.
    pub h: Option<u32>,
}

/// One asset a native request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeAsset {
    /// The asset's id, echoed in the response.
    pub id: u64,
    /// Whether the ad must fill it.
    pub required: bool,
    /// What it is.
    pub kind: NativeAssetKind,
}

/// The kinds of native asset (OpenRTB Native 1.2).
#[derive(Debug, Clone, PartialEq)]
pub enum NativeAssetKind {
    /// A title of at most `len` characters.
    Title {
        /// Longest title.
        len: Option<u32>,
    },
    /// An image: type 1 icon, 3 main.
    Image {
        /// Image type.
        image_type: u64,
        /// Minimum width (`wmin`, else `w`).
        min_w: Option<u32>,
        /// Minimum height (`hmin`, else `h`).
        min_h: Option<u32>,
    },
    /// Data: type 1 sponsored, 2 description, 12 call to action.
    Data {
        /// Data type.
        data_type: u64,
        /// Longest value.
        len: Option<u32>,
    },
    /// Video or anything else adstream's native creatives cannot fill.
    Other,
}

/// A native slot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativeSlot {
    /// Requested assets.
    pub assets: Vec<NativeAsset>,
    /// Whether the request wrapped its object in `{"native": ...}` (Native 1.0); the response
    /// follows suit.
    pub wrapped: bool,
}

fn number(v: &Value, key: &str) -> Option<u32> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

fn numbers(v: &Value, key: &str) -> Vec<u32> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .filter_map(|n| u32::try_from(n).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl BannerSlot {
    fn read(v: &Value) -> Self {
        let mut sizes = Vec::new();
        let mut add = |w: Option<u32>, h: Option<u32>| {
            if let (Some(w), Some(h)) = (w, h) {
                if w > 0 && h > 0 && !sizes.contains(&(w, h)) {
                    sizes.push((w, h));
                }
            }
        };
        add(number(v, "w"), number(v, "h"));
        for f in v
            .get("format")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(number(f, "w"), number(f, "h"));
        }
        BannerSlot { sizes }
    }
}

impl MediaSlot {
    fn read(v: &Value) -> Self {
        let mut protocols = numbers(v, "protocols");
        if let Some(p) = number(v, "protocol") {
            protocols.push(p);
        }
        MediaSlot {
            mimes: v
                .get("mimes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_ascii_lowercase)
                        .collect()
                })
                .unwrap_or_default(),
            min_duration: number(v, "minduration"),
            max_duration: number(v, "maxduration").filter(|d| *d > 0),
            protocols,
            w: number(v, "w"),
            h: number(v, "h"),
        }
    }
}

impl NativeSlot {
    /// Reads `imp.native`: its `request` is a JSON string (OpenRTB 2.x) or an object.
    fn read(v: &Value) -> Option<Self> {
        let request = v.get("request")?;
        let parsed;
        let request = match request {
            Value::String(text) => {
                parsed = serde_json::from_str::<Value>(text).ok()?;
                &parsed
            }
            other => other,
        };
        let (inner, wrapped) = match request.get("native") {
            Some(inner) => (inner, true),
            None => (request, false),
        };
        let assets = inner
            .get("assets")
            .and_then(Value::as_array)?
            .iter()
            .filter_map(|a| {
                let id = a.get("id").and_then(Value::as_u64)?;
                let required = match a.get("required") {
                    Some(Value::Bool(b)) => *b,
                    Some(n) => n.as_u64() == Some(1),
                    None => false,
                };
                let kind = if let Some(t) = a.get("title") {
                    NativeAssetKind::Title {
                        len: number(t, "len"),
                    }
                } else if let Some(img) = a.get("img") {
                    NativeAssetKind::Image {
                        image_type: img.get("type").and_then(Value::as_u64).unwrap_or(3),
                        min_w: number(img, "wmin").or(number(img, "w")),
                        min_h: number(img, "hmin").or(number(img, "h")),
                    }
                } else if let Some(d) = a.get("data") {
                    NativeAssetKind::Data {
                        data_type: d.get("type").and_then(Value::as_u64).unwrap_or(0),
                        len: number(d, "len"),
                    }
                } else {
                    NativeAssetKind::Other
                };
                Some(NativeAsset { id, required, kind })
            })
            .collect();
        Some(NativeSlot { assets, wrapped })
    }
}

impl ImpFormats {
    /// Reads an imp's media objects.
    pub fn read(
        banner: Option<&Value>,
        video: Option<&Value>,
        audio: Option<&Value>,
        native: Option<&Value>,
    ) -> Self {
        fn object(v: Option<&Value>) -> Option<&Value> {
            v.filter(|v| v.is_object())
        }
        ImpFormats {
            any: banner.is_none() && video.is_none() && audio.is_none() && native.is_none(),
            banner: object(banner).map(BannerSlot::read),
            video: object(video).map(MediaSlot::read),
            audio: object(audio).map(MediaSlot::read),
            native: object(native).and_then(NativeSlot::read),
        }
    }

    /// A slot taking anything (tests, minimal requests).
    pub fn anything() -> Self {
        ImpFormats {
            any: true,
            ..ImpFormats::default()
        }
    }
}
