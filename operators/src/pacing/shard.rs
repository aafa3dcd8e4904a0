//! One worker's pacing state as plain data: a [`CampaignPacer`] per campaign it owns, the
//! conversion-delay curve it learns, and what changed since it last published and checkpointed.
//!
//! [`PacingShard::apply`] takes in the ledger's output and [`PacingShard::apply_feedback`]
//! serving's; [`PacingShard::tick`] runs the controllers every `interval_ms` and, every
//! `publish_ms`, expires reservations and queues the [`PacingUpdate`]s of the campaigns that
//! changed, collected by [`PacingShard::take_changes`]. [`PacingShard::take_checkpoint`] gives the
//! state store writes of what changed since the last checkpoint, and [`PacingShard::from_store`]
//! reads them back. The [`super::operator`] shell only moves data between timely and these.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use super::delays::DelayCurve;
use super::pacer::{CampaignPacer, Published, Terms};
use super::profile::{position, DayPosition};
use super::{PacingConfig, PacingFeedback, PacingState, PacingUpdate};
use crate::checkpoint::{codec, RestoreError, StateBatch, StateStore};
use crate::events::CampaignStatus;
use crate::hash::{by_str_or_insert_with, HashMap, HashSet, StrMap};
use crate::records::{CatalogUpdate, LedgerState};
use crate::routing::{route, PACING};
use crate::time::EventTime;

fn state_key(campaign: &str) -> Vec<u8> {
    PACING.key(route(campaign), &[campaign])
}

const DELAYS_PREFIX: &str = "pacing-delays/";

fn delays_key(index: usize) -> Vec<u8> {
    format!("{DELAYS_PREFIX}{index}").into_bytes()
}

/// What pacing needs of a catalog update (`None` when the campaign was deleted).
pub fn terms_of(update: &CatalogUpdate) -> Option<Terms> {
    let c = update.campaign.as_ref()?;
    let zone_change = update.history.as_ref().and_then(|h| {
        let change = h.zone_change.as_ref()?;
        Some((change.previous.parse().ok()?, change.until))
    });
    Some(Terms {
        budget_micros: c.daily_budget_micros,
        tz: c.tz().unwrap_or(chrono_tz::UTC),
        zone_change,
        active: c.status == CampaignStatus::Active,
        start: c.start,
        end: c.end,
        billing: c.billing,
    })
}

/// Rebuilds worker `index` of `peers`'s pacers from the store. Entries of other workers are
/// skipped; an entry that cannot be read, or a store read error, is an error naming the key.
pub fn restore(
    store: &dyn StateStore,
    index: usize,
    peers: usize,
) -> Result<HashMap<String, CampaignPacer>, RestoreError> {
    let mut pacers = HashMap::default();
    PACING.restore_owned(store, index, peers, |[campaign], k, v| {
        pacers.insert(campaign, codec::decode::<CampaignPacer>(k, v)?);
        Ok(())
    })?;
    Ok(pacers)
}

/// The conversion-delay curve worker `index` learned (or, after a change in the number of
/// workers, all of them merged).
pub fn restore_delays(store: &dyn StateStore, index: usize) -> Result<DelayCurve, RestoreError> {
    let mut curves: Vec<(Vec<u8>, DelayCurve)> = Vec::new();
    for (k, v) in store.scan(DELAYS_PREFIX.as_bytes())? {
        let curve = codec::decode(&k, &v)?;
        curves.push((k, curve));
    }
    let own = delays_key(index);
    if let Some((_, c)) = curves.iter().find(|(k, _)| *k == own) {
        return Ok(c.clone());
    }
    let mut merged = DelayCurve::default();
    for (_, c) in &curves {
        merged.merge(c);
    }
    Ok(merged)
}

/// Controller steps a shard runs per [`PacingShard::tick`] at most; a tick that leaves steps
/// due asks to be called again at once, so that serving, on the same worker, is never held up
/// by a whole catalog's control step (100k campaigns take tens of milliseconds).
pub const CONTROLS_PER_TICK: usize = 256;

/// A campaign whose controller moved without anything to publish is still written to the store
/// every this many control steps (its traffic profile and controller; a crash loses at most that
/// much of the forecast, never money).
pub const SAVE_EVERY_STEPS: u32 = 6;

/// Changed campaigns a shard publishes per [`PacingShard::tick`] at most; a publish with more
/// goes on in the next calls (a busy serving worker reserves for thousands of campaigns per
/// publish period, and every update also moves the board, budget status and the index of each
/// replica: all of it at once would hold the worker's requests up for milliseconds).
pub const PUBLISH_PER_TICK: usize = 512;

/// Pacers a shard writes per checkpoint at most while it runs
/// ([`PacingShard::take_checkpoint_at_most`]); its final checkpoint writes them all.
pub const PACERS_PER_CHECKPOINT: usize = 1_024;

/// The pass probability is re-broadcast when it moved by more than this share.
pub const PASS_TOLERANCE: f64 = 0.01;

