//! The Kafka source operator: partitions in, event-time-stamped records out, offsets checkpointed
//! behind the state they produced.
//!
//! Each worker reads the partitions assigned to it through a [`PartitionReader`] (rdkafka in the
//! binary, a vector in tests), decodes each message with the pipeline's decoder, and emits it at
//! its event time: `tick(ts)` clamped between the worker's watermark and `now + max_skew`.
//! The watermark is the oldest partition's newest event time minus the allowed lateness while
//! there is a backlog, and wall-clock time minus the lateness once caught up, so frontiers advance
//! when partitions are idle. Late records keep their true time in the data and are stamped at the
//! watermark.
//!
//! Offsets follow the protocol of [`crate::checkpoint`]: every checkpoint interval the source
//! snapshots its read positions together with `M`, the largest time it has emitted; the snapshot
//! is persisted once the `progress` probe (placed after every stateful operator, and after the
//! [`crate::deliver`] fences of the sinks) has passed `M`. Each persisted snapshot also records
//! its wall-clock time per partition ([`position_time_key`]), and the campaigns topic's
//! positions are persisted too although it is always read from its beginning: together they
//! tell a restarted process which dead letters it may already have published.
//!
//! While [`SourceControl::hold`] is set (the sinks are congested) the source reads nothing and
//! its watermark stays put: backpressure reaches the inputs, never the serving path.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use crate::checkpoint::{codec, RestoreError, StateBatch, StateStore, Ticket};
use crate::records::{RawMessage, StreamId};
use crate::routing::KeyError;
use crate::time::EventTime;

/// A non-blocking reader of the partitions a worker owns.
pub trait PartitionReader: 'static {
    /// Appends up to `max` messages that are available now to `out`.
    fn poll(&mut self, max: usize, out: &mut Vec<RawMessage>);
    /// The partitions read.
    fn partitions(&self) -> Vec<(StreamId, i32)>;
    /// Whether the reader has reached the end its partitions had when it started; until then
    /// an empty poll means "not fetched yet", not "idle".
    fn caught_up(&self) -> bool {
        true
    }
    /// Partitions that still have a start-up backlog to read (they hold the watermark back
    /// until they have delivered a record).
    fn lagging(&self) -> Vec<(StreamId, i32)> {
        Vec::new()
    }
    /// `offsets` (the next offset to read of each partition) are now durable in a checkpoint:
    /// a Kafka reader commits them to its consumer group for lag monitoring. They are never
    /// read back from there; the checkpoint stays the source of truth.
    fn checkpointed(&mut self, _offsets: &BTreeMap<(StreamId, i32), i64>) {}
}

/// A reader over messages held in memory, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct VecReader {
    /// Messages not read yet, in order.
    pub messages: VecDeque<RawMessage>,
    /// Partitions reported.
    pub owned: Vec<(StreamId, i32)>,
}

impl PartitionReader for VecReader {
    fn poll(&mut self, max: usize, out: &mut Vec<RawMessage>) {
        let n = max.min(self.messages.len());
        out.extend(self.messages.drain(..n));
    }
    fn partitions(&self) -> Vec<(StreamId, i32)> {
        self.owned.clone()
    }
}

/// Timing of a source.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Granularity of timely timestamps, ms.
    pub tick_ms: u64,
    /// Allowed out-of-orderness before a record counts as late, ms.
    pub lateness_ms: i64,
    /// Event times further than this in the future are stamped at `now + max_skew_ms`.
    pub max_skew_ms: i64,
    /// How often read positions are snapshotted, ms of wall-clock time. It must be the stateful
    /// operators' checkpoint interval too (`pipeline.checkpoint.interval_ms` sets both): a stop
    /// moves the source past their next checkpoint boundary, computed from this value, and its
    /// final snapshot waits for that checkpoint.
    pub checkpoint_interval_ms: i64,
    /// Messages read per activation.
    pub batch: usize,
    /// Messages read per activation while this worker is serving ad requests
    /// ([`ServingActivity`]): what one activation reads flows through the whole graph in the
    /// worker's next steps, and a request waits behind those steps, so a serving worker reads
    /// less at a time.
    pub serving_batch: usize,
    /// Sleep between polls when caught up.
    pub poll_interval: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            tick_ms: 100,
            lateness_ms: 2_000,
            max_skew_ms: 60_000,
            checkpoint_interval_ms: 1_000,
            batch: 4_096,
            serving_batch: 512,
            poll_interval: Duration::from_millis(2),
        }
    }
}

