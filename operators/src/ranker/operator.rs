//! The training shell in the graph: labelled examples go to the trainer (on worker 0), and the
//! versions it publishes come back into the graph, to be broadcast to every serving replica.

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use super::scoring::PublishedModel;
use super::trainer::count_drop;
use crate::checkpoint::follow_frontier;
use crate::labels::LabeledExample;

/// Worker 0's link to the trainer thread.
pub struct TrainerLink {
    /// Examples out.
    pub examples: SyncSender<LabeledExample>,
    /// Published versions in.
    pub published: Receiver<PublishedModel>,
    /// Examples dropped because the trainer's queue was full.
    pub dropped: Arc<AtomicU64>,
}

/// How often worker 0 looks for newly published versions.
const POLL: Duration = Duration::from_millis(100);

/// Sends `examples` to the trainer (every example goes to worker 0, which holds `link`; other
/// workers pass `None`) and emits the versions it publishes.
pub fn train<'scope>(
    examples: StreamVec<'scope, u64, LabeledExample>,
    link: Option<TrainerLink>,
) -> StreamVec<'scope, u64, PublishedModel> {
    let scope = examples.scope();
    examples.unary_frontier(
        Exchange::new(|_: &LabeledExample| 0u64),
        "Train",
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut cap = Some(capability);
            move |(input, frontier), output| {
                input.for_each(|_cap, data| {
                    for example in data.drain(..) {
                        if let Some(link) = &link {
                            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                                link.examples.try_send(example)
                            {
                                count_drop(&link.dropped)
                            }
                        }
                    }
                });
                if let Some(link) = &link {
                    if let Some(c) = cap.as_ref() {
                        while let Ok(p) = link.published.try_recv() {
                            output.session(c).give(p);
                        }
                    }
                }
                follow_frontier(&mut cap, frontier.frontier().first());
                if link.is_some() && cap.is_some() {
                    activator.activate_after(POLL);
                } else if link.is_none() {
                    cap = None;
                }
            }
        },
    )
}
