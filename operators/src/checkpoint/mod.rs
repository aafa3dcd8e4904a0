//! The one checkpoint protocol every stateful operator follows.
//!
//! ```text
//!   sources ──records at event-time t──▶ stateful operator ──▶ probe ──▶ sources
//!      │                                    │  holds a capability at the time of its
//!      │ snapshot (offsets, max time M)     │  last durable checkpoint; when its input
//!      ▼                                    ▼  frontier passes a boundary it writes its
//!   persisted once the probe passes M     dirty state, then downgrades to that frontier
//! ```
//!
//! A [`CheckpointGate`] is the operator's half: it keeps the output frontier at the last
//! *durable* checkpoint, so the probe that sources watch passes a time only once every
//! stateful operator has made all records up to that time durable. The source's half is in
//! [`crate::source`]: Kafka offsets are written only behind that probe, never ahead of state.
//! Writes go through a [`StateStore`] that runs them off the worker thread (RocksDB in the
//! binary, [`MemoryStore`] in tests) and answers with a [`Ticket`].
//!
//! The operators of one worker take turns: a gate whose boundary passed while another gate of
//! the same worker collected its state less than [`CHECKPOINT_TURN_GAP`] ago waits that long
//! (the boundary is the same for all of them, so without turns every stateful operator of the
//! worker would encode its dirty state in one step, and an ad request waiting on that worker's
//! serving operator would wait for all of it). Waiting only moves the checkpoint to a later
//! frontier, as if the frontier had arrived later.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::operators::Capability;
use timely::scheduling::Activator;

pub mod codec;

/// Writes one operator makes durable together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateBatch {
    /// Keys written.
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys deleted.
    pub deletes: Vec<Vec<u8>>,
}

impl StateBatch {
    /// Writes `value` under `key` in the checkpoint format ([`codec`]).
    ///
    /// # Panics
    /// When the value cannot be encoded (a bug in a state type, never bad input): the worker
    /// stops rather than write a checkpoint that leaves the entry out, and a restart resumes from
    /// the last durable checkpoint.
    pub fn put<T: serde::Serialize + ?Sized>(&mut self, key: Vec<u8>, value: &T) {
        match codec::encode(value) {
            Ok(v) => self.puts.push((key, v)),
            Err(e) => panic!(
                "{e} (state key {}): stopping before a partial checkpoint",
                show_key(&key)
            ),
        }
    }

    /// Writes `value`, already in the checkpoint format ([`codec`], header included), under
    /// `key`: for state that keeps parts of its values encoded.
    pub fn put_encoded(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.puts.push((key, value));
    }

    /// How many writes and deletes it holds.
    pub fn len(&self) -> usize {
        self.puts.len() + self.deletes.len()
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// Completion of a [`StateStore::persist`].
#[derive(Clone, Debug, Default)]
pub struct Ticket(Arc<AtomicU8>);

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

impl Ticket {
    /// A ticket already done.
    pub fn done() -> Self {
        let t = Ticket::default();
        t.complete(true);
        t
    }

    /// Marks the write as durable (`true`) or failed.
    pub fn complete(&self, ok: bool) {
        self.0
            .store(if ok { DONE } else { FAILED }, Ordering::Release);
    }

    /// `Some(true)` once durable, `Some(false)` if the write failed, `None` while pending.
    pub fn poll(&self) -> Option<bool> {
        match self.0.load(Ordering::Acquire) {
            PENDING => None,
            DONE => Some(true),
            _ => Some(false),
        }
    }
}

/// A store could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("reading the state store under {prefix}: {message}")]
pub struct ScanError {
    /// The prefix scanned, printable.
    pub prefix: String,
    /// The store's error.
    pub message: String,
}

impl ScanError {
    /// A failed scan of `prefix`.
    pub fn new(prefix: &[u8], message: impl Into<String>) -> Self {
        ScanError {
            prefix: show_key(prefix),
            message: message.into(),
        }
    }
}

/// Why an operator's state could not be restored. Never skipped: the process stops with it, and
/// a supervisor's restart (or an operator's hand) has to deal with the store first.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The store failed to read.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// An entry's key cannot be decoded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An entry was written in a checkpoint format this build does not read.
    #[error(
        "state entry {key} is in value format v{found}; this build reads v{reads} (and \
         migrates the JSON state of earlier versions). Run the adstream release that wrote the \
         state, or start from an empty state directory (its Kafka offsets go with it)"
    )]
    Format {
        /// The entry's key, printable.
        key: String,
        /// The version found.
        found: u8,
        /// The version this build reads and writes.
        reads: u8,
    },
    /// An entry's value cannot be decoded.
    #[error("state entry {key}: {message}")]
    Value {
        /// The entry's key, printable.
        key: String,
        /// What is wrong with its value.
        message: String,
    },
}

