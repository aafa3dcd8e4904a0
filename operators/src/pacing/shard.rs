//! One worker's pacing state as plain data: a [`CampaignPacer`] per campaign it owns, the
//! conversion-delay curve it learns, and what changed since it last published and checkpointed.
//!
//! [`PacingShard::apply`] takes in the ledger's output and [`PacingShard::apply_feedback`]
//! serving's; [`PacingShard::tick`] runs the controllers every `interval_ms` and, every
//! `publish_ms`, expires reservations and queues the [`PacingUpdate`]s of the campaigns that
//! changed, collected by [`PacingShard::take_changes`]. [`PacingShard::take_checkpoint`] gives the
//! state store writes of what changed since the last checkpoint, and [`PacingShard::from_store`]
//! reads them back. The [`super::operator`] shell only moves data between timely and these.

use std::collections::{BTreeSet, HashMap};

use super::delays::DelayCurve;
use super::pacer::{CampaignPacer, Terms};
use super::{PacingConfig, PacingFeedback, PacingUpdate};
use crate::checkpoint::{codec, RestoreError, StateBatch, StateStore};
use crate::events::CampaignStatus;
use crate::records::{CatalogUpdate, LedgerState};
use crate::routing::{owns, route, PACING};
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
    let mut pacers = HashMap::new();
    for (k, v) in store.scan(PACING.prefix.as_bytes())? {
        let (hash, [campaign]) = PACING.parse_as(&k)?;
        if owns(hash, index, peers) {
            pacers.insert(campaign, codec::decode::<CampaignPacer>(&k, &v)?);
        }
    }
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

/// The pacing state of worker `index` of `peers`: the pacers of the campaigns it owns, the
/// conversion delays it learned, the campaigns whose state changed since the last publish and
/// those to write at the next checkpoint, and the updates published but not yet taken.
#[derive(Debug)]
pub struct PacingShard {
    config: PacingConfig,
    index: usize,
    peers: usize,
    pacers: HashMap<String, CampaignPacer>,
    delays: DelayCurve,
    delays_dirty: bool,
    changed: BTreeSet<String>,
    dirty: BTreeSet<String>,
    last_control: i64,
    last_publish: i64,
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
        PacingShard {
            config,
            index,
            peers,
            pacers,
            delays,
            delays_dirty: false,
            changed: BTreeSet::new(),
            dirty: BTreeSet::new(),
            last_control: i64::MIN,
            last_publish: i64::MIN,
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
        let config = &self.config;
        self.pacers
            .entry(campaign.to_string())
            .or_insert_with(|| CampaignPacer::new(config))
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
                self.changed.insert(s.campaign_id);
            }
            LedgerState::Settled {
                campaign_id,
                wins,
                conversion_delays_ms,
            } => {
                if let Some(p) = self.pacers.get_mut(&campaign_id) {
                    for (request_id, imp_id) in &wins {
                        p.settle(request_id, imp_id);
                    }
                    self.delays_dirty |= !conversion_delays_ms.is_empty();
                    for d in conversion_delays_ms {
                        self.delays.observe(d);
                    }
                    self.changed.insert(campaign_id);
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
                request_id,
                imp_id,
                micros,
                expires_ms,
            } => {
                let won_ms = expires_ms - self.config.reservation_ttl_ms;
                self.pacer_mut(&campaign_id).reserve(
                    replica,
                    &request_id,
                    &imp_id,
                    micros,
                    won_ms,
                    expires_ms,
                );
                self.changed.insert(campaign_id);
            }
            PacingFeedback::Reach {
                campaign_id,
                at_ms,
                count,
            } => {
                // The traffic profile is persisted with the next control step (every
                // `interval_ms`), not at every checkpoint: reach moves it on every request, and
                // a forecast that loses a few seconds of counts in a crash still paces.
                if let Some(p) = self.pacers.get_mut(&campaign_id) {
                    p.observe_reach(EventTime(at_ms), count, &self.config);
                }
            }
        }
    }

    /// Wall-clock time `now` (ms) passed: every `interval_ms` runs each campaign's controller;
    /// every `publish_ms` expires reservations and queues the state of every campaign that
    /// changed since the last publish (in campaign order).
    pub fn tick(&mut self, now: i64) {
        let config = &self.config;
        if now.saturating_sub(self.last_control) >= config.interval_ms {
            for (id, p) in self.pacers.iter_mut() {
                p.control(EventTime(now), config, &self.delays, config.enabled);
                self.changed.insert(id.clone());
                self.dirty.insert(id.clone());
            }
            self.last_control = now;
        }
        if now.saturating_sub(self.last_publish) >= config.publish_ms {
            for (id, p) in self.pacers.iter_mut() {
                if p.expire(now) {
                    self.changed.insert(id.clone());
                }
            }
            for id in std::mem::take(&mut self.changed) {
                let Some(p) = self.pacers.get(&id) else {
                    continue;
                };
                if let Some(state) = p.state(EventTime(now), config, &self.delays, config.enabled) {
                    self.updates.push(PacingUpdate {
                        reserved_by_replica: p.reserved_by_replica(self.peers),
                        campaign_id: id,
                        state,
                    });
                }
            }
            self.last_publish = now;
        }
    }

    /// The updates published by [`PacingShard::tick`] since the last call.
    pub fn take_changes(&mut self) -> Vec<PacingUpdate> {
        std::mem::take(&mut self.updates)
    }

    /// The store writes of the state changed since the last call: the delay curve if it learned,
    /// and the pacers whose controller or traffic profile moved.
    pub fn take_checkpoint(&mut self) -> StateBatch {
        let mut batch = StateBatch::default();
        if std::mem::take(&mut self.delays_dirty) {
            batch.put(delays_key(self.index), &self.delays);
        }
        for id in std::mem::take(&mut self.dirty) {
            if let Some(pacer) = self.pacers.get(&id) {
                batch.put(state_key(&id), pacer);
            }
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
    use crate::records::DaySpend;

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
            HashMap::new(),
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
            request_id: request_id.into(),
            imp_id: "1".into(),
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
    fn settled_wins_and_expiry_release_reservations() {
        let mut s = shard();
        s.apply(campaign("c", 1_000_000));
        s.apply_feedback(reserve("c", "r1", 0, 300));
        s.apply_feedback(reserve("c", "r2", 1, 200));
        s.tick(NOON);
        assert_eq!(s.take_changes()[0].reserved_by_replica, vec![300, 200]);
        s.apply(LedgerState::Settled {
            campaign_id: "c".into(),
            wins: vec![("r1".into(), "1".into())],
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
            wins: vec![("r1".into(), "1".into())],
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
            HashMap::new(),
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
