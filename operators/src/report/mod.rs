//! Reporting: windowed aggregates per group (campaign × minute, advertiser × hour, country ×
//! device × hour, or whatever a pipeline declares), kept by differential dataflow and published
//! as upsert rows on compacted `report.*` topics.
//!
//! ```text
//!  served, verified impressions/clicks,   ┌──────────────┐  (row, Δtotals)  ┌────────────┐  rows  ┌───────────┐
//!  ledger charges, attributed conversions ─▶│ Contributions │────────────────▶│ count_total │──────▶│ Publisher │─▶ ReportRow
//!      (exchanged by event identity)      │ dedup, windows│  (exchanged by  └────────────┘ ±rows └───────────┘
//!                                         │ checkpointed  │   row: DD)                       coalesce, finality
//!                                         └──────────────┘
//! ```
//!
//! * [`fact`]: what each input event adds ([`Totals`]) and to which groups ([`Dims`]).
//! * [`contributions`]: per worker, drops duplicates and replays (by event identity) and facts
//!   that come after their window is final, and keeps this worker's share of every open row, the
//!   state that is checkpointed (and re-injected into the dataflow on restart).
//! * Differential's `count_total`, with [`Totals`] as the difference type, sums the shares of
//!   every worker into each row and emits a row's old and new value whenever it changes.
//! * [`publisher`]: coalesces changes per `update_ms` of event time and emits a row for the last
//!   time, `final`, once the watermark passes the window's end plus `final_after_ms`.
//! * [`row`]: the row document analysts read (`schemas/report_row.schema.json`).

pub mod contributions;
pub mod fact;
pub mod operator;
pub mod publisher;
pub mod row;
pub mod spec;
pub mod totals;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use fact::{Dims, ReportEvent};
pub use row::{ReportRow, RowKey};
pub use spec::{Dimension, Measure, ReportSpec, SpecError};
pub use totals::Totals;

/// Removes and returns the entries of `schedule` due at or before `at` (an event-time index of
/// rows or identities by when they close).
pub(crate) fn take_due<T>(schedule: &mut BTreeMap<i64, Vec<T>>, at: i64) -> Vec<T> {
    let later = match at.checked_add(1) {
        Some(next) => schedule.split_off(&next),
        None => BTreeMap::new(),
    };
    std::mem::replace(schedule, later)
        .into_values()
        .flatten()
        .collect()
}
