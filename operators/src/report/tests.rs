//! The reporting dataflow end to end (timely + differential, several workers): rows equal the
//! sums of the distinct events, whatever their order and duplicates, across a restart, and
//! windows close on the watermark.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use timely::dataflow::operators::{Input, Inspect, Probe};
use timely::dataflow::ProbeHandle;

use super::fact::tests::claims;
use super::operator::{reports, ReportStatsHandle};
use super::{Dimension, ReportEvent, ReportRow, ReportSpec};
use crate::checkpoint::{MemoryStore, StateStore};
use crate::events::EventKind;
use crate::records::Charged;
use crate::time::EventTime;

fn specs(final_after_ms: i64) -> Arc<[ReportSpec]> {
    vec![
        ReportSpec::new("minute", &[Dimension::Campaign], 60_000, final_after_ms),
        ReportSpec::new(
            "geo_hour",
            &[Dimension::Country, Dimension::Device],
            3_600_000,
            final_after_ms,
        ),
    ]
    .into()
}

/// Event `i`: an impression, a click or a charge of request `r{i/3}` on one of three campaigns.
fn event(i: u32, ts: i64) -> ReportEvent {
    let rid = format!("r{}", i / 3);
    let c = claims(&rid, &format!("c{}", (i / 3) % 3), 1_000 + u64::from(i / 3));
    match i % 3 {
        0 => ReportEvent::Touch {
            kind: EventKind::Impression,
            claims: std::sync::Arc::new(c),
            ts: EventTime(ts),
        },
        1 => ReportEvent::Touch {
            kind: EventKind::Click,
            claims: std::sync::Arc::new(c),
            ts: EventTime(ts),
        },
        _ => ReportEvent::Charged(Box::new(Charged {
            identity: u128::from(i),
            billed_micros: c.charge_micros,
            overdelivery_micros: 0,
            replayed: false,
            claims: std::sync::Arc::new(c),
            kind: EventKind::Click,
            ts: EventTime(ts),
        })),
    }
}

/// Runs the reports over `arrivals` ((dataflow time, event), in time order) on `workers`
/// workers, then advances the watermark to `end` (`None`: closes the input, a shutdown).
fn run(
    store: Arc<MemoryStore>,
    specs: Arc<[ReportSpec]>,
    arrivals: Vec<(u64, ReportEvent)>,
    end: Option<u64>,
    workers: usize,
) -> (Vec<ReportRow>, ReportStatsHandle) {
    let rows: Arc<Mutex<Vec<ReportRow>>> = Arc::default();
    let stats = ReportStatsHandle::default();
    let (rows2, stats2) = (rows.clone(), stats.clone());
    let arrivals = Arc::new(Mutex::new(Some(arrivals)));
    timely::execute(timely::Config::process(workers), move |worker| {
        let probe = ProbeHandle::new();
        let store: Arc<dyn StateStore> = store.clone();
        let (rows, stats, specs) = (rows2.clone(), stats2.clone(), specs.clone());
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Vec<ReportEvent>>();
            reports(stream, specs, 1_000, store, stats, &probe)
                .inspect(move |r: &ReportRow| rows.lock().unwrap().push(r.clone()))
                .probe_with(&probe);
            input
        });
        if worker.index() == 0 {
            for (at, e) in arrivals.lock().unwrap().take().unwrap_or_default() {
                if at > *input.time() {
                    input.advance_to(at);
                }
                input.send(e);
            }
        }
        if let Some(end) = end {
            input.advance_to(end);
            while probe.less_than(&end) {
                worker.step();
            }
        }
    })
    .unwrap();
    let rows = rows.lock().unwrap().clone();
    (rows, stats)
}

/// The last row published per key.
fn latest(rows: &[ReportRow]) -> BTreeMap<String, serde_json::Value> {
    rows.iter()
        .map(|r| (format!("{}/{}", r.report, r.key), r.value.clone()))
        .collect()
}

/// Spend per (report, key) over the distinct events `ids`.
fn expected_spend(ids: &[(u32, i64)], specs: &[ReportSpec]) -> BTreeMap<String, i64> {
    let mut distinct: BTreeMap<u32, i64> = BTreeMap::new();
    for (i, ts) in ids {
        distinct.entry(*i).or_insert(*ts);
    }
    let mut out = BTreeMap::new();
    for (i, ts) in distinct {
        let e = event(i, ts);
        for (r, spec) in specs.iter().enumerate() {
            let key = super::row::kafka_key(&super::RowKey {
                report: r as u16,
                group: e.dims().group(&spec.dimensions),
                window_start: spec.window_start(ts),
            });
            *out.entry(format!("{r}/{key}")).or_insert(0) += e.totals().spend_micros;
        }
    }
    out
}

