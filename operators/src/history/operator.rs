//! The user-history operator: verified impressions and clicks keyed by user in, each changed
//! user's [`UserHistory`](crate::records::UserHistory) out (for the serving replicas).
//!
//! Users are owned by the worker of their hash, like attribution's. Their states are written at
//! the checkpoint boundaries through a [`CheckpointGate`], so they move with the input offsets
//! (a replayed event after a crash is recorded once), and restored at start, when every restored
//! user is published again so that the replicas, which start empty, learn them. Changed users go
//! to the replicas every [`PUBLISH`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use super::{Histories, HistoryConfig};
use crate::checkpoint::{codec, CheckpointGate, RestoreError, StateBatch, StateStore};
use crate::records::{HistoryUpdate, UserHistory, UserTouch};
use crate::routing::{route, USER_HISTORY};

/// How often changed users are sent to the serving replicas: a feature's freshness, and the
/// coalescing of a user's events in between.
pub const PUBLISH: Duration = Duration::from_millis(200);

fn state_key(user: &str) -> Vec<u8> {
    USER_HISTORY.key(route(user), &[user])
}

/// Rebuilds worker `index` of `peers`'s user histories. Entries of other workers are skipped;
/// an entry that cannot be read, or a store read error, is an error naming the key.
pub fn restore(
    store: &dyn StateStore,
    config: HistoryConfig,
    index: usize,
    peers: usize,
) -> Result<Histories, RestoreError> {
    let mut histories = Histories::new(config);
    USER_HISTORY.restore_owned(store, index, peers, |[user], k, v| {
        histories.restore(user, codec::decode::<UserHistory>(k, v)?);
        Ok(())
    })?;
    Ok(histories)
}

/// Builds the user-history operator.
pub fn user_history<'scope>(
    touches: StreamVec<'scope, u64, UserTouch>,
    config: HistoryConfig,
    checkpoint_interval: u64,
    store: Arc<dyn StateStore>,
) -> StreamVec<'scope, u64, HistoryUpdate> {
    let scope = touches.scope();
    let (index, peers) = (scope.index(), scope.peers());
    touches.unary_frontier(
        Exchange::new(|t: &UserTouch| route(&t.0)),
        "UserHistory",
        move |capability, info| {
            let wake = scope.activator_for(info.address.clone());
            let activator = scope.activator_for(info.address);
            let mut published = Instant::now();
            let mut state = restore(&*store, config, index, peers)
                .unwrap_or_else(|e| panic!("restoring user histories of worker {index}: {e}"));
            let mut gate = CheckpointGate::new(capability, checkpoint_interval, activator);
            let mut scratch = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|_cap, data| {
                    for (user, touch) in data.drain(..) {
                        state.record(&user, &touch);
                    }
                });
                gate.step(frontier.frontier().first().copied(), &*store, |at| {
                    if at != u64::MAX {
                        state.expire(at.min(i64::MAX as u64) as i64);
                    }
                    let mut batch = StateBatch::default();
                    state.drain_changes(|user, history| {
                        let key = state_key(user);
                        match history {
                            Some(h) => {
                                scratch.clear();
                                h.write_checkpoint_value(&mut scratch);
                                // An exact-size copy: the batch is held until it is written.
                                batch.put_encoded(key, scratch.as_slice().to_vec());
                            }
                            None => batch.deletes.push(key),
                        }
                    });
                    batch
                });
                // Changes go out every PUBLISH: a user touched several times in between is
                // sent once.
                if let Some(cap) = gate.capability() {
                    if published.elapsed() >= PUBLISH {
                        published = Instant::now();
                        let updates = state.take_updates();
                        if !updates.is_empty() {
                            output.session(cap).give_iterator(updates.into_iter());
                        }
                    } else if state.has_updates() {
                        wake.activate_after(PUBLISH - published.elapsed());
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::testing::put;
    use crate::checkpoint::MemoryStore;
    use crate::routing::owns;

    #[test]
    fn users_restore_on_their_worker_and_a_bad_entry_stops_the_restore() {
        let store = MemoryStore::default();
        let users = ["u", "u\u{0}v", "50%", "é"];
        let history = UserHistory {
            last: crate::time::EventTime(7),
            ..UserHistory::default()
        };
        put(
            &store,
            users
                .iter()
                .map(|u| (state_key(u), codec::encode(&history).expect("encode")))
                .collect(),
        );
        for peers in [1, 2] {
            let mut found = 0;
            for index in 0..peers {
                let state =
                    restore(&store, HistoryConfig::default(), index, peers).expect("restore");
                for u in users {
                    if owns(route(u), index, peers) {
                        assert_eq!(state.get(u), Some(&history), "{u:?}");
                        found += 1;
                    }
                }
            }
            assert_eq!(found, users.len());
        }
        let store = MemoryStore::default();
        put(&store, vec![(state_key("u"), vec![0, 1, 0xff, 0xff])]);
        let e = restore(&store, HistoryConfig::default(), 0, 1).expect_err("bad value");
        assert!(e.to_string().contains("history/"), "{e}");
    }
}
