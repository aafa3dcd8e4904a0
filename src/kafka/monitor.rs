//! The Kafka monitor: one thread per process that keeps asking the brokers what readiness and
//! the readers need to know.
//!
//! Every `health.interval_ms` it
//! 1. asks for the metadata of every input topic: no answer within `health.broker_timeout_ms`
//!    makes the process unready (`broker_unreachable`), the next answer ready again;
//! 2. grows the shared [`Topology`] when an input topic has more partitions than before: each
//!    worker's reader then assigns itself the new partitions it owns ([`super::reader`]);
//! 3. reads the low and high watermarks of every partition this process reads and, with the
//!    positions the readers publish, sets `adstream_consumer_lag` and the lags readiness is
//!    judged on (`lagging` beyond `health.max_lag_messages`). The low watermarks also tell the
//!    readers where a partition restarts after retention deleted messages they had not read.
//!
//! Partition ownership never moves: partition `p` of every input topic belongs to worker
//! `p % peers` ([`super::reader::assignment`]), a rule every process applies to the same
//! metadata, and partitions are only ever added. So a partition added while running is read by
//! exactly one worker, from its beginning, and checkpointed like the others.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use adstream_operators::records::StreamId;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::reader::{assignment, Layout, ReaderContext};
use crate::live::{LiveState, PartitionLag};
use crate::metrics::Metrics;

/// The partition layout of the input topics and what is known of each partition, shared by the
/// monitor (writer of layout and watermarks) and the readers (writers of positions).
#[derive(Default)]
pub struct Topology {
    layout: RwLock<Layout>,
    version: AtomicU64,
    positions: Mutex<BTreeMap<(StreamId, i32), i64>>,
    watermarks: Mutex<BTreeMap<(StreamId, i32), (i64, i64)>>,
}

impl Topology {
    /// A topology starting from `layout` (as discovered at start-up).
    pub fn new(layout: Layout) -> Self {
        Topology {
            layout: RwLock::new(layout),
            ..Topology::default()
        }
    }

