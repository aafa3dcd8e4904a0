//! adstream's simulator, benches and demo traffic: a crate beside the product binary that drives
//! and measures the product's own code (`adstream-operators`), never a copy of it.
//!
//! The `adstream` binary reaches it through its `sim` feature (`demo`, `simulate`, `bench`); the
//! binary supplies what only it knows (pipeline files, the Kafka client configuration, the state
//! store) as plain values, so this crate never depends on it.
//!
//! # The simulator (`adstream simulate`, and the traffic of `adstream demo`)
//!
//! A closed-loop marketplace that drives a running pipeline. A seeded ground-truth [`world`]
//! (users, advertisers, campaigns, creatives with latent traits) sends OpenRTB requests to the
//! API at a rate that follows a daily [`traffic`] curve on a simulated clock (a day can be
//! compressed into minutes). Every win is rendered as an impression, and clicks and conversions
//! are drawn from the true probabilities with realistic delays ([`outcomes`]); the events go to
//! Kafka with the billing tokens the auction returned, along with deliberate bad input
//! ([`faults`]). What was delivered feeds the [`truth`] oracle, which says what the ledger must
//! have charged.
//!
//! Event times are wall-clock times (the pipeline judges lateness against the wall clock); only
//! the traffic curve and the conversion delays run on the simulated clock.
//!
//! # The benches (`adstream bench`)
//!
//! [`bench`]: the ledger's hot path and dataflow, spend freshness against a running pipeline, the
//! pacing law against an ASAP baseline, and the online ranker, each through the operators'
//! code: targeting, headroom and pricing are serving's own ([`adstream_operators::serve`]).
#![deny(missing_docs)]

pub mod bench;
pub mod check;
pub mod faults;
pub mod outcomes;
pub mod traffic;
pub mod truth;
pub mod world;

use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adstream_operators::attribution::Windows;
use adstream_operators::events::{Billing, EventKind};
use adstream_operators::time::EventTime;
use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use serde_json::json;

use faults::Faults;
use outcomes::{draw, OutcomeParams};
use traffic::{arrivals, DailyCurve, SimClock};
use truth::{Delivered, Expected, Oracle, Scored, ServedRow, TruthFiles, WinRef};
use world::{World, WorldConfig};

/// Everything a simulation run needs besides the addresses.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of the world and of every draw.
    pub seed: u64,
    /// Mean requests per second over a simulated day.
    pub rate: f64,
    /// Stop after this long (otherwise at the stop flag).
    pub duration: Option<Duration>,
    /// Wall-clock length of a simulated day.
    pub day: Duration,
    /// Simulated hour of day at the start.
    pub start_hour: f64,
    /// Request volume over the day.
    pub curve: DailyCurve,
    /// The world's size.
    pub world: WorldConfig,
    /// Bad input to inject.
    pub faults: Faults,
    /// The users' behaviour.
    pub outcomes: OutcomeParams,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// `tmax` of each request, ms.
    pub tmax_ms: u64,
    /// Where to write the ground truth files.
    pub truth_dir: Option<PathBuf>,
    /// Produce the world's campaigns first (and wait until the API lists them).
    pub seed_campaigns: bool,
    /// The pipeline's attribution windows (for the oracle).
    pub windows: Windows,
    /// The pipeline's `time.lateness_ms`: a conversion is sent at least this long (plus a
    /// margin) after every touch of its user and advertiser, so the pipeline has read them all
    /// when it attributes it, as the oracle assumes.
    pub lateness_ms: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            rate: 200.0,
            duration: None,
            day: Duration::from_secs(600),
            start_hour: 8.0,
            curve: DailyCurve::diurnal(),
            world: WorldConfig::default(),
            faults: Faults::default(),
            outcomes: OutcomeParams::default(),
            concurrency: 64,
            tmax_ms: 50,
            truth_dir: None,
            seed_campaigns: true,
            windows: Windows::default(),
            lateness_ms: 2_000,
        }
    }
}

