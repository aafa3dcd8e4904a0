//! The HTTP server's limits, against a running process: a partial request head is closed after
//! the header timeout, a silent kept-alive connection after the idle timeout; connections
//! beyond the cap are answered 503 at once while a connection being served still is; and
//! SIGTERM ends the process (exit 0, after the final checkpoint) within a bound while clients
//! hold half-sent requests and idle connections open. Regression: axum's `serve` held all of
//! these forever, and its graceful shutdown waited for them.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use adstream_operators::events::Billing;
use common::*;

fn connect(api: &str) -> TcpStream {
    let addr = api.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Reads one response: its status and body.
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "closed before a response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `GET path` on a kept-alive connection.
fn get(stream: &mut TcpStream, path: &str) -> (u16, String) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: adstream\r\n\r\n").unwrap();
    read_response(stream)
}

/// Waits (at most 60 s) for the server to close `stream`; how long after `since` it did.
fn closed_by_server(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => since.elapsed(),
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => since.elapsed(),
        Err(e) => panic!("not closed by the server within 60 s: {e}"),
    }
}

/// The value of metric line `name` (with its labels) in `text`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn timeouts_connection_cap_and_a_bounded_sigterm() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();

    // Short timeouts.
    let timed = dir.path().join("timed");
    std::fs::create_dir_all(&timed).unwrap();
    let pipeline = pipeline_file(
        &timed,
        &brokers,
        "\n[model]\nenabled = false\n\n[api]\nheader_read_timeout_ms = 1000\nidle_timeout_ms = 1500\n",
    );
    create_topics(&pipeline);
    let running = start_logged(
        &pipeline,
        &timed.join("state"),
        &[],
        &[],
        &timed.join("adstream.log"),
    );
    // A partial head: closed once it is overdue (not before: the server's clock starts after
    // `since`).
    let since = Instant::now();
    let mut partial = connect(&running.api);
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: adst")
        .unwrap();
    let took = closed_by_server(&mut partial, since);
    assert!(
        took >= Duration::from_millis(1_000),
        "closed after {took:?}"
    );
    // A kept-alive connection answered, then silent: closed once idle too long.
    let mut idle = connect(&running.api);
    let since = Instant::now();
    assert_eq!(get(&mut idle, "/healthz"), (200, "ok".to_string()));
    let took = closed_by_server(&mut idle, since);
    assert!(
        took >= Duration::from_millis(1_500),
        "closed after {took:?}"
    );
    let mut probe = connect(&running.api);
    let (status, text) = get(&mut probe, "/metrics");
    assert_eq!(status, 200);
    for reason in ["header_timeout", "idle_timeout"] {
        assert_eq!(
            metric(
                &text,
                &format!("adstream_http_connections_closed_total{{reason=\"{reason}\"}}")
            ),
            Some(1.0),
            "{reason}"
        );
    }
    drop(running);

    // Long timeouts, three connections at most, one second of shutdown grace.
    let capped = dir.path().join("capped");
    std::fs::create_dir_all(&capped).unwrap();
    let pipeline = pipeline_file(
        &capped,
        &brokers,
        "\n[model]\nenabled = false\n\n[api]\nheader_read_timeout_ms = 600000\nidle_timeout_ms = 600000\nmax_connections = 3\nshutdown_grace_ms = 1000\n",
    );
    let log = capped.join("adstream.log");
    let mut running = start_logged(&pipeline, &capped.join("state"), &[], &[], &log);
    let mut healthy = connect(&running.api);
    assert_eq!(get(&mut healthy, "/healthz"), (200, "ok".to_string()));
    // Two half-sent requests: a head, and a body of 10 bytes out of 1000.
    let mut head = connect(&running.api);
    head.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    let mut body = connect(&running.api);
    body.write_all(b"POST /v1/openrtb HTTP/1.1\r\nHost: adstream\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\":\"r1\"")
        .unwrap();
    assert!(
        eventually(Duration::from_secs(60), || {
            let (_, text) = get(&mut healthy, "/metrics");
            metric(&text, "adstream_http_connections") == Some(3.0)
        }),
        "the server holds the three connections"
    );
    // At the cap: one more is answered 503 at once and closed; the healthy one is served.
    let mut more = connect(&running.api);
    let (status, answer) = get(&mut more, "/healthz");
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("overloaded"), "{answer}");
    closed_by_server(&mut more, Instant::now());
    assert_eq!(get(&mut healthy, "/healthz"), (200, "ok".to_string()));
    let (_, text) = get(&mut healthy, "/metrics");
    assert_eq!(
        metric(
            &text,
            "adstream_http_connections_closed_total{reason=\"overloaded\"}"
        ),
        Some(1.0)
    );

    // SIGTERM with both half-sent requests and the idle connection still open.
    send_signal(&running.child, "-TERM");
    let status = exit_within(&mut running.child, Duration::from_secs(90));
    let log = std::fs::read_to_string(&log).unwrap();
    let status = status.unwrap_or_else(|| panic!("still running 90 s after SIGTERM:\n{log}"));
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains("still open at the end of the shutdown grace"),
        "{log}"
    );
    assert!(
        log.contains("stopped cleanly after a final checkpoint"),
        "{log}"
    );
    drop((head, body, healthy));
}

