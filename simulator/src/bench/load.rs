//! `adstream bench --load URL`: drives ad requests over HTTP at a running pipeline's
//! `POST /v1/openrtb` from a fixed number of keep-alive connections (closed loop: each sends
//! its next request when the previous one is answered), for a number of seconds, and reports
//! requests/s, p50/p99/p99.9 latency, fill (200 with a bid, against 204 no-bid) and errors.
//! The requests are [`super::serving`]'s `plain` or `mixed` kind; with `--seed-campaigns` the
//! pipeline serves [`super::serving::campaign`]'s catalog (`deploy/bench/serving-http.sh` ties
//! the two together on a local tansu broker).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::serving::{mixed_request, plain_request};

/// What to drive.
#[derive(Debug, Clone)]
pub struct Load {
    /// The API's base URL (`http://127.0.0.1:8080`).
    pub api: String,
    /// Keep-alive connections, each with one request in flight.
    pub connections: usize,
    /// How long to measure (after a warm-up of a tenth of it, at least 1 s).
    pub seconds: f64,
    /// Mixed formats and block lists instead of plain requests.
    pub mixed: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct LoadFigures {
    /// Requests answered per second.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Share of answered requests with a bid (200).
    pub fill: f64,
    /// Answers other than 200 and 204 (503 when a queue is full, ...), and failed requests.
    pub errors: u64,
}

/// One connection's results.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    filled: u64,
    errors: u64,
}

async fn connection(
    client: reqwest::Client,
    url: Arc<str>,
    mixed: bool,
    seed: u64,
    warm_until: Instant,
    until: Instant,
) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    // Request ids unique across connections (reservations are keyed by them).
    let mut n = seed as usize * 1_000_000_000;
    loop {
        n += 1;
        let body = if mixed {
            mixed_request(&mut rng, n)
        } else {
            plain_request(&mut rng, n)
        };
        let sent = Instant::now();
        if sent >= until {
            return tally;
        }
        let result = client
            .post(&*url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let status = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the body: the answer is only whole once it is.
                match response.bytes().await {
                    Ok(_) => Some(status),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        if sent < warm_until {
            continue;
        }
        match status {
            Some(200) => {
                tally.filled += 1;
                tally.latencies_us.push(sent.elapsed().as_micros() as u64);
            }
            Some(204) => tally.latencies_us.push(sent.elapsed().as_micros() as u64),
            _ => tally.errors += 1,
        }
    }
}

/// Runs `load` and returns its figures.
pub fn run(load: &Load) -> anyhow::Result<LoadFigures> {
    anyhow::ensure!(load.connections >= 1, "--connections must be at least 1");
    anyhow::ensure!(
        load.seconds.is_finite() && load.seconds > 0.0,
        "--seconds must be positive"
    );
    let url: Arc<str> = format!("{}/v1/openrtb", load.api.trim_end_matches('/')).into();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("the load generator's runtime")?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(load.connections)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(10))
            .build()
            .context("the HTTP client")?;
        let warm = Duration::from_secs_f64((load.seconds / 10.0).max(1.0));
        let start = Instant::now();
        let warm_until = start + warm;
        let until = warm_until + Duration::from_secs_f64(load.seconds);
        let tasks: Vec<_> = (0..load.connections)
            .map(|c| {
                tokio::spawn(connection(
                    client.clone(),
                    url.clone(),
                    load.mixed,
                    c as u64 + 1,
                    warm_until,
                    until,
                ))
            })
            .collect();
        let mut all = Tally::default();
        for task in tasks {
            let t = task.await.context("a load connection")?;
            all.latencies_us.extend(t.latencies_us);
            all.filled += t.filled;
            all.errors += t.errors;
        }
        let took = Instant::now()
            .saturating_duration_since(warm_until)
            .as_secs_f64();
        let answered = all.latencies_us.len();
        anyhow::ensure!(
            answered > 0,
            "no request was answered with 200 or 204 ({} errors): is the pipeline at {} up?",
            all.errors,
            load.api
        );
        all.latencies_us.sort_unstable();
        let at = |q: f64| {
            all.latencies_us[((answered as f64 * q) as usize).min(answered - 1)] as f64 / 1e3
        };
        Ok(LoadFigures {
            per_second: answered as f64 / took.max(1e-9),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            fill: all.filled as f64 / answered as f64,
            errors: all.errors,
        })
    })
}

/// Runs `load` and prints its figures on one line.
pub fn run_and_print(load: &Load) -> anyhow::Result<LoadFigures> {
    let f = run(load)?;
    println!(
        "http load ({} traffic, {} connections, {:.0} s): {:.0} req/s   p50 {:.2} ms   p99 {:.2} ms   p99.9 {:.2} ms   fill {:.1} %   errors {}",
        if load.mixed { "mixed" } else { "plain" },
        load.connections,
        load.seconds,
        f.per_second,
        f.p50_ms,
        f.p99_ms,
        f.p999_ms,
        f.fill * 100.0,
        f.errors
    );
    Ok(f)
}
