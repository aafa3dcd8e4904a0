//! The HTTP server: hyper's HTTP/1 connections under limits, and a shutdown with a deadline.
//!
//! ```text
//!   accept ──▶ a permit of `max_connections`? ──no──▶ 503 at once, close (a few at a time)
//!                  │ yes
//!                  ▼
//!   connection task: hyper HTTP/1 ◀── the router (axum)
//!                  │  its clock: waiting for a request head  → closed after header_read_timeout
//!                  │             idle after a response       → closed after idle_timeout
//!                  │             a request under way         → no limit here
//!                  ▼
//!   shutdown: stop accepting; idle connections close, requests under way finish; after
//!             `shutdown_grace` every connection left is dropped
//! ```
//!
//! axum's `serve` holds a connection for as long as its client likes: a client that sends
//! half a request head, or keeps a connection open and silent, holds a task and a socket
//! forever, and a graceful shutdown waits for it. Here every connection carries a
//! [`ConnClock`] that knows what it is waiting for, and the accept loop sheds connections
//! beyond the cap with an immediate 503, so that a flood of slow clients neither holds the
//! process open nor slows the clients that are served.
//!
//! The timeouts follow nginx's `client_header_timeout` and `keepalive_timeout`: a new
//! connection must deliver its first request head within `header_read_timeout`; a kept-alive
//! connection may then stay silent for `idle_timeout`, and once the next request's first
//! byte arrives its head must be complete within `header_read_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// The server's limits (`[api]` in the pipeline file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A request head must be complete within this long of the connection opening, or of the
    /// first byte of a later request.
    pub header_read_timeout: Duration,
    /// A kept-alive connection silent for this long after its last response is closed.
    pub idle_timeout: Duration,
    /// Open connections at most; more are answered 503 and closed at once.
    pub max_connections: usize,
    /// After the shutdown signal, requests under way get this long before connections drop.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    /// The defaults of a pipeline file's `[api]`.
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1_024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Connections shed at the same time at most; beyond them a connection is closed unanswered.
const SHEDDING_AT_ONCE: usize = 64;
/// How long a shed connection may take to read its 503 before it is closed.
const SHED_LINGER: Duration = Duration::from_secs(1);

/// Why the server closed a connection it had accepted (the `reason` label of
/// `adstream_http_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The request head did not arrive in time.
    HeaderTimeout,
    /// The kept-alive connection stayed silent too long.
    IdleTimeout,
    /// Beyond `max_connections`: answered 503.
    Overloaded,
    /// Still open at the end of the shutdown grace.
    Shutdown,
}

impl Closed {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Overloaded => "overloaded",
            Closed::Shutdown => "shutdown",
        }
    }
}

/// What a connection waits for, since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// For the rest of a request head (since the connection opened or the head's first byte).
    Head(Instant),
    /// For the server: this many requests are under way.
    Busy(usize),
    /// For a next request, since the last response.
    Idle(Instant),
}

