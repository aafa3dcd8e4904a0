//! The command line: `adstream run | validate | topics create`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::pipeline::Pipeline;
use crate::runtime::{run, RunOptions};

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
    },
    /// Manage the pipeline's Kafka topics.
    Topics {
        /// What to do with them.
        #[command(subcommand)]
        action: TopicsAction,
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

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench {
            events,
            freshness,
            api,
            brokers,
            rate,
            seconds,
            burst,
            seed_campaigns,
        } => match freshness {
            None => {
                crate::bench::run(events);
                Ok(())
            }
            Some(path) => {
                let p = Pipeline::load(&path)?;
                let brokers = brokers.unwrap_or_else(|| p.kafka.brokers.get_ref().clone());
                match seed_campaigns {
                    Some(n) => crate::bench::seed_campaigns(&p, &brokers, n),
                    None => crate::bench::freshness::run(&p, &brokers, &api, rate, seconds, burst),
                }
            }
        },
        Command::Validate { pipeline } => {
            Pipeline::load(&pipeline)?;
            println!("{}: ok", pipeline.display());
            Ok(())
        }
        Command::Topics {
            action: TopicsAction::Create { pipeline, brokers },
        } => {
            let p = Pipeline::load(&pipeline)?;
            let brokers = brokers.unwrap_or_else(|| p.kafka.brokers.get_ref().clone());
            let config = crate::kafka::client_config(&p, &brokers)?;
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
                    state_dir: args.state_dir,
                    workers: args.workers.map(usize::from),
                    process: args.process,
                    processes: args.processes as usize,
                    hostfile: args.hostfile,
                },
            )
        }
    }
}
