//! The channel pair between the graph's training shell ([`super::operator`]) and the trainer
//! thread ([`super::trainer`]): both import this, neither imports the other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use super::scoring::PublishedModel;
use crate::records::LabeledExample;

/// Worker 0's link to the trainer thread.
pub struct TrainerLink {
    /// Examples out.
    pub examples: SyncSender<LabeledExample>,
    /// Published versions in.
    pub published: Receiver<PublishedModel>,
    /// Examples dropped because the trainer's queue was full.
    pub dropped: Arc<AtomicU64>,
}

/// Counts an example the graph could not queue.
pub fn count_drop(dropped: &AtomicU64) {
    dropped.fetch_add(1, Ordering::Relaxed);
}
