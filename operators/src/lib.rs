//! adstream's dataflow operators and the domain logic they wrap.
//!
//! Each stage of the funnel is a module: [`source`] reads Kafka partitions, [`ingest`] decodes
//! and verifies, [`catalog`] holds campaigns, [`attribution`] matches conversions to touches,
//! [`history`] keeps each user's recent engagement for the ranker's features, [`activity`]
//! each campaign's counts behind serving's prior,
//! [`ledger`] charges spend exactly once, [`labels`] joins served ads with their outcomes into
//! training examples, [`report`] aggregates everything into reporting rows, [`deliver`] holds
//! checkpoints behind what sinks have not delivered yet, and [`checkpoint`] is the protocol they
//! all follow.
//! [`graph`] wires them together. Domain logic is plain Rust, tested without timely; the
//! operators are thin shells over it.
#![deny(missing_docs)]

pub mod activity;
pub mod attribution;
pub mod catalog;
pub mod checkpoint;

pub mod deliver;
pub mod events;
pub mod geo;
pub mod graph;
pub mod hash;
pub mod history;
pub mod ingest;
pub mod labels;
pub mod ledger;
pub mod pacing;
pub mod quality;
pub mod ranker;
pub mod records;
pub mod report;
pub mod request;
pub mod routing;
pub mod serve;
pub mod source;
pub mod time;
pub mod token;
