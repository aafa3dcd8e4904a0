//! The ledger operator: campaigns and charges in, spend updates and refusals out.
//!
//! Both inputs are exchanged by campaign, so each worker holds the catalog entries and ledger
//! shard of the same campaigns. A charge for a campaign the catalog does not know yet waits until
//! the campaigns input's frontier has passed its time (the catalog is then complete up to it);
//! only then is it refused as `unknown_campaign`. State is checkpointed through a
//! [`CheckpointGate`].

use std::sync::Arc;

use chrono::NaiveDate;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::catalog::Catalog;
use crate::checkpoint::{codec, CheckpointGate, RestoreError, StateBatch, StateStore};
use crate::events::EventKind;
use crate::hash::{by_str_or_insert_with, StrMap};
use crate::ledger::{DayTotals, DedupEntry, Horizons, Ledger, LedgerChanges, Refusal, Terms};
use crate::records::{win_key, WinKey};
pub use crate::records::{CampaignActivity, LedgerState};
use crate::records::{CatalogUpdate, History};
use crate::records::{Charge, Charged, DaySpend};
use crate::records::{DeadLetter, Reason};
use crate::routing::{owns, route, KeyError, LEDGER_CAMPAIGN, LEDGER_DEDUP, LEDGER_SPEND};
use crate::time::EventTime;

/// Settings of the ledger operator.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// Charging windows.
    pub horizons: Horizons,
    /// Checkpoint every this many units of event time (ms).
    pub checkpoint_interval: u64,
    /// Where the operator counts what it bills and delivers free (read by the metrics).
    pub stats: Arc<BillingStats>,
}

/// Micros billed and overdelivered by the ledger operators of a process, by billing type
/// (`cpm`, `cpc`, `cpa`), since the last [`BillingStats::take`]. Replays are not counted.
#[derive(Debug, Default)]
pub struct BillingStats {
    billed: [std::sync::atomic::AtomicU64; 3],
    overdelivered: [std::sync::atomic::AtomicU64; 3],
}

impl BillingStats {
    fn add(&self, billing: crate::events::Billing, billed: u64, over: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let i = billing as usize;
        self.billed[i].fetch_add(billed, Relaxed);
        self.overdelivered[i].fetch_add(over, Relaxed);
    }

    /// `(billing, billed, overdelivered)` since the last call, and resets them.
    pub fn take(&self) -> Vec<(crate::events::Billing, u64, u64)> {
        use crate::events::Billing;
        use std::sync::atomic::Ordering::Relaxed;
        [Billing::Cpm, Billing::Cpc, Billing::Cpa]
            .into_iter()
            .map(|b| {
                let i = b as usize;
                (
                    b,
                    self.billed[i].swap(0, Relaxed),
                    self.overdelivered[i].swap(0, Relaxed),
                )
            })
            .collect()
    }
}

fn spend_key(campaign: &str, day: NaiveDate) -> Vec<u8> {
    LEDGER_SPEND.key(route(campaign), &[campaign, &day.to_string()])
}

fn dedup_key_bytes(shard: u64, key: u128) -> Vec<u8> {
    let digest = crate::routing::hex128(key);
    // Hex digits are ASCII.
    LEDGER_DEDUP.key(shard, &[std::str::from_utf8(&digest).unwrap_or_default()])
}

fn history_key(campaign: &str) -> Vec<u8> {
    LEDGER_CAMPAIGN.key(route(campaign), &[campaign])
}

/// A day's totals as stored: `(billed, overdelivered)` in the checkpoint format; earlier
/// releases wrote the text `billed` alone (before budgets were capped) or `billed,overdelivered`.
fn decode_totals(key: &[u8], v: &[u8]) -> Result<DayTotals, RestoreError> {
    let (billed, over) = codec::decode_with(key, v, |key, v| {
        let text = std::str::from_utf8(v).map_err(|e| RestoreError::value(key, e))?;
        let (billed, over) = text.split_once(',').unwrap_or((text, "0"));
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|e| RestoreError::value(key, format!("{text:?}: {e}")))
        };
        Ok((number(billed)?, number(over)?))
    })?;
    Ok(DayTotals { billed, over })
}

