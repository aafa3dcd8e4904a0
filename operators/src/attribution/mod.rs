//! Conversion attribution: a conversion goes to the user's last click on that advertiser within
//! the click window, else to the last impression within the view window (`SPEC.md`).
//!
//! Touches are kept per (user, advertiser), a few of each kind, so a conversion that arrives
//! before a slightly later click is still matched against the touches that preceded it.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::checkpoint::codec;
use crate::hash::{Hashed, HashedMap, HashedSet};

use serde::{Deserialize, Serialize};

use crate::events::EventKind;
pub use crate::records::Touch;
use crate::time::EventTime;

/// Attribution windows in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windows {
    /// Click-through window (default 7 days).
    pub click_ms: i64,
    /// View-through window (default 1 day).
    pub view_ms: i64,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            click_ms: 7 * 86_400_000,
            view_ms: 86_400_000,
        }
    }
}

/// Touches of one user with one advertiser, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTouches {
    /// Recent clicks.
    pub clicks: Vec<Touch>,
    /// Recent impressions.
    pub impressions: Vec<Touch>,
}

const KEPT_PER_KIND: usize = 4;

/// A touch as attribution holds it: its time and kind, and the whole touch in the checkpoint
/// format ([`crate::checkpoint::codec`]), encoded once when it is recorded (its ids are in cache
/// then). A checkpoint copies these bytes instead of walking the win's ids again for every touch
/// of every changed user, and the win's ids, shared with the rest of the graph, are not kept
/// alive here. A conversion, which is rarer, decodes the touch it is attributed to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HeldTouch {
    ts: EventTime,
    kind: EventKind,
    encoded: Box<[u8]>,
}

impl HeldTouch {
    /// # Panics
    /// When the touch cannot be encoded: a bug in a record type, never a property of the input
    /// (as for every checkpointed value).
    fn of(touch: &Touch) -> HeldTouch {
        let encoded = codec::to_vec_after(&[], touch)
            .unwrap_or_else(|e| panic!("encoding a touch for attribution: {e}"));
        HeldTouch {
            ts: touch.ts,
            kind: touch.kind,
            encoded: encoded.into_boxed_slice(),
        }
    }

    /// The served slot (request id, slot id) it touched, read from its bytes.
    fn slot(&self) -> Option<(&str, &str)> {
        postcard::take_from_bytes::<(i64, EventKind, &str, &str)>(&self.encoded)
            .ok()
            .map(|((_, _, request, imp), _)| (request, imp))
    }

    /// # Panics
    /// When its own bytes do not decode: they were written by [`HeldTouch::of`] in this process.
    fn touch(&self) -> Touch {
        postcard::from_bytes(&self.encoded)
            .unwrap_or_else(|e| panic!("decoding a touch attribution encoded: {e}"))
    }
}

/// [`UserTouches`] as attribution holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct HeldTouches {
    clicks: Vec<HeldTouch>,
    impressions: Vec<HeldTouch>,
}

impl HeldTouches {
    fn of(touches: &UserTouches) -> HeldTouches {
        HeldTouches {
            clicks: touches.clicks.iter().map(HeldTouch::of).collect(),
            impressions: touches.impressions.iter().map(HeldTouch::of).collect(),
        }
    }

    /// The checkpoint value of these touches: byte for byte what
    /// [`codec::encode`] writes for the [`UserTouches`] they hold (postcard
    /// writes a sequence as its length, a varint, then its elements), built from the bytes each
    /// touch was encoded to once.
    fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .clicks
            .iter()
            .chain(&self.impressions)
            .map(|t| t.encoded.len())
            .sum();
        let mut out = codec::started(2 * 10 + size);
        for list in [&self.clicks, &self.impressions] {
            codec::push_length(&mut out, list.len());
            for t in list {
                out.extend_from_slice(&t.encoded);
            }
        }
        out
    }
}

fn keep_recent(list: &mut Vec<HeldTouch>, touch: &Touch) {
    let slot = (
        touch.claims.request_id.as_str(),
        touch.claims.imp_id.as_str(),
    );
    if list.iter().any(|t| t.slot() == Some(slot)) {
        return;
    }
    let at = list.partition_point(|t| t.ts <= touch.ts);
    list.insert(at, HeldTouch::of(touch));
    if list.len() > KEPT_PER_KIND {
        list.remove(0);
    }
}

/// (user_id, advertiser_id).
pub type UserAdvertiser = (String, String);

pub mod operator;

