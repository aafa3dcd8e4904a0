//! The training shell in the graph: labelled examples go to the trainer (on worker 0), and the
//! versions it publishes come back into the graph, to be broadcast to every serving replica.

use std::sync::mpsc::TrySendError;
use std::time::Duration;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use super::link::{count_drop, TrainerLink};
use super::scoring::PublishedModel;
use crate::checkpoint::follow_frontier;
use crate::records::LabeledExample;

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