/// The checkpoint writes for `changes` of worker `worker`'s shard, and the campaign histories
/// that changed.
pub fn encode(
    changes: LedgerChanges,
    histories: Vec<(String, History)>,
    worker: usize,
) -> StateBatch {
    let mut batch = StateBatch::default();
    for (c, day, spend) in changes.spend {
        match spend {
            Some(s) => batch.put(spend_key(&c, day), &(s.billed, s.over)),
            None => batch.deletes.push(spend_key(&c, day)),
        }
    }
    for (c, history) in histories {
        batch.put(history_key(&c), &history);
    }
    for (k, entry) in changes.added {
        batch.put(dedup_key_bytes(entry.shard, k), &entry);
    }
    for (k, entry) in changes.dropped {
        batch.deletes.push(dedup_key_bytes(entry.shard, k));
    }
    batch.put(
        format!("ledger/closed/{worker}").into_bytes(),
        &changes.closed_before,
    );
    batch
}

/// Rebuilds worker `index` of `peers`'s shard from the store. Entries of other workers are
/// skipped; an entry that cannot be read, or a store read error, is an error naming the key.
pub fn restore(
    store: &dyn StateStore,
    horizons: Horizons,
    index: usize,
    peers: usize,
) -> Result<Ledger, RestoreError> {
    let mut spend = Vec::new();
    for (k, v) in store.scan(LEDGER_SPEND.prefix.as_bytes())? {
        let (hash, [campaign_id, day]) = LEDGER_SPEND.parse_as(&k)?;
        if !owns(hash, index, peers) {
            continue;
        }
        let day = day
            .parse::<NaiveDate>()
            .map_err(|e| KeyError::new(&k, format!("day {day:?}: {e}")))?;
        let totals = decode_totals(&k, &v)?;
        spend.push(DaySpend {
            campaign_id: campaign_id.into(),
            day,
            spend_micros: totals.billed,
            overdelivery_micros: totals.over,
        });
    }
    let mut dedup = Vec::new();
    for (k, v) in store.scan(LEDGER_DEDUP.prefix.as_bytes())? {
        let (hash, [digest]) = LEDGER_DEDUP.parse_as(&k)?;
        if !owns(hash, index, peers) {
            continue;
        }
        let digest = u128::from_str_radix(&digest, 16)
            .map_err(|e| KeyError::new(&k, format!("digest {digest:?}: {e}")))?;
        dedup.push((digest, codec::decode::<DedupEntry>(&k, &v)?));
    }
    let mut closed_before = i64::MAX;
    let mut any_closed = false;
    for (k, v) in store.scan(b"ledger/closed/")? {
        closed_before = closed_before.min(codec::decode_number::<i64>(&k, &v)?);
        any_closed = true;
    }
    let closed_before = if any_closed { closed_before } else { i64::MIN };
    Ok(Ledger::restore(horizons, spend, dedup, closed_before))
}

/// The checkpointed histories (zone changes, bids) of worker `index` of `peers`'s campaigns.
pub fn restore_histories(
    store: &dyn StateStore,
    index: usize,
    peers: usize,
) -> Result<Vec<(String, History)>, RestoreError> {
    let mut out = Vec::new();
    for (k, v) in store.scan(LEDGER_CAMPAIGN.prefix.as_bytes())? {
        let (hash, [campaign]) = LEDGER_CAMPAIGN.parse_as(&k)?;
        if owns(hash, index, peers) {
            out.push((campaign, codec::decode::<History>(&k, &v)?));
        }
    }
    Ok(out)
}

