//! The whole graph on 1, 2 and 4 workers against a plain model.
//!
//! Campaigns, ad requests, billing events (with duplicates, shuffled) and conversions go
//! through [`super::build`] exactly as `adstream run` wires it, with in-memory partitions for
//! Kafka and a [`MemoryStore`] for RocksDB; the pipeline stops and restarts from its checkpoint
//! halfway through the billing events. Spend per campaign-day, the report rows and the served
//! wins must equal a sequential reference computed from the wins alone: sums of distinct
//! charges capped at the budget, counts of distinct events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;

use super::*;
use crate::checkpoint::MemoryStore;
use crate::ingest::{decode, DecodeConfig};
use crate::ledger::Horizons;
use crate::records::{DaySpend, RawMessage, Reason, StreamId};
use crate::report::{Dimension, ReportSpec};
use crate::request::parse_request;
use crate::serve::operator::{ServeOutcome, ServeRequest};
use crate::source::{kafka_source, restore_offsets, PartitionReader, SourceConfig, SourceControl};
use crate::time::day::budget_day;
use crate::token::claims_unverified;

const SECRET: &[u8] = b"whole-graph-test-secret";
const PARTITIONS: i32 = 4;
/// A hang guard, not a timing assumption: every wait below ends on a condition.
const PATIENCE: Duration = Duration::from_secs(120);

/// In-memory Kafka: append-only partitions, offsets are positions.
#[derive(Default)]
struct Log {
    parts: Mutex<BTreeMap<(StreamId, i32), Vec<RawMessage>>>,
    /// The next offset each partition's reader will read, this run.
    positions: Mutex<BTreeMap<(StreamId, i32), i64>>,
}

impl Log {
    fn append(&self, stream: StreamId, key: &str, payload: Option<String>) {
        let partition = (crate::routing::route(key) % PARTITIONS as u64) as i32;
        let mut parts = self.parts.lock().expect("log");
        let part = parts.entry((stream, partition)).or_default();
        part.push(RawMessage {
            stream,
            partition,
            offset: part.len() as i64,
            key: Some(key.as_bytes().to_vec()),
            payload: payload.map(String::into_bytes),
            timestamp_ms: None,
        });
    }

    /// Whether every partition has been read to its end.
    fn all_read(&self) -> bool {
        let parts = self.parts.lock().expect("log");
        let positions = self.positions.lock().expect("positions");
        parts.iter().all(|(part, messages)| {
            positions.get(part).copied().unwrap_or(0) >= messages.len() as i64
        })
    }
}

/// One worker's reader: the partitions `p % peers == index` of every stream, from the
/// checkpointed offsets on (campaigns first, as the Kafka reader delivers them).
struct LogReader {
    log: Arc<Log>,
    next: BTreeMap<(StreamId, i32), i64>,
}

impl LogReader {
    fn new(
        log: Arc<Log>,
        index: usize,
        peers: usize,
        offsets: &BTreeMap<(StreamId, i32), i64>,
    ) -> Self {
        let mut next = BTreeMap::new();
        for stream in StreamId::ALL {
            for p in (0..PARTITIONS).filter(|p| *p as usize % peers == index) {
                // Like the Kafka reader: the compacted campaigns topic is read from its start on
                // every start-up (the catalog is rebuilt from it), events from the checkpoint.
                let at = match stream {
                    StreamId::Campaigns => 0,
                    _ => offsets.get(&(stream, p)).copied().unwrap_or(0),
                };
                next.insert((stream, p), at);
                log.positions
                    .lock()
                    .expect("positions")
                    .insert((stream, p), at);
            }
        }
        LogReader { log, next }
    }
}

impl PartitionReader for LogReader {
    fn poll(&mut self, max: usize, out: &mut Vec<RawMessage>) {
        let parts = self.log.parts.lock().expect("log");
        for (part, next) in self.next.iter_mut() {
            if let Some(messages) = parts.get(part) {
                while (*next as usize) < messages.len() && out.len() < max {
                    out.push(messages[*next as usize].clone());
                    *next += 1;
                }
                self.log
                    .positions
                    .lock()
                    .expect("positions")
                    .insert(*part, *next);
            }
        }
    }
    fn partitions(&self) -> Vec<(StreamId, i32)> {
        self.next.keys().copied().collect()
    }
}

