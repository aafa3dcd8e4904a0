//! The output fence: a record handed to a sink counts as done only once the sink has settled it
//! (delivered, or failed for good and counted).
//!
//! ```text
//!   records at t ──▶ deliver(send) ──▶ (no data) ──▶ progress probe ──▶ sources
//!                      │ holds a capability at t while t's Receipt
//!                      │ has records in flight
//! ```
//!
//! [`Deliver::deliver`] hands every record to `send` together with the [`Receipt`] of its time;
//! the sink counts the record in ([`Receipt::add`]) and out ([`Receipt::settle`]) from its
//! delivery callback. The operator keeps a capability at each time whose receipt still has
//! records in flight, so a probe placed after it (the sources' `progress` probe) passes a time
//! only once every record up to that time has left the process. Sources persist their offsets
//! behind that probe ([`crate::source`]): after a crash, the input of any record that had not
//! settled is read again, so dead letters and report rows are never lost between a checkpoint
//! and a delivery.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

/// The records of one time that a sink has taken and not settled yet.
#[derive(Clone, Debug, Default)]
pub struct Receipt(Arc<AtomicUsize>);

impl Receipt {
    /// Counts one more record in flight.
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    /// One record delivered, or failed for good (counted and logged by the sink).
    pub fn settle(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Records still in flight.
    pub fn pending(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// How often a fence with records in flight looks at its receipts again.
const RECHECK: Duration = Duration::from_millis(2);

/// Hands records to a sink and holds their times until the sink has settled them.
pub trait Deliver<'scope, D> {
    /// Calls `send(record, receipt)` for each record; the returned stream carries no data, and
    /// its frontier passes a time once every receipt up to it has settled.
    fn deliver<F>(self, name: &str, send: F) -> StreamVec<'scope, u64, ()>
    where
        F: FnMut(D, &Receipt) + 'static;
}

impl<'scope, D: Clone + 'static> Deliver<'scope, D> for StreamVec<'scope, u64, D> {
    fn deliver<F>(self, name: &str, mut send: F) -> StreamVec<'scope, u64, ()>
    where
        F: FnMut(D, &Receipt) + 'static,
    {
        let scope = self.scope();
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            name,
            move |_capability, info| {
                let activator = scope.activator_for(info.address);
                let mut held: BTreeMap<u64, (Capability<u64>, Receipt)> = BTreeMap::new();
                move |(input, _frontier), _output| {
                    input.for_each(|cap, data| {
                        let receipt = match cap.least().copied() {
                            Some(time) => match held.get(&time) {
                                Some((_, r)) => r.clone(),
                                None => match cap.retain_least(0) {
                                    Some(c) => {
                                        let r = Receipt::default();
                                        held.insert(time, (c, r.clone()));
                                        r
                                    }
                                    None => Receipt::default(),
                                },
                            },
                            // Sent under no capability: nothing to hold.
                            None => Receipt::default(),
                        };
                        for record in data.drain(..) {
                            send(record, &receipt);
                        }
                    });
                    held.retain(|_, (_, r)| r.pending() > 0);
                    if !held.is_empty() {
                        activator.activate_after(RECHECK);
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use timely::dataflow::operators::{Input, Probe};
    use timely::dataflow::ProbeHandle;

    /// The probe behind the fence passes a time only once its records have settled, whatever
    /// the order in which they settle.
    #[test]
    fn holds_each_time_until_its_records_settle() {
        timely::execute_directly(|worker| {
            let probe = ProbeHandle::new();
            let taken: Rc<RefCell<Vec<(u32, Receipt)>>> = Rc::default();
            let sink = taken.clone();
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<u32>>();
                stream
                    .deliver("Fence", move |record, receipt| {
                        receipt.add();
                        sink.borrow_mut().push((record, receipt.clone()));
                    })
                    .probe_with(&probe);
                input
            });
            input.send(1);
            input.send(2);
            input.advance_to(10);
            input.send(3);
            input.advance_to(20);
            for _ in 0..50 {
                worker.step();
            }
            assert_eq!(taken.borrow().len(), 3);
            assert!(probe.less_equal(&0), "nothing settled: time 0 is held");
            // The later time settles first: the fence still holds time 0.
            taken.borrow()[2].1.settle();
            for _ in 0..50 {
                worker.step();
            }
            assert!(probe.less_equal(&0));
            taken.borrow()[0].1.settle();
            for _ in 0..50 {
                worker.step();
            }
            assert!(
                probe.less_equal(&0),
                "one record of time 0 is still in flight"
            );
            taken.borrow()[1].1.settle();
            while probe.less_than(&20) {
                worker.step();
            }
            assert!(!probe.less_equal(&10));
        });
    }

    #[test]
    fn a_receipt_never_goes_below_zero() {
        let r = Receipt::default();
        r.settle();
        assert_eq!(r.pending(), 0);
        r.add();
        r.add();
        r.settle();
        assert_eq!(r.pending(), 1);
    }
}
