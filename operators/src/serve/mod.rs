//! Ad serving inside the graph: an OpenRTB request in, retrieval over the replicated catalog and
//! budget state, ranking, a generalized second-price auction, and signed wins out.
//!
//! Each stage is plain data and functions (the request schema in [`crate::request`],
//! [`retrieval`], [`prerank`], ranking in [`crate::ranker`], [`auction`]), tested without timely; [`replica`]
//! holds a worker's serving state and runs the stages on it, and [`operator`] is the shell that
//! feeds it from the graph.

pub mod auction;
pub mod brand_safety;
pub mod currency;
pub mod explain;
pub mod formats;
pub mod operator;
pub mod prerank;
pub mod reach;
pub mod replica;
pub mod retrieval;
pub mod spend_cache;
pub mod throttle;

pub use crate::ranker::prior as ranking;
pub use crate::request;
