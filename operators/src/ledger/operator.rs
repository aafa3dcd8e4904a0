//! The ledger operator: campaigns and charges in, spend updates and refusals out.
//!
//! Both inputs are exchanged by campaign, so each worker holds the catalog entries and ledger
//! shard of the same campaigns. A charge for a campaign the catalog does not know yet waits until
//! the campaigns input's frontier has passed its time (the catalog is then complete up to it);
//! only then is it refused as `unknown_campaign`. State is checkpointed through a
//! [`CheckpointGate`].

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::catalog::{Catalog, CatalogUpdate, History};
use crate::checkpoint::{CheckpointGate, StateBatch, StateStore};
use crate::events::EventKind;
use crate::ingest::{DeadLetter, Reason};
use crate::ledger::{
    Charge, Charged, DaySpend, DayTotals, DedupEntry, Horizons, Ledger, LedgerChanges, Refusal,
    Terms,
};
use crate::pacing::reservation::WinKey;
use crate::routing::{owns, route, split_hash_prefix};
use crate::time::EventTime;

/// What the ledger operator emits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LedgerOutput {
    /// A campaign's spend on a day changed (or was restored).
    Spend(DaySpend),
    /// A campaign was defined, changed or deleted.
    Campaign(CatalogUpdate),
    /// A charge was refused.
    Dead(Box<DeadLetter>),
    /// Impressions, clicks and attributed conversions per campaign since the last report
    /// (what serving's prior ranker learns from).
    Activity(Vec<CampaignActivity>),
    /// A billing event charged (or, replayed from the very position it was charged from, charged
    /// before): the spend reports count. Not part of the ledger's replicated state.
    Charged(Box<Charged>),
    /// Wins of a campaign whose billing events the ledger has just judged (charged, replayed or
    /// refused): their reservations are released. Given after the spend they changed.
    Settled {
        /// Campaign.
        campaign_id: String,
        /// (`request_id`, `imp_id`) of each win.
        wins: Vec<WinKey>,
        /// For the conversions charged among them: time from win to conversion, ms.
        conversion_delays_ms: Vec<i64>,
    },
}

/// Outcome counts of one campaign over a batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignActivity {
    /// Campaign.
    pub campaign_id: String,
    /// Verified impressions.
    pub impressions: u64,
    /// Verified clicks.
    pub clicks: u64,
    /// Conversions attributed and charged (CPA).
    pub conversions: u64,
}

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
    format!("ledger/spend/{:016x}/{campaign}\u{0}{day}", route(campaign)).into_bytes()
}

fn dedup_key_bytes(shard: u64, key: u128) -> Vec<u8> {
    format!("ledger/dedup/{shard:016x}/{key:032x}").into_bytes()
}

fn history_key(campaign: &str) -> Vec<u8> {
    format!("ledger/campaign/{:016x}/{campaign}", route(campaign)).into_bytes()
}

/// A day's totals as stored: `billed` alone (as written before budgets were capped), or
/// `billed,overdelivered`.
fn encode_totals(t: DayTotals) -> Vec<u8> {
    if t.over == 0 {
        t.billed.to_string().into_bytes()
    } else {
        format!("{},{}", t.billed, t.over).into_bytes()
    }
}

fn decode_totals(v: &[u8]) -> Option<DayTotals> {
    let text = std::str::from_utf8(v).ok()?;
    let (billed, over) = text.split_once(',').unwrap_or((text, "0"));
    Some(DayTotals {
        billed: billed.parse().ok()?,
        over: over.parse().ok()?,
    })
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
            Some(s) => batch.puts.push((spend_key(&c, day), encode_totals(s))),
            None => batch.deletes.push(spend_key(&c, day)),
        }
    }
    for (c, history) in histories {
        if let Ok(v) = serde_json::to_vec(&history) {
            batch.puts.push((history_key(&c), v));
        }
    }
    for (k, entry) in changes.added {
        if let Ok(v) = serde_json::to_vec(&entry) {
            batch.puts.push((dedup_key_bytes(entry.shard, k), v));
        }
    }
    for (k, entry) in changes.dropped {
        batch.deletes.push(dedup_key_bytes(entry.shard, k));
    }
    batch.puts.push((
        format!("ledger/closed/{worker}").into_bytes(),
        changes.closed_before.to_string().into_bytes(),
    ));
    batch
}

