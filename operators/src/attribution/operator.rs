//! The attribution operator: impressions, clicks and conversions keyed by user in, attributed
//! conversions and CPA charges out.
//!
//! Every verified impression and click is recorded as a touch; every conversion waits until the
//! touches input has passed its time (so touches read by other workers are in) and is attributed
//! ([`Attributor::attribute`]). Every attributed conversion, whatever its win's billing type, is
//! emitted as an [`AttributedConversion`] (the label join's conversion outcome); if the touch's
//! win bills per action it also becomes a [`Charge`] carrying that win's token claims. Touches are
//! checkpointed through a [`CheckpointGate`].

use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use super::{Attributor, UserTouches, Windows};
use crate::checkpoint::{codec, CheckpointGate, RestoreError, StateBatch, StateStore};
use crate::events::{Billing, EventKind};
use crate::records::Charge;
pub use crate::records::{Attributed, AttributedConversion, ConversionIn, UserTouch};
use crate::routing::{route, ATTRIBUTION};

fn state_key(user: &str, advertiser: &str) -> Vec<u8> {
    ATTRIBUTION.key(route(user), &[user, advertiser])
}

/// Rebuilds worker `index` of `peers`'s attribution state. Entries of other workers are skipped;
/// an entry that cannot be read, or a store read error, is an error naming the key.
pub fn restore(
    store: &dyn StateStore,
    windows: Windows,
    index: usize,
    peers: usize,
) -> Result<Attributor, RestoreError> {
    let mut attributor = Attributor::new(windows);
    ATTRIBUTION.restore_owned(store, index, peers, |[user, advertiser], k, v| {
        attributor.restore((user, advertiser), codec::decode::<UserTouches>(k, v)?);
        Ok(())
    })?;
    Ok(attributor)
}