/// The target is re-broadcast (for the API's view) when it moved by this share of the budget.
pub const TARGET_TOLERANCE: f64 = 0.01;

/// Whether a campaign's new pacing state `next` (with `reserved` per replica) says something
/// serving or the API must hear, against what was last broadcast (`prev`): anything that gates
/// money (committed, pending conversions, reservations), a change of mode or day, a pass
/// probability moved by more than [`PASS_TOLERANCE`] (or to or from 1), or a target moved by
/// [`TARGET_TOLERANCE`] of the budget. A controller step that only nudges the pass is not.
pub fn worth_publishing(
    prev: Option<&Published>,
    next: &PacingState,
    reserved: &[u64],
    budget_micros: u64,
) -> bool {
    let Some(prev) = prev else { return true };
    let was = &prev.state;
    let (a, b) = (was.pass_probability, next.pass_probability);
    let pass_moved = (a - b).abs() > PASS_TOLERANCE * a.max(b) || (a >= 1.0) != (b >= 1.0);
    let target_step = ((budget_micros as f64 * TARGET_TOLERANCE) as u64).max(1);
    was.mode != next.mode
        || was.day != next.day
        || was.committed_micros != next.committed_micros
        || was.conversions_pending_micros != next.conversions_pending_micros
        || prev.reserved_by_replica != reserved
        || pass_moved
        || was.target_micros.abs_diff(next.target_micros) >= target_step
}

/// Reach records a shard folds into traffic profiles per [`PacingShard::tick`] at most; the
/// rest wait for the next call (a serving replica sends one per reached campaign each flush, so
/// 100k campaigns arrive as 100k records at once).
pub const REACH_PER_TICK: usize = 4_096;

/// When a campaign's state is broadcast.
#[derive(Clone, Copy, Debug)]
enum Publish {
    /// Something happened to it (terms, spend, a reservation): when anything differs from what
    /// was last broadcast.
    IfChanged,
    /// Its controller ran: when [`worth_publishing`].
    IfMaterial,
}

/// The controller steps in progress: every `interval_ms` each campaign's controller runs once,
/// spread evenly over the interval (the campaign at position `i` of `n` is due `i / n` of the
/// way through it) rather than all at one instant. A sweep walks the first `len` campaigns of
/// the shard's `order`; campaigns added meanwhile join the next one.
#[derive(Debug)]
struct Sweep {
    len: usize,
    next: usize,
    /// When this sweep started (`i64::MIN`: none yet; the first one runs at once).
    start: i64,
    first: bool,
}

impl Sweep {
    /// How many of this sweep's campaigns are due at `now`.
    fn due(&self, now: i64, interval: i64) -> usize {
        let n = self.len;
        if self.first {
            return n;
        }
        let elapsed = now.saturating_sub(self.start).max(0) as i128;
        let due = elapsed * n as i128 / interval.max(1) as i128 + 1;
        due.min(n as i128) as usize
    }
}

/// The pacing state of worker `index` of `peers`: the pacers of the campaigns it owns, the
/// conversion-delay curve it learns, the campaigns whose state changed since the last publish and
/// those to write at the next checkpoint, and the updates published but not yet taken.
#[derive(Debug)]
pub struct PacingShard {
    config: PacingConfig,
    index: usize,
    peers: usize,
    pacers: StrMap<CampaignPacer>,
    /// The campaigns of `pacers`, in the order sweeps visit them (pacers are never dropped).
    order: Vec<String>,
    delays: DelayCurve,
    delays_dirty: bool,
    /// Published in campaign order (sorted when published: most changes repeat a campaign
    /// already in the set, which a hash set finds without comparing ids).
    changed: HashSet<String>,
    dirty: BTreeSet<String>,
    /// Where the last checkpoint that could not write every dirty pacer stopped.
    save_cursor: Option<String>,
    /// When reservations lapse, earliest first: (expires_ms, campaign).
    expiries: BinaryHeap<Reverse<(i64, String)>>,
    /// CPA campaigns with conversions still to come (their committed spend moves with time).
    converting: BTreeSet<String>,
    sweep: Sweep,
    /// Reach counts not yet folded into profiles: (campaign, at_ms, count).
    reach: VecDeque<(String, i64, u64)>,
    /// Day positions of the current reach stamp, by zone (one stamp per flush, few zones).
    reach_positions: Vec<(i64, chrono_tz::Tz, DayPosition)>,
    last_publish: i64,
    /// The changed campaigns of the publish under way, in campaign order, not yet published
    /// ([`PUBLISH_PER_TICK`] per tick).
    publishing: VecDeque<String>,
    updates: Vec<PacingUpdate>,
}