/// Applies `charge` against `catalog`: the day's spend it moved (`None` for a replay) and the
/// charge itself (reports count it, replays included), or the refusal.
fn settle(
    ledger: &mut Ledger,
    catalog: &Catalog,
    charge: &Charge,
    stats: &BillingStats,
) -> Result<(Option<(NaiveDate, DayTotals)>, Charged), DeadLetter> {
    let dead = |reason: Reason, detail: String| DeadLetter {
        reason,
        detail,
        origin: charge.origin,
        key: charge.key.clone(),
        payload: charge.payload.clone(),
        truncated: false,
    };
    let Some(listed) = catalog.get(&charge.claims.campaign_id) else {
        return Err(dead(
            Reason::UnknownCampaign,
            format!("unknown campaign {:?}", charge.claims.campaign_id),
        ));
    };
    let issued = charge.claims.issued;
    let terms = Terms {
        day: listed.day_of(issued),
        budget_micros: listed.campaign.daily_budget_micros,
        max_charge_micros: listed.max_charge_at(issued),
    };
    match ledger.apply(charge, &terms) {
        Ok(applied) => {
            stats.add(
                charge.claims.billing,
                applied.billed_micros,
                applied.over_micros,
            );
            Ok((
                Some((
                    applied.day,
                    DayTotals {
                        billed: applied.spend_micros,
                        over: applied.overdelivery_micros,
                    },
                )),
                Charged::of(charge, applied.billed_micros, applied.over_micros),
            ))
        }
        Err(Refusal::Replay {
            billed_micros,
            overdelivery_micros,
        }) => Ok((
            None,
            Charged {
                replayed: true,
                ..Charged::of(charge, billed_micros, overdelivery_micros)
            },
        )),
        Err(r @ Refusal::Duplicate(_)) => Err(dead(Reason::Duplicate, r.to_string())),
        Err(r @ Refusal::Expired) => Err(dead(Reason::Expired, r.to_string())),
        Err(r @ Refusal::BadTime(_)) => Err(dead(Reason::BadEventTime, r.to_string())),
        Err(r @ Refusal::PriceAboveBid { .. }) => Err(dead(Reason::PriceAboveBid, r.to_string())),
    }
}

/// A charge's outcome: charged, or refused as a dead letter.
type Outcome = Result<Box<Charged>, Box<DeadLetter>>;

/// What the ledger emits on its one timely output (split by [`ledger`] into [`LedgerStreams`]):
/// a change to its state, or a charge's outcome.
type Emitted = Result<LedgerState, Outcome>;

/// The ledger's outputs.
pub struct LedgerStreams<'scope> {
    /// Changes to the replicated state: campaigns, spend, settled wins.
    pub state: StreamVec<'scope, u64, LedgerState>,
    /// Billing events charged (or replayed from the position they were charged from): what the
    /// spend reports count.
    pub charged: StreamVec<'scope, u64, Box<Charged>>,
    /// Charges refused, as dead letters.
    pub refused: StreamVec<'scope, u64, DeadLetter>,
}

/// What judging a run of charges gives, in the order it is given: each charge's `Charged` or
/// refusal, then the last spend of every (campaign, day) they moved, then the wins settled
/// per campaign (after the spend they changed), both in campaign order. A batch of charges is
/// judged into one; a charge that waited for its campaign, into one of its own.
#[derive(Default)]
struct Judged {
    records: Vec<Emitted>,
    /// What the charges did to each campaign (found by `&str`: a batch's campaigns are copied
    /// once each, not once per charge; ordered when the outputs are given).
    campaigns: StrMap<Moved>,
}

/// What a run of charges did to one campaign.
#[derive(Default)]
struct Moved {
    /// The last totals of each day they moved (one day, or two around midnight).
    spend: Vec<(NaiveDate, DayTotals)>,
    /// The wins judged, charged or not.
    wins: Vec<WinKey>,
    /// For the conversions charged: time from win to conversion, ms.
    delays: Vec<i64>,
}

