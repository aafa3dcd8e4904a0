//! The pacing operator: one [`CampaignPacer`] per campaign, on the worker that owns the campaign
//! (the same worker as its ledger shard).
//!
//! Inputs: the ledger's output (campaign definitions, spend per day, settled wins) and serving's
//! feedback (reservations per win, reachable requests), both exchanged by campaign. Every
//! `interval` of wall-clock time it runs each campaign's controller; every `publish_ms` it sends
//! the state of the campaigns that changed (reservations, spend, throttle), which the runtime
//! broadcasts to every serving replica. Profiles, controllers and plans are written to the state
//! store at the ledger's checkpoint boundaries and restored at start; reservations are not (they
//! live for the reservation TTL only).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use super::delays::DelayCurve;
use super::pacer::{CampaignPacer, Terms};
use super::{PacingConfig, PacingFeedback, PacingUpdate};
use crate::checkpoint::{json_value, CheckpointGate, RestoreError, StateBatch, StateStore};
use crate::events::CampaignStatus;
use crate::records::CatalogUpdate;
use crate::records::LedgerOutput;
use crate::routing::{owns, route, PACING};
use crate::source::Clock;
use crate::time::EventTime;

fn state_key(campaign: &str) -> Vec<u8> {
    PACING.key(route(campaign), &[campaign])
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
            pacers.insert(campaign, json_value::<CampaignPacer>(&k, &v)?);
        }
    }
    Ok(pacers)
}

const DELAYS_PREFIX: &str = "pacing-delays/";

/// The conversion-delay curve worker `index` learned (or, after a change in the number of
/// workers, all of them merged).
pub fn restore_delays(store: &dyn StateStore, index: usize) -> Result<DelayCurve, RestoreError> {
    let mut curves: Vec<(Vec<u8>, DelayCurve)> = Vec::new();
    for (k, v) in store.scan(DELAYS_PREFIX.as_bytes())? {
        let curve = json_value(&k, &v)?;
        curves.push((k, curve));
    }
    let own = format!("{DELAYS_PREFIX}{index}").into_bytes();
    if let Some((_, c)) = curves.iter().find(|(k, _)| *k == own) {
        return Ok(c.clone());
    }
    let mut merged = DelayCurve::default();
    for (_, c) in &curves {
        merged.merge(c);
    }
    Ok(merged)
}

fn ledger_campaign(rec: &LedgerOutput) -> Option<&str> {
    match rec {
        LedgerOutput::Campaign(u) => Some(&u.campaign_id),
        LedgerOutput::Spend(s) => Some(&s.campaign_id),
        LedgerOutput::Settled { campaign_id, .. } => Some(campaign_id),
        LedgerOutput::Dead(_) | LedgerOutput::Activity(_) | LedgerOutput::Charged(_) => None,
    }
}