/// Rebuilds worker `index` of `peers`'s shard from the store.
pub fn restore(store: &dyn StateStore, horizons: Horizons, index: usize, peers: usize) -> Ledger {
    let mut spend = Vec::new();
    for (k, v) in store.scan(b"ledger/spend/") {
        let key = String::from_utf8_lossy(&k).into_owned();
        let Some((hash, tail)) = split_hash_prefix(&key["ledger/spend/".len()..]) else {
            continue;
        };
        let Some((campaign, day)) = tail.split_once('\u{0}') else {
            continue;
        };
        if let (true, Ok(day), Some(totals)) =
            (owns(hash, index, peers), day.parse(), decode_totals(&v))
        {
            spend.push(DaySpend {
                campaign_id: campaign.to_string(),
                day,
                spend_micros: totals.billed,
                overdelivery_micros: totals.over,
            });
        }
    }
    let mut dedup = Vec::new();
    for (k, v) in store.scan(b"ledger/dedup/") {
        let key = String::from_utf8_lossy(&k).into_owned();
        let Some((hash, tail)) = split_hash_prefix(&key["ledger/dedup/".len()..]) else {
            continue;
        };
        let parsed = (
            u128::from_str_radix(tail, 16),
            serde_json::from_slice::<DedupEntry>(&v),
        );
        if let (true, Ok(dk), Ok(entry)) = (owns(hash, index, peers), parsed.0, parsed.1) {
            dedup.push((dk, entry));
        }
    }
    let closed_before = store
        .scan(b"ledger/closed/")
        .iter()
        .filter_map(|(_, v)| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
        .min()
        .unwrap_or(i64::MIN);
    Ledger::restore(horizons, spend, dedup, closed_before)
}

/// The checkpointed histories (zone changes, bids) of worker `index` of `peers`'s campaigns.
pub fn restore_histories(
    store: &dyn StateStore,
    index: usize,
    peers: usize,
) -> Vec<(String, History)> {
    let mut out = Vec::new();
    for (k, v) in store.scan(b"ledger/campaign/") {
        let key = String::from_utf8_lossy(&k).into_owned();
        let Some((hash, campaign)) = split_hash_prefix(&key["ledger/campaign/".len()..]) else {
            continue;
        };
        if let (true, Ok(history)) = (
            owns(hash, index, peers),
            serde_json::from_slice::<History>(&v),
        ) {
            out.push((campaign.to_string(), history));
        }
    }
    out
}

/// Applies `charge` against `catalog`: the spend it moved (`None` for a replay) and the charge
/// itself (reports count it, replays included), or the refusal.
fn settle(
    ledger: &mut Ledger,
    catalog: &Catalog,
    charge: &Charge,
    stats: &BillingStats,
) -> Result<(Option<DaySpend>, Charged), DeadLetter> {
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
                Some(DaySpend {
                    campaign_id: charge.claims.campaign_id.clone(),
                    day: applied.day,
                    spend_micros: applied.spend_micros,
                    overdelivery_micros: applied.overdelivery_micros,
                }),
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

/// Builds the ledger operator.
pub fn ledger<'scope>(
    campaigns: StreamVec<'scope, u64, CatalogUpdate>,
    charges: StreamVec<'scope, u64, Charge>,
    config: LedgerConfig,
    store: Arc<dyn StateStore>,
) -> StreamVec<'scope, u64, LedgerOutput> {
    let scope = campaigns.scope();
    let (index, peers) = (scope.index(), scope.peers());
    campaigns.binary_frontier(
        charges,
        Exchange::new(|u: &CatalogUpdate| route(&u.campaign_id)),
        Exchange::new(|c: &Charge| route(&c.claims.campaign_id)),
        "Ledger",
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut ledger = restore(&*store, config.horizons, index, peers);
            let mut restored: Vec<DaySpend> = ledger.all_spend().collect();
            let mut gate = CheckpointGate::new(capability, config.checkpoint_interval, activator);
            let mut catalog = Catalog::default();
            for (campaign, history) in restore_histories(&*store, index, peers) {
                catalog.restore_history(campaign, history);
            }
            let mut dirty_histories: std::collections::BTreeSet<String> = Default::default();
            let mut waiting: Vec<(Capability<u64>, Charge)> = Vec::new();
            move |(campaigns_in, campaigns_frontier), (charges_in, charges_frontier), output| {
                if !restored.is_empty() {
                    if let Some(cap) = gate.capability().cloned() {
                        output
                            .session(&cap)
                            .give_iterator(restored.drain(..).map(LedgerOutput::Spend));
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
                            session.give(LedgerOutput::Campaign(update));
                        }
                    }
                });
                charges_in.for_each(|cap, data| {
                    // Coalesce spend updates per batch: the last value of each (campaign, day).
                    let mut touched: BTreeMap<(String, NaiveDate), DayTotals> = BTreeMap::new();
                    let mut settled: BTreeMap<String, (Vec<WinKey>, Vec<i64>)> = BTreeMap::new();
                    let mut session = output.session(&cap);
                    for charge in data.drain(..) {
                        if catalog.get(&charge.claims.campaign_id).is_none() {
                            if let Some(held) = cap.retain_least(0) {
                                waiting.push((held, charge));
                            }
                            continue;
                        }
                        let claims = &charge.claims;
                        let entry = settled.entry(claims.campaign_id.clone()).or_default();
                        match settle(&mut ledger, &catalog, &charge, &config.stats) {
                            Ok((spend, charged)) => {
                                if let Some(s) = spend {
                                    touched.insert(
                                        (s.campaign_id, s.day),
                                        DayTotals {
                                            billed: s.spend_micros,
                                            over: s.overdelivery_micros,
                                        },
                                    );
                                    if charge.kind == EventKind::Conversion {
                                        entry.1.push(charge.ts.millis() - claims.issued.millis());
                                    }
                                }
                                session.give(LedgerOutput::Charged(Box::new(charged)));
                            }
                            Err(dead) => session.give(LedgerOutput::Dead(Box::new(dead))),
                        }
                        entry
                            .0
                            .push((claims.request_id.clone(), claims.imp_id.clone()));
                    }
                    session.give_iterator(touched.into_iter().map(
                        |((campaign_id, day), spend_micros)| {
                            LedgerOutput::Spend(DaySpend {
                                campaign_id,
                                day,
                                spend_micros: spend_micros.billed,
                                overdelivery_micros: spend_micros.over,
                            })
                        },
                    ));
                    session.give_iterator(settled.into_iter().map(
                        |(campaign_id, (wins, conversion_delays_ms))| LedgerOutput::Settled {
                            campaign_id,
                            wins,
                            conversion_delays_ms,
                        },
                    ));
                });
                // Charges of unknown campaigns: judged once the catalog is complete to their time.
                if !waiting.is_empty() {
                    let mut still = Vec::new();
                    for (cap, charge) in waiting.drain(..) {
                        if campaigns_frontier.less_equal(cap.time()) {
                            still.push((cap, charge));
                            continue;
                        }
                        let mut conversion_delays_ms = Vec::new();
                        let out = match settle(&mut ledger, &catalog, &charge, &config.stats) {
                            Ok((spend, charged)) => {
                                if spend.is_some() && charge.kind == EventKind::Conversion {
                                    conversion_delays_ms
                                        .push(charge.ts.millis() - charge.claims.issued.millis());
                                }
                                let charged = LedgerOutput::Charged(Box::new(charged));
                                spend
                                    .map(LedgerOutput::Spend)
                                    .into_iter()
                                    .chain([charged])
                                    .collect()
                            }
                            Err(dead) => vec![LedgerOutput::Dead(Box::new(dead))],
                        };
                        let mut session = output.session(&cap);
                        session.give_iterator(out.into_iter());
                        session.give(LedgerOutput::Settled {
                            campaign_id: charge.claims.campaign_id.clone(),
                            wins: vec![(
                                charge.claims.request_id.clone(),
                                charge.claims.imp_id.clone(),
                            )],
                            conversion_delays_ms,
                        });
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
