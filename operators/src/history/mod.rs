//! User history: each user's recent engagement (the newest clicks, impressions and clicks per
//! hour), kept as checkpointed state in the graph and read by serving as ranker features.
//!
//! The stage sees every verified impression and click, keyed by user. Each change of a user's
//! [`UserHistory`] is broadcast to every serving replica, which scores a request with the
//! requesting user's [`Engagement`] at the serving time and logs it in the `ads.served` record.
//! Training reads the logged values, never the state: what a model learns from is exactly what
//! serving saw, so no event after the serving time can leak into an example.
//!
//! A repeated event (the same request, slot and kind) is counted once; an event more than 24
//! clock hours older than the user's newest is not recorded (its identity may be forgotten).
//! Clicks are kept newest last, at most [`HistoryConfig::recent_clicks`]; a user with
//! no event for [`HistoryConfig::retention_ms`] of event time is forgotten.

pub mod operator;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::events::EventKind;
use crate::hash::{HashMap, HashSet};
use crate::records::{
    Clicked, Engagement, HistoryUpdate, HourCounts, Touch, UserHistory, COUNT_HOURS,
};
use crate::time::EventTime;

/// Milliseconds in an hour (the granularity of the counts).
pub const HOUR_MS: i64 = 3_600_000;

/// Event identities remembered per user to count a repeated event once; beyond it the oldest
/// are forgotten first. Repeats come from retries, close behind the event: a repeat of an event
/// more than this many of the user's events old is counted again (a feature, never money).
pub const MAX_SEEN: usize = 64;

/// Settings of the user-history stage (the pipeline file's `[history]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Clicks kept per user: the length of the clicked-campaigns, -advertisers and -ads bags.
    pub recent_clicks: usize,
    /// A user with no event for this long (event time) is forgotten.
    pub retention_ms: i64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            recent_clicks: 16,
            retention_ms: 7 * 24 * HOUR_MS,
        }
    }
}

/// The identity of an event of `kind` on the slot `imp_id` of request `request_id`.
pub fn event_key(request_id: &str, imp_id: &str, kind: EventKind) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(kind as u64);
    h.update(request_id.as_bytes());
    h.update(&[0]);
    h.update(imp_id.as_bytes());
    h.digest()
}

impl HourCounts {
    /// Counts one event in `hour`; false when the hour is older than the counted ones.
    fn add(&mut self, hour: i64, click: bool) -> bool {
        let span = COUNT_HOURS as i64;
        if hour > self.hour {
            for h in (self.hour + 1).max(hour - span + 1)..=hour {
                let i = h.rem_euclid(span) as usize;
                self.impressions[i] = 0;
                self.clicks[i] = 0;
            }
            self.hour = hour;
        }
        if hour <= self.hour - span {
            return false;
        }
        let i = hour.rem_euclid(span) as usize;
        let counter = if click {
            &mut self.clicks[i]
        } else {
            &mut self.impressions[i]
        };
        *counter = counter.saturating_add(1);
        true
    }

    /// (impressions, clicks) in the hour of `now` and the 23 before it.
    fn at(&self, now: EventTime) -> (u32, u32) {
        let span = COUNT_HOURS as i64;
        let now_hour = now.millis().div_euclid(HOUR_MS);
        let lo = (now_hour - span + 1).max(self.hour - span + 1);
        let hi = now_hour.min(self.hour);
        let (mut impressions, mut clicks) = (0u32, 0u32);
        for h in lo..=hi {
            let i = h.rem_euclid(span) as usize;
            impressions += u32::from(self.impressions[i]);
            clicks += u32::from(self.clicks[i]);
        }
        (impressions, clicks)
    }
}

