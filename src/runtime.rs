//! `adstream run`: a pipeline file turned into a running timely cluster.
//!
//! Per process: one RocksDB state store, one Kafka producer, one HTTP listener, and `workers`
//! timely worker threads. Each worker builds the whole graph ([`adstream_operators::graph::build`])
//! and attaches its I/O here: its share of the input partitions, its serving queue, the trainer
//! link (worker 0), and the sinks, live view and metrics that read the graph's outputs. The graph
//! routes records to the worker owning their key, in this process or another, and broadcasts
//! ledger and pacing state so that every process's live view (and so its HTTP API) sees every
//! campaign.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adstream_operators::checkpoint::StateStore;
use adstream_operators::deliver::Deliver;
use adstream_operators::graph::{self, GraphConfig, GraphContext, GraphInputs};
use adstream_operators::ingest::{decode, DecodeConfig};
use adstream_operators::labels::operator::LabelStatsHandle;
use adstream_operators::ledger::operator::LedgerConfig;
use adstream_operators::ledger::status::BudgetStatus;
use adstream_operators::ranker::scoring::{ModelSlot, PublishedModel, ScoringModel};
use adstream_operators::ranker::trainer::TrainerControl;
use adstream_operators::records::{Ingested, LedgerState, PacingUpdate, Served, StreamId};
use adstream_operators::report::operator::ReportStatsHandle;
use adstream_operators::report::ReportRow;
use adstream_operators::source::{
    kafka_source, restore_offsets, wall_clock, SourceConfig, SourceControl,
};
use adstream_operators::time::EventTime;
use anyhow::Context;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;

use crate::http::{app, router, AppState, Listener};
use crate::kafka::client_config;
use crate::kafka::deadletters::{published_since, read_back_since, DeadLetterGate};
use crate::kafka::monitor::{Topology, Watched};
use crate::kafka::reader::{discover, KafkaReader, OnLost, ReaderLinks, SharedConsumer};
use crate::kafka::sink::Sinks;
use crate::live::LiveState;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::state::RocksStore;

/// Command-line overrides of a pipeline file, and the cluster shape.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides `kafka.brokers`.
    pub brokers: Option<String>,
    /// Overrides `api.listen`.
    pub listen: Option<SocketAddr>,
    /// Overrides `api.admin_listen`.
    pub admin_listen: Option<SocketAddr>,
    /// Overrides `pipeline.state_dir`.
    pub state_dir: Option<PathBuf>,
    /// Overrides `pipeline.workers`.
    pub workers: Option<usize>,
    /// This process's index in the cluster.
    pub process: usize,
    /// Number of processes in the cluster.
    pub processes: usize,
    /// One `host:port` per process, for timely's cluster connections.
    pub hostfile: Option<PathBuf>,
    /// Print `adstream: API listening on http://ADDR` as soon as the API is bound (before the
    /// cluster has formed: in cluster mode, start-up waits for every process).
    pub announce: bool,
}

fn timely_config(workers: usize, opts: &RunOptions) -> anyhow::Result<timely::Config> {
    let communication = if opts.processes <= 1 {
        timely::CommunicationConfig::Process(workers)
    } else {
        let path = opts
            .hostfile
            .as_ref()
            .context("--processes > 1 needs --hostfile")?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading hostfile {}", path.display()))?;
        let addresses: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if addresses.len() != opts.processes {
            anyhow::bail!(
                "hostfile {} lists {} addresses but --processes is {}",
                path.display(),
                addresses.len(),
                opts.processes
            );
        }
        if opts.process >= opts.processes {
            anyhow::bail!(
                "--process {} must be below --processes {}",
                opts.process,
                opts.processes
            );
        }
        timely::CommunicationConfig::Cluster {
            threads: workers,
            process: opts.process,
            addresses,
            report: false,
            zerocopy: false,
        }
    };
    Ok(timely::Config {
        communication,
        worker: timely::WorkerConfig::default(),
    })
}

