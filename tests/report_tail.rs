//! `adstream report tail` against a real broker: catch-up table with upserts, tombstones and a
//! bad record; following new rows; unknown topics and unreachable brokers fail clearly.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{adstream, Broker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

const W1: &str = "2026-11-27T10:05:00Z";
const W2: &str = "2026-11-27T10:06:00Z";

/// Creates a compacted topic and waits for the broker's answer.
fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topic_spec = NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact");
    let results = rt
        .block_on(admin.create_topics(
            [&topic_spec],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// Sends one record to an explicit partition (so the bad record's offset is known).
fn send(p: &BaseProducer, topic: &str, partition: i32, key: &str, value: Option<&str>) {
    let mut record = BaseRecord::<str, str>::to(topic)
        .partition(partition)
        .key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    loop {
        match p.send(record) {
            Ok(()) => break,
            Err((_, back)) => {
                record = back;
                p.poll(Duration::from_millis(10));
            }
        }
    }
    p.poll(Duration::ZERO);
}

fn row(campaign: &str, window: &str, clicks: u64, spend_micros: u64, revision: u64) -> String {
    format!(
        r#"{{"report":"campaign_minute","window_start":"{window}","window_end":"x","group":{{"campaign_id":"{campaign}"}},"final":{},"revision":{revision},"watermark":"{window}","impressions":{},"clicks":{clicks},"spend_micros":{spend_micros},"ctr":0.125,"cvr":null}}"#,
        revision > 1,
        clicks * 8,
    )
}

/// Runs the command to its end, failing the test if it takes longer than `limit`.
fn output_within(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(args: &[&str]) -> Child {
    adstream()
        .args(["report", "tail"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn once_prints_the_latest_rows_after_upserts_tombstones_and_bad_records() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    let topic = "report.campaign_minute";
    create_topic(&brokers, topic, 2);
    let p = common::producer(&brokers);
    // Partition 0: c1 then its update, c2.
    send(
        &p,
        topic,
        0,
        &format!("c1@{W1}"),
        Some(&row("c1", W1, 1, 12_345, 1)),
    );
    send(
        &p,
        topic,
        0,
        &format!("c2@{W1}"),
        Some(&row("c2", W1, 5, 1_000_000, 1)),
    );
    send(
        &p,
        topic,
        0,
        &format!("c1@{W1}"),
        Some(&row("c1", W1, 9, 2_500_000, 2)),
    );
    // Partition 1: c3, a value that is not JSON (offset 1), c3's tombstone, c4.
    send(
        &p,
        topic,
        1,
        &format!("c3@{W1}"),
        Some(&row("c3", W1, 2, 1, 1)),
    );
    send(&p, topic, 1, &format!("c5@{W2}"), Some("this is not json"));
    send(&p, topic, 1, &format!("c3@{W1}"), None);
    send(
        &p,
        topic,
        1,
        &format!("c4@{W2}"),
        Some(&row("c4", W2, 3, 999, 1)),
    );
    p.flush(Duration::from_secs(30)).unwrap();

    let out = output_within(
        tail(&[topic, "--brokers", &brokers, "--once", "--rows", "50"]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");

    let header = stdout.lines().next().unwrap_or_default();
    let titles: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        titles,
        [
            "window_start",
            "campaign_id",
            "impressions",
            "clicks",
            "spend_micros",
            "ctr",
            "cvr",
            "final",
            "revision"
        ],
        "{stdout}"
    );
    // Header, underline, c1, c2, c4: sorted by window then group.
    let body: Vec<&str> = stdout.lines().skip(2).collect();
    assert_eq!(body.len(), 3, "{stdout}");
    assert!(body[0].contains(" c1 ") && body[1].contains(" c2 ") && body[2].contains(" c4 "));

    // The updated row, once, with its latest values.
    let c1 = lines_with(&stdout, " c1 ");
    assert_eq!(c1.len(), 1, "{stdout}");
    let c1: Vec<&str> = c1[0].split_whitespace().collect();
    assert_eq!(
        c1,
        [W1, "c1", "72", "9", "2.50", "12.50%", "-", "final", "2"],
        "{stdout}"
    );
    let c4: Vec<&str> = body[2].split_whitespace().collect();
    assert_eq!(
        c4,
        [W2, "c4", "24", "3", "0.00", "12.50%", "-", "open", "1"]
    );
    // The deleted key is gone.
    assert!(lines_with(&stdout, "c3").is_empty(), "{stdout}");
    // The bad record is named on stderr and nothing else is lost.
    let warnings = lines_with(&stderr, "warning");
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| !l.is_empty()).count(),
        1,
        "{stderr}"
    );
    assert!(
        warnings[0].contains("partition 1 offset 1") && warnings[0].contains(&format!("c5@{W2}")),
        "{stderr}"
    );
    assert!(lines_with(&stdout, "c5").is_empty(), "{stdout}");
}

#[test]
fn following_prints_rows_as_they_arrive() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    let topic = "report.follow";
    create_topic(&brokers, topic, 1);
    let p = common::producer(&brokers);
    send(
        &p,
        topic,
        0,
        &format!("c1@{W1}"),
        Some(&row("c1", W1, 1, 10_000, 1)),
    );
    p.flush(Duration::from_secs(30)).unwrap();

    let mut child = tail(&[topic, "--brokers", &brokers, "--rows", "5"]);
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    seen.push(line);
                    if hit {
                        return seen.clone();
                    }
                }
                Err(_) => panic!("no line with {needle:?}; got {seen:#?}"),
            }
        }
    };
    // The caught-up table ends with c1's row; what comes after arrives while following.
    wait_for(" c1 ");
    send(
        &p,
        topic,
        0,
        &format!("c2@{W2}"),
        Some(&row("c2", W2, 4, 20_000, 1)),
    );
    p.flush(Duration::from_secs(30)).unwrap();
    let lines = wait_for(" c2 ");
    let c2: Vec<&str> = lines[lines.len() - 1].split_whitespace().collect();
    assert_eq!(
        c2,
        [W2, "c2", "32", "4", "0.02", "12.50%", "-", "open", "1"]
    );
    send(&p, topic, 0, &format!("c1@{W1}"), None);
    p.flush(Duration::from_secs(30)).unwrap();
    let lines = wait_for("deleted");
    assert!(lines[lines.len() - 1].contains(" c1 "), "{lines:#?}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_unknown_topic_fails_naming_it_and_the_brokers() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    create_topic(&brokers, "report.exists", 1);
    let out = output_within(
        tail(&["report.nope", "--brokers", &brokers, "--once"]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("report.nope") && stderr.contains(&brokers),
        "{stderr}"
    );
    assert!(stderr.contains("report.exists"), "{stderr}");

    // The brokers (and any SASL/SSL properties) may come from a pipeline file instead; a
    // property it names from an unset environment variable is an error naming it.
    let dir = tempfile::tempdir().unwrap();
    let pipeline = common::pipeline_file(dir.path(), &brokers, "");
    let out = output_within(
        tail(&[
            "report.exists",
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--once",
        ]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = common::pipeline_file(
        dir.path(),
        &brokers,
        "\n[kafka.properties]\n\"sasl.password\" = \"env:ADSTREAM_TAIL_TEST_UNSET\"\n",
    );
    let out = output_within(
        tail(&[
            "report.exists",
            "--pipeline",
            bad.to_str().unwrap(),
            "--once",
        ]),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("kafka.properties.sasl.password"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_broker_fails_within_seconds() {
    let brokers = format!("127.0.0.1:{}", common::free_port());
    let started = Instant::now();
    let out = output_within(
        tail(&["report.any", "--brokers", &brokers, "--once"]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(15));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&brokers), "{stderr}");
}