/// A connection's deadline: plain logic, driven by the connection's reads and requests.
#[derive(Debug, Clone)]
pub struct ConnClock {
    phase: Phase,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl ConnClock {
    /// A connection opened at `opened`: its first request head is due within the header
    /// timeout.
    pub fn new(opened: Instant, limits: &Limits) -> Self {
        ConnClock {
            phase: Phase::Head(opened),
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Bytes arrived at `now`: an idle connection starts a request head. Returns whether the
    /// deadline moved.
    pub fn read(&mut self, now: Instant) -> bool {
        if let Phase::Idle(_) = self.phase {
            self.phase = Phase::Head(now);
            true
        } else {
            false
        }
    }

    /// A request head is complete: the request is under way.
    pub fn request(&mut self) {
        self.phase = match self.phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        };
    }

    /// A request was answered at `now`; the last one under way makes the connection idle.
    /// Returns whether the deadline moved.
    pub fn response(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Busy(n) if n > 1 => {
                self.phase = Phase::Busy(n - 1);
                false
            }
            _ => {
                self.phase = Phase::Idle(now);
                true
            }
        }
    }

    /// When the connection is to be closed, and why (`None` while a request is under way).
    pub fn deadline(&self) -> Option<(Instant, Closed)> {
        match self.phase {
            Phase::Head(since) => Some((since + self.header_read_timeout, Closed::HeaderTimeout)),
            Phase::Idle(since) => Some((since + self.idle_timeout, Closed::IdleTimeout)),
            Phase::Busy(_) => None,
        }
    }

    /// Why the connection is to be closed at `now`, if it is.
    pub fn expired(&self, now: Instant) -> Option<Closed> {
        self.deadline()
            .and_then(|(at, why)| (now >= at).then_some(why))
    }
}

/// A connection's clock, shared by its socket, its requests and its task.
struct Watch {
    clock: Mutex<ConnClock>,
    /// Woken when the deadline moves (the task then sleeps to the new one).
    moved: Notify,
}

impl Watch {
    fn update(&self, change: impl FnOnce(&mut ConnClock) -> bool) {
        let moved = self
            .clock
            .lock()
            .map(|mut c| change(&mut c))
            .unwrap_or(false);
        if moved {
            self.moved.notify_one();
        }
    }

    fn deadline(&self) -> Option<(Instant, Closed)> {
        self.clock.lock().ok().and_then(|c| c.deadline())
    }

