//! The reporting dataflow: [`ReportEvent`]s in, [`ReportRow`]s out.
//!
//! `ReportContributions` (exchanged by event identity, checkpointed) → differential's
//! `count_total` over `(RowKey, Totals)` (exchanged by row) → `ReportPublisher`.

use crate::hash::HashMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::collection::AsCollection;
use differential_dataflow::operators::CountTotal;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, StreamVec};

use super::contributions::{identity_route, Admitted, Contributions, ReportStats};
use super::fact::ReportEvent;
use super::publisher::Publisher;
use super::row::{ReportRow, RowKey};
use super::spec::ReportSpec;
use super::totals::Totals;
use crate::checkpoint::{follow_frontier, CheckpointGate, StateStore};

/// One worker's report counts, drained by the runtime into metrics.
pub type ReportStatsHandle = Arc<Mutex<ReportStats>>;

/// Report rows rendered per activation of the publisher at most: a checkpoint releases the
/// changes of every row of its interval at once (thousands with a large catalog), and the
/// worker's requests wait while they are rendered.
pub const ROWS_PER_ACTIVATION: usize = 512;

/// Builds the reports over `events`; the contributions' checkpoints are behind `progress`.
pub fn reports<'scope>(
    events: StreamVec<'scope, u64, ReportEvent>,
    specs: Arc<[ReportSpec]>,
    checkpoint_interval: u64,
    store: Arc<dyn StateStore>,
    stats: ReportStatsHandle,
    progress: &ProbeHandle<u64>,
) -> StreamVec<'scope, u64, ReportRow> {
    let scope = events.scope();
    let (index, peers) = (scope.index(), scope.peers());
    let contribution_specs = specs.clone();
    let shares: StreamVec<'scope, u64, (RowKey, u64, Totals)> = events.unary_frontier(
        Exchange::new(|e: &ReportEvent| identity_route(e.identity())),
        "ReportContributions",
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let (mut state, mut restored) =
                Contributions::restore(&*store, contribution_specs, index, peers)
                    .unwrap_or_else(|e| panic!("restoring the reports of worker {index}: {e}"));
            // Retractions of final rows go out at the input frontier (after every share of them).
            let mut frontier_cap = Some(capability.clone());
            let mut gate = CheckpointGate::new(capability, checkpoint_interval, activator);
            move |(input, frontier), output| {
                if let Some(cap) = frontier_cap.as_ref() {
                    if !restored.is_empty() {
                        let t = *cap.time();
                        output
                            .session(cap)
                            .give_iterator(restored.drain(..).map(|(k, s)| (k, t, s)));
                    }
                }
                input.for_each(|cap, data| {
                    let Some(time) = cap.least().copied() else {
                        return;
                    };
                    // Events of one batch that share a row leave as one update.
                    let mut batch: HashMap<RowKey, Totals> = HashMap::default();
                    for event in data.drain(..) {
                        if let Admitted::Counted(rows) = state.admit(&event, time) {
                            for (key, share) in rows {
                                batch.entry(key).or_default().add(&share);
                            }
                        }
                    }
                    output
                        .session(&cap)
                        .give_iterator(batch.into_iter().map(|(k, s)| (k, time, s)));
                });
                let f = frontier.frontier().first().copied();
                follow_frontier(&mut frontier_cap, f.as_ref());
                if let (Some(at), Some(cap)) = (f, frontier_cap.as_ref()) {
                    let closed = state.close(at);
                    if !closed.is_empty() {
                        let t = *cap.time();
                        output
                            .session(cap)
                            .give_iterator(closed.into_iter().map(|(k, s)| (k, t, s.negated())));
                    }
                }
                if state.stats != ReportStats::default() {
                    if let Ok(mut shared) = stats.lock() {
                        let mine = std::mem::take(&mut state.stats);
                        shared.counted += mine.counted;
                        shared.duplicate += mine.duplicate;
                        shared.late += mine.late;
                        shared.partly_late += mine.partly_late;
                    }
                }
                gate.step(f, &*store, |_| state.take_changes());
            }
        },
    );
    let rows = shares.probe_with(progress).as_collection().count_total();
    rows.inner
        .unary_frontier(Pipeline, "ReportPublisher", move |capability, info| {
            let mut cap = Some(capability);
            let mut publisher = Publisher::new(specs);
            let activator = scope.activator_for(info.address);
            move |(input, frontier), output| {
                input.for_each(|_cap, data| {
                    for ((key, totals), time, diff) in data.drain(..) {
                        publisher.offer(time, key, totals, diff);
                    }
                });
                let f = frontier.frontier().first().copied();
                let out = publisher.advance_at_most(f, ROWS_PER_ACTIVATION);
                if let (false, Some(c)) = (out.is_empty(), cap.as_ref()) {
                    output.session(c).give_iterator(out.into_iter());
                }
                if publisher.has_due() {
                    // The rest next, after what else waits on this worker (serving first).
                    activator.activate();
                }
                follow_frontier(&mut cap, f.as_ref());
            }
        })
}