/// The topics the simulator writes.
#[derive(Clone, Debug)]
pub struct SimTopics {
    /// Campaign definitions.
    pub campaigns: String,
    /// Impressions.
    pub impressions: String,
    /// Clicks.
    pub clicks: String,
    /// Conversions.
    pub conversions: String,
}

impl SimTopics {
    fn of_kind(&self, kind: EventKind) -> &str {
        match kind {
            EventKind::Impression => &self.impressions,
            EventKind::Click => &self.clicks,
            EventKind::Conversion => &self.conversions,
        }
    }
}

/// What the simulator and the benches need to know of the pipeline they drive. The `adstream`
/// binary fills it in from a pipeline file (the Kafka settings with their secrets resolved), so
/// this crate never reads pipeline files itself.
#[derive(Clone)]
pub struct Target {
    /// A librdkafka configuration for the pipeline's brokers (SASL/SSL properties included).
    pub kafka: ClientConfig,
    /// The topics to write.
    pub topics: SimTopics,
    /// The pipeline's `time.lateness_ms`.
    pub lateness_ms: i64,
    /// The pipeline's attribution windows.
    pub windows: Windows,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client configuration may hold SASL passwords: never printed.
        f.debug_struct("Target")
            .field("topics", &self.topics)
            .field("lateness_ms", &self.lateness_ms)
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

impl SimConfig {
    /// Takes the pipeline's lateness bound and attribution windows (the oracle's assumptions).
    pub fn fit(&mut self, target: &Target) {
        self.lateness_ms = target.lateness_ms;
        self.windows = target.windows;
    }
}

/// Live counters, read by the demo's terminal summary.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Answered with at least one bid.
    pub filled: AtomicU64,
    /// Answered 204.
    pub no_fill: AtomicU64,
    /// Answered 503.
    pub overloaded: AtomicU64,
    /// Failed (connection errors, unexpected statuses, bad bodies).
    pub errors: AtomicU64,
    /// Not sent: every request slot of the client was busy.
    pub skipped: AtomicU64,
    /// Bids won.
    pub wins: AtomicU64,
    /// Impressions delivered to Kafka.
    pub impressions: AtomicU64,
    /// Clicks delivered.
    pub clicks: AtomicU64,
    /// Conversions delivered.
    pub conversions: AtomicU64,
    /// Bad messages delivered (duplicates, malformed, forged).
    pub injected: AtomicU64,
    /// Messages Kafka refused.
    pub delivery_errors: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    model_version: Mutex<String>,
}

