//! The billing graph: decoded inputs to catalog, attribution and ledger, and the label join.
//!
//! ```text
//!  Ingested ─route─┬─ campaigns ──────────────────────────────┐
//!                  ├─ charges (CPM impressions, CPC clicks) ──┼─▶ Ledger ─▶ LedgerOutput
//!                  ├─ touches ─────┐                          │     ▲
//!                  ├─ conversions ─┴─▶ Attribute ─ CPA charges┘     │
//!                  │                      └─ attributed conversions ┼──┐
//!                  ├─ dead letters ─────────────────────────────────┘  │ (concat)
//!                  └─ served, impressions, clicks ───────────────▶ LabelJoin ─▶ LabeledExample
//!
//!  served (wins), touches, ledger charges, attributed conversions ─▶ reports ─▶ ReportRow
//! ```

use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::Concat;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, StreamVec};

use crate::attribution::operator::{attribute, Attributed, ConversionIn, UserTouch};
use crate::attribution::{Touch, Windows};
use crate::catalog::CatalogUpdate;
use crate::checkpoint::StateStore;
use crate::events::EventKind;
use crate::ingest::{DeadLetter, Ingested};
use crate::labels::operator::{label_join, LabelStatsHandle};
use crate::labels::{LabelConfig, LabelEvent, LabeledExample};
use crate::ledger::operator::{ledger, CampaignActivity, LedgerConfig, LedgerOutput};
use crate::ledger::Charge;
use crate::report::operator::{reports, ReportStatsHandle};
use crate::report::{ReportEvent, ReportRow, ReportSpec};

/// Settings of the billing graph.
#[derive(Clone, Debug)]
pub struct BillingConfig {
    /// The ledger's settings.
    pub ledger: LedgerConfig,
    /// Attribution windows.
    pub windows: Windows,
    /// The label join's windows and bound.
    pub labels: LabelConfig,
    /// The reports to keep (none: no reporting operators at all).
    pub reports: Arc<[ReportSpec]>,
}

/// What the billing graph produces.
pub struct BillingStreams<'scope> {
    /// The ledger's output, refusals and activity counts.
    pub ledger: StreamVec<'scope, u64, LedgerOutput>,
    /// Labelled training examples.
    pub examples: StreamVec<'scope, u64, LabeledExample>,
    /// This worker's label-join counts, for metrics.
    pub label_stats: LabelStatsHandle,
    /// Report rows to publish (`None` when no report is configured).
    pub reports: Option<StreamVec<'scope, u64, ReportRow>>,
    /// This worker's report counts, for metrics.
    pub report_stats: ReportStatsHandle,
}

enum Routed {
    Campaign(CatalogUpdate),
    Charge(Box<Charge>),
    Touch(Box<UserTouch>),
    Conversion(Box<ConversionIn>),
    Dead(Box<DeadLetter>),
    Label(Box<LabelEvent>),
}

const PARTS: u64 = 6;

impl Routed {
    fn part(&self) -> u64 {
        match self {
            Routed::Campaign(_) => 0,
            Routed::Charge(_) => 1,
            Routed::Touch(_) => 2,
            Routed::Conversion(_) => 3,
            Routed::Dead(_) => 4,
            Routed::Label(_) => 5,
        }
    }
}

/// Splits a decoded record into what each stage needs: a verified impression or click is a touch
/// for attribution, an outcome for the label join and, when its win bills on that event, a charge
/// for the ledger; a served record goes to the label join.
fn route_ingested(record: Ingested) -> Vec<Routed> {
    match record {
        Ingested::Campaign {
            campaign_id,
            campaign,
        } => {
            vec![Routed::Campaign(CatalogUpdate::new(campaign_id, campaign))]
        }
        Ingested::Ad {
            kind,
            event,
            claims,
            origin,
            raw,
        } => {
            let mut out = Vec::with_capacity(3);
            let (request_id, imp_id, ts) =
                (claims.request_id.clone(), claims.imp_id.clone(), event.ts);
            out.push(Routed::Label(Box::new(match kind {
                EventKind::Click => LabelEvent::Click {
                    request_id,
                    imp_id,
                    ts,
                },
                _ => LabelEvent::Impression {
                    request_id,
                    imp_id,
                    ts,
                },
            })));
            if claims.billing.charged_event() == kind {
                out.push(Routed::Charge(Box::new(Charge::for_event(
                    kind,
                    event.ts,
                    claims.clone(),
                    origin,
                    *raw,
                ))));
            }
            let event = *event;
            out.push(Routed::Touch(Box::new((
                event.user_id,
                Touch {
                    ts: event.ts,
                    kind,
                    claims,
                },
            ))));
            out
        }
        Ingested::Conversion { event, origin, raw } => {
            vec![Routed::Conversion(Box::new(ConversionIn {
                event,
                origin,
                raw: *raw,
            }))]
        }
        Ingested::Served(served) => vec![Routed::Label(Box::new(LabelEvent::Served(served)))],
        Ingested::Dead(d) => vec![Routed::Dead(d)],
    }
}

