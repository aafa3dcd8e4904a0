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
                while let Ok(first) = rx.recv() {
                    let mut pending = vec![first];
                    pending.extend(rx.try_iter());
                    let started = Instant::now();
                    let mut batch = WriteBatch::default();
                    let mut entries = 0;
                    for (b, _) in &pending {
                        for (k, v) in &b.puts {
                            batch.put(k, v);
                        }
                        for k in &b.deletes {
                            batch.delete(k);
                        }
                        entries += b.puts.len() + b.deletes.len();
                    }
                    let ok = match db_writer.write_opt(batch, &write_opts) {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(error = %e, "checkpoint write failed");
                            false
                        }
                    };
                    if let Some(observe) = &observer {
                        observe(entries, started.elapsed());
                    }
                    for (_, ticket) in pending {
                        ticket.complete(ok);
                    }
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
}
