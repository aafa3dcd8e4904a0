//! `adstream demo`: the whole system on one machine with nothing installed.
//!
//! An embedded Kafka-protocol cluster (librdkafka's mock cluster, speaking the real protocol
//! in-process), the default pipeline on it, and the simulator closing the loop through the HTTP
//! API, with a live summary on the terminal. At the end the ledger's spend is compared with the
//! simulator's ground truth, to the micro.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adstream_operators::ledger::Horizons;
use adstream_operators::records::StreamId;
use adstream_operators::source::restore_offsets;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;

use adstream_sim::check::{compare, dead_letter_categories, Verdict};
use adstream_sim::traffic::SimClock;
use adstream_sim::{SimConfig, SimReport, SimStats, SimTopics, Simulator, Target};

use crate::pipeline::Pipeline;
use crate::runtime::{start, RunOptions, Running};

/// The default pipeline, compiled in so `demo` needs no files.
pub const DEFAULT_PIPELINE: &str = include_str!("../pipelines/ads.toml");

/// What `demo` runs with.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The pipeline (the embedded default unless a file was given).
    pub pipeline: Option<PathBuf>,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where the admin API (dashboard, metrics, models) listens.
    pub admin_listen: SocketAddr,
    /// Worker threads (overrides the pipeline).
    pub workers: Option<usize>,
    /// The simulation.
    pub sim: SimConfig,
    /// Seconds between summaries.
    pub every: Duration,
    /// Served ads of simulated history to train the first model on (0: start from the prior).
    pub history: usize,
}

/// Trains the first model on `served` ads of the simulated world's history (the day before),
/// into the registry under `state_dir`, so the demo serves a trained model from its start; a
/// line saying what came of it.
pub fn train_on_history(
    pipeline: &Pipeline,
    sim: &SimConfig,
    served: usize,
    state_dir: &std::path::Path,
    seed_prior: bool,
) -> anyhow::Result<String> {
    let world = adstream_sim::world::World::generate(sim.seed, &sim.world);
    let history = adstream_sim::bench::ranker::history(
        &world,
        served,
        adstream_operators::time::EventTime::now().millis(),
        sim.seed ^ 0x5eed,
    )?;
    let logged = history.len();
    let examples = history
        .into_iter()
        .flat_map(|(s, clicked, converted)| crate::train::examples_of(s, clicked, converted))
        .collect();
    let report = crate::train::train_examples(pipeline, examples, state_dir, seed_prior)?;
    let auc = report.click["auc"].as_f64().unwrap_or(f64::NAN);
    Ok(match report.version {
        Some((v, verdict)) => {
            format!("v{v} trained on {logged} served ads of simulated history (click AUC {auc:.3}): {verdict}; {}", report.prior)
        }
        None => format!("none: {logged} served ads of history are too few for the guards"),
    })
}

/// The default pipeline, parsed.
pub fn default_pipeline() -> anyhow::Result<Pipeline> {
    let mut pipeline = Pipeline::parse("pipelines/ads.toml (built in)", DEFAULT_PIPELINE)?;
    // The demo is a local try on its own embedded cluster: the shipped secret is fine there.
    pipeline.allow_development_secret = true;
    Ok(pipeline)
}

/// What the simulator and the benches need of `pipeline` on `brokers` (its Kafka settings with
/// secrets resolved, topic names, lateness bound and attribution windows).
pub fn sim_target(pipeline: &Pipeline, brokers: &str) -> anyhow::Result<Target> {
    let kafka = crate::kafka::client_config(pipeline, brokers)?;
    crate::kafka::check_connection(&kafka, brokers, Duration::from_secs(15))?;
    Ok(Target {
        kafka,
        topics: SimTopics {
            campaigns: pipeline.topics.campaigns.clone(),
            impressions: pipeline.topics.impressions.clone(),
            clicks: pipeline.topics.clicks.clone(),
            conversions: pipeline.topics.conversions.clone(),
        },
        lateness_ms: pipeline.source.lateness_ms,
        windows: pipeline.windows,
    })
}