impl UserHistory {
    /// Records a verified impression or click; false when it changed nothing (a repeat, or an
    /// impression too old to count).
    pub fn record(&mut self, touch: &Touch, config: &HistoryConfig) -> bool {
        let claims = &touch.claims;
        let click = touch.kind == EventKind::Click;
        let key = event_key(&claims.request_id, &claims.imp_id, touch.kind);
        if self.seen.iter().any(|(k, _)| *k == key) {
            return false;
        }
        let hour = touch.ts.millis().div_euclid(HOUR_MS);
        let counted = self.counts.add(hour, click);
        let mut changed = counted;
        // A click older than the counted hours is not kept either: its identity may have been
        // forgotten, so a repeat could not be told from a new click.
        if click && counted && config.recent_clicks > 0 {
            let newest_kept = self.clicks.len() < config.recent_clicks
                || self.clicks.first().is_some_and(|c| c.ts <= touch.ts);
            if newest_kept {
                // In time order; a late click goes where it belongs.
                let at = self.clicks.partition_point(|c| c.ts <= touch.ts);
                self.clicks.insert(
                    at,
                    Clicked {
                        ts: touch.ts,
                        campaign_id: claims.campaign_id.clone(),
                        advertiser_id: claims.advertiser_id.clone(),
                        ad_id: claims.ad_id.clone(),
                    },
                );
                let excess = self.clicks.len().saturating_sub(config.recent_clicks);
                self.clicks.drain(..excess);
                changed = true;
            }
        }
        if !changed {
            return false;
        }
        if touch.ts > self.last {
            self.last = touch.ts;
        }
        // Identities matter only while their hour is counted.
        let oldest = self.counts.hour - COUNT_HOURS as i64;
        while self
            .seen
            .front()
            .is_some_and(|(_, h)| *h <= oldest || self.seen.len() >= MAX_SEEN)
        {
            self.seen.pop_front();
        }
        self.seen.push_back((key, hour));
        true
    }

    /// The user's engagement as serving reads it at `now`: clicks up to `now`, newest first,
    /// and the counts of the hour of `now` and the 23 before it.
    pub fn engagement_at(&self, now: EventTime) -> Engagement {
        let mut e = Engagement::default();
        for c in self.clicks.iter().rev().filter(|c| c.ts <= now) {
            e.clicked_campaigns.push(c.campaign_id.clone());
            e.clicked_advertisers.push(c.advertiser_id.clone());
            e.clicked_ads.push(c.ad_id.clone());
        }
        (e.impressions_24h, e.clicks_24h) = self.counts.at(now);
        e
    }

    /// Appends the history as a checkpoint value ([`crate::checkpoint::codec`], header
    /// included) to `out`, written field by field: byte for byte what `codec::encode` writes
    /// through serde (a property test holds it to that), without serde's per-element calls for
    /// the 48 hour counts and the seen events. Every changed user is encoded at each checkpoint:
    /// the operator writes into one scratch buffer and stores an exact-size copy.
    pub fn write_checkpoint_value(&self, out: &mut Vec<u8>) {
        use crate::checkpoint::codec::push_unsigned;
        use crate::checkpoint::codec::{push_all_unsigned, push_length, push_signed, push_str};
        use crate::checkpoint::codec::{BINARY, MAX_VARINT, VALUE_VERSION};
        let strings: usize = self
            .clicks
            .iter()
            .map(|c| c.campaign_id.len() + c.advertiser_id.len() + c.ad_id.len())
            .sum();
        out.reserve(
            2 + MAX_VARINT * (3 + self.clicks.len() * 4 + 2 * COUNT_HOURS + self.seen.len() * 2)
                + strings,
        );
        out.extend_from_slice(&[BINARY, VALUE_VERSION]);
        push_length(out, self.clicks.len());
        for c in &self.clicks {
            push_signed(out, c.ts.0);
            push_str(out, &c.campaign_id);
            push_str(out, &c.advertiser_id);
            push_str(out, &c.ad_id);
        }
        push_signed(out, self.counts.hour);
        push_all_unsigned(out, &self.counts.impressions);
        push_all_unsigned(out, &self.counts.clicks);
        push_length(out, self.seen.len());
        for (key, hour) in &self.seen {
            push_unsigned(out, *key);
            push_signed(out, *hour);
        }
        push_signed(out, self.last.0);
    }

    /// Approximate bytes held (the struct, its vectors and strings).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.seen.capacity() * std::mem::size_of::<(u64, i64)>()
            + self.clicks.capacity() * std::mem::size_of::<Clicked>()
            + self
                .clicks
                .iter()
                .map(|c| c.campaign_id.capacity() + c.advertiser_id.capacity() + c.ad_id.capacity())
                .sum::<usize>()
    }
}

/// A user id shared, not copied: the state map, the change sets, the expiry index and the updates
/// sent to serving hold pointers to an id a touch carried (the map to its first touch's, the
/// others to the touch that changed the user), so recording a touch allocates no id.
pub type SharedUser = Arc<str>;

/// One worker's share of the users' histories, with what changed since it was last asked.
#[derive(Debug, Default)]
pub struct Histories {
    config: HistoryConfig,
    users: HashMap<SharedUser, UserHistory>,
    /// Changed since the last [`Histories::take_updates`] (`None` in the update: forgotten).
    unpublished: HashSet<SharedUser>,
    /// Changed since the last [`Histories::drain_changes`].
    unsaved: HashSet<SharedUser>,
    /// Users by the hour their retention may end (checked against their newest event).
    expiring: BTreeMap<i64, Vec<SharedUser>>,
}

