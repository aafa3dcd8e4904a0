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

use adstream_operators::checkpoint::{StateBatch, StateStore, Ticket};
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
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<(StateBatch, Ticket)>();
        let db_writer = db.clone();
        let writer = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                let mut write_opts = WriteOptions::default();
                write_opts.set_sync(fsync);
                let write = |pending: &[(StateBatch, Ticket)]| {
                    let mut batch = WriteBatch::default();
                    for (b, _) in pending {
                        for (k, v) in &b.puts {
                            batch.put(k, v);
                        }
                        for k in &b.deletes {
                            batch.delete(k);
                        }
                    }
                    db_writer.write_opt(batch, &write_opts)
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

impl StateStore for RocksStore {
    fn scan(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for item in self.db.iterator(rocksdb::IteratorMode::From(
            prefix,
            rocksdb::Direction::Forward,
        )) {
            match item {
                Ok((k, v)) if k.starts_with(prefix) => out.push((k.to_vec(), v.to_vec())),
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "state scan failed");
                    break;
                }
            }
        }
        out
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
        assert_eq!(s.scan(b"a/"), vec![(b"a/1".to_vec(), b"x".to_vec())]);
        drop(s);
        assert!(matches!(
            RocksStore::open(dir.path(), 0, 2, false, None),
            Err(StoreError::Shape { .. })
        ));
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
