//! Dead letters are published once per bad message, across crashes and restarts.
//!
//! A restarted process reads its inputs again from the offsets of its last checkpoint, so every
//! bad message after them is refused again; before this gate, each restart published their dead
//! letters a second time. Two facts make "once" exact:
//!
//! 1. **Nothing published is lost behind a checkpoint.** Dead letters (and report rows) leave
//!    through a [`adstream_operators::deliver`] fence that holds the sources' `progress` probe
//!    until the producer has settled them, and sources persist offsets only behind that probe.
//!    So at a checkpoint with offset `o` on a partition, the dead letter of every bad message
//!    before `o` has been delivered (or counted as failed).
//! 2. **What was published after the checkpoint can be read back.** Each persisted snapshot
//!    records its wall-clock time `T` per partition
//!    ([`adstream_operators::source::position_time_key`]); every message at or after the
//!    checkpointed offset was read after `T`, so its dead letter carries a Kafka timestamp
//!    after `T`. At start-up the process reads `ads.deadletter` from the oldest such `T` minus
//!    [`LOOKBACK_MS`] (other processes' snapshots and their clocks may be a little behind) to
//!    the end, and collects the source position (topic, partition, offset) of every dead
//!    letter found. A state without a checkpoint yet reads back from its first start
//!    ([`read_back_since`]), so a run that crashed before its first checkpoint is covered too.
//!
//! The [`DeadLetterGate`] then refuses to publish a dead letter whose source position is below
//! the checkpointed offset of its partition (only the campaigns topic, read from its beginning
//! on every start, is read there again), or was read back; each read-back position suppresses
//! one dead letter (`adstream_output_records_total{outcome="already_published"}`), and is
//! counted in `adstream_dead_letters_total` as before. The summary of offsets lost to retention
//! is a dead letter like the others and goes through the same gate.
//!
//! Left open: a dead letter whose delivery librdkafka reports as failed with a transient error
//! is sent again ([`super::output`]), which can duplicate it if the first attempt did land;
//! with the producer's unlimited `message.timeout.ms` librdkafka retries on its own, in order,
//! and this does not arise in practice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use adstream_operators::checkpoint::{codec, StateBatch, StateStore};
use adstream_operators::records::Origin;
use adstream_operators::records::StreamId;
use adstream_operators::source::restore_position_times;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::pipeline::Topics;

/// How far before the oldest checkpointed snapshot time dead letters are read back, ms.
pub const LOOKBACK_MS: i64 = 60_000;

/// Key of the time this state was first started (for a run that crashed before its first
/// checkpoint: everything it published is read back from there).
const FIRST_START_KEY: &[u8] = b"deadletters/first-start";

