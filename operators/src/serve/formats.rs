//! Formats: what an impression slot takes (`imp.banner`, `video`, `audio`, `native`), which of a
//! campaign's creatives fit it, and the markup of the bid.
//!
//! A creative fits a slot when the slot offers its kind and
//! - banner: its size is one the slot lists (`banner.w`/`h` first, then `banner.format`), or the
//!   slot lists no size;
//! - video and audio: one of its mime types is accepted, its duration lies within
//!   `minduration`..`maxduration`, and one of its protocols is accepted when the slot lists any;
//! - native: it can fill every asset the native request marks required (titles within their
//!   length, images of the right type at least the minimum size, data of the right type).
//!
//! A slot without any media object (not valid OpenRTB, but what minimal clients send) takes any
//! banner, video or audio creative. When several creatives fit, the best is the one whose banner
//! size comes earliest in the slot's list (the slot's own `w`/`h` first), then the campaign's own
//! order.

use serde_json::{json, Value};

use crate::events::creative::{Creative, CreativeKind, NativeAssets};
pub use crate::request::formats::{
    BannerSlot, ImpFormats, MediaSlot, NativeAsset, NativeAssetKind, NativeSlot,
};

fn media_fits(c: &Creative, slot: &MediaSlot) -> bool {
    let mime_ok = slot.mimes.is_empty()
        || c.mimes
            .iter()
            .any(|m| slot.mimes.iter().any(|s| s.eq_ignore_ascii_case(m)));
    let duration = c.duration.unwrap_or(0);
    let duration_ok = slot.min_duration.is_none_or(|min| duration >= min)
        && slot.max_duration.is_none_or(|max| duration <= max);
    let protocol_ok =
        slot.protocols.is_empty() || c.protocols.iter().any(|p| slot.protocols.contains(p));
    mime_ok && duration_ok && protocol_ok
}

fn chars(s: &str) -> u32 {
    u32::try_from(s.chars().count()).unwrap_or(u32::MAX)
}

/// What a native creative puts in `asset`, if it can fill it.
enum NativeValue<'a> {
    Title(&'a str),
    Image(&'a crate::events::creative::NativeImage),
    Data(&'a str),
}

fn native_value<'a>(native: &'a NativeAssets, asset: &NativeAsset) -> Option<NativeValue<'a>> {
    match &asset.kind {
        NativeAssetKind::Title { len } => {
            let title = native.title.as_deref()?;
            len.is_none_or(|l| chars(title) <= l)
                .then_some(NativeValue::Title(title))
        }
        NativeAssetKind::Image {
            image_type,
            min_w,
            min_h,
        } => {
            let image = match image_type {
                1 | 2 => native.icon.as_ref(),
                3 => native.image.as_ref(),
                _ => None,
            }?;
            let big_enough =
                min_w.is_none_or(|w| image.w >= w) && min_h.is_none_or(|h| image.h >= h);
            big_enough.then_some(NativeValue::Image(image))
        }
        NativeAssetKind::Data { data_type, len } => {
            let value = match data_type {
                1 => native.sponsored.as_deref(),
                2 => native.description.as_deref(),
                12 => native.cta.as_deref(),
                _ => None,
            }?;
            len.is_none_or(|l| chars(value) <= l)
                .then_some(NativeValue::Data(value))
        }
        NativeAssetKind::Other => None,
    }
}

/// The native response's entry for `asset`, filled from the creative.
fn native_asset(native: &NativeAssets, asset: &NativeAsset) -> Option<Value> {
    Some(match native_value(native, asset)? {
        NativeValue::Title(text) => json!({ "id": asset.id, "title": { "text": text } }),
        NativeValue::Image(img) => {
            json!({ "id": asset.id, "img": { "url": img.url, "w": img.w, "h": img.h } })
        }
        NativeValue::Data(value) => json!({ "id": asset.id, "data": { "value": value } }),
    })
}