impl SimStats {
    /// Takes the request latencies (µs) recorded since the last call.
    pub fn take_latencies(&self) -> Vec<u32> {
        self.latencies_us
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// The model version of the latest answer.
    pub fn model_version(&self) -> String {
        self.model_version
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    fn latency(&self, took: Duration) {
        if let Ok(mut v) = self.latencies_us.lock() {
            if v.len() < 1_000_000 {
                v.push(took.as_micros().min(u32::MAX as u128) as u32);
            }
        }
    }
}

/// What a finished run produced.
#[derive(Debug)]
pub struct SimReport {
    /// The oracle's verdict.
    pub expected: Expected,
    /// Where the truth files went.
    pub truth_dir: Option<PathBuf>,
    /// How long traffic ran.
    pub elapsed: Duration,
}

/// What the delivery callback needs to know about a message.
struct Receipt {
    topic: String,
    key: String,
    payload: Vec<u8>,
    fault: &'static str,
    /// Valid events: what the oracle records. `None`: an invalid message, counted under `reason`.
    event: Option<Delivered>,
    reason: &'static str,
    /// Conversions: (user, advertiser), to hold them back until their touches are delivered.
    attribution_key: Option<(String, String)>,
}

struct Recorder {
    oracle: Oracle,
    scored: Vec<Scored>,
    files: Option<TruthFiles>,
    write_error: Option<String>,
}

impl Recorder {
    fn note_io(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r {
            self.write_error.get_or_insert_with(|| e.to_string());
        }
    }
}

struct TruthContext {
    recorder: Arc<Mutex<Recorder>>,
    stats: Arc<SimStats>,
}

impl ClientContext for TruthContext {}

impl ProducerContext for TruthContext {
    type DeliveryOpaque = Box<Receipt>;

    fn delivery(&self, result: &DeliveryResult<'_>, receipt: Box<Receipt>) {
        if result.is_err() {
            self.stats.delivery_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(mut rec) = self.recorder.lock() else {
            return;
        };
        let receipt = *receipt;
        if let Some(files) = rec.files.as_mut() {
            let r = files.event(
                &receipt.topic,
                &receipt.key,
                receipt.fault,
                &receipt.payload,
            );
            rec.note_io(r);
        }
        match receipt.event {
            Some(event) => {
                let counter = match event.kind {
                    EventKind::Impression => &self.stats.impressions,
                    EventKind::Click => &self.stats.clicks,
                    EventKind::Conversion => &self.stats.conversions,
                };
                if event.fault == "duplicate" {
                    self.stats.injected.fetch_add(1, Ordering::Relaxed);
                } else {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                rec.oracle.delivered(event);
            }
            // Not an event (a campaign definition).
            None if receipt.reason.is_empty() => {}
            None => {
                self.stats.injected.fetch_add(1, Ordering::Relaxed);
                rec.oracle.invalid(receipt.reason);
            }
        }
    }
}

/// A message waiting for its time.
struct Scheduled {
    at_ms: i64,
    seq: u64,
    receipt: Receipt,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

#[derive(Default)]
struct Schedule {
    heap: BinaryHeap<Scheduled>,
    seq: u64,
    /// Latest delivery time of any touch per (user, advertiser): a conversion is sent after the
    /// touches it may be attributed to, even late ones.
    last_touch_at: HashMap<(String, String), i64>,
}

impl Schedule {
    fn push(&mut self, at_ms: i64, receipt: Receipt) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at_ms,
            seq: self.seq,
            receipt,
        });
    }

    /// Messages due at `now_ms`. A conversion waits until `gap_ms` after the delivery of the
    /// latest touch of its user and advertiser (a touch scheduled after it, late, may be older).
    fn pop_due(&mut self, now_ms: i64, gap_ms: i64) -> Vec<Receipt> {
        let mut due = Vec::new();
        let mut held = Vec::new();
        while self.heap.peek().is_some_and(|s| s.at_ms <= now_ms) {
            let Some(s) = self.heap.pop() else { break };
            let ready_at = s
                .receipt
                .attribution_key
                .as_ref()
                .and_then(|k| self.last_touch_at.get(k))
                .map_or(i64::MIN, |last| last.saturating_add(gap_ms));
            if ready_at > now_ms {
                held.push((ready_at, s.receipt));
            } else {
                due.push(s.receipt);
            }
        }
        for (at, receipt) in held {
            self.push(at, receipt);
        }
        due
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Sends `record`, waiting 1 ms and trying again while the producer's queue is full, at most
/// `attempts` times; then the queue-full error is returned. Any other error returns at once.
pub fn send_waiting<'a, K, P, C>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
    attempts: usize,
) -> Result<(), KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    C: ProducerContext + 'static,
{
    for _ in 0..attempts {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
    Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
}

/// A simulation against one pipeline.
pub struct Simulator {
    config: SimConfig,
    world: World,
    topics: SimTopics,
    api: String,
    http: reqwest::Client,
    producer: ThreadedProducer<TruthContext>,
    recorder: Arc<Mutex<Recorder>>,
    schedule: Mutex<Schedule>,
    /// Live counters.
    pub stats: Arc<SimStats>,
    clock: SimClock,
    run_id: String,
}

impl Simulator {
    /// Draws the world and connects to Kafka (`kafka`) and the API at `api` (`http://host:port`).
    pub fn new(
        config: SimConfig,
        kafka: &ClientConfig,
        topics: SimTopics,
        api: &str,
    ) -> anyhow::Result<Self> {
        config.faults.validate()?;
        if !(config.rate.is_finite() && config.rate > 0.0) {
            anyhow::bail!(
                "--rate must be a number of requests per second above 0, got {}",
                config.rate
            );
        }
        let world = World::generate(config.seed, &config.world);
        let stats = Arc::new(SimStats::default());
        let files = match &config.truth_dir {
            Some(dir) => Some(TruthFiles::create(dir)?),
            None => None,
        };
        let recorder = Arc::new(Mutex::new(Recorder {
            oracle: Oracle::new(config.windows),
            scored: Vec::new(),
            files,
            write_error: None,
        }));
        let mut kafka = kafka.clone();
        // The pipeline's properties (`kafka`) win over the batching defaults.
        for (key, value) in [
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "1000000"),
        ] {
            if kafka.get(key).is_none() {
                kafka.set(key, value);
            }
        }
        kafka.set("enable.idempotence", "true");
        let producer = kafka
            .create_with_context(TruthContext {
                recorder: recorder.clone(),
                stats: stats.clone(),
            })
            .context("creating the simulator's Kafka producer")?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(config.concurrency)
            .timeout(Duration::from_millis(config.tmax_ms + 2_000))
            .build()
            .context("creating the HTTP client")?;
        let now = EventTime::now().millis();
        Ok(Simulator {
            clock: SimClock::new(now, config.start_hour, config.day.as_millis().max(1) as i64),
            run_id: format!("s{:x}", now),
            config,
            world,
            topics,
            api: api.trim_end_matches('/').to_string(),
            http,
            producer,
            recorder,
            schedule: Mutex::new(Schedule::default()),
            stats,
        })
    }

    /// The ground-truth world.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The simulated clock.
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    fn send(&self, receipt: Receipt) {
        let (topic, key, payload) = (
            receipt.topic.clone(),
            receipt.key.clone(),
            receipt.payload.clone(),
        );
        let record = BaseRecord::with_opaque_to(&topic, Box::new(receipt))
            .key(&key)
            .payload(&payload);
        if let Err(e) = send_waiting(&self.producer, record, usize::MAX) {
            tracing::warn!(error = %e, topic, "simulator could not produce");
            self.stats.delivery_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Produces the world's campaigns and waits until the API serves every one of them.
    pub async fn seed_campaigns(&self, timeout: Duration) -> anyhow::Result<()> {
        for c in &self.world.campaigns {
            let doc = serde_json::to_vec(&c.campaign)?;
            self.send(Receipt {
                topic: self.topics.campaigns.clone(),
                key: c.campaign.campaign_id.clone(),
                payload: doc,
                fault: "",
                event: None,
                reason: "",
                attribution_key: None,
            });
        }
        self.producer
            .flush(Duration::from_secs(30))
            .context("producing the campaigns")?;
        let deadline = Instant::now() + timeout;
        for c in &self.world.campaigns {
            let url = format!("{}/v1/campaigns/{}", self.api, c.campaign.campaign_id);
            loop {
                let ok = self
                    .http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "campaign {} was produced to {} but {url} still does not know it after {timeout:?}",
                        c.campaign.campaign_id,
                        self.topics.campaigns
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Runs traffic until `stop` is set or the configured duration has passed, then delivers what
    /// is due, flushes, and returns the oracle's verdict.
    pub async fn run(self: Arc<Self>, stop: Arc<AtomicBool>) -> anyhow::Result<SimReport> {
        if self.config.seed_campaigns {
            self.seed_campaigns(Duration::from_secs(60)).await?;
        }
        let started = Instant::now();
        let sending = Arc::new(AtomicBool::new(true));
        let producer_task = {
            let sim = self.clone();
            let sending = sending.clone();
            let gap_ms = self.config.lateness_ms.max(0) + 3_000;
            tokio::task::spawn_blocking(move || {
                while sending.load(Ordering::Relaxed) {
                    let due = match sim.schedule.lock() {
                        Ok(mut s) => s.pop_due(EventTime::now().millis(), gap_ms),
                        Err(_) => Vec::new(),
                    };
                    for receipt in due {
                        sim.send(receipt);
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(self.config.concurrency.max(1)));
        let tick = Duration::from_millis(5);
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut arrivals_rng = StdRng::seed_from_u64(splitmix(self.config.seed));
        let mut last = Instant::now();
        let mut seq = 0u64;
        loop {
            interval.tick().await;
            if stop.load(Ordering::Relaxed)
                || self.config.duration.is_some_and(|d| started.elapsed() >= d)
            {
                break;
            }
            let elapsed_ms = last.elapsed().as_secs_f64() * 1000.0;
            last = Instant::now();
            let n = arrivals(
                &mut arrivals_rng,
                &self.config.curve,
                &self.clock,
                EventTime::now().millis(),
                self.config.rate,
                elapsed_ms,
            );
            for _ in 0..n {
                seq += 1;
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let sim = self.clone();
                tokio::spawn(async move {
                    sim.request(seq).await;
                    drop(permit);
                });
            }
        }
        let elapsed = started.elapsed();
        // Let requests in flight finish, then stop sending: what is still scheduled is dropped
        // (it never reached Kafka, so the oracle never saw it).
        let _ = permits
            .acquire_many(self.config.concurrency.max(1) as u32)
            .await;
        sending.store(false, Ordering::Relaxed);
        producer_task
            .await
            .context("the simulator's producer thread")?;
        self.producer
            .flush(Duration::from_secs(60))
            .context("flushing the simulator's events to Kafka")?;
        let mut rec = self
            .recorder
            .lock()
            .map_err(|_| anyhow::anyhow!("truth recorder poisoned"))?;
        if let Some(e) = rec.write_error.take() {
            anyhow::bail!("writing the truth files: {e}");
        }
        let oracle = std::mem::take(&mut rec.oracle);
        let scored = std::mem::take(&mut rec.scored);
        let expected = oracle.finish(&scored);
        let truth_dir = match rec.files.take() {
            Some(files) => Some(files.finish(&expected)?),
            None => None,
        };
        Ok(SimReport {
            expected,
            truth_dir,
            elapsed,
        })
    }

    async fn request(&self, seq: u64) {
        let mut rng = StdRng::seed_from_u64(splitmix(self.config.seed ^ splitmix(seq)));
        let user = self.world.sample_user(&mut rng);
        let request_id = format!("{}-{seq}", self.run_id);
        let slots = if rng.random_bool(0.3) { 2 } else { 1 };
        // Publishers' floors (CPM, currency units) vary around the market's typical price.
        let floor: f64 = LogNormal::new(0.0, 0.8).map_or(1.0, |l| l.sample(&mut rng));
        let body = user.bid_request(&request_id, slots, floor, self.config.tmax_ms);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let response = self
            .http
            .post(format!("{}/v1/openrtb", self.api))
            .json(&body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "ad request failed");
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let status = response.status().as_u16();
        let parsed = match status {
            200 => response.json::<serde_json::Value>().await.ok(),
            _ => None,
        };
        self.stats.latency(sent.elapsed());
        let doc = match (status, parsed) {
            (200, Some(doc)) => doc,
            (204, _) => {
                self.stats.no_fill.fetch_add(1, Ordering::Relaxed);
                return;
            }
            (503, _) => {
                self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.stats.filled.fetch_add(1, Ordering::Relaxed);
        if let Some(version) = doc["seatbid"][0]["bid"][0]["ext"]["model_version"].as_str() {
            if let Ok(mut v) = self.stats.model_version.lock() {
                if *v != version {
                    *v = version.to_string();
                }
            }
        }
        let now = EventTime::now().millis();
        let bids = doc["seatbid"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["bid"].as_array().into_iter().flatten());
        for bid in bids {
            self.win(&mut rng, user, &request_id, bid, now);
        }
    }

    fn win(
        &self,
        rng: &mut StdRng,
        user: &world::User,
        request_id: &str,
        bid: &serde_json::Value,
        now: i64,
    ) {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let ext = &bid["ext"];
        let (ad_id, imp_id, token) = (
            text(&bid["adid"]),
            text(&bid["impid"]),
            text(&ext["billing_token"]),
        );
        let billing = match ext["billing"].as_str() {
            Some("cpm") => Billing::Cpm,
            Some("cpc") => Billing::Cpc,
            Some("cpa") => Billing::Cpa,
            _ => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Some((campaign, ad)) = self.world.ad(&ad_id) else {
            // Not one of ours (another tool's campaign on the same pipeline): not rendered.
            return;
        };
        let Ok(tz) = campaign.campaign.tz() else {
            return;
        };
        self.stats.wins.fetch_add(1, Ordering::Relaxed);
        let charge_micros = ext["charge_micros"].as_u64().unwrap_or(0);
        let (true_ctr, true_cvr) = (
            self.world.true_ctr(user, ad, campaign),
            self.world.true_cvr(user, campaign),
        );
        let fate = draw(rng, &self.config.outcomes, &self.clock, true_ctr, true_cvr);
        let row = ServedRow {
            request_id: request_id.to_string(),
            imp_id: imp_id.clone(),
            campaign_id: campaign.campaign.campaign_id.clone(),
            ad_id: ad_id.clone(),
            user_id: user.id.clone(),
            billing: billing.as_str(),
            charge_micros,
            pctr: ext["pctr"].as_f64().unwrap_or(0.0),
            pcvr: ext["pcvr"].as_f64().unwrap_or(0.0),
            model_version: text(&ext["model_version"]),
            true_ctr,
            true_cvr,
            rendered: fate.impression_ms.is_some(),
            clicked: fate.click_ms.is_some(),
            converted: fate.conversion_ms.is_some(),
        };
        if let Ok(mut rec) = self.recorder.lock() {
            if let Some(files) = rec.files.as_mut() {
                let r = files.served(&row);
                rec.note_io(r);
            }
            if row.rendered {
                rec.scored.push(Scored {
                    true_ctr: row.true_ctr as f32,
                    pctr: row.pctr as f32,
                    clicked: row.clicked,
                });
            }
        }
        // The win's budget day is that of its token's issue time (the server's clock).
        let issued_ms =
            adstream_operators::token::claims_unverified(&token).map_or(now, |c| c.issued.millis());
        let win = WinRef {
            request_id: request_id.to_string(),
            imp_id: imp_id.clone(),
            campaign_id: campaign.campaign.campaign_id.clone(),
            advertiser_id: campaign.campaign.advertiser_id.clone(),
            billing,
            charge_micros,
            tz,
            issued_ms,
            budget_micros: campaign.campaign.daily_budget_micros,
        };
        let Ok(mut schedule) = self.schedule.lock() else {
            return;
        };
        let touch_key = (user.id.clone(), win.advertiser_id.clone());
        for (kind, offset) in [
            (EventKind::Impression, fate.impression_ms),
            (EventKind::Click, fate.click_ms),
        ] {
            let Some(offset) = offset else { continue };
            let ts = now + offset;
            let suffix = if kind == EventKind::Click { "c" } else { "i" };
            let payload = json!({
                "event_id": format!("{request_id}-{imp_id}-{suffix}"),
                "ts": ts,
                "request_id": request_id,
                "imp_id": imp_id,
                "campaign_id": win.campaign_id,
                "ad_id": ad_id,
                "user_id": user.id,
                "billing_token": token,
            })
            .to_string();
            let event = Delivered {
                kind,
                event_id: format!("{request_id}-{imp_id}-{suffix}"),
                ts_ms: ts,
                user_id: user.id.clone(),
                win: Some(win.clone()),
                advertiser_id: win.advertiser_id.clone(),
                fault: "",
            };
            let at = self.schedule_event(
                &mut schedule,
                rng,
                kind,
                request_id,
                ts,
                payload,
                event,
                Some(&token),
            );
            let last = schedule
                .last_touch_at
                .entry(touch_key.clone())
                .or_insert(at);
            *last = (*last).max(at);
        }
        if let Some(offset) = fate.conversion_ms {
            let mut ts = now + offset;
            // Sent after every touch it may be attributed to, even a late one.
            if let Some(last) = schedule.last_touch_at.get(&touch_key) {
                ts = ts.max(last + 100);
            }
            let event_id = format!("{request_id}-{imp_id}-v");
            let payload = json!({
                "event_id": event_id,
                "ts": ts,
                "user_id": user.id,
                "advertiser_id": win.advertiser_id,
                "type": "purchase",
                "value_micros": rng.random_range(5_000_000..100_000_000u64),
            })
            .to_string();
            let event = Delivered {
                kind: EventKind::Conversion,
                event_id,
                ts_ms: ts,
                user_id: user.id.clone(),
                win: None,
                advertiser_id: win.advertiser_id.clone(),
                fault: "",
            };
            let key = user.id.clone();
            self.schedule_event(
                &mut schedule,
                rng,
                EventKind::Conversion,
                &key,
                ts,
                payload,
                event,
                None,
            );
        }
    }

    /// Schedules an event at its time `ts` with the configured faults; returns when the real
    /// event will be sent.
    #[allow(clippy::too_many_arguments)]
    fn schedule_event(
        &self,
        schedule: &mut Schedule,
        rng: &mut StdRng,
        kind: EventKind,
        key: &str,
        ts: i64,
        payload: String,
        event: Delivered,
        token: Option<&str>,
    ) -> i64 {
        let faults = &self.config.faults;
        let topic = self.topics.of_kind(kind).to_string();
        let attribution_key = (kind == EventKind::Conversion)
            .then(|| (event.user_id.clone(), event.advertiser_id.clone()));
        let mut at = ts;
        let mut event = event;
        if rng.random_bool(faults.late) {
            at += faults.late_by_ms;
            event.fault = "late";
        }
        if rng.random_bool(faults.malformed) {
            schedule.push(
                at,
                Receipt {
                    topic: topic.clone(),
                    key: key.to_string(),
                    payload: faults::malformed(rng, &payload),
                    fault: "malformed",
                    event: None,
                    reason: "malformed",
                    attribution_key: None,
                },
            );
        }
        if let Some(token) = token {
            if rng.random_bool(faults.forged) {
                let forged = payload.replace(token, &faults::forge(token)).replace(
                    &format!("\"event_id\":\"{}\"", event.event_id),
                    &format!("\"event_id\":\"{}-f\"", event.event_id),
                );
                schedule.push(
                    at,
                    Receipt {
                        topic: topic.clone(),
                        key: key.to_string(),
                        payload: forged.into_bytes(),
                        fault: "forged",
                        event: None,
                        reason: "bad_token",
                        attribution_key: None,
                    },
                );
            }
        }
        if rng.random_bool(faults.duplicate) {
            let mut copy = event.clone();
            copy.fault = "duplicate";
            schedule.push(
                at + rng.random_range(50..3_000),
                Receipt {
                    topic: topic.clone(),
                    key: key.to_string(),
                    payload: payload.clone().into_bytes(),
                    fault: "duplicate",
                    event: Some(copy),
                    reason: "",
                    attribution_key: attribution_key.clone(),
                },
            );
        }
        let fault = event.fault;
        schedule.push(
            at,
            Receipt {
                topic,
                key: key.to_string(),
                payload: payload.into_bytes(),
                fault,
                event: Some(event),
                reason: "",
                attribution_key,
            },
        );
        at
    }
}

/// `adstream simulate`: runs against the pipeline `target` whose API is `api`, printing progress; with `check`, waits until the API's spend equals the ground truth.
pub fn run_standalone(
    target: &Target,
    api: &str,
    mut config: SimConfig,
    check: bool,
) -> anyhow::Result<()> {
    config.fit(target);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let sim = {
        let _guard = rt.enter();
        Arc::new(Simulator::new(
            config,
            &target.kafka,
            target.topics.clone(),
            api,
        )?)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let ctrl_c = stop.clone();
    rt.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.store(true, Ordering::Relaxed);
        }
    });
    let progress = {
        let stats = sim.stats.clone();
        let stop = stop.clone();
        rt.spawn(async move {
            let mut last = [0u64; 3];
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = [
                    stats.requests.load(Ordering::Relaxed),
                    stats.filled.load(Ordering::Relaxed),
                    stats.impressions.load(Ordering::Relaxed)
                        + stats.clicks.load(Ordering::Relaxed)
                        + stats.conversions.load(Ordering::Relaxed),
                ];
                let mut lat = stats.take_latencies();
                lat.sort_unstable();
                let p99 = lat
                    .get(((lat.len().max(1) - 1) as f64 * 0.99) as usize)
                    .map_or(0.0, |v| *v as f64 / 1000.0);
                println!(
                    "{:.0} req/s, fill {:.0}%, p99 {p99:.1} ms, {:.0} events/s",
                    (now[0] - last[0]) as f64 / 5.0,
                    (now[1] - last[1]) as f64 / (now[0] - last[0]).max(1) as f64 * 100.0,
                    (now[2] - last[2]) as f64 / 5.0,
                );
                last = now;
            }
        })
    };
    let report = rt.block_on(sim.clone().run(stop.clone()))?;
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    let e = &report.expected;
    println!(
        "done after {:.1} s: requests {}, wins {}; delivered {:?}; expected spend {} micros over {} campaign-days; expected dead letters {:?}",
        report.elapsed.as_secs_f64(),
        sim.stats.requests.load(Ordering::Relaxed),
        sim.stats.wins.load(Ordering::Relaxed),
        e.delivered,
        e.total_spend(),
        e.spend.len(),
        e.dead_letters
    );
    if let (Some(o), Some(s)) = (e.oracle_auc, e.served_auc) {
        println!("click AUC: oracle {o:.4}, served pCTR {s:.4}");
    }
    if let Some(dir) = &report.truth_dir {
        println!("ground truth written to {}", dir.display());
    }
    if check {
        rt.block_on(check_api(&sim, e, Duration::from_secs(60)))?;
    }
    Ok(())
}

/// Waits until `GET /v1/campaigns/{id}?day=D` shows the expected spend for every campaign-day.
async fn check_api(sim: &Simulator, expected: &Expected, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for want in &expected.spend {
        let url = format!(
            "{}/v1/campaigns/{}?day={}",
            sim.api, want.campaign_id, want.day
        );
        let mut seen = None;
        loop {
            if let Ok(r) = sim.http.get(&url).send().await {
                if let Ok(doc) = r.json::<serde_json::Value>().await {
                    seen = doc["spend_micros"].as_u64();
                }
            }
            if seen == Some(want.spend_micros) {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "campaign {} on {}: the API shows {seen:?} micros, the ground truth {} (waited {timeout:?})",
                    want.campaign_id,
                    want.day,
                    want.spend_micros
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "check: the API's spend equals the ground truth for all {} campaign-days",
        expected.spend.len()
    );
    Ok(())
}