/// Runs `pipeline` until SIGINT/SIGTERM, then drains, checkpoints and returns.
pub fn run(pipeline: Pipeline, mut opts: RunOptions) -> anyhow::Result<()> {
    opts.announce = true;
    let running = start(pipeline, opts)?;
    let signal_stop = running.stop.clone();
    let Some(rt) = running.runtime.as_ref() else {
        anyhow::bail!("the pipeline's runtime is gone");
    };
    rt.spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: draining and checkpointing");
        signal_stop.store(true, Ordering::Relaxed);
        // A drain that cannot finish (the broker is unreachable, so dead letters and report rows
        // cannot be delivered before the final checkpoint) must not keep the process alive:
        // past the deadline it exits without that checkpoint; a restart replays from the last.
        std::thread::spawn(|| {
            std::thread::sleep(DRAIN_DEADLINE);
            tracing::error!(
                deadline_s = DRAIN_DEADLINE.as_secs(),
                "the drain did not finish in time (broker unreachable?): exiting without a final checkpoint; a restart resumes from the last one"
            );
            std::process::exit(EXIT_DRAIN_TIMEOUT);
        });
    });
    running.wait()
}

/// How long a signalled process may take to drain and take its final checkpoint.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(45);

/// Exit status of a process whose drain did not finish within [`DRAIN_DEADLINE`].
pub const EXIT_DRAIN_TIMEOUT: i32 = 71;

/// A pipeline running in this process: its API address, its live state and the switch that
/// stops it (`adstream run` flips it on SIGINT/SIGTERM).
pub struct Running {
    /// Where the HTTP API listens.
    pub api: SocketAddr,
    /// Where the admin routes (dashboard, metrics, models) listen, when apart from `api`.
    pub admin: Option<SocketAddr>,
    /// Set to drain, checkpoint and stop.
    pub stop: Arc<AtomicBool>,
    /// The live campaign view behind the API.
    pub live: Arc<LiveState>,
    /// The live model of this process's serving replicas.
    pub models: Arc<ModelSlot>,
    /// The trainer, in the process of worker 0.
    pub trainer: Option<Arc<TrainerControl>>,
    /// The process's metrics.
    pub metrics: Metrics,
    /// The checkpoint store (offsets and operator state).
    pub store: Arc<dyn StateStore>,
    guards: Option<timely::communication::WorkerGuards<Result<(), String>>>,
    sinks: Sinks,
    runtime: Option<tokio::runtime::Runtime>,
    server: Option<tokio::task::JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    /// Dropped without [`Running::wait`] (an error on the caller's side): stop the workers,
    /// which the guards then join, rather than wait for a stop that never comes.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Running {
    /// Waits until the workers have stopped (after [`Running::stop`] or a signal), flushes the
    /// sinks and closes the API.
    pub fn wait(mut self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        if let Some(guards) = self.guards.take() {
            for (i, result) in guards.join().into_iter().enumerate() {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) | Err(e) => failed.push(format!("worker {i}: {e}")),
                }
            }
        }
        if let Some(trainer) = &self.trainer {
            // The workers dropped its link: it finishes its batch and stops.
            trainer.join();
        }
        self.sinks.flush(Duration::from_secs(10));
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let (Some(runtime), Some(server)) = (self.runtime.take(), self.server.take()) {
            // Bounded by `api.shutdown_grace_ms`, whatever the clients do.
            let _ = runtime.block_on(server);
            // A request's blocking task (a promotion waiting for the trainer) must not hold
            // the exit either.
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        if !failed.is_empty() {
            anyhow::bail!("{}", failed.join("; "));
        }
        tracing::info!("stopped cleanly after a final checkpoint");
        Ok(())
    }
}