fn spend_of(rows: &BTreeMap<String, serde_json::Value>) -> BTreeMap<String, i64> {
    rows.iter()
        .map(|(k, v)| (k.clone(), v["spend_micros"].as_i64().unwrap()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any arrival order, with duplicates, on two workers: each row's latest value is the sum
    /// of its distinct events.
    #[test]
    fn rows_sum_distinct_events_in_any_order(
        events in proptest::collection::vec((0u32..60, 0i64..300_000), 1..80),
        dups in proptest::collection::vec(0usize..80, 0..30),
    ) {
        let specs = specs(3_600_000);
        let mut arrivals: Vec<(u32, i64)> = events.clone();
        for d in dups {
            if let Some(e) = events.get(d % events.len()) {
                // A duplicate keeps the identity, whatever time it claims.
                arrivals.push((e.0, e.1));
            }
        }
        // The first occurrence of an id fixes its time; arrival order is the generated order.
        let mut first: BTreeMap<u32, i64> = BTreeMap::new();
        let fed: Vec<(u64, ReportEvent)> = arrivals
            .iter()
            .enumerate()
            .map(|(n, (i, ts))| {
                let ts = *first.entry(*i).or_insert(*ts);
                (n as u64, event(*i, ts))
            })
            .collect();
        let (rows, stats) = run(Arc::new(MemoryStore::default()), specs.clone(), fed, None, 2);
        let want: Vec<(u32, i64)> = first.into_iter().collect();
        prop_assert_eq!(spend_of(&latest(&rows)), expected_spend(&want, &specs));
        let stats = *stats.lock().unwrap();
        prop_assert_eq!(stats.counted as usize, want.len());
        prop_assert_eq!((stats.counted + stats.duplicate) as usize, arrivals.len());
    }
}

/// A shutdown, then a restart that replays part of the first run's input: rows go on from the
/// checkpointed shares and nothing counts twice.
#[test]
fn a_restart_resumes_rows_and_ignores_replays() {
    let specs = specs(3_600_000);
    let store = Arc::new(MemoryStore::default());
    let first: Vec<(u32, i64)> = (0..30).map(|i| (i, 1_000 + i64::from(i) * 1_000)).collect();
    let second: Vec<(u32, i64)> = (20..60)
        .map(|i| (i, 1_000 + i64::from(i) * 1_000))
        .collect();
    let feed = |ids: &[(u32, i64)]| -> Vec<(u64, ReportEvent)> {
        ids.iter()
            .map(|(i, ts)| (*ts as u64, event(*i, *ts)))
            .collect()
    };
    let (rows1, _) = run(store.clone(), specs.clone(), feed(&first), None, 2);
    let (rows2, stats) = run(store.clone(), specs.clone(), feed(&second), None, 1);
    let mut all = rows1;
    all.extend(rows2);
    let want: Vec<(u32, i64)> = first.iter().chain(&second).copied().collect();
    assert_eq!(spend_of(&latest(&all)), expected_spend(&want, &specs));
    assert_eq!(stats.lock().unwrap().duplicate, 10, "r20..r29 replayed");
}

/// A window becomes final once the watermark passes its end plus `final_after_ms`; an event
/// for it after that changes nothing and is counted as late; final rows leave the state.
#[test]
fn windows_close_on_the_watermark() {
    let specs: Arc<[ReportSpec]> = vec![ReportSpec::new(
        "minute",
        &[Dimension::Campaign],
        60_000,
        30_000,
    )]
    .into();
    let store = Arc::new(MemoryStore::default());
    let arrivals = vec![
        (1_000, event(2, 1_000)),
        (2_000, event(5, 2_000)),
        // Final at 60s + 30s; this one is late for the minute [0, 60s).
        (95_000, event(8, 50_000)),
        (95_000, event(11, 95_000)),
    ];
    let (rows, stats) = run(store.clone(), specs, arrivals, Some(200_000), 2);
    let finals: Vec<&ReportRow> = rows.iter().filter(|r| r.value["final"] == true).collect();
    assert_eq!(
        finals.len(),
        3,
        "c0 and c1 of the first minute, c0 of the second: {rows:?}"
    );
    let first_c0 = finals
        .iter()
        .find(|r| r.key == "c0@1970-01-01T00:00:00Z")
        .expect("c0's first minute");
    assert_eq!(first_c0.value["spend_micros"], 1_000);
    assert_eq!(stats.lock().unwrap().late, 1);
    let left: Vec<_> = store
        .snapshot()
        .into_keys()
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .filter(|k| k.starts_with("report/"))
        .collect();
    assert!(
        left.is_empty(),
        "final rows and their identities are forgotten: {left:?}"
    );
}
