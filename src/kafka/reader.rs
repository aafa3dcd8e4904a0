//! The rdkafka [`PartitionReader`]: one consumer per process ([`SharedConsumer`]), each
//! partition split into its own queue that the worker owning it reads.
//!
//! The broker serves one fetch per process, not one per worker. (Pausing idle partitions to
//! fetch them less often does not work with librdkafka: its fetcher notices a resumed
//! partition only at its next fetch, up to a second later when nothing else is fetched, so
//! the resumed partition starves.)
//!
//! Partitions are assigned deterministically (partition `p` of every input topic goes to worker
//! `p % workers`) and start at the offsets of the last checkpoint, not at the consumer group's
//! committed offsets: the checkpoint is the source of truth. The campaigns topic is compacted and
//! is always read from its beginning, so the catalog is rebuilt on every start. Partitions added
//! while running are picked up through the [`Topology`] the monitor keeps
//! ([`super::monitor`]); offsets that retention deleted before they were read are reported.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adstream_operators::records::{RawMessage, StreamId};
use adstream_operators::source::PartitionReader;
use anyhow::Context;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::monitor::Topology;
use crate::live::LiveState;

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

/// The librdkafka context of the readers and the monitor: client errors are logged, and "all
/// brokers down" makes the process unready at once (the monitor's next answered round makes it
/// ready again).
pub struct ReaderContext {
    live: Arc<LiveState>,
    /// Whether the last commit of checkpointed offsets failed (logged when this changes).
    commits_failing: AtomicBool,
}

impl ReaderContext {
    /// A context reporting to `live`'s health.
    pub fn new(live: Arc<LiveState>) -> Self {
        ReaderContext {
            live,
            commits_failing: AtomicBool::new(false),
        }
    }

    /// Logs a commit of checkpointed offsets failing, or working again, once per change: the
    /// commits are for monitoring only, so a failure is not fatal.
    fn commit_outcome(&self, result: Result<(), &KafkaError>) {
        match result {
            Ok(()) => {
                if self.commits_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        "committing checkpointed offsets to the consumer group works again"
                    );
                }
            }
            Err(e) => {
                if !self.commits_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "committing checkpointed offsets to the consumer group failed (they stay checkpointed; lag monitors see stale offsets)");
                }
            }
        }
    }
}

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            tracing::error!(reason, "kafka consumer: all brokers down");
            self.live
                .health
                .set_broker_unreachable(Some(format!("consumer: {reason}")));
        } else {
            tracing::warn!(error = %error, reason, "kafka consumer error");
        }
    }
}

impl ConsumerContext for ReaderContext {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        self.commit_outcome(result.as_ref().map(|_| ()));
    }
}

/// The process's one consumer. Each worker's [`KafkaReader`] assigns its partitions to it and
/// reads them from their own queues; the broker sees one client fetching every partition of
/// the process.
pub struct SharedConsumer {
    consumer: Arc<BaseConsumer<ReaderContext>>,
    /// Messages the consumer's main queue returned: fetched between a partition's assignment
    /// and the split of its queue. Each comes before anything in its partition's queue, so
    /// every reader empties the main queue (under this lock) before reading its queues.
    spilled: Mutex<HashMap<(StreamId, i32), VecDeque<RawMessage>>>,
    /// Offset-out-of-range errors seen on the main queue (whoever's partition they concern).
    resets: AtomicU64,
    streams: HashMap<String, StreamId>,
}

impl SharedConsumer {
    /// Creates the process's consumer over the pipeline's client `config`, reading `topics`,
    /// in consumer group `group` (where checkpointed offsets are committed for monitoring).
    pub fn new(
        config: &ClientConfig,
        group: &str,
        topics: &[(StreamId, String)],
        live: Arc<LiveState>,
    ) -> anyhow::Result<Arc<Self>> {
        let consumer: BaseConsumer<ReaderContext> = consumer_config(config, group)
            .create_with_context(ReaderContext::new(live))
            .context("creating a Kafka consumer")?;
        Ok(Arc::new(SharedConsumer {
            consumer: Arc::new(consumer),
            spilled: Mutex::default(),
            resets: AtomicU64::new(0),
            streams: topics.iter().map(|(s, t)| (t.clone(), *s)).collect(),
        }))
    }

