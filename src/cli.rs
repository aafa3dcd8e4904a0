//! The command line: `adstream demo | run | simulate | validate | topics create | report tail |
//! bench`. `demo`, `simulate` and `bench` need the `sim` feature (on by default): without it they
//! are refused with an error saying so.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::pipeline::Pipeline;
use crate::runtime::{run, RunOptions};

/// How long `topics create` waits for the brokers' first answer.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// adstream: spend, pacing, serving, training and reporting for ads in one stream processor.
#[derive(Debug, Parser)]
#[command(name = "adstream", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole system on this machine with nothing installed: an embedded Kafka cluster, the
    /// default pipeline and the simulator, with a live summary; checks spend against the
    /// simulator's ground truth at the end.
    Demo(DemoArgs),
    /// Drive a running pipeline with realistic traffic from a ground-truth user/ad model.
    Simulate(SimulateArgs),
    /// Run a pipeline against Kafka, resuming from its last checkpoint.
    Run(RunArgs),
    /// Check a pipeline file; errors name the file, line and field.
    Validate {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Print performance figures of the ledger's hot path and dataflow.
    Bench {
        /// Events per measurement.
        #[arg(long, default_value_t = 500_000)]
        events: usize,
        /// Measure spend freshness against the pipeline running from this file instead.
        #[arg(long)]
        freshness: Option<PathBuf>,
        /// The running pipeline's API (with --freshness).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        /// Bootstrap servers (with --freshness; overrides the file).
        #[arg(long)]
        brokers: Option<String>,
        /// Events per second of the freshness run.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Duration of the freshness run, seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Events in the end-to-end throughput burst.
        #[arg(long, default_value_t = 200_000)]
        burst: u64,
        /// Instead: seed this many campaigns into the pipeline given by --freshness, for
        /// serving benchmarks, and exit.
        #[arg(long)]
        seed_campaigns: Option<usize>,
        /// Instead: only the billing dataflow, warm (after --events untimed events), on this
        /// many workers, three times (events/s each): the figure to compare builds by, alone
        /// or under `deploy/bench/instructions.sh`.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
        dataflow: Option<u64>,
        /// With --dataflow: with the three default reports.
        #[arg(long)]
        reports: bool,
        /// Instead: evaluate pacing against an ASAP baseline over simulated days.
        #[arg(long)]
        pacing: bool,
        /// Instead: answer ad requests on one worker thread against this many seeded
        /// campaigns (a comma-separated list: one catalog after the other), plain and with
        /// mixed formats and block lists (requests/s, p50/p99/p99.9, fill, memory).
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        serving: Vec<u64>,
        /// With --serving: also answer with a live model of the shipped feature spec.
        #[arg(long)]
        live_model: bool,
        /// With --serving: retrieval's pool for pre-ranking (`serving.prerank_candidates`).
        #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(200..=1_000_000))]
        prerank: u64,
        /// Instead: drive ad requests over HTTP at the pipeline API given by --api for
        /// --seconds from --connections keep-alive connections (requests/s, p50/p99/p99.9,
        /// fill); serving's catalog comes from --seed-campaigns.
        #[arg(long)]
        load: bool,
        /// With --load: connections, each with one request in flight.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        connections: u64,
        /// With --load: mixed formats and block lists instead of plain requests.
        #[arg(long)]
        mixed: bool,
        /// With --pacing: write each campaign's spend and target curves to this PNG.
        #[arg(long)]
        png: Option<PathBuf>,
        /// With --pacing: mean requests per simulated second.
        #[arg(long, default_value = "10", value_parser = parse_positive)]
        pacing_rate: f64,
        /// Instead: train the ranker online over a simulated day and compare its AUC with the
        /// simulator's oracle and the per-campaign prior.
        #[arg(long)]
        ranker: bool,
        /// Instead: measure training examples per second for --seconds.
        #[arg(long)]
        ranker_throughput: bool,
        /// With --ranker: served ads per simulated day.
        #[arg(long, default_value_t = 1_000_000)]
        served: usize,
        /// With --ranker / --ranker-throughput: AdamW's step size (default: the pipeline default).
        #[arg(long, value_parser = parse_positive)]
        learning_rate: Option<f64>,
        /// With --ranker: simulated days, one model learning across them (per-day figures).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=30))]
        days: u16,
        /// With --ranker / --ranker-throughput: examples per training step.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// With --ranker / --ranker-throughput: a feature spec file instead of the shipped one.
        #[arg(long)]
        features: Option<PathBuf>,
        /// With --ranker / --ranker-throughput: the model's heads learn corrections to the
        /// per-campaign prior (the spec's `prior_offset`), whatever the spec says.
        #[arg(long)]
        prior_offset: bool,
        /// With --ranker / --ranker-throughput: `auto`, `cpu` or `cuda`.
        #[arg(long, default_value = "auto", value_parser = parse_device)]
        device: adstream_operators::ranker::trainer::DevicePreference,
    },
    /// Train a model version from logged history (JSON Lines: an `ads.served` record plus
    /// `click` and optional `conversion` per line) into the pipeline's model registry, with the
    /// same learner and publish guards as online training; `run` serves it from its start.
    Train {
        /// The pipeline file (model settings, topics and state directory).
        pipeline: PathBuf,
        /// The history file.
        #[arg(long, required_unless_present_any = ["since", "simulated"], conflicts_with_all = ["since", "simulated"])]
        examples: Option<PathBuf>,
        /// Instead: this many served ads of the simulator's history (its default world, the
        /// day before now), as `demo` trains on before it starts.
        #[arg(long, conflicts_with = "since")]
        simulated: Option<usize>,
        /// Instead: replay the pipeline's own topics (served ads, impressions, clicks,
        /// conversions) from this time on (RFC 3339 or epoch ms) through attribution and the
        /// label join.
        #[arg(long)]
        since: Option<String>,
        /// Bootstrap servers (with --since; overrides the file).
        #[arg(long)]
        brokers: Option<String>,
        /// State directory (overrides the file).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Also start the per-campaign prior of a single-process pipeline that has not counted
        /// anything yet from the examples' counts, so that a model trained with the spec's
        /// `prior_offset` starts against the prior it was trained with instead of the global
        /// rate (the state store is created as a single process's if there is none).
        #[arg(long)]
        seed_prior: bool,
    },
    /// Manage the pipeline's Kafka topics.
    Topics {
        /// What to do with them.
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Read the reporting topics.
    Report {
        /// What to do.
        #[command(subcommand)]
        action: ReportAction,
    },
}

/// `adstream topics ...`.
#[derive(Debug, Subcommand)]
pub enum TopicsAction {
    /// Create the pipeline's topics (compaction for upsert topics); existing ones are kept.
    Create {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Bootstrap servers (overrides the file).
        #[arg(long)]
        brokers: Option<String>,
    },
}

/// `adstream report ...`.
#[derive(Debug, Subcommand)]
pub enum ReportAction {
    /// Follow a reporting topic as a table: read it all (it is compacted), print the latest rows
    /// once caught up, then each new, updated or deleted row as it arrives.
    Tail {
        /// The reporting topic (e.g. report.campaign_minute).
        topic: String,
        /// Bootstrap servers, host:port,... (default: the pipeline's, else 127.0.0.1:9092).
        #[arg(long)]
        brokers: Option<String>,
        /// A pipeline file whose Kafka settings (brokers, SASL/SSL properties) to use.
        #[arg(long)]
        pipeline: Option<PathBuf>,
        /// Latest rows shown once caught up.
        #[arg(long, default_value_t = 20)]
        rows: usize,
        /// Print the table of the latest rows once caught up, then exit.
        #[arg(long)]
        once: bool,
        /// Read the topic from its beginning (always: accepted for clarity).
        #[arg(long)]
        from_start: bool,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 5m, 1h30m)"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a rate between 0 and 1")),
    }
}

