//! The state store: RocksDB on its own thread.
//!
//! Operators hand [`StateBatch`]es to [`RocksStore::persist`]; a writer thread takes every batch
//! waiting, writes them as one atomic RocksDB write (group commit) and completes their tickets,
//! so no dataflow or async thread ever blocks on disk. One store per process, under
//! `STATE_DIR/process-I`.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use adstream_operators::checkpoint::{Entries, ScanError, StateBatch, StateStore, Ticket};
use adstream_operators::routing::{migrate_v0, FAMILIES, FORMAT_KEY, FORMAT_VERSION};
use rocksdb::{Options, WriteBatch, WriteOptions, DB};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused.
    #[error("state store at {path}: {source}")]
    Rocks {
        /// Directory.
        path: String,
        /// Cause.
        source: rocksdb::Error,
    },
    /// The writer thread could not start.
    #[error("starting the state writer thread: {0}")]
    Thread(std::io::Error),
    /// The store's key format is not one this build reads, or a version-0 key cannot be
    /// migrated (see `adstream_operators::routing`).
    #[error("state store at {path}: {message}")]
    Format {
        /// Directory.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The directory holds the state of a differently shaped cluster.
    #[error("state store at {path} belongs to a cluster of {found} process(es); this run has {expected}. Use the same --processes, or a fresh --state-dir")]
    Shape {
        /// Directory.
        path: String,
        /// Processes recorded.
        found: String,
        /// Processes now.
        expected: usize,
    },
}

/// Observes checkpoint writes (for metrics).
pub type WriteObserver = Arc<dyn Fn(usize, std::time::Duration) + Send + Sync>;

/// RocksDB-backed [`StateStore`].
pub struct RocksStore {
    db: Arc<DB>,
    tx: Option<mpsc::Sender<(StateBatch, Ticket)>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit.
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl RocksStore {
    /// Opens (or creates) the store of process `process` of `processes` under `dir`.
    pub fn open(
        dir: &Path,
        process: usize,
        processes: usize,
        fsync: bool,
        observer: Option<WriteObserver>,
    ) -> Result<Self, StoreError> {
        let path = dir.join(format!("process-{process}"));
        let name = path.display().to_string();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let db = DB::open(&opts, &path).map_err(|source| StoreError::Rocks {
            path: name.clone(),
            source,
        })?;
        match db
            .get(b"meta/processes")
            .map_err(|source| StoreError::Rocks {
                path: name.clone(),
                source,
            })? {
            Some(v) if v != processes.to_string().as_bytes() => {
                return Err(StoreError::Shape {
                    path: name,
                    found: String::from_utf8_lossy(&v).into_owned(),
                    expected: processes,
                })
            }
            Some(_) => {}
            None => db
                .put(b"meta/processes", processes.to_string())
                .map_err(|source| StoreError::Rocks {
                    path: name.clone(),
                    source,
                })?,
        }
        prepare_format(&db, &name)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<(StateBatch, Ticket)>();
        let db_writer = db.clone();
        let writer = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                let mut write_opts = WriteOptions::default();
                write_opts.set_sync(fsync);
                let write = |pending: &[(StateBatch, Ticket)]| {
                    db_writer.write_opt(sorted_batch(pending), &write_opts)
                };
                if let Err(e) = write_until_failure(rx, write, observer.as_deref()) {
                    // Fail-stop: the process-wide hook (`crate::fail_stop`) ends the process.
                    panic!("checkpoint write failed: {e}; no later write is attempted, and a restart resumes from the last checkpoint");
                }
            })
            .map_err(StoreError::Thread)?;
        Ok(RocksStore {
            db,
            tx: Some(tx),
            writer: Some(writer),
        })
    }
}

