//! The billing graph: decoded inputs to catalog, attribution and ledger.
//!
//! ```text
//!  Ingested ─route─┬─ campaigns ──────────────────────────────┐
//!                  ├─ charges (CPM impressions, CPC clicks) ──┼─▶ Ledger ─▶ LedgerOutput
//!                  ├─ touches ─────┐                          │     ▲
//!                  ├─ conversions ─┴─▶ Attribute ─ CPA charges┘     │
//!                  └─ dead letters ─────────────────────────────────┴──(concat)
//! ```

use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::Concat;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, StreamVec};

use crate::attribution::operator::{attribute, ConversionIn, UserTouch};
use crate::attribution::{Touch, Windows};
use crate::catalog::CatalogUpdate;
use crate::checkpoint::StateStore;
use crate::ingest::{DeadLetter, Ingested};
use crate::ledger::operator::{ledger, CampaignActivity, LedgerConfig, LedgerOutput};
use crate::ledger::Charge;

/// Settings of the billing graph.
#[derive(Clone, Debug)]
pub struct BillingConfig {
    /// The ledger's settings.
    pub ledger: LedgerConfig,
    /// Attribution windows.
    pub windows: Windows,
}

enum Routed {
    Campaign(CatalogUpdate),
    Charge(Box<Charge>),
    Touch(Box<UserTouch>),
    Conversion(Box<ConversionIn>),
    Dead(Box<DeadLetter>),
}

impl Routed {
    fn part(&self) -> u64 {
        match self {
            Routed::Campaign(_) => 0,
            Routed::Charge(_) => 1,
            Routed::Touch(_) => 2,
            Routed::Conversion(_) => 3,
            Routed::Dead(_) => 4,
        }
    }
}

/// Splits a decoded record into what each stage needs: a verified impression or click is a touch
/// for attribution and, when its win bills on that event, a charge for the ledger.
fn route_ingested(record: Ingested) -> Vec<Routed> {
    match record {
        Ingested::Campaign {
            campaign_id,
            campaign,
        } => {
            vec![Routed::Campaign(CatalogUpdate {
                campaign_id,
                campaign,
            })]
        }
        Ingested::Ad {
            kind,
            event,
            claims,
            origin,
            raw,
        } => {
            let mut out = Vec::with_capacity(2);
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
) -> StreamVec<'scope, u64, LedgerOutput> {
    let mut parts = ingested
        .flat_map(route_ingested)
        .partition(5, |r| (r.part(), r));
    let dead = parts.pop().expect("5 parts");
    let conversions = parts.pop().expect("5 parts");
    let touches = parts.pop().expect("5 parts");
    let charges = parts.pop().expect("5 parts");
    let campaigns = parts.pop().expect("5 parts");

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

    let activity = count_activity(touches.clone());
    let cpa = attribute(
        touches,
        conversions,
        config.windows,
        config.ledger.checkpoint_interval,
        store.clone(),
    )
    .probe_with(progress);
    let all_charges = charges.concat(cpa);
    ledger(campaigns, all_charges, config.ledger, store)
        .probe_with(progress)
        .concat(dead)
        .concat(activity)
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
                        crate::events::EventKind::Click => c.clicks += 1,
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