    /// Empties the main queue (serving the client's callbacks too) into the spill, and moves
    /// the spilled messages of `owned` to `out`.
    fn drain_main_queue(&self, owned: &[(StreamId, i32)], out: &mut Vec<RawMessage>) {
        let Ok(mut spilled) = self.spilled.lock() else {
            return;
        };
        while let Some(polled) = self.consumer.poll(Duration::ZERO) {
            match polled {
                Ok(m) => {
                    if let Some(raw) = raw_message(&self.streams, &m) {
                        spilled
                            .entry((raw.stream, raw.partition))
                            .or_default()
                            .push_back(raw);
                    }
                }
                Err(e) => {
                    if is_offset_reset(&e) {
                        self.resets.fetch_add(1, Ordering::Relaxed);
                    }
                    log_consumer_error(&e);
                }
            }
        }
        if spilled.is_empty() {
            return;
        }
        for p in owned {
            if let Some(messages) = spilled.remove(p) {
                out.extend(messages);
            }
        }
    }
}

fn raw_message(streams: &HashMap<String, StreamId>, m: &BorrowedMessage<'_>) -> Option<RawMessage> {
    let stream = streams.get(m.topic()).copied()?;
    Some(RawMessage {
        stream,
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        timestamp_ms: m.timestamp().to_millis(),
    })
}

fn is_offset_reset(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
    )
}

fn log_consumer_error(e: &KafkaError) {
    if is_offset_reset(e) {
        tracing::error!(error = %e, "offset out of range: messages were deleted before they were read");
    } else if super::is_transient(e) {
        // Already logged by the client's error callback.
        tracing::debug!(error = %e, "kafka consumer error");
    } else {
        tracing::warn!(error = %e, "kafka consumer error");
    }
}

/// Where a reader starts on a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// The first offset to read.
    pub offset: i64,
    /// Offsets `[from, to)` deleted (retention) before they were read.
    pub lost: Option<(i64, i64)>,
    /// The checkpointed offset lies beyond the partition's end (the topic was recreated?).
    pub beyond_end: bool,
}

/// Where to start on a partition whose low and high watermarks are `low` and `high`, given the
/// checkpointed next offset (`None`: from the beginning). Never a silent skip: an offset below
/// the low watermark reports what was lost.
pub fn start_at(checkpointed: Option<i64>, low: i64, high: i64) -> Start {
    let mut start = Start {
        offset: low,
        lost: None,
        beyond_end: false,
    };
    match checkpointed {
        None => {}
        Some(o) if o < low => start.lost = Some((o, low)),
        Some(o) if o > high => start.beyond_end = true,
        Some(o) => start.offset = o,
    }
    start
}

/// Called when a reader finds messages deleted before it read them:
/// (stream, partition, first lost offset, first offset still there).
pub type OnLost = Arc<dyn Fn(StreamId, i32, i64, i64) + Send + Sync>;

/// How often a reader that saw an offset-out-of-range error looks for the partitions concerned.
const RESET_CHECK: Duration = Duration::from_millis(100);

/// A worker's consumer.
///
/// At start-up it records each owned partition's high watermark. Until the campaigns
/// partitions have been read up to theirs, the event partitions stay paused: the catalog is
/// complete before any event is judged against it. The reader counts as caught up once every
/// partition has reached its start-up watermark.
///
/// Offsets lost to retention are never skipped silently: `auto.offset.reset` is `error`, a
/// checkpointed offset below the low watermark at start-up, or an out-of-range error while
/// running, is reported through [`OnLost`] (metric, error log, dead-letter summary) and reading
/// resumes at the low watermark. Partitions added to the input topics while running are
/// assigned as soon as the monitor's [`Topology`] shows them.
pub struct KafkaReader {
    shared: Arc<SharedConsumer>,
    /// The queue of each partition read.
    queues: BTreeMap<(StreamId, i32), PartitionQueue<ReaderContext>>,
    /// Where the next poll starts among the queues (so that none starves).
    rotate: usize,
    resets_seen: u64,
    names: HashMap<StreamId, String>,
    owned: Vec<(StreamId, i32)>,
    /// Partitions still behind their start-up high watermark.
    behind: HashMap<(StreamId, i32), i64>,
    events_paused: bool,
    /// The next offset to read, per owned partition, as far as known.
    next: HashMap<(StreamId, i32), i64>,
    topology: Arc<Topology>,
    version: u64,
    worker: (usize, usize),
    checkpointed: BTreeMap<(StreamId, i32), i64>,
    on_lost: OnLost,
    reset_since: Option<Instant>,
    last_reset_check: Instant,
}

