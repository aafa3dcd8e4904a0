//! The label join's inputs and its training examples.

use serde::{Deserialize, Serialize};

use super::{AttributedConversion, Served};
use crate::time::EventTime;

/// (`request_id`, `imp_id`): one served ad.
pub type ExampleKey = (String, String);
/// One input of the join.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LabelEvent {
    /// A served ad with the features it was scored with (from `ads.served`).
    Served(Box<Served>),
    /// A verified impression.
    Impression {
        /// Request.
        request_id: String,
        /// Slot.
        imp_id: String,
        /// When.
        ts: EventTime,
    },
    /// A verified click.
    Click {
        /// Request.
        request_id: String,
        /// Slot.
        imp_id: String,
        /// When.
        ts: EventTime,
    },
    /// A conversion attributed to the served ad.
    Conversion(AttributedConversion),
}

impl LabelEvent {
    /// The request the event belongs to (the routing key).
    pub fn request_id(&self) -> &str {
        match self {
            LabelEvent::Served(s) => &s.request_id,
            LabelEvent::Impression { request_id, .. } | LabelEvent::Click { request_id, .. } => {
                request_id
            }
            LabelEvent::Conversion(c) => &c.request_id,
        }
    }

    /// The slot the event belongs to.
    pub fn imp_id(&self) -> &str {
        match self {
            LabelEvent::Served(s) => &s.imp_id,
            LabelEvent::Impression { imp_id, .. } | LabelEvent::Click { imp_id, .. } => imp_id,
            LabelEvent::Conversion(c) => &c.imp_id,
        }
    }

    /// (`request_id`, `imp_id`).
    pub fn key(&self) -> ExampleKey {
        (self.request_id().to_string(), self.imp_id().to_string())
    }

    /// (`request_id`, `imp_id`), moved out of an impression or click (whose ids are then
    /// empty: all that is left to read of it is its kind and time), copied from the others.
    pub fn take_key(&mut self) -> ExampleKey {
        match self {
            LabelEvent::Impression {
                request_id, imp_id, ..
            }
            | LabelEvent::Click {
                request_id, imp_id, ..
            } => (std::mem::take(request_id), std::mem::take(imp_id)),
            _ => self.key(),
        }
    }
}

/// A labelled training example: exactly one of `click` and `conversion` is `Some`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabeledExample {
    /// The served ad and its logged features.
    pub served: Box<Served>,
    /// Click label, for a click-through-rate model.
    pub click: Option<bool>,
    /// Conversion label of a clicked ad (fake negative, then positive: see the module doc).
    pub conversion: Option<bool>,
    /// Event time at which the label became known, ms.
    pub label_ms: i64,
}