/// Runs the demo until Ctrl-C or `sim.duration`; fails if the ledger disagrees with the truth.
pub fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let pipeline = match &opts.pipeline {
        Some(path) => Pipeline::load(path)?,
        None => default_pipeline()?,
    };
    let cluster = MockCluster::new(1).context("starting the embedded Kafka cluster")?;
    let partitions = pipeline.topics.partitions;
    for (topic, _) in pipeline.all_topics() {
        cluster
            .create_topic(&topic, partitions, 1)
            .with_context(|| format!("creating topic {topic} on the embedded cluster"))?;
    }
    let brokers = cluster.bootstrap_servers();
    let state = tempfile::Builder::new()
        .prefix("adstream-demo-")
        .tempdir()
        .context("creating a state directory")?;
    let target = sim_target(&pipeline, &brokers)?;
    let kafka = target.kafka.clone();
    let mut sim_config = opts.sim.clone();
    sim_config.fit(&target);
    let bootstrap = if pipeline.model.enabled && opts.history > 0 {
        Some(train_on_history(
            &pipeline,
            &sim_config,
            opts.history,
            state.path(),
            // One process on a fresh state directory: its prior starts where the history's
            // ended, as the model was trained against it.
            true,
        )?)
    } else {
        None
    };
    let running = start(
        pipeline.clone(),
        RunOptions {
            brokers: Some(brokers.clone()),
            listen: Some(opts.listen),
            admin_listen: Some(opts.admin_listen),
            state_dir: Some(state.path().to_path_buf()),
            workers: opts.workers,
            processes: 1,
            ..RunOptions::default()
        },
    )?;
    let api = format!("http://{}", running.api);
    let admin = running
        .admin
        .map_or_else(|| api.clone(), |a| format!("http://{a}"));
    println!("adstream demo");
    println!("  embedded Kafka cluster  {brokers}");
    println!("  API                     {api}   (POST /v1/openrtb, GET /v1/campaigns)");
    println!("  dashboard               {admin}/");
    println!(
        "  reports                 adstream report tail report.campaign_minute --brokers {brokers}"
    );
    println!("  metrics                 {admin}/metrics   (and GET /v1/models)");
    println!("  state                   {}", state.path().display());
    if let Some(line) = &bootstrap {
        println!("  first model             {line}");
    }
    println!(
        "  simulator               seed {}, {} req/s mean, a simulated day every {}",
        sim_config.seed,
        sim_config.rate,
        humantime::format_duration(sim_config.day)
    );
    match sim_config.duration {
        Some(d) => println!(
            "  running for {} (Ctrl-C stops early)\n",
            humantime::format_duration(d)
        ),
        None => println!("  Ctrl-C stops it\n"),
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("simulator")
        .build()
        .context("starting the simulator's runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    // The first Ctrl-C stops the traffic; a second one gives up waiting for the final check.
    let interrupted = Arc::new(AtomicBool::new(false));
    let (ctrl_c, twice) = (stop.clone(), interrupted.clone());
    rt.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.store(true, Ordering::Relaxed);
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            twice.store(true, Ordering::Relaxed);
        }
    });
    let sim = {
        let _guard = rt.enter();
        Arc::new(Simulator::new(
            sim_config.clone(),
            &kafka,
            target.topics.clone(),
            &api,
        )?)
    };
    let campaigns: Vec<String> = sim
        .world()
        .campaigns
        .iter()
        .map(|c| c.campaign.campaign_id.clone())
        .collect();
    let summary_done = Arc::new(AtomicBool::new(false));
    let summary = {
        let (stats, done, live, metrics, trainer) = (
            sim.stats.clone(),
            summary_done.clone(),
            running.live.clone(),
            running.metrics.clone(),
            running.trainer.clone(),
        );
        let clock = *sim.clock();
        let ids = campaigns.clone();
        let every = opts.every;
        std::thread::spawn(move || {
            let mut printer = Summary::new(stats, clock, ids, std::io::stdout().is_terminal());
            let mut next = Instant::now() + every;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if Instant::now() >= next {
                    printer.print(&live, &metrics, trainer.as_deref());
                    next += every;
                }
            }
        })
    };
    let report = rt.block_on(sim.clone().run(stop.clone()));
    summary_done.store(true, Ordering::Relaxed);
    let _ = summary.join();
    let outcome = report.and_then(|report| {
        settle_and_check(
            &running,
            &kafka,
            &pipeline,
            &report,
            &sim.stats,
            &campaigns,
            &interrupted,
        )
    });
    running.stop.store(true, Ordering::Relaxed);
    let stopped = running.wait();
    // Every client goes before the cluster they talk to.
    drop(sim);
    drop(rt);
    drop(cluster);
    outcome?;
    stopped
}

