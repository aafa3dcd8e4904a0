//! One worker's share of the reports: which events it has counted (so duplicates and replays
//! count once), and what it added to each open row. This is the reports' durable state: it is
//! checkpointed with the worker's other state, re-injected into the dataflow after a restart,
//! and retracted from it once a row is final.

use std::collections::BTreeMap;

use crate::hash::{HashMap, Hashed, HashedMap, HashedSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::fact::ReportEvent;
use super::row::RowKey;
use super::spec::ReportSpec;
use super::take_due;
use super::totals::Totals;
use crate::checkpoint::{codec, RestoreError, StateBatch, StateStore};
use crate::records::DedupKey;
use crate::routing::{owns, KeyError, REPORT_ROWS, REPORT_SEEN};

/// What happened to an event offered to the reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Counted: what it adds to which rows.
    Counted(Vec<(RowKey, Totals)>),
    /// Already counted (a duplicate, or a replay after a restart).
    Duplicate,
    /// Every row it belongs to is already final.
    Late,
}

/// Counts of what was offered, since the last time they were taken (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportStats {
    /// Events counted in at least one report.
    pub counted: u64,
    /// Events already counted.
    pub duplicate: u64,
    /// Events whose rows were all final.
    pub late: u64,
    /// Events counted, but too late for some reports' (shorter) windows.
    pub partly_late: u64,
}

impl ReportStats {
    /// `(outcome, count)` pairs, for `adstream_report_events_total{outcome}`.
    pub fn counters(&self) -> [(&'static str, u64); 4] {
        [
            ("counted", self.counted),
            ("duplicate", self.duplicate),
            ("late", self.late),
            ("partly_late", self.partly_late),
        ]
    }
}

/// A row key as persisted: by report name, so a pipeline may reorder its reports.
#[derive(Serialize, Deserialize)]
struct StoredRow {
    report: String,
    group: Vec<String>,
    window_start: i64,
}

fn seen_key(id: DedupKey) -> Vec<u8> {
    let hex = crate::routing::hex128(id);
    // Hex digits are ASCII.
    let hex = std::str::from_utf8(&hex).unwrap_or_default();
    REPORT_SEEN.key(id as u64, &[hex])
}

/// [`StoredRow`] borrowed from the state, to write a key without copying the group.
#[derive(Serialize)]
struct StoredRowRef<'a> {
    report: &'a str,
    group: &'a [String],
    window_start: i64,
}

/// The worker an event identity is exchanged to (and whose state remembers it).
pub fn identity_route(id: DedupKey) -> u64 {
    id as u64
}

/// A worker's report state.
#[derive(Debug)]
pub struct Contributions {
    specs: Arc<[ReportSpec]>,
    worker: usize,
    seen: HashMap<DedupKey, i64>,
    forget_at: BTreeMap<i64, Vec<DedupKey>>,
    /// Open rows' shares, by a key hashed once per event for this map and `dirty_rows`.
    partial: HashedMap<Hashed<RowKey>, Totals>,
    closing: BTreeMap<i64, Vec<Hashed<RowKey>>>,
    dirty_rows: HashedSet<Hashed<RowKey>>,
    added_seen: Vec<DedupKey>,
    dropped_seen: Vec<DedupKey>,
    stale: Vec<Vec<u8>>,
    /// What was offered since the stats were last taken.
    pub stats: ReportStats,
}

impl Contributions {
    /// Empty state of worker `worker`.
    pub fn new(specs: Arc<[ReportSpec]>, worker: usize) -> Self {
        Contributions {
            specs,
            worker,
            seen: HashMap::default(),
            forget_at: BTreeMap::new(),
            partial: HashedMap::default(),
            closing: BTreeMap::new(),
            dirty_rows: HashedSet::default(),
            added_seen: Vec::new(),
            dropped_seen: Vec::new(),
            stale: Vec::new(),
            stats: ReportStats::default(),
        }
    }

