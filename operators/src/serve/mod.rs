//! Ad serving inside the graph: an OpenRTB request in, retrieval over the replicated catalog and
//! budget state, ranking, a generalized second-price auction, and signed wins out.
//!
//! Each stage is plain data and functions (the request schema in [`crate::request`],
//! [`retrieval`], ranking in [`crate::ranker`], [`auction`]), tested without timely; [`operator`] is the shell that runs them on a worker's replica.

pub mod auction;
pub mod operator;
pub mod retrieval;

pub use crate::ranker::prior as ranking;
pub use crate::request;
