//! The `adstream` binary.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = adstream::cli::Cli::parse();
    // The demo's terminal shows the figures (dead letters included): log only what goes wrong.
    let default_filter = match cli.command {
        adstream::cli::Command::Demo(_) => "warn,adstream::runtime=error,rdkafka=error",
        _ => "info,rdkafka=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    adstream::cli::dispatch(cli)
}
