//! The publisher: turns the changes differential dataflow reports for each row into upsert
//! records, at most once per `update_ms` of event time per row, and once more, `final`, when
//! the watermark passes the window's end plus `final_after_ms`.

use std::collections::{BTreeMap, VecDeque};

use crate::hash::{HashMap, HashSet};
use std::sync::Arc;

use super::row::{render, ReportRow, RowKey};
use super::spec::ReportSpec;
use super::take_due;
use super::totals::Totals;

/// The rows of one worker (the rows differential dataflow routed to it).
#[derive(Debug)]
pub struct Publisher {
    specs: Arc<[ReportSpec]>,
    rows: HashMap<RowKey, Totals>,
    dirty: HashSet<RowKey>,
    closing: BTreeMap<i64, Vec<RowKey>>,
    pending: Vec<(u64, RowKey, Totals)>,
    next_update: Vec<u64>,
    watermark: i64,
    /// Rows decided but not rendered yet: (row, its totals, the watermark, final).
    due: VecDeque<(RowKey, Totals, i64, bool)>,
}

impl Publisher {
    /// A publisher for `specs`.
    pub fn new(specs: Arc<[ReportSpec]>) -> Self {
        let next_update = vec![0; specs.len()];
        Publisher {
            specs,
            rows: HashMap::default(),
            dirty: HashSet::default(),
            closing: BTreeMap::new(),
            pending: Vec::new(),
            next_update,
            watermark: i64::MIN,
            due: VecDeque::new(),
        }
    }

    /// A change at dataflow time `time`: `diff` +1 for a row's new value, -1 for its old one.
    /// Only new values matter: a retraction alone is the row leaving the dataflow after it was
    /// final, which changes nothing published.
    pub fn offer(&mut self, time: u64, key: RowKey, totals: Totals, diff: isize) {
        if diff > 0 {
            self.pending.push((time, key, totals));
        }
    }

    /// Rows open now.
    pub fn open_rows(&self) -> usize {
        self.rows.len()
    }

    /// Applies every change before the watermark `frontier` (`None`: input complete) and returns
    /// the rows to publish: final ones, and changed ones whose report's update is due.
    pub fn advance(&mut self, frontier: Option<u64>) -> Vec<ReportRow> {
        self.advance_at_most(frontier, usize::MAX)
    }

    /// [`Publisher::advance`], rendering at most `limit` rows (the rows due longest first); the
    /// others stay due, as they were when decided, and come first from the next call
    /// ([`Publisher::has_due`]). At the end of input (`None`) every row due is rendered.
    pub fn advance_at_most(&mut self, frontier: Option<u64>, limit: usize) -> Vec<ReportRow> {
        self.decide(frontier);
        let n = if frontier.is_none() {
            self.due.len()
        } else {
            limit.min(self.due.len())
        };
        let specs = &self.specs;
        self.due
            .drain(..n)
            .filter_map(|(key, totals, watermark, final_)| {
                let spec = specs.get(key.report as usize)?;
                Some(render(spec, &key, &totals, watermark, final_))
            })
            .collect()
    }

