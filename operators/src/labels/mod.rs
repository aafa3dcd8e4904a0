//! The label join: each served ad's logged features joined with its impression, click and
//! conversion outcomes into labelled training examples, seconds after each label is known.
//!
//! Every input ([`LabelEvent`]) is keyed by (`request_id`, `imp_id`); events arrive in any order
//! and may be duplicated. Time is event time throughout: windows close when
//! [`LabelJoin::advance`] is given an input frontier past them, never on the wall clock.
//!
//! # Rules
//! - **Rendering.** A served ad waits up to `impression_wait_ms` after its `ts` for its
//!   impression. Never rendered: dropped, no example (`unrendered`). Outcomes whose served record
//!   has not arrived wait up to `impression_wait_ms` after their earliest `ts` for it, then are
//!   dropped (`orphans_expired`).
//! - **Click labels.** Positive (`click: Some(true)`, `label_ms` = the click's `ts`) as soon as the
//!   served record and the click are known; a click implies its impression, so a missing
//!   impression does not hold it back. Negative (`click: Some(false)`, `label_ms` = the
//!   impression's `ts` plus `click_window_ms`) once the frontier passes that time with no click
//!   (`deadline < frontier`). A click that comes after its negative was emitted, or whose `ts` is
//!   past its known impression's click window, is late: counted (`late_clicks`), no example. (A
//!   click whose impression is not yet known when it arrives is judged positive whatever its
//!   delay.)
//! - **Conversion labels: the fake-negative method** (Ktena et al., "Addressing delayed feedback
//!   for continuous training with neural networks in CTR prediction", RecSys 2019). With every
//!   positive click label, the same example is emitted at once with `conversion: Some(false)` (a
//!   fake negative: the conversion may still come). When a conversion attributed *via a click*
//!   arrives with `ts` within `conversion_window_ms` of the click, the example is emitted again
//!   with `conversion: Some(true)` (`label_ms` = the conversion's `ts`), at most once per example.
//!   A consumer training a conversion model on this stream therefore sees every converting click
//!   once as a negative and once as a positive: the model it fits estimates
//!   q = p / (1 + p), and it **must** correct to p = q / (1 − q) when predicting (or train with
//!   the paper's fake-negative-weighted loss). View-through conversions (`via_click: false`) give
//!   no conversion label (`view_through`); conversions past the window, or for a click that was
//!   late, are counted (`late_conversions`) and ignored. Only the first conversion of an example
//!   is judged (the earliest, of those that came before its click label); any other counts as a
//!   duplicate.
//! - **Retention.** A clicked example is kept until click `ts` + `conversion_window_ms`, then
//!   forgotten (its served record is dropped as soon as its conversion positive is out). An
//!   example given its click negative is kept, without its served record, for `impression_wait_ms`
//!   more, so late clicks and duplicates are recognised; events for a key that has been forgotten
//!   start it afresh (and, lacking their served record, expire as orphans).
//! - **Duplicates** (a served record, impression or click seen before for the key, a conversion
//!   after one) never emit twice; they are counted (`duplicates`) while their key is held.
//! - **Bounded state.** At most `max_pending` keys are held. When a new key would exceed it, the
//!   keys with the earliest deadlines are closed early, as if their deadline had passed now: a
//!   rendered, unclicked ad gets its click negative at once (`label_ms` = its would-be deadline;
//!   it is nearly due, being the earliest), anything else is dropped (a clicked example loses its
//!   chance of a conversion positive). No tombstone is kept for an evicted key. Each counts as
//!   `evicted` (and the negative, if any, as `examples_click_neg`).
//!
//! State changes are tracked per key for checkpoints ([`LabelJoin::drain_changes`],
//! [`LabelJoin::restore`]), as in [`crate::attribution::Attributor`].

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use crate::hash::{Hashed, HashedMap, HashedSet};

use serde::{Deserialize, Serialize};