fn parse_device(
    text: &str,
) -> Result<adstream_operators::ranker::trainer::DevicePreference, String> {
    use adstream_operators::ranker::trainer::DevicePreference;
    match text {
        "auto" => Ok(DevicePreference::Auto),
        "cpu" => Ok(DevicePreference::Cpu),
        "cuda" => Ok(DevicePreference::Cuda),
        other => Err(format!("{other:?} is not one of auto, cpu, cuda")),
    }
}

fn parse_positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number above 0")),
    }
}

fn parse_hour(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..24.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not an hour of the day (0 to 24)")),
    }
}

/// The simulation's settings, shared by `demo` and `simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Mean ad requests per second over a simulated day.
    #[arg(long, default_value = "200", value_parser = parse_positive)]
    pub rate: f64,
    /// Stop after this long (e.g. 30s, 10m); default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Seed of the world and of every draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Wall-clock length of one simulated day (traffic curve and conversion delays).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub day: std::time::Duration,
    /// Simulated hour of day at the start.
    #[arg(long, default_value = "8", value_parser = parse_hour)]
    pub start_hour: f64,
    /// Traffic over the day: `diurnal`, `flat`, or 24 comma-separated hourly weights.
    #[arg(long, default_value = "diurnal")]
    pub curve: String,
    /// Users in the world.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub users: u32,
    /// Advertisers in the world (2 to 4 campaigns each).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub advertisers: u32,
    /// Median daily budget per campaign, in currency units. Default: 20 for `simulate`; for
    /// `demo`, 1.7 x --rate, so that over a real (paced) day the campaigns' demand is about
    /// 1.5 times their budgets: some are paced, some demand-limited.
    #[arg(long, value_parser = parse_positive)]
    pub median_budget: Option<f64>,
    /// Share of events sent twice.
    #[arg(long, default_value = "0.01", value_parser = parse_rate)]
    pub duplicates: f64,
    /// Share of events held back past the lateness bound.
    #[arg(long, default_value = "0.01", value_parser = parse_rate)]
    pub late: f64,
    /// How long late events are held back.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub late_by: std::time::Duration,
    /// Extra malformed messages per event.
    #[arg(long, default_value = "0.002", value_parser = parse_rate)]
    pub malformed: f64,
    /// Extra messages with forged billing tokens per event.
    #[arg(long, default_value = "0.002", value_parser = parse_rate)]
    pub forged: f64,
    /// Ad requests in flight at most.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Write the ground truth (served.jsonl, events.jsonl, expected.json) to this directory.
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

