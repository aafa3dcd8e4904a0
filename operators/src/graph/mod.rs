//! The whole dataflow, assembled in one place: [`build`].
//!
//! ```text
//!  Ingested ─route─┬─ campaigns ─────────────────────────────────┐
//!                  ├─ charges (CPM impressions, CPC clicks) ─────┼─▶ Ledger ─┬─ spend, campaigns, settled
//!                  ├─ touches ──────┬─▶ Attribute ─ CPA charges ──┘          ├─ charged ─────────────┐
//!                  ├─ conversions ──┘      └─ attributed conversions ─┐      └─ refusals ─┐          │
//!                  ├─ dead letters ───────────────────────────────────┼───────────────────┴▶ dead letters
//!                  └─ served, impressions, clicks ─────────────────────┴▶ LabelJoin ─▶ Train ─▶ models (broadcast)
//!
//!  touches ─▶ UserHistory (by user) ─ changed users ─┐
//!  touches + attributed conversions ─▶ CountActivity ─▶ CampaignActivity (by campaign) ─ counts ─┐
//!  ledger state + activity ─broadcast─▶ Serve ◀─────┘◀─ requests (HTTP queue)  Serve ─┬─ served ─▶ ads.served
//!                                         ▲                                     └─ feedback ─▶ Pacing
//!                                         └──── pacing updates (broadcast) ◀──────────────────┘
//!  ledger state + pacing updates ─▶ BudgetStatus ─▶ budget.status
//!  wins, touches, charged, attributed conversions ─▶ Reports ─▶ report rows
//! ```
//!
//! The graph is all logic and state; the caller attaches the I/O: the sources whose decoded
//! records come in ([`GraphInputs::ingested`]), each worker's serving queue, the trainer
//! thread's link, and the sinks and live views that read [`GraphOutputs`]. The same function
//! runs in `adstream run` and in the deterministic whole-graph test (`operators/tests`).

pub mod route;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::{Concat, OkErr};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{ProbeHandle, StreamVec};
use timely::scheduling::SyncActivator;

use crate::activity::operator::{campaign_activity, count_activity};
use crate::attribution::operator::attribute;
use crate::attribution::Windows;
use crate::checkpoint::StateStore;
use crate::history::operator::user_history;
use crate::history::HistoryConfig;
use crate::labels::operator::{label_join, LabelStatsHandle};
use crate::labels::LabelConfig;
use crate::ledger::operator::{ledger, LedgerConfig, LedgerStreams};
use crate::ledger::status::{BudgetBook, BudgetStatus};
use crate::pacing::board::PacingBoard;
use crate::pacing::operator::pacing;
use crate::pacing::PacingConfig;
use crate::ranker::link::TrainerLink;
use crate::ranker::operator::train;
use crate::ranker::scoring::{ModelSlot, PublishedModel};
use crate::records::{
    Attributed, AttributedConversion, Charge, DeadLetter, Ingested, LabelEvent, LabeledExample,
    LedgerState, PacingFeedback, PacingUpdate, ReplicaUpdate, Served,
};
use crate::report::operator::{reports, ReportStatsHandle};
use crate::report::{ReportEvent, ReportRow, ReportSpec};
use crate::serve::operator::{serve, ServeConfig, ServeOutput, ServeRequest};
use crate::source::{Clock, ServingActivity};
use crate::time::EventTime;

/// Settings of every stage, resolved from the pipeline file.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    /// The ledger's settings (charging horizons, checkpoint interval).
    pub ledger: LedgerConfig,
    /// Attribution windows.
    pub windows: Windows,
    /// The label join's windows and bound.
    pub labels: LabelConfig,
    /// The reports to keep (none: no reporting operators at all).
    pub reports: Arc<[ReportSpec]>,
    /// Serving: auction reserve, candidate limits, the billing-token key.
    pub serve: ServeConfig,
    /// Pacing.
    pub pacing: PacingConfig,
    /// Users' recent engagement (the ranker's user-history features).
    pub history: HistoryConfig,
}

/// What the graph reads, on one worker.
pub struct GraphInputs<'scope> {
    /// Decoded input records (from this worker's share of the input partitions).
    pub ingested: StreamVec<'scope, u64, Ingested>,
    /// This worker's queue of ad requests.
    pub requests: Receiver<ServeRequest>,
    /// Where the serving operator leaves the activator the queue's sender wakes it with.
    pub requests_activator: Arc<Mutex<Option<SyncActivator>>>,
    /// Where the serving operator notes when it answered requests (this worker's source reads
    /// smaller batches meanwhile: [`crate::source::SourceControl::serving`]).
    pub serving: ServingActivity,
    /// The trainer thread's link (on worker 0 when the model is enabled).
    pub trainer: Option<TrainerLink>,
}