use crate::records::Served;
pub use crate::records::{ExampleKey, LabelEvent, LabeledExample};

mod format_v1;
pub mod operator;

/// Windows and bounds of the label join, in event-time milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelConfig {
    /// A click this long after its impression is too late: the negative is emitted then
    /// (default 15 minutes).
    pub click_window_ms: i64,
    /// How long a served ad waits for its impression, and an outcome for its served record
    /// (default 5 minutes).
    pub impression_wait_ms: i64,
    /// How long after its click a conversion gives a positive (default 1 day).
    pub conversion_window_ms: i64,
    /// At most this many keys are held (default 1,000,000).
    pub max_pending: usize,
}

impl Default for LabelConfig {
    fn default() -> Self {
        LabelConfig {
            click_window_ms: 900_000,
            impression_wait_ms: 300_000,
            conversion_window_ms: 86_400_000,
            max_pending: 1_000_000,
        }
    }
}

/// What the join has seen and done, per reason (counts since the last
/// [`LabelJoin::take_stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelStats {
    /// Served records (first sightings).
    pub served: u64,
    /// Impressions (first sightings).
    pub impressions: u64,
    /// Clicks (first sightings, late ones included).
    pub clicks: u64,
    /// Attributed conversions (first sightings, view-through included).
    pub conversions: u64,
    /// Of those, view-through: no label.
    pub view_through: u64,
    /// Positive click labels emitted.
    pub examples_click_pos: u64,
    /// Negative click labels emitted.
    pub examples_click_neg: u64,
    /// Positive conversion labels emitted.
    pub examples_conv_pos: u64,
    /// Fake-negative conversion labels emitted.
    pub examples_conv_neg: u64,
    /// Clicks after their negative, or past their impression's click window.
    pub late_clicks: u64,
    /// Conversions past the conversion window, or of a late click.
    pub late_conversions: u64,
    /// Served ads never rendered within `impression_wait_ms`.
    pub unrendered: u64,
    /// Outcomes whose served record never came.
    pub orphans_expired: u64,
    /// Keys closed early to stay within `max_pending`.
    pub evicted: u64,
    /// Repeated events.
    pub duplicates: u64,
}

impl LabelStats {
    /// Each counter with its snake_case name, for metrics.
    pub fn counters(&self) -> [(&'static str, u64); 15] {
        [
            ("served", self.served),
            ("impressions", self.impressions),
            ("clicks", self.clicks),
            ("conversions", self.conversions),
            ("view_through", self.view_through),
            ("examples_click_pos", self.examples_click_pos),
            ("examples_click_neg", self.examples_click_neg),
            ("examples_conv_pos", self.examples_conv_pos),
            ("examples_conv_neg", self.examples_conv_neg),
            ("late_clicks", self.late_clicks),
            ("late_conversions", self.late_conversions),
            ("unrendered", self.unrendered),
            ("orphans_expired", self.orphans_expired),
            ("evicted", self.evicted),
            ("duplicates", self.duplicates),
        ]
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &LabelStats) {
        let LabelStats {
            served,
            impressions,
            clicks,
            conversions,
            view_through,
            examples_click_pos,
            examples_click_neg,
            examples_conv_pos,
            examples_conv_neg,
            late_clicks,
            late_conversions,
            unrendered,
            orphans_expired,
            evicted,
            duplicates,
        } = other;
        self.served += served;
        self.impressions += impressions;
        self.clicks += clicks;
        self.conversions += conversions;
        self.view_through += view_through;
        self.examples_click_pos += examples_click_pos;
        self.examples_click_neg += examples_click_neg;
        self.examples_conv_pos += examples_conv_pos;
        self.examples_conv_neg += examples_conv_neg;
        self.late_clicks += late_clicks;
        self.late_conversions += late_conversions;
        self.unrendered += unrendered;
        self.orphans_expired += orphans_expired;
        self.evicted += evicted;
        self.duplicates += duplicates;
    }
}

/// What the join holds for one key (opaque; serialised into checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The served record, until it is no longer needed for an example.
    #[serde(default)]
    served: Option<Box<Served>>,
    /// Impression time.
    #[serde(default)]
    impression_ms: Option<i64>,
    /// Click time.
    #[serde(default)]
    click_ms: Option<i64>,
    /// Time of a conversion via click not yet judged (its click label is not out yet).
    #[serde(default)]
    conversion_ms: Option<i64>,
    /// The click label emitted, if any.
    #[serde(default)]
    clicked: Option<bool>,
    /// Whether its conversion was judged (positive emitted, or past the window).
    #[serde(default)]
    conversion_judged: bool,
}