impl RestoreError {
    /// The value under `key` is in format version `found`, which this build does not read.
    pub fn format(key: &[u8], found: u8) -> Self {
        RestoreError::Format {
            key: show_key(key),
            found,
            reads: codec::VALUE_VERSION,
        }
    }

    /// The value stored under `key` cannot be read.
    pub fn value(key: &[u8], message: impl std::fmt::Display) -> Self {
        RestoreError::Value {
            key: show_key(key),
            message: message.to_string(),
        }
    }
}

/// Decodes a JSON value stored under `key` (the values of releases before [`codec`]).
fn json_value<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, RestoreError> {
    serde_json::from_slice(value).map_err(|e| RestoreError::value(key, e))
}

/// Decodes a value stored under `key` as the text of a number (or of anything
/// [`std::str::FromStr`]): the numbers of releases before [`codec`].
fn text_value<T>(key: &[u8], value: &[u8]) -> Result<T, RestoreError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = std::str::from_utf8(value).map_err(|e| RestoreError::value(key, e))?;
    text.parse()
        .map_err(|e| RestoreError::value(key, format!("{text:?}: {e}")))
}

/// Key-value entries, as a scan returns them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Durable key-value state with atomic batches.
pub trait StateStore: Send + Sync + 'static {
    /// Every entry whose key starts with `prefix` (used at start-up to restore), or the store's
    /// read error: never a silently shortened list.
    fn scan(&self, prefix: &[u8]) -> Result<Entries, ScanError>;
    /// Makes `batch` durable atomically, off the caller's thread.
    fn persist(&self, batch: StateBatch) -> Ticket;
}