/// The milliseconds-since-epoch clock a source reads (injectable for tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(|| EventTime::now().millis())
}

/// Controls a running source.
#[derive(Clone, Debug, Default)]
pub struct SourceControl {
    /// Set to stop reading; the source then takes a final snapshot and releases its capability.
    pub stop: Arc<AtomicBool>,
    /// Becomes true once the source stopped and its final offsets are durable.
    pub finished: Rc<Cell<bool>>,
    /// Becomes true the first time the source has read everything available.
    pub caught_up: Arc<AtomicBool>,
    /// Once `caught_up`: the latest time of the records emitted until then (at most the time
    /// then), so that whoever needs everything read at start-up applied can wait for a probe
    /// to pass it.
    pub caught_up_time: Arc<AtomicU64>,
    /// Set while the sinks cannot keep up (backpressure): the source reads nothing and holds
    /// its watermark until it is cleared.
    pub hold: Arc<AtomicBool>,
    /// When this worker last answered an ad request (its source then reads
    /// [`SourceConfig::serving_batch`] at a time).
    pub serving: ServingActivity,
}

/// When a worker's serving operator last answered requests, shared with that worker's source.
#[derive(Clone, Debug, Default)]
pub struct ServingActivity(Rc<Cell<Option<Instant>>>);

impl ServingActivity {
    /// A worker counts as serving for this long after it answered a request.
    pub const RECENT: Duration = Duration::from_secs(1);

    /// Notes that requests were answered at `at`.
    pub fn answered(&self, at: Instant) {
        self.0.set(Some(at));
    }

    /// Whether requests were answered within [`ServingActivity::RECENT`] before `now`.
    pub fn serving(&self, now: Instant) -> bool {
        self.0
            .get()
            .is_some_and(|at| now.saturating_duration_since(at) < Self::RECENT)
    }
}

/// Key under which the next offset of `stream`/`partition` is checkpointed.
pub fn offset_key(stream: StreamId, partition: i32) -> Vec<u8> {
    format!("offsets/{}/{partition}", stream.as_str()).into_bytes()
}

/// Key under which the wall-clock time (ms) of the snapshot that last confirmed the offset of
/// `stream`/`partition` is checkpointed: every message at or after that offset was read after
/// that time. (The binary's dead-letter gate reads back what was published since.)
pub fn position_time_key(stream: StreamId, partition: i32) -> Vec<u8> {
    format!("{POSITION_TIMES}{}/{partition}", stream.as_str()).into_bytes()
}

const POSITION_TIMES: &str = "positions-at/";

/// Reads the checkpointed snapshot times back (see [`position_time_key`]).
pub fn restore_position_times(
    store: &dyn StateStore,
) -> Result<BTreeMap<(StreamId, i32), i64>, RestoreError> {
    let mut out = BTreeMap::new();
    for (k, v) in store.scan(POSITION_TIMES.as_bytes())? {
        let key = String::from_utf8_lossy(&k[POSITION_TIMES.len()..]).into_owned();
        let parsed = key.split_once('/').and_then(|(stream, partition)| {
            let stream = StreamId::ALL.into_iter().find(|id| id.as_str() == stream)?;
            Some((stream, partition.parse::<i32>().ok()?))
        });
        let Some((stream, partition)) = parsed else {
            return Err(RestoreError::value(&k, "not a stream/partition key"));
        };
        out.insert((stream, partition), codec::decode_number::<i64>(&k, &v)?);
    }
    Ok(out)
}

/// Reads the checkpointed next offsets back (the campaigns topic's too: it is read from its
/// beginning on every start, and its offsets say how far its dead letters were published); an entry that cannot be read, or a store read
/// error, is an error naming the key (never a partition silently read from the start).
pub fn restore_offsets(
    store: &dyn StateStore,
) -> Result<BTreeMap<(StreamId, i32), i64>, RestoreError> {
    let mut out = BTreeMap::new();
    for (k, v) in store.scan(b"offsets/")? {
        let key = std::str::from_utf8(&k).unwrap_or_default();
        let mut parts = key.split('/').skip(1);
        let stream = parts
            .next()
            .and_then(|s| StreamId::ALL.into_iter().find(|id| id.as_str() == s));
        let partition = parts.next().and_then(|p| p.parse::<i32>().ok());
        let (Some(stream), Some(partition), None) = (stream, partition, parts.next()) else {
            return Err(KeyError::new(&k, "expected offsets/{stream}/{partition}").into());
        };
        out.insert((stream, partition), codec::decode_number::<i64>(&k, &v)?);
    }
    Ok(out)
}