/// The conversion `conversion` attributed to `touch` (what the label join and reports read).
pub fn attributed(
    touch: &Touch,
    conversion: &crate::events::Conversion,
) -> crate::records::AttributedConversion {
    crate::records::AttributedConversion {
        request_id: touch.claims.request_id.clone(),
        imp_id: touch.claims.imp_id.clone(),
        conversion_id: conversion.event_id.clone(),
        ts: conversion.ts,
        via_click: touch.kind == EventKind::Click,
        value_micros: conversion.value_micros,
        claims: touch.claims.clone(),
    }
}

/// Width of the expiry index's time buckets, ms.
const EXPIRY_BUCKET_MS: i64 = 60_000;

/// The attribution state of one worker's users.
#[derive(Debug, Default)]
pub struct Attributor {
    windows: Windows,
    /// Each key is held once, shared by the map, the expiry index and the dirty set.
    touches: HashedMap<SharedKey, HeldTouches>,
    dirty: HashedSet<SharedKey>,
    /// The keys with a touch whose window ends in each bucket of event time: [`Attributor::expire`]
    /// visits only the buckets that have ended, not every key. A key may be filed under buckets
    /// whose touch is gone (pushed out by newer ones); visiting it then changes nothing.
    expiring: BTreeMap<i64, HashedSet<SharedKey>>,
    /// The key of the touch being recorded, built in place: looking a key up allocates nothing.
    lookup: Hashed<UserAdvertiser>,
}

/// A (user, advertiser) key held once, hashed once.
type SharedKey = Rc<Hashed<UserAdvertiser>>;

impl Attributor {
    /// Empty state with these windows.
    pub fn new(windows: Windows) -> Self {
        Attributor {
            windows,
            ..Default::default()
        }
    }

    /// When the attribution window of a touch of `kind` at `ts` ends, ms.
    fn window_end(&self, kind: EventKind, ts: EventTime) -> i64 {
        let window = match kind {
            EventKind::Click => self.windows.click_ms,
            _ => self.windows.view_ms,
        };
        ts.millis().saturating_add(window)
    }

    fn file_expiry(&mut self, key: &SharedKey, end: i64) {
        let bucket = end.div_euclid(EXPIRY_BUCKET_MS);
        let keys = self.expiring.entry(bucket).or_default();
        if !keys.contains(key) {
            keys.insert(key.clone());
        }
    }

    /// Records an impression or click of `user`.
    pub fn record(&mut self, user: &str, touch: Touch) {
        self.lookup.replace_with(|(u, a)| {
            u.clear();
            u.push_str(user);
            a.clear();
            a.push_str(&touch.claims.advertiser_id);
        });
        let key = match self.touches.get_key_value(&self.lookup) {
            Some((held, _)) => held.clone(),
            None => Rc::new(self.lookup.clone()),
        };
        self.file_expiry(&key, self.window_end(touch.kind, touch.ts));
        let entry = self.touches.entry(key.clone()).or_default();
        match touch.kind {
            EventKind::Click => keep_recent(&mut entry.clicks, &touch),
            _ => keep_recent(&mut entry.impressions, &touch),
        }
        self.dirty.insert(key);
    }

    /// The touch a conversion of `user` for `advertiser` at `ts` is attributed to.
    pub fn attribute(&self, user: &str, advertiser: &str, ts: EventTime) -> Option<Touch> {
        let touches = self
            .touches
            .get(&Hashed::new((user.to_string(), advertiser.to_string())))?;
        fn within(list: &[HeldTouch], ts: EventTime, window: i64) -> Option<&HeldTouch> {
            list.iter()
                .rev()
                .find(|t| t.ts <= ts && ts.millis() - t.ts.millis() <= window)
        }
        within(&touches.clicks, ts, self.windows.click_ms)
            .or_else(|| within(&touches.impressions, ts, self.windows.view_ms))
            .map(HeldTouch::touch)
    }

    /// Drops touches too old to be attributed anything at event-time `frontier`.
    ///
    /// Only the keys filed under buckets that ended before `frontier` are visited; a touch in a
    /// bucket that has not ended yet is dropped with a later call (attribution checks the
    /// windows itself, so a touch kept a little longer is never attributed anything).
    pub fn expire(&mut self, frontier: i64) {
        let (click_ms, view_ms) = (self.windows.click_ms, self.windows.view_ms);
        let pending = self
            .expiring
            .split_off(&frontier.div_euclid(EXPIRY_BUCKET_MS));
        let ended = std::mem::replace(&mut self.expiring, pending);
        for key in ended.into_values().flatten() {
            let Some(t) = self.touches.get_mut(&key) else {
                continue;
            };
            let before = t.clicks.len() + t.impressions.len();
            t.clicks
                .retain(|c| c.ts.millis().saturating_add(click_ms) >= frontier);
            t.impressions
                .retain(|i| i.ts.millis().saturating_add(view_ms) >= frontier);
            if t.clicks.len() + t.impressions.len() != before {
                if t.clicks.is_empty() && t.impressions.is_empty() {
                    self.touches.remove(&key);
                }
                self.dirty.insert(key);
            }
        }
    }

