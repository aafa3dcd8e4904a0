//! The live view a process serves over HTTP: every campaign's budget state, kept current by the
//! ledger's broadcast updates.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use adstream_operators::ledger::operator::LedgerOutput;
use adstream_operators::ledger::status::{BudgetBook, BudgetStatus};
use adstream_operators::pacing::PacingUpdate;
use adstream_operators::time::EventTime;

/// Shared between the dataflow workers (writers) and the HTTP handlers (readers).
#[derive(Default)]
pub struct LiveState {
    book: RwLock<BudgetBook>,
    sources_caught_up: RwLock<Vec<Arc<AtomicBool>>>,
}

impl LiveState {
    /// Folds a ledger update in.
    pub fn apply(&self, out: &LedgerOutput) {
        if let Ok(mut book) = self.book.write() {
            book.apply(out);
        }
    }

    /// Folds a campaign's pacing update in.
    pub fn apply_pacing(&self, update: &PacingUpdate) {
        if let Ok(mut book) = self.book.write() {
            book.apply_pacing(update);
        }
    }

    /// A campaign's status now.
    pub fn status(&self, campaign: &str) -> Option<BudgetStatus> {
        self.book.read().ok()?.status(campaign, EventTime::now())
    }

    /// A campaign's status for budget day `day`.
    pub fn status_on(&self, campaign: &str, day: chrono::NaiveDate) -> Option<BudgetStatus> {
        self.book
            .read()
            .ok()?
            .status_on(campaign, day, EventTime::now())
    }

    /// Every campaign's status now.
    pub fn all(&self) -> Vec<BudgetStatus> {
        let Ok(book) = self.book.read() else {
            return Vec::new();
        };
        let now = EventTime::now();
        book.campaign_ids()
            .iter()
            .filter_map(|c| book.status(c, now))
            .collect()
    }

    /// Registers a source's caught-up flag for readiness.
    pub fn track_source(&self, flag: Arc<AtomicBool>) {
        if let Ok(mut v) = self.sources_caught_up.write() {
            v.push(flag);
        }
    }

    /// Ready once every source of this process has caught up with its partitions.
    pub fn ready(&self) -> bool {
        self.sources_caught_up
            .read()
            .map(|v| !v.is_empty() && v.iter().all(|f| f.load(Ordering::Relaxed)))
            .unwrap_or(false)
    }

    /// Number of campaigns known.
    pub fn campaigns(&self) -> usize {
        self.book
            .read()
            .map(|b| b.campaign_ids().len())
            .unwrap_or(0)
    }
}
