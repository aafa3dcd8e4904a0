//! Conversion attribution: a conversion goes to the user's last click on that advertiser within
//! the click window, else to the last impression within the view window (`SPEC.md`).
//!
//! Touches are kept per (user, advertiser), a few of each kind, so a conversion that arrives
//! before a slightly later click is still matched against the touches that preceded it.

use std::collections::{HashMap, HashSet};

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

fn keep_recent(list: &mut Vec<Touch>, touch: Touch) {
    if list.iter().any(|t| {
        t.claims.request_id == touch.claims.request_id && t.claims.imp_id == touch.claims.imp_id
    }) {
        return;
    }
    let at = list.partition_point(|t| t.ts <= touch.ts);
    list.insert(at, touch);
    if list.len() > KEPT_PER_KIND {
        list.remove(0);
    }
}

/// (user_id, advertiser_id).
pub type UserAdvertiser = (String, String);

pub mod operator;

/// The attribution state of one worker's users.
#[derive(Debug, Default)]
pub struct Attributor {
    windows: Windows,
    touches: HashMap<UserAdvertiser, UserTouches>,
    dirty: HashSet<UserAdvertiser>,
}

impl Attributor {
    /// Empty state with these windows.
    pub fn new(windows: Windows) -> Self {
        Attributor {
            windows,
            ..Default::default()
        }
    }

    /// Records an impression or click of `user`.
    pub fn record(&mut self, user: &str, touch: Touch) {
        let key = (user.to_string(), touch.claims.advertiser_id.clone());
        let entry = self.touches.entry(key.clone()).or_default();
        match touch.kind {
            EventKind::Click => keep_recent(&mut entry.clicks, touch),
            _ => keep_recent(&mut entry.impressions, touch),
        }
        self.dirty.insert(key);
    }

    /// The touch a conversion of `user` for `advertiser` at `ts` is attributed to.
    pub fn attribute(&self, user: &str, advertiser: &str, ts: EventTime) -> Option<&Touch> {
        let touches = self
            .touches
            .get(&(user.to_string(), advertiser.to_string()))?;
        fn within(list: &[Touch], ts: EventTime, window: i64) -> Option<&Touch> {
            list.iter()
                .rev()
                .find(|t| t.ts <= ts && ts.millis() - t.ts.millis() <= window)
        }
        within(&touches.clicks, ts, self.windows.click_ms)
            .or_else(|| within(&touches.impressions, ts, self.windows.view_ms))
    }

    /// Drops touches too old to be attributed anything at event-time `frontier`.
    pub fn expire(&mut self, frontier: i64) {
        let (click_ms, view_ms) = (self.windows.click_ms, self.windows.view_ms);
        let dirty = &mut self.dirty;
        self.touches.retain(|key, t| {
            let before = t.clicks.len() + t.impressions.len();
            t.clicks.retain(|c| c.ts.millis() + click_ms >= frontier);
            t.impressions
                .retain(|i| i.ts.millis() + view_ms >= frontier);
            if t.clicks.len() + t.impressions.len() != before {
                dirty.insert(key.clone());
            }
            !(t.clicks.is_empty() && t.impressions.is_empty())
        });
    }

    /// Takes the entries changed since the last call (`None`: deleted), for a checkpoint.
    pub fn take_changes(&mut self) -> Vec<(UserAdvertiser, Option<UserTouches>)> {
        self.dirty
            .drain()
            .map(|k| {
                let v = self.touches.get(&k).cloned();
                (k, v)
            })
            .collect()
    }

    /// Restores checkpointed entries.
    pub fn restore(&mut self, key: UserAdvertiser, touches: UserTouches) {
        self.touches.insert(key, touches);
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

    fn touch(rid: &str, kind: EventKind, ts: i64) -> Touch {
        Touch {
            ts: EventTime(ts),
            kind,
            claims: WinClaims {
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
            },
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
        a.expire(2_000);
        assert!(a.is_empty());
        assert_eq!(a.take_changes().len(), 1);
    }
}