/// What happens to an entry at its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// Its labels are done: forget it.
    Forget,
    /// Rendered, never clicked: click negative.
    Negative,
    /// Never rendered: drop.
    Unrendered,
    /// Its served record never came: drop.
    Orphan,
}

impl Entry {
    /// When the entry is due (the frontier must pass it) and what happens then.
    fn deadline(&self, cfg: &LabelConfig) -> (i64, Due) {
        match (self.clicked, &self.served, self.impression_ms) {
            (Some(true), _, _) => (
                self.click_ms
                    .unwrap_or(i64::MIN)
                    .saturating_add(cfg.conversion_window_ms),
                Due::Forget,
            ),
            (Some(false), _, imp) => (
                imp.unwrap_or(i64::MIN)
                    .saturating_add(cfg.click_window_ms)
                    .saturating_add(cfg.impression_wait_ms),
                Due::Forget,
            ),
            (None, Some(_), Some(imp)) => (imp.saturating_add(cfg.click_window_ms), Due::Negative),
            (None, Some(s), None) => (
                s.ts.millis().saturating_add(cfg.impression_wait_ms),
                Due::Unrendered,
            ),
            (None, None, _) => {
                let first = [self.impression_ms, self.click_ms, self.conversion_ms]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(i64::MIN);
                (first.saturating_add(cfg.impression_wait_ms), Due::Orphan)
            }
        }
    }
}

/// A key held once and shared by the entry map, the deadline index and the dirty set.
type SharedKey = Rc<Hashed<ExampleKey>>;

/// The label join state of one worker's keys.
#[derive(Debug, Default)]
pub struct LabelJoin {
    config: LabelConfig,
    entries: HashedMap<SharedKey, Entry>,
    /// Keys by deadline. An entry whose deadline moves is listed again under the new one and
    /// its old listing goes stale: a listing counts only while it is its entry's deadline.
    deadlines: BTreeMap<i64, VecDeque<SharedKey>>,
    dirty: HashedSet<SharedKey>,
    stats: LabelStats,
}

fn example(
    served: &Served,
    click: Option<bool>,
    conversion: Option<bool>,
    at: i64,
) -> LabeledExample {
    LabeledExample {
        served: Box::new(served.clone()),
        click,
        conversion,
        label_ms: at,
    }
}

impl LabelJoin {
    /// Empty state with these settings.
    pub fn new(config: LabelConfig) -> Self {
        LabelJoin {
            config,
            ..Default::default()
        }
    }

    /// Takes in one event; returns the examples it completes.
    pub fn apply(&mut self, mut event: LabelEvent) -> Vec<LabeledExample> {
        let mut out = Vec::new();
        if let LabelEvent::Conversion(c) = &event {
            if !c.via_click {
                self.stats.conversions += 1;
                self.stats.view_through += 1;
                return out;
            }
        }
        let key = Hashed::new(event.take_key());
        let (key, existing) = match self.entries.remove_entry(&key) {
            Some((key, entry)) => {
                let deadline = entry.deadline(&self.config).0;
                (key, Some((entry, deadline)))
            }
            None => (Rc::new(key), None),
        };
        let is_new = existing.is_none();
        let (mut entry, listed) = existing.map_or((Entry::default(), None), |(e, d)| (e, Some(d)));
        self.update(&mut entry, event);
        self.emit_ready(&mut entry, &mut out);
        self.put(key, entry, listed);
        if is_new {
            self.enforce_bound(&mut out);
        }
        out
    }

