//! `adstream bench`: figures for the ledger's hot path, printed (speed targets live here, never
//! in timed unit tests).
//!
//! - `ledger`: events/s on one core through decode (parse + validate + token verify) + dedup +
//!   ledger, from pre-built messages in memory; and through the whole billing dataflow
//!   (source operator, exchange, attribution, ledger, checkpoints to an in-memory store).
//! - `dedup-memory`: resident memory per million live dedup keys.
//! - [`freshness`]: produce-to-API delay and end-to-end throughput against a running pipeline.
//! - [`pacing`]: the pacing law against an ASAP baseline over simulated days.
//! - [`ranker`]: the online ranker's AUC over a simulated day, and training examples/s.
//! - [`serving`]: one worker's answers per second and latency, plain and with mixed formats
//!   and block lists, over catalogs of any size, with the prior and with a live model.
//! - [`load`]: requests per second and latency over HTTP against a running pipeline.
//!
//! The pacing and ranker benches see the simulated world through [`market`]: serving's own
//! retrieval decides which campaigns may bid, and the pacing bench answers every request with
//! serving's [`adstream_operators::serve::operator::answer`] (headroom, auction, pricing).

pub mod freshness;
pub mod load;
pub mod market;
pub mod pacing;
pub mod ranker;
pub mod serving;