impl Histories {
    /// No users yet.
    pub fn new(config: HistoryConfig) -> Self {
        Histories {
            config,
            ..Histories::default()
        }
    }

    /// Users held.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is held.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// A user's history.
    pub fn get(&self, user: &str) -> Option<&UserHistory> {
        self.users.get(user)
    }

    /// Takes in a restored user (published again, so that replicas learn it after a restart).
    pub fn restore(&mut self, user: String, history: UserHistory) {
        let user = SharedUser::from(user);
        self.file_expiry(&user, history.last);
        self.unpublished.insert(user.clone());
        self.users.insert(user, history);
    }

    fn file_expiry(&mut self, user: &SharedUser, last: EventTime) {
        let ends = last.millis().saturating_add(self.config.retention_ms);
        self.expiring
            .entry(ends.div_euclid(HOUR_MS))
            .or_default()
            .push(user.clone());
    }

    /// Records a verified impression or click of `user`.
    pub fn record(&mut self, user: &SharedUser, touch: &Touch) {
        if user.is_empty() {
            return;
        }
        let config = self.config;
        let (user, later) = match self.users.get_mut(&**user) {
            Some(h) => {
                let before = h.last;
                if !h.record(touch, &config) {
                    return;
                }
                // A new retention hour only when the newest event moved into another hour.
                let hour = |t: EventTime| {
                    t.millis()
                        .saturating_add(config.retention_ms)
                        .div_euclid(HOUR_MS)
                };
                (user.clone(), hour(h.last) > hour(before))
            }
            None => {
                let mut h = UserHistory::default();
                if !h.record(touch, &config) {
                    return;
                }
                self.users.insert(user.clone(), h);
                (user.clone(), true)
            }
        };
        // Filed once per hour of retention end: the check reads the newest event anyway.
        if later {
            self.file_expiry(&user, touch.ts);
        }
        self.unpublished.insert(user.clone());
        self.unsaved.insert(user);
    }

    /// Forgets users whose newest event is a retention period before event time `frontier`.
    pub fn expire(&mut self, frontier: i64) {
        let pending = self.expiring.split_off(&frontier.div_euclid(HOUR_MS));
        let ended = std::mem::replace(&mut self.expiring, pending);
        for user in ended.into_values().flatten() {
            let Some(last) = self.users.get(&*user).map(|h| h.last) else {
                continue;
            };
            if last.millis().saturating_add(self.config.retention_ms) < frontier {
                self.users.remove(&*user);
                self.unpublished.insert(user.clone());
                self.unsaved.insert(user);
            } else {
                // A later event in the same hour: filed again under its own end.
                self.file_expiry(&user, last);
            }
        }
    }

    /// Whether users changed since the last [`Histories::take_updates`].
    pub fn has_updates(&self) -> bool {
        !self.unpublished.is_empty()
    }

    /// The users changed since the last call, for the serving replicas (each once, in no
    /// particular order: a replica's state does not depend on it).
    pub fn take_updates(&mut self) -> Vec<HistoryUpdate> {
        self.unpublished
            .drain()
            .map(|user| HistoryUpdate {
                // What serving reads: the clicks and counts, not the identities.
                history: self.users.get(&*user).map(|h| {
                    Arc::new(UserHistory {
                        clicks: h.clicks.clone(),
                        counts: h.counts.clone(),
                        seen: Default::default(),
                        last: h.last,
                    })
                }),
                user_id: user,
            })
            .collect()
    }

    /// Visits each user changed since the last call, with its state (`None`: forgotten), for
    /// a checkpoint to encode in place.
    pub fn drain_changes(&mut self, mut visit: impl FnMut(&str, Option<&UserHistory>)) {
        for user in self.unsaved.drain() {
            visit(&user, self.users.get(&*user));
        }
    }

    /// Approximate bytes held per user (states and map entries).
    pub fn bytes_per_user(&self) -> usize {
        if self.users.is_empty() {
            return 0;
        }
        let states: usize = self
            .users
            .iter()
            .map(|(u, h)| {
                // The key's allocation: two reference counts and the bytes.
                u.len()
                    + 2 * std::mem::size_of::<usize>()
                    + std::mem::size_of::<SharedUser>()
                    + h.heap_bytes()
            })
            .sum();
        states / self.users.len()
    }
}

#[cfg(test)]
mod tests;
