//! The label-join operator: served ads and their outcomes in, labelled examples out.
//!
//! Events are exchanged by `request_id`, so every event of a served ad meets on one worker's
//! [`LabelJoin`]. Examples an event completes are emitted at once, at that event's time; click
//! negatives are emitted when the input frontier passes their deadline, at the time of the
//! gate's capability. Neither waits for a checkpoint. State is written through a
//! [`CheckpointGate`] under [`LABELS`] keys (`labels/{route hash:016x}/{request_id}\0{imp_id}`,
//! ids escaped) and restored at start by the worker that owns each key; once the input is
//! complete nothing is expired, so a restart resumes every open window. Counts per reason are added to a shared [`LabelStats`]
//! after every activation, for the runtime's metrics.

use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use super::{Entry, LabelConfig, LabelEvent, LabelJoin, LabelStats, LabeledExample};
use crate::checkpoint::{codec, CheckpointGate, RestoreError, StateBatch, StateStore};
use crate::routing::{route, LABELS};

fn state_key(request_id: &str, imp_id: &str) -> Vec<u8> {
    LABELS.key(route(request_id), &[request_id, imp_id])
}

/// Rebuilds worker `index` of `peers`'s label-join state. Entries of other workers are skipped;
/// an entry that cannot be read, or a store read error, is an error naming the key.
pub fn restore(
    store: &dyn StateStore,
    config: LabelConfig,
    index: usize,
    peers: usize,
) -> Result<LabelJoin, RestoreError> {
    let mut join = LabelJoin::new(config);
    LABELS.restore_owned(store, index, peers, |[request_id, imp_id], k, v| {
        join.restore(
            (request_id, imp_id),
            codec::decode_migrating::<Entry, super::format_v1::EntryV1>(k, v)?,
        );
        Ok(())
    })?;
    Ok(join)
}

/// Shared counts of one or more label-join operators, for metrics.
pub type LabelStatsHandle = Arc<Mutex<LabelStats>>;