/// What a run observed.
#[derive(Default)]
struct Seen {
    /// Campaigns each worker's serving replica knows.
    campaigns: Vec<BTreeSet<String>>,
    served: Vec<Served>,
    spend: BTreeMap<(String, chrono::NaiveDate), (u64, u64)>,
    rows: BTreeMap<String, serde_json::Value>,
    dead: BTreeMap<Reason, usize>,
}

/// Where a serving operator leaves the activator its queue's sender wakes it with.
type SharedActivator = Arc<Mutex<Option<SyncActivator>>>;

/// A running graph: the senders of each worker's request queue and the switch that stops it.
struct Run {
    queues: Vec<(SyncSender<ServeRequest>, SharedActivator)>,
    stop: Arc<AtomicBool>,
    guards: timely::communication::WorkerGuards<()>,
}

/// Checkpoint interval of the sources and the stateful operators, ms.
const CHECKPOINT_INTERVAL_MS: u64 = 50;

fn config() -> GraphConfig {
    GraphConfig {
        ledger: LedgerConfig {
            horizons: Horizons::default(),
            checkpoint_interval: CHECKPOINT_INTERVAL_MS,
            stats: Default::default(),
        },
        windows: Windows::default(),
        labels: LabelConfig::default(),
        reports: vec![ReportSpec::new(
            "campaign_day",
            &[Dimension::Campaign],
            86_400_000,
            600_000,
        )]
        .into(),
        serve: ServeConfig {
            secret: SECRET.to_vec(),
            reserve_ecpm_micros: 1_000_000,
            per_advertiser: 2,
            max_candidates: 100,
            prerank_candidates: 400,
            reservation_ttl_ms: 600_000,
        },
        pacing: PacingConfig {
            enabled: false,
            ..PacingConfig::default()
        },
        history: Default::default(),
    }
}

