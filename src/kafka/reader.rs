//! The rdkafka [`PartitionReader`]: one `BaseConsumer` per worker, partitions assigned by hand.
//!
//! Partitions are assigned deterministically (partition `p` of every input topic goes to worker
//! `p % workers`) and start at the offsets of the last checkpoint, not at the consumer group's
//! committed offsets: the checkpoint is the source of truth. The campaigns topic is compacted and
//! is always read from its beginning, so the catalog is rebuilt on every start.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use adstream_operators::ingest::{RawMessage, StreamId};
use adstream_operators::source::PartitionReader;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::ClientContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Partition counts of the input topics.
pub type Layout = BTreeMap<StreamId, i32>;

/// Reads the partition count of each input topic.
pub fn discover(
    config: &ClientConfig,
    topics: &[(StreamId, String)],
    timeout: Duration,
) -> anyhow::Result<Layout> {
    let consumer: BaseConsumer = config.create().context("creating a Kafka client")?;
    let mut layout = Layout::new();
    for (stream, topic) in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| format!("reading metadata of topic {topic}"))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32);
        if partitions == 0 {
            anyhow::bail!(
                "topic {topic} does not exist (run `adstream topics create PIPELINE.toml`)"
            );
        }
        layout.insert(*stream, partitions);
    }
    Ok(layout)
}

/// The partitions worker `index` of `peers` reads.
pub fn assignment(layout: &Layout, index: usize, peers: usize) -> Vec<(StreamId, i32)> {
    layout
        .iter()
        .flat_map(|(s, n)| (0..*n).map(move |p| (*s, p)))
        .filter(|(_, p)| *p as usize % peers == index)
        .collect()
}

/// The reader's librdkafka context: reports each owned partition's consumer lag (messages behind
/// its high watermark) from librdkafka's statistics to `adstream_consumer_lag{topic,partition}`.
pub struct LagContext {
    lag: Option<prometheus::IntGaugeVec>,
}

impl ClientContext for LagContext {
    /// Reads only `topics.*.partitions.*.consumer_lag` from the statistics JSON (rdkafka's full
    /// `Statistics` type fails to decode when a broker leaves fields out).
    fn stats_raw(&self, statistics: &[u8]) {
        let Some(lag) = &self.lag else {
            return;
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            return;
        };
        let Some(topics) = doc["topics"].as_object() else {
            return;
        };
        for (topic, t) in topics {
            let Some(partitions) = t["partitions"].as_object() else {
                continue;
            };
            for (partition, p) in partitions {
                if let Some(behind) = partition_lag(p) {
                    lag.with_label_values(&[topic.as_str(), partition.as_str()])
                        .set(behind);
                }
            }
        }
    }
}

impl ConsumerContext for LagContext {}

/// Messages between a partition's high watermark and this consumer's position, from its
/// statistics entry; `None` for a partition it does not fetch or whose watermark is unknown.
/// (librdkafka's own `consumer_lag` is measured from the *committed* offset, and adstream
/// commits nothing to Kafka: its checkpoints hold the offsets.)
fn partition_lag(p: &serde_json::Value) -> Option<i64> {
    if p["fetch_state"] != "active" || p["partition"].as_i64().is_none_or(|n| n < 0) {
        return None;
    }
    let high = p["hi_offset"].as_i64().filter(|h| *h >= 0)?;
    let position = [&p["app_offset"], &p["next_offset"]]
        .into_iter()
        .filter_map(|v| v.as_i64())
        .find(|o| *o >= 0)?;
    Some((high - position).max(0))
}

/// How often librdkafka reports statistics (and so consumer lag), ms.
const STATS_INTERVAL_MS: &str = "5000";

/// A worker's consumer.
///
/// At start-up it records each owned partition's high watermark. Until the campaigns
/// partitions have been read up to theirs, the event partitions stay paused: the catalog is
/// complete before any event is judged against it. The reader counts as caught up once every
/// partition has reached its start-up watermark.
pub struct KafkaReader {
    consumer: BaseConsumer<LagContext>,
    streams: HashMap<String, StreamId>,
    names: HashMap<StreamId, String>,
    owned: Vec<(StreamId, i32)>,
    /// Partitions still behind their start-up high watermark.
    behind: HashMap<(StreamId, i32), i64>,
    events_paused: bool,
}

