//! The records that flow between the stages of the graph.
//!
//! Every stage imports these and this module imports no stage: only the event schema
//! ([`crate::events`]), time ([`crate::time`]) and the win's claims ([`crate::token`]). Behaviour
//! that belongs to a stage (how a charge is judged, how a campaign's history is kept) lives with
//! that stage as `impl` blocks; here are the shapes. `operators/tests/layering.rs` keeps it that
//! way (no import cycles, nothing here imports a stage).

mod campaign;
mod history;
mod input;
mod labels;
mod pacing;
mod served;
mod spend;
mod touch;

pub use campaign::{CatalogUpdate, History, ZoneChange};
pub use history::{Clicked, Engagement, HistoryUpdate, HourCounts, UserHistory, COUNT_HOURS};
pub use input::{DeadLetter, Ingested, Origin, RawBytes, RawMessage, Reason, StreamId};
pub use labels::{ExampleKey, LabelEvent, LabeledExample};
pub use pacing::{PacingFeedback, PacingState, PacingUpdate};
pub use served::{Served, GLOBAL_CTR, GLOBAL_CVR};
pub use spend::{
    win_key, CampaignActivity, Charge, Charged, DaySpend, DedupKey, LedgerState, ReplicaUpdate,
    WinKey,
};
pub use touch::{Attributed, AttributedConversion, ConversionIn, Touch, UserTouch};

pub use crate::token::WinClaims;
