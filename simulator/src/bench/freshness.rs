//! `adstream bench freshness`: spend freshness and end-to-end throughput against a running
//! pipeline and a real broker.
//!
//! It defines a CPM campaign whose impressions cost 1 micro each, so the campaign's spend is the
//! number of impressions applied. Freshness: impressions are produced at `--rate` for
//! `--seconds` while `GET /v1/campaigns/{id}` is polled; an impression's delay is the time from
//! its produce call to the first response whose spend covers it (impressions are numbered in
//! produce order, so this assumes they apply in that order, which holds per partition).
//! Report freshness: meanwhile the first report's topic is followed; an impression's report delay
//! is the time from its produce call to the first row that counts it (the campaign's spend summed
//! over its rows). Throughput: a burst of `--burst` impressions is produced as fast as possible
//! and timed until the API shows them all.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use adstream_operators::events::Billing;
use adstream_operators::report::ReportSpec;
use adstream_operators::time::EventTime;
use adstream_operators::token::{sign, WinClaims};
use anyhow::Context;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::Target;

/// A minimal keep-alive HTTP/1.1 GET client for polling the API without a client library.
struct Poller {
    stream: TcpStream,
    host: String,
}

impl Poller {
    fn connect(api: &str) -> anyhow::Result<Self> {
        let host = api
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let stream = TcpStream::connect(&host).with_context(|| format!("connecting to {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Poller { stream, host })
    }

    fn get_json(&mut self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        write!(
            self.stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.host
        )?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk)?;
            anyhow::ensure!(n > 0, "API closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let head = &text[..end];
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = serde_json::from_slice(&buf[end + 4..end + 4 + len])
                        .unwrap_or(serde_json::Value::Null);
                    return Ok((status, body));
                }
            }
        }
    }
}

/// Follows a report topic from its end on a thread, summing one campaign's spend over its rows
/// (the latest of each key), and notes when each total was first seen.
struct ReportWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    counted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<Vec<(Instant, u64)>>,
}