#[cfg(feature = "sim")]
impl SimArgs {
    /// The simulator's configuration.
    pub fn config(&self) -> anyhow::Result<adstream_sim::SimConfig> {
        use adstream_sim::{faults::Faults, traffic::DailyCurve, world::WorldConfig, SimConfig};
        let curve = DailyCurve::parse(&self.curve).map_err(|e| anyhow::anyhow!("--curve: {e}"))?;
        Ok(SimConfig {
            seed: self.seed,
            rate: self.rate,
            duration: self.duration,
            day: self.day.max(std::time::Duration::from_secs(1)),
            start_hour: self.start_hour,
            curve,
            world: WorldConfig {
                users: self.users as usize,
                advertisers: self.advertisers as usize,
                median_budget_micros: (self.median_budget.unwrap_or(20.0) * 1e6).round() as u64,
                ..WorldConfig::default()
            },
            faults: Faults {
                duplicate: self.duplicates,
                late: self.late,
                late_by_ms: self.late_by.as_millis() as i64,
                malformed: self.malformed,
                forged: self.forged,
            },
            concurrency: self.concurrency as usize,
            truth_dir: self.truth.clone(),
            ..SimConfig::default()
        })
    }
}

/// `adstream demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// HTTP API address; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin API address (dashboard, metrics, models); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin_listen: SocketAddr,
    /// Worker threads (default: the pipeline's).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// A pipeline file instead of the built-in default (its brokers are replaced by the
    /// embedded cluster).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Time between two summaries.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub every: std::time::Duration,
    /// Served ads of simulated history the first model is trained on before the demo starts
    /// (`adstream train`'s path); 0 starts from the per-campaign prior.
    #[arg(long, default_value_t = 150_000)]
    pub history: usize,
    /// The simulation.
    #[command(flatten)]
    pub sim: SimArgs,
}

/// `adstream simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Bootstrap servers of the pipeline's Kafka (default: the pipeline file's).
    #[arg(long)]
    pub brokers: Option<String>,
    /// The pipeline's API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// The pipeline file (topic names, Kafka settings); default: the built-in pipeline.
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Do not produce the world's campaigns (they are there from an earlier run).
    #[arg(long)]
    pub no_seed: bool,
    /// After the run, wait until the API's spend equals the ground truth (exit 1 if not).
    #[arg(long)]
    pub check: bool,
    /// The simulation.
    #[command(flatten)]
    pub sim: SimArgs,
}