impl PacingShard {
    /// Worker `index` of `peers`'s shard, starting from `pacers` and `delays` (empty for a fresh
    /// start). Its first tick runs the controllers and publishes.
    pub fn new(
        config: PacingConfig,
        index: usize,
        peers: usize,
        pacers: HashMap<String, CampaignPacer>,
        delays: DelayCurve,
    ) -> Self {
        let converting = pacers
            .iter()
            .filter(|(_, p)| p.converting())
            .map(|(id, _)| id.clone())
            .collect();
        let mut order: Vec<String> = pacers.keys().cloned().collect();
        order.sort_unstable();
        PacingShard {
            config,
            index,
            peers,
            pacers: pacers.into_iter().collect(),
            order,
            delays,
            delays_dirty: false,
            changed: HashSet::default(),
            dirty: BTreeSet::new(),
            save_cursor: None,
            expiries: BinaryHeap::new(),
            converting,
            sweep: Sweep {
                len: 0,
                next: 0,
                start: i64::MIN,
                first: true,
            },
            reach: VecDeque::new(),
            reach_positions: Vec::new(),
            last_publish: i64::MIN,
            publishing: VecDeque::new(),
            updates: Vec::new(),
        }
    }

    /// Worker `index` of `peers`'s shard as last checkpointed in `store`.
    pub fn from_store(
        store: &dyn StateStore,
        config: PacingConfig,
        index: usize,
        peers: usize,
    ) -> Result<Self, RestoreError> {
        let pacers = restore(store, index, peers)?;
        let delays = restore_delays(store, index)?;
        Ok(PacingShard::new(config, index, peers, pacers, delays))
    }

    fn pacer_mut(&mut self, campaign: &str) -> &mut CampaignPacer {
        let (config, order) = (&self.config, &mut self.order);
        by_str_or_insert_with(&mut self.pacers, campaign, || {
            order.push(campaign.to_string());
            CampaignPacer::new(config)
        })
    }

    /// Marks `campaign` changed, copying its id only when it is not marked yet.
    fn mark_changed(&mut self, campaign: &str) {
        if !self.changed.contains(campaign) {
            self.changed.insert(campaign.to_string());
        }
    }

    /// Takes in one change to the ledger's state: a campaign's terms, its spend of a day, or its
    /// settled wins (which release their reservations and teach the conversion delays).
    pub fn apply(&mut self, rec: LedgerState) {
        match rec {
            LedgerState::Campaign(u) => {
                self.pacer_mut(&u.campaign_id).set_terms(terms_of(&u));
                self.changed.insert(u.campaign_id);
            }
            LedgerState::Spend(s) => {
                self.pacer_mut(&s.campaign_id)
                    .record_spend(s.day, s.spend_micros);
                self.mark_changed(&s.campaign_id);
            }
            LedgerState::Settled {
                campaign_id,
                wins,
                conversion_delays_ms,
            } => {
                if let Some(p) = self.pacers.get_mut(&*campaign_id) {
                    for win in wins {
                        p.settle(win);
                    }
                    self.delays_dirty |= !conversion_delays_ms.is_empty();
                    for d in conversion_delays_ms {
                        self.delays.observe(d);
                    }
                    self.mark_changed(&campaign_id);
                }
            }
        }
    }

    /// Takes in one feedback record from serving: a win's reservation, or reachable requests.
    pub fn apply_feedback(&mut self, f: PacingFeedback) {
        match f {
            PacingFeedback::Reserve {
                campaign_id,
                replica,
                win,
                micros,
                expires_ms,
            } => {
                let won_ms = expires_ms - self.config.reservation_ttl_ms;
                let pacer = self.pacer_mut(&campaign_id);
                pacer.reserve(replica, win, micros, won_ms, expires_ms);
                if pacer.converting() {
                    self.converting.insert(campaign_id.clone());
                }
                self.expiries
                    .push(Reverse((expires_ms, campaign_id.clone())));
                self.changed.insert(campaign_id);
            }
            PacingFeedback::Reach {
                campaign_id,
                at_ms,
                count,
            } => self.reach.push_back((campaign_id, at_ms, count)),
        }
    }

    /// Folds up to `n` waiting reach counts into their campaigns' traffic profiles; returns
    /// whether some still wait. The profile is persisted with the control steps (at most
    /// [`SAVE_EVERY_STEPS`] intervals apart), not at every checkpoint: reach moves it on every
    /// request, and a forecast that loses a minute of counts in a crash still paces.
    fn fold_reach(&mut self, n: usize) -> bool {
        let slots = self.config.slots;
        for _ in 0..n {
            let Some((id, at_ms, count)) = self.reach.pop_front() else {
                return false;
            };
            let Some(p) = self.pacers.get_mut(&id) else {
                continue;
            };
            let Some(tz) = p.terms().map(|t| t.zone(EventTime(at_ms))) else {
                continue;
            };
            let pos = match self
                .reach_positions
                .iter()
                .find(|(at, zone, _)| *at == at_ms && *zone == tz)
            {
                Some((_, _, pos)) => *pos,
                None => {
                    let pos = position(EventTime(at_ms), tz, slots);
                    if self
                        .reach_positions
                        .first()
                        .is_some_and(|(at, _, _)| *at != at_ms)
                    {
                        self.reach_positions.clear();
                    }
                    self.reach_positions.push((at_ms, tz, pos));
                    pos
                }
            };
            p.observe_reach_at(pos, count, &self.config);
        }
        !self.reach.is_empty()
    }

