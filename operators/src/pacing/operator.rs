//! The pacing operator: one [`CampaignPacer`](super::pacer::CampaignPacer) per campaign, on the worker that owns the campaign
//! (the same worker as its ledger shard).
//!
//! Inputs: the ledger's output (campaign definitions, spend per day, settled wins) and serving's
//! feedback (reservations per win, reachable requests), both exchanged by campaign. Every
//! `interval` of wall-clock time it runs each campaign's controller, spread over the interval
//! and a few hundred per activation (serving shares the worker); every `publish_ms` it sends
//! the state of the campaigns that changed (reservations, spend, a material throttle move),
//! which the runtime broadcasts to every serving replica. Profiles, controllers and plans are
//! written to the state store at the ledger's checkpoint boundaries when they moved materially
//! (else every few steps) and restored at start; reservations are not (they live for the
//! reservation TTL only).
//!
//! What it keeps is a [`PacingShard`]; this file only moves data between it and the graph.

use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use super::shard::{PacingShard, PACERS_PER_CHECKPOINT};
use super::{PacingConfig, PacingFeedback, PacingUpdate};
use crate::checkpoint::{CheckpointGate, StateStore};
use crate::records::LedgerState;
use crate::routing::route;
use crate::source::Clock;

pub use super::shard::{restore, restore_delays, terms_of};

/// Builds the pacing operator.
pub fn pacing<'scope>(
    ledger: StreamVec<'scope, u64, LedgerState>,
    feedback: StreamVec<'scope, u64, PacingFeedback>,
    config: PacingConfig,
    checkpoint_interval: u64,
    store: Arc<dyn StateStore>,
    clock: Clock,
) -> StreamVec<'scope, u64, PacingUpdate> {
    let scope = ledger.scope();
    let (index, peers) = (scope.index(), scope.peers());
    ledger.binary_frontier(
        feedback,
        Exchange::new(|r: &LedgerState| route(r.campaign_id())),
        Exchange::new(|f: &PacingFeedback| route(f.campaign_id())),
        "Pacing",
        move |capability, info| {
            let wake = scope.activator_for(info.address.clone());
            let mut gate = CheckpointGate::new(
                capability,
                checkpoint_interval,
                scope.activator_for(info.address),
            );
            let publish = Duration::from_millis(config.publish_ms.max(1) as u64);
            let mut shard = PacingShard::from_store(&*store, config, index, peers)
                .unwrap_or_else(|e| panic!("restoring pacing of worker {index}: {e}"));
            move |(ledger_in, ledger_frontier), (feedback_in, _), output| {
                let now = clock();
                ledger_in.for_each(|_cap, data| {
                    for rec in data.drain(..) {
                        shard.apply(rec);
                    }
                });
                feedback_in.for_each(|_cap, data| {
                    for f in data.drain(..) {
                        shard.apply_feedback(f);
                    }
                });
                // Controller steps left due run in the next activation, after what else waits.
                let more = shard.tick(now);
                let updates = shard.take_changes();
                if let Some(cap) = gate.capability() {
                    if !updates.is_empty() {
                        output.session(cap).give_iterator(updates.into_iter());
                    }
                }
                gate.step(ledger_frontier.frontier().first().copied(), &*store, |at| {
                    if at == u64::MAX {
                        shard.take_checkpoint()
                    } else {
                        shard.take_checkpoint_at_most(PACERS_PER_CHECKPOINT)
                    }
                });
                if !gate.is_closed() {
                    if more {
                        wake.activate();
                    } else {
                        wake.activate_after(publish);
                    }
                }
            }
        },
    )
}