impl ReportWatch {
    fn start(config: &rdkafka::ClientConfig, topic: &str, campaign: &str) -> anyhow::Result<Self> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::Message;
        let consumer: BaseConsumer = config
            .clone()
            .set(
                "group.id",
                format!("bench-report-{}", EventTime::now().millis()),
            )
            .set("enable.auto.commit", "false")
            .create()
            .context("creating a report consumer")?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .context("reading the report topic's metadata")?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::End)?;
            }
        }
        consumer.assign(&tpl)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let progress = counted.clone();
        let prefix = format!("{campaign}@");
        let thread = std::thread::spawn(move || {
            let mut rows: std::collections::HashMap<Vec<u8>, u64> = Default::default();
            let mut seen = Vec::new();
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) else {
                    continue;
                };
                let (Some(key), Some(payload)) = (m.key(), m.payload()) else {
                    continue;
                };
                if !key.starts_with(prefix.as_bytes()) {
                    continue;
                }
                let spend = serde_json::from_slice::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v["spend_micros"].as_u64())
                    .unwrap_or(0);
                rows.insert(key.to_vec(), spend);
                let total: u64 = rows.values().sum();
                progress.fetch_max(total, std::sync::atomic::Ordering::Relaxed);
                seen.push((Instant::now(), total));
            }
            seen
        });
        Ok(ReportWatch {
            stop,
            counted,
            thread,
        })
    }

    /// Waits until the rows count `total` impressions (or `timeout`), then stops; for each
    /// impression in order, when a row first counted it.
    fn finish(self, total: u64, timeout: Duration) -> Vec<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline
            && self.counted.load(std::sync::atomic::Ordering::Relaxed) < total
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let observed = self.thread.join().unwrap_or_default();
        let mut out = Vec::new();
        for (at, counted) in observed {
            while (out.len() as u64) < counted.min(total) {
                out.push(at);
            }
        }
        out
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs both measurements against the pipeline `target` whose API is `api` and whose billing
/// tokens are signed with `secret`, following `report`'s topic (the pipeline's first report, if
/// any), and prints the figures.
pub fn run(
    target: &Target,
    secret: &[u8],
    report: Option<&ReportSpec>,
    api: &str,
    rate: u64,
    seconds: u64,
    burst: u64,
) -> anyhow::Result<()> {
    let config = &target.kafka;
    let producer: BaseProducer = config
        .clone()
        .set("linger.ms", "1")
        .create()
        .context("creating a producer")?;
    let run_id = EventTime::now().millis();
    let campaign = format!("bench-fresh-{run_id}");
    let doc = format!(
        r#"{{"campaign_id":"{campaign}","advertiser_id":"bench","daily_budget_micros":1000000000000,"timezone":"UTC","billing":"cpm","bid_micros":1000}}"#
    );
    producer
        .send(
            BaseRecord::to(&target.topics.campaigns)
                .key(&campaign)
                .payload(&doc),
        )
        .map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(10))?;
    let mut poller = Poller::connect(api)?;
    let path = format!("/v1/campaigns/{campaign}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while poller.get_json(&path)?.0 != 200 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "campaign never appeared at {api}{path}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seq = 0u64;
    let send = |producer: &BaseProducer, seq: u64| {
        let now = EventTime::now();
        let claims = WinClaims {
            request_id: format!("{run_id}-{seq}"),
            imp_id: "1".into(),
            campaign_id: campaign.clone(),
            advertiser_id: "bench".into(),
            ad_id: "ad".into(),
            billing: Billing::Cpm,
            charge_micros: 1,
            issued: now,
            country: None,
            device: None,
        };
        let payload = serde_json::json!({"event_id": claims.request_id, "ts": now.millis(), "request_id": claims.request_id,
            "imp_id": "1", "campaign_id": campaign, "ad_id": "ad", "user_id": format!("u{}", seq % 1000),
            "billing_token": sign(secret, &claims)})
        .to_string();
        let mut record = BaseRecord::to(&target.topics.impressions)
            .key(&claims.request_id)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
    };

    let report_watch = match report {
        Some(spec) => Some(ReportWatch::start(config, &spec.topic, &campaign)?),
        None => None,
    };

    // Freshness at a steady rate.
    let total = rate * seconds;
    let mut produced_at: Vec<Instant> = Vec::with_capacity(total as usize);
    let start = Instant::now();
    let mut delays = Vec::with_capacity(total as usize);
    let mut seen = 0u64;
    while seen < total {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while seq < due {
            send(&producer, seq);
            produced_at.push(Instant::now());
            seq += 1;
        }
        producer.poll(Duration::ZERO);
        let (_, body) = poller.get_json(&path)?;
        let spend = body["spend_micros"].as_u64().unwrap_or(0).min(seq);
        let now = Instant::now();
        while seen < spend {
            delays.push(now.duration_since(produced_at[seen as usize]).as_secs_f64() * 1000.0);
            seen += 1;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(seconds + 120),
            "only {seen} of {total} impressions applied"
        );
    }
    // The first second's events find the pipeline idle; the rest is the steady state.
    let mut steady = delays.split_off((rate as usize).min(delays.len()));
    let mut first = delays;
    let mut delays: Vec<f64> = first.iter().chain(&steady).copied().collect();
    for d in [&mut delays, &mut first, &mut steady] {
        d.sort_by(f64::total_cmp);
    }
    println!(
        "spend freshness at {rate} events/s for {seconds} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} events)",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        percentile(&delays, 1.0),
        delays.len()
    );
    println!(
        "  steady state (after the first second): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; the first second: p50 {:.1} ms, max {:.1} ms",
        percentile(&steady, 0.5),
        percentile(&steady, 0.99),
        percentile(&steady, 1.0),
        percentile(&first, 0.5),
        percentile(&first, 1.0),
    );

    if let (Some(watch), Some(spec)) = (report_watch, report) {
        let seen = watch.finish(
            total,
            Duration::from_secs(spec.update_ms.max(0) as u64 / 1000 + 60),
        );
        let mut report_delays: Vec<f64> = seen
            .iter()
            .zip(&produced_at)
            .map(|(at, produced)| at.duration_since(*produced).as_secs_f64() * 1000.0)
            .collect();
        report_delays.sort_by(f64::total_cmp);
        println!(
            "report freshness ({}, update_ms {}): event to its row p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {total} events)",
            spec.topic,
            spec.update_ms,
            percentile(&report_delays, 0.5),
            percentile(&report_delays, 0.99),
            percentile(&report_delays, 1.0),
            report_delays.len()
        );
    }

    // End-to-end throughput of a burst.
    let base = seq;
    let start = Instant::now();
    for _ in 0..burst {
        send(&producer, seq);
        seq += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    let produced = start.elapsed();
    loop {
        let (_, body) = poller.get_json(&path)?;
        if body["spend_micros"].as_u64().unwrap_or(0) >= base + burst {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "burst not applied within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    println!(
        "end to end from the broker: {burst} events produced in {:.2} s, all charged after {:.2} s: {:.0} events/s",
        produced.as_secs_f64(),
        took.as_secs_f64(),
        burst as f64 / took.as_secs_f64()
    );
    Ok(())
}