    /// Wall-clock time `now` (ms) passed: runs the controllers due (each campaign's once every
    /// `interval_ms`, spread over the interval, at most [`CONTROLS_PER_TICK`] per call) and
    /// queues the state of those that moved materially ([`worth_publishing`]); every
    /// `publish_ms`, once the previous publish is through, expires reservations and starts
    /// publishing the state of every campaign that changed since (in campaign order, at most
    /// [`PUBLISH_PER_TICK`] per call). Returns whether controller steps are still due, reach
    /// counts still wait ([`REACH_PER_TICK`] per call) or a publish is under way: call again at
    /// once.
    pub fn tick(&mut self, now: i64) -> bool {
        let more_reach = self.fold_reach(REACH_PER_TICK);
        let publishing = self.publishing.is_empty()
            && now.saturating_sub(self.last_publish) >= self.config.publish_ms;
        if publishing {
            while self
                .expiries
                .peek()
                .is_some_and(|Reverse((at, _))| *at <= now)
            {
                let Some(Reverse((_, id))) = self.expiries.pop() else {
                    break;
                };
                if self.pacers.get_mut(&id).is_some_and(|p| p.expire(now)) {
                    self.changed.insert(id);
                }
            }
            let pacers = &self.pacers;
            self.converting
                .retain(|id| pacers.get(id).is_some_and(CampaignPacer::converting));
            self.changed.extend(self.converting.iter().cloned());
        }
        let more = self.control_due(now);
        if publishing {
            let mut changed: Vec<String> = self.changed.drain().collect();
            changed.sort_unstable();
            self.publishing = changed.into();
            self.last_publish = now;
        }
        for _ in 0..PUBLISH_PER_TICK {
            let Some(id) = self.publishing.pop_front() else {
                break;
            };
            self.publish(id, now, Publish::IfChanged);
        }
        more || more_reach || !self.publishing.is_empty()
    }

    /// Runs the controller steps due at `now`, up to [`CONTROLS_PER_TICK`]; returns whether more
    /// are due.
    fn control_due(&mut self, now: i64) -> bool {
        let interval = self.config.interval_ms.max(1);
        let mut budget = CONTROLS_PER_TICK;
        loop {
            if self.sweep.next >= self.sweep.len {
                let started = self.sweep.start;
                if started != i64::MIN && now < started.saturating_add(interval) {
                    return false;
                }
                // The next sweep starts one interval after this one did; after a stall of more
                // than an interval it starts now (the missed steps are not made up).
                let next_start = started.saturating_add(interval);
                self.sweep = Sweep {
                    len: self.order.len(),
                    next: 0,
                    start: if started == i64::MIN || now - next_start >= interval {
                        now
                    } else {
                        next_start
                    },
                    first: started == i64::MIN,
                };
            }
            let due = self.sweep.due(now, interval);
            while self.sweep.next < due {
                if budget == 0 {
                    return true;
                }
                budget -= 1;
                let id = self.order[self.sweep.next].clone();
                self.sweep.next += 1;
                self.control(id, now);
            }
            if self.sweep.next < self.sweep.len {
                return false;
            }
        }
    }

    /// Runs `id`'s controller at `now`; queues its state if that moved materially, and marks
    /// it for the store when it did or every [`SAVE_EVERY_STEPS`] steps.
    fn control(&mut self, id: String, now: i64) {
        let config = &self.config;
        let Some(p) = self.pacers.get_mut(&id) else {
            return;
        };
        p.control(EventTime(now), config, &self.delays, config.enabled);
        if self.sweep.first {
            // After a start everything is news: published with the changed, in campaign order.
            p.unsaved_steps = 0;
            self.changed.insert(id.clone());
            self.dirty.insert(id);
            return;
        }
        let news = self.publish(id.clone(), now, Publish::IfMaterial);
        let Some(p) = self.pacers.get_mut(&id) else {
            return;
        };
        p.unsaved_steps += 1;
        if news || p.unsaved_steps >= SAVE_EVERY_STEPS {
            p.unsaved_steps = 0;
            self.dirty.insert(id);
        }
    }

    /// Queues `id`'s state at `now` when `when` says it is news; returns whether it did.
    fn publish(&mut self, id: String, now: i64, when: Publish) -> bool {
        let config = &self.config;
        let Some(p) = self.pacers.get_mut(&id) else {
            return false;
        };
        let Some(state) = p.state(EventTime(now), config, &self.delays, config.enabled) else {
            return false;
        };
        let reserved = p.reserved_by_replica(self.peers);
        let prev = p.published.as_ref();
        let news = match when {
            Publish::IfChanged => prev.is_none_or(|prev| {
                prev.reserved_by_replica != reserved
                    || prev.state
                        != PacingState {
                            updated_ms: prev.state.updated_ms,
                            ..state.clone()
                        }
            }),
            Publish::IfMaterial => worth_publishing(prev, &state, &reserved, p.budget_micros()),
        };
        if !news {
            return false;
        }
        p.published = Some(Published {
            state: state.clone(),
            reserved_by_replica: reserved.clone(),
        });
        self.updates.push(PacingUpdate {
            reserved_by_replica: reserved,
            campaign_id: id,
            state,
        });
        true
    }