impl Judged {
    /// Settles `charge` against `catalog` (refused if its campaign is unknown) and records what
    /// it gives; its win is settled whatever the outcome.
    fn judge(
        &mut self,
        ledger: &mut Ledger,
        catalog: &Catalog,
        charge: &Charge,
        stats: &BillingStats,
    ) {
        let claims = &charge.claims;
        let campaign = claims.campaign_id.as_str();
        let moved = by_str_or_insert_with(&mut self.campaigns, campaign, Moved::default);
        match settle(ledger, catalog, charge, stats) {
            Ok((spend, charged)) => {
                if let Some((day, totals)) = spend {
                    match moved.spend.iter_mut().find(|(d, _)| *d == day) {
                        Some((_, last)) => *last = totals,
                        None => moved.spend.push((day, totals)),
                    }
                    if charge.kind == EventKind::Conversion {
                        moved
                            .delays
                            .push(charge.ts.millis() - claims.issued.millis());
                    }
                }
                self.records.push(Err(Ok(Box::new(charged))));
            }
            Err(dead) => self.records.push(Err(Err(Box::new(dead)))),
        }
        moved.wins.push(win_key(&claims.request_id, &claims.imp_id));
    }

    /// The outputs, in order.
    fn into_outputs(self) -> impl Iterator<Item = Emitted> {
        let mut campaigns: Vec<(String, Moved)> = self.campaigns.into_iter().collect();
        campaigns.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut spend = Vec::new();
        let mut settled = Vec::with_capacity(campaigns.len());
        for (campaign_id, mut moved) in campaigns {
            let campaign_id: std::sync::Arc<str> = campaign_id.into();
            moved.spend.sort_unstable_by_key(|(day, _)| *day);
            spend.extend(moved.spend.into_iter().map(|(day, totals)| {
                Ok(LedgerState::Spend(DaySpend {
                    campaign_id: campaign_id.clone(),
                    day,
                    spend_micros: totals.billed,
                    overdelivery_micros: totals.over,
                }))
            }));
            settled.push(Ok(LedgerState::Settled {
                campaign_id,
                wins: moved.wins,
                conversion_delays_ms: moved.delays,
            }));
        }
        self.records.into_iter().chain(spend).chain(settled)
    }
}

/// Builds the ledger operator.
pub fn ledger<'scope>(
    campaigns: StreamVec<'scope, u64, CatalogUpdate>,
    charges: StreamVec<'scope, u64, Charge>,
    config: LedgerConfig,
    store: Arc<dyn StateStore>,
) -> LedgerStreams<'scope> {
    let (state, outcomes): (
        StreamVec<'scope, u64, LedgerState>,
        StreamVec<'scope, u64, Outcome>,
    ) = ledger_operator(campaigns, charges, config, store).ok_err(|e| e);
    let (charged, refused) = outcomes.ok_err(|o| o.map_err(|d| *d));
    LedgerStreams {
        state,
        charged,
        refused,
    }
}