/// Produces `n` active CPM/CPC/CPA campaigns (those of [`serving::campaign`]: targeting over
/// 10 countries and 3 device types, 20 campaigns per advertiser, banner, video, native and audio creatives,
/// domains and categories) to `target`'s campaigns topic, for serving benchmarks over HTTP.
pub fn seed_campaigns(target: &crate::Target, n: usize) -> anyhow::Result<()> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = target.kafka.create()?;
    for i in 0..n {
        let id = format!("c{i}");
        let doc = serving::campaign(i);
        let mut record = BaseRecord::to(&target.topics.campaigns)
            .key(&id)
            .payload(&doc);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(std::time::Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(std::time::Duration::from_secs(60))?;
    println!("seeded {n} campaigns");
    Ok(())
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use adstream_operators::attribution::Windows;
use adstream_operators::catalog::Catalog;
use adstream_operators::checkpoint::StateStore;
use adstream_operators::events::Billing;
use adstream_operators::graph::{self, GraphConfig, GraphContext, GraphInputs};
use adstream_operators::ingest::{decode, DecodeConfig};
use adstream_operators::labels::LabelConfig;
use adstream_operators::ledger::operator::LedgerConfig;
use adstream_operators::ledger::{DedupEntry, DedupSet, Horizons, Ledger, Terms};
use adstream_operators::records::CatalogUpdate;
use adstream_operators::records::{Charge, Origin};
use adstream_operators::records::{Ingested, RawMessage, StreamId};
use adstream_operators::report::ReportSpec;
use adstream_operators::serve::operator::ServeConfig;
use adstream_operators::source::{kafka_source, PartitionReader, SourceConfig, SourceControl};
use adstream_operators::time::EventTime;
use adstream_operators::token::{sign, WinClaims};
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;

const SECRET: &[u8] = b"bench-secret";

fn messages(n: usize, campaigns: usize) -> Vec<RawMessage> {
    share_of_messages(0..n, campaigns, EventTime::now().millis(), 1, 0)
}

/// Messages `i` in `range` with `i % workers == worker`, stamped around `now`.
fn share_of_messages(
    range: std::ops::Range<usize>,
    campaigns: usize,
    now: i64,
    workers: usize,
    worker: usize,
) -> Vec<RawMessage> {
    let first = range.start + (worker + workers - range.start % workers.max(1)) % workers.max(1);
    (first..range.end)
        .step_by(workers.max(1))
        .map(|i| {
            let claims = WinClaims {
                request_id: format!("req-{i}"),
                imp_id: "1".into(),
                campaign_id: format!("camp-{}", i % campaigns),
                advertiser_id: format!("adv-{}", i % campaigns),
                ad_id: format!("ad-{}", i % campaigns),
                billing: Billing::Cpm,
                charge_micros: 1_000 + (i % 100) as u64,
                issued: EventTime(now),
                country: None,
                device: None,
            };
            let doc = serde_json::json!({
                "event_id": format!("ev-{i}"), "ts": now + (i % 1000) as i64, "request_id": claims.request_id,
                "imp_id": "1", "campaign_id": claims.campaign_id, "ad_id": claims.ad_id,
                "user_id": format!("user-{}", i % 100_000), "billing_token": sign(SECRET, &claims),
            });
            RawMessage {
                stream: StreamId::Impressions,
                partition: (i % 4) as i32,
                offset: i as i64,
                key: Some(claims.request_id.into_bytes()),
                payload: Some(doc.to_string().into_bytes()),
                timestamp_ms: Some(now),
            }
        })
        .collect()
}

fn campaign_messages(campaigns: usize) -> Vec<RawMessage> {
    (0..campaigns)
        .map(|c| RawMessage {
            stream: StreamId::Campaigns,
            partition: 0,
            offset: c as i64,
            key: Some(format!("camp-{c}").into_bytes()),
            payload: Some(
                format!(r#"{{"campaign_id":"camp-{c}","advertiser_id":"adv-{c}","daily_budget_micros":1000000000000,"timezone":"UTC","billing":"cpm","bid_micros":2000000}}"#)
                    .into_bytes(),
            ),
            timestamp_ms: Some(0),
        })
        .collect()
}

/// Decode alone (parse + validate + token verify) on this thread; returns events/s.
pub fn decode_only(n: usize) -> f64 {
    let msgs = messages(n, 1_000);
    let cfg = DecodeConfig::new(SECRET.to_vec(), 65_536);
    let start = Instant::now();
    let ok = msgs
        .into_iter()
        .filter(|m| !matches!(decode(m.clone(), &cfg).1, Ingested::Dead(_)))
        .count();
    assert_eq!(ok, n);
    n as f64 / start.elapsed().as_secs_f64()
}

/// Decode + dedup + ledger on this thread; returns events/s. With `checked`, each charge's terms
/// come from the catalog as the ledger operator takes them (the win's budget day in the zone then
/// in effect, the bid when its auction ran, the day's budget); without, from fixed open terms (the
/// ledger's own comparisons, a few per charge, run in both).
pub fn hot_path(n: usize, checked: bool) -> f64 {
    let msgs = messages(n, 1_000);
    let cfg = DecodeConfig::new(SECRET.to_vec(), 65_536);
    let mut catalog = Catalog::default();
    for m in campaign_messages(1_000) {
        if let (
            _,
            Ingested::Campaign {
                campaign_id,
                campaign,
            },
        ) = decode(m, &cfg)
        {
            catalog.apply(&CatalogUpdate::new(campaign_id, campaign), EventTime(0));
        }
    }
    let open = Terms {
        day: adstream_operators::time::day::budget_day(EventTime::now(), chrono_tz::UTC),
        budget_micros: u64::MAX,
        max_charge_micros: u64::MAX,
    };
    let mut ledger = Ledger::new(Horizons::default());
    let start = Instant::now();
    let mut charged = 0usize;
    for m in msgs {
        if let (
            _,
            Ingested::Ad {
                kind,
                ts,
                claims,
                origin,
                raw,
                ..
            },
        ) = decode(m, &cfg)
        {
            let charge = Charge::for_event(kind, ts, claims, origin, *raw);
            let terms = if checked {
                let Some(listed) = catalog.get(&charge.claims.campaign_id) else {
                    continue;
                };
                let issued = charge.claims.issued;
                Terms {
                    day: listed.day_of(issued),
                    budget_micros: listed.campaign.daily_budget_micros,
                    max_charge_micros: listed.max_charge_at(issued),
                }
            } else {
                open
            };
            if ledger.apply(&charge, &terms).is_ok() {
                charged += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(charged, n, "every bench event is valid and distinct");
    n as f64 / secs
}

/// The billing dataflow with `workers` threads over in-memory partitions, with the default
/// reports or without any, checkpointing into the store `open` makes in a fresh directory (the
/// binary's RocksDB store, without fsync as a pipeline's default); returns events/s.
///
/// Timed as a running pipeline pays: from each worker's first step over the timed events to
/// the end of its drain (every record processed, the final checkpoint written), the slowest
/// worker counting. Building the inputs, the warm-up of a [`Start::Warm`] run, and shutting the
/// graph down (dropping its state) are not timed.
pub fn dataflow(
    n: usize,
    workers: usize,
    reports: bool,
    start: Start,
    open: OpenStore<'_>,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path(), false)?;
    Ok(dataflow_into(store, n, workers, reports, start))
}

/// What one family of checkpointed state costs: its entries, their stored bytes (key and
/// value), and the time to rebuild it from the store.
pub struct RestoreFigure {
    /// The state (ledger, attribution, labels).
    pub family: &'static str,
    /// Entries in the store.
    pub entries: usize,
    /// Key and value bytes in all.
    pub bytes: usize,
    /// Milliseconds for the product's restore of one worker owning everything.
    pub ms: f64,
}

/// Events/s of the billing dataflow over `n` events on one worker, without reports, then the
/// cost of restoring each family of the state it checkpointed (as a restart would).
pub fn dataflow_and_restore(
    n: usize,
    open: OpenStore<'_>,
) -> anyhow::Result<(f64, Vec<RestoreFigure>)> {
    use adstream_operators::routing::{ATTRIBUTION, LABELS, LEDGER_DEDUP, LEDGER_SPEND};
    let dir = tempfile::tempdir()?;
    let store = open(dir.path(), false)?;
    let rate = dataflow_into(store.clone(), n, 1, false, Start::Cold);
    let size = |prefixes: &[&str]| -> anyhow::Result<(usize, usize)> {
        let mut out = (0, 0);
        for prefix in prefixes {
            for (k, v) in store.scan(prefix.as_bytes())? {
                out.0 += 1;
                out.1 += k.len() + v.len();
            }
        }
        Ok(out)
    };
    let timed = |f: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let start = Instant::now();
        f()?;
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    };
    let mut figures = Vec::new();
    let (entries, bytes) = size(&[LEDGER_SPEND.prefix, LEDGER_DEDUP.prefix])?;
    let ms = timed(&|| {
        adstream_operators::ledger::operator::restore(&*store, Horizons::default(), 0, 1)?;
        Ok(())
    })?;
    figures.push(RestoreFigure {
        family: "ledger (spend + dedup)",
        entries,
        bytes,
        ms,
    });
    let (entries, bytes) = size(&[ATTRIBUTION.prefix])?;
    let ms = timed(&|| {
        adstream_operators::attribution::operator::restore(&*store, Windows::default(), 0, 1)?;
        Ok(())
    })?;
    figures.push(RestoreFigure {
        family: "attribution (touches per user)",
        entries,
        bytes,
        ms,
    });
    let (entries, bytes) = size(&[LABELS.prefix])?;
    let ms = timed(&|| {
        adstream_operators::labels::operator::restore(&*store, LabelConfig::default(), 0, 1)?;
        Ok(())
    })?;
    figures.push(RestoreFigure {
        family: "label join",
        entries,
        bytes,
        ms,
    });
    Ok((rate, figures))
}

/// How much state the dataflow holds when its timed events start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Empty: the timed region includes growing every table from nothing (a fresh pipeline).
    Cold,
    /// Already holding the state of as many events as are timed (every user, campaign and
    /// table seen before, dedup and label-join entries of the earlier events still held): a
    /// pipeline that has been running. Those earlier events go through the same dataflow,
    /// untimed, before the timed ones are released.
    Warm,
}

/// Event time between the warm-up's events and the timed ones: the warm-up's windows are
/// closed by the time the timed events start, as a running pipeline's would be.
const WARM_GAP_MS: i64 = 600_000;

/// A reader that serves `first`, then holds `then` back until `release` is set; `drained` is
/// set once it has served everything.
struct PhasedReader {
    first: std::collections::VecDeque<RawMessage>,
    then: Option<Vec<RawMessage>>,
    release: Arc<std::sync::atomic::AtomicBool>,
    drained: Arc<std::sync::atomic::AtomicBool>,
    owned: Vec<(StreamId, i32)>,
}

impl PartitionReader for PhasedReader {
    fn poll(&mut self, max: usize, out: &mut Vec<RawMessage>) {
        use std::sync::atomic::Ordering::Acquire;
        if self.first.is_empty() && self.release.load(Acquire) {
            if let Some(then) = self.then.take() {
                self.first = then.into();
            }
        }
        let n = max.min(self.first.len());
        out.extend(self.first.drain(..n));
        if self.first.is_empty() && self.then.is_none() {
            self.drained
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
    fn partitions(&self) -> Vec<(StreamId, i32)> {
        self.owned.clone()
    }
}

/// [`dataflow`] into `store`: `n` timed events, after `n` untimed ones when `start` is warm.
/// Panics if the ledger did not bill every event exactly once (the figure would be of a
/// dataflow that dropped or refused events).
fn dataflow_into(
    store: Arc<dyn StateStore>,
    n: usize,
    workers: usize,
    reports: bool,
    start: Start,
) -> f64 {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let now = EventTime::now().millis();
    let warm = start == Start::Warm;
    // The timed events' ids follow the warm-up's, and their event time is `WARM_GAP_MS` later.
    let (timed, timed_now) = if warm {
        (n..2 * n, now + WARM_GAP_MS)
    } else {
        (0..n, now)
    };
    // The pipeline's clock: the wall clock, moved forward once by the gap when the timed events
    // are released (so the warm-up's windows close and the timed events are not late).
    let shift = Arc::new(AtomicI64::new(0));
    let clock: adstream_operators::source::Clock = {
        let shift = shift.clone();
        Arc::new(move || EventTime::now().millis() + shift.load(Ordering::Acquire))
    };
    let shifted = Arc::new(std::sync::OnceLock::<()>::new());
    let stats: Arc<adstream_operators::ledger::operator::BillingStats> = Arc::default();
    let worker_stats = stats.clone();
    let took: Arc<std::sync::Mutex<Vec<Duration>>> = Arc::default();
    let worker_took = took.clone();
    let timed_range = timed.clone();
    let _ = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        // Each worker builds its share (`i % workers == index`; the campaigns go to worker 0,
        // which routes them to all) on its own thread, as a consumer would allocate what it reads.
        let mut first = if index == 0 {
            campaign_messages(1_000)
        } else {
            Vec::new()
        };
        let then = if warm {
            first.extend(share_of_messages(0..n, 1_000, now, workers, index));
            share_of_messages(timed_range.clone(), 1_000, timed_now, workers, index)
        } else {
            first.extend(share_of_messages(
                timed_range.clone(),
                1_000,
                now,
                workers,
                index,
            ));
            Vec::new()
        };
        let release = Arc::new(AtomicBool::new(!warm));
        let drained = Arc::new(AtomicBool::new(false));
        let reader = PhasedReader {
            first: first.into(),
            then: Some(then),
            release: release.clone(),
            drained: drained.clone(),
            owned: vec![(StreamId::Impressions, index as i32)],
        };
        let store = store.clone();
        let probe = ProbeHandle::new();
        let control = SourceControl::default();
        let stop = control.stop.clone();
        let cfg = DecodeConfig::new(SECRET.to_vec(), 65_536);
        let source = SourceConfig::default();
        let clock = clock.clone();
        let stats = worker_stats.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let ingested = kafka_source(
                scope,
                "Bench",
                reader,
                source.clone(),
                clock.clone(),
                store.clone(),
                probe.clone(),
                control.clone(),
                move |m| decode(m, &cfg),
            );
            // The whole graph, as `adstream run` builds it, with an idle serving queue.
            let (_requests_tx, requests) = std::sync::mpsc::sync_channel(1);
            let out = graph::build(
                GraphInputs {
                    ingested,
                    requests,
                    requests_activator: Default::default(),
                    serving: control.serving.clone(),
                    trainer: None,
                },
                GraphConfig {
                    ledger: LedgerConfig {
                        stats,
                        horizons: Horizons::default(),
                        // The source's interval: a stop moves past the next checkpoint.
                        checkpoint_interval: source.checkpoint_interval_ms as u64,
                    },
                    windows: Windows::default(),
                    labels: LabelConfig::default(),
                    reports: if reports {
                        ReportSpec::defaults().into()
                    } else {
                        Vec::new().into()
                    },
                    serve: ServeConfig {
                        secret: SECRET.to_vec(),
                        reserve_ecpm_micros: 0,
                        per_advertiser: 1,
                        max_candidates: 100,
                        prerank_candidates: 400,
                        reservation_ttl_ms: 60_000,
                    },
                    pacing: Default::default(),
                    history: Default::default(),
                },
                GraphContext {
                    store: store.clone(),
                    models: Default::default(),
                    clock: clock.clone(),
                    progress: probe.clone(),
                },
            );
            out.ledger_replica.probe_with(&probe);
            out.budget_status.probe_with(&probe);
            if let Some(rows) = out.reports {
                rows.probe_with(&probe);
            }
        });
        // Stepped as `adstream run` steps its workers: parked while nothing is scheduled (a
        // checkpoint being written), so the worker does not spin against the state writer.
        let park = Some(Duration::from_millis(1));
        if warm {
            // The warm-up: read, then the clock moves past its windows, and every operator has
            // applied it before the timed events are released.
            while !control.caught_up.load(Ordering::Acquire) {
                worker.step_or_park(park);
            }
            shifted.get_or_init(|| {
                shift.store(timed_now - EventTime::now().millis(), Ordering::Release);
            });
            // The warm-up's latest event time (`now` + 999 ms), rounded up to the next tick.
            let warmed = ((now + 1_000) as u64).div_ceil(source.tick_ms) * source.tick_ms;
            while probe.less_than(&warmed) {
                worker.step_or_park(park);
            }
            release.store(true, Ordering::Release);
        }
        // Run until this worker's input is drained, then stop and let the graph complete.
        let start = Instant::now();
        while !drained.load(Ordering::Acquire) {
            worker.step_or_park(park);
        }
        stop.store(true, Ordering::Relaxed);
        // The source finishes once its final offsets are durable, which waits for every
        // stateful operator's checkpoint past the last event: all of it processed and stored.
        while !control.finished.get() {
            worker.step_or_park(park);
        }
        if let Ok(mut took) = worker_took.lock() {
            took.push(start.elapsed());
        }
        // Shutting the graph down drops its state, which a running pipeline never pays.
        while !probe.done() {
            worker.step_or_park(park);
        }
    });
    let billed: u64 = stats.take().iter().map(|(_, billed, _)| billed).sum();
    let events = if warm { 0..2 * n } else { timed };
    let expected: u64 = events.map(|i| 1_000 + (i % 100) as u64).sum();
    assert_eq!(billed, expected, "every bench event is billed exactly once");
    let slowest = took
        .lock()
        .ok()
        .and_then(|t| t.iter().max().copied())
        .unwrap_or_default();
    n as f64 / slowest.as_secs_f64().max(1e-9)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Resident bytes per live dedup key, measured over `n` keys.
pub fn dedup_memory(n: usize) -> f64 {
    let before = rss_bytes();
    let mut set = DedupSet::default();
    for i in 0..n {
        set.insert(
            i as u128 * 0x9E37_79B9_7F4A_7C15,
            DedupEntry {
                expires: (i % 86_400_000) as i64,
                origin: Origin::default(),
                shard: i as u64,
                amounts: None,
            },
        );
    }
    let after = rss_bytes();
    assert_eq!(set.len(), n);
    (after.saturating_sub(before)) as f64 / n as f64
}

/// Events/s through one worker's report contributions alone (identity dedup, the three default
/// reports' windows and shares) over `n` verified impressions of 1,000 campaigns.
pub fn report_contributions(n: usize) -> f64 {
    use adstream_operators::events::EventKind;
    use adstream_operators::report::contributions::Contributions;
    use adstream_operators::report::ReportEvent;
    let specs: Arc<[ReportSpec]> = ReportSpec::defaults().into();
    let start_ms = EventTime::now().millis();
    let events: Vec<ReportEvent> = (0..n)
        .map(|i| {
            let campaign = format!("c{}", i % 1_000);
            ReportEvent::Touch {
                kind: EventKind::Impression,
                claims: std::sync::Arc::new(WinClaims {
                    request_id: format!("r{i}"),
                    imp_id: "1".into(),
                    advertiser_id: format!("a{}", i % 300),
                    ad_id: format!("{campaign}-ad"),
                    campaign_id: campaign,
                    billing: Billing::Cpm,
                    charge_micros: 1_000,
                    issued: EventTime(start_ms),
                    country: Some(["US", "DE", "JP"][i % 3].into()),
                    device: Some(["mobile", "desktop"][i % 2].into()),
                }),
                ts: EventTime(start_ms + i as i64),
            }
        })
        .collect();
    let mut state = Contributions::new(specs, 0);
    let started = Instant::now();
    for (i, e) in events.iter().enumerate() {
        std::hint::black_box(state.admit(e, (start_ms + i as i64) as u64));
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Opens the binary's durable state store (RocksDB) in an empty directory, syncing each write to
/// disk or not: how the `adstream` binary hands its store to [`run`] without this crate
/// depending on it.
pub type OpenStore<'a> = &'a dyn Fn(&std::path::Path, bool) -> anyhow::Result<Arc<dyn StateStore>>;

/// Milliseconds to make a checkpoint of `entries` dirty entries durable in the store `open`
/// makes (RocksDB, the store the binary uses), and the store's size in entries before it: a
/// checkpoint writes only what changed, so its cost follows the dirty entries more than the
/// state held.
pub fn checkpoint_cost(open: OpenStore<'_>, fsync: bool) -> Vec<(usize, usize, f64)> {
    use adstream_operators::checkpoint::StateBatch;
    let Ok(dir) = tempfile::tempdir() else {
        return Vec::new();
    };
    let Ok(store) = open(dir.path(), fsync) else {
        return Vec::new();
    };
    let mut held = 0usize;
    let mut out = Vec::new();
    for entries in [1_000, 10_000, 100_000, 1_000_000, 1_000, 10_000, 100_000] {
        let batch = StateBatch {
            puts: (0..entries)
                .map(|i| {
                    (
                        format!("bench/{:032x}", (held + i) as u128 * 0x9E37_79B9_7F4A_7C15)
                            .into_bytes(),
                        vec![b'x'; 80],
                    )
                })
                .collect(),
            deletes: Vec::new(),
        };
        let start = Instant::now();
        let ticket = store.persist(batch);
        while ticket.poll().is_none() {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        out.push((entries, held, start.elapsed().as_secs_f64() * 1000.0));
        held += entries;
    }
    out
}

/// Prints every figure; the checkpoint figures are of the store `open` makes.
pub fn run(events: usize, open: OpenStore<'_>) {
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let unchecked = hot_path(events, false);
    let hot = hot_path(events, true);
    println!("ledger hot path (decode + verify + dedup + ledger), 1 thread: {hot:>12.0} events/s");
    println!(
        "  the same with fixed terms instead of the catalog's (zone, bid, budget): {unchecked:>12.0} events/s (the money checks cost {:.1}%)",
        (1.0 - hot / unchecked) * 100.0
    );
    let dec = decode_only(events);
    println!("  of which decode alone (parse + validate + verify), 1 thread: {dec:>12.0} events/s");
    println!(
        "billing dataflow (cold: from empty state; warm: after {events} untimed events, as a running pipeline):"
    );
    for workers in [1, 2] {
        for reports in [false, true] {
            let figure = |start| dataflow(events, workers, reports, start, open);
            let (Ok(cold), Ok(warm)) = (figure(Start::Cold), figure(Start::Warm)) else {
                println!("billing dataflow: the state store could not be opened");
                return;
            };
            println!(
                "  {workers} worker(s), {:<17} cold {cold:>9.0} events/s, warm {warm:>9.0} events/s",
                if reports { "3 default reports:" } else { "no reports:" }
            );
        }
    }
    let reports = report_contributions(events);
    println!("report contributions alone (dedup + 3 reports), 1 thread: {reports:>12.0} events/s");
    for fsync in [false, true] {
        for (entries, held, ms) in checkpoint_cost(open, fsync) {
            println!(
                "checkpoint (RocksDB{}): {entries:>9} dirty entries into a store of {held:>9}: {ms:>8.1} ms ({:.2} us/entry)",
                if fsync { ", fsync" } else { "" },
                ms * 1000.0 / entries as f64
            );
        }
    }
    match dataflow_and_restore(events, open) {
        Ok((rate, figures)) => {
            println!("restore after a 1-worker run of {events} events ({rate:.0} events/s):");
            for f in figures {
                println!(
                    "  {:<32} {:>9} entries, {:>6.1} bytes/entry, restored in {:>8.1} ms ({:.2} us/entry)",
                    f.family,
                    f.entries,
                    f.bytes as f64 / f.entries.max(1) as f64,
                    f.ms,
                    f.ms * 1000.0 / f.entries.max(1) as f64
                );
            }
        }
        Err(e) => println!("restore: {e:#}"),
    }
    let per_key = dedup_memory(1_000_000);
    println!(
        "dedup set: {:.0} bytes per key, {:.1} MiB per million keys",
        per_key,
        per_key * 1e6 / 1048576.0
    );
}
