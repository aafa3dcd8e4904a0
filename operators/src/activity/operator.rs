//! The activity operators: [`count_activity`] sums each batch of touches and attributed
//! conversions per campaign where they are (no exchange of the events), and
//! [`campaign_activity`] keeps the totals of the campaigns a worker owns, checkpointed at the
//! boundaries through a [`CheckpointGate`] like every stateful stage, so a replayed event after a
//! crash is counted once. Its output is each batch's counts (deltas) for the serving replicas,
//! and after a restore, once, the restored totals: the replicas start empty.

use std::sync::Arc;

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use super::{activity_of, ActivityTotals, Counts};
use crate::checkpoint::{codec, CheckpointGate, RestoreError, StateBatch, StateStore};
use crate::events::EventKind;
use crate::records::{AttributedConversion, CampaignActivity, UserTouch};
use crate::routing::{route, CAMPAIGN_ACTIVITY};

fn state_key(campaign_id: &str) -> Vec<u8> {
    CAMPAIGN_ACTIVITY.key(route(campaign_id), &[campaign_id])
}

/// Rebuilds worker `index` of `peers`'s share of the totals. Entries of other workers are
/// skipped; an entry that cannot be read, or a store read error, is an error naming the key.
pub fn restore(
    store: &dyn StateStore,
    index: usize,
    peers: usize,
) -> Result<ActivityTotals, RestoreError> {
    let mut totals = ActivityTotals::default();
    CAMPAIGN_ACTIVITY.restore_owned(store, index, peers, |[campaign], k, v| {
        totals.restore(campaign, codec::decode::<Counts>(k, v)?);
        Ok(())
    })?;
    Ok(totals)
}