/// Every entry under `prefix`, or RocksDB's read error.
fn scan_db(db: &DB, prefix: &[u8]) -> Result<Entries, ScanError> {
    let mut out = Vec::new();
    for item in db.iterator(rocksdb::IteratorMode::From(
        prefix,
        rocksdb::Direction::Forward,
    )) {
        let (k, v) = item.map_err(|e| ScanError::new(prefix, e.to_string()))?;
        if !k.starts_with(prefix) {
            break;
        }
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

/// Checks the store's key format ([`FORMAT_KEY`]); a store without one is migrated from
/// version 0 and marked, in one atomic write (see `adstream_operators::routing`).
fn prepare_format(db: &DB, path: &str) -> Result<(), StoreError> {
    let rocks = |source| StoreError::Rocks {
        path: path.to_string(),
        source,
    };
    let refuse = |message: String| StoreError::Format {
        path: path.to_string(),
        message,
    };
    match db.get(FORMAT_KEY).map_err(rocks)? {
        Some(v) if v == FORMAT_VERSION.as_bytes() => Ok(()),
        Some(v) => Err(refuse(format!(
            "its key format is {:?}; this adstream reads format {FORMAT_VERSION}. Run the \
             adstream that wrote it, or start from a fresh --state-dir",
            String::from_utf8_lossy(&v)
        ))),
        None => {
            let mut entries = Vec::new();
            for family in FAMILIES {
                entries.extend(
                    scan_db(db, family.prefix.as_bytes()).map_err(|e| refuse(e.to_string()))?,
                );
            }
            let migration = migrate_v0(entries).map_err(|e| {
                refuse(format!(
                    "migrating from key format 0 to {FORMAT_VERSION}: {e}"
                ))
            })?;
            if !migration.is_empty() {
                tracing::info!(
                    keys = migration.puts.len(),
                    "state keys migrated to format {FORMAT_VERSION}"
                );
            }
            let mut batch = WriteBatch::default();
            for k in &migration.deletes {
                batch.delete(k);
            }
            for (k, v) in &migration.puts {
                batch.put(k, v);
            }
            batch.put(FORMAT_KEY, FORMAT_VERSION);
            let mut sync = WriteOptions::default();
            sync.set_sync(true);
            db.write_opt(batch, &sync).map_err(rocks)
        }
    }
}

impl StateStore for RocksStore {
    fn scan(&self, prefix: &[u8]) -> Result<Entries, ScanError> {
        scan_db(&self.db, prefix)
    }

    fn persist(&self, batch: StateBatch) -> Ticket {
        let ticket = Ticket::default();
        let sent = self.tx.as_ref().map(|tx| tx.send((batch, ticket.clone())));
        if !matches!(sent, Some(Ok(()))) {
            ticket.complete(false);
        }
        ticket
    }
}

/// The writes of `pending` as one batch in key order. The memtable is a skip list that
/// remembers where its last insert went, so keys that arrive in order are inserted next to each
/// other instead of being searched for from the top: state keys start with a routing hash, and
/// searching for each at random was half of the writer's time. The sort is stable and the
/// batches are taken in order (each one's puts, then its deletes), so where a key is written
/// more than once the last write still wins.
fn sorted_batch(pending: &[(StateBatch, Ticket)]) -> WriteBatch {
    let mut ops: Vec<(&[u8], Option<&[u8]>)> = Vec::with_capacity(
        pending
            .iter()
            .map(|(b, _)| b.puts.len() + b.deletes.len())
            .sum(),
    );
    for (b, _) in pending {
        ops.extend(
            b.puts
                .iter()
                .map(|(k, v)| (k.as_slice(), Some(v.as_slice()))),
        );
        ops.extend(b.deletes.iter().map(|k| (k.as_slice(), None)));
    }
    ops.sort_by(|a, b| a.0.cmp(b.0));
    let mut batch = WriteBatch::default();
    for (k, v) in ops {
        match v {
            Some(v) => batch.put(k, v),
            None => batch.delete(k),
        }
    }
    batch
}

/// The writer's loop: takes every batch waiting, writes them as one (`write`), completes their
/// tickets, until the channel closes (`Ok`) or a write fails. A failed write completes its
/// tickets, and those of the batches queued behind it, as failed and ends the loop (`Err`):
/// nothing is written after it, so the store never holds a later checkpoint over a lost one.
/// The channel closes with the loop, so a later [`StateStore::persist`] fails at once.
fn write_until_failure<E: std::fmt::Display>(
    rx: mpsc::Receiver<(StateBatch, Ticket)>,
    mut write: impl FnMut(&[(StateBatch, Ticket)]) -> Result<(), E>,
    observer: Option<&(dyn Fn(usize, std::time::Duration) + Send + Sync)>,
) -> Result<(), String> {
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        pending.extend(rx.try_iter());
        let started = Instant::now();
        let entries = pending
            .iter()
            .map(|(b, _)| b.puts.len() + b.deletes.len())
            .sum();
        match write(&pending) {
            Ok(()) => {
                if let Some(observe) = observer {
                    observe(entries, started.elapsed());
                }
                for (_, ticket) in pending {
                    ticket.complete(true);
                }
            }
            Err(e) => {
                // Logged before any ticket fails: a worker that sees its ticket fail ends the
                // process, maybe before this thread does.
                tracing::error!(error = %e, entries, "checkpoint write failed: the state writer stops");
                for (_, ticket) in pending.into_iter().chain(rx.try_iter()) {
                    ticket.complete(false);
                }
                return Err(e.to_string());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_durable_and_scannable_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStore::open(dir.path(), 0, 1, false, None).unwrap();
            let t = s.persist(StateBatch {
                puts: vec![
                    (b"a/1".to_vec(), b"x".to_vec()),
                    (b"b/1".to_vec(), b"y".to_vec()),
                ],
                deletes: vec![],
            });
            while t.poll().is_none() {
                std::thread::yield_now();
            }
            assert_eq!(t.poll(), Some(true));
        }
        let s = RocksStore::open(dir.path(), 0, 1, false, None).unwrap();
        assert_eq!(s.scan(b"a/"), Ok(vec![(b"a/1".to_vec(), b"x".to_vec())]));
        assert_eq!(
            s.scan(FORMAT_KEY).unwrap(),
            vec![(FORMAT_KEY.to_vec(), FORMAT_VERSION.as_bytes().to_vec())]
        );
        drop(s);
        assert!(matches!(
            RocksStore::open(dir.path(), 0, 2, false, None),
            Err(StoreError::Shape { .. })
        ));
    }

    fn raw_db(dir: &Path) -> DB {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        DB::open(&opts, dir.join("process-0")).unwrap()
    }

    #[test]
    fn a_version_0_store_is_migrated_on_open() {
        use adstream_operators::routing::{LEDGER_SPEND, PACING};
        let dir = tempfile::tempdir().unwrap();
        let spend = |campaign: &str| {
            let mut k = format!("ledger/spend/{:016x}/", 3).into_bytes();
            k.extend_from_slice(format!("{campaign}\u{0}2026-01-02").as_bytes());
            k
        };
        {
            let db = raw_db(dir.path());
            db.put(spend("plain"), "1").unwrap();
            db.put(spend("50%"), "2").unwrap();
            db.put(spend("a\u{0}b"), "3").unwrap();
            db.put(format!("pacing/{:016x}/tab\there", 4), "{}")
                .unwrap();
            db.put("offsets/clicks/0", "9").unwrap();
        }
        let s = RocksStore::open(dir.path(), 0, 1, false, None).unwrap();
        let mut spends: Vec<(Vec<String>, Vec<u8>)> = s
            .scan(LEDGER_SPEND.prefix.as_bytes())
            .unwrap()
            .into_iter()
            .map(|(k, v)| (LEDGER_SPEND.parse(&k).unwrap().1, v))
            .collect();
        spends.sort();
        let row = |c: &str, v: &str| {
            (
                vec![c.to_string(), "2026-01-02".to_string()],
                v.as_bytes().to_vec(),
            )
        };
        assert_eq!(
            spends,
            vec![row("50%", "2"), row("a\u{0}b", "3"), row("plain", "1")]
        );
        let pacing = s.scan(PACING.prefix.as_bytes()).unwrap();
        assert_eq!(
            PACING.parse(&pacing[0].0).unwrap(),
            (4, vec!["tab\there".to_string()])
        );
        assert_eq!(s.scan(b"offsets/").unwrap().len(), 1);
        drop(s);
        // Marked: reopening migrates nothing again (`50%25` stays `50%`).
        let s = RocksStore::open(dir.path(), 0, 1, false, None).unwrap();
        assert_eq!(s.scan(LEDGER_SPEND.prefix.as_bytes()).unwrap().len(), 3);
        assert!(s
            .scan(LEDGER_SPEND.prefix.as_bytes())
            .unwrap()
            .iter()
            .any(|(k, _)| LEDGER_SPEND.parse(k).unwrap().1[0] == "50%"));
    }

    #[test]
    fn an_ambiguous_or_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_db(dir.path());
            let mut k = format!("labels/{:016x}/", 3).into_bytes();
            k.extend_from_slice(b"r\x00x\x001");
            db.put(k, "{}").unwrap();
        }
        let e = RocksStore::open(dir.path(), 0, 1, false, None)
            .err()
            .unwrap();
        assert!(matches!(e, StoreError::Format { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("labels/0000000000000003/r\\x00x\\x001"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        raw_db(dir.path()).put(FORMAT_KEY, "2").unwrap();
        let e = RocksStore::open(dir.path(), 0, 1, false, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("key format is \"2\""), "{e}");
    }

    proptest::proptest! {
        /// Writes taken in key order leave what writing them in their order would: the last
        /// put or delete of each key wins, across the batches of one write and within one.
        #[test]
        fn a_sorted_write_leaves_the_last_write_of_each_key(
            batches in proptest::collection::vec(
                (
                    proptest::collection::vec((0u8..6, 0u8..100), 0..6),
                    proptest::collection::vec(0u8..6, 0..4),
                ),
                1..5,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let db = DB::open_default(dir.path()).unwrap();
            let mut model = std::collections::BTreeMap::new();
            let pending: Vec<(StateBatch, Ticket)> = batches
                .into_iter()
                .map(|(puts, deletes)| {
                    let batch = StateBatch {
                        puts: puts.iter().map(|(k, v)| (vec![*k], vec![*v])).collect(),
                        deletes: deletes.iter().map(|k| vec![*k]).collect(),
                    };
                    for (k, v) in &batch.puts {
                        model.insert(k.clone(), v.clone());
                    }
                    for k in &batch.deletes {
                        model.remove(k);
                    }
                    (batch, Ticket::default())
                })
                .collect();
            db.write(sorted_batch(&pending)).unwrap();
            let stored: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = db
                .iterator(rocksdb::IteratorMode::Start)
                .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                .collect();
            proptest::prop_assert_eq!(stored, model);
        }
    }

    /// Regression: a failed write was followed by later ones (a later checkpoint over a lost
    /// one), and the store went on as if nothing had happened.
    #[test]
    fn the_writer_stops_at_the_first_failed_write() {
        let (tx, rx) = mpsc::channel::<(StateBatch, Ticket)>();
        let batch = |k: &str| StateBatch {
            puts: vec![(k.as_bytes().to_vec(), b"v".to_vec())],
            deletes: vec![],
        };
        let tickets: Vec<Ticket> = (0..3).map(|_| Ticket::default()).collect();
        tx.send((batch("a"), tickets[0].clone())).unwrap();
        let mut written = Vec::new();
        let mut calls = 0;
        let writer = std::thread::spawn({
            let tickets = tickets.clone();
            let tx = tx.clone();
            move || {
                let result = write_until_failure(
                    rx,
                    |pending: &[(StateBatch, Ticket)]| {
                        calls += 1;
                        if calls == 1 {
                            written.extend(pending.iter().map(|(b, _)| b.clone()));
                            // The next two arrive while this one is being written.
                            tx.send((batch("b"), tickets[1].clone())).unwrap();
                            tx.send((batch("c"), tickets[2].clone())).unwrap();
                            Ok(())
                        } else {
                            Err("No space left on device")
                        }
                    },
                    None,
                );
                (result, written, calls)
            }
        });
        let (result, written, calls) = writer.join().unwrap();
        assert_eq!(result, Err("No space left on device".to_string()));
        assert_eq!(written, vec![batch("a")]);
        assert_eq!(
            calls, 2,
            "b and c are written together, once, and fail together"
        );
        assert_eq!(tickets[0].poll(), Some(true));
        assert_eq!(tickets[1].poll(), Some(false));
        assert_eq!(tickets[2].poll(), Some(false));
        // The loop is over: a batch sent now is never written.
        assert!(tx.send((batch("d"), Ticket::default())).is_err());
    }
}