/// Waits until the pipeline has checkpointed every delivered message, then compares its ledger
/// with the oracle.
fn settle_and_check(
    running: &Running,
    kafka: &ClientConfig,
    pipeline: &Pipeline,
    report: &SimReport,
    stats: &SimStats,
    campaigns: &[String],
    interrupted: &AtomicBool,
) -> anyhow::Result<()> {
    println!(
        "\ntraffic stopped after {}; waiting for the pipeline to checkpoint everything delivered (Ctrl-C again to skip the check)",
        humantime::format_duration(Duration::from_secs(report.elapsed.as_secs()))
    );
    let ends = end_offsets(kafka, pipeline)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = restore_offsets(&*running.store)?;
        let behind: Vec<String> = ends
            .iter()
            .filter(|(k, end)| **end > 0 && done.get(k).copied().unwrap_or(0) < **end)
            .map(|((s, p), end)| {
                format!(
                    "{}[{p}] at {} of {end}",
                    s.as_str(),
                    done.get(&(*s, *p)).copied().unwrap_or(0)
                )
            })
            .collect();
        if behind.is_empty() {
            break;
        }
        if interrupted.load(Ordering::Relaxed) {
            anyhow::bail!("interrupted before the pipeline caught up: no ground-truth check");
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the pipeline did not catch up within 120 s: {}",
                behind.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ledger =
        adstream_operators::ledger::operator::restore(&*running.store, Horizons::default(), 0, 1)?;
    let mut actual: BTreeMap<(String, chrono::NaiveDate), u64> = BTreeMap::new();
    for s in ledger.all_spend() {
        actual.insert((s.campaign_id.to_string(), s.day), s.spend_micros);
    }
    let ours: std::collections::HashSet<&str> = campaigns.iter().map(String::as_str).collect();
    let verdict = compare(&report.expected, &actual, &ours);
    // Dead letters leave the graph beside the ledger, not behind the checkpoint probe: give the
    // last ones a moment to be counted.
    let counted = Instant::now() + Duration::from_secs(10);
    let mut dead_by_reason = dead_letter_categories(&running.metrics.dead_letters_by_reason());
    while dead_by_reason != report.expected.dead_letters && Instant::now() < counted {
        std::thread::sleep(Duration::from_millis(50));
        dead_by_reason = dead_letter_categories(&running.metrics.dead_letters_by_reason());
    }
    let dead_seen: u64 = dead_by_reason.values().sum();
    let dead_expected: u64 = report.expected.dead_letters.values().sum();
    print_final(report, stats, &verdict, dead_seen, dead_expected);
    // The reports add up to the ledger too: spend per campaign over the rows of the first report
    // grouped by campaign (rows follow checkpoints and the watermark: give them a moment).
    if let Some(spec) = pipeline.reports.iter().find(|s| {
        s.dimensions
            .contains(&adstream_operators::report::Dimension::Campaign)
    }) {
        let mut ledger_spend: BTreeMap<String, u64> = BTreeMap::new();
        for ((campaign, _), micros) in &actual {
            if ours.contains(campaign.as_str()) && *micros > 0 {
                *ledger_spend.entry(campaign.clone()).or_default() += micros;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut reported = report_spend(kafka, &spec.topic)?;
        while reported != ledger_spend && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            reported = report_spend(kafka, &spec.topic)?;
        }
        if reported != ledger_spend {
            println!(
                "  reports: spend over {} rows differs from the ledger",
                spec.topic
            );
            anyhow::bail!("report spend {reported:?} differs from the ledger's {ledger_spend:?}");
        }
        println!(
            "  reports: spend over {} rows equals the ledger for all {} campaigns",
            spec.topic,
            ledger_spend.len()
        );
    }
    if !verdict.mismatches.is_empty() {
        anyhow::bail!(
            "ledger spend differs from the ground truth for {} campaign-days",
            verdict.mismatches.len()
        );
    }
    if dead_by_reason != report.expected.dead_letters {
        anyhow::bail!(
            "dead letters by reason {dead_by_reason:?}, the ground truth expects {:?}",
            report.expected.dead_letters
        );
    }
    Ok(())
}

/// Spend per campaign over the latest row of each key of report topic `topic` (read to its end).
fn report_spend(kafka: &ClientConfig, topic: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for row in crate::kafka::read_latest(kafka, topic, Duration::from_secs(60))?.into_values() {
        let spend = row["spend_micros"].as_u64().unwrap_or(0);
        if spend > 0 {
            let campaign = row["group"]["campaign_id"].as_str().unwrap_or("");
            *out.entry(campaign.to_string()).or_default() += spend;
        }
    }
    Ok(out)
}

/// High watermark of every event partition (the campaigns topic is re-read on every start, so
/// its offsets are not checkpointed).
fn end_offsets(
    kafka: &ClientConfig,
    pipeline: &Pipeline,
) -> anyhow::Result<BTreeMap<(StreamId, i32), i64>> {
    let consumer: BaseConsumer = kafka.create().context("creating a Kafka client")?;
    let mut out = BTreeMap::new();
    for stream in [
        StreamId::Impressions,
        StreamId::Clicks,
        StreamId::Conversions,
    ] {
        let topic = pipeline.topics.input(stream);
        for p in 0..pipeline.topics.partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .with_context(|| format!("reading the end of {topic}[{p}]"))?;
            out.insert((stream, p), high);
        }
    }
    Ok(out)
}

fn dollars(micros: u64) -> String {
    format!("${:.2}", micros as f64 / 1e6)
}

fn print_final(
    report: &SimReport,
    stats: &SimStats,
    verdict: &Verdict,
    dead_seen: u64,
    dead_expected: u64,
) {
    let e = &report.expected;
    let get = |k: &str| e.delivered.get(k).copied().unwrap_or(0);
    println!("\nsimulated traffic");
    println!(
        "  requests {}, filled {}, wins {}",
        stats.requests.load(Ordering::Relaxed),
        stats.filled.load(Ordering::Relaxed),
        stats.wins.load(Ordering::Relaxed)
    );
    println!(
        "  delivered to Kafka: impressions {}, clicks {}, conversions {} (repeats included)",
        get("impression"),
        get("click"),
        get("conversion")
    );
    if let (Some(o), Some(s)) = (e.oracle_auc, e.served_auc) {
        println!("  click AUC: oracle {o:.4}, served pCTR {s:.4}");
    }
    println!("ground truth check");
    if verdict.mismatches.is_empty() {
        println!(
            "  spend: ledger equals the oracle for all {} campaign-days ({} in all)",
            verdict.compared,
            dollars(verdict.total_micros)
        );
    } else {
        println!(
            "  spend: {} of {} campaign-days differ:",
            verdict.mismatches.len(),
            verdict.compared
        );
        for (c, d, want, got) in verdict.mismatches.iter().take(10) {
            println!("    {c} {d}: expected {want} micros, ledger {got}");
        }
    }
    let reasons: Vec<String> = e
        .dead_letters
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    println!(
        "  dead letters: {dead_seen} (expected {dead_expected}: {})",
        if reasons.is_empty() {
            "none".to_string()
        } else {
            reasons.join(", ")
        }
    );
    if let Some(dir) = &report.truth_dir {
        println!("  ground truth written to {}", dir.display());
    }
}

/// The live terminal summary.
/// `v3 (training: 41k examples, click AUC 0.712, 1 refused)`: what serves and how training goes.
fn model_line(
    serving: &str,
    trainer: Option<&adstream_operators::ranker::trainer::TrainerControl>,
) -> String {
    let Some(status) = trainer.and_then(|t| t.status.lock().ok().map(|s| s.clone())) else {
        return serving.to_string();
    };
    let auc = status
        .click
        .auc
        .map_or_else(|| "-".to_string(), |a| format!("{a:.3}"));
    let refused = status
        .versions
        .iter()
        .filter(|v| v.status == adstream_operators::ranker::registry::Status::Refused)
        .count();
    format!(
        "{serving} (training on {}: {} examples, click AUC {auc}, {} versions, {refused} refused)",
        status.device,
        status.examples,
        status.versions.len()
    )
}

struct Summary {
    stats: Arc<SimStats>,
    clock: SimClock,
    campaigns: Vec<String>,
    tty: bool,
    last: Instant,
    last_counts: [u64; 5],
    started: Instant,
}

impl Summary {
    fn new(stats: Arc<SimStats>, clock: SimClock, campaigns: Vec<String>, tty: bool) -> Self {
        Summary {
            stats,
            clock,
            campaigns,
            tty,
            last: Instant::now(),
            last_counts: [0; 5],
            started: Instant::now(),
        }
    }

    fn print(
        &mut self,
        live: &crate::live::LiveState,
        metrics: &crate::metrics::Metrics,
        trainer: Option<&adstream_operators::ranker::trainer::TrainerControl>,
    ) {
        let s = &self.stats;
        let counts = [
            s.requests.load(Ordering::Relaxed),
            s.filled.load(Ordering::Relaxed),
            s.impressions.load(Ordering::Relaxed),
            s.clicks.load(Ordering::Relaxed),
            s.conversions.load(Ordering::Relaxed),
        ];
        let dt = self.last.elapsed().as_secs_f64().max(1e-3);
        let before = self.last_counts;
        let rate = |i: usize| (counts[i] - before[i]) as f64 / dt;
        let answered = (counts[0] - before[0]).max(1) as f64;
        let fill = (counts[1] - before[1]) as f64 / answered * 100.0;
        self.last = Instant::now();
        self.last_counts = counts;
        let mut lat = s.take_latencies();
        lat.sort_unstable();
        let pct = |q: f64| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
            }
        };
        let statuses = live.all();
        let ours: Vec<_> = statuses
            .iter()
            .filter(|st| self.campaigns.iter().any(|c| c == &st.campaign_id))
            .collect();
        let spend: u64 = ours.iter().map(|st| st.spend_micros).sum();
        let budget: u64 = ours.iter().map(|st| st.budget_micros).sum();
        let mode = |m: &str| {
            ours.iter()
                .filter(|st| st.pacing.as_ref().is_some_and(|p| p.mode == m))
                .count()
        };
        let (paced, limited, exhausted) =
            (mode("paced"), mode("demand_limited"), mode("exhausted"));
        let pass: Vec<f64> = ours
            .iter()
            .filter_map(|st| st.pacing.as_ref())
            .filter(|p| p.mode == "paced")
            .map(|p| p.pass_probability)
            .collect();
        let mean_pass = pass.iter().sum::<f64>() / pass.len().max(1) as f64;
        let dead = metrics.dead_letters_by_reason();
        let dead_total: u64 = dead.values().sum();
        let dead_detail: Vec<String> = dead
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let hour = self
            .clock
            .hour(adstream_operators::time::EventTime::now().millis());
        let mut out = String::new();
        if self.tty {
            out.push_str("\x1b[2J\x1b[H");
        }
        out.push_str(&format!(
            "[{:>5.0}s] sim {:02}:{:02} | {:>6.0} req/s  fill {:>3.0}%  p50 {:.1} ms  p99 {:.1} ms | imps {:>5.0}/s  clicks {:>4.1}/s  convs {:>4.1}/s | spend {} of {} | pacing {} paced (mean p {:.2}), {} demand-limited, {} exhausted of {} | model {} | dead letters {}{}\n",
            self.started.elapsed().as_secs_f64(),
            hour as u32,
            ((hour.fract()) * 60.0) as u32,
            rate(0),
            fill,
            pct(0.5),
            pct(0.99),
            rate(2),
            rate(3),
            rate(4),
            dollars(spend),
            dollars(budget),
            paced,
            mean_pass,
            limited,
            exhausted,
            ours.len(),
            model_line(&self.stats.model_version(), trainer),
            dead_total,
            if dead_detail.is_empty() { String::new() } else { format!(" ({})", dead_detail.join(", ")) },
        ));
        if self.tty {
            let mut top: Vec<_> = ours.clone();
            top.sort_by_key(|st| std::cmp::Reverse(st.spend_micros));
            out.push_str(
                "\n  campaign            spend / budget        target now  pacing            p\n",
            );
            for st in top.iter().take(8) {
                let share = st.spend_micros as f64 / st.budget_micros.max(1) as f64;
                let bar = "#".repeat((share.min(1.0) * 20.0).round() as usize);
                let (target, mode, pass) =
                    st.pacing
                        .as_ref()
                        .map_or((String::from("-"), "pending", 1.0), |p| {
                            (
                                dollars(p.target_micros),
                                p.mode.as_str(),
                                p.pass_probability,
                            )
                        });
                out.push_str(&format!(
                    "  {:<18} {:>9} / {:>9}  {:>9}  {:<16} {:>5.3}  {:<20} {:>5.1}%\n",
                    st.campaign_id,
                    dollars(st.spend_micros),
                    dollars(st.budget_micros),
                    target,
                    mode,
                    pass,
                    bar,
                    share * 100.0
                ));
            }
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pipeline_parses() {
        default_pipeline().unwrap();
    }
}