/// Builds the billing graph over `ingested`; `progress` ends up behind every stateful operator
/// (the probe sources wait on before checkpointing offsets).
pub fn billing<'scope>(
    ingested: StreamVec<'scope, u64, Ingested>,
    config: BillingConfig,
    store: Arc<dyn StateStore>,
    progress: &ProbeHandle<u64>,
) -> BillingStreams<'scope> {
    let mut parts = ingested
        .flat_map(route_ingested)
        .partition(PARTS, |r| (r.part(), r));
    let labels = parts.pop().expect("6 parts");
    let dead = parts.pop().expect("6 parts");
    let conversions = parts.pop().expect("6 parts");
    let touches = parts.pop().expect("6 parts");
    let charges = parts.pop().expect("6 parts");
    let campaigns = parts.pop().expect("6 parts");

    let campaigns = campaigns.flat_map(|r| match r {
        Routed::Campaign(c) => Some(c),
        _ => None,
    });
    let charges = charges.flat_map(|r| match r {
        Routed::Charge(c) => Some(*c),
        _ => None,
    });
    let touches = touches.flat_map(|r| match r {
        Routed::Touch(t) => Some(*t),
        _ => None,
    });
    let conversions = conversions.flat_map(|r| match r {
        Routed::Conversion(c) => Some(*c),
        _ => None,
    });
    let dead = dead.flat_map(|r| match r {
        Routed::Dead(d) => Some(LedgerOutput::Dead(d)),
        _ => None,
    });

    let labels = labels.flat_map(|r| match r {
        Routed::Label(l) => Some(*l),
        _ => None,
    });
    // Without reports, nothing is copied for them.
    let reporting = !config.reports.is_empty();
    let wins_and_touches = reporting.then(|| {
        let won = labels.clone().flat_map(|l| match l {
            LabelEvent::Served(s) => Some(ReportEvent::Won(s)),
            _ => None,
        });
        won.concat(touches.clone().map(|(_, t)| ReportEvent::Touch {
            kind: t.kind,
            claims: Box::new(t.claims),
            ts: t.ts,
        }))
    });

    let activity = count_activity(touches.clone());
    let attributed = attribute(
        touches,
        conversions,
        config.windows,
        config.ledger.checkpoint_interval,
        store.clone(),
    )
    .probe_with(progress);
    let cpa = attributed.clone().flat_map(|a| match a {
        Attributed::Charge(c) => Some(*c),
        Attributed::Conversion(_) => None,
    });
    let converted = reporting.then(|| {
        attributed.clone().flat_map(|a| match a {
            Attributed::Conversion(c) => Some(ReportEvent::Converted(Box::new(c))),
            Attributed::Charge(_) => None,
        })
    });
    let attributed_conversions = attributed.flat_map(|a| match a {
        Attributed::Conversion(c) => Some(LabelEvent::Conversion(c)),
        Attributed::Charge(_) => None,
    });
    let label_stats = LabelStatsHandle::default();
    let examples = label_join(
        labels.concat(attributed_conversions),
        config.labels,
        config.ledger.checkpoint_interval,
        store.clone(),
        label_stats.clone(),
    )
    .probe_with(progress);
    let all_charges = charges.concat(cpa);
    let ledger_out =
        ledger(campaigns, all_charges, config.ledger.clone(), store.clone()).probe_with(progress);
    let charged = reporting.then(|| {
        ledger_out.clone().flat_map(|o| match o {
            LedgerOutput::Charged(c) => Some(ReportEvent::Charged(c)),
            _ => None,
        })
    });
    let ledger = ledger_out
        .flat_map(|o| match o {
            LedgerOutput::Charged(_) => None,
            other => Some(other),
        })
        .concat(dead)
        .concat(activity);
    let report_stats = ReportStatsHandle::default();
    let rows = match (wins_and_touches, charged, converted) {
        (Some(wins_and_touches), Some(charged), Some(converted)) => Some(reports(
            wins_and_touches.concat(charged).concat(converted),
            config.reports,
            config.ledger.checkpoint_interval,
            store,
            report_stats.clone(),
            progress,
        )),
        _ => None,
    };
    BillingStreams {
        ledger,
        examples,
        label_stats,
        reports: rows,
        report_stats,
    }
}

/// Sums impressions and clicks per campaign over each batch of touches, for serving's prior.
fn count_activity<'scope>(
    touches: StreamVec<'scope, u64, UserTouch>,
) -> StreamVec<'scope, u64, LedgerOutput> {
    touches.unary(Pipeline, "CountActivity", |_cap, _info| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut counts: std::collections::BTreeMap<&str, CampaignActivity> =
                    std::collections::BTreeMap::new();
                for (_, touch) in data.iter() {
                    let c = counts.entry(touch.claims.campaign_id.as_str()).or_default();
                    match touch.kind {
                        EventKind::Click => c.clicks += 1,
                        _ => c.impressions += 1,
                    }
                }
                let batch: Vec<CampaignActivity> = counts
                    .into_iter()
                    .map(|(id, mut c)| {
                        c.campaign_id = id.to_string();
                        c
                    })
                    .collect();
                if !batch.is_empty() {
                    output.session(&cap).give(LedgerOutput::Activity(batch));
                }
            });
        }
    })
}