    /// The entries changed since the last call (`None`: deleted), decoded: for tests; a
    /// checkpoint visits them with `drain_changes`.
    #[cfg(test)]
    pub fn take_changes(&mut self) -> Vec<(UserAdvertiser, Option<UserTouches>)> {
        let mut out = Vec::with_capacity(self.dirty.len());
        self.drain_changes(|k, v| {
            let touches = v.map(|v| codec::decode(b"test", &v).expect("its own encoding decodes"));
            out.push((k.clone(), touches));
        });
        out
    }

    /// Visits the entries changed since the last call with their checkpoint values (`None`:
    /// deleted), encoded from the bytes each touch was encoded to when it was recorded.
    pub fn drain_changes(&mut self, mut visit: impl FnMut(&UserAdvertiser, Option<Vec<u8>>)) {
        for key in self.dirty.drain() {
            visit(key.key(), self.touches.get(&key).map(HeldTouches::encode));
        }
    }

    /// Restores checkpointed entries.
    pub fn restore(&mut self, key: UserAdvertiser, touches: UserTouches) {
        let key = Rc::new(Hashed::new(key));
        let ends: Vec<i64> = touches
            .clicks
            .iter()
            .chain(&touches.impressions)
            .map(|t| self.window_end(t.kind, t.ts))
            .collect();
        for end in ends {
            self.file_expiry(&key, end);
        }
        self.touches.insert(key, HeldTouches::of(&touches));
    }