/// Who a reader is and what it reports to.
pub struct ReaderLinks {
    /// This worker's index and the number of workers in the cluster.
    pub worker: (usize, usize),
    /// The layout and watermarks the monitor keeps, and the positions readers publish.
    pub topology: Arc<Topology>,
    /// Where lost offsets are reported.
    pub on_lost: OnLost,
}

/// The reader's consumer settings over the pipeline's client `config`: offsets are the
/// checkpoint's, never committed or reset by the client.
fn consumer_config(config: &ClientConfig, group: &str) -> ClientConfig {
    let mut config = config.clone();
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "error");
    // `fetch.wait.max.ms`: how long the broker may hold a fetch that finds nothing, which is
    // what an idle pipeline costs the broker (one fetch per process per wait). All of these may
    // be set in `[kafka.properties]`.
    super::properties::set_defaults(
        &mut config,
        &[
            ("group.id", group),
            ("fetch.wait.max.ms", "20"),
            ("fetch.min.bytes", "1"),
        ],
    );
    config
}

impl KafkaReader {
    /// A reader of the partitions worker `links.worker` owns in `links.topology`, through the
    /// process's `shared` consumer, starting at `offsets` (or the beginning).
    pub fn new(
        shared: Arc<SharedConsumer>,
        topics: &[(StreamId, String)],
        offsets: &BTreeMap<(StreamId, i32), i64>,
        links: ReaderLinks,
    ) -> anyhow::Result<Self> {
        let (index, peers) = links.worker;
        let owned = assignment(&links.topology.layout(), index, peers);
        let mut reader = KafkaReader {
            resets_seen: shared.resets.load(Ordering::Relaxed),
            shared,
            queues: BTreeMap::new(),
            rotate: 0,
            names: topics.iter().map(|(s, t)| (*s, t.clone())).collect(),
            owned: Vec::new(),
            behind: HashMap::new(),
            events_paused: false,
            next: HashMap::new(),
            version: links.topology.version(),
            topology: links.topology,
            worker: links.worker,
            checkpointed: offsets.clone(),
            on_lost: links.on_lost,
            reset_since: None,
            last_reset_check: Instant::now(),
        };
        let mut tpl = TopicPartitionList::new();
        for (stream, partition) in &owned {
            let Some(topic) = reader.names.get(stream).cloned() else {
                continue;
            };
            let (low, high) = reader
                .shared
                .consumer
                .fetch_watermarks(&topic, *partition, Duration::from_secs(15))
                .with_context(|| format!("reading the watermarks of {topic}/{partition}"))?;
            let start = reader.start(*stream, *partition, low, high);
            tpl.add_partition_offset(&topic, *partition, Offset::Offset(start))
                .context("building the assignment")?;
            if high > start {
                reader.behind.insert((*stream, *partition), high);
            }
        }
        reader
            .shared
            .consumer
            .incremental_assign(&tpl)
            .context("assigning partitions")?;
        for p in &owned {
            reader.split(*p)?;
        }
        reader.owned = owned;
        reader.publish_positions(reader.owned.clone());
        if reader.behind.keys().any(|(s, _)| *s == StreamId::Campaigns) {
            reader.set_events_paused(true)?;
        }
        Ok(reader)
    }

    /// Decides where to start on a partition, reporting offsets lost to retention.
    fn start(&mut self, stream: StreamId, partition: i32, low: i64, high: i64) -> i64 {
        let checkpointed = match stream {
            // Compacted and always read from its beginning.
            StreamId::Campaigns => None,
            _ => self.checkpointed.get(&(stream, partition)).copied(),
        };
        let start = start_at(checkpointed, low, high);
        let topic = self.names.get(&stream).map_or("unknown", String::as_str);
        if start.beyond_end {
            tracing::error!(
                topic,
                partition,
                checkpointed,
                high,
                "checkpointed offset beyond the end of the partition (topic recreated?): reading it from its beginning"
            );
        }
        if let Some((from, to)) = start.lost {
            (self.on_lost)(stream, partition, from, to);
        }
        self.next.insert((stream, partition), start.offset);
        start.offset
    }

    /// Reads `partition` from its own queue from now on.
    fn split(&mut self, partition: (StreamId, i32)) -> anyhow::Result<()> {
        let topic = self
            .names
            .get(&partition.0)
            .with_context(|| format!("no topic for {:?}", partition.0))?;
        let queue = self
            .shared
            .consumer
            .split_partition_queue(topic, partition.1)
            .with_context(|| format!("splitting the queue of {topic}/{}", partition.1))?;
        self.queues.insert(partition, queue);
        Ok(())
    }