/// What the stages share besides their inputs.
#[derive(Clone)]
pub struct GraphContext {
    /// Where operator state is checkpointed.
    pub store: Arc<dyn StateStore>,
    /// This process's live model, read by its serving replicas.
    pub models: Arc<ModelSlot>,
    /// The wall clock (pacing, budget status), injectable for tests.
    pub clock: Clock,
    /// The probe every stateful operator is behind (sources checkpoint offsets once it passes).
    pub progress: ProbeHandle<u64>,
}

/// What the graph produces, on one worker.
pub struct GraphOutputs<'scope> {
    /// Refused messages and charges (ingest's and the ledger's), on the worker that refused them.
    pub dead_letters: StreamVec<'scope, u64, DeadLetter>,
    /// Served ads, for `ads.served`.
    pub served: StreamVec<'scope, u64, Served>,
    /// Budget status of each campaign a batch changed, on the worker that owns it.
    pub budget_status: StreamVec<'scope, u64, BudgetStatus>,
    /// The ledger's replicated state (spend, campaigns, settled wins), broadcast: every worker
    /// sees every campaign.
    pub ledger_replica: StreamVec<'scope, u64, LedgerState>,
    /// Pacing updates, broadcast.
    pub pacing_replica: StreamVec<'scope, u64, PacingUpdate>,
    /// Model versions the trainer published, broadcast.
    pub models: StreamVec<'scope, u64, PublishedModel>,
    /// Report rows (`None` when no report is configured).
    pub reports: Option<StreamVec<'scope, u64, ReportRow>>,
    /// This worker's label-join counts, for metrics.
    pub label_stats: LabelStatsHandle,
    /// This worker's report counts, for metrics.
    pub report_stats: ReportStatsHandle,
}