/// How well `creative` fits the slot: `None` when it does not, else a rank (lower is better).
pub fn fit(creative: &Creative, slot: &ImpFormats) -> Option<u32> {
    match creative.kind {
        CreativeKind::Banner => {
            let banner = match &slot.banner {
                Some(b) => b,
                None if slot.any => return Some(0),
                None => return None,
            };
            if banner.sizes.is_empty() {
                return Some(0);
            }
            let size = creative.w.zip(creative.h)?;
            banner
                .sizes
                .iter()
                .position(|s| *s == size)
                .and_then(|i| u32::try_from(i).ok())
        }
        CreativeKind::Video | CreativeKind::Audio => {
            let media = if creative.kind == CreativeKind::Video {
                &slot.video
            } else {
                &slot.audio
            };
            match media {
                Some(m) => media_fits(creative, m).then_some(0),
                None => slot.any.then_some(0),
            }
        }
        CreativeKind::Native => {
            let (native, assets) = (slot.native.as_ref()?, creative.native.as_ref()?);
            let fills = native
                .assets
                .iter()
                .filter(|a| a.required)
                .all(|a| native_value(assets, a).is_some());
            fills.then_some(0)
        }
    }
}

/// The index of the creative of `creatives` that fits the slot best (see the module doc).
pub fn best_creative(creatives: &[Creative], slot: &ImpFormats) -> Option<usize> {
    let mut best: Option<(u32, usize)> = None;
    for (i, c) in creatives.iter().enumerate() {
        if let Some(rank) = fit(c, slot) {
            if rank == 0 {
                return Some(i);
            }
            if best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// A hash of what [`fit`] reads of each of `creatives`, in order (kind, size, mime types,
/// duration, protocols, and the lengths and sizes of native assets): lists with the same
/// signature fit every slot alike, so a request works out [`best_creative`] once per
/// signature, not once per campaign (catalogs reuse a few standard formats). Ids, markup and
/// texts are left out, the lengths of native texts are in.
pub fn format_signature(creatives: &[Creative]) -> u64 {
    let mut bytes: Vec<u8> = Vec::with_capacity(32 * creatives.len().max(1));
    let mut put = |v: u64| bytes.extend_from_slice(&v.to_le_bytes());
    for c in creatives {
        put(c.kind as u64);
        put(c.w.map_or(u64::MAX, u64::from));
        put(c.h.map_or(u64::MAX, u64::from));
        put(c.duration.map_or(u64::MAX, u64::from));
        put(c.mimes.len() as u64);
        for m in &c.mimes {
            put(crate::routing::route(&m.to_ascii_lowercase()));
        }
        put(c.protocols.len() as u64);
        for p in &c.protocols {
            put(u64::from(*p));
        }
        match &c.native {
            None => put(u64::MAX),
            Some(n) => {
                for text in [&n.title, &n.description, &n.sponsored, &n.cta] {
                    put(text.as_deref().map_or(u64::MAX, |t| u64::from(chars(t))));
                }
                for image in [&n.image, &n.icon] {
                    put(image
                        .as_ref()
                        .map_or(u64::MAX, |i| (u64::from(i.w) << 32) | u64::from(i.h)));
                }
            }
        }
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// What a bid says about its ad, from the creative that won the slot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BidMarkup {
    /// OpenRTB `mtype`.
    pub mtype: u8,
    /// Width of the ad, when known.
    pub w: Option<u32>,
    /// Height of the ad, when known.
    pub h: Option<u32>,
    /// Inline markup.
    pub adm: Option<String>,
    /// Where to fetch the markup.
    pub nurl: Option<String>,
}

/// The markup of `creative` in the slot: its own `adm`/`nurl`, or for native a native response
/// filling the requested assets it can.
pub fn markup(creative: &Creative, slot: &ImpFormats) -> BidMarkup {
    let mut bid = BidMarkup {
        mtype: creative.kind.mtype(),
        w: creative.w,
        h: creative.h,
        adm: creative.adm.clone(),
        nurl: creative.nurl.clone(),
    };
    match creative.kind {
        CreativeKind::Video => {
            if bid.w.is_none() {
                if let Some(v) = &slot.video {
                    bid.w = v.w;
                    bid.h = v.h;
                }
            }
        }
        CreativeKind::Native => {
            if let (Some(request), Some(assets)) = (&slot.native, &creative.native) {
                let filled: Vec<Value> = request
                    .assets
                    .iter()
                    .filter_map(|a| native_asset(assets, a))
                    .collect();
                let response = json!({
                    "ver": "1.2",
                    "assets": filled,
                    "link": { "url": assets.click_url },
                });
                let response = if request.wrapped {
                    json!({ "native": response })
                } else {
                    response
                };
                bid.adm = Some(response.to_string());
            }
        }
        CreativeKind::Banner | CreativeKind::Audio => {}
    }
    bid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creative(json: &str) -> Creative {
        let c: Creative = serde_json::from_str(json).expect("creative");
        c.validate("c").expect("valid");
        c
    }

    fn slot(imp: &str) -> ImpFormats {
        let v: Value = serde_json::from_str(imp).expect("imp");
        ImpFormats::read(
            v.get("banner"),
            v.get("video"),
            v.get("audio"),
            v.get("native"),
        )
    }

    const BANNER_300: &str = r#"{"ad_id":"b300","w":300,"h":250,"adm":"<div/>"}"#;
    const BANNER_728: &str = r#"{"ad_id":"b728","w":728,"h":90,"adm":"<div/>"}"#;
    const VIDEO_15: &str = r#"{"ad_id":"v15","type":"video","mimes":["video/mp4"],"duration":15,"protocols":[2,3],"adm":"<VAST version=\"3.0\"/>","w":640,"h":360}"#;
    const AUDIO_30: &str = r#"{"ad_id":"a30","type":"audio","mimes":["audio/mp4"],"duration":30,"nurl":"https://ads.example/vast"}"#;
    const NATIVE: &str = r#"{"ad_id":"n","type":"native","native":{"title":"Summer sale","description":"All shoes half price","sponsored":"Shoes Inc","image":{"url":"https://cdn.example/i.png","w":1200,"h":627},"click_url":"https://shoes.example"}}"#;

    #[test]
    fn banners_fit_by_size_and_the_slots_own_size_comes_first() {
        let b300 = creative(BANNER_300);
        let b728 = creative(BANNER_728);
        let s =
            slot(r#"{"banner":{"w":728,"h":90,"format":[{"w":300,"h":250},{"w":728,"h":90}]}}"#);
        assert_eq!(fit(&b728, &s), Some(0));
        assert_eq!(fit(&b300, &s), Some(1));
        assert_eq!(best_creative(&[b300.clone(), b728.clone()], &s), Some(1));
        let only_300 = slot(r#"{"banner":{"format":[{"w":300,"h":250}]}}"#);
        assert_eq!(
            best_creative(&[b728.clone(), b300.clone()], &only_300),
            Some(1)
        );
        assert_eq!(fit(&b728, &only_300), None);
        // An unsized banner fits only a slot that names no size.
        let plain = Creative::plain("p");
        assert_eq!(fit(&plain, &only_300), None);
        assert_eq!(fit(&plain, &slot(r#"{"banner":{}}"#)), Some(0));
    }

    #[test]
    fn a_video_only_slot_never_gets_a_display_ad() {
        let s = slot(
            r#"{"video":{"mimes":["video/mp4"],"minduration":5,"maxduration":30,"protocols":[2,3,5,6],"w":640,"h":480}}"#,
        );
        assert_eq!(fit(&creative(BANNER_300), &s), None);
        assert_eq!(fit(&Creative::plain("p"), &s), None);
        assert_eq!(fit(&creative(VIDEO_15), &s), Some(0));
        let mut long = creative(VIDEO_15);
        long.duration = Some(60);
        assert_eq!(fit(&long, &s), None, "too long");
        let webm = slot(r#"{"video":{"mimes":["video/webm"]}}"#);
        assert_eq!(fit(&creative(VIDEO_15), &webm), None, "mime");
        let vast4 = slot(r#"{"video":{"mimes":["video/mp4"],"protocols":[7]}}"#);
        assert_eq!(fit(&creative(VIDEO_15), &vast4), None, "protocol");
        let old = slot(r#"{"video":{"mimes":["video/mp4"],"protocol":3}}"#);
        assert_eq!(
            fit(&creative(VIDEO_15), &old),
            Some(0),
            "2.x single protocol"
        );
        let m = markup(&creative(VIDEO_15), &s);
        assert_eq!((m.mtype, m.w, m.h), (2, Some(640), Some(360)));
        assert!(m.adm.unwrap().starts_with("<VAST"));
    }

    #[test]
    fn audio_and_multi_format_slots() {
        let audio = creative(AUDIO_30);
        let s = slot(r#"{"audio":{"mimes":["audio/mp4"],"maxduration":30}}"#);
        assert_eq!(fit(&audio, &s), Some(0));
        assert_eq!(
            fit(&audio, &slot(r#"{"video":{"mimes":["audio/mp4"]}}"#)),
            None
        );
        let m = markup(&audio, &s);
        assert_eq!(
            (m.mtype, m.adm, m.nurl.as_deref()),
            (3, None, Some("https://ads.example/vast"))
        );
        // Banner or video: both kinds may win it; the banner of the slot's size is best.
        let multi = slot(r#"{"banner":{"w":300,"h":250},"video":{"mimes":["video/mp4"]}}"#);
        let all = [
            creative(VIDEO_15),
            creative(BANNER_728),
            creative(BANNER_300),
        ];
        assert_eq!(best_creative(&all, &multi), Some(0));
        assert_eq!(fit(&all[2], &multi), Some(0));
        assert_eq!(fit(&all[1], &multi), None);
        // No media object: any banner, video or audio creative; never native.
        let any = ImpFormats::anything();
        assert_eq!(fit(&creative(BANNER_728), &any), Some(0));
        assert_eq!(fit(&audio, &any), Some(0));
        assert_eq!(fit(&creative(NATIVE), &any), None);
    }

    #[test]
    fn native_fills_required_assets_and_answers_in_the_requests_form() {
        let request = r#"{"native":{"ver":"1.2","request":"{\"ver\":\"1.2\",\"assets\":[{\"id\":1,\"required\":1,\"title\":{\"len\":25}},{\"id\":2,\"required\":1,\"img\":{\"type\":3,\"wmin\":600,\"hmin\":300}},{\"id\":3,\"data\":{\"type\":2,\"len\":90}},{\"id\":4,\"data\":{\"type\":12}}]}"}}"#;
        let s = slot(request);
        let n = creative(NATIVE);
        assert_eq!(fit(&n, &s), Some(0));
        assert_eq!(fit(&creative(BANNER_300), &s), None);
        let m = markup(&n, &s);
        assert_eq!(m.mtype, 4);
        let adm: Value = serde_json::from_str(&m.adm.unwrap()).unwrap();
        assert_eq!(adm["link"]["url"], "https://shoes.example");
        let ids: Vec<u64> = adm["assets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_u64().unwrap())
            .collect();
        assert_eq!(
            ids,
            vec![1, 2, 3],
            "optional cta left out: the creative has none"
        );
        // A title too long for a required asset, or a required icon it lacks: no fit.
        let short = request.replace("\\\"len\\\":25", "\\\"len\\\":5");
        assert_eq!(fit(&n, &slot(&short)), None);
        let icon = request.replace("\\\"type\\\":3", "\\\"type\\\":1");
        assert_eq!(fit(&n, &slot(&icon)), None);
        // Native 1.0 wraps its request, and gets a wrapped response.
        let wrapped = slot(
            r#"{"native":{"request":{"native":{"assets":[{"id":7,"required":1,"title":{"len":80}}]}}}}"#,
        );
        let adm: Value = serde_json::from_str(&markup(&n, &wrapped).adm.unwrap()).unwrap();
        assert_eq!(adm["native"]["assets"][0]["id"], 7);
        // An unreadable native request offers nothing.
        assert_eq!(fit(&n, &slot(r#"{"native":{"request":"{nope"}}"#)), None);
    }
}