    /// Counts `event`, arriving at dataflow time `time` (the watermark it came in under).
    pub fn admit(&mut self, event: &ReportEvent, time: u64) -> Admitted {
        let id = event.identity();
        if self.seen.contains_key(&id) {
            self.stats.duplicate += 1;
            return Admitted::Duplicate;
        }
        let now = i64::try_from(time).unwrap_or(i64::MAX);
        let ts = event.ts().millis();
        let dims = event.dims();
        let totals = event.totals();
        let mut rows = Vec::with_capacity(self.specs.len());
        let mut forget = i64::MIN;
        for (index, spec) in self.specs.iter().enumerate() {
            let start = spec.window_start(ts);
            let final_at = spec.final_at(start);
            if now >= final_at {
                continue;
            }
            let key = Hashed::new(RowKey {
                report: index as u16,
                group: dims.group(&spec.dimensions),
                window_start: start,
            });
            // The row's key is copied only when it is new here (or newly dirty), not per event.
            match self.partial.get_mut(&key) {
                Some(share) => share.add(&totals),
                None => {
                    self.closing.entry(final_at).or_default().push(key.clone());
                    let mut share = Totals::default();
                    share.add(&totals);
                    self.partial.insert(key.clone(), share);
                }
            }
            if !self.dirty_rows.contains(&key) {
                self.dirty_rows.insert(key.clone());
            }
            forget = forget.max(final_at);
            rows.push((key.into_key(), totals));
        }
        if rows.is_empty() {
            self.stats.late += 1;
            return Admitted::Late;
        }
        self.stats.counted += 1;
        if rows.len() < self.specs.len() {
            self.stats.partly_late += 1;
        }
        self.seen.insert(id, forget);
        self.forget_at.entry(forget).or_default().push(id);
        self.added_seen.push(id);
        Admitted::Counted(rows)
    }

    /// Rows final at watermark `frontier`: removed, with this worker's share of each (to be
    /// retracted from the dataflow, which then forgets them too). Identities that can only
    /// reach final rows are forgotten as well.
    pub fn close(&mut self, frontier: u64) -> Vec<(RowKey, Totals)> {
        let frontier = i64::try_from(frontier).unwrap_or(i64::MAX);
        let mut closed = Vec::new();
        for key in take_due(&mut self.closing, frontier) {
            if let Some(share) = self.partial.remove(&key) {
                self.dirty_rows.insert(key.clone());
                closed.push((key.into_key(), share));
            }
        }
        for id in take_due(&mut self.forget_at, frontier) {
            self.seen.remove(&id);
            self.dropped_seen.push(id);
        }
        closed
    }

    /// Open rows this worker has a share of.
    pub fn open_rows(&self) -> usize {
        self.partial.len()
    }

