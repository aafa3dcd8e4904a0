//! Fail-stop: a pipeline that loses a thread ends the whole process, at once and non-zero.
//!
//! The dataflow's guarantees hold only while every worker, the state writer and the API run
//! together: a worker that panicked freezes its share of the ledger (its peers keep serving
//! ads against a budget view that no longer moves), and a checkpoint that failed to write
//! must not be followed by later ones. So the process does not try to limp on: the first
//! panic on any thread, or a worker that ends with an error, logs what failed and exits with
//! a documented status, and the supervisor (Kubernetes, systemd) restarts it from its last
//! checkpoint, which is exactly-once by construction.
//!
//! | status | meaning |
//! | --- | --- |
//! | [`EXIT_PIPELINE_FAILED`] (70) | a thread of the pipeline panicked, a worker ended with an error, or a checkpoint write failed |
//! | [`EXIT_CLUSTER_BROKEN`] (75) | a peer process of the timely cluster is gone |
//! | `runtime::EXIT_DRAIN_TIMEOUT` (71) | after SIGTERM/SIGINT, the drain and final checkpoint did not finish within 45 s (the broker is unreachable, so outputs cannot be delivered) |
//!
//! The process ends with `_exit`: no destructor or `atexit` handler runs while other threads
//! still use RocksDB, Kafka clients or sockets (they would only race the exit, and could
//! turn the documented status into a crash). Logs go to stderr unbuffered; stdout and stderr
//! are flushed before the exit.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use timely::worker::Worker;

/// Exit status of a process that lost its cluster: a peer process is gone.
pub const EXIT_CLUSTER_BROKEN: i32 = 75;

/// Exit status of a process that failed: a panic on one of its threads, a worker that ended
/// with an error, or a failed checkpoint write (sysexits' `EX_SOFTWARE`).
pub const EXIT_PIPELINE_FAILED: i32 = 70;

/// Environment variable that makes worker `I` panic as it starts (fault injection for tests
/// of fail-stop; never set it in production).
pub const FAULT_PANIC_WORKER: &str = "ADSTREAM_FAULT_PANIC_WORKER";

/// Set by the first failure: any later one waits for that exit instead of racing it.
static EXITING: AtomicBool = AtomicBool::new(false);

/// The exit status for a panic on `thread` with `message`: a broken timely cluster (its
/// communication threads, or a worker reading a channel they poisoned) is
/// [`EXIT_CLUSTER_BROKEN`]; anything else is [`EXIT_PIPELINE_FAILED`].
pub fn exit_status(thread: Option<&str>, message: &str) -> i32 {
    let communication_thread = thread
        .is_some_and(|name| name.starts_with("timely:send-") || name.starts_with("timely:recv-"));
    // timely's own wording ("some downstream crates sniff out" the first one, in its source).
    let communication_error = message.starts_with("timely communication error")
        || message.starts_with("MergeQueue poisoned");
    if communication_thread || communication_error {
        EXIT_CLUSTER_BROKEN
    } else {
        EXIT_PIPELINE_FAILED
    }
}

/// Installs the process-wide hook (once; later calls do nothing): after the default report
/// (message, location, backtrace when `RUST_BACKTRACE` is set), a panic on any thread logs
/// what failed and ends the process with [`exit_status`].
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Only the first failure is reported: those it causes on other threads (workers
            // whose checkpoint fails with the state writer, say) wait for its exit.
            first_or_wait();
            default(info);
            let thread = std::thread::current();
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(a panic without a message)".into());
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let status = exit_status(thread.name(), &message);
            let what = if status == EXIT_CLUSTER_BROKEN {
                format!(
                    "the timely cluster broke (a peer process is gone?): {message}; exiting so that every process restarts from its checkpoint"
                )
            } else {
                format!(
                    "thread `{}` panicked at {location}: {message}; exiting so that the process restarts from its last checkpoint",
                    thread.name().unwrap_or("unnamed")
                )
            };
            report_and_exit(status, &what);
        }));
    });
}

/// Logs `what` and ends the process with `status`. Only the first caller exits: a thread
/// that fails while the process is already ending waits for that exit.
pub fn exit(status: i32, what: &str) -> ! {
    first_or_wait();
    report_and_exit(status, what)
}

/// Returns to the first caller only; any later one waits for the process to end.
fn first_or_wait() {
    if EXITING.swap(true, Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

fn report_and_exit(status: i32, what: &str) -> ! {
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(status, "fail-stop: {what}");
    } else {
        // No subscriber, or one that filters errors out: the reason is never lost.
        let _ = writeln!(
            std::io::stderr(),
            "adstream: fail-stop (exit status {status}): {what}"
        );
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` only ends the process; it touches no memory of this one.
    unsafe { libc::_exit(status) }
}

/// Wraps a worker's body: a worker that ends with an error ends the process (its peers could
/// not make progress without it), with [`EXIT_PIPELINE_FAILED`]. Honours
/// [`FAULT_PANIC_WORKER`].
pub fn worker<F>(body: F) -> impl Fn(&mut Worker) -> Result<(), String> + Send + Sync + 'static
where
    F: Fn(&mut Worker) -> Result<(), String> + Send + Sync + 'static,
{
    let inject = std::env::var(FAULT_PANIC_WORKER).ok();
    move |worker: &mut Worker| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("a worker");
        if let Some(index) = &inject {
            if name.strip_prefix("timely:work-") == Some(index.as_str()) {
                panic!("injected fault: {FAULT_PANIC_WORKER}={index}");
            }
        }
        let result = body(worker);
        if let Err(e) = &result {
            exit(
                EXIT_PIPELINE_FAILED,
                &format!("{name} ended with an error: {e}"),
            );
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_cluster_is_told_apart_from_a_failed_pipeline() {
        for (thread, message) in [
            (Some("timely:recv-1"), "anything"),
            (Some("timely:send-0"), "anything"),
            (
                Some("timely:work-0"),
                "timely communication error: reading data: connection reset",
            ),
            (Some("timely:work-1"), "MergeQueue poisoned."),
        ] {
            assert_eq!(
                exit_status(thread, message),
                EXIT_CLUSTER_BROKEN,
                "{thread:?}"
            );
        }
        for (thread, message) in [
            (
                Some("timely:work-0"),
                "state store failed to persist a checkpoint",
            ),
            (Some("state-writer"), "checkpoint write failed"),
            (Some("trainer"), "index out of bounds"),
            (Some("api"), "called `Option::unwrap()` on a `None` value"),
            (None, "anything"),
        ] {
            assert_eq!(
                exit_status(thread, message),
                EXIT_PIPELINE_FAILED,
                "{thread:?}"
            );
        }
    }
}