/// `GET path` with `Authorization: Bearer token` on a kept-alive connection.
fn get_as(stream: &mut TcpStream, path: &str, token: &str) -> (u16, String) {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: adstream\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    read_response(stream)
}

/// With `[api] admin_listen`, the dashboard, metrics and models answer on the admin port and
/// 404 on the public one; campaign reads are on both, and with advertiser tokens an advertiser
/// reads its own campaigns (200), not another's (403), and nothing without a token (401).
/// SIGTERM stops both listeners and the process exits 0.
#[test]
fn an_admin_listener_and_advertiser_tokens() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let pipeline = pipeline_file(
        dir.path(),
        &brokers,
        &format!(
            "\n[model]\nenabled = false\n\n[api]\nadmin_listen = \"127.0.0.1:{admin_port}\"\nadmin_token = \"admin-token-0123456789\"\n\n[api.advertiser_tokens]\nadv-a = \"token-of-adv-a-0123\"\nadv-b = \"env:ADV_B_TOKEN\"\n"
        ),
    );
    create_topics(&pipeline);
    let p = producer(&brokers);
    for (id, advertiser) in [("ca", "adv-a"), ("cb", "adv-b")] {
        let json = campaign_json(id, advertiser, Billing::Cpm, 1_000_000);
        produce(&p, "ads.campaigns", id, Some(json.as_bytes()));
    }
    flush(&p);
    let log = dir.path().join("adstream.log");
    let mut running = start_logged(
        &pipeline,
        &dir.path().join("state"),
        &[],
        &[("ADV_B_TOKEN", "token-of-adv-b-0123")],
        &log,
    );
    let admin_api = format!("http://127.0.0.1:{admin_port}");
    let mut public = connect(&running.api);
    let mut admin = connect(&admin_api);
    let (a, b, root) = (
        "token-of-adv-a-0123",
        "token-of-adv-b-0123",
        "admin-token-0123456789",
    );
    assert!(
        eventually(Duration::from_secs(60), || {
            get_as(&mut public, "/v1/campaigns/cb", root).0 == 200
                && get_as(&mut public, "/v1/campaigns/ca", root).0 == 200
        }),
        "the campaigns are read"
    );

    for path in ["/metrics", "/v1/models", "/v1/dashboard", "/"] {
        assert_eq!(get(&mut public, path).0, 404, "public {path}");
        assert_eq!(get(&mut admin, path).0, 200, "admin {path}");
    }
    let (_, text) = get(&mut admin, "/metrics");
    assert!(text.contains("adstream_build_info{"), "{text}");
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    for path in ["/healthz", "/readyz"] {
        assert!(
            eventually(Duration::from_secs(60), || get(&mut public, path).0 == 200
                && get(&mut admin, path).0 == 200),
            "{path} on both listeners"
        );
    }
    assert_eq!(get(&mut admin, "/openapi.json").0, 404);
    assert_eq!(get(&mut public, "/openapi.json").0, 200);

    // Advertiser tokens, on either listener.
    for stream in [&mut public, &mut admin] {
        assert_eq!(get_as(stream, "/v1/campaigns/ca", a).0, 200);
        assert_eq!(get_as(stream, "/v1/campaigns/cb", a).0, 403);
        assert_eq!(get_as(stream, "/v1/campaigns/cb", b).0, 200);
        assert_eq!(get_as(stream, "/v1/campaigns/ca", b).0, 403);
        assert_eq!(get(stream, "/v1/campaigns/ca").0, 401);
        assert_eq!(
            get_as(stream, "/v1/campaigns/ca", "token-of-adv-a-0124").0,
            401
        );
        assert_eq!(get(stream, "/v1/campaigns").0, 401);
        let (status, body) = get_as(stream, "/v1/campaigns", a);
        assert_eq!(status, 200);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<&str> = body["campaigns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["campaign_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["ca"], "{body}");
    }

    // Both listeners stop on SIGTERM, and the process exits cleanly.
    drop((public, admin));
    send_signal(&running.child, "-TERM");
    let status = exit_within(&mut running.child, Duration::from_secs(90));
    let log = std::fs::read_to_string(&log).unwrap();
    let status = status.unwrap_or_else(|| panic!("still running 90 s after SIGTERM:\n{log}"));
    assert!(status.success(), "{status}\n{log}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_err(),
        "the admin port is closed"
    );
}