/// Writes `totals` into an empty `store` as a pipeline's starting counts: `adstream train`
/// seeds the prior its model was trained against into a pipeline that has not counted
/// anything yet, so that the model does not start against the global rate. Returns how many
/// campaigns were written: none when the store already holds counts (a pipeline's own count
/// is never overwritten or added to). A write that fails is an error.
pub fn seed(store: &dyn StateStore, totals: &ActivityTotals) -> Result<usize, SeedError> {
    if !store.scan(CAMPAIGN_ACTIVITY.prefix.as_bytes())?.is_empty() {
        return Ok(0);
    }
    let mut batch = StateBatch::default();
    for (campaign, counts) in totals.iter() {
        batch.put(state_key(campaign), &counts);
    }
    let ticket = store.persist(batch);
    loop {
        match ticket.poll() {
            Some(true) => return Ok(totals.len()),
            Some(false) => return Err(SeedError::Write),
            None => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// Why [`seed`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The store could not be read.
    #[error(transparent)]
    Scan(#[from] crate::checkpoint::ScanError),
    /// The store refused the write.
    #[error("the state store refused to write the campaigns' starting counts")]
    Write,
}

/// Sums impressions, clicks and click-through conversions per campaign over each batch of
/// touches and attributed conversions, on the worker that has them.
pub fn count_activity<'scope>(
    touches: StreamVec<'scope, u64, UserTouch>,
    conversions: StreamVec<'scope, u64, AttributedConversion>,
) -> StreamVec<'scope, u64, CampaignActivity> {
    touches.binary(
        conversions,
        Pipeline,
        Pipeline,
        "CountActivity",
        |_cap, _info| {
            move |touches, conversions, output| {
                touches.for_each(|cap, data| {
                    let batch = activity_of(
                        data.iter()
                            .map(|(_, t)| (t.claims.campaign_id.as_str(), t.kind)),
                    );
                    output.session(&cap).give_iterator(batch.into_iter());
                });
                conversions.for_each(|cap, data| {
                    // A view-through conversion follows no click: the prior's rate is per click.
                    let batch = activity_of(
                        data.iter()
                            .filter(|c| c.via_click)
                            .map(|c| (c.claims.campaign_id.as_str(), EventKind::Conversion)),
                    );
                    output.session(&cap).give_iterator(batch.into_iter());
                });
            }
        },
    )
}

/// Builds the totals operator over [`count_activity`]'s batches: each campaign's counts go to
/// the worker that owns it; what comes out is each activation's counts, one record per
/// campaign, for the replicas (broadcast by the caller).
pub fn campaign_activity<'scope>(
    counts: StreamVec<'scope, u64, CampaignActivity>,
    checkpoint_interval: u64,
    store: Arc<dyn StateStore>,
) -> StreamVec<'scope, u64, Vec<CampaignActivity>> {
    let scope = counts.scope();
    let (index, peers) = (scope.index(), scope.peers());
    counts.unary_frontier(
        Exchange::new(|c: &CampaignActivity| route(&c.campaign_id)),
        "CampaignActivity",
        move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut state = restore(&*store, index, peers)
                .unwrap_or_else(|e| panic!("restoring campaign activity of worker {index}: {e}"));
            // The restored totals, for the replicas, at the first activation.
            let mut restored = Some(state.all()).filter(|all| !all.is_empty());
            let mut gate = CheckpointGate::new(capability, checkpoint_interval, activator);
            move |(input, frontier), output| {
                let mut deltas = restored.take().unwrap_or_default();
                input.for_each(|_cap, data| {
                    for delta in data.drain(..) {
                        state.add(&delta);
                        deltas.push(delta);
                    }
                });
                if !deltas.is_empty() {
                    if let Some(cap) = gate.capability() {
                        output.session(cap).give(deltas);
                    }
                }
                gate.step(frontier.frontier().first().copied(), &*store, |_at| {
                    let mut batch = StateBatch::default();
                    state.drain_changes(|campaign, counts| batch.put(state_key(campaign), counts));
                    batch
                });
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
    use std::sync::Mutex;
    use timely::dataflow::operators::{Input, Inspect, Probe};
    use timely::dataflow::ProbeHandle;

    fn counted(campaign: &str, impressions: u64, clicks: u64) -> CampaignActivity {
        CampaignActivity {
            campaign_id: campaign.into(),
            impressions,
            clicks,
            conversions: 0,
        }
    }

    /// Runs the totals operator over `batches` (one per time, 100 apart) to completion; returns
    /// what it sent, in order.
    fn run(
        store: Arc<dyn StateStore>,
        batches: Vec<Vec<CampaignActivity>>,
    ) -> Vec<CampaignActivity> {
        let sent: Arc<Mutex<Vec<CampaignActivity>>> = Arc::default();
        let out = sent.clone();
        timely::execute_directly(move |worker| {
            let probe = ProbeHandle::new();
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<CampaignActivity>>();
                campaign_activity(stream, 100, store)
                    .inspect(move |batch: &Vec<CampaignActivity>| {
                        out.lock().expect("sent").extend(batch.iter().cloned())
                    })
                    .probe_with(&probe);
                input
            });
            for (t, batch) in batches.into_iter().enumerate() {
                input.advance_to(t as u64 * 100);
                for c in batch {
                    input.send(c);
                }
            }
        });
        let sent = sent.lock().expect("sent").clone();
        sent
    }

    #[test]
    fn totals_survive_a_restart_and_reach_the_replicas_once() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
        let first = run(
            store.clone(),
            vec![
                vec![counted("a", 10, 1), counted("b", 5, 0)],
                vec![counted("a", 30, 2)],
            ],
        );
        // Each batch's counts go out as they come.
        assert_eq!(first.len(), 3);
        // The next run starts from the checkpointed totals: it sends them first, once, then
        // its own counts.
        let second = run(store.clone(), vec![vec![counted("b", 1, 1)]]);
        assert_eq!(
            second,
            vec![counted("a", 40, 3), counted("b", 5, 0), counted("b", 1, 1)]
        );
        let totals = restore(&*store, 0, 1).expect("restore");
        assert_eq!(
            totals.get("b"),
            Some(Counts {
                impressions: 6,
                clicks: 1,
                conversions: 0
            })
        );
    }

    #[test]
    fn seeding_writes_only_into_a_store_that_has_not_counted() {
        let store = MemoryStore::default();
        let mut totals = ActivityTotals::default();
        totals.add(&counted("a", 100, 4));
        totals.add(&counted("b", 7, 0));
        assert_eq!(seed(&store, &totals).expect("seed"), 2);
        let restored = restore(&store, 0, 1).expect("restore");
        assert_eq!(restored.all(), totals.all());
        // A second seed (or one into a running pipeline's state) leaves the counts alone.
        let mut other = ActivityTotals::default();
        other.add(&counted("a", 1, 1));
        assert_eq!(seed(&store, &other).expect("seed"), 0);
        assert_eq!(restore(&store, 0, 1).expect("restore").all(), totals.all());
    }

    #[test]
    fn totals_restore_on_their_worker_and_a_bad_entry_stops_the_restore() {
        let store = MemoryStore::default();
        let campaigns = ["c1", "c\u{0}2", "50%", "é"];
        let counts = Counts {
            impressions: 900,
            clicks: 20,
            conversions: 3,
        };
        put(
            &store,
            campaigns
                .iter()
                .map(|c| (state_key(c), codec::encode(&counts).expect("encode")))
                .collect(),
        );
        for peers in [1, 2] {
            let mut found = 0;
            for index in 0..peers {
                let totals = restore(&store, index, peers).expect("restore");
                for c in campaigns {
                    if owns(route(c), index, peers) {
                        assert_eq!(totals.get(c), Some(counts), "{c:?}");
                        found += 1;
                    }
                }
            }
            assert_eq!(found, campaigns.len());
        }
        let store = MemoryStore::default();
        put(&store, vec![(state_key("c"), vec![0, 1, 0xff, 0xff])]);
        let e = restore(&store, 0, 1).expect_err("bad value");
        assert!(e.to_string().contains("activity/"), "{e}");
    }
}
