//! Liveness (`GET /healthz`): every worker thread of this process is still stepping.
//!
//! A worker that panics, or ends with an error, ends the process ([`crate::fail_stop`]), so a
//! live process has all its workers; what is left to report is a worker that is stuck (a step
//! that never returns). Each worker beats after every step (at least every 20 ms while idle);
//! one that has not beaten for the stall limit makes `/healthz` 503, naming it, so that the
//! supervisor restarts the process. A worker that has not finished its first step yet (the
//! restore of a large state) is not held to the limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a worker may go without finishing a step before the process is reported dead.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The heartbeats of this process's workers.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    stall_limit: Duration,
    /// Per local worker: 1 + milliseconds from `started` to its last beat; 0 before its first.
    workers: Mutex<Vec<Arc<AtomicU64>>>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(STALL_LIMIT)
    }
}

/// A worker's side: [`Heartbeat::beat`] after every step.
#[derive(Debug)]
pub struct Heartbeat {
    started: Instant,
    last: Arc<AtomicU64>,
}

impl Heartbeat {
    /// The worker has just finished a step.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    fn beat_at(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.started).as_millis() as u64;
        self.last.store(ms + 1, Ordering::Relaxed);
    }
}

impl Health {
    /// No worker yet; a worker is stalled after `stall_limit` without a beat.
    pub fn new(stall_limit: Duration) -> Self {
        Health {
            started: Instant::now(),
            stall_limit,
            workers: Mutex::default(),
        }
    }

    /// The heartbeat of local worker `index`.
    pub fn register(&self, index: usize) -> Heartbeat {
        let last = Arc::new(AtomicU64::new(0));
        if let Ok(mut workers) = self.workers.lock() {
            if workers.len() <= index {
                workers.resize_with(index + 1, || Arc::new(AtomicU64::new(0)));
            }
            workers[index] = last.clone();
        }
        Heartbeat {
            started: self.started,
            last,
        }
    }

    /// `Err` naming the workers that have not stepped within the stall limit at `now`.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let Ok(workers) = self.workers.lock() else {
            return Err("the worker heartbeats are poisoned".into());
        };
        let now_ms = now.saturating_duration_since(self.started).as_millis() as u64;
        let stalled: Vec<String> = workers
            .iter()
            .enumerate()
            .filter_map(|(i, last)| {
                let last = last.load(Ordering::Relaxed);
                let silent = Duration::from_millis(now_ms.saturating_sub(last.checked_sub(1)?));
                (silent > self.stall_limit).then(|| {
                    format!(
                        "worker {i} has not finished a step for {}s",
                        silent.as_secs()
                    )
                })
            })
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(stalled.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_stops_stepping_is_named_and_one_not_started_is_not() {
        let health = Health::new(Duration::from_secs(10));
        let t0 = health.started;
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (w0, w1) = (health.register(0), health.register(1));
        // Neither has finished a step: both restoring, however long it takes.
        assert_eq!(health.check(at(600)), Ok(()));
        w0.beat_at(at(1));
        w1.beat_at(at(1));
        assert_eq!(health.check(at(11)), Ok(()));
        w0.beat_at(at(20));
        let err = health.check(at(25)).unwrap_err();
        assert_eq!(err, "worker 1 has not finished a step for 24s");
        w1.beat_at(at(25));
        assert_eq!(health.check(at(25)), Ok(()));
    }
}
