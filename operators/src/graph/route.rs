//! Ingest routing: one decoded record in, what each stage needs out, on typed streams.
//!
//! A verified impression or click is a touch for attribution, an outcome for the label join
//! and, when its win bills on that very event, a charge for the ledger; a conversion goes to
//! attribution; a campaign to the ledger's catalog; a served record to the label join; a refused
//! message to the dead letters. [`split`] is the plain function, [`route`] the operator with one
//! output per stage (no shared enum to unpack downstream). When reports are kept, the operator
//! also copies each served record onto an output of its own: the reports count wins without a
//! copy of every label-join event.

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::StreamVec;

use crate::events::EventKind;
use crate::records::{
    CatalogUpdate, Charge, ConversionIn, DeadLetter, Ingested, LabelEvent, Served, Touch, UserTouch,
};

/// What one record becomes (most records feed one or two stages).
#[derive(Debug, Default, PartialEq)]
pub struct Split {
    /// For the ledger's catalog.
    pub campaign: Option<CatalogUpdate>,
    /// For the ledger.
    pub charge: Option<Charge>,
    /// For attribution.
    pub touch: Option<UserTouch>,
    /// For attribution.
    pub conversion: Option<ConversionIn>,
    /// Refused.
    pub dead: Option<DeadLetter>,
    /// For the label join.
    pub label: Option<LabelEvent>,
}

/// Splits a decoded record into what each stage needs.
pub fn split(record: Ingested) -> Split {
    let mut out = Split::default();
    match record {
        Ingested::Campaign {
            campaign_id,
            campaign,
        } => out.campaign = Some(CatalogUpdate::new(campaign_id, campaign)),
        Ingested::Ad {
            kind,
            ts,
            user_id,
            claims,
            origin,
            raw,
        } => {
            let (request_id, imp_id) = (claims.request_id.clone(), claims.imp_id.clone());
            out.label = Some(match kind {
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
            });
            if claims.billing.charged_event() == kind {
                out.charge = Some(Charge::for_event(kind, ts, claims.clone(), origin, *raw));
            }
            out.touch = Some((user_id.into(), Touch { ts, kind, claims }));
        }
        Ingested::Conversion { event, origin, raw } => {
            out.conversion = Some(ConversionIn {
                event,
                origin,
                raw: *raw,
            })
        }
        Ingested::Served(served) => out.label = Some(LabelEvent::Served(served)),
        Ingested::Dead(d) => out.dead = Some(*d),
    }
    out
}

/// The per-stage streams [`route`] produces.
pub struct Routes<'scope> {
    /// Campaign definitions, for the ledger's catalog.
    pub campaigns: StreamVec<'scope, u64, CatalogUpdate>,
    /// CPM impressions and CPC clicks to charge.
    pub charges: StreamVec<'scope, u64, Charge>,
    /// Verified impressions and clicks, for attribution.
    pub touches: StreamVec<'scope, u64, UserTouch>,
    /// Conversions, for attribution.
    pub conversions: StreamVec<'scope, u64, ConversionIn>,
    /// Messages ingest refused.
    pub dead: StreamVec<'scope, u64, DeadLetter>,
    /// Served ads and their outcomes, for the label join.
    pub labels: StreamVec<'scope, u64, LabelEvent>,
    /// Served ads again, for the reports (empty unless [`route`] is asked for them).
    pub won: StreamVec<'scope, u64, Box<Served>>,
}

/// Routes `ingested` to the stages, one typed output each; with `reporting`, served records are
/// copied to [`Routes::won`] as well.
pub fn route<'scope>(
    ingested: StreamVec<'scope, u64, Ingested>,
    reporting: bool,
) -> Routes<'scope> {
    let mut builder = OperatorBuilder::new("Route".to_owned(), ingested.scope());
    let mut input = builder.new_input(ingested, Pipeline);
    builder.set_notify_for(0, timely::progress::operate::FrontierInterest::Never);
    let (mut campaigns_out, campaigns) = output::<CatalogUpdate>(&mut builder);
    let (mut charges_out, charges) = output::<Charge>(&mut builder);
    let (mut touches_out, touches) = output::<UserTouch>(&mut builder);
    let (mut conversions_out, conversions) = output::<ConversionIn>(&mut builder);
    let (mut dead_out, dead) = output::<DeadLetter>(&mut builder);
    let (mut labels_out, labels) = output::<LabelEvent>(&mut builder);
    let (mut won_out, won) = output::<Box<Served>>(&mut builder);
    builder.build(move |_| {
        move |_frontiers| {
            let mut campaigns_h = campaigns_out.activate();
            let mut charges_h = charges_out.activate();
            let mut touches_h = touches_out.activate();
            let mut conversions_h = conversions_out.activate();
            let mut dead_h = dead_out.activate();
            let mut labels_h = labels_out.activate();
            let mut won_h = won_out.activate();
            input.for_each(|cap, data| {
                let mut campaigns = campaigns_h.session(&cap);
                let mut charges = charges_h.session(&cap);
                let mut touches = touches_h.session(&cap);
                let mut conversions = conversions_h.session(&cap);
                let mut dead = dead_h.session(&cap);
                let mut labels = labels_h.session(&cap);
                let mut won = won_h.session(&cap);
                for record in data.drain(..) {
                    let Split {
                        campaign,
                        charge,
                        touch,
                        conversion,
                        dead: refused,
                        label,
                    } = split(record);
                    campaigns.give_iterator(campaign.into_iter());
                    charges.give_iterator(charge.into_iter());
                    touches.give_iterator(touch.into_iter());
                    conversions.give_iterator(conversion.into_iter());
                    dead.give_iterator(refused.into_iter());
                    if let (true, Some(LabelEvent::Served(served))) = (reporting, &label) {
                        won.give(served.clone());
                    }
                    labels.give_iterator(label.into_iter());
                }
            });
        }
    });
    Routes {
        campaigns,
        charges,
        touches,
        conversions,
        dead,
        labels,
        won,
    }
}

/// A new output of `builder` carrying records of type `D`.
#[allow(clippy::type_complexity)]
fn output<'scope, D: Clone + 'static>(
    builder: &mut OperatorBuilder<'scope, u64>,
) -> (
    OutputBuilder<u64, CapacityContainerBuilder<Vec<D>>>,
    StreamVec<'scope, u64, D>,
) {
    let (output, stream) = builder.new_output::<Vec<D>>();
    (OutputBuilder::from(output), stream)
}
