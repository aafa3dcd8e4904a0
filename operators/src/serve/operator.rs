//! The serving operator: answers ad requests on a worker from that worker's replica of the
//! catalog and budget state.
//!
//! Requests arrive on a channel from the HTTP API, which wakes the operator through a
//! [`SyncActivator`]; answers go back through each request's reply callback. The replica is the
//! ledger's broadcast output, so every worker sees every campaign's spend and serving never
//! crosses workers. The operator never waits for frontiers or training: it answers what it has.
//! What it keeps and how it answers is a [`ServingReplica`]; this file only moves data.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;
use timely::scheduling::SyncActivator;

use super::replica::{past_deadline, ServingReplica, REACH_FLUSH};
use crate::checkpoint::follow_frontier;
use crate::pacing::board::PacingBoard;
use crate::ranker::scoring::ModelSlot;
use crate::records::ReplicaUpdate;
pub use crate::records::Served;
use crate::request::AdRequest;
use crate::source::ServingActivity;
use crate::time::EventTime;

pub use super::replica::{answer, ServeConfig, ServeOutcome, ServeOutput, SignedWin};

/// A request handed to a serving operator.
pub struct ServeRequest {
    /// The validated request.
    pub request: AdRequest,
    /// When the API received it (the `tmax` deadline counts from here).
    pub received: Instant,
    /// Called once with the answer.
    pub reply: Box<dyn FnOnce(ServeOutcome) + Send>,
}

/// Requests answered per activation before yielding to the rest of the graph.
const BURST: usize = 256;

/// Builds the serving operator over the replicated ledger stream and this worker's pacing
/// `board` (kept current by the runtime from pacing's broadcast); publishes its activator into
/// `activator` so the API can wake it, and notes in `activity` when it answered requests.
pub fn serve<'scope>(
    replica: StreamVec<'scope, u64, ReplicaUpdate>,
    requests: Receiver<ServeRequest>,
    config: ServeConfig,
    activator: Arc<Mutex<Option<SyncActivator>>>,
    activity: ServingActivity,
    board: Rc<RefCell<PacingBoard>>,
    models: Arc<ModelSlot>,
) -> StreamVec<'scope, u64, ServeOutput> {
    let scope = replica.scope();
    let replica_index = scope.index();
    replica.unary_frontier(Pipeline, "Serve", move |capability, info| {
        if let Ok(mut slot) = activator.lock() {
            *slot = Some(scope.worker().sync_activator_for(info.address.to_vec()));
        }
        let mut cap = Some(capability);
        let mut state = ServingReplica::new(replica_index, config, board, models);
        let wake = scope.activator_for(info.address.clone());
        move |(input, frontier), output| {
            input.for_each(|_cap, data| {
                for update in data.drain(..) {
                    state.apply(&update);
                }
            });
            state.tick(EventTime::now().millis());
            // Keep a capability at the replica's frontier, to log served ads with.
            follow_frontier(&mut cap, frontier.frontier().first());
            for round in 0..=BURST {
                if round == BURST {
                    // More are queued: yield to the rest of the graph, then continue.
                    wake.activate();
                    break;
                }
                let Ok(job) = requests.try_recv() else { break };
                let outcome = if past_deadline(&job.request, job.received, Instant::now()) {
                    ServeOutcome {
                        late: true,
                        ..Default::default()
                    }
                } else if let Some(c) = cap.as_ref() {
                    let outcome = state.handle(&job.request, EventTime::now());
                    output
                        .session(c)
                        .give_iterator(state.take_outputs().into_iter());
                    outcome
                } else {
                    // The replica is complete: nothing can be logged, so nothing is reserved.
                    state.answer(&job.request, EventTime::now())
                };
                (job.reply)(outcome);
                if round == 0 {
                    activity.answered(Instant::now());
                }
            }
            if state.reach_due(Instant::now()) {
                if let Some(c) = cap.as_ref() {
                    let reach = state.take_reach(EventTime::now().millis());
                    output.session(c).give_iterator(reach.into_iter());
                }
            }
            if state.has_reach() {
                // Flush the rest even if no request comes.
                wake.activate_after(REACH_FLUSH);
            }
        }
    })
}
