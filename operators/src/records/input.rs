//! What the sources read and ingest decides: raw messages, their positions, decoded records and
//! dead letters.

use serde::{Deserialize, Serialize};

use super::Served;
use crate::events::{Campaign, Conversion, EventKind};
use crate::time::EventTime;

/// The input streams, by role (the pipeline file maps them to topic names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum StreamId {
    /// `ads.campaigns`.
    Campaigns = 0,
    /// `ads.impressions`.
    Impressions = 1,
    /// `ads.clicks`.
    Clicks = 2,
    /// `ads.conversions`.
    Conversions = 3,
    /// `ads.served`: the served ads adstream itself logged, read back for the label join.
    Served = 4,
}

impl StreamId {
    /// Every input stream.
    pub const ALL: [StreamId; 5] = [
        StreamId::Campaigns,
        StreamId::Impressions,
        StreamId::Clicks,
        StreamId::Conversions,
        StreamId::Served,
    ];

    /// From the numeric id stored in an [`Origin`].
    pub fn from_u8(v: u8) -> Option<StreamId> {
        StreamId::ALL.get(v as usize).copied()
    }

    /// Short name (`campaigns`, `impressions`...), as used in metrics and pipeline files.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamId::Campaigns => "campaigns",
            StreamId::Impressions => "impressions",
            StreamId::Clicks => "clicks",
            StreamId::Conversions => "conversions",
            StreamId::Served => "served",
        }
    }
}

/// One Kafka message as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage {
    /// Which input it came from.
    pub stream: StreamId,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value (`None` is a tombstone).
    pub payload: Option<Vec<u8>>,
    /// The broker's or producer's timestamp, if any.
    pub timestamp_ms: Option<i64>,
}

impl RawMessage {
    /// Where it was read.
    pub fn origin(&self) -> Origin {
        Origin {
            stream: self.stream as u8,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not JSON.
    MalformedJson,
    /// A field is missing, mistyped or invalid.
    InvalidField,
    /// Larger than the pipeline's `max_message_bytes`.
    Oversize,
    /// No billing token.
    MissingToken,
    /// Token forged, altered or undecodable.
    BadToken,
    /// Token valid but for another win.
    TokenMismatch,
    /// Names a campaign the catalog does not know.
    UnknownCampaign,
    /// Billing event already charged from another position.
    Duplicate,
    /// Billing event outside its charging window.
    Expired,
    /// Billing event whose time is not within the bounded window around its win's issue time
    /// (a timestamp in seconds, a clock days off).
    BadEventTime,
    /// Billing event whose token's price is above what the campaign bid for that win.
    PriceAboveBid,
    /// Not a message: a summary of messages deleted (retention) before they were read.
    OffsetsLost,
}

impl Reason {
    /// Every reason, for metrics.
    pub const ALL: [Reason; 12] = [
        Reason::MalformedJson,
        Reason::InvalidField,
        Reason::Oversize,
        Reason::MissingToken,
        Reason::BadToken,
        Reason::TokenMismatch,
        Reason::UnknownCampaign,
        Reason::Duplicate,
        Reason::Expired,
        Reason::BadEventTime,
        Reason::PriceAboveBid,
        Reason::OffsetsLost,
    ];

    /// snake_case name, as written in dead letters and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidField => "invalid_field",
            Reason::Oversize => "oversize",
            Reason::MissingToken => "missing_token",
            Reason::BadToken => "bad_token",
            Reason::TokenMismatch => "token_mismatch",
            Reason::UnknownCampaign => "unknown_campaign",
            Reason::Duplicate => "duplicate",
            Reason::Expired => "expired",
            Reason::BadEventTime => "bad_event_time",
            Reason::PriceAboveBid => "price_above_bid",
            Reason::OffsetsLost => "offsets_lost",
        }
    }
}

/// A refused message: the original bytes, why, and where it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why.
    pub reason: Reason,
    /// Human-readable detail naming the field or check.
    pub detail: String,
    /// Where it was read.
    pub origin: Origin,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original value, truncated to the pipeline's limit for oversize messages.
    pub payload: Vec<u8>,
    /// Whether `payload` was truncated.
    pub truncated: bool,
}

impl DeadLetter {
    /// A dead letter for `msg`.
    pub fn of(msg: &RawMessage, reason: Reason, detail: impl Into<String>) -> Self {
        DeadLetter {
            reason,
            detail: detail.into(),
            origin: msg.origin(),
            key: msg.key.clone(),
            payload: msg.payload.clone().unwrap_or_default(),
            truncated: false,
        }
    }
}

/// A message's original key and value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawBytes {
    /// Kafka key.
    pub key: Option<Vec<u8>>,
    /// Kafka value.
    pub payload: Vec<u8>,
}

/// A decoded input record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Ingested {
    /// Campaign upsert (`Some`) or tombstone (`None`).
    Campaign {
        /// The campaign's id (the message key).
        campaign_id: String,
        /// The definition, or `None` to delete.
        campaign: Option<Box<Campaign>>,
    },
    /// An impression or click with its verified win: what the graph reads of the event (its
    /// other fields are the claims' own, checked equal).
    Ad {
        /// Impression or click.
        kind: EventKind,
        /// When it happened.
        ts: EventTime,
        /// The viewer.
        user_id: String,
        /// The verified token's claims.
        claims: crate::token::SharedClaims,
        /// Where it was read.
        origin: Origin,
        /// The original message, kept for a dead letter downstream.
        raw: Box<RawBytes>,
    },
    /// A conversion, to be attributed.
    Conversion {
        /// The event.
        event: Conversion,
        /// Where it was read.
        origin: Origin,
        /// The original message, kept for a dead letter downstream.
        raw: Box<RawBytes>,
    },
    /// A served ad read back from `ads.served`, for the label join.
    Served(Box<Served>),
    /// Refused.
    Dead(Box<DeadLetter>),
}

/// Where a record was read: input stream, Kafka partition and offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Origin {
    /// Which input stream (see [`StreamId`]).
    pub stream: u8,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
}