fn tick(ms: i64, tick_ms: u64) -> u64 {
    let ms = ms.max(0) as u64;
    ms - ms % tick_ms.max(1)
}

/// Next offset to read, per partition.
type Positions = BTreeMap<(StreamId, i32), i64>;

struct Snapshot {
    positions: Positions,
    max_time: u64,
    taken_ms: i64,
}

/// Builds a source operator reading `reader`, decoding with `decode`.
#[allow(clippy::too_many_arguments)]
pub fn kafka_source<'scope, R, D, F>(
    scope: Scope<'scope, u64>,
    name: &str,
    mut reader: R,
    config: SourceConfig,
    clock: Clock,
    store: Arc<dyn StateStore>,
    progress: ProbeHandle<u64>,
    control: SourceControl,
    mut decode: F,
) -> StreamVec<'scope, u64, D>
where
    R: PartitionReader,
    D: timely::ExchangeData,
    F: FnMut(RawMessage) -> (Option<EventTime>, D) + 'static,
{
    source(scope, name, move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(capability);
        let mut buffer = Vec::with_capacity(config.batch);
        let mut positions: BTreeMap<(StreamId, i32), i64> = BTreeMap::new();
        let mut newest: BTreeMap<(StreamId, i32), i64> = BTreeMap::new();
        let mut persisted: BTreeMap<(StreamId, i32), i64> = BTreeMap::new();
        let mut pending: VecDeque<Snapshot> = VecDeque::new();
        let mut in_flight: Option<(Ticket, Positions)> = None;
        let mut max_time = 0u64;
        let mut last_snapshot = clock();
        let mut stopped = false;
        let mut by_time: BTreeMap<u64, Vec<D>> = BTreeMap::new();
        move |output| {
            let now = clock();
            let mut full = false;
            if let (Some(c), false) = (cap.as_mut(), stopped) {
                // Backpressure: while the sinks are congested nothing is read, and the watermark
                // stays where it is (what is not read yet must not turn late meanwhile).
                let held = control.hold.load(Ordering::Relaxed);
                let batch = if control.serving.serving(Instant::now()) {
                    config.serving_batch.clamp(1, config.batch.max(1))
                } else {
                    config.batch
                };
                buffer.clear();
                if !held {
                    reader.poll(batch, &mut buffer);
                }
                full = buffer.len() >= batch;
                let caught_up = !held && !full && reader.caught_up();
                let floor = *c.time();
                let ceiling = tick(now + config.max_skew_ms, config.tick_ms).max(floor);
                for msg in buffer.drain(..) {
                    let part = (msg.stream, msg.partition);
                    let offset = msg.offset;
                    let (ts, record) = decode(msg);
                    let time = ts
                        .map(|t| tick(t.millis(), config.tick_ms))
                        .unwrap_or(floor)
                        .clamp(floor, ceiling);
                    max_time = max_time.max(time);
                    positions.insert(part, offset + 1);
                    if let Some(t) = ts {
                        let e = newest.entry(part).or_insert(i64::MIN);
                        *e = (*e).max(t.millis());
                    }
                    by_time.entry(time).or_default().push(record);
                }
                if caught_up && !control.caught_up.load(Ordering::Acquire) {
                    // Records stamped in the future (a producer's clock ahead) are not waited
                    // for: everything up to now is.
                    let upto = max_time.min(tick(now, config.tick_ms));
                    control.caught_up_time.store(upto, Ordering::Release);
                    control.caught_up.store(true, Ordering::Release);
                }
                // One session per distinct time keeps records batched through the graph.
                for (time, mut records) in std::mem::take(&mut by_time) {
                    output
                        .session(&c.delayed(&time))
                        .give_container(&mut records);
                }
                // Watermark: wall clock when caught up, else the slowest partition's newest time.
                let wall = now - config.lateness_ms;
                let watermark = if caught_up {
                    newest.clear();
                    wall
                } else if reader.lagging().iter().any(|p| !newest.contains_key(p)) {
                    // A partition with backlog has not delivered anything yet: its times are
                    // unknown, so the watermark cannot move.
                    i64::MIN
                } else {
                    newest
                        .values()
                        .copied()
                        .min()
                        .map_or(i64::MIN, |t| t - config.lateness_ms)
                        .min(wall)
                };
                let w = tick(watermark, config.tick_ms);
                if w > *c.time() && !held {
                    c.downgrade(&w);
                }
                let stopping = control.stop.load(Ordering::Relaxed);
                if stopping || now - last_snapshot >= config.checkpoint_interval_ms {
                    last_snapshot = now;
                    pending.push_back(Snapshot {
                        positions: positions.clone(),
                        max_time,
                        taken_ms: now,
                    });
                }
                if stopping {
                    // Move past everything emitted (and past the next checkpoint boundary of
                    // the stateful operators) so they flush, and hold on until the final
                    // offsets are durable.
                    let beyond = max_time + 2 * config.checkpoint_interval_ms.max(1) as u64 + 1;
                    if beyond > *c.time() {
                        c.downgrade(&beyond);
                    }
                    stopped = true;
                }
            }
            // Persist the newest snapshot that every stateful operator has made durable.
            if let Some((ticket, written)) = &in_flight {
                match ticket.poll() {
                    Some(true) => {
                        reader.checkpointed(written);
                        persisted.extend(written.iter().map(|(k, v)| (*k, *v)));
                        in_flight = None;
                    }
                    Some(false) => panic!("state store failed to persist Kafka offsets"),
                    None => {}
                }
            }
            if in_flight.is_none() {
                let mut ready = None;
                while let Some(s) = pending.front() {
                    if progress.less_equal(&s.max_time) && !progress.done() {
                        break;
                    }
                    ready = pending.pop_front();
                }
                if let Some(s) = ready {
                    // Every partition read so far is confirmed at the snapshot's time, changed
                    // or not, so the times stay recent on idle partitions too.
                    let mut batch = StateBatch::default();
                    for (st, p) in s.positions.keys() {
                        batch.put(position_time_key(*st, *p), &s.taken_ms);
                    }
                    let changed: BTreeMap<_, _> = s
                        .positions
                        .into_iter()
                        .filter(|(k, v)| persisted.get(k) != Some(v))
                        .collect();
                    for ((s, p), o) in &changed {
                        batch.put(offset_key(*s, *p), o);
                    }
                    if !batch.is_empty() {
                        in_flight = Some((store.persist(batch), changed));
                    }
                }
            }
            let idle = in_flight.is_none() && pending.is_empty();
            if stopped && idle {
                cap = None;
                control.finished.set(true);
            } else if full {
                activator.activate();
            } else {
                activator.activate_after(config.poll_interval);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemoryStore;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::{Capture, Probe};

    fn msg(partition: i32, offset: i64, ts: i64) -> RawMessage {
        RawMessage {
            stream: StreamId::Clicks,
            partition,
            offset,
            key: None,
            payload: Some(ts.to_string().into_bytes()),
            timestamp_ms: None,
        }
    }

    /// Records are stamped at their event time, late ones at the watermark, and offsets are
    /// checkpointed once the probe has passed them.
    #[test]
    fn stamps_event_time_and_checkpoints_offsets_behind_the_probe() {
        let store = Arc::new(MemoryStore::default());
        let store2 = store.clone();
        let captured = timely::example(move |scope| {
            let probe = ProbeHandle::new();
            let reader = VecReader {
                messages: vec![msg(0, 10, 5_000), msg(0, 11, 7_000), msg(1, 3, 6_000)].into(),
                owned: vec![(StreamId::Clicks, 0), (StreamId::Clicks, 1)],
            };
            let clock: Clock = Arc::new(|| 10_000);
            let control = SourceControl::default();
            control.stop.store(true, Ordering::Relaxed);
            let config = SourceConfig {
                checkpoint_interval_ms: 0,
                ..SourceConfig::default()
            };
            let stream = kafka_source(
                scope,
                "Test",
                reader,
                config,
                clock,
                store2,
                probe.clone(),
                control,
                |m| {
                    let ts: i64 = String::from_utf8_lossy(m.payload.as_deref().unwrap())
                        .parse()
                        .unwrap();
                    (Some(EventTime(ts)), (m.partition, m.offset))
                },
            );
            stream.probe_with(&probe).capture()
        });
        let got = captured.extract();
        let stamped: Vec<(u64, (i32, i64))> = got
            .into_iter()
            .flat_map(|(t, d)| d.into_iter().map(move |x| (t, x)))
            .collect();
        assert_eq!(
            stamped,
            vec![(5_000, (0, 10)), (6_000, (1, 3)), (7_000, (0, 11))]
        );
        let offsets = restore_offsets(&*store).unwrap();
        assert_eq!(offsets.get(&(StreamId::Clicks, 0)), Some(&12));
        assert_eq!(offsets.get(&(StreamId::Clicks, 1)), Some(&4));
        let times = restore_position_times(&*store).unwrap();
        assert_eq!(times.get(&(StreamId::Clicks, 0)), Some(&10_000));
        assert_eq!(times.get(&(StreamId::Clicks, 1)), Some(&10_000));
    }

    /// The caught-up time is the latest record time emitted by then, but never past the clock:
    /// a record stamped in the future is not waited for.
    #[test]
    fn the_caught_up_time_is_the_latest_record_up_to_now() {
        for (times, expected) in [(vec![5_000, 7_000], 7_000), (vec![5_000, 40_000], 10_000)] {
            let (stop, caught_up, caught_up_time) = (
                Arc::new(AtomicBool::new(true)),
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicU64::new(0)),
            );
            let (seen, seen_time) = (caught_up.clone(), caught_up_time.clone());
            timely::example(move |scope| {
                let control = SourceControl {
                    stop,
                    caught_up,
                    caught_up_time,
                    ..SourceControl::default()
                };
                let reader = VecReader {
                    messages: times
                        .iter()
                        .enumerate()
                        .map(|(i, t)| msg(0, i as i64, *t))
                        .collect(),
                    owned: vec![(StreamId::Clicks, 0)],
                };
                let probe = ProbeHandle::new();
                kafka_source(
                    scope,
                    "Test",
                    reader,
                    SourceConfig::default(),
                    Arc::new(|| 10_000),
                    Arc::new(MemoryStore::default()),
                    probe.clone(),
                    control,
                    |m| {
                        let ts: i64 = String::from_utf8_lossy(m.payload.as_deref().unwrap())
                            .parse()
                            .unwrap();
                        (Some(EventTime(ts)), ())
                    },
                )
                .probe_with(&probe);
            });
            assert!(seen.load(Ordering::Acquire));
            assert_eq!(seen_time.load(Ordering::Acquire), expected);
        }
    }

    /// Runs a source over `messages` with `hold` set as given and stop requested; what it
    /// emitted and the offsets it checkpointed.
    fn run_held(messages: Vec<RawMessage>, hold: bool) -> (usize, BTreeMap<(StreamId, i32), i64>) {
        let store = Arc::new(MemoryStore::default());
        let store2 = store.clone();
        let captured = timely::example(move |scope| {
            let probe = ProbeHandle::new();
            let reader = VecReader {
                messages: messages.into(),
                owned: vec![(StreamId::Campaigns, 0), (StreamId::Clicks, 0)],
            };
            let control = SourceControl::default();
            control.hold.store(hold, Ordering::Relaxed);
            control.stop.store(true, Ordering::Relaxed);
            let config = SourceConfig {
                checkpoint_interval_ms: 0,
                ..SourceConfig::default()
            };
            kafka_source(
                scope,
                "Held",
                reader,
                config,
                Arc::new(|| 10_000),
                store2,
                probe.clone(),
                control,
                |m| (Some(EventTime(5_000)), m.offset),
            )
            .probe_with(&probe)
            .capture()
        });
        let n = captured.extract().iter().map(|(_, d)| d.len()).sum();
        (n, restore_offsets(&*store).unwrap())
    }

    /// A reader that notes the most messages each poll asked for, and stops its source once
    /// everything was read.
    struct Asked {
        inner: VecReader,
        asked: Arc<std::sync::Mutex<Vec<usize>>>,
        stop: Arc<AtomicBool>,
    }

    impl PartitionReader for Asked {
        fn poll(&mut self, max: usize, out: &mut Vec<RawMessage>) {
            if let Ok(mut asked) = self.asked.lock() {
                asked.push(max);
            }
            self.inner.poll(max, out);
            if self.inner.messages.is_empty() {
                self.stop.store(true, Ordering::Relaxed);
            }
        }
        fn partitions(&self) -> Vec<(StreamId, i32)> {
            self.inner.partitions()
        }
    }

    /// What each poll of a source over ten messages asked for, the worker serving or not, and
    /// how many messages it emitted.
    fn polls(serving: bool) -> (Vec<usize>, usize) {
        let asked: Arc<std::sync::Mutex<Vec<usize>>> = Arc::default();
        let asked_in = asked.clone();
        let captured = timely::example(move |scope| {
            let probe = ProbeHandle::new();
            let control = SourceControl::default();
            let reader = Asked {
                inner: VecReader {
                    messages: (0..10).map(|i| msg(0, i, 5_000)).collect(),
                    owned: vec![(StreamId::Clicks, 0)],
                },
                asked: asked_in,
                stop: control.stop.clone(),
            };
            if serving {
                // Answered "later than now": serving for the whole test, however slow it runs.
                control
                    .serving
                    .answered(Instant::now() + Duration::from_secs(3_600));
            }
            let config = SourceConfig {
                batch: 8,
                serving_batch: 3,
                ..SourceConfig::default()
            };
            kafka_source(
                scope,
                "Polled",
                reader,
                config,
                Arc::new(|| 10_000),
                Arc::new(MemoryStore::default()),
                probe.clone(),
                control,
                |m| (Some(EventTime(5_000)), m.offset),
            )
            .probe_with(&probe)
            .capture()
        });
        let emitted = captured.extract().iter().map(|(_, d)| d.len()).sum();
        let asked = asked.lock().map(|a| a.clone()).unwrap_or_default();
        (asked, emitted)
    }

    #[test]
    fn a_serving_worker_reads_smaller_batches() {
        let (asked, emitted) = polls(false);
        assert_eq!(emitted, 10);
        assert_eq!(asked.first(), Some(&8));
        assert!(asked.iter().all(|n| *n == 8), "{asked:?}");
        let (asked, emitted) = polls(true);
        assert_eq!(emitted, 10, "smaller batches, nothing left out");
        assert!(asked.len() >= 4, "ten messages three at a time: {asked:?}");
        assert!(asked.iter().all(|n| *n == 3), "{asked:?}");
    }

    #[test]
    fn serving_activity_lasts_a_second_after_the_last_answer() {
        let activity = ServingActivity::default();
        let t = Instant::now();
        assert!(!activity.serving(t), "never answered");
        activity.answered(t);
        assert!(activity.serving(t));
        assert!(activity.serving(t + ServingActivity::RECENT - Duration::from_millis(1)));
        assert!(!activity.serving(t + ServingActivity::RECENT));
        // A clone is the same worker's activity.
        let seen = activity.clone();
        activity.answered(t + Duration::from_secs(5));
        assert!(seen.serving(t + Duration::from_secs(5)));
    }

    /// A held source reads nothing; the campaigns topic's positions are checkpointed like the
    /// others' (they say how far its dead letters went out).
    #[test]
    fn a_held_source_reads_nothing_and_campaign_positions_are_checkpointed() {
        let campaign = RawMessage {
            stream: StreamId::Campaigns,
            ..msg(0, 7, 5_000)
        };
        let (n, offsets) = run_held(vec![campaign.clone(), msg(0, 3, 5_000)], false);
        assert_eq!(n, 2);
        assert_eq!(offsets.get(&(StreamId::Campaigns, 0)), Some(&8));
        assert_eq!(offsets.get(&(StreamId::Clicks, 0)), Some(&4));
        let (n, offsets) = run_held(vec![campaign, msg(0, 3, 5_000)], true);
        assert_eq!(n, 0, "held: nothing read");
        assert!(offsets.is_empty());
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;
    use crate::checkpoint::testing::{put, BrokenStore};
    use crate::checkpoint::MemoryStore;

    #[test]
    fn an_unreadable_offset_stops_the_restore_naming_its_key() {
        for (key, value) in [
            (offset_key(StreamId::Clicks, 0), b"ten".to_vec()),
            (b"offsets/bananas/0".to_vec(), b"1".to_vec()),
            (b"offsets/clicks/x".to_vec(), b"1".to_vec()),
            (b"offsets/clicks/0/1".to_vec(), b"1".to_vec()),
        ] {
            let store = MemoryStore::default();
            put(
                &store,
                vec![
                    (offset_key(StreamId::Impressions, 3), b"7".to_vec()),
                    (key.clone(), value),
                ],
            );
            let e = restore_offsets(&store).unwrap_err();
            assert!(
                e.to_string().contains(&crate::routing::show_key(&key)),
                "{e}"
            );
        }
        let store = BrokenStore {
            broken: b"offsets/".to_vec(),
            ..BrokenStore::default()
        };
        assert!(matches!(
            restore_offsets(&store),
            Err(RestoreError::Scan(_))
        ));
    }
}