/// `adstream run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Bootstrap servers, host:port,... (overrides the file).
    #[arg(long)]
    pub brokers: Option<String>,
    /// HTTP API address (overrides the file); port 0 picks a free one.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin API address: dashboard, metrics and models move there from the API (overrides
    /// `api.admin_listen`); port 0 picks a free one.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// State directory (overrides the file).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Worker threads per process (overrides the file).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// This process's index in the cluster.
    #[arg(long, default_value_t = 0)]
    pub process: usize,
    /// Number of processes in the cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub processes: u16,
    /// File with one host:port per process, for the cluster's connections.
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
}

/// `train --simulated`: trains on simulated history when the simulator is built in.
#[cfg(feature = "sim")]
fn train_simulated(
    p: &Pipeline,
    served: usize,
    state_dir: &std::path::Path,
    seed_prior: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(served > 0, "--simulated must be at least 1");
    let line = crate::demo::train_on_history(
        p,
        &adstream_sim::SimConfig::default(),
        served,
        state_dir,
        seed_prior,
    )?;
    println!("model {line}");
    Ok(())
}

/// `train --simulated` without the simulator.
#[cfg(not(feature = "sim"))]
fn train_simulated(_: &Pipeline, _: usize, _: &std::path::Path, _: bool) -> anyhow::Result<()> {
    anyhow::bail!("--simulated needs a build with the simulator (the default `sim` feature)")
}

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        #[cfg(feature = "sim")]
        command @ (Command::Bench { .. } | Command::Demo(_) | Command::Simulate(_)) => {
            dispatch_sim(command)
        }
        #[cfg(not(feature = "sim"))]
        Command::Bench { .. } | Command::Demo(_) | Command::Simulate(_) => anyhow::bail!(
            "this adstream was built without the simulator (cargo feature `sim`): `demo`, \
             `simulate` and `bench` are not available; rebuild with default features"
        ),
        Command::Train {
            pipeline,
            examples,
            simulated,
            since,
            brokers,
            state_dir,
            seed_prior,
        } => {
            let p = Pipeline::load(&pipeline)?;
            let state_dir = state_dir.unwrap_or_else(|| p.state_dir.clone());
            if let Some(served) = simulated {
                return train_simulated(&p, served, &state_dir, seed_prior);
            }
            let (report, source) = match (examples, since) {
                (Some(examples), _) => (
                    crate::train::train(&p, &examples, &state_dir, seed_prior)?,
                    examples.display().to_string(),
                ),
                (None, Some(since)) => {
                    let since = adstream_operators::time::EventTime::parse(&since)
                        .map_err(|e| anyhow::anyhow!("--since {since:?}: {e}"))?;
                    let brokers = brokers.unwrap_or_else(|| p.kafka.brokers.clone());
                    let (examples, read) = crate::train::examples_from_topics(
                        &p,
                        &brokers,
                        since,
                        std::time::Duration::from_secs(120),
                    )?;
                    anyhow::ensure!(
                        !examples.is_empty(),
                        "no labelled examples in the topics since {since:?} ({read} events read)"
                    );
                    (
                        crate::train::train_examples(&p, examples, &state_dir, seed_prior)?,
                        format!(
                            "the pipeline's topics ({read} events since {})",
                            since.millis()
                        ),
                    )
                }
                (None, None) => anyhow::bail!("give --examples FILE or --since TIME"),
            };
            println!(
                "trained on {} examples from {source}; click metrics {}",
                report.examples, report.click
            );
            println!("{}", report.prior);
            match report.version {
                Some((v, verdict)) => println!(
                    "version v{v}: {verdict} (registry {})",
                    state_dir.join("models").display()
                ),
                None => println!(
                    "no version: fewer click labels than the guards' min_examples ({})",
                    p.model.trainer.guards.min_examples
                ),
            }
            Ok(())
        }
        Command::Validate { pipeline } => match Pipeline::load(&pipeline) {
            Ok(_) => {
                println!("{}: ok", pipeline.display());
                Ok(())
            }
            Err(errors) => {
                // Every error, one per line, then the count (the exit status is non-zero).
                for e in errors.errors() {
                    eprintln!("{e}");
                }
                let n = errors.errors().len();
                anyhow::bail!(
                    "{}: {n} error{}",
                    pipeline.display(),
                    if n == 1 { "" } else { "s" }
                )
            }
        },
        Command::Topics {
            action: TopicsAction::Create { pipeline, brokers },
        } => {
            let p = Pipeline::load(&pipeline)?;
            let brokers = brokers.unwrap_or_else(|| p.kafka.brokers.clone());
            let config = crate::kafka::client_config(&p, &brokers)?;
            crate::kafka::check_connection(&config, &brokers, CONNECT_TIMEOUT)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            for (topic, created) in rt.block_on(crate::kafka::admin::create_topics(&p, &config))? {
                println!(
                    "{topic}: {}",
                    if created == crate::kafka::admin::Created::New {
                        "created"
                    } else {
                        "exists"
                    }
                );
            }
            Ok(())
        }
        Command::Report {
            action:
                ReportAction::Tail {
                    topic,
                    brokers,
                    pipeline,
                    rows,
                    once,
                    from_start: _,
                },
        } => {
            let pipeline = pipeline.map(|p| Pipeline::load(&p)).transpose()?;
            let brokers = brokers
                .or_else(|| pipeline.as_ref().map(|p| p.kafka.brokers.clone()))
                .unwrap_or_else(|| "127.0.0.1:9092".into());
            let mut properties = Vec::new();
            for (k, v) in pipeline.iter().flat_map(|p| &p.kafka.properties) {
                let value = v
                    .resolve()
                    .with_context(|| format!("kafka.properties.{k}"))?;
                properties.push((k.clone(), value));
            }
            crate::report_tail::run(&crate::report_tail::TailOptions {
                topic,
                brokers,
                rows,
                once,
                properties,
            })
        }
        Command::Run(args) => {
            let p = Pipeline::load(&args.pipeline)?;
            if args.process >= args.processes as usize {
                anyhow::bail!(
                    "--process {} must be below --processes {}",
                    args.process,
                    args.processes
                );
            }
            run(
                p,
                RunOptions {
                    brokers: args.brokers,
                    listen: args.listen,
                    admin_listen: args.admin_listen,
                    state_dir: args.state_dir,
                    workers: args.workers.map(usize::from),
                    process: args.process,
                    processes: args.processes as usize,
                    hostfile: args.hostfile,
                    announce: true,
                },
            )
        }
    }
}