fn start(workers: usize, log: Arc<Log>, store: Arc<dyn StateStore>, seen: Arc<Mutex<Seen>>) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let offsets = restore_offsets(&*store).expect("offsets");
    let mut queues = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = std::sync::mpsc::sync_channel(1_000);
        let activator = Arc::new(Mutex::new(None));
        queues.push((tx, activator.clone()));
        receivers.push(Some((rx, activator)));
    }
    seen.lock().expect("seen").campaigns = vec![BTreeSet::new(); workers];
    let receivers = Arc::new(Mutex::new(receivers));
    let worker_stop = stop.clone();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let (requests, requests_activator) = receivers.lock().expect("queues")[index]
            .take()
            .expect("one queue per worker");
        let reader = LogReader::new(log.clone(), index, peers, &offsets);
        let probe = ProbeHandle::new();
        let control = SourceControl {
            stop: worker_stop.clone(),
            ..SourceControl::default()
        };
        let context = GraphContext {
            store: store.clone(),
            models: Default::default(),
            clock: crate::source::wall_clock(),
            progress: probe.clone(),
        };
        let decode_config = DecodeConfig::new(SECRET.to_vec(), 65_536);
        let seen = seen.clone();
        let outs: Vec<ProbeHandle<u64>> = (0..5).map(|_| ProbeHandle::new()).collect();
        worker.dataflow::<u64, _, _>(|scope| {
            let ingested = kafka_source(
                scope,
                "Log",
                reader,
                SourceConfig {
                    // The operators' interval: a stop moves past their next checkpoint.
                    checkpoint_interval_ms: CHECKPOINT_INTERVAL_MS as i64,
                    ..SourceConfig::default()
                },
                crate::source::wall_clock(),
                store.clone(),
                probe.clone(),
                control.clone(),
                move |msg| decode(msg, &decode_config),
            );
            let out = build(
                GraphInputs {
                    ingested,
                    requests,
                    requests_activator,
                    serving: control.serving.clone(),
                    trainer: None,
                },
                config(),
                context,
            );
            out.served.clone().probe_with(&outs[0]);
            out.pacing_replica.probe_with(&outs[1]);
            out.models.probe_with(&outs[2]);
            out.budget_status.probe_with(&outs[3]);
            out.ledger_replica.clone().probe_with(&outs[4]);
            let s = seen.clone();
            out.ledger_replica.inspect(move |rec: &LedgerState| {
                let mut seen = s.lock().expect("seen");
                match rec {
                    LedgerState::Campaign(c) if c.campaign.is_some() => {
                        seen.campaigns[index].insert(c.campaign_id.clone());
                    }
                    LedgerState::Spend(DaySpend {
                        campaign_id,
                        day,
                        spend_micros,
                        overdelivery_micros,
                    }) if index == 0 => {
                        seen.spend.insert(
                            (campaign_id.to_string(), *day),
                            (*spend_micros, *overdelivery_micros),
                        );
                    }
                    _ => {}
                }
            });
            let s = seen.clone();
            out.served
                .inspect(move |w: &Served| s.lock().expect("seen").served.push(w.clone()));
            let s = seen.clone();
            out.dead_letters
                .inspect(move |d: &DeadLetter| {
                    *s.lock().expect("seen").dead.entry(d.reason).or_default() += 1;
                })
                .probe_with(&probe);
            if let Some(rows) = out.reports {
                let s = seen.clone();
                rows.inspect(move |r: &ReportRow| {
                    s.lock()
                        .expect("seen")
                        .rows
                        .insert(r.key.clone(), r.value.clone());
                })
                .probe_with(&probe);
            }
        });
        while !(control.finished.get() && probe.done()) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        // Everything the graph emits, not only what checkpoints wait for, has been seen.
        while outs.iter().any(|p| !p.done()) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
    })
    .expect("timely");
    Run {
        queues,
        stop,
        guards,
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Run {
    /// Reads everything in the log, drains, checkpoints and stops.
    fn finish(self, log: &Log) {
        wait_until("the log to be read", || log.all_read());
        self.stop.store(true, Ordering::Relaxed);
        for result in self.guards.join() {
            result.expect("worker");
        }
    }

    /// Sends every request (request `i` to worker `i % workers`) and returns the answers.
    fn serve(&self, requests: &[String]) -> Vec<ServeOutcome> {
        let answers: Arc<Mutex<BTreeMap<usize, ServeOutcome>>> = Arc::default();
        for (i, text) in requests.iter().enumerate() {
            let mut request = parse_request(text.as_bytes()).expect("request");
            request.tmax_ms = 600_000;
            let answers = answers.clone();
            let (queue, activator) = &self.queues[i % self.queues.len()];
            queue
                .send(ServeRequest {
                    request,
                    received: Instant::now(),
                    reply: Box::new(move |outcome| {
                        answers.lock().expect("answers").insert(i, outcome);
                    }),
                })
                .expect("queue");
            if let Some(a) = activator.lock().expect("activator").as_ref() {
                let _ = a.activate();
            }
        }
        wait_until("every answer", || {
            answers.lock().expect("answers").len() == requests.len()
        });
        let answers = std::mem::take(&mut *answers.lock().expect("answers"));
        answers.into_values().collect()
    }
}

/// The test's campaigns: `(id, advertiser, billing, bid, daily budget, countries)`.
const CAMPAIGNS: [(&str, &str, &str, u64, u64, &str); 6] = [
    // eCPM at the prior (pCTR 0.02, pCVR 0.05): CPM bid, 20 x CPC bid, 1 x CPA bid.
    ("cpm-de", "adv-a", "cpm", 4_000_000, 50_000_000, r#"["DE"]"#),
    ("cpm-all", "adv-b", "cpm", 2_000_000, 50_000_000, "[]"),
    ("cpc-fr", "adv-c", "cpc", 150_000, 50_000_000, r#"["FR"]"#),
    // A small budget that the late clicks overrun: billed stops at the budget.
    ("cpc-small", "adv-d", "cpc", 200_000, 1_000_000, r#"["US"]"#),
    ("cpa-us", "adv-e", "cpa", 3_000_000, 50_000_000, r#"["US"]"#),
    (
        "cpa-de",
        "adv-a",
        "cpa",
        5_000_000,
        50_000_000,
        r#"["DE","FR"]"#,
    ),
];

fn campaign_json(c: &(&str, &str, &str, u64, u64, &str)) -> String {
    let (id, adv, billing, bid, budget, countries) = c;
    format!(
        r#"{{"campaign_id":"{id}","advertiser_id":"{adv}","status":"active","daily_budget_micros":{budget},"timezone":"UTC","billing":"{billing}","bid_micros":{bid},"objective":"clicks","targeting":{{"countries":{countries}}},"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
    )
}

fn requests() -> Vec<String> {
    let countries = ["DE", "FR", "US", "GB"];
    (0..60)
        .map(|i| {
            let country = countries[i % countries.len()];
            format!(
                r#"{{"id":"req-{i}","imp":[{{"id":"1","tagid":"top"}}],"user":{{"id":"user-{i}"}},"device":{{"geo":{{"country":"{country}"}},"devicetype":4}},"site":{{}}}}"#
            )
        })
        .collect()
}

/// A served win's billing events: its impression, a click for most, a conversion for some.
fn billing_events(win: &Served, i: usize) -> Vec<(StreamId, String, String)> {
    let ts = win.ts.millis();
    let event = |kind: &str, dt: i64| {
        format!(
            r#"{{"event_id":"{kind}-{}","ts":{},"request_id":"{}","imp_id":"{}","campaign_id":"{}","ad_id":"{}","user_id":"{}","billing_token":"{}"}}"#,
            win.request_id,
            ts + dt,
            win.request_id,
            win.imp_id,
            win.campaign_id,
            win.ad_id,
            win.user_id.clone().unwrap_or_default(),
            win.billing_token
        )
    };
    let mut out = vec![(
        StreamId::Impressions,
        win.request_id.clone(),
        event("imp", 10),
    )];
    if i % 5 != 0 {
        out.push((
            StreamId::Clicks,
            win.request_id.clone(),
            event("click", 500),
        ));
        if i % 3 == 0 {
            let user = win.user_id.clone().unwrap_or_default();
            out.push((
                StreamId::Conversions,
                user.clone(),
                format!(
                    r#"{{"event_id":"conv-{}","ts":{},"user_id":"{user}","advertiser_id":"{}","type":"purchase","value_micros":7000000}}"#,
                    win.request_id,
                    ts + 2_000,
                    win.advertiser_id
                ),
            ));
        }
    }
    out
}

/// The plain model: per campaign and budget day, the distinct charges' prices summed and
/// capped at the budget; per campaign and UTC day, distinct wins, impressions, clicks,
/// conversions and billed spend.
struct Reference {
    spend: BTreeMap<(String, chrono::NaiveDate), (u64, u64)>,
}

fn reference(wins: &[Served], events: &[(StreamId, String, String)]) -> Reference {
    let budgets: BTreeMap<&str, u64> = CAMPAIGNS.iter().map(|c| (c.0, c.4)).collect();
    let by_request: BTreeMap<&str, &Served> =
        wins.iter().map(|w| (w.request_id.as_str(), w)).collect();
    let mut charged: BTreeSet<(String, &'static str)> = BTreeSet::new();
    let mut prices: BTreeMap<(String, chrono::NaiveDate), u64> = BTreeMap::new();
    for (stream, _, json) in events {
        let v: serde_json::Value = serde_json::from_str(json).expect("json");
        let (win, kind) = match stream {
            StreamId::Impressions | StreamId::Clicks => {
                let request = v["request_id"].as_str().expect("request_id");
                let kind = if *stream == StreamId::Clicks {
                    "click"
                } else {
                    "impression"
                };
                (by_request[request], kind)
            }
            _ => {
                // Each user saw one ad: the conversion goes to that win.
                let user = v["user_id"].as_str().expect("user_id");
                let win = wins
                    .iter()
                    .find(|w| w.user_id.as_deref() == Some(user))
                    .expect("a win per user");
                (win, "conversion")
            }
        };
        if win.billing.charged_event().as_str() != kind {
            continue;
        }
        if !charged.insert((win.request_id.clone(), kind)) {
            continue;
        }
        let day = budget_day(win.ts, chrono_tz::UTC);
        *prices.entry((win.campaign_id.clone(), day)).or_default() += win.charge_micros;
    }
    let spend = prices
        .into_iter()
        .map(|((campaign, day), total)| {
            let billed = total.min(budgets[campaign.as_str()]);
            ((campaign, day), (billed, total - billed))
        })
        .collect();
    Reference { spend }
}

fn run_whole_graph(workers: usize, restart: bool) -> (Vec<Served>, Seen, Reference) {
    let log = Arc::new(Log::default());
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::default());
    let seen = Arc::new(Mutex::new(Seen::default()));
    for c in CAMPAIGNS.iter() {
        log.append(StreamId::Campaigns, c.0, Some(campaign_json(c)));
    }

    // First run: campaigns, every request, then half of the billing events.
    let run = start(workers, log.clone(), store.clone(), seen.clone());
    wait_until("every replica to know every campaign", || {
        let seen = seen.lock().expect("seen");
        seen.campaigns.iter().all(|c| c.len() == CAMPAIGNS.len())
    });
    let outcomes = run.serve(&requests());
    let mut wins: Vec<Served> = seen.lock().expect("seen").served.clone();
    wins.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    assert_eq!(
        wins.len(),
        outcomes.iter().map(|o| o.wins.len()).sum::<usize>(),
        "every answered win is logged once"
    );
    for w in &wins {
        let claims = claims_unverified(&w.billing_token).expect("token");
        assert_eq!(claims.request_id, w.request_id);
    }
    // What the served sink writes to `ads.served`, read back for the label join and reports.
    for w in &wins {
        log.append(
            StreamId::Served,
            &w.request_id,
            Some(serde_json::to_string(w).expect("served json")),
        );
    }
    let mut events: Vec<(StreamId, String, String)> = wins
        .iter()
        .enumerate()
        .flat_map(|(i, w)| billing_events(w, i))
        .collect();
    // Any order: a fixed shuffle, half of the touches before the restart and the rest with every
    // conversion after it (a conversion is attributed to touches the graph has seen by its
    // time), then every fourth event again (a duplicate at another offset).
    let n = events.len();
    for i in 0..n {
        events.swap(i, (i * 7919 + 13) % n);
    }
    let (conversions, touches): (Vec<_>, Vec<_>) = events
        .iter()
        .cloned()
        .partition(|(stream, _, _)| *stream == StreamId::Conversions);
    let (first, rest) = touches.split_at(touches.len() / 2);
    let mut second: Vec<_> = rest.iter().cloned().chain(conversions).collect();
    let m = second.len();
    for i in 0..m {
        second.swap(i, (i * 104_729 + 7) % m);
    }
    let duplicates: Vec<_> = events.iter().step_by(4).cloned().collect();
    for (stream, key, json) in first {
        log.append(*stream, key, Some(json.clone()));
    }
    let run = if restart {
        // Stop with a final checkpoint and start again from it.
        run.finish(&log);
        start(workers, log.clone(), store.clone(), seen.clone())
    } else {
        run
    };
    // The rest, with every campaign changed halfway (a second creative: the terms, and so the
    // spend and its cap, carry over), and the duplicates.
    let (early, late) = second.split_at(second.len() / 2);
    for (stream, key, json) in early {
        log.append(*stream, key, Some(json.clone()));
    }
    for c in CAMPAIGNS.iter() {
        let changed =
            campaign_json(c).replace("}]}", &format!("}},{{\"ad_id\":\"{}-ad2\"}}]}}", c.0));
        let parsed = crate::events::Campaign::parse(changed.as_bytes()).expect("a valid change");
        assert_eq!(parsed.creatives.len(), 2);
        log.append(StreamId::Campaigns, c.0, Some(changed));
    }
    for (stream, key, json) in late.iter().chain(duplicates.iter()) {
        log.append(*stream, key, Some(json.clone()));
    }
    // User history: each user's impression and click (some sent twice, some before the restart)
    // reach every serving replica once, and the user's next win logs them as its features.
    wait_until("the log to be read", || log.all_read());
    let expected = expected_histories(&events);
    let started = Instant::now();
    for round in 1.. {
        let before = seen.lock().expect("seen").served.len();
        run.serve(&requests_again(round));
        let logged = seen.lock().expect("seen").served[before..].to_vec();
        if !logged.is_empty() && logged.iter().all(|s| history_matches(s, &expected)) {
            break;
        }
        let wrong: Vec<_> = logged
            .iter()
            .filter(|s| !history_matches(s, &expected))
            .map(|s| (s.user_id.clone(), s.history.clone()))
            .collect();
        assert!(
            started.elapsed() < PATIENCE,
            "{workers} workers: served histories {wrong:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run.finish(&log);
    let reference = reference(&wins, &events);
    let seen = std::mem::take(&mut *seen.lock().expect("seen"));
    (wins, seen, reference)
}

/// Per user: the campaigns clicked (one win each) and the impressions, from the distinct
/// billing events.
fn expected_histories(
    events: &[(StreamId, String, String)],
) -> BTreeMap<String, (Vec<String>, u32)> {
    let mut out: BTreeMap<String, (Vec<String>, u32)> = BTreeMap::new();
    for (stream, _, json) in events {
        let doc: serde_json::Value = serde_json::from_str(json).expect("event json");
        let user = doc["user_id"].as_str().unwrap_or_default().to_string();
        let campaign = doc["campaign_id"].as_str().unwrap_or_default().to_string();
        let entry = out.entry(user).or_default();
        match stream {
            StreamId::Clicks => entry.0.push(campaign),
            StreamId::Impressions => entry.1 += 1,
            _ => {}
        }
    }
    out
}

/// Whether a served record logs its user's expected history.
fn history_matches(s: &Served, expected: &BTreeMap<String, (Vec<String>, u32)>) -> bool {
    let (clicks, impressions) = s
        .user_id
        .as_ref()
        .and_then(|u| expected.get(u))
        .cloned()
        .unwrap_or_default();
    s.history.clicked_campaigns == clicks
        && s.history.clicks_24h as usize == clicks.len()
        && s.history.impressions_24h == impressions
}

/// The test's requests again, under new ids (round `round`), for the same users.
fn requests_again(round: usize) -> Vec<String> {
    requests()
        .into_iter()
        .map(|r| r.replace(r#""id":"req-"#, &format!(r#""id":"again{round}-"#)))
        .collect()
}

/// What the auctions decided, without the wall-clock parts (time, token).
fn decisions(wins: &[Served]) -> Vec<(String, String, String, u64)> {
    wins.iter()
        .map(|w| {
            (
                w.request_id.clone(),
                w.imp_id.clone(),
                w.campaign_id.clone(),
                w.charge_micros,
            )
        })
        .collect()
}

#[test]
fn the_whole_graph_matches_a_sequential_reference_across_a_restart() {
    check_against_reference(&[(1, true)]);
}

#[test]
fn the_whole_graph_matches_a_sequential_reference_on_2_and_4_workers() {
    check_against_reference(&[(2, true), (4, true), (2, false), (4, false)]);
}

fn check_against_reference(shapes: &[(usize, bool)]) {
    let mut decided = None;
    for &(workers, restart) in shapes {
        let (wins, seen, reference) = run_whole_graph(workers, restart);
        assert!(
            wins.len() >= 40,
            "{workers} workers: most requests fill ({})",
            wins.len()
        );
        assert_eq!(
            seen.spend, reference.spend,
            "{workers} workers: billed and overdelivered per campaign-day"
        );
        let small = seen
            .spend
            .iter()
            .find(|((c, _), _)| c == "cpc-small")
            .map(|(_, v)| *v);
        if let Some((billed, over)) = small {
            assert!(billed <= 1_000_000, "the budget is a hard cap");
            assert!(over > 0, "late clicks past the budget are overdelivery");
        }
        // Reports: one row per campaign and day whose spend is the ledger's.
        let mut report_spend: BTreeMap<String, u64> = BTreeMap::new();
        for (key, row) in &seen.rows {
            let campaign = key.split('@').next().unwrap_or_default().to_string();
            *report_spend.entry(campaign).or_default() +=
                row["spend_micros"].as_u64().unwrap_or_default();
        }
        let mut ledger_spend: BTreeMap<String, u64> = BTreeMap::new();
        for ((campaign, _), (billed, _)) in &reference.spend {
            *ledger_spend.entry(campaign.clone()).or_default() += billed;
        }
        assert_eq!(
            report_spend, ledger_spend,
            "{workers} workers: reported spend"
        );
        let won: u64 = seen
            .rows
            .values()
            .map(|r| r["requests_won"].as_u64().unwrap_or_default())
            .sum();
        assert_eq!(
            won as usize,
            wins.len(),
            "{workers} workers: wins reported once"
        );
        assert!(
            seen.dead
                .get(&Reason::Duplicate)
                .copied()
                .unwrap_or_default()
                > 0,
            "{workers} workers: duplicates are refused ({:?})",
            seen.dead
        );
        let d = decisions(&wins);
        match &decided {
            None => decided = Some(d),
            Some(first) => assert_eq!(first, &d, "{workers} workers: the same auctions"),
        }
    }
}