    fn expired(&self, now: Instant) -> Option<Closed> {
        self.clock.lock().ok().and_then(|c| c.expired(now))
    }
}

/// A socket that tells its clock when bytes arrive.
struct Watched {
    stream: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = Instant::now();
            self.watch.update(|c| c.read(now));
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Marks a request under way until dropped (answered, or abandoned with its connection).
struct UnderWay(Arc<Watch>);

impl UnderWay {
    fn start(watch: &Arc<Watch>) -> Self {
        watch.update(|c| {
            c.request();
            false
        });
        UnderWay(watch.clone())
    }
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.update(|c| c.response(now));
    }
}

/// Counts a connection open until dropped (closed, or aborted at the end of the grace).
struct Open(prometheus::IntGauge);

impl Open {
    fn count(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves, then drains the
/// connections for at most `limits.shutdown_grace` and drops the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shedding = Arc::new(Semaphore::new(SHEDDING_AT_ONCE));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (router, limits, metrics) = (router.clone(), limits.clone(), metrics.clone());
                            let stopping = stopping.clone();
                            connections.spawn(async move {
                                let _open = Open::count(&metrics.http_connections);
                                connection(stream, router, &limits, &metrics, stopping).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            metrics.http_connections_closed.with_label_values(&[Closed::Overloaded.as_str()]).inc();
                            if let Ok(permit) = shedding.clone().try_acquire_owned() {
                                tokio::spawn(async move {
                                    shed(stream).await;
                                    drop(permit);
                                });
                            }
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off rather than spin.
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let left = connections.len();
        tracing::warn!(
            left,
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "API connections still open at the end of the shutdown grace: dropped"
        );
        metrics
            .http_connections_closed
            .with_label_values(&[Closed::Shutdown.as_str()])
            .inc_by(left as u64);
        connections.shutdown().await;
    }
}

/// Serves each router on its listener as [`serve`] does, under the same `limits`, until
/// `shutdown` resolves; then every listener drains (each within `limits.shutdown_grace`) and
/// this returns once all have.
pub async fn serve_all(
    listeners: Vec<(TcpListener, Router)>,
    limits: Limits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let mut servers = JoinSet::new();
    for (listener, router) in listeners {
        let mut stopped = stopped.clone();
        servers.spawn(serve(
            listener,
            router,
            limits.clone(),
            metrics.clone(),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
    }
    shutdown.await;
    let _ = stop.send(true);
    while servers.join_next().await.is_some() {}
}

/// Serves one connection until it ends, its clock expires, or (after the shutdown signal) it
/// has finished its request under way.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: &Limits,
    metrics: &Metrics,
    mut stopping: watch::Receiver<bool>,
) {
    let watch = Arc::new(Watch {
        clock: Mutex::new(ConnClock::new(Instant::now(), limits)),
        moved: Notify::new(),
    });
    let io = TokioIo::new(Watched {
        stream,
        watch: watch.clone(),
    });
    let router = TowerToHyperService::new(router);
    let request_watch = watch.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let under_way = UnderWay::start(&request_watch);
        let answer = router.call(request);
        async move {
            let response = answer.await;
            drop(under_way);
            response
        }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *stopping.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = watch.deadline();
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "API connection ended with an error");
                }
                return;
            }
            _ = sleep_until(deadline.map(|(at, _)| at)) => {
                if let Some(why) = watch.expired(Instant::now()) {
                    tracing::debug!(reason = why.as_str(), "closing an API connection");
                    metrics.http_connections_closed.with_label_values(&[why.as_str()]).inc();
                    return;
                }
            }
            _ = watch.moved.notified() => {}
            _ = stopping.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Answers a connection beyond the cap with 503 and closes it. The request is not read; what
/// the client sends is drained for a moment so that closing does not reset the connection
/// before the client has read the answer.
async fn shed(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":"overloaded: too many open connections; retry later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(SHED_LINGER, async {
        let mut unsent = answer.as_bytes();
        while !unsent.is_empty() {
            if stream.writable().await.is_err() {
                return;
            }
            match stream.try_write(unsent) {
                Ok(n) => unsent = &unsent[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        let closed = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx)).await;
        if closed.is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut sink) {
                Ok(0) => return,
                Ok(n) => drained += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
            shutdown_grace: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_new_connection_has_the_header_timeout_for_its_first_head() {
        let t0 = Instant::now();
        let mut clock = ConnClock::new(t0, &limits());
        let due = (t0 + Duration::from_secs(5), Closed::HeaderTimeout);
        assert_eq!(clock.deadline(), Some(due));
        // Bytes of the head do not extend it (a client trickling bytes is still timed out).
        assert!(!clock.read(t0 + Duration::from_secs(4)));
        assert_eq!(clock.deadline(), Some(due));
        assert_eq!(clock.expired(t0 + Duration::from_millis(4_999)), None);
        assert_eq!(
            clock.expired(t0 + Duration::from_secs(5)),
            Some(Closed::HeaderTimeout)
        );
    }

    #[test]
    fn requests_under_way_have_no_deadline_and_answers_start_the_idle_time() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut clock = ConnClock::new(t0, &limits());
        clock.request();
        assert_eq!(clock.deadline(), None);
        assert_eq!(clock.expired(at(3_600)), None);
        // Pipelined: a second request before the first is answered.
        clock.request();
        assert!(!clock.response(at(1)));
        assert_eq!(clock.deadline(), None);
        assert!(clock.response(at(2)));
        assert_eq!(clock.deadline(), Some((at(62), Closed::IdleTimeout)));
        assert_eq!(clock.expired(at(61)), None);
        assert_eq!(clock.expired(at(62)), Some(Closed::IdleTimeout));
    }

    #[test]
    fn the_first_byte_of_a_later_request_starts_its_header_timeout() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut clock = ConnClock::new(t0, &limits());
        clock.request();
        clock.response(at(1));
        // Idle until 61; a byte at 30 moves the deadline to 35 (earlier), at 59 to 64 (later).
        assert!(clock.read(at(30)));
        assert_eq!(clock.deadline(), Some((at(35), Closed::HeaderTimeout)));
        assert!(!clock.read(at(31)), "later bytes of the same head");
        clock.request();
        clock.response(at(32));
        assert!(clock.read(at(91)));
        assert_eq!(clock.deadline(), Some((at(96), Closed::HeaderTimeout)));
    }
}