    /// The earliest listed key whose listing is current (the first listed, among equal
    /// deadlines), removed from the index with its entry; stale listings met on the way are
    /// dropped. `None` once nothing is listed before `before` (`None`: at all).
    fn pop_due(&mut self, before: Option<i64>) -> Option<(SharedKey, Entry)> {
        loop {
            let mut first = self.deadlines.first_entry()?;
            let deadline = *first.key();
            if before.is_some_and(|b| deadline >= b) {
                return None;
            }
            let Some(key) = first.get_mut().pop_front() else {
                first.remove();
                continue;
            };
            if first.get().is_empty() {
                first.remove();
            }
            let current = self
                .entries
                .get(&*key)
                .is_some_and(|e| e.deadline(&self.config).0 == deadline);
            if current {
                return self.entries.remove_entry(&*key);
            }
        }
    }

    /// Closes every window the event-time `frontier_ms` has passed (deadline < frontier);
    /// returns the click negatives due.
    pub fn advance(&mut self, frontier_ms: i64) -> Vec<LabeledExample> {
        let mut out = Vec::new();
        while let Some((key, entry)) = self.pop_due(Some(frontier_ms)) {
            self.close(key, entry, true, &mut out);
        }
        out
    }

    /// Counts since the last call.
    pub fn take_stats(&mut self) -> LabelStats {
        std::mem::take(&mut self.stats)
    }

    /// Counts since the last [`LabelJoin::take_stats`].
    pub fn stats(&self) -> &LabelStats {
        &self.stats
    }

    /// The entries changed since the last call (`None`: deleted), copied: for tests; a
    /// checkpoint visits them with `drain_changes`.
    #[cfg(test)]
    pub fn take_changes(&mut self) -> Vec<(ExampleKey, Option<Entry>)> {
        let mut out = Vec::with_capacity(self.dirty.len());
        self.drain_changes(|k, v| out.push((k.clone(), v.cloned())));
        out
    }

    /// Visits the entries changed since the last call (`None`: deleted) without copying them:
    /// a checkpoint encodes them straight from the state.
    pub fn drain_changes(&mut self, mut visit: impl FnMut(&ExampleKey, Option<&Entry>)) {
        for key in self.dirty.drain() {
            visit(key.key(), self.entries.get(&*key));
        }
    }

