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

/// Fixes the number of threads candle computes with for the whole process: call it first thing
/// in `main`, before any thread starts (it sets an environment variable).
///
/// candle (0.11) works out that number on every matrix product: `RAYON_NUM_THREADS` if set,
/// else the machine's physical cores, which it reads from `/proc/cpuinfo` on each call. A
/// serving worker scoring a request's candidates made several such products per request, and
/// reading `/proc/cpuinfo` was about 6 % of a scored request. Setting `RAYON_NUM_THREADS` to the
/// number candle would have found keeps its choice and reads it once; a value the operator set
/// is left as it is. (rayon's global pool, which candle's CPU kernels run on, then has that many
/// threads too, instead of one per logical CPU.)
pub fn fix_compute_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}
