//! Touches (verified impressions and clicks) and conversions on their way through attribution.

use serde::{Deserialize, Serialize};

use super::{Charge, Origin, RawBytes};
use crate::events::{Conversion, EventKind};
use crate::time::EventTime;

/// A conversion on its way to attribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversionIn {
    /// The event.
    pub event: Conversion,
    /// Where it was read.
    pub origin: Origin,
    /// Its original bytes.
    pub raw: RawBytes,
}

/// A conversion matched to the served ad (`request_id`, `imp_id`) it is attributed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributedConversion {
    /// Request of the touched ad.
    pub request_id: String,
    /// Slot of the touched ad.
    pub imp_id: String,
    /// The conversion's `event_id`.
    pub conversion_id: String,
    /// When the conversion happened.
    pub ts: EventTime,
    /// Attributed to a click (`true`) or, view-through, to an impression (`false`).
    pub via_click: bool,
    /// The conversion's value, micros.
    pub value_micros: u64,
    /// The touched win (campaign, advertiser, ad, country, device: what reports group by).
    pub claims: crate::token::SharedClaims,
}

/// What the attribution operator emits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attributed {
    /// A CPA win's conversion, to be charged by the ledger.
    Charge(Box<Charge>),
    /// Every attributed conversion, of any billing type, for the label join.
    Conversion(AttributedConversion),
}

/// A touch of a user, on its way to attribution and the user's history. The user id is shared:
/// the stages that each take a copy of the stream copy a pointer, not the id.
pub type UserTouch = (std::sync::Arc<str>, Touch);

/// A served ad the user saw or clicked, with the win it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    /// When.
    pub ts: EventTime,
    /// Impression or click.
    pub kind: EventKind,
    /// The signed win.
    pub claims: crate::token::SharedClaims,
}