/// Builds the pacing operator.
pub fn pacing<'scope>(
    ledger: StreamVec<'scope, u64, LedgerOutput>,
    feedback: StreamVec<'scope, u64, PacingFeedback>,
    config: PacingConfig,
    checkpoint_interval: u64,
    store: Arc<dyn StateStore>,
    clock: Clock,
) -> StreamVec<'scope, u64, PacingUpdate> {
    let scope = ledger.scope();
    let (index, peers) = (scope.index(), scope.peers());
    let ledger = ledger.flat_map(|rec| ledger_campaign(&rec).is_some().then_some(rec));
    ledger.binary_frontier(
        feedback,
        Exchange::new(|r: &LedgerOutput| ledger_campaign(r).map_or(0, route)),
        Exchange::new(|f: &PacingFeedback| route(f.campaign_id())),
        "Pacing",
        move |capability, info| {
            let wake = scope.activator_for(info.address.clone());
            let mut gate = CheckpointGate::new(
                capability,
                checkpoint_interval,
                scope.activator_for(info.address),
            );
            let mut pacers = restore(&*store, index, peers)
                .unwrap_or_else(|e| panic!("restoring pacing of worker {index}: {e}"));
            let mut delays = restore_delays(&*store, index)
                .unwrap_or_else(|e| panic!("restoring pacing of worker {index}: {e}"));
            let mut delays_dirty = false;
            let mut changed: BTreeSet<String> = BTreeSet::new();
            let mut dirty: BTreeSet<String> = BTreeSet::new();
            let mut last_control = i64::MIN;
            let mut last_publish = i64::MIN;
            let publish = Duration::from_millis(config.publish_ms.max(1) as u64);
            move |(ledger_in, ledger_frontier), (feedback_in, _), output| {
                let now = clock();
                ledger_in.for_each(|_cap, data| {
                    for rec in data.drain(..) {
                        match rec {
                            LedgerOutput::Campaign(u) => {
                                let p = pacers
                                    .entry(u.campaign_id.clone())
                                    .or_insert_with(|| CampaignPacer::new(&config));
                                p.set_terms(terms_of(&u));
                                changed.insert(u.campaign_id);
                            }
                            LedgerOutput::Spend(s) => {
                                let p = pacers
                                    .entry(s.campaign_id.clone())
                                    .or_insert_with(|| CampaignPacer::new(&config));
                                p.record_spend(s.day, s.spend_micros);
                                changed.insert(s.campaign_id);
                            }
                            LedgerOutput::Settled {
                                campaign_id,
                                wins,
                                conversion_delays_ms,
                            } => {
                                if let Some(p) = pacers.get_mut(&campaign_id) {
                                    for (request_id, imp_id) in &wins {
                                        p.settle(request_id, imp_id);
                                    }
                                    delays_dirty |= !conversion_delays_ms.is_empty();
                                    for d in conversion_delays_ms {
                                        delays.observe(d);
                                    }
                                    changed.insert(campaign_id);
                                }
                            }
                            LedgerOutput::Dead(_)
                            | LedgerOutput::Activity(_)
                            | LedgerOutput::Charged(_) => {}
                        }
                    }
                });
                feedback_in.for_each(|_cap, data| {
                    for f in data.drain(..) {
                        match f {
                            PacingFeedback::Reserve {
                                campaign_id,
                                replica,
                                request_id,
                                imp_id,
                                micros,
                                expires_ms,
                            } => {
                                let p = pacers
                                    .entry(campaign_id.clone())
                                    .or_insert_with(|| CampaignPacer::new(&config));
                                let won_ms = expires_ms - config.reservation_ttl_ms;
                                p.reserve(
                                    replica,
                                    &request_id,
                                    &imp_id,
                                    micros,
                                    won_ms,
                                    expires_ms,
                                );
                                changed.insert(campaign_id);
                            }
                            PacingFeedback::Reach {
                                campaign_id,
                                at_ms,
                                count,
                            } => {
                                if let Some(p) = pacers.get_mut(&campaign_id) {
                                    p.observe_reach(EventTime(at_ms), count, &config);
                                    dirty.insert(campaign_id);
                                }
                            }
                        }
                    }
                });
                if now.saturating_sub(last_control) >= config.interval_ms {
                    for (id, p) in pacers.iter_mut() {
                        p.control(EventTime(now), &config, &delays, config.enabled);
                        changed.insert(id.clone());
                        dirty.insert(id.clone());
                    }
                    last_control = now;
                }
                if now.saturating_sub(last_publish) >= config.publish_ms {
                    for (id, p) in pacers.iter_mut() {
                        if p.expire(now) {
                            changed.insert(id.clone());
                        }
                    }
                    if let Some(cap) = gate.capability().cloned() {
                        let mut session = output.session(&cap);
                        for id in std::mem::take(&mut changed) {
                            let Some(p) = pacers.get(&id) else { continue };
                            if let Some(state) =
                                p.state(EventTime(now), &config, &delays, config.enabled)
                            {
                                session.give(PacingUpdate {
                                    reserved_by_replica: p.reserved_by_replica(peers),
                                    campaign_id: id,
                                    state,
                                });
                            }
                        }
                    }
                    last_publish = now;
                }
                gate.step(ledger_frontier.frontier().first().copied(), &*store, |_| {
                    let mut batch = StateBatch::default();
                    if std::mem::take(&mut delays_dirty) {
                        if let Ok(v) = serde_json::to_vec(&delays) {
                            batch
                                .puts
                                .push((format!("{DELAYS_PREFIX}{index}").into_bytes(), v));
                        }
                    }
                    for id in std::mem::take(&mut dirty) {
                        if let Some(Ok(v)) = pacers.get(&id).map(serde_json::to_vec) {
                            batch.puts.push((state_key(&id), v));
                        }
                    }
                    batch
                });
                if !gate.is_closed() {
                    wake.activate_after(publish);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemoryStore;

    #[test]
    fn pacers_round_trip_through_the_store() {
        let store = MemoryStore::default();
        let config = PacingConfig::default();
        let mut p = CampaignPacer::new(&config);
        p.controller.pass = 0.25;
        let campaigns = ["%00", "50%", "a", "b", "c", "d", "e", "x\u{0}y"];
        let puts = campaigns
            .iter()
            .map(|c| (state_key(c), serde_json::to_vec(&p).unwrap()))
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
    }
}
