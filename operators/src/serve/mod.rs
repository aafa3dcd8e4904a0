//! Ad serving inside the graph: an OpenRTB request in, retrieval over the replicated catalog and
//! budget state, ranking, a generalized second-price auction, and signed wins out.
//!
//! Each stage is plain data and functions ([`request`], [`retrieval`], [`ranking`], [`auction`]),
//! tested without timely; [`operator`] is the shell that runs them on a worker's replica.

pub mod auction;
pub mod operator;
pub mod ranking;
pub mod request;
pub mod retrieval;