fn ledger_operator<'scope>(
    campaigns: StreamVec<'scope, u64, CatalogUpdate>,
    charges: StreamVec<'scope, u64, Charge>,
    config: LedgerConfig,
    store: Arc<dyn StateStore>,
) -> StreamVec<'scope, u64, Emitted> {
    let scope = campaigns.scope();
    let (index, peers) = (scope.index(), scope.peers());
    campaigns.binary_frontier(
        charges,
        Exchange::new(|u: &CatalogUpdate| route(&u.campaign_id)),
        Exchange::new(|c: &Charge| route(&c.claims.campaign_id)),
        "Ledger",
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut ledger = restore(&*store, config.horizons, index, peers)
                .unwrap_or_else(|e| panic!("restoring the ledger of worker {index}: {e}"));
            let mut restored: Vec<DaySpend> = ledger.all_spend().collect();
            let mut gate = CheckpointGate::new(capability, config.checkpoint_interval, activator);
            let mut catalog = Catalog::default();
            let histories = restore_histories(&*store, index, peers).unwrap_or_else(|e| {
                panic!("restoring the campaign histories of worker {index}: {e}")
            });
            for (campaign, history) in histories {
                catalog.restore_history(campaign, history);
            }
            let mut dirty_histories: std::collections::BTreeSet<String> = Default::default();
            let mut waiting: Vec<(Capability<u64>, Charge)> = Vec::new();
            move |(campaigns_in, campaigns_frontier), (charges_in, charges_frontier), output| {
                if !restored.is_empty() {
                    if let Some(cap) = gate.capability().cloned() {
                        output
                            .session(&cap)
                            .give_iterator(restored.drain(..).map(|s| Ok(LedgerState::Spend(s))));
                    }
                }
                campaigns_in.for_each(|cap, data| {
                    let at = cap.least().map_or(EventTime(0), |t| {
                        EventTime(i64::try_from(*t).unwrap_or(i64::MAX))
                    });
                    let mut session = output.session(&cap);
                    for mut update in data.drain(..) {
                        let before = catalog.history(&update.campaign_id).cloned();
                        if catalog.apply(&update, at) {
                            let listed = catalog.get(&update.campaign_id);
                            update.history = listed.map(|l| l.history.clone());
                            if update.history.is_some() && update.history != before {
                                dirty_histories.insert(update.campaign_id.clone());
                            }
                            session.give(Ok(LedgerState::Campaign(update)));
                        }
                    }
                });
                charges_in.for_each(|cap, data| {
                    // Spend updates are coalesced per batch: the last value of each (campaign, day).
                    let mut judged = Judged::default();
                    for charge in data.drain(..) {
                        if catalog.get(&charge.claims.campaign_id).is_none() {
                            if let Some(held) = cap.retain_least(0) {
                                waiting.push((held, charge));
                            }
                            continue;
                        }
                        judged.judge(&mut ledger, &catalog, &charge, &config.stats);
                    }
                    output.session(&cap).give_iterator(judged.into_outputs());
                });
                // Charges of unknown campaigns: judged once the catalog is complete to their time.
                if !waiting.is_empty() {
                    let mut still = Vec::new();
                    for (cap, charge) in waiting.drain(..) {
                        if campaigns_frontier.less_equal(cap.time()) {
                            still.push((cap, charge));
                            continue;
                        }
                        let mut judged = Judged::default();
                        judged.judge(&mut ledger, &catalog, &charge, &config.stats);
                        output.session(&cap).give_iterator(judged.into_outputs());
                    }
                    waiting = still;
                }
                // Checkpoint what has been applied once both inputs passed the next boundary;
                // waiting charges are not applied yet, so they hold the checkpoint back.
                let frontier = [
                    campaigns_frontier.frontier().first().copied(),
                    charges_frontier.frontier().first().copied(),
                    waiting.iter().map(|(c, _)| *c.time()).min(),
                ]
                .into_iter()
                .flatten()
                .min();
                gate.step(frontier, &*store, |at| {
                    // The final checkpoint (inputs complete) closes no windows: a restart may replay.
                    if at != u64::MAX {
                        ledger.advance(at.min(i64::MAX as u64) as i64);
                    }
                    let histories = std::mem::take(&mut dirty_histories)
                        .into_iter()
                        .filter_map(|c| catalog.history(&c).cloned().map(|h| (c, h)))
                        .collect();
                    encode(ledger.take_changes(), histories, index)
                });
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::testing::{put, BrokenStore};
    use crate::checkpoint::MemoryStore;
    use crate::records::Origin;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()
    }

    const IDS: [&str; 6] = ["c1", "50%", "a/b c", "été 广告", "x\u{0}y", "%00"];

    fn written() -> MemoryStore {
        let store = MemoryStore::default();
        let changes = LedgerChanges {
            spend: IDS
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let totals = DayTotals {
                        billed: 10 * (i as u64 + 1),
                        over: i as u64,
                    };
                    (c.to_string(), day(), Some(totals))
                })
                .collect(),
            added: vec![(
                7,
                DedupEntry {
                    expires: 99,
                    origin: Origin::default(),
                    shard: route("c1"),
                    amounts: None,
                },
            )],
            dropped: vec![],
            closed_before: 5,
        };
        let history = crate::records::History::default();
        store.persist(encode(changes, vec![("50%".into(), history)], 0));
        store
    }

    #[test]
    fn every_id_keeps_its_spend_across_a_restore_on_any_number_of_workers() {
        let store = written();
        for peers in [1, 3] {
            let mut all: Vec<DaySpend> = (0..peers)
                .flat_map(|i| {
                    restore(&store, Horizons::default(), i, peers)
                        .unwrap()
                        .all_spend()
                        .collect::<Vec<_>>()
                })
                .collect();
            all.sort_by_key(|s| s.spend_micros);
            let got: Vec<(&str, u64, u64)> = all
                .iter()
                .map(|s| (&*s.campaign_id, s.spend_micros, s.overdelivery_micros))
                .collect();
            let want: Vec<(&str, u64, u64)> = IDS
                .iter()
                .enumerate()
                .map(|(i, c)| (*c, 10 * (i as u64 + 1), i as u64))
                .collect();
            assert_eq!(got, want, "{peers} worker(s)");
            let histories: usize = (0..peers)
                .map(|i| restore_histories(&store, i, peers).unwrap().len())
                .sum();
            assert_eq!(histories, 1);
        }
    }

    #[test]
    fn an_unreadable_entry_stops_the_restore_naming_its_key() {
        let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
            (spend_key("c9", day()), b"lots".to_vec(), "ledger/spend/"),
            (
                format!("ledger/spend/{:016x}/c9", route("c9")).into_bytes(),
                b"1".to_vec(),
                "component",
            ),
            (
                format!("ledger/spend/{:016x}/c9\0someday", route("c9")).into_bytes(),
                b"1".to_vec(),
                "someday",
            ),
            (
                format!("ledger/spend/{:016x}/50%\0{}", route("50%"), day()).into_bytes(),
                b"1".to_vec(),
                "escaped form",
            ),
            (
                b"ledger/spend/nohash".to_vec(),
                b"1".to_vec(),
                "routing hash",
            ),
            (dedup_key_bytes(0, 3), b"{".to_vec(), "ledger/dedup/"),
            (b"ledger/closed/1".to_vec(), b"yesterday".to_vec(), "closed"),
        ];
        for (key, value, says) in cases {
            let store = written();
            put(&store, vec![(key.clone(), value)]);
            // Worker 0 of 1 owns every entry.
            let e = restore(&store, Horizons::default(), 0, 1).unwrap_err();
            let message = e.to_string();
            assert!(
                message.contains(&crate::routing::show_key(&key)),
                "{message}"
            );
            assert!(message.contains(says), "{message}");
        }
        // An entry of another worker is not this worker's to read.
        let store = written();
        let other = (0..)
            .map(|i| format!("c{i}"))
            .find(|c| !owns(route(c), 0, 2))
            .unwrap();
        put(&store, vec![(spend_key(&other, day()), b"lots".to_vec())]);
        assert!(restore(&store, Horizons::default(), 0, 2).is_ok());
        assert!(restore(&store, Horizons::default(), 1, 2).is_err());
    }

    fn charge(campaign: &str, request_id: &str, kind: EventKind, offset: i64) -> Charge {
        // Noon UTC, 2026-03-01.
        let ts = 1_772_366_400_000;
        Charge {
            claims: std::sync::Arc::new(crate::token::WinClaims {
                request_id: request_id.into(),
                imp_id: "1".into(),
                campaign_id: campaign.into(),
                advertiser_id: "a1".into(),
                ad_id: "ad".into(),
                billing: crate::events::Billing::Cpm,
                charge_micros: 1_000,
                issued: EventTime(ts - 10),
                country: None,
                device: None,
            }),
            kind,
            ts: EventTime(ts),
            conversion_id: None,
            origin: Origin {
                stream: 1,
                partition: 0,
                offset,
            },
            key: None,
            payload: Vec::new(),
        }
    }

    fn catalog() -> Catalog {
        let json = r#"{"campaign_id":"c1","advertiser_id":"a1","daily_budget_micros":1000000,"timezone":"UTC","billing":"cpm","bid_micros":2000000,"creatives":[{"ad_id":"ad"}]}"#;
        let c = crate::events::Campaign::parse(json.as_bytes()).unwrap();
        let mut catalog = Catalog::default();
        catalog.apply(
            &CatalogUpdate::new("c1".into(), Some(Box::new(c))),
            EventTime(0),
        );
        catalog
    }

    fn kinds(outputs: &[Emitted]) -> Vec<&'static str> {
        outputs
            .iter()
            .map(|o| match o {
                Err(Ok(_)) => "charged",
                Err(Err(_)) => "dead",
                Ok(LedgerState::Spend(_)) => "spend",
                Ok(LedgerState::Settled { .. }) => "settled",
                Ok(LedgerState::Campaign(_)) => "other",
            })
            .collect()
    }

    #[test]
    fn a_batch_gives_records_then_its_last_spend_then_its_settled_wins() {
        let mut ledger = Ledger::new(Horizons::default());
        let stats = BillingStats::default();
        let catalog = catalog();
        let mut judged = Judged::default();
        for (i, (campaign, request_id)) in
            [("c1", "r1"), ("c1", "r2"), ("c1", "r1"), ("ghost", "r3")]
                .into_iter()
                .enumerate()
        {
            let c = charge(campaign, request_id, EventKind::Impression, i as i64);
            judged.judge(&mut ledger, &catalog, &c, &stats);
        }
        let outputs: Vec<Emitted> = judged.into_outputs().collect();
        assert_eq!(
            kinds(&outputs),
            vec!["charged", "charged", "dead", "dead", "spend", "settled", "settled"]
        );
        let Ok(LedgerState::Spend(spend)) = &outputs[4] else {
            unreachable!()
        };
        assert_eq!((&*spend.campaign_id, spend.spend_micros), ("c1", 2_000));
        let settled: Vec<(&str, usize)> = outputs[5..]
            .iter()
            .filter_map(|o| match o {
                Ok(LedgerState::Settled {
                    campaign_id, wins, ..
                }) => Some((&**campaign_id, wins.len())),
                _ => None,
            })
            .collect();
        // Refused or not, every judged win is settled.
        assert_eq!(settled, vec![("c1", 3), ("ghost", 1)]);
    }

    #[test]
    fn a_waiting_charge_is_judged_alone_the_same_way() {
        let mut ledger = Ledger::new(Horizons::default());
        let stats = BillingStats::default();
        let mut judged = Judged::default();
        judged.judge(
            &mut ledger,
            &catalog(),
            &charge("c1", "r1", EventKind::Impression, 0),
            &stats,
        );
        let outputs: Vec<Emitted> = judged.into_outputs().collect();
        assert_eq!(kinds(&outputs), vec!["charged", "spend", "settled"]);
        let mut judged = Judged::default();
        judged.judge(
            &mut ledger,
            &Catalog::default(),
            &charge("c9", "r2", EventKind::Impression, 1),
            &stats,
        );
        let outputs: Vec<Emitted> = judged.into_outputs().collect();
        assert_eq!(kinds(&outputs), vec!["dead", "settled"]);
    }

    #[test]
    fn dedup_keys_keep_their_documented_format() {
        let key = 0x0123_4567_89ab_cdef_0011_2233_4455_6677_u128;
        assert_eq!(
            dedup_key_bytes(7, key),
            format!("ledger/dedup/{:016x}/{key:032x}", 7).into_bytes()
        );
    }

    #[test]
    fn a_store_read_error_stops_the_restore() {
        for broken in ["ledger/spend/", "ledger/dedup/", "ledger/closed/"] {
            let store = BrokenStore {
                broken: broken.as_bytes().to_vec(),
                ..BrokenStore::default()
            };
            let e = restore(&store, Horizons::default(), 0, 1).unwrap_err();
            assert!(matches!(e, RestoreError::Scan(_)), "{e}");
            assert!(e.to_string().contains(broken), "{e}");
        }
    }
}