/// From when dead letters of earlier runs over `store` are read back (already minus
/// [`LOOKBACK_MS`]): the oldest checkpointed snapshot time, else the first start of this state.
/// On a new state, records `now_ms` as its first start and returns `None`: nothing to read.
pub fn read_back_since(store: &dyn StateStore, now_ms: i64) -> anyhow::Result<Option<i64>> {
    let oldest = match restore_position_times(store)?.into_values().min() {
        Some(t) => Some(t),
        None => match store
            .scan(FIRST_START_KEY)?
            .into_iter()
            .find(|(k, _)| k.as_slice() == FIRST_START_KEY)
        {
            Some((k, v)) => Some(codec::decode_number::<i64>(&k, &v)?),
            None => None,
        },
    };
    if let Some(t) = oldest {
        return Ok(Some(t - LOOKBACK_MS));
    }
    let mut batch = StateBatch::default();
    batch.put(FIRST_START_KEY.to_vec(), &now_ms);
    let ticket = store.persist(batch);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ticket.poll() {
            Some(true) => return Ok(None),
            Some(false) => anyhow::bail!("cannot write the first start time to the state store"),
            None if Instant::now() > deadline => {
                anyhow::bail!("the state store did not write the first start time in time")
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// A dead letter's source position: (stream id, partition, offset).
pub type Position = (u8, i32, i64);

/// Decides which dead letters still have to be published.
#[derive(Debug, Default)]
pub struct DeadLetterGate {
    below: BTreeMap<(u8, i32), i64>,
    published: HashSet<Position>,
}

impl DeadLetterGate {
    /// A gate over the checkpointed offsets and the positions read back from the topic.
    pub fn new(offsets: &BTreeMap<(StreamId, i32), i64>, published: HashSet<Position>) -> Self {
        DeadLetterGate {
            below: offsets
                .iter()
                .map(|((s, p), o)| ((*s as u8, *p), *o))
                .collect(),
            published,
        }
    }

    /// Whether the dead letter of the message at `origin` must be published now (false: an
    /// earlier run published it).
    pub fn admit(&mut self, origin: &Origin) -> bool {
        if self
            .below
            .get(&(origin.stream, origin.partition))
            .is_some_and(|o| origin.offset < *o)
        {
            return false;
        }
        !self
            .published
            .remove(&(origin.stream, origin.partition, origin.offset))
    }
}

/// The source position a dead letter names, if it names an input of `topics`: `header` gives
/// its headers' values ([`super::sink::dead_letter_header`]); `payload` is its value, read as
/// the JSON document that releases before headers wrote, when it has no source header.
pub fn position_of<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    payload: Option<&[u8]>,
    topics: &Topics,
) -> Option<Position> {
    use super::sink::dead_letter_header as h;
    let (topic, partition, offset) = match header(h::TOPIC) {
        Some(topic) => (
            topic.to_string(),
            header(h::PARTITION)?.parse::<i32>().ok()?,
            header(h::OFFSET)?.parse::<i64>().ok()?,
        ),
        None => {
            let doc = serde_json::from_slice::<serde_json::Value>(payload?).ok()?;
            (
                doc["topic"].as_str()?.to_string(),
                i32::try_from(doc["partition"].as_i64()?).ok()?,
                doc["offset"].as_i64()?,
            )
        }
    };
    let stream = StreamId::ALL
        .into_iter()
        .find(|s| topics.input(*s) == topic)?;
    Some((stream as u8, partition, offset))
}

/// The source positions of the dead letters on `topics.deadletter` with a timestamp at or
/// after `since_ms`, read up to the end each partition has now. Fails if the brokers do not
/// answer, or the end is not reached within `timeout`.
pub fn published_since(
    config: &ClientConfig,
    topics: &Topics,
    since_ms: i64,
    timeout: Duration,
) -> anyhow::Result<HashSet<Position>> {
    let topic = topics.deadletter.as_str();
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "adstream-deadletter-readback")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating a Kafka client")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut query = TopicPartitionList::new();
    for p in &partitions {
        query.add_partition_offset(topic, *p, Offset::Offset(since_ms))?;
    }
    let starts = if partitions.is_empty() {
        TopicPartitionList::new()
    } else {
        consumer
            .offsets_for_times(query, timeout)
            .with_context(|| format!("finding the dead letters of {topic} since {since_ms}"))?
    };
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for e in starts.elements() {
        let start = match e.offset() {
            Offset::Offset(o) => o,
            // No dead letter that recent.
            _ => continue,
        };
        let (low, high) = consumer
            .fetch_watermarks(topic, e.partition(), timeout)
            .with_context(|| format!("reading the end of {topic}[{}]", e.partition()))?;
        let start = start.max(low);
        if start < high {
            ends.insert(e.partition(), high);
            assignment.add_partition_offset(topic, e.partition(), Offset::Offset(start))?;
        }
    }
    let mut published = HashSet::new();
    if ends.is_empty() {
        return Ok(published);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout.max(Duration::from_secs(60));
    while !ends.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "could not read {topic} back to its end in time"
        );
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            // The deadline bounds the wait for librdkafka to reconnect.
            Some(Err(e)) if super::is_transient(&e) => {
                tracing::warn!(error = %e, topic, "reading back: broker connection lost, retrying");
                continue;
            }
            Some(message) => message.with_context(|| format!("reading {topic} back"))?,
        };
        let headers = m.headers();
        let header = |name: &str| {
            headers
                .and_then(|h| h.iter().find(|x| x.key == name))
                .and_then(|x| x.value)
                .and_then(|v| std::str::from_utf8(v).ok())
        };
        if let Some(position) = position_of(header, m.payload(), topics) {
            published.insert(position);
        }
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(stream: StreamId, partition: i32, offset: i64) -> Origin {
        Origin {
            stream: stream as u8,
            partition,
            offset,
        }
    }

    #[test]
    fn below_the_checkpoint_or_read_back_is_not_published_again() {
        let offsets = [((StreamId::Campaigns, 0), 5), ((StreamId::Clicks, 1), 100)].into();
        let published = [(StreamId::Clicks as u8, 1, 104)].into();
        let mut gate = DeadLetterGate::new(&offsets, published);
        assert!(
            !gate.admit(&origin(StreamId::Campaigns, 0, 4)),
            "campaigns are read again from the beginning"
        );
        assert!(gate.admit(&origin(StreamId::Campaigns, 0, 5)));
        assert!(!gate.admit(&origin(StreamId::Clicks, 1, 104)), "read back");
        assert!(
            gate.admit(&origin(StreamId::Clicks, 1, 104)),
            "each read-back position suppresses one dead letter"
        );
        assert!(gate.admit(&origin(StreamId::Clicks, 1, 103)));
        assert!(gate.admit(&origin(StreamId::Impressions, 1, 104)));
    }

    #[test]
    fn read_back_starts_at_the_oldest_snapshot_or_the_first_start() {
        use adstream_operators::checkpoint::MemoryStore;
        use adstream_operators::source::position_time_key;
        let store = MemoryStore::default();
        assert_eq!(
            read_back_since(&store, 5_000_000).unwrap(),
            None,
            "new state"
        );
        assert_eq!(
            read_back_since(&store, 9_000_000).unwrap(),
            Some(5_000_000 - LOOKBACK_MS),
            "crashed before its first checkpoint: from its first start"
        );
        let _ = store.persist(StateBatch {
            puts: vec![
                (position_time_key(StreamId::Clicks, 0), b"7000000".to_vec()),
                (position_time_key(StreamId::Clicks, 1), b"6000000".to_vec()),
            ],
            deletes: vec![],
        });
        assert_eq!(
            read_back_since(&store, 9_000_000).unwrap(),
            Some(6_000_000 - LOOKBACK_MS)
        );
    }

    #[test]
    fn positions_are_read_from_the_headers_or_legacy_documents_of_known_topics() {
        use crate::kafka::sink::dead_letter_header as h;
        let topics = Topics::default();
        let headers = |topic: &'static str| {
            move |name: &str| match name {
                n if n == h::TOPIC => Some(topic),
                n if n == h::PARTITION => Some("2"),
                n if n == h::OFFSET => Some("41"),
                _ => None,
            }
        };
        let clicks: &'static str = Box::leak(topics.clicks.clone().into_boxed_str());
        // The value is the original message's bytes, whatever they are.
        assert_eq!(
            position_of(headers(clicks), Some(b"\xff{not json"), &topics),
            Some((StreamId::Clicks as u8, 2, 41))
        );
        assert_eq!(position_of(headers("elsewhere"), None, &topics), None);
        // Dead letters of earlier releases: a JSON document, no headers.
        let none = |_: &str| None;
        let doc = serde_json::json!({"reason": "bad_token", "topic": topics.clicks,
            "partition": 2, "offset": 41})
        .to_string();
        assert_eq!(
            position_of(none, Some(doc.as_bytes()), &topics),
            Some((StreamId::Clicks as u8, 2, 41))
        );
        assert_eq!(position_of(none, Some(b"{}"), &topics), None);
        assert_eq!(position_of(none, None, &topics), None);
    }
}
