//! Ad serving inside the graph: an OpenRTB request in, retrieval over the replicated catalog and
//! budget state, ranking, a generalized second-price auction, and signed wins out.
//!
//! Each stage is plain data and functions ([`request`], [`retrieval`], [`ranking`], [`auction`]),
//! tested without timely; [`replica`] holds a worker's serving state and runs the stages on it,
//! and [`operator`] is the shell that feeds it from the graph.

pub mod auction;
pub mod operator;
pub mod ranking;
pub mod replica;
pub mod request;
pub mod retrieval;