    /// The updates published by [`PacingShard::tick`] since the last call.
    pub fn take_changes(&mut self) -> Vec<PacingUpdate> {
        std::mem::take(&mut self.updates)
    }

    /// The store writes of the state changed since the last call: the delay curve if it learned,
    /// and the pacers whose controller or traffic profile moved.
    pub fn take_checkpoint(&mut self) -> StateBatch {
        self.take_checkpoint_at_most(usize::MAX)
    }

    /// [`PacingShard::take_checkpoint`], writing at most `limit` pacers; the others stay to be
    /// written, first, by the next calls (they take turns in campaign order from where the
    /// last call stopped, so each is written within a few calls however many keep moving).
    /// Pacing state is a forecast, never money: a crash before they are written loses that
    /// much of it, and a checkpoint of a large catalog does not hold the worker (and the
    /// requests it serves) up for tens of milliseconds.
    pub fn take_checkpoint_at_most(&mut self, limit: usize) -> StateBatch {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let mut batch = StateBatch::default();
        if std::mem::take(&mut self.delays_dirty) {
            batch.put(delays_key(self.index), &self.delays);
        }
        let resume = self.save_cursor.take();
        let mut ids: Vec<String> = match &resume {
            Some(after) => self
                .dirty
                .range::<str, _>((Excluded(after.as_str()), Unbounded))
                .take(limit)
                .cloned()
                .collect(),
            None => self.dirty.iter().take(limit).cloned().collect(),
        };
        if let Some(after) = &resume {
            // Wrapped around: then the ones up to where the last call stopped.
            let room = limit.saturating_sub(ids.len());
            ids.extend(
                self.dirty
                    .range::<str, _>((Unbounded, Included(after.as_str())))
                    .take(room)
                    .cloned(),
            );
        }
        for id in &ids {
            self.dirty.remove(id);
            if let Some(pacer) = self.pacers.get(id) {
                batch.put(state_key(id), pacer);
            }
        }
        if !self.dirty.is_empty() {
            self.save_cursor = ids.pop();
        }
        batch
    }

    /// The pacer of `campaign`, if the shard has one.
    pub fn pacer(&self, campaign: &str) -> Option<&CampaignPacer> {
        self.pacers.get(campaign)
    }

