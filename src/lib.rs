//! adstream: one timely dataflow that keeps ads spend, serves, trains and reports, from Kafka.
//!
//! This crate is the runtime around the operators of `adstream-operators`: the command line
//! ([`cli`]), pipeline files ([`pipeline`]), Kafka clients ([`kafka`]), the RocksDB state store
//! ([`state`]), the HTTP API ([`http`]) and its [`server`], the cluster runtime ([`runtime`]) and
//! its [`fail_stop`], plus, with the `sim` feature (on by default), the self-contained `demo`,
//! whose traffic simulator and benches live in the `adstream-sim` crate.
#![deny(missing_docs)]

pub mod billing_notice;
pub mod cli;
pub mod dashboard;
#[cfg(feature = "sim")]
pub mod demo;
pub mod fail_stop;
pub mod health;
pub mod http;
pub mod kafka;
pub mod live;
pub mod metrics;
pub mod pipeline;
pub mod report_tail;
pub mod runtime;
pub mod server;
pub mod serving;
pub mod state;
pub mod train;