/// An in-memory store for tests and benchmarks.
#[derive(Default, Debug)]
pub struct MemoryStore {
    data: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    /// A copy of the contents.
    pub fn snapshot(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.data.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

impl StateStore for MemoryStore {
    fn scan(&self, prefix: &[u8]) -> Result<Entries, ScanError> {
        let data = self
            .data
            .lock()
            .map_err(|_| ScanError::new(prefix, "a writer panicked holding the store"))?;
        Ok(data
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn persist(&self, batch: StateBatch) -> Ticket {
        if let Ok(mut data) = self.data.lock() {
            for (k, v) in batch.puts {
                data.insert(k, v);
            }
            for k in batch.deletes {
                data.remove(&k);
            }
            Ticket::done()
        } else {
            let t = Ticket::default();
            t.complete(false);
            t
        }
    }
}

/// How long after one gate of a worker collected its state another one of that worker waits
/// before collecting its own ([`CheckpointGate::step`]): the worker's other operators (serving
/// first) get a step in between.
pub const CHECKPOINT_TURN_GAP: Duration = Duration::from_millis(1);

thread_local! {
    /// When a gate on this thread (one timely worker) last finished collecting a checkpoint.
    static LAST_COLLECTED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// How much longer a gate on this thread must wait for its turn at `now` (`None`: it may
/// collect now).
fn turn_wait(now: Instant) -> Option<Duration> {
    let last = LAST_COLLECTED.with(Cell::get)?;
    CHECKPOINT_TURN_GAP
        .checked_sub(now.saturating_duration_since(last))
        .filter(|wait| !wait.is_zero())
}

/// The operator's half of the protocol: holds the output at the last durable checkpoint.
pub struct CheckpointGate {
    cap: Option<Capability<u64>>,
    interval: u64,
    next_boundary: u64,
    in_flight: Option<(Ticket, Option<u64>)>,
    activator: Activator,
}

impl CheckpointGate {
    /// A gate holding `cap` (the operator's initial capability), checkpointing every `interval`
    /// units of event time.
    pub fn new(cap: Capability<u64>, interval: u64, activator: Activator) -> Self {
        let next_boundary = cap.time().saturating_add(interval.max(1));
        CheckpointGate {
            cap: Some(cap),
            interval: interval.max(1),
            next_boundary,
            in_flight: None,
            activator,
        }
    }

    /// Call on every activation with the minimum of the operator's input frontiers (`None` once
    /// the inputs are complete). When the frontier has passed the next boundary, `collect` is
    /// asked for the dirty state (given that frontier) and it is written through `store`,
    /// unless another gate of this worker collected less than [`CHECKPOINT_TURN_GAP`] ago:
    /// then the gate asks to be activated once the gap is over and tries again then (the final
    /// checkpoint, inputs complete, never waits). Returns the frontier of the checkpoint that
    /// just became durable, if one did.
    pub fn step(
        &mut self,
        frontier: Option<u64>,
        store: &dyn StateStore,
        collect: impl FnOnce(u64) -> StateBatch,
    ) -> Option<u64> {
        let mut durable = self.settle();
        if self.in_flight.is_some() || self.cap.is_none() {
            return durable;
        }
        let due = frontier.is_none_or(|f| f >= self.next_boundary);
        if due {
            if frontier.is_some() {
                if let Some(wait) = turn_wait(Instant::now()) {
                    self.activator.activate_after(wait);
                    return durable;
                }
            }
            let batch = collect(frontier.unwrap_or(u64::MAX));
            LAST_COLLECTED.with(|last| last.set(Some(Instant::now())));
            let ticket = store.persist(batch);
            if let Some(f) = frontier {
                self.next_boundary = (f / self.interval + 1) * self.interval;
            }
            self.in_flight = Some((ticket, frontier));
            // A synchronous store finishes at once; else the next activation settles it.
            durable = self.settle().or(durable);
        }
        durable
    }

    /// Completes the write in flight, if it is durable: moves the capability to its frontier.
    fn settle(&mut self) -> Option<u64> {
        let (ticket, at) = self.in_flight.as_ref()?;
        match ticket.poll() {
            None => {
                self.activator.activate_after(Duration::from_millis(1));
                None
            }
            Some(false) => panic!(
                "state store failed to persist a checkpoint; a restart resumes from the last one"
            ),
            Some(true) => {
                let at = *at;
                match at {
                    Some(t) => {
                        if let Some(cap) = self.cap.as_mut() {
                            if *cap.time() < t {
                                cap.downgrade(&t);
                            }
                        }
                    }
                    None => self.cap = None,
                }
                self.in_flight = None;
                Some(at.unwrap_or(u64::MAX))
            }
        }
    }

    /// The capability held at the last durable checkpoint, while the gate is open.
    pub fn capability(&self) -> Option<&Capability<u64>> {
        self.cap.as_ref()
    }

    /// Whether the gate has released its capability (inputs complete and final state durable).
    pub fn is_closed(&self) -> bool {
        self.cap.is_none()
    }
}

/// Keeps an output capability at the input `frontier` (the first time in it), or drops it once
/// the input is complete: for operators that emit at times their input has not passed.
pub fn follow_frontier(cap: &mut Option<Capability<u64>>, frontier: Option<&u64>) {
    match frontier {
        Some(t) => {
            if let Some(c) = cap.as_mut() {
                if c.time() < t {
                    c.downgrade(t);
                }
            }
        }
        None => *cap = None,
    }
}

/// Stores for restore tests: one that fails to read.
/// A state key that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("state key {key}: {message}")]
pub struct KeyError {
    /// The key, printable ([`show_key`]).
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl KeyError {
    /// An error about `key`.
    pub fn new(key: &[u8], message: impl Into<String>) -> Self {
        KeyError {
            key: show_key(key),
            message: message.into(),
        }
    }
}

/// A key as it can be printed in a log line or an error: quoted, with non-printable bytes
/// escaped (`\0`, `\n`, `\xff`...).
pub fn show_key(key: &[u8]) -> String {
    format!("\"{}\"", key.escape_ascii())
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A [`MemoryStore`] whose scans of keys under `broken` fail, as a disk read error would.
    #[derive(Default)]
    pub(crate) struct BrokenStore {
        pub(crate) inner: MemoryStore,
        pub(crate) broken: Vec<u8>,
    }

    impl StateStore for BrokenStore {
        fn scan(&self, prefix: &[u8]) -> Result<Entries, ScanError> {
            if prefix.starts_with(&self.broken) || self.broken.starts_with(prefix) {
                return Err(ScanError::new(prefix, "injected read error"));
            }
            self.inner.scan(prefix)
        }

        fn persist(&self, batch: StateBatch) -> Ticket {
            self.inner.persist(batch)
        }
    }

    /// Puts `entries` into `store`.
    pub(crate) fn put(store: &dyn StateStore, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        let t = store.persist(StateBatch {
            puts: entries,
            deletes: vec![],
        });
        assert_eq!(t.poll(), Some(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_waits_its_turn_after_another_collected() {
        let t = Instant::now();
        LAST_COLLECTED.with(|l| l.set(None));
        assert_eq!(turn_wait(t), None, "nobody collected yet");
        LAST_COLLECTED.with(|l| l.set(Some(t)));
        assert_eq!(turn_wait(t), Some(CHECKPOINT_TURN_GAP));
        assert_eq!(
            turn_wait(t + CHECKPOINT_TURN_GAP / 2),
            Some(CHECKPOINT_TURN_GAP - CHECKPOINT_TURN_GAP / 2)
        );
        assert_eq!(turn_wait(t + CHECKPOINT_TURN_GAP), None);
        let steps = timely::example(|scope| {
            let mut steps = Vec::new();
            timely::dataflow::operators::generic::operator::source::<
                _,
                timely::container::CapacityContainerBuilder<Vec<u64>>,
                _,
                _,
            >(scope, "Gates", |cap, info| {
                let store = MemoryStore::default();
                let mut gate = CheckpointGate::new(cap, 10, scope.activator_for(info.address));
                let mut collected = 0;
                let mut step = |gate: &mut CheckpointGate, frontier: Option<u64>| {
                    let before = collected;
                    let durable = gate.step(frontier, &store, |_| {
                        collected += 1;
                        StateBatch::default()
                    });
                    (collected > before, durable)
                };
                // Another gate of this worker just collected (a time ahead: however slowly
                // this runs, the turn is not over).
                let ahead = Instant::now() + Duration::from_secs(3_600);
                LAST_COLLECTED.with(|l| l.set(Some(ahead)));
                steps.push(step(&mut gate, Some(20)));
                // Its turn is over: it collects, at the frontier it has then.
                LAST_COLLECTED.with(|l| l.set(None));
                steps.push(step(&mut gate, Some(25)));
                assert!(
                    LAST_COLLECTED.with(Cell::get).is_some(),
                    "noted for the others"
                );
                // The final checkpoint never waits.
                LAST_COLLECTED.with(|l| l.set(Some(ahead)));
                steps.push(step(&mut gate, None));
                |_output| {}
            });
            steps
        });
        assert_eq!(
            steps,
            vec![(false, None), (true, Some(25)), (true, Some(u64::MAX))]
        );
    }

    #[test]
    fn memory_store_scans_by_prefix() {
        let s = MemoryStore::default();
        let t = s.persist(StateBatch {
            puts: vec![
                (b"a/1".to_vec(), b"x".to_vec()),
                (b"b/1".to_vec(), b"y".to_vec()),
            ],
            deletes: vec![],
        });
        assert_eq!(t.poll(), Some(true));
        assert_eq!(s.scan(b"a/"), Ok(vec![(b"a/1".to_vec(), b"x".to_vec())]));
        s.persist(StateBatch {
            puts: vec![],
            deletes: vec![b"a/1".to_vec()],
        });
        assert!(s.scan(b"a/").unwrap().is_empty());
    }
}