    /// Number of (user, advertiser) pairs held.
    pub fn len(&self) -> usize {
        self.touches.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.touches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Billing;
    use crate::records::Touch;
    use crate::token::WinClaims;
    use proptest::prelude::any;

    fn touch(rid: &str, kind: EventKind, ts: i64) -> Touch {
        Touch {
            ts: EventTime(ts),
            kind,
            claims: std::sync::Arc::new(WinClaims {
                request_id: rid.into(),
                imp_id: "1".into(),
                campaign_id: "c".into(),
                advertiser_id: "adv".into(),
                ad_id: "a".into(),
                billing: Billing::Cpa,
                charge_micros: 1,
                issued: EventTime(ts),
                country: None,
                device: None,
            }),
        }
    }

    #[test]
    fn last_click_wins_over_impressions() {
        let mut a = Attributor::new(Windows::default());
        a.record("u", touch("r1", EventKind::Impression, 100));
        a.record("u", touch("r2", EventKind::Click, 200));
        a.record("u", touch("r3", EventKind::Click, 300));
        a.record("u", touch("r4", EventKind::Impression, 400));
        assert_eq!(
            a.attribute("u", "adv", EventTime(500))
                .unwrap()
                .claims
                .request_id,
            "r3"
        );
        // Before the later click: the earlier one.
        assert_eq!(
            a.attribute("u", "adv", EventTime(250))
                .unwrap()
                .claims
                .request_id,
            "r2"
        );
        // Another advertiser or user: nothing.
        assert!(a.attribute("u", "other", EventTime(500)).is_none());
        assert!(a.attribute("v", "adv", EventTime(500)).is_none());
    }

    #[test]
    fn windows_bound_attribution() {
        let w = Windows {
            click_ms: 1_000,
            view_ms: 100,
        };
        let mut a = Attributor::new(w);
        a.record("u", touch("imp", EventKind::Impression, 0));
        assert_eq!(
            a.attribute("u", "adv", EventTime(100))
                .unwrap()
                .claims
                .request_id,
            "imp"
        );
        assert!(a.attribute("u", "adv", EventTime(101)).is_none());
        a.record("u", touch("clk", EventKind::Click, 50));
        assert_eq!(
            a.attribute("u", "adv", EventTime(1_050))
                .unwrap()
                .claims
                .request_id,
            "clk"
        );
        // Touches go once the index's bucket of their window's end has passed.
        a.expire(2_000);
        assert_eq!(a.len(), 1);
        a.expire(EXPIRY_BUCKET_MS);
        assert!(a.is_empty());
        assert_eq!(a.take_changes().len(), 1);
    }

    fn any_touch() -> impl proptest::strategy::Strategy<Value = Touch> {
        use proptest::prelude::*;
        (
            any::<i64>(),
            any::<bool>(),
            // Ids past 127 bytes take a two-byte length.
            ("\\PC{0,3}", "[a-z0-9]{0,200}", "\\PC{0,8}"),
            any::<u64>(),
            proptest::option::of("[A-Z]{2}"),
        )
            .prop_map(|(ts, click, (rid, imp, campaign), px, country)| {
                let mut t = touch(
                    &rid,
                    if click {
                        EventKind::Click
                    } else {
                        EventKind::Impression
                    },
                    ts,
                );
                let claims = std::sync::Arc::make_mut(&mut t.claims);
                claims.imp_id = imp;
                claims.campaign_id = campaign;
                claims.charge_micros = px;
                claims.country = country;
                t
            })
    }

    proptest::proptest! {
        /// A checkpoint built from the bytes each touch was encoded to when it was recorded is
        /// byte for byte the encoding of the touches themselves, and decodes back to them.
        #[test]
        fn held_touches_encode_as_the_touches_they_hold(
            clicks in proptest::collection::vec(any_touch(), 0..6),
            impressions in proptest::collection::vec(any_touch(), 0..200),
        ) {
            let touches = UserTouches { clicks, impressions };
            let held = HeldTouches::of(&touches);
            let bytes = held.encode();
            proptest::prop_assert_eq!(&bytes, &codec::encode(&touches).unwrap());
            proptest::prop_assert_eq!(
                codec::decode::<UserTouches>(b"k", &bytes).unwrap(),
                touches.clone()
            );
            for (h, t) in held.impressions.iter().zip(&touches.impressions) {
                proptest::prop_assert_eq!(&h.touch(), t);
                proptest::prop_assert_eq!(
                    h.slot(),
                    Some((t.claims.request_id.as_str(), t.claims.imp_id.as_str()))
                );
            }
        }
    }

    #[test]
    fn a_slot_touched_again_is_kept_once() {
        let mut a = Attributor::new(Windows::default());
        a.record("u", touch("r1", EventKind::Click, 100));
        a.record("u", touch("r1", EventKind::Click, 150));
        let mut other_slot = touch("r1", EventKind::Click, 120);
        std::sync::Arc::make_mut(&mut other_slot.claims).imp_id = "2".into();
        a.record("u", other_slot);
        let (_, touches) = a.take_changes().pop().unwrap();
        let clicks = touches.unwrap().clicks;
        assert_eq!(clicks.len(), 2);
        assert_eq!(clicks[0].ts, EventTime(100));
        assert_eq!(clicks[1].claims.imp_id, "2");
    }

    proptest::proptest! {
        /// Against a plain model: expiry keeps every touch whose window has not ended, drops every
        /// one whose window ended a bucket before, and attribution is the same as with no expiry.
        #[test]
        fn expiry_by_the_time_index_matches_a_full_scan(
            touches in proptest::collection::vec((0u8..4, 0u8..3, any::<bool>(), 0i64..600_000), 1..60),
            frontiers in proptest::collection::vec(0i64..900_000, 1..6),
            probe in 0i64..900_000,
        ) {
            let windows = Windows { click_ms: 200_000, view_ms: 50_000 };
            let mut indexed = Attributor::new(windows);
            let mut model = Attributor::new(windows);
            for (i, (user, adv, click, ts)) in touches.iter().enumerate() {
                let kind = if *click { EventKind::Click } else { EventKind::Impression };
                let mut t = touch(&format!("r{i}"), kind, *ts);
                std::sync::Arc::make_mut(&mut t.claims).advertiser_id = format!("a{adv}");
                indexed.record(&format!("u{user}"), t.clone());
                model.record(&format!("u{user}"), t);
            }
            let mut frontiers = frontiers;
            frontiers.sort_unstable();
            for f in frontiers {
                indexed.expire(f);
                for t in indexed.touches.values().flat_map(|t| t.clicks.iter().chain(&t.impressions)) {
                    let end = indexed.window_end(t.kind, t.ts);
                    proptest::prop_assert!(end.div_euclid(EXPIRY_BUCKET_MS) >= f.div_euclid(EXPIRY_BUCKET_MS));
                }
                for (key, t) in &model.touches {
                    for kept in t.clicks.iter().chain(&t.impressions) {
                        if model.window_end(kept.kind, kept.ts) >= f {
                            let held = indexed.touches.get(key).is_some_and(|i| {
                                i.clicks.iter().chain(&i.impressions).any(|x| x == kept)
                            });
                            proptest::prop_assert!(held, "a touch inside its window was dropped");
                        }
                    }
                }
                for user in 0..4 {
                    for adv in 0..3 {
                        let (u, a) = (format!("u{user}"), format!("a{adv}"));
                        let at = EventTime(f.max(probe));
                        proptest::prop_assert_eq!(
                            indexed.attribute(&u, &a, at).map(|t| t.claims.request_id.clone()),
                            model.attribute(&u, &a, at).map(|t| t.claims.request_id.clone())
                        );
                    }
                }
            }
        }
    }
}