    /// Whether rows decided by an earlier call wait to be rendered.
    pub fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    /// Applies every change before `frontier` and queues the rows due (in [`Publisher::due`]).
    fn decide(&mut self, frontier: Option<u64>) {
        let f = frontier.unwrap_or(u64::MAX);
        if frontier.is_some() {
            self.watermark = i64::try_from(f).unwrap_or(i64::MAX);
        }
        let watermark = self.watermark;
        if !self.pending.is_empty() {
            self.pending.sort_by_key(|(t, _, _)| *t);
            let ready = self.pending.partition_point(|(t, _, _)| *t < f);
            for (_, key, totals) in self.pending.drain(..ready) {
                let Some(spec) = self.specs.get(key.report as usize) else {
                    continue;
                };
                if !self.rows.contains_key(&key) {
                    let at = spec.final_at(key.window_start);
                    self.closing.entry(at).or_default().push(key.clone());
                }
                self.rows.insert(key.clone(), totals);
                self.dirty.insert(key);
            }
        }
        // At the end of input (a shutdown) nothing becomes final: a restart goes on counting.
        let finals = match frontier {
            Some(_) => take_due(&mut self.closing, watermark),
            None => Vec::new(),
        };
        for key in finals {
            self.dirty.remove(&key);
            if let Some(totals) = self.rows.remove(&key) {
                self.due.push_back((key, totals, watermark, true));
            }
        }
        let due: Vec<bool> = self
            .next_update
            .iter()
            .map(|next| frontier.is_none() || f >= *next)
            .collect();
        if self.dirty.iter().any(|k| due[k.report as usize]) {
            let (publish, keep): (Vec<RowKey>, Vec<RowKey>) = std::mem::take(&mut self.dirty)
                .into_iter()
                .partition(|k| due[k.report as usize]);
            self.dirty = keep.into_iter().collect();
            let mut publish = publish;
            publish.sort();
            for key in &publish {
                if let Some(spec) = self.specs.get(key.report as usize) {
                    // The next update of this report is due a full period after this one.
                    let step = spec.update_ms.max(1) as u64;
                    self.next_update[key.report as usize] =
                        (f / step).saturating_add(1).saturating_mul(step);
                }
            }
            for key in publish {
                if let Some(totals) = self.rows.get(&key) {
                    self.due.push_back((key, *totals, watermark, false));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::spec::Dimension;

    fn key(start: i64) -> RowKey {
        RowKey {
            report: 0,
            group: vec!["c1".into()],
            window_start: start,
        }
    }

    fn spend(micros: i64) -> Totals {
        Totals {
            spend_micros: micros,
            ..Totals::default()
        }
    }

    #[test]
    fn coalesces_updates_then_publishes_final_once() {
        let mut spec = ReportSpec::new("m", &[Dimension::Campaign], 60_000, 30_000);
        spec.update_ms = 10_000;
        let mut p = Publisher::new(vec![spec].into());
        p.offer(1_000, key(0), spend(5), 1);
        p.offer(2_000, key(0), spend(5), -1);
        p.offer(2_000, key(0), spend(12), 1);
        // Nothing before the watermark passes a change.
        assert!(p.advance(Some(1_000)).is_empty());
        let rows = p.advance(Some(1_500));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].value["spend_micros"], 5);
        assert_eq!(rows[0].value["final"], false);
        // The next update is due at 10s of event time: changes until then are coalesced.
        p.offer(3_000, key(0), spend(20), 1);
        assert!(p.advance(Some(2_500)).is_empty());
        assert!(p.advance(Some(9_000)).is_empty());
        let rows = p.advance(Some(10_000));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].value["spend_micros"], 20);
        // Final at 60s + 30s.
        assert!(p.advance(Some(89_999)).is_empty());
        let rows = p.advance(Some(90_000));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].value["final"], true);
        assert_eq!(rows[0].value["spend_micros"], 20);
        assert_eq!(p.open_rows(), 0);
        // The dataflow then retracts the row: nothing more is published.
        p.offer(90_000, key(0), spend(20), -1);
        assert!(p.advance(Some(200_000)).is_empty());
    }

    fn row_key(group: &str) -> RowKey {
        RowKey {
            report: 0,
            group: vec![group.into()],
            window_start: 0,
        }
    }

    #[test]
    fn rows_due_are_rendered_a_slice_at_a_time_in_order() {
        let spec = ReportSpec::new("m", &[Dimension::Campaign], 60_000, 30_000);
        let mut whole = Publisher::new(vec![spec.clone()].into());
        let mut sliced = Publisher::new(vec![spec].into());
        for p in [&mut whole, &mut sliced] {
            for i in 0..7 {
                p.offer(1_000, row_key(&format!("c{i}")), spend(i), 1);
            }
        }
        let expected = whole.advance(Some(2_000));
        assert_eq!(expected.len(), 7);
        assert!(!whole.has_due());
        let mut got = sliced.advance_at_most(Some(2_000), 3);
        assert_eq!(got.len(), 3);
        assert!(sliced.has_due());
        // A later change of a row still due is published after the value decided first.
        sliced.offer(2_500, row_key("c6"), spend(60), 1);
        got.extend(sliced.advance_at_most(Some(2_000), 3));
        got.extend(sliced.advance_at_most(Some(2_000), 3));
        assert!(!sliced.has_due());
        assert_eq!(got, expected, "the same rows, in the same order");
        // At the end of input everything due goes out, whatever the limit.
        let mut p = Publisher::new(
            vec![ReportSpec::new("m", &[Dimension::Campaign], 60_000, 30_000)].into(),
        );
        for i in 0..5 {
            p.offer(1_000, row_key(&format!("c{i}")), spend(i), 1);
        }
        assert_eq!(p.advance_at_most(Some(2_000), 2).len(), 2);
        assert_eq!(p.advance_at_most(None, 2).len(), 3);
        assert!(!p.has_due());
    }

    #[test]
    fn a_row_final_while_an_update_of_it_waits_goes_out_after_it() {
        let mut spec = ReportSpec::new("m", &[Dimension::Campaign], 60_000, 30_000);
        spec.update_ms = 1;
        let mut p = Publisher::new(vec![spec].into());
        p.offer(1_000, row_key("a"), spend(1), 1);
        p.offer(1_000, row_key("b"), spend(2), 1);
        let first = p.advance_at_most(Some(2_000), 1);
        assert_eq!(first.len(), 1);
        let rest = p.advance_at_most(Some(90_000), 10);
        let finals: Vec<bool> = rest.iter().map(|r| r.value["final"] == true).collect();
        assert_eq!(
            finals,
            vec![false, true, true],
            "b's update, then both final"
        );
        assert_eq!(p.open_rows(), 0);
    }

    #[test]
    fn end_of_input_flushes_changed_rows() {
        let spec = ReportSpec::new("m", &[Dimension::Campaign], 60_000, 30_000);
        let mut p = Publisher::new(vec![spec].into());
        p.offer(1_000, key(0), spend(7), 1);
        let rows = p.advance(None);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].value["final"], false,
            "a shutdown finalises nothing"
        );
    }
}