    /// The conversion-delay curve learned so far.
    pub fn delays(&self) -> &DelayCurve {
        &self.delays
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemoryStore;
    use crate::events::Campaign;
    use crate::records::win_key;
    use crate::records::DaySpend;
    use crate::routing::owns;

    #[test]
    fn pacers_round_trip_through_the_store() {
        let store = MemoryStore::default();
        let config = PacingConfig::default();
        let mut p = CampaignPacer::new(&config);
        p.controller.pass = 0.25;
        let campaigns = ["%00", "50%", "a", "b", "c", "d", "e", "x\u{0}y"];
        let puts = campaigns
            .iter()
            .enumerate()
            // Both formats restore: the binary one, and the JSON of earlier releases.
            .map(|(i, c)| {
                let value = if i % 2 == 0 {
                    codec::encode(&p).unwrap()
                } else {
                    serde_json::to_vec(&p).unwrap()
                };
                (state_key(c), value)
            })
            .collect();
        store.persist(StateBatch {
            puts,
            deletes: vec![],
        });
        let mut seen = Vec::new();
        for worker in 0..2 {
            for (id, restored) in restore(&store, worker, 2).unwrap() {
                assert_eq!(restored.controller.pass, 0.25);
                assert!(owns(route(&id), worker, 2));
                seen.push(id);
            }
        }
        seen.sort();
        assert_eq!(seen, campaigns);
    }

    #[test]
    fn bad_entries_and_read_errors_stop_the_restore() {
        let cases = [
            (state_key("c"), b"{".to_vec()),
            (
                format!("pacing/{:016x}/50%", route("50%")).into_bytes(),
                serde_json::to_vec(&CampaignPacer::new(&PacingConfig::default())).unwrap(),
            ),
            (b"pacing/c".to_vec(), b"{}".to_vec()),
        ];
        for (key, value) in cases {
            let store = MemoryStore::default();
            crate::checkpoint::testing::put(&store, vec![(key.clone(), value)]);
            let e = restore(&store, 0, 1).unwrap_err();
            assert!(
                e.to_string().contains(&crate::routing::show_key(&key)),
                "{e}"
            );
        }
        let store = MemoryStore::default();
        crate::checkpoint::testing::put(&store, vec![(b"pacing-delays/0".to_vec(), b"?".to_vec())]);
        let e = restore_delays(&store, 0).unwrap_err();
        assert!(e.to_string().contains("pacing-delays/0"), "{e}");
        let broken = |prefix: &str| crate::checkpoint::testing::BrokenStore {
            broken: prefix.as_bytes().to_vec(),
            ..Default::default()
        };
        assert!(restore(&broken("pacing/"), 0, 1).is_err());
        assert!(restore(&broken("pacing-delays/"), 0, 1).is_ok());
        assert!(restore_delays(&broken("pacing-delays/"), 0).is_err());
        assert!(
            PacingShard::from_store(&broken("pacing-delays/"), PacingConfig::default(), 0, 1)
                .is_err()
        );
    }

    // Noon UTC, 2026-03-01.
    const NOON: i64 = 1_772_366_400_000;

    fn shard() -> PacingShard {
        PacingShard::new(
            PacingConfig::default(),
            0,
            2,
            HashMap::default(),
            DelayCurve::default(),
        )
    }

    fn campaign(id: &str, budget: u64) -> LedgerState {
        let json = format!(
            r#"{{"campaign_id":"{id}","advertiser_id":"A","daily_budget_micros":{budget},"timezone":"UTC","billing":"cpm","bid_micros":2000000,"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
        );
        let c = Campaign::parse(json.as_bytes()).expect("campaign");
        LedgerState::Campaign(CatalogUpdate::new(id.into(), Some(Box::new(c))))
    }

    fn reserve(id: &str, request_id: &str, replica: usize, micros: u64) -> PacingFeedback {
        PacingFeedback::Reserve {
            campaign_id: id.into(),
            replica,
            win: win_key(request_id, "1"),
            micros,
            expires_ms: NOON + PacingConfig::default().reservation_ttl_ms,
        }
    }

    fn ids(updates: &[PacingUpdate]) -> Vec<&str> {
        updates.iter().map(|u| u.campaign_id.as_str()).collect()
    }

    #[test]
    fn changed_campaigns_are_published_in_order_once() {
        let mut s = shard();
        s.apply(campaign("b", 1_000_000));
        s.apply(campaign("a", 1_000_000));
        assert!(s.take_changes().is_empty(), "nothing before a tick");
        s.tick(NOON);
        let updates = s.take_changes();
        assert_eq!(ids(&updates), vec!["a", "b"]);
        assert!(updates.iter().all(|u| u.state.updated_ms == NOON));
        assert!(updates.iter().all(|u| u.reserved_by_replica == vec![0, 0]));
        assert!(s.take_changes().is_empty());
        // Before `publish_ms` nothing is published, then only what changed.
        s.apply_feedback(reserve("b", "r1", 1, 500));
        s.tick(NOON + 1);
        assert!(s.take_changes().is_empty());
        s.tick(NOON + PacingConfig::default().publish_ms);
        let updates = s.take_changes();
        assert_eq!(ids(&updates), vec!["b"]);
        assert_eq!(updates[0].reserved_by_replica, vec![0, 500]);
        assert_eq!(updates[0].reserved_micros(), 500);
    }

    #[test]
    fn a_large_publish_goes_out_a_slice_per_tick_in_order_once() {
        let mut s = shard();
        let n = PUBLISH_PER_TICK * 2 + 7;
        let all: Vec<String> = (0..n).map(|i| format!("c{i:05}")).collect();
        for id in all.iter().rev() {
            s.apply(campaign(id, 1_000_000));
        }
        // Controllers' first sweep is news as well: let it finish first.
        let mut ticks = 0;
        let mut published: Vec<String> = Vec::new();
        let publish = PacingConfig::default().publish_ms;
        let mut at = NOON;
        loop {
            let more = s.tick(at);
            let updates = s.take_changes();
            assert!(
                updates.len() <= PUBLISH_PER_TICK + CONTROLS_PER_TICK,
                "{}",
                updates.len()
            );
            published.extend(updates.into_iter().map(|u| u.campaign_id));
            ticks += 1;
            if !more {
                if published.len() >= n {
                    break;
                }
                at += publish;
            }
            assert!(ticks < 1_000, "never finished");
        }
        let mut sorted = published.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, all, "every campaign published");
        assert_eq!(published.len(), n, "each once");
        // A reservation on every campaign: the next publish takes three ticks, in campaign order,
        // and none of them starts the publish after it.
        for id in &all {
            s.apply_feedback(reserve(id, "r", 1, 10));
        }
        at += publish;
        let mut slices = Vec::new();
        while s.tick(at) {
            slices.push(
                ids(&s.take_changes())
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>(),
            );
        }
        slices.push(
            ids(&s.take_changes())
                .iter()
                .map(|c| c.to_string())
                .collect(),
        );
        let lens: Vec<usize> = slices.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![PUBLISH_PER_TICK, PUBLISH_PER_TICK, 7]);
        assert_eq!(slices.concat(), all, "in campaign order");
        // Changed while a publish is under way: in the next one.
        s.apply_feedback(reserve("c00000", "r2", 1, 10));
        s.tick(at);
        assert!(s.take_changes().is_empty(), "not before publish_ms");
        s.tick(at + publish);
        assert_eq!(ids(&s.take_changes()), vec!["c00000"]);
    }

    #[test]
    fn checkpoints_write_a_bounded_share_in_turns() {
        let mut s = shard();
        let all: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        for id in &all {
            s.apply(campaign(id, 1_000_000));
        }
        while s.tick(NOON) {}
        let keys = |b: &StateBatch| -> Vec<String> {
            b.puts
                .iter()
                .filter_map(|(k, _)| PACING.parse(k).ok())
                .map(|(_, parts)| parts.join("/"))
                .collect()
        };
        let mut written = Vec::new();
        for _ in 0..3 {
            let b = s.take_checkpoint_at_most(4);
            assert!(b.puts.len() <= 4 + 1, "the delay curve at most besides");
            written.extend(keys(&b));
        }
        written.sort();
        assert_eq!(written, all, "ten in three turns of four, each once");
        assert!(s.take_checkpoint_at_most(4).is_empty());
        // Turns go on from where the last one stopped, past campaigns that moved again.
        for id in ["c0", "c1", "c5", "c8", "c9"] {
            s.dirty.insert(id.to_string());
        }
        assert_eq!(keys(&s.take_checkpoint_at_most(2)), vec!["c0", "c1"]);
        s.dirty.insert("c0".into());
        assert_eq!(keys(&s.take_checkpoint_at_most(2)), vec!["c5", "c8"]);
        assert_eq!(keys(&s.take_checkpoint_at_most(2)), vec!["c9", "c0"]);
        assert!(s.take_checkpoint_at_most(2).is_empty());
        // The final checkpoint writes everything.
        for id in &all {
            s.dirty.insert(id.clone());
        }
        assert_eq!(keys(&s.take_checkpoint()).len(), 10);
    }

    fn state(pass: f64, target: u64) -> PacingState {
        PacingState {
            mode: "paced".into(),
            pass_probability: pass,
            target_micros: target,
            committed_micros: 100,
            conversions_pending_micros: 0,
            day: "2026-03-01".parse().expect("day"),
            full_rate_micros_per_hour: None,
            updated_ms: 0,
        }
    }

    #[test]
    fn only_material_moves_are_worth_publishing() {
        let was = Published {
            state: state(0.5, 10_000),
            reserved_by_replica: vec![0, 0],
        };
        let budget = 100_000;
        let worth = |next: &PacingState, reserved: &[u64]| {
            worth_publishing(Some(&was), next, reserved, budget)
        };
        assert!(worth_publishing(None, &state(0.5, 0), &[0, 0], budget));
        // A nudge of the pass or the target, or a new timestamp, is not news.
        let mut next = state(0.5 * (1.0 + PASS_TOLERANCE / 2.0), 10_000 + 999);
        next.updated_ms = 5;
        assert!(!worth(&next, &[0, 0]));
        assert!(worth(
            &state(0.5 * (1.0 + 2.0 * PASS_TOLERANCE), 10_000),
            &[0, 0]
        ));
        assert!(worth(&state(0.5, 11_000), &[0, 0]), "1 % of the budget");
        // Whatever gates money always is.
        assert!(worth(&state(0.5, 10_000), &[0, 1]));
        let mut next = state(0.5, 10_000);
        next.committed_micros += 1;
        assert!(worth(&next, &[0, 0]));
        let mut next = state(0.5, 10_000);
        next.conversions_pending_micros = 1;
        assert!(worth(&next, &[0, 0]));
        let mut next = state(0.5, 10_000);
        next.mode = "exhausted".into();
        assert!(worth(&next, &[0, 0]));
        let mut next = state(0.5, 10_000);
        next.day = "2026-03-02".parse().expect("day");
        assert!(worth(&next, &[0, 0]));
        // Reaching full participation is, however small the step.
        let near = Published {
            state: state(0.999, 10_000),
            reserved_by_replica: vec![0, 0],
        };
        assert!(worth_publishing(
            Some(&near),
            &state(1.0, 10_000),
            &[0, 0],
            budget
        ));
    }

    #[test]
    fn controller_steps_are_spread_over_the_interval_a_few_per_tick() {
        let config = PacingConfig::default();
        let interval = config.interval_ms;
        let mut s = shard();
        let n = CONTROLS_PER_TICK * 3;
        for i in 0..n {
            s.apply(campaign(&format!("c{i:04}"), 1_000_000));
        }
        let controlled = |s: &PacingShard| {
            s.pacers
                .values()
                .filter(|p| p.controller.last_ms.is_some())
                .count()
        };
        // The first sweep runs at once, a tick's worth per call.
        assert!(s.tick(NOON));
        assert_eq!(controlled(&s), CONTROLS_PER_TICK);
        assert!(s.tick(NOON));
        assert!(!s.tick(NOON));
        assert_eq!(controlled(&s), n);
        assert!(s.take_changes().len() >= n, "all new: all published");
        // The next sweep starts one interval later and runs evenly through it.
        let at = |s: &PacingShard, t: i64| {
            s.pacers
                .values()
                .filter(|p| p.controller.last_ms == Some(t))
                .count()
        };
        assert!(!s.tick(NOON + interval - 1));
        assert_eq!(at(&s, NOON + interval - 1), 0);
        assert!(!s.tick(NOON + interval));
        assert_eq!(at(&s, NOON + interval), 1);
        let quarter = NOON + interval + interval / 4;
        assert!(!s.tick(quarter));
        assert_eq!(at(&s, quarter), n / 4);
        // A tick past the whole interval catches up on the rest, a tick's worth at a time.
        let late = NOON + 3 * interval;
        while s.tick(late) {}
        assert_eq!(
            s.pacers
                .values()
                .filter(|p| p.controller.last_ms.is_some_and(|t| t > NOON))
                .count(),
            n
        );
        // What moved little is written to the store only every few steps.
        let _ = s.take_checkpoint();
        let mut written = 0;
        for step in 1..=SAVE_EVERY_STEPS as i64 {
            let t = late + step * interval;
            while s.tick(t) {}
            while s.tick(t + interval - 1) {}
            written += s.take_checkpoint().len();
        }
        assert!(
            written >= n,
            "each written at least once in {SAVE_EVERY_STEPS} steps"
        );
        assert!(written < n * SAVE_EVERY_STEPS as usize, "{written}");
    }

    #[test]
    fn settled_wins_and_expiry_release_reservations() {
        let mut s = shard();
        s.apply(campaign("c", 1_000_000));
        s.apply_feedback(reserve("c", "r1", 0, 300));
        s.apply_feedback(reserve("c", "r2", 1, 200));
        s.tick(NOON);
        assert_eq!(s.take_changes()[0].reserved_by_replica, vec![300, 200]);
        s.apply(LedgerState::Settled {
            campaign_id: "c".into(),
            wins: vec![win_key("r1", "1")],
            conversion_delays_ms: vec![],
        });
        let publish = PacingConfig::default().publish_ms;
        s.tick(NOON + publish);
        assert_eq!(s.take_changes()[0].reserved_by_replica, vec![0, 200]);
        // Past the TTL the other reservation lapses, and that is a change too.
        let ttl = PacingConfig::default().reservation_ttl_ms;
        s.tick(NOON + ttl);
        assert_eq!(s.take_changes()[0].reserved_by_replica, vec![0, 0]);
    }

    #[test]
    fn spend_counts_as_committed() {
        let mut s = shard();
        s.apply(campaign("c", 1_000_000));
        s.apply(LedgerState::Spend(DaySpend {
            campaign_id: "c".into(),
            day: chrono::NaiveDate::from_ymd_opt(2026, 3, 1).expect("day"),
            spend_micros: 1_000_000,
            overdelivery_micros: 0,
        }));
        s.tick(NOON);
        let updates = s.take_changes();
        assert_eq!(updates[0].state.committed_micros, 1_000_000);
        assert_eq!(updates[0].state.mode, "exhausted");
    }

    #[test]
    fn unknown_campaigns_settle_and_reach_nothing() {
        let mut s = shard();
        s.apply(LedgerState::Settled {
            campaign_id: "ghost".into(),
            wins: vec![win_key("r1", "1")],
            conversion_delays_ms: vec![5_000],
        });
        s.apply_feedback(PacingFeedback::Reach {
            campaign_id: "ghost".into(),
            at_ms: NOON,
            count: 3,
        });
        assert!(s.pacer("ghost").is_none());
        assert_eq!(s.delays().observed(), 0.0);
        s.tick(NOON);
        assert!(s.take_changes().is_empty());
        assert!(s.take_checkpoint().is_empty());
    }

    #[test]
    fn a_checkpoint_restores_the_same_state() {
        let store = MemoryStore::default();
        let mut s = shard();
        s.apply(campaign("a", 1_000_000));
        s.apply(campaign("b", 2_000_000));
        s.apply_feedback(PacingFeedback::Reach {
            campaign_id: "a".into(),
            at_ms: NOON,
            count: 40,
        });
        s.apply(LedgerState::Settled {
            campaign_id: "a".into(),
            wins: vec![],
            conversion_delays_ms: vec![60_000, 120_000],
        });
        s.tick(NOON);
        store.persist(s.take_checkpoint());
        assert!(s.take_checkpoint().is_empty(), "nothing changed since");
        let snapshot = store.snapshot();
        assert!(snapshot.contains_key(&delays_key(0)));
        let mut restored = PacingShard::new(
            PacingConfig::default(),
            0,
            1,
            HashMap::default(),
            DelayCurve::default(),
        );
        for worker in 0..2 {
            let w = PacingShard::from_store(&store, PacingConfig::default(), worker, 2)
                .expect("restore");
            restored.pacers.extend(w.pacers);
            restored.delays = w.delays;
        }
        for id in ["a", "b"] {
            assert_eq!(
                serde_json::to_value(restored.pacer(id).expect("restored")).expect("json"),
                serde_json::to_value(s.pacer(id).expect("kept")).expect("json"),
            );
        }
        assert_eq!(restored.delays().observed(), 2.0);
    }
}