/// Builds the label-join operator; its counts are added to `stats`.
pub fn label_join<'scope>(
    events: StreamVec<'scope, u64, LabelEvent>,
    config: LabelConfig,
    checkpoint_interval: u64,
    store: Arc<dyn StateStore>,
    stats: LabelStatsHandle,
) -> StreamVec<'scope, u64, LabeledExample> {
    let scope = events.scope();
    let (index, peers) = (scope.index(), scope.peers());
    events.unary_frontier(
        Exchange::new(|e: &LabelEvent| route(e.request_id())),
        "LabelJoin",
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut join = restore(&*store, config, index, peers)
                .unwrap_or_else(|e| panic!("restoring the label join of worker {index}: {e}"));
            let mut gate = CheckpointGate::new(capability, checkpoint_interval, activator);
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for event in data.drain(..) {
                        session.give_iterator(join.apply(event).into_iter());
                    }
                });
                let frontier = frontier.frontier().first().copied();
                if let (Some(f), Some(cap)) = (frontier, gate.capability()) {
                    let due = join.advance(f.min(i64::MAX as u64) as i64);
                    if !due.is_empty() {
                        output.session(cap).give_iterator(due.into_iter());
                    }
                }
                let delta = join.take_stats();
                if delta != LabelStats::default() {
                    if let Ok(mut shared) = stats.lock() {
                        shared.merge(&delta);
                    }
                }
                gate.step(frontier, &*store, |_| {
                    let mut batch = StateBatch::default();
                    join.drain_changes(|(request_id, imp_id), entry| {
                        let key = state_key(request_id, imp_id);
                        match entry {
                            Some(entry) => batch.put(key, entry),
                            None => batch.deletes.push(key),
                        }
                    });
                    batch
                });
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemoryStore;
    use crate::labels::tests::served;
    use crate::time::EventTime;
    use timely::dataflow::operators::{Input, Inspect, Probe};
    use timely::dataflow::ProbeHandle;

    fn outcome(rid: &str, ts: i64, click: bool) -> LabelEvent {
        let (request_id, imp_id, ts) = (rid.into(), "1".into(), EventTime(ts));
        if click {
            LabelEvent::Click {
                request_id,
                imp_id,
                ts,
            }
        } else {
            LabelEvent::Impression {
                request_id,
                imp_id,
                ts,
            }
        }
    }

    type Seen = (String, Option<bool>, Option<bool>, i64);

    /// Positives come out with their event; negatives when the frontier passes their deadline;
    /// what is still open at the end is checkpointed and restored by its owner.
    #[test]
    fn joins_on_the_frontier_and_checkpoints_open_windows() {
        let store = Arc::new(MemoryStore::default());
        let stats = LabelStatsHandle::default();
        let config = LabelConfig {
            click_window_ms: 1_000,
            impression_wait_ms: 500,
            ..LabelConfig::default()
        };
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (store2, stats2, seen2) = (store.clone(), stats.clone(), seen.clone());
        timely::execute_directly(move |worker| {
            let probe = ProbeHandle::new();
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<LabelEvent>>();
                label_join(stream, config, 100, store2, stats2)
                    .inspect(move |e: &LabeledExample| {
                        seen2.lock().unwrap().push((
                            e.served.request_id.clone(),
                            e.click,
                            e.conversion,
                            e.label_ms,
                        ))
                    })
                    .probe_with(&probe);
                input
            });
            input.send(LabelEvent::Served(Box::new(served("clicked", 100))));
            input.send(outcome("clicked", 110, false));
            input.send(outcome("clicked", 150, true));
            input.send(LabelEvent::Served(Box::new(served("ignored", 100))));
            input.send(outcome("ignored", 120, false));
            input.advance_to(1_500);
            input.send(LabelEvent::Served(Box::new(served("open", 1_500))));
            input.send(outcome("open", 1_510, false));
            input.advance_to(2_000);
            while probe.less_than(&2_000) {
                worker.step();
            }
        });
        let mut got = seen.lock().unwrap().clone();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("clicked".into(), None, Some(false), 150),
                ("clicked".into(), Some(true), None, 150),
                ("ignored".into(), Some(false), None, 1_120),
            ]
        );
        let totals = stats.lock().unwrap().clone();
        assert_eq!(
            (totals.examples_click_pos, totals.examples_click_neg),
            (1, 1)
        );
        // Input complete: nothing expired, every open window checkpointed.
        let keys: Vec<String> = store
            .snapshot()
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        // The tombstone of `ignored` was forgotten at 1,620.
        assert_eq!(keys.len(), 2, "clicked and open: {keys:?}");
        assert!(keys
            .iter()
            .all(|k| k.starts_with("labels/") && k.ends_with("\u{0}1")));
        let mut owned = 0;
        for worker in 0..3 {
            owned += restore(&*store, config, worker, 3).unwrap().len();
        }
        assert_eq!(owned, 2);
        // The restored join still knows the click, and closes the open window.
        let mut join = restore(&*store, config, 0, 1).unwrap();
        assert!(join.apply(outcome("clicked", 150, true)).is_empty());
        assert_eq!(join.stats().duplicates, 1);
        let due = join.advance(3_000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].served.request_id, "open");
    }

    #[test]
    fn unusual_ids_restore_and_bad_entries_stop_the_restore() {
        let config = LabelConfig::default();
        let mut join = LabelJoin::new(config);
        let rids = ["r", "r\u{0}1", "50%", "a/b é"];
        for rid in rids {
            join.apply(LabelEvent::Served(Box::new(served(rid, 100))));
        }
        let store = MemoryStore::default();
        let puts = join
            .take_changes()
            .into_iter()
            .enumerate()
            // Both formats restore: the binary one, and the JSON of earlier releases.
            .map(|(n, ((r, i), e))| {
                let e = e.unwrap();
                let value = if n % 2 == 0 {
                    codec::encode(&e).unwrap()
                } else {
                    serde_json::to_vec(&e).unwrap()
                };
                (state_key(&r, &i), value)
            })
            .collect();
        crate::checkpoint::testing::put(&store, puts);
        let mut restored = 0;
        for index in 0..2 {
            restored += restore(&store, config, index, 2).unwrap().len();
        }
        assert_eq!(restored, rids.len());
        let restored = restore(&store, config, 0, 1).unwrap();
        assert_eq!(restored.len(), rids.len());
        for (key, value) in [
            (state_key("r", "2"), b"[".to_vec()),
            (
                format!("labels/{:016x}/r\u{0}1\u{0}1", route("r")).into_bytes(),
                b"{}".to_vec(),
            ),
        ] {
            let store = MemoryStore::default();
            crate::checkpoint::testing::put(&store, vec![(key.clone(), value)]);
            let e = restore(&store, config, 0, 1).unwrap_err();
            assert!(
                e.to_string().contains(&crate::routing::show_key(&key)),
                "{e}"
            );
        }
        let broken = crate::checkpoint::testing::BrokenStore {
            broken: b"labels/".to_vec(),
            ..Default::default()
        };
        assert!(matches!(
            restore(&broken, config, 0, 1),
            Err(RestoreError::Scan(_))
        ));
    }
}