/// Starts `pipeline`'s workers and API in this process and returns at once.
///
/// Installs the process-wide fail-stop hook ([`crate::fail_stop`]): from here on, a panic on
/// any thread ends the process.
pub fn start(pipeline: Pipeline, opts: RunOptions) -> anyhow::Result<Running> {
    crate::fail_stop::install();
    let unlocked = pipeline.unlock()?;
    let brokers = opts
        .brokers
        .clone()
        .unwrap_or_else(|| pipeline.kafka.brokers.clone());
    let listen: SocketAddr = opts.listen.unwrap_or(pipeline.api.listen);
    let admin_listen = opts.admin_listen.or(pipeline.api.admin_listen);
    if admin_listen.is_some_and(|admin| admin == listen && admin.port() != 0) {
        anyhow::bail!("the admin API and the API cannot both listen on {listen}");
    }
    let workers = opts.workers.unwrap_or(pipeline.workers).max(1);
    let state_dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| pipeline.state_dir.clone());
    let processes = opts.processes.max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let config = client_config(&pipeline, &brokers)?;
    crate::kafka::check_connection(&config, &brokers, Duration::from_secs(15))?;
    let topics: Vec<(StreamId, String)> = StreamId::ALL
        .iter()
        .map(|s| (*s, pipeline.topics.input(*s).to_string()))
        .collect();
    let layout = discover(&config, &topics, Duration::from_secs(15))?;
    let topology = Arc::new(Topology::new(layout));
    let metrics = Metrics::new();
    let observer_metrics = metrics.clone();
    let observer: crate::state::WriteObserver = Arc::new(move |entries, took| {
        observer_metrics.checkpoint_written(entries, took);
    });
    let store: Arc<dyn StateStore> = Arc::new(RocksStore::open(
        &state_dir,
        opts.process,
        processes,
        pipeline.checkpoint.fsync,
        Some(observer),
    )?);
    let running_store = store.clone();
    let live = Arc::new(LiveState::default());
    // Dead letters an earlier run published (crate::kafka::deadletters): below the checkpointed
    // offsets, or read back from the dead-letter topic since the last checkpoint.
    let offsets = restore_offsets(&*store).context("restoring the checkpointed Kafka offsets")?;
    let published = match read_back_since(&*store, EventTime::now().millis())? {
        Some(since) => {
            let published =
                published_since(&config, &pipeline.topics, since, Duration::from_secs(15))
                    .context("reading back the dead letters published since the last checkpoint")?;
            tracing::info!(
                dead_letters = published.len(),
                "dead letters published since the last checkpoint: not published again"
            );
            published
        }
        None => Default::default(),
    };
    let gate = DeadLetterGate::new(&offsets, published);
    crate::kafka::monitor::spawn(
        &config,
        Watched {
            topics: topics.clone(),
            workers: opts.process * workers..(opts.process + 1) * workers,
            peers: processes * workers,
        },
        topology.clone(),
        live.clone(),
        metrics.clone(),
        pipeline.monitor.clone(),
        stop.clone(),
    )?;
    // The online ranker: the trainer runs in the process of worker 0, beside the registry in
    // its state directory; every process serves the versions it publishes.
    let spec = pipeline.model.features.clone();
    let models = Arc::new(ModelSlot::default());
    let (trainer_link, trainer) = if pipeline.model.enabled && opts.process == 0 {
        let (link, control) = adstream_operators::ranker::trainer::spawn(
            spec.clone(),
            pipeline.model.trainer.clone(),
            state_dir.join("models"),
        )
        .context("starting the trainer")?;
        (Some(link), Some(Arc::new(control)))
    } else {
        (None, None)
    };
    let trainer_link = Arc::new(Mutex::new(trainer_link));
    let sinks = Sinks::new(
        &config,
        &pipeline.topics,
        metrics.clone(),
        live.clone(),
        gate,
    )?;

    // The HTTP API and signal handling run on a small tokio runtime beside the workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("api")
        .build()
        .context("starting the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("binding the API to {listen}"))?;
    let bound = listener.local_addr().context("reading the API address")?;
    // Both listeners are bound before either is announced: a client that saw the announcement
    // can connect to both at once.
    let admin = match admin_listen {
        Some(admin) => {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(admin))
                .with_context(|| format!("binding the admin API to {admin}"))?;
            let bound = listener
                .local_addr()
                .context("reading the admin API address")?;
            Some((listener, bound))
        }
        None => None,
    };
    tracing::info!(%bound, workers, process = opts.process, processes, "API listening");
    if let Some((_, admin_bound)) = &admin {
        tracing::info!(bound = %admin_bound, "admin API listening");
    }
    if opts.announce {
        println!("adstream: API listening on http://{bound}");
        if let Some((_, admin_bound)) = &admin {
            println!("adstream: admin API listening on http://{admin_bound}");
        }
    }
    // One bounded request queue per local worker, each drained by that worker's serving operator.
    let mut queues = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..workers {
        let (sender, receiver) = std::sync::mpsc::sync_channel(pipeline.serving.queue);
        let activator = Arc::new(Mutex::new(None));
        queues.push(crate::serving::WorkerQueue {
            sender,
            activator: activator.clone(),
        });
        receivers.push(Some((receiver, activator)));
    }
    let receivers = Arc::new(Mutex::new(receivers));
    let public_url = pipeline.serving.public_url.clone().unwrap_or_else(|| {
        let mut reachable = bound;
        if reachable.ip().is_unspecified() {
            reachable.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{reachable}")
    });
    let serving = Arc::new(crate::serving::Serving::new(
        queues,
        crate::serving::ServingSettings {
            public_url,
            seat: pipeline.serving.seat.clone(),
            rates: pipeline.currency.clone(),
            nbr_body: pipeline.serving.nbr_body,
        },
    ));
    let billing = Arc::new(crate::billing_notice::BillingNotices::new(
        &config,
        pipeline.topics.input(StreamId::Impressions),
        unlocked.serve.secret.clone(),
        metrics.clone(),
    )?);
    // The dashboard's history, sampled on the API runtime.
    let history = Arc::new(crate::dashboard::History::new(Duration::from_secs(2)));
    let health = Arc::new(crate::health::Health::default());
    runtime.spawn(crate::dashboard::sample_forever(
        history.clone(),
        live.clone(),
        metrics.clone(),
        models.clone(),
        trainer.clone(),
    ));
    let state = AppState {
        live: live.clone(),
        metrics: metrics.clone(),
        serving: Some(serving),
        models: models.clone(),
        trainer: trainer.clone(),
        history: history.clone(),
        admin_token: unlocked.admin_token.map(Arc::from),
        health: health.clone(),
        billing: Some(billing),
        advertiser_tokens: unlocked.advertiser_tokens.into(),
        per_campaign_metrics: pipeline.metrics.per_campaign,
    };
    let (listeners, admin) = match admin {
        Some((admin_listener, admin)) => (
            vec![
                (listener, router(state.clone(), Listener::Public)),
                (admin_listener, router(state, Listener::Admin)),
            ],
            Some(admin),
        ),
        None => (vec![(listener, app(state))], None),
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(crate::server::serve_all(
        listeners,
        pipeline.api.limits.clone(),
        metrics.clone(),
        async {
            let _ = shutdown_rx.await;
        },
    ));

    let source_config = pipeline.source.clone();
    let report_specs = pipeline.reports.clone();
    let billing_stats: Arc<adstream_operators::ledger::operator::BillingStats> = Arc::default();
    let graph_config = GraphConfig {
        ledger: LedgerConfig {
            horizons: pipeline.horizons,
            checkpoint_interval: pipeline.checkpoint.interval_ms,
            stats: billing_stats.clone(),
        },
        windows: pipeline.windows,
        labels: pipeline.labels,
        reports: report_specs.clone(),
        serve: unlocked.serve,
        pacing: pipeline.pacing.clone(),
        history: pipeline.history,
    };
    let decode_config = unlocked.decode;
    // One consumer for every worker of this process (each reads its partitions' own queues).
    let consumer = SharedConsumer::new(
        &config,
        &crate::kafka::properties::group_id(&pipeline.name),
        &topics,
        live.clone(),
    )?;
    let shared = Arc::new(WorkerIo {
        workers,
        consumer,
        topics,
        offsets,
        topology,
        receivers,
        trainer_link,
        sinks: sinks.clone(),
        live: live.clone(),
        metrics: metrics.clone(),
        stop: stop.clone(),
        models: models.clone(),
        health,
        store,
        topic_names: pipeline.topics.clone(),
        decode_config,
        graph_config,
        source_config,
        report_specs,
        billing_stats,
        spec,
        view: ViewCatchUp::new(workers, &live),
    });
    let guards = timely::execute(
        timely_config(workers, &opts)?,
        crate::fail_stop::worker(move |worker| run_worker(worker, &shared)),
    )
    .map_err(|e| anyhow::anyhow!("starting timely: {e}"))?;
    Ok(Running {
        api: bound,
        admin,
        stop,
        live,
        models,
        trainer,
        metrics,
        store: running_store,
        guards: Some(guards),
        sinks,
        runtime: Some(runtime),
        server: Some(server),
        shutdown: Some(shutdown_tx),
    })
}

/// What every worker of a process shares: the I/O it attaches around the graph (Kafka client
/// settings and partitions, serving queues, the trainer link, sinks, live view, metrics) and the
/// graph's settings.
struct WorkerIo {
    workers: usize,
    consumer: Arc<SharedConsumer>,
    topics: Vec<(StreamId, String)>,
    offsets: BTreeMap<(StreamId, i32), i64>,
    topology: Arc<Topology>,
    receivers: Arc<Mutex<Vec<Option<QueueEnd>>>>,
    trainer_link: Arc<Mutex<Option<adstream_operators::ranker::link::TrainerLink>>>,
    sinks: Sinks,
    live: Arc<LiveState>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    models: Arc<ModelSlot>,
    health: Arc<crate::health::Health>,
    store: Arc<dyn StateStore>,
    topic_names: crate::pipeline::Topics,
    decode_config: DecodeConfig,
    graph_config: GraphConfig,
    source_config: SourceConfig,
    report_specs: Arc<[adstream_operators::report::ReportSpec]>,
    billing_stats: Arc<adstream_operators::ledger::operator::BillingStats>,
    spec: adstream_operators::ranker::features::FeatureSpec,
    view: ViewCatchUp,
}

/// Whether the API's view (campaigns, spend) has applied everything this process's sources read
/// until they caught up: readiness waits for it, so that a restarted process never answers
/// 200 on `/readyz` while its campaigns or their spend are still on their way to the view.
struct ViewCatchUp {
    /// Local workers whose source has not caught up yet.
    pending: AtomicUsize,
    /// The latest caught-up time of the local sources.
    time: AtomicU64,
    /// Tracked by the live view's readiness.
    ready: Arc<AtomicBool>,
}

impl ViewCatchUp {
    fn new(workers: usize, live: &LiveState) -> Self {
        let ready = Arc::new(AtomicBool::new(false));
        live.track_source(ready.clone());
        ViewCatchUp {
            pending: AtomicUsize::new(workers),
            time: AtomicU64::new(0),
            ready,
        }
    }

    /// A local source caught up, having emitted records up to `time`.
    fn source_caught_up(&self, time: u64) {
        self.time.fetch_max(time, Ordering::AcqRel);
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// On the worker that feeds the view: ready once every local source caught up and the
    /// view's probe passed all they had emitted.
    fn check(&self, view: &ProbeHandle<u64>) {
        if self.ready.load(Ordering::Relaxed) || self.pending.load(Ordering::Acquire) > 0 {
            return;
        }
        if !view.less_equal(&self.time.load(Ordering::Acquire)) {
            self.ready.store(true, Ordering::Release);
        }
    }
}

/// A worker's end of its serving queue: the requests, and where the serving operator leaves
/// the activator the API wakes it with.
type QueueEnd = (
    std::sync::mpsc::Receiver<adstream_operators::serve::operator::ServeRequest>,
    Arc<Mutex<Option<timely::scheduling::SyncActivator>>>,
);

/// One timely worker: builds the graph ([`graph::build`]) over this worker's share of the
/// input partitions, attaches its outputs to the sinks, live view and metrics, and steps it
/// until the sources have stopped and everything is drained.
fn run_worker(worker: &mut timely::worker::Worker, io: &WorkerIo) -> Result<(), String> {
    let WorkerIo {
        workers,
        consumer,
        topics,
        offsets,
        topology,
        receivers,
        trainer_link,
        sinks: worker_sinks,
        live: worker_live,
        metrics: worker_metrics,
        stop: worker_stop,
        models: worker_models,
        health: worker_health,
        store,
        topic_names,
        decode_config,
        graph_config,
        source_config,
        report_specs,
        billing_stats,
        spec,
        view,
    } = io;
    let workers = *workers;
    let (index, peers) = (worker.index(), worker.peers());
    let leader = index % workers == 0;
    let on_lost = offsets_lost(
        worker_metrics.clone(),
        worker_sinks.clone(),
        topic_names.clone(),
    );
    let links = ReaderLinks {
        worker: (index, peers),
        topology: topology.clone(),
        on_lost,
    };
    let reader =
        KafkaReader::new(consumer.clone(), topics, offsets, links).map_err(|e| format!("{e:#}"))?;
    let (requests, requests_activator) = receivers
        .lock()
        .ok()
        .and_then(|mut r| r.get_mut(index % workers).and_then(Option::take))
        .ok_or_else(|| "serving queue already taken".to_string())?;
    let control = SourceControl {
        stop: worker_stop.clone(),
        hold: worker_sinks.congested(),
        ..SourceControl::default()
    };
    worker_live.track_source(control.caught_up.clone());
    let probe = ProbeHandle::new();
    // Passed once the live view has applied the ledger's records up to a time.
    let view_probe = ProbeHandle::new();
    let mut source_caught_up = false;
    let status_pending: Rc<RefCell<BTreeMap<String, BudgetStatus>>> = Rc::default();
    let stats: Rc<RefCell<Option<(LabelStatsHandle, ReportStatsHandle)>>> = Rc::default();
    let (sinks, live, metrics) = (
        worker_sinks.clone(),
        worker_live.clone(),
        worker_metrics.clone(),
    );
    let (decode_config, graph_config, source_config) = (
        decode_config.clone(),
        graph_config.clone(),
        source_config.clone(),
    );
    let (store, topic_names, report_specs) =
        (store.clone(), topic_names.clone(), report_specs.clone());
    let trainer = if index == 0 {
        trainer_link.lock().ok().and_then(|mut l| l.take())
    } else {
        None
    };
    let context = GraphContext {
        store: store.clone(),
        models: worker_models.clone(),
        clock: wall_clock(),
        progress: probe.clone(),
    };
    worker.dataflow::<u64, _, _>(|scope| {
        // Input: this worker's share of the Kafka partitions, decoded.
        let decode_metrics = metrics.clone();
        let ingested = kafka_source(
            scope,
            "KafkaSource",
            reader,
            source_config,
            wall_clock(),
            store.clone(),
            probe.clone(),
            control.clone(),
            move |msg| {
                let stream = msg.stream;
                if let (Some(ts), StreamId::Impressions | StreamId::Clicks | StreamId::Conversions) = (msg.timestamp_ms, stream) {
                    let delay = (EventTime::now().millis() - ts).max(0) as f64 / 1000.0;
                    decode_metrics.ingest_delay_seconds.observe(delay);
                }
                let (time, record) = decode(msg, &decode_config);
                let outcome = if matches!(record, Ingested::Dead(_)) { "dead" } else { "accepted" };
                decode_metrics.events.with_label_values(&[stream.as_str(), outcome]).inc();
                (time, record)
            },
        );
        let inputs = GraphInputs {
            ingested,
            requests,
            requests_activator,
            serving: control.serving.clone(),
            trainer,
        };
        let out = graph::build(inputs, graph_config, context);
        *stats.borrow_mut() = Some((out.label_stats.clone(), out.report_stats.clone()));

        // Outputs. Report rows go to their report's compacted topic, upserted by group and
        // window; like dead letters, through a fence that holds checkpoints until they are
        // delivered.
        let (report_sinks, report_metrics) = (sinks.clone(), metrics.clone());
        if let Some(rows) = out.reports {
            rows.deliver("ReportSink", move |row: ReportRow, receipt| {
                if let Some(spec) = report_specs.get(row.report) {
                    report_sinks.report(&spec.topic, &row, Some(receipt));
                    let state = if row.value["final"] == true { "final" } else { "open" };
                    report_metrics.report_rows.with_label_values(&[spec.name.as_str(), state]).inc();
                }
            })
            .probe_with(&probe);
        }
        let dead_sinks = sinks.clone();
        let install_metrics = metrics.clone();
        out.dead_letters
            .deliver("DeadLetterSink", move |d, receipt| {
                metrics.dead_letters.with_label_values(&[d.reason.as_str()]).inc();
                let topic = StreamId::from_u8(d.origin.stream).map_or("unknown", |s| topic_names.input(s));
                tracing::warn!(reason = d.reason.as_str(), topic, partition = d.origin.partition, offset = d.origin.offset, detail = %d.detail, "dead letter");
                dead_sinks.dead_letter(&d, Some(receipt));
            })
            .probe_with(&probe);
        let served_sinks = sinks.clone();
        out.served.inspect(move |s: &Served| served_sinks.served(s));
        // Budget status, coalesced per campaign (published by the worker loop below at most
        // every 200 ms).
        let status_queue = status_pending.clone();
        out.budget_status.inspect(move |s: &BudgetStatus| {
            status_queue.borrow_mut().insert(s.campaign_id.clone(), s.clone());
        });
        // Every process's live view (the API) sees every campaign, from its first worker.
        let ledger_live = live.clone();
        out.ledger_replica
            .inspect(move |rec: &LedgerState| {
                if leader {
                    ledger_live.apply(rec);
                }
            })
            .probe_with(&view_probe);
        out.pacing_replica.inspect(move |u: &PacingUpdate| {
            if leader {
                live.apply_pacing(u);
            }
        });
        // The versions the trainer publishes reach every process's serving replicas.
        let (slot, spec) = (worker_models.clone(), spec.clone());
        out.models.inspect(move |p: &PublishedModel| {
            if leader {
                install(&slot, p, &spec, &install_metrics);
            }
        });
    });
    let label_metrics = worker_metrics.clone();
    let worker_billing_stats = billing_stats.clone();
    let heartbeat = worker_health.register(index % workers);
    let mut last_status = Instant::now();
    loop {
        let done = control.finished.get() && probe.done();
        if done || last_status.elapsed() >= Duration::from_millis(200) {
            for status in std::mem::take(&mut *status_pending.borrow_mut()).values() {
                worker_sinks.budget_status(status);
            }
            for (billing, billed, over) in worker_billing_stats.take() {
                for (part, micros) in [("billed", billed), ("overdelivery", over)] {
                    if micros > 0 {
                        label_metrics
                            .charged_micros
                            .with_label_values(&[billing.as_str(), part])
                            .inc_by(micros);
                    }
                }
            }
            if let Some((label_handle, report_handle)) = stats.borrow().as_ref() {
                let counts = report_handle
                    .lock()
                    .map(|mut s| std::mem::take(&mut *s))
                    .unwrap_or_default();
                for (outcome, n) in counts.counters() {
                    if n > 0 {
                        label_metrics
                            .report_events
                            .with_label_values(&[outcome])
                            .inc_by(n);
                    }
                }
                let counts = label_handle
                    .lock()
                    .map(|mut s| std::mem::take(&mut *s))
                    .unwrap_or_default();
                for (kind, n) in counts.counters() {
                    if n > 0 {
                        label_metrics.labels.with_label_values(&[kind]).inc_by(n);
                    }
                }
            }
            last_status = Instant::now();
        }
        if done {
            break;
        }
        if !source_caught_up && control.caught_up.load(Ordering::Acquire) {
            source_caught_up = true;
            view.source_caught_up(control.caught_up_time.load(Ordering::Acquire));
        }
        if leader {
            view.check(&view_probe);
        }
        worker.step_or_park(Some(Duration::from_millis(20)));
        heartbeat.beat();
    }
    Ok(())
}

/// What a reader calls when it finds input messages deleted before they were read: counted per
/// partition, logged as an error, and published as one `offsets_lost` dead-letter summary.
fn offsets_lost(metrics: Metrics, sinks: Sinks, topics: crate::pipeline::Topics) -> OnLost {
    Arc::new(move |stream, partition, from, to| {
        let topic = topics.input(stream);
        let lost = (to - from).max(0);
        metrics
            .offsets_lost
            .with_label_values(&[topic, &partition.to_string()])
            .inc_by(lost as u64);
        tracing::error!(
            topic,
            partition,
            from,
            to,
            lost,
            "input messages deleted by retention before they were read: not charged"
        );
        let summary = adstream_operators::records::DeadLetter {
            reason: adstream_operators::records::Reason::OffsetsLost,
            detail: format!(
                "offsets {from}..{to} of {topic}[{partition}] ({lost} messages) were deleted by retention before adstream read them"
            ),
            origin: adstream_operators::records::Origin {
                stream: stream as u8,
                partition,
                offset: from,
            },
            key: None,
            payload: Vec::new(),
            truncated: false,
        };
        sinks.dead_letter(&summary, None);
    })
}

/// Loads a published version and makes it this process's live model.
fn install(
    slot: &ModelSlot,
    published: &PublishedModel,
    spec: &adstream_operators::ranker::features::FeatureSpec,
    metrics: &Metrics,
) {
    match ScoringModel::load(published, spec) {
        Ok(model) => {
            let version = model.meta.version;
            if slot.install(model) {
                let now = EventTime::now().millis();
                metrics.model_live_version.set(version as i64);
                let data = &published.meta.data;
                for (bound, at) in [
                    ("oldest", data.oldest_new_click_ms),
                    ("newest", data.newest_click_ms),
                ] {
                    if let Some(at) = at {
                        metrics
                            .model_click_to_live_seconds
                            .with_label_values(&[bound])
                            .observe((now - at).max(0) as f64 / 1000.0);
                    }
                }
                tracing::info!(version, "model installed in serving");
            }
        }
        Err(e) => {
            tracing::error!(version = published.meta.version, error = %e, "cannot load a published model; serving keeps the previous one")
        }
    }
}

/// Exit status of a process that lost its cluster (see [`crate::fail_stop`]).
pub use crate::fail_stop::EXIT_CLUSTER_BROKEN;
/// Exit status of a process whose pipeline failed (see [`crate::fail_stop`]).
pub use crate::fail_stop::EXIT_PIPELINE_FAILED;

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