    fn publish_positions(&self, partitions: Vec<(StreamId, i32)>) {
        self.topology.set_positions(
            partitions
                .into_iter()
                .filter_map(|k| self.next.get(&k).map(|o| (k, *o))),
        );
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
                self.shared
                    .consumer
                    .pause(&tpl)
                    .context("pausing event partitions")?;
            } else {
                self.shared
                    .consumer
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

    /// Assigns the partitions the grown layout gives this worker, from their beginning (or
    /// their checkpointed offset, had an earlier run read them).
    fn take_new_partitions(&mut self) {
        self.version = self.topology.version();
        let (index, peers) = self.worker;
        let now = assignment(&self.topology.layout(), index, peers);
        let new: Vec<(StreamId, i32)> = now
            .into_iter()
            .filter(|p| !self.owned.contains(p))
            .collect();
        if new.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (stream, partition) in &new {
            let Some(topic) = self.names.get(stream) else {
                continue;
            };
            let offset = match (stream, self.checkpointed.get(&(*stream, *partition))) {
                (StreamId::Campaigns, _) | (_, None) => Offset::Beginning,
                (_, Some(o)) => Offset::Offset(*o),
            };
            if let Offset::Offset(o) = offset {
                self.next.insert((*stream, *partition), o);
            }
            if tpl.add_partition_offset(topic, *partition, offset).is_err() {
                continue;
            }
            tracing::info!(topic, partition, worker = index, "reading a new partition");
        }
        if let Err(e) = self.shared.consumer.incremental_assign(&tpl) {
            // Tried again at the next layout change; the monitor's lag shows them unread.
            tracing::error!(error = %e, "cannot assign new partitions");
            return;
        }
        for p in &new {
            if let Err(e) = self.split(*p) {
                // Its messages come through the main queue meanwhile (the spill).
                tracing::error!(error = %e, "cannot split a new partition's queue");
            }
        }
        self.owned.extend(new.iter().copied());
        if self.events_paused {
            let mut paused = TopicPartitionList::new();
            for (stream, partition) in &new {
                if let (false, Some(topic)) =
                    (*stream == StreamId::Campaigns, self.names.get(stream))
                {
                    paused.add_partition(topic, *partition);
                }
            }
            if paused.count() > 0 {
                if let Err(e) = self.shared.consumer.pause(&paused) {
                    tracing::error!(error = %e, "cannot pause new event partitions");
                }
            }
        }
        self.publish_positions(new);
    }

    /// After an offset-out-of-range error: every owned event partition whose next offset lies
    /// below its low watermark lost messages to retention; each is reported and read on from
    /// its low watermark. Waits for the monitor's watermarks to show the loss.
    fn recover_lost_offsets(&mut self) {
        let mut found = false;
        for (stream, partition) in self.owned.clone() {
            if stream == StreamId::Campaigns {
                continue;
            }
            let (Some((low, _)), Some(next)) = (
                self.topology.watermarks(stream, partition),
                self.next.get(&(stream, partition)).copied(),
            ) else {
                continue;
            };
            if next >= low {
                continue;
            }
            let Some(topic) = self.names.get(&stream).cloned() else {
                continue;
            };
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(&topic, partition, Offset::Offset(low))
                .is_err()
            {
                continue;
            }
            let consumer = &self.shared.consumer;
            let reassigned = consumer
                .incremental_unassign(&tpl)
                .and_then(|()| consumer.incremental_assign(&tpl));
            if let Err(e) = reassigned {
                tracing::error!(error = %e, topic, partition, "cannot move past lost offsets");
                continue;
            }
            if let Err(e) = self.split((stream, partition)) {
                tracing::error!(error = %e, topic, partition, "cannot split the queue again");
            }
            (self.on_lost)(stream, partition, next, low);
            self.next.insert((stream, partition), low);
            self.publish_positions(vec![(stream, partition)]);
            found = true;
        }
        let waited = self
            .reset_since
            .is_some_and(|t| t.elapsed() > Duration::from_secs(60));
        if found || waited {
            if !found {
                tracing::error!("offset out of range, but no partition is below its low watermark");
            }
            self.reset_since = None;
        }
    }
}

impl PartitionReader for KafkaReader {
    fn poll(&mut self, max: usize, out: &mut Vec<RawMessage>) {
        if self.topology.version() != self.version {
            self.take_new_partitions();
        }
        let resets = self.shared.resets.load(Ordering::Relaxed);
        if resets != self.resets_seen {
            self.resets_seen = resets;
            self.reset_since.get_or_insert_with(Instant::now);
        }
        if self.reset_since.is_some() && self.last_reset_check.elapsed() >= RESET_CHECK {
            self.last_reset_check = Instant::now();
            self.recover_lost_offsets();
        }
        if self.owned.is_empty() {
            return;
        }
        let first = out.len();
        self.shared.drain_main_queue(&self.owned, out);
        // Each poll starts at the next queue, so that a busy partition starves none.
        let n = self.queues.len();
        self.rotate = self.rotate.wrapping_add(1);
        let start = self.rotate % n.max(1);
        for queue in self.queues.values().cycle().skip(start).take(n) {
            while out.len() - first < max {
                match queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(e)) => {
                        if is_offset_reset(&e) {
                            self.reset_since.get_or_insert_with(Instant::now);
                        }
                        log_consumer_error(&e);
                        break;
                    }
                    Some(Ok(m)) => {
                        if let Some(raw) = raw_message(&self.shared.streams, &m) {
                            out.push(raw);
                        }
                    }
                }
            }
            if out.len() - first >= max {
                break;
            }
        }
        if out.len() > first {
            let mut read = BTreeMap::new();
            for m in &out[first..] {
                read.insert((m.stream, m.partition), m.offset + 1);
            }
            if !self.behind.is_empty() {
                for ((stream, partition), next) in &read {
                    self.advance(*stream, *partition, next - 1);
                }
            }
            self.next.extend(read.iter().map(|(k, v)| (*k, *v)));
            self.topology.set_positions(read);
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

    fn checkpointed(&mut self, offsets: &BTreeMap<(StreamId, i32), i64>) {
        let mut list = TopicPartitionList::new();
        for ((stream, partition), next) in offsets {
            let Some(topic) = self.names.get(stream) else {
                continue;
            };
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                tracing::debug!(error = %e, topic, partition, "offset not committed");
            }
        }
        if list.count() == 0 {
            return;
        }
        // Asynchronous: the outcome comes to `ReaderContext::commit_callback`.
        if let Err(e) = self.shared.consumer.commit(&list, CommitMode::Async) {
            self.shared.consumer.context().commit_outcome(Err(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_wait_and_group_default_unless_the_pipeline_sets_them() {
        let defaults = consumer_config(&ClientConfig::new(), "adstream-ads");
        assert_eq!(defaults.get("fetch.wait.max.ms"), Some("20"));
        assert_eq!(defaults.get("group.id"), Some("adstream-ads"));
        let mut set = ClientConfig::new();
        set.set("fetch.wait.max.ms", "500")
            .set("group.id", "g")
            .set("enable.auto.commit", "true");
        let config = consumer_config(&set, "adstream-ads");
        assert_eq!(config.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(config.get("group.id"), Some("g"));
        // Offsets are the checkpoint's: never committed by the client.
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn a_checkpoint_below_the_low_watermark_reports_the_lost_range() {
        assert_eq!(
            start_at(Some(40), 10, 100),
            Start {
                offset: 40,
                lost: None,
                beyond_end: false
            }
        );
        assert_eq!(
            start_at(None, 10, 100),
            Start {
                offset: 10,
                lost: None,
                beyond_end: false
            }
        );
        assert_eq!(
            start_at(Some(4), 10, 100),
            Start {
                offset: 10,
                lost: Some((4, 10)),
                beyond_end: false
            }
        );
        assert_eq!(
            start_at(Some(10), 10, 100).lost,
            None,
            "nothing lost at low"
        );
        assert_eq!(
            start_at(Some(100), 10, 100).offset,
            100,
            "caught up at the end"
        );
        assert_eq!(
            start_at(Some(130), 10, 100),
            Start {
                offset: 10,
                lost: None,
                beyond_end: true
            }
        );
    }

    /// Adding partitions never moves one that was already read: each worker keeps what it
    /// had and the new partitions get exactly one worker each.
    #[test]
    fn growth_keeps_every_partition_with_its_worker() {
        let before: Layout = [(StreamId::Clicks, 4), (StreamId::Impressions, 3)].into();
        let after: Layout = [(StreamId::Clicks, 7), (StreamId::Impressions, 3)].into();
        for peers in 1..5 {
            let mut all = Vec::new();
            for i in 0..peers {
                let old = assignment(&before, i, peers);
                let new = assignment(&after, i, peers);
                assert!(old.iter().all(|p| new.contains(p)), "worker {i} of {peers}");
                all.extend(new);
            }
            all.sort();
            let n = all.len();
            all.dedup();
            assert_eq!((n, all.len()), (10, 10));
        }
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