/// Builds the attribution operator: every attributed conversion out, and a charge for each CPA one.
pub fn attribute<'scope>(
    touches: StreamVec<'scope, u64, UserTouch>,
    conversions: StreamVec<'scope, u64, ConversionIn>,
    windows: Windows,
    checkpoint_interval: u64,
    store: Arc<dyn StateStore>,
) -> StreamVec<'scope, u64, Attributed> {
    let scope = touches.scope();
    let (index, peers) = (scope.index(), scope.peers());
    touches.binary_frontier(
        conversions,
        Exchange::new(|t: &UserTouch| route(&t.0)),
        Exchange::new(|c: &ConversionIn| route(&c.event.user_id)),
        "Attribute",
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut state = restore(&*store, windows, index, peers)
                .unwrap_or_else(|e| panic!("restoring attribution of worker {index}: {e}"));
            let mut gate = CheckpointGate::new(capability, checkpoint_interval, activator);
            let mut pending: Vec<(timely::dataflow::operators::Capability<u64>, ConversionIn)> =
                Vec::new();
            move |(touches_in, touches_frontier), (conversions_in, conversions_frontier), output| {
                touches_in.for_each(|_cap, data| {
                    for (user, touch) in data.drain(..) {
                        state.record(&user, touch);
                    }
                });
                conversions_in.for_each(|cap, data| {
                    if let Some(held) = cap.retain_least(0) {
                        pending.extend(data.drain(..).map(|c| (held.clone(), c)));
                    }
                });
                // A conversion is attributed once every touch up to its time has been recorded.
                let mut still = Vec::new();
                for (cap, conv) in pending.drain(..) {
                    if touches_frontier.less_equal(cap.time()) {
                        still.push((cap, conv));
                        continue;
                    }
                    let e = &conv.event;
                    let Some(touch) = state.attribute(&e.user_id, &e.advertiser_id, e.ts) else {
                        continue;
                    };
                    let mut session = output.session(&cap);
                    session.give(Attributed::Conversion(super::attributed(&touch, e)));
                    if touch.claims.billing == Billing::Cpa {
                        session.give(Attributed::Charge(Box::new(Charge {
                            claims: touch.claims.clone(),
                            kind: EventKind::Conversion,
                            ts: e.ts,
                            conversion_id: Some(e.event_id.clone()),
                            origin: conv.origin,
                            key: conv.raw.key,
                            payload: conv.raw.payload,
                        })));
                    }
                }
                pending = still;
                let frontier = [
                    touches_frontier.frontier().first().copied(),
                    conversions_frontier.frontier().first().copied(),
                    pending.iter().map(|(c, _)| *c.time()).min(),
                ]
                .into_iter()
                .flatten()
                .min();
                gate.step(frontier, &*store, |at| {
                    if at != u64::MAX {
                        state.expire(at.min(i64::MAX as u64) as i64);
                    }
                    let mut batch = StateBatch::default();
                    state.drain_changes(|(user, advertiser), touches| {
                        let key = state_key(user, advertiser);
                        match touches {
                            Some(value) => batch.put_encoded(key, value),
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
    use crate::checkpoint::testing::{put, BrokenStore};
    use crate::checkpoint::MemoryStore;
    use crate::records::Touch;
    use crate::routing::owns;
    use crate::time::EventTime;
    use crate::token::WinClaims;

    fn touches(advertiser: &str) -> UserTouches {
        let mut a = Attributor::new(Windows::default());
        a.record(
            "u",
            Touch {
                ts: EventTime(100),
                kind: EventKind::Click,
                claims: std::sync::Arc::new(WinClaims {
                    request_id: "r".into(),
                    imp_id: "1".into(),
                    campaign_id: "c".into(),
                    advertiser_id: advertiser.into(),
                    ad_id: "a".into(),
                    billing: Billing::Cpa,
                    charge_micros: 1,
                    issued: EventTime(100),
                    country: None,
                    device: None,
                }),
            },
        );
        a.take_changes().pop().unwrap().1.unwrap()
    }

    #[test]
    fn unusual_ids_restore_on_their_worker_and_bad_entries_stop_the_restore() {
        let pairs = [
            ("u", "adv"),
            ("u\u{0}v", "adv"),
            ("u", "\u{0}adv"),
            ("50%", "a/b é"),
        ];
        let store = MemoryStore::default();
        put(
            &store,
            pairs
                .iter()
                .enumerate()
                // Both formats restore: the binary one, and the JSON of earlier releases.
                .map(|(i, (u, a))| {
                    let value = if i % 2 == 0 {
                        codec::encode(&touches(a)).unwrap()
                    } else {
                        serde_json::to_vec(&touches(a)).unwrap()
                    };
                    (state_key(u, a), value)
                })
                .collect(),
        );
        for peers in [1, 2] {
            let mut found = 0;
            for index in 0..peers {
                let state = restore(&store, Windows::default(), index, peers).unwrap();
                for (u, a) in pairs {
                    if owns(route(u), index, peers) {
                        assert!(
                            state.attribute(u, a, EventTime(200)).is_some(),
                            "{u:?} {a:?}"
                        );
                        found += 1;
                    }
                }
                assert!(state.len() <= pairs.len());
            }
            assert_eq!(found, pairs.len());
        }
        let bad = [
            (state_key("u", "x"), b"[".to_vec()),
            (
                format!("attr/{:016x}/u\0v\0adv", route("u")).into_bytes(),
                serde_json::to_vec(&touches("adv")).unwrap(),
            ),
        ];
        for (key, value) in bad {
            let store = MemoryStore::default();
            put(&store, vec![(key.clone(), value)]);
            let e = restore(&store, Windows::default(), 0, 1).unwrap_err();
            assert!(
                e.to_string().contains(&crate::routing::show_key(&key)),
                "{e}"
            );
        }
        let store = BrokenStore {
            broken: b"attr/".to_vec(),
            ..BrokenStore::default()
        };
        assert!(matches!(
            restore(&store, Windows::default(), 0, 1),
            Err(RestoreError::Scan(_))
        ));
    }
}