    /// The layout now.
    pub fn layout(&self) -> Layout {
        self.layout.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Bumped each time the layout grows.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Takes the partition counts `seen` in the metadata; returns the topics that grew, with
    /// their old and new counts. Counts never shrink (Kafka cannot remove partitions; a topic
    /// missing from one answer is not a topic with none).
    pub fn grow(&self, seen: &Layout) -> Vec<(StreamId, i32, i32)> {
        let Ok(mut layout) = self.layout.write() else {
            return Vec::new();
        };
        let grown = grown(&layout, seen);
        for (stream, _, to) in &grown {
            layout.insert(*stream, *to);
        }
        if !grown.is_empty() {
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        grown
    }

    /// Records the next offset a reader will read on each of `positions`.
    pub fn set_positions(&self, positions: impl IntoIterator<Item = ((StreamId, i32), i64)>) {
        if let Ok(mut p) = self.positions.lock() {
            p.extend(positions);
        }
    }

    /// The next offset the reader of a partition will read, if it has said.
    pub fn position(&self, stream: StreamId, partition: i32) -> Option<i64> {
        self.positions
            .lock()
            .ok()
            .and_then(|p| p.get(&(stream, partition)).copied())
    }

    /// The low and high watermarks of a partition, as last read by the monitor.
    pub fn watermarks(&self, stream: StreamId, partition: i32) -> Option<(i64, i64)> {
        self.watermarks
            .lock()
            .ok()
            .and_then(|w| w.get(&(stream, partition)).copied())
    }
}

/// The topics of `seen` with more partitions than in `layout`: (topic, old, new).
pub fn grown(layout: &Layout, seen: &Layout) -> Vec<(StreamId, i32, i32)> {
    seen.iter()
        .filter_map(|(s, n)| {
            let old = layout.get(s).copied().unwrap_or(0);
            (*n > old).then_some((*s, old, *n))
        })
        .collect()
}

/// Messages a partition's reader is behind its end: from its position (or the low watermark
/// when it has not said, or is below it) to the high watermark.
pub fn lag(low: i64, high: i64, position: Option<i64>) -> i64 {
    (high - position.unwrap_or(low).max(low)).max(0)
}

/// How the monitor runs.
#[derive(Clone, Debug)]
pub struct MonitorSettings {
    /// Between rounds.
    pub interval: Duration,
    /// For each broker request.
    pub timeout: Duration,
    /// Lag beyond which the process is unready.
    pub max_lag: i64,
}

/// What the monitor watches: the input topics and the workers of this process.
pub struct Watched {
    /// Input topics by stream.
    pub topics: Vec<(StreamId, String)>,
    /// Worker indices of this process.
    pub workers: Range<usize>,
    /// Workers in the whole cluster.
    pub peers: usize,
}

/// Starts the monitor thread; it ends once `stop` is set.
pub fn spawn(
    config: &ClientConfig,
    watched: Watched,
    topology: Arc<Topology>,
    live: Arc<LiveState>,
    metrics: Metrics,
    settings: MonitorSettings,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer<ReaderContext> = config
        .create_with_context(ReaderContext::new(live.clone()))
        .context("creating the Kafka monitor's client")?;
    live.health.track_broker(metrics.broker_reachable.clone());
    for (stream, n) in topology.layout() {
        if let Some((_, topic)) = watched.topics.iter().find(|(s, _)| *s == stream) {
            metrics
                .input_partitions
                .with_label_values(&[topic])
                .set(n as i64);
        }
    }
    let monitor = Monitor {
        consumer,
        watched,
        topology,
        live,
        metrics,
        settings,
    };
    std::thread::Builder::new()
        .name("kafka-monitor".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                monitor.round();
                while started.elapsed() < monitor.settings.interval && !stop.load(Ordering::Relaxed)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
        .context("starting the Kafka monitor")?;
    Ok(())
}

struct Monitor {
    consumer: BaseConsumer<ReaderContext>,
    watched: Watched,
    topology: Arc<Topology>,
    live: Arc<LiveState>,
    metrics: Metrics,
    settings: MonitorSettings,
}

impl Monitor {
    fn unreachable(&self, why: String) {
        if self.live.health.broker_unreachable().is_none() {
            tracing::error!(reason = %why, "kafka brokers unreachable: not ready");
        }
        self.live.health.set_broker_unreachable(Some(why));
    }

    fn round(&self) {
        let timeout = self.settings.timeout;
        let mut seen = Layout::new();
        for (stream, topic) in &self.watched.topics {
            match self.consumer.fetch_metadata(Some(topic), timeout) {
                Err(e) => return self.unreachable(format!("metadata of {topic}: {e}")),
                Ok(metadata) => {
                    if let Some(t) = metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == topic && t.error().is_none())
                    {
                        seen.insert(*stream, t.partitions().len() as i32);
                    }
                }
            }
        }
        for (stream, from, to) in self.topology.grow(&seen) {
            let topic = self.topic(stream);
            tracing::info!(topic, from, to, "partitions added: reading them");
            self.metrics
                .input_partitions
                .with_label_values(&[topic])
                .set(to as i64);
        }
        let layout = self.topology.layout();
        let mut watermarks = BTreeMap::new();
        let mut lags = Vec::new();
        for worker in self.watched.workers.clone() {
            for (stream, partition) in assignment(&layout, worker, self.watched.peers) {
                let topic = self.topic(stream);
                let (low, high) = match self.consumer.fetch_watermarks(topic, partition, timeout) {
                    Ok(w) => w,
                    Err(e) => {
                        return self.unreachable(format!("watermarks of {topic}[{partition}]: {e}"))
                    }
                };
                watermarks.insert((stream, partition), (low, high));
                let behind = lag(low, high, self.topology.position(stream, partition));
                self.metrics
                    .consumer_lag
                    .with_label_values(&[topic, &partition.to_string()])
                    .set(behind);
                lags.push(PartitionLag {
                    topic: topic.to_string(),
                    partition,
                    lag: behind,
                });
            }
        }
        if let Ok(mut w) = self.topology.watermarks.lock() {
            *w = watermarks;
        }
        self.live.health.set_lags(lags, self.settings.max_lag);
        if self.live.health.broker_unreachable().is_some() {
            tracing::info!("kafka brokers answer again");
        }
        self.live.health.set_broker_unreachable(None);
    }

    fn topic(&self, stream: StreamId) -> &str {
        self.watched
            .topics
            .iter()
            .find(|(s, _)| *s == stream)
            .map_or("unknown", |(_, t)| t.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_growth_counts_and_a_missing_topic_is_not_a_shrink() {
        let layout: Layout = [(StreamId::Clicks, 4), (StreamId::Impressions, 4)].into();
        let seen: Layout = [(StreamId::Clicks, 6), (StreamId::Impressions, 2)].into();
        assert_eq!(grown(&layout, &seen), vec![(StreamId::Clicks, 4, 6)]);
        let t = Topology::new(layout);
        assert_eq!(t.version(), 0);
        assert_eq!(t.grow(&seen), vec![(StreamId::Clicks, 4, 6)]);
        assert_eq!(t.version(), 1);
        assert_eq!(t.layout()[&StreamId::Clicks], 6);
        assert_eq!(t.layout()[&StreamId::Impressions], 4);
        assert!(t.grow(&[(StreamId::Clicks, 6)].into()).is_empty());
        assert_eq!(t.version(), 1, "nothing new: same version");
    }

    #[test]
    fn lag_runs_from_the_position_or_the_low_watermark_to_the_end() {
        assert_eq!(lag(0, 100, Some(40)), 60);
        assert_eq!(lag(0, 100, Some(100)), 0);
        assert_eq!(lag(10, 100, None), 90, "not read yet: from the beginning");
        assert_eq!(lag(50, 100, Some(20)), 50, "deleted messages are not lag");
        assert_eq!(lag(0, 10, Some(12)), 0);
    }
}