/// `demo`, `simulate` and `bench`: the simulator and benches of `adstream-sim`, given what they
/// need of the pipeline file and of this binary (its Kafka settings, its RocksDB store).
#[cfg(feature = "sim")]
fn dispatch_sim(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Bench {
            events,
            freshness,
            api,
            brokers,
            rate,
            seconds,
            burst,
            seed_campaigns,
            dataflow,
            reports,
            pacing,
            serving,
            live_model,
            prerank,
            load,
            connections,
            mixed,
            png,
            pacing_rate,
            ranker,
            ranker_throughput,
            served,
            days,
            learning_rate,
            batch,
            features,
            prior_offset,
            device,
        } => match freshness {
            None if ranker || ranker_throughput => {
                if batch == 0 {
                    anyhow::bail!("--batch must be at least 1");
                }
                let mut spec = match &features {
                    None => adstream_operators::ranker::features::FeatureSpec::default_spec(),
                    Some(path) => adstream_operators::ranker::features::FeatureSpec::parse(
                        &std::fs::read_to_string(path)
                            .map_err(|e| anyhow::anyhow!("--features {}: {e}", path.display()))?,
                    )
                    .map_err(|e| anyhow::anyhow!("--features {}: {e}", path.display()))?,
                };
                spec.prior_offset |= prior_offset;
                let bench = adstream_sim::bench::ranker::RankerBench {
                    served,
                    days: usize::from(days),
                    learning_rate: learning_rate.unwrap_or(
                        adstream_operators::ranker::optim::AdamWConfig::default().learning_rate,
                    ),
                    batch_size: batch,
                    device,
                    spec,
                    ..Default::default()
                };
                if ranker_throughput {
                    let (device, rate, n) =
                        adstream_sim::bench::ranker::throughput(&bench, seconds as f64)?;
                    println!(
                        "training throughput: {rate:.0} examples/s on {device} (batch {batch}, {n} examples, model {:?})",
                        bench.model
                    );
                } else {
                    let started = std::time::Instant::now();
                    let report = adstream_sim::bench::ranker::run(&bench, |share| {
                        eprintln!("  {:.0}% of the day", share * 100.0);
                    })?;
                    adstream_sim::bench::ranker::print(&bench, &report, started.elapsed());
                }
                Ok(())
            }
            None if load => {
                adstream_sim::bench::load::run_and_print(&adstream_sim::bench::load::Load {
                    api,
                    connections: connections as usize,
                    seconds: seconds as f64,
                    mixed,
                })
                .map(|_| ())
            }
            None if !serving.is_empty() => {
                let catalogs: Vec<usize> = serving.iter().map(|n| *n as usize).collect();
                adstream_sim::bench::serving::run(
                    &catalogs,
                    (events / 10).clamp(1_000, 100_000),
                    live_model,
                    prerank as usize,
                )
                .map(|_| ())
            }
            None if dataflow.is_some() => {
                let workers = dataflow.unwrap_or(1) as usize;
                let with = if reports {
                    "3 default reports"
                } else {
                    "no reports"
                };
                for run in 1..=3 {
                    let rate = adstream_sim::bench::dataflow(
                        events,
                        workers,
                        reports,
                        adstream_sim::bench::Start::Warm,
                        &open_rocks_store,
                    )?;
                    println!(
                        "billing dataflow, {workers} worker(s), {with}, warm, run {run}: {rate:>9.0} events/s"
                    );
                }
                Ok(())
            }
            None if pacing => adstream_sim::bench::pacing::run(
                &adstream_sim::bench::pacing::PacingBench {
                    rate: pacing_rate,
                    ..Default::default()
                },
                png.as_deref(),
            ),
            None => {
                adstream_sim::bench::run(events, &open_rocks_store);
                Ok(())
            }
            Some(path) => {
                let p = Pipeline::load(&path)?;
                let brokers = brokers.unwrap_or_else(|| p.kafka.brokers.clone());
                let target = crate::demo::sim_target(&p, &brokers)?;
                match seed_campaigns {
                    Some(n) => adstream_sim::bench::seed_campaigns(&target, n),
                    None => {
                        let report = p.reports.first().cloned();
                        adstream_sim::bench::freshness::run(
                            &target,
                            &p.secret()?,
                            report.as_ref(),
                            &api,
                            rate,
                            seconds,
                            burst,
                        )
                    }
                }
            }
        },
        Command::Demo(mut args) => crate::demo::run(crate::demo::DemoOptions {
            pipeline: args.pipeline,
            listen: args.listen,
            admin_listen: args.admin_listen,
            workers: args.workers.map(usize::from),
            sim: {
                args.sim.median_budget =
                    Some(args.sim.median_budget.unwrap_or(1.7 * args.sim.rate));
                args.sim.config()?
            },
            every: args.every.max(std::time::Duration::from_millis(100)),
            history: args.history,
        }),
        Command::Simulate(args) => {
            let pipeline = match &args.pipeline {
                Some(path) => Pipeline::load(path)?,
                None => crate::demo::default_pipeline()?,
            };
            let mut config = args.sim.config()?;
            config.seed_campaigns = !args.no_seed;
            let brokers = args
                .brokers
                .unwrap_or_else(|| pipeline.kafka.brokers.clone());
            let target = crate::demo::sim_target(&pipeline, &brokers)?;
            adstream_sim::run_standalone(&target, &args.api, config, args.check)
        }
        other => anyhow::bail!("not a simulator command: {other:?}"),
    }
}

/// A RocksDB store of one process in `dir`, for the checkpoint bench.
#[cfg(feature = "sim")]
fn open_rocks_store(
    dir: &std::path::Path,
    fsync: bool,
) -> anyhow::Result<std::sync::Arc<dyn adstream_operators::checkpoint::StateStore>> {
    Ok(std::sync::Arc::new(crate::state::RocksStore::open(
        dir, 0, 1, fsync, None,
    )?))
}
