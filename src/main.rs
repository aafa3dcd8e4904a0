//! The `adstream` binary.

use clap::Parser;

/// Every record on the graph's edges is allocated and freed per event: mimalloc's thread-local
/// free lists beat glibc's malloc there (see `adstream bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    adstream_operators::ranker::fix_compute_threads();
    let cli = adstream::cli::Cli::parse();
    // The demo's terminal shows the figures (dead letters included): log only what goes wrong.
    let default_filter = match cli.command {
        adstream::cli::Command::Demo(_) => "warn,adstream::runtime=error,rdkafka=error",
        _ => "info,rdkafka=warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    // `ADSTREAM_LOG_FORMAT=json`: one JSON object per event (for log collectors); else text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("ADSTREAM_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().flatten_event(true).init(),
        Ok("text") | Err(_) => builder.init(),
        Ok(other) => {
            builder.init();
            tracing::warn!(
                value = other,
                "ADSTREAM_LOG_FORMAT must be `json` or `text`; logging as text"
            );
        }
    }
    adstream::cli::dispatch(cli)
}