impl KafkaReader {
    /// A consumer assigned `owned`, starting at `offsets` (or the beginning), reporting its lag
    /// to `lag` when given.
    pub fn new(
        config: &ClientConfig,
        topics: &[(StreamId, String)],
        owned: Vec<(StreamId, i32)>,
        offsets: &BTreeMap<(StreamId, i32), i64>,
        lag: Option<prometheus::IntGaugeVec>,
    ) -> anyhow::Result<Self> {
        let mut config = config.clone();
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            .set("fetch.min.bytes", "1");
        if config.get("group.id").is_none() {
            config.set("group.id", "adstream");
        }
        if lag.is_some() {
            config.set("statistics.interval.ms", STATS_INTERVAL_MS);
        }
        let consumer: BaseConsumer<LagContext> = config
            .create_with_context(LagContext { lag })
            .context("creating a Kafka consumer")?;
        let names: HashMap<StreamId, &String> = topics.iter().map(|(s, t)| (*s, t)).collect();
        let mut tpl = TopicPartitionList::new();
        for (stream, partition) in &owned {
            let offset = match (stream, offsets.get(&(*stream, *partition))) {
                (StreamId::Campaigns, _) | (_, None) => Offset::Beginning,
                (_, Some(o)) => Offset::Offset(*o),
            };
            if let Some(topic) = names.get(stream) {
                tpl.add_partition_offset(topic, *partition, offset)
                    .context("building the assignment")?;
            }
        }
        consumer.assign(&tpl).context("assigning partitions")?;
        let mut behind = HashMap::new();
        for (stream, partition) in &owned {
            let Some(topic) = names.get(stream) else {
                continue;
            };
            let (_, high) = consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(15))
                .with_context(|| format!("reading the high watermark of {topic}/{partition}"))?;
            let start = match stream {
                StreamId::Campaigns => 0,
                _ => offsets.get(&(*stream, *partition)).copied().unwrap_or(0),
            };
            if high > start {
                behind.insert((*stream, *partition), high);
            }
        }
        let mut reader = KafkaReader {
            consumer,
            streams: topics.iter().map(|(s, t)| (t.clone(), *s)).collect(),
            names: topics.iter().map(|(s, t)| (*s, t.clone())).collect(),
            owned,
            behind,
            events_paused: false,
        };
        if reader.behind.keys().any(|(s, _)| *s == StreamId::Campaigns) {
            reader.set_events_paused(true)?;
        }
        Ok(reader)
    }

    fn event_partitions(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (stream, partition) in &self.owned {
            if *stream != StreamId::Campaigns {
                if let Some(topic) = self.names.get(stream) {
                    tpl.add_partition(topic, *partition);
                }
            }
        }
        tpl
    }

    fn set_events_paused(&mut self, paused: bool) -> anyhow::Result<()> {
        let tpl = self.event_partitions();
        if tpl.count() > 0 {
            if paused {
                self.consumer
                    .pause(&tpl)
                    .context("pausing event partitions")?;
            } else {
                self.consumer
                    .resume(&tpl)
                    .context("resuming event partitions")?;
            }
        }
        self.events_paused = paused;
        Ok(())
    }

    fn advance(&mut self, stream: StreamId, partition: i32, offset: i64) {
        if let Some(high) = self.behind.get(&(stream, partition)) {
            if offset + 1 >= *high {
                self.behind.remove(&(stream, partition));
                if self.events_paused && !self.behind.keys().any(|(s, _)| *s == StreamId::Campaigns)
                {
                    tracing::info!("catalog loaded; reading events");
                    if let Err(e) = self.set_events_paused(false) {
                        tracing::error!(error = %e, "cannot resume event partitions");
                    }
                }
            }
        }
    }
}

impl PartitionReader for KafkaReader {
    fn poll(&mut self, max: usize, out: &mut Vec<RawMessage>) {
        if self.owned.is_empty() {
            return;
        }
        for _ in 0..max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    break;
                }
                Some(Ok(m)) => {
                    let Some(stream) = self.streams.get(m.topic()).copied() else {
                        continue;
                    };
                    let raw = RawMessage {
                        stream,
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        timestamp_ms: m.timestamp().to_millis(),
                    };
                    drop(m);
                    if !self.behind.is_empty() {
                        self.advance(raw.stream, raw.partition, raw.offset);
                    }
                    out.push(raw);
                }
            }
        }
    }

    fn partitions(&self) -> Vec<(StreamId, i32)> {
        self.owned.clone()
    }

    fn caught_up(&self) -> bool {
        self.behind.is_empty()
    }

    fn lagging(&self) -> Vec<(StreamId, i32)> {
        self.behind.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_measured_from_the_position_of_fetched_partitions() {
        let p = |state: &str, partition: i64, hi: i64, app: i64, next: i64| {
            serde_json::json!({"fetch_state": state, "partition": partition, "hi_offset": hi,
                "app_offset": app, "next_offset": next, "consumer_lag": -1})
        };
        assert_eq!(partition_lag(&p("active", 0, 48, 40, 48)), Some(8));
        assert_eq!(
            partition_lag(&p("active", 0, 10, -1001, 0)),
            Some(10),
            "nothing read yet"
        );
        assert_eq!(partition_lag(&p("none", 1, 10, -1001, 0)), None, "not ours");
        assert_eq!(
            partition_lag(&p("active", -1, 10, 0, 0)),
            None,
            "internal partition"
        );
        assert_eq!(
            partition_lag(&p("active", 0, -1001, -1001, 0)),
            None,
            "watermark unknown"
        );
    }

    #[test]
    fn every_partition_has_exactly_one_worker() {
        let layout: Layout = [
            (StreamId::Campaigns, 1),
            (StreamId::Clicks, 4),
            (StreamId::Impressions, 3),
        ]
        .into();
        for peers in 1..5 {
            let mut all: Vec<_> = (0..peers)
                .flat_map(|i| assignment(&layout, i, peers))
                .collect();
            all.sort();
            assert_eq!(all.len(), 8);
            all.dedup();
            assert_eq!(all.len(), 8);
        }
    }
}