    /// Restores a checkpointed entry.
    pub fn restore(&mut self, key: ExampleKey, entry: Entry) {
        let key = Rc::new(Hashed::new(key));
        self.entries.remove(&*key);
        self.deadlines
            .entry(entry.deadline(&self.config).0)
            .or_default()
            .push_back(key.clone());
        self.entries.insert(key, entry);
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Holds `entry` under `key` until its deadline; `listed` is the deadline it is already
    /// listed under, if any.
    fn put(&mut self, key: SharedKey, entry: Entry, listed: Option<i64>) {
        let deadline = entry.deadline(&self.config).0;
        if listed != Some(deadline) {
            self.deadlines
                .entry(deadline)
                .or_default()
                .push_back(key.clone());
        }
        self.dirty.insert(key.clone());
        self.entries.insert(key, entry);
    }

    /// Records `event` in `entry`, counting it.
    fn update(&mut self, entry: &mut Entry, event: LabelEvent) {
        let stats = &mut self.stats;
        match event {
            LabelEvent::Served(s) => {
                if entry.served.is_some() || entry.clicked.is_some() {
                    stats.duplicates += 1;
                } else {
                    stats.served += 1;
                    entry.served = Some(s);
                }
            }
            LabelEvent::Impression { ts, .. } => {
                if entry.impression_ms.is_some() || entry.clicked == Some(false) {
                    stats.duplicates += 1;
                } else {
                    stats.impressions += 1;
                    entry.impression_ms = Some(ts.millis());
                }
            }
            LabelEvent::Click { ts, .. } => {
                let past_window = entry
                    .impression_ms
                    .is_some_and(|i| ts.millis() > i.saturating_add(self.config.click_window_ms));
                if entry.click_ms.is_some() {
                    stats.duplicates += 1;
                } else if entry.clicked == Some(false) || past_window {
                    stats.clicks += 1;
                    stats.late_clicks += 1;
                } else {
                    stats.clicks += 1;
                    entry.click_ms = Some(ts.millis());
                }
            }
            LabelEvent::Conversion(c) => {
                if entry.conversion_judged {
                    stats.duplicates += 1;
                } else if let Some(pending) = entry.conversion_ms {
                    // Judged against the earliest, whatever the arrival order.
                    stats.duplicates += 1;
                    entry.conversion_ms = Some(pending.min(c.ts.millis()));
                } else if entry.clicked == Some(false) {
                    stats.conversions += 1;
                    stats.late_conversions += 1;
                } else {
                    stats.conversions += 1;
                    entry.conversion_ms = Some(c.ts.millis());
                }
            }
        }
    }

    /// Emits the labels `entry` has become ready for.
    fn emit_ready(&mut self, entry: &mut Entry, out: &mut Vec<LabeledExample>) {
        if let (None, Some(served), Some(click)) = (entry.clicked, &entry.served, entry.click_ms) {
            out.push(example(served, Some(true), None, click));
            out.push(example(served, None, Some(false), click));
            self.stats.examples_click_pos += 1;
            self.stats.examples_conv_neg += 1;
            entry.clicked = Some(true);
        }
        if entry.clicked != Some(true) || entry.conversion_judged {
            return;
        }
        let (Some(conversion), Some(click)) = (entry.conversion_ms, entry.click_ms) else {
            return;
        };
        entry.conversion_judged = true;
        if conversion.saturating_sub(click) > self.config.conversion_window_ms {
            self.stats.late_conversions += 1;
            return;
        }
        if let Some(served) = entry.served.take() {
            out.push(LabeledExample {
                served,
                click: None,
                conversion: Some(true),
                label_ms: conversion,
            });
            self.stats.examples_conv_pos += 1;
        }
    }

    /// Applies `entry`'s deadline (or evicts it early): a negative if due, then a tombstone
    /// (`tombstone`) or nothing.
    fn close(
        &mut self,
        key: SharedKey,
        mut entry: Entry,
        tombstone: bool,
        out: &mut Vec<LabeledExample>,
    ) {
        let (deadline, due) = entry.deadline(&self.config);
        self.dirty.insert(key.clone());
        match due {
            Due::Forget => {}
            Due::Unrendered => self.stats.unrendered += 1,
            Due::Orphan => self.stats.orphans_expired += 1,
            Due::Negative => {
                if let Some(served) = entry.served.take() {
                    out.push(LabeledExample {
                        served,
                        click: Some(false),
                        conversion: None,
                        label_ms: deadline,
                    });
                    self.stats.examples_click_neg += 1;
                }
                if tombstone {
                    entry.clicked = Some(false);
                    entry.conversion_ms = None;
                    self.put(key, entry, None);
                }
            }
        }
    }

    /// Closes the earliest-deadline keys while more than `max_pending` are held.
    fn enforce_bound(&mut self, out: &mut Vec<LabeledExample>) {
        while self.entries.len() > self.config.max_pending.max(1) {
            let Some((key, entry)) = self.pop_due(None) else {
                break;
            };
            self.stats.evicted += 1;
            self.close(key, entry, false, out);
        }
    }
}

#[cfg(test)]
mod tests;
