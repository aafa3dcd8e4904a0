//! The online DNN ranker: features, model, trainer, registry and the serving side.
//!
//! ```text
//!  label join ─▶ examples ─exchange to worker 0─▶ trainer thread (CPU or GPU)
//!                                                   │ progressive validation, AdamW
//!                                                   │ every snapshot interval: registry version,
//!                                                   ▼ guards against the live model
//!  serving replicas ◀─ ModelSlot per process ◀─ broadcast ◀─ published versions
//! ```
//!
//! [`features`] is the one definition of the model's input for serving and training;
//! [`model`] the network and loss; [`optim`] AdamW with checkpointable moments; [`validation`]
//! progressive metrics; [`guards`] the publish decision; [`registry`] versions on disk;
//! [`trainer`] the thread; [`link`] its channels to the graph; [`scoring`] the serving side and
//! [`prior`] the ranker used before any model is live; [`operator`] the graph's shell.

pub mod features;
pub mod guards;
pub mod init;
pub mod link;
pub mod model;
pub mod operator;
pub mod optim;
pub mod prior;
pub mod registry;
pub mod scoring;
pub mod trainer;
pub mod validation;