    /// Identities remembered.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    fn row_key(&self, key: &RowKey) -> Option<Vec<u8>> {
        let spec = self.specs.get(key.report as usize)?;
        let stored = StoredRowRef {
            report: &spec.name,
            group: &key.group,
            window_start: key.window_start,
        };
        let json = serde_json::to_string(&stored).ok()?;
        Some(REPORT_ROWS.key(self.worker as u64, &[&json]))
    }

    /// The checkpoint writes for what changed since the last call.
    pub fn take_changes(&mut self) -> StateBatch {
        let mut batch = StateBatch {
            deletes: std::mem::take(&mut self.stale),
            ..StateBatch::default()
        };
        for key in std::mem::take(&mut self.dirty_rows) {
            let Some(store_key) = self.row_key(key.key()) else {
                continue;
            };
            match self.partial.get(&key) {
                Some(share) => batch.put(store_key, share),
                None => batch.deletes.push(store_key),
            }
        }
        for id in self.added_seen.drain(..) {
            if let Some(at) = self.seen.get(&id) {
                batch.put(seen_key(id), at);
            }
        }
        for id in self.dropped_seen.drain(..) {
            batch.deletes.push(seen_key(id));
        }
        batch
    }

    /// Rebuilds worker `index` of `peers`'s state from `store`, and returns the shares to
    /// re-inject into the dataflow. Shares written by another worker index (the cluster was
    /// resized) are taken over and rewritten under this one at the next checkpoint; rows of
    /// reports no longer declared are deleted. An entry that cannot be read, or a store read
    /// error, is an error naming the key.
    pub fn restore(
        store: &dyn StateStore,
        specs: Arc<[ReportSpec]>,
        index: usize,
        peers: usize,
    ) -> Result<(Self, Vec<(RowKey, Totals)>), RestoreError> {
        let mut state = Contributions::new(specs.clone(), index);
        for (k, v) in store.scan(REPORT_SEEN.prefix.as_bytes())? {
            let (hash, [id]) = REPORT_SEEN.parse_as(&k)?;
            if !owns(hash, index, peers) {
                continue;
            }
            let id = DedupKey::from_str_radix(&id, 16)
                .map_err(|e| KeyError::new(&k, format!("identity {id:?}: {e}")))?;
            let at = codec::decode_number::<i64>(&k, &v)?;
            state.seen.insert(id, at);
            state.forget_at.entry(at).or_default().push(id);
        }
        for (k, v) in store.scan(REPORT_ROWS.prefix.as_bytes())? {
            let (writer, [json]) = REPORT_ROWS.parse_as(&k)?;
            if !owns(writer, index, peers) {
                continue;
            }
            let stored = serde_json::from_str::<StoredRow>(&json)
                .map_err(|e| KeyError::new(&k, format!("row: {e}")))?;
            let share = codec::decode::<Totals>(&k, &v)?;
            let Some(report) = specs.iter().position(|s| s.name == stored.report) else {
                // A report the pipeline no longer declares: its rows go.
                state.stale.push(k);
                continue;
            };
            let row = Hashed::new(RowKey {
                report: report as u16,
                group: stored.group,
                window_start: stored.window_start,
            });
            if writer != index as u64 {
                state.stale.push(k);
                state.dirty_rows.insert(row.clone());
            }
            let final_at = specs[report].final_at(row.key().window_start);
            let entry = state.partial.entry(row.clone()).or_insert_with(|| {
                state.closing.entry(final_at).or_default().push(row.clone());
                Totals::default()
            });
            entry.add(&share);
        }
        let shares = state
            .partial
            .iter()
            .map(|(k, t)| (k.key().clone(), *t))
            .collect();
        Ok((state, shares))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemoryStore;
    use crate::events::EventKind;
    use crate::report::fact::tests::claims;
    use crate::report::spec::Dimension;
    use crate::time::EventTime;

    fn specs() -> Arc<[ReportSpec]> {
        vec![
            ReportSpec::new("minute", &[Dimension::Campaign], 60_000, 60_000),
            ReportSpec::new("hour", &[Dimension::Advertiser], 3_600_000, 0),
        ]
        .into()
    }

    fn click(rid: &str, ts: i64) -> ReportEvent {
        ReportEvent::Touch {
            kind: EventKind::Click,
            claims: std::sync::Arc::new(claims(rid, "c1", 10)),
            ts: EventTime(ts),
        }
    }

    #[test]
    fn counts_once_and_drops_what_comes_after_finality() {
        let mut c = Contributions::new(specs(), 0);
        let Admitted::Counted(rows) = c.admit(&click("r1", 61_000), 61_000) else {
            panic!("counted")
        };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0.window_start, 60_000);
        assert_eq!(rows[1].0.group, ["adv-c1"]);
        assert_eq!(c.admit(&click("r1", 61_000), 62_000), Admitted::Duplicate);
        // The minute [60s, 120s) is final at 180s; the hour is still open.
        let Admitted::Counted(rows) = c.admit(&click("r2", 61_000), 180_000) else {
            panic!("counted in the hour")
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(c.stats.partly_late, 1);
        assert_eq!(c.admit(&click("r3", 61_000), 3_600_000), Admitted::Late);
    }

    #[test]
    fn close_hands_back_final_shares_and_forgets_identities() {
        let mut c = Contributions::new(specs(), 0);
        c.admit(&click("r1", 1_000), 1_000);
        c.admit(&click("r2", 2_000), 2_000);
        let closed = c.close(120_000);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].1.clicks, 2);
        assert_eq!(c.open_rows(), 1);
        assert_eq!(
            c.remembered(),
            2,
            "the hour is open: r1 and r2 may still be replayed"
        );
        assert!(c.close(3_600_000).len() == 1);
        assert_eq!(c.remembered(), 0);
    }

    #[test]
    fn restores_shares_and_identities_and_takes_over_other_workers() {
        let store = MemoryStore::default();
        let mut w0 = Contributions::new(specs(), 0);
        let mut w1 = Contributions::new(specs(), 1);
        w0.admit(&click("r1", 1_000), 1_000);
        w1.admit(&click("r2", 1_500), 1_500);
        store.persist(w0.take_changes());
        store.persist(w1.take_changes());
        // One worker now: it takes both shares over and still knows both identities.
        let (mut r, shares) = Contributions::restore(&store, specs(), 0, 1).unwrap();
        let minute: Vec<_> = shares.iter().filter(|(k, _)| k.report == 0).collect();
        assert_eq!(minute.len(), 1);
        assert_eq!(minute[0].1.clicks, 2);
        assert_eq!(r.admit(&click("r2", 1_500), 5_000), Admitted::Duplicate);
        let batch = r.take_changes();
        assert_eq!(batch.deletes.len(), 2, "worker 1's rows move to worker 0");
        assert_eq!(batch.puts.len(), 2);
        store.persist(batch);
        let (_, again) = Contributions::restore(&store, specs(), 0, 1).unwrap();
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|(_, t)| t.clicks == 2));
    }

    #[test]
    fn rows_of_removed_reports_are_deleted() {
        let store = MemoryStore::default();
        let mut w = Contributions::new(specs(), 0);
        w.admit(&click("r1", 1_000), 1_000);
        store.persist(w.take_changes());
        let only_hour: Arc<[ReportSpec]> = vec![specs()[1].clone()].into();
        let (mut r, shares) = Contributions::restore(&store, only_hour, 0, 1).unwrap();
        assert_eq!(shares.len(), 1);
        assert_eq!(shares[0].0.report, 0);
        assert_eq!(r.take_changes().deletes.len(), 1);
    }

    #[test]
    fn state_keys_are_written_as_before() {
        // Identities as 32 lowercase hex digits, rows as their JSON: keys of earlier releases.
        for id in [
            0u128,
            9,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            assert_eq!(
                seen_key(id),
                REPORT_SEEN.key(id as u64, &[&format!("{id:032x}")])
            );
        }
        let w = Contributions::new(specs(), 0);
        let key = RowKey {
            report: 0,
            group: vec!["c\"1".into(), "50%\u{0}\n".into()],
            window_start: -60_000,
        };
        let owned = StoredRow {
            report: specs()[0].name.clone(),
            group: key.group.clone(),
            window_start: key.window_start,
        };
        let json = serde_json::to_string(&owned).unwrap();
        assert_eq!(w.row_key(&key), Some(REPORT_ROWS.key(0, &[&json])));
    }

    #[test]
    fn unusual_groups_restore_and_bad_entries_stop_the_restore() {
        let store = MemoryStore::default();
        let mut w = Contributions::new(specs(), 0);
        w.admit(&click("r1", 1_000), 1_000);
        let mut batch = w.take_changes();
        // A row whose group holds `%`, a NUL and a newline, as a campaign id might have.
        let (key, value) = batch
            .puts
            .iter()
            .find(|(k, _)| k.starts_with(b"report/rows/"))
            .unwrap()
            .clone();
        let (writer, [json]) = REPORT_ROWS.parse_as(&key).unwrap();
        let mut row: serde_json::Value = serde_json::from_str(&json).unwrap();
        row["group"] = serde_json::json!(["50%\u{0}\n"]);
        batch
            .puts
            .push((REPORT_ROWS.key(writer, &[&row.to_string()]), value.clone()));
        store.persist(batch);
        let (_, shares) = Contributions::restore(&store, specs(), 0, 1).unwrap();
        assert!(shares
            .iter()
            .any(|(k, _)| k.group == vec!["50%\u{0}\n".to_string()]));
        let cases = [
            (key.clone(), b"nope".to_vec()),
            (REPORT_ROWS.key(0, &["{not a row"]), value.clone()),
            (seen_key(9), b"later".to_vec()),
            (REPORT_SEEN.key(9, &["xyz"]), b"5".to_vec()),
        ];
        for (key, value) in cases {
            let store = MemoryStore::default();
            crate::checkpoint::testing::put(&store, vec![(key.clone(), value)]);
            let e = Contributions::restore(&store, specs(), 0, 1).unwrap_err();
            assert!(
                e.to_string().contains(&crate::routing::show_key(&key)),
                "{e}"
            );
        }
        for prefix in ["report/seen/", "report/rows/"] {
            let store = crate::checkpoint::testing::BrokenStore {
                broken: prefix.as_bytes().to_vec(),
                ..Default::default()
            };
            assert!(matches!(
                Contributions::restore(&store, specs(), 0, 1),
                Err(RestoreError::Scan(_))
            ));
        }
    }
}
