//! Real-world OpenRTB 2.5/2.6 bid requests (the IAB specification's examples: simple banner,
//! expandable, mobile app, video, native; plus multi-imp deals with a euro floor, app audio and
//! 2.6 DOOH) are accepted, and what serving reads from them is what they ask for: formats,
//! alpha-3 countries, regions and metros, currencies and block lists.

use std::path::Path;

use adstream_operators::request::{parse_request, AdRequest};
use adstream_operators::serve::formats::NativeAssetKind;

fn fixture(name: &str) -> AdRequest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openrtb")
        .join(name);
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_request(&body).unwrap_or_else(|e| panic!("{name} refused: {e}"))
}

#[test]
fn every_fixture_is_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openrtb");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        let body = std::fs::read(&path).expect("readable");
        let r = parse_request(&body).unwrap_or_else(|e| panic!("{} refused: {e}", path.display()));
        assert!(!r.slots.is_empty());
        n += 1;
    }
    assert!(n >= 8, "only {n} fixtures");
}

#[test]
fn banners_apps_and_geography() {
    let r = fixture("banner_site.json");
    let banner = r.slots[0].formats.banner.as_ref().expect("banner");
    assert_eq!(banner.sizes, vec![(300, 250)]);
    assert!(r.is_site);
    assert_eq!(r.slots[0].floor_ecpm_micros, 30_000);

    let r = fixture("mobile_app.json");
    assert!(!r.is_site);
    assert_eq!(r.country.as_deref(), Some("US"), "alpha-3 USA");
    assert_eq!(r.region.as_deref(), Some("US-CA"));
    assert_eq!(r.metro.as_deref(), Some("803"));
    assert_eq!(r.device.as_deref(), Some("mobile"));
    assert_eq!(r.blocks.bcat.len(), 5);
    assert_eq!(
        r.blocks.badv,
        vec!["apple.com", "go-text.me", "heywire.com"]
    );
    assert_eq!(
        r.slots[0].tag_id.as_deref(),
        Some("agltb3B1Yi1pbmNyDQsSBFNpdGUY7fD0FAw")
    );
    assert_eq!(
        r.slots[0].formats.banner.as_ref().expect("banner").sizes,
        vec![(728, 90)]
    );
}

#[test]
fn video_native_audio_and_dooh() {
    let r = fixture("video.json");
    let v = r.slots[0].formats.video.as_ref().expect("video");
    assert_eq!((v.min_duration, v.max_duration), (Some(5), Some(30)));
    assert_eq!(v.protocols, vec![2, 3]);
    assert!(v.mimes.contains(&"video/mp4".to_string()));
    assert!(
        r.slots[0].formats.banner.is_none(),
        "companions are not a banner imp"
    );
    assert_eq!(r.tmax_ms, 120);

    let r = fixture("native.json");
    let n = r.slots[0]
        .formats
        .native
        .as_ref()
        .expect("native 1.0 request read");
    assert!(n.wrapped);
    assert_eq!(n.assets.len(), 5);
    assert!(matches!(
        n.assets[2].kind,
        NativeAssetKind::Image {
            image_type: 1,
            min_w: Some(50),
            min_h: Some(50)
        }
    ));
    assert!(n.assets.iter().filter(|a| a.required).count() == 4);

    let r = fixture("audio_app.json");
    let a = r.slots[0].formats.audio.as_ref().expect("audio");
    assert_eq!(a.protocols, vec![9, 10]);
    assert_eq!(r.country.as_deref(), Some("GB"));
    assert_eq!(r.currencies, vec!["GBP", "USD"]);

    let r = fixture("dooh_26.json");
    let f = &r.slots[0].formats;
    assert!(
        f.banner.is_some() && f.video.is_some(),
        "a multi-format imp"
    );
    assert_eq!(r.country.as_deref(), Some("DE"));
    assert_eq!(r.blocks.wseat, vec!["adstream", "other"]);
}

#[test]
fn deals_floors_in_euros_and_seats() {
    let r = fixture("deals_multi_imp_eur.json");
    assert_eq!(r.slots.len(), 2);
    assert_eq!(r.slots[0].floor_currency, "EUR");
    assert_eq!(
        r.slots[0].floor_ecpm_micros, 1_500_000,
        "in EUR until converted"
    );
    assert_eq!(
        r.slots[0].formats.banner.as_ref().expect("banner").sizes,
        vec![(300, 250), (300, 600)]
    );
    assert_eq!(r.currencies, vec!["EUR", "USD"]);
    assert_eq!(r.blocks.bseat, vec!["blocked-seat"]);
    assert_eq!(r.country.as_deref(), Some("FR"));
    assert_eq!(r.region.as_deref(), Some("FR-IDF"));
}