/// Builds the whole dataflow on one worker.
pub fn build<'scope>(
    inputs: GraphInputs<'scope>,
    config: GraphConfig,
    context: GraphContext,
) -> GraphOutputs<'scope> {
    let GraphInputs {
        ingested,
        requests,
        requests_activator,
        serving: serving_activity,
        trainer,
    } = inputs;
    let GraphConfig {
        ledger: ledger_config,
        windows,
        labels: label_config,
        reports: report_specs,
        serve: serve_config,
        pacing: pacing_config,
        history: history_config,
    } = config;
    let GraphContext {
        store,
        models,
        clock,
        progress,
    } = context;
    let scope = ingested.scope();
    let (index, peers) = (scope.index(), scope.peers());
    let checkpoint_interval = ledger_config.checkpoint_interval;
    // Reports copy what they count; without reports nothing is copied.
    let reporting = !report_specs.is_empty();
    let routes = route::route(ingested, reporting);
    let won = routes.won;
    let wins_and_touches = reporting.then(|| {
        won.map(ReportEvent::Won)
            .concat(routes.touches.clone().map(|(_, t)| ReportEvent::Touch {
                kind: t.kind,
                claims: t.claims,
                ts: t.ts,
            }))
    });

    // Attribution: touches and conversions to CPA charges and attributed conversions.
    let counted_touches = routes.touches.clone();
    // Users' recent engagement, for serving's user-history features.
    let histories = user_history(
        routes.touches.clone(),
        history_config,
        checkpoint_interval,
        store.clone(),
    )
    .probe_with(&progress);
    let attributed = attribute(
        routes.touches,
        routes.conversions,
        windows,
        checkpoint_interval,
        store.clone(),
    )
    .probe_with(&progress);
    let (cpa, conversions): (
        StreamVec<'scope, u64, Charge>,
        StreamVec<'scope, u64, AttributedConversion>,
    ) = attributed.ok_err(|a| match a {
        Attributed::Charge(c) => Ok(*c),
        Attributed::Conversion(c) => Err(c),
    });
    // Serving's prior: impressions, clicks and click-through conversions per campaign.
    let activity = campaign_activity(
        count_activity(counted_touches, conversions.clone()),
        checkpoint_interval,
        store.clone(),
    )
    .probe_with(&progress);
    let converted = reporting.then(|| {
        conversions
            .clone()
            .map(|c| ReportEvent::Converted(Box::new(c)))
    });

    // The label join and the trainer.
    let label_stats = LabelStatsHandle::default();
    let examples: StreamVec<'scope, u64, LabeledExample> = label_join(
        routes
            .labels
            .concat(conversions.map(LabelEvent::Conversion)),
        label_config,
        checkpoint_interval,
        store.clone(),
        label_stats.clone(),
    )
    .probe_with(&progress);
    let published = train(examples, trainer).broadcast();

    // The ledger: charges of every billing type against the catalog.
    let LedgerStreams {
        state,
        charged,
        refused,
    } = ledger(
        routes.campaigns,
        routes.charges.concat(cpa),
        ledger_config,
        store.clone(),
    );
    let state = state.probe_with(&progress);
    let dead_letters = routes.dead.concat(refused);

    // Serving: every worker holds a replica of every campaign's state and activity.
    let ledger_replica = state.clone().broadcast();
    let replica = ledger_replica
        .clone()
        .map(ReplicaUpdate::Ledger)
        .concat(activity.broadcast().map(ReplicaUpdate::Activity))
        .concat(histories.broadcast().map(ReplicaUpdate::History));
    let board = Rc::new(RefCell::new(PacingBoard::new(index, peers)));
    let serving = serve(
        replica,
        requests,
        serve_config,
        requests_activator,
        serving_activity,
        board.clone(),
        models,
    );
    let (served, feedback): (
        StreamVec<'scope, u64, Served>,
        StreamVec<'scope, u64, PacingFeedback>,
    ) = serving.ok_err(|o| match o {
        ServeOutput::Served(s) => Ok(*s),
        ServeOutput::Pacing(f) => Err(f),
    });

    // Pacing runs beside the ledger shard of each campaign; its updates reach every replica.
    let updates = pacing(
        state.clone(),
        feedback,
        pacing_config,
        checkpoint_interval,
        store.clone(),
        clock.clone(),
    );
    let pacing_replica = updates
        .clone()
        .broadcast()
        .inspect(move |u: &PacingUpdate| board.borrow_mut().apply(u.clone()));
    let budget_status = budget_status(state, updates, clock);

    let report_stats = ReportStatsHandle::default();
    let rows = match (wins_and_touches, converted) {
        (Some(wins_and_touches), Some(converted)) => Some(reports(
            wins_and_touches
                .concat(charged.map(ReportEvent::Charged))
                .concat(converted),
            report_specs,
            checkpoint_interval,
            store,
            report_stats.clone(),
            &progress,
        )),
        _ => None,
    };
    GraphOutputs {
        dead_letters,
        served,
        budget_status,
        ledger_replica,
        pacing_replica,
        models: published,
        reports: rows,
        label_stats,
        report_stats,
    }
}

/// Each batch's changed campaigns' budget status, from the ledger's state and pacing, on the
/// worker that owns the campaign (pacing runs beside the ledger shard).
fn budget_status<'scope>(
    ledger: StreamVec<'scope, u64, LedgerState>,
    pacing: StreamVec<'scope, u64, PacingUpdate>,
    clock: Clock,
) -> StreamVec<'scope, u64, BudgetStatus> {
    ledger.binary(
        pacing,
        Pipeline,
        Pipeline,
        "BudgetStatus",
        move |_cap, _info| {
            let mut book = BudgetBook::default();
            move |ledger, pacing, output| {
                // Batches under one stamp (most of an activation's) are answered together: a
                // campaign they change several times gets one status.
                ledger.for_each_stamp(|cap, batches| {
                    let changed: BTreeSet<&str> = batches
                        .flat_map(|data| data.iter())
                        .filter_map(|rec| book.apply(rec))
                        .collect();
                    let now = EventTime(clock());
                    output
                        .session(&cap)
                        .give_iterator(changed.iter().filter_map(|c| book.status(c, now)));
                });
                pacing.for_each_stamp(|cap, batches| {
                    let changed: BTreeSet<String> = batches
                        .flat_map(|data| data.iter())
                        .map(|update| book.apply_pacing(update))
                        .collect();
                    let now = EventTime(clock());
                    output
                        .session(&cap)
                        .give_iterator(changed.iter().filter_map(|c| book.status(c, now)));
                });
            }
        },
    )
}

#[cfg(test)]
mod tests;
