//! The Kafka edges under faults, on a real broker: `/readyz` follows a broker outage and spend
//! stays exact through it; an output record that cannot be delivered is counted; dead letters
//! are published once per bad message across a SIGKILL; partitions added while running are read.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adstream_operators::events::Billing;
use common::*;

/// A pipeline file with `topics` and `checkpoint_ms` as given, and `extra` sections.
fn pipeline(dir: &Path, brokers: &str, topics: &str, checkpoint_ms: u64, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let text = format!(
        r#"
[pipeline]
name = "it"
secret = "{SECRET}"
workers = 1

[kafka]
brokers = "{brokers}"

[topics]
partitions = 4
{topics}

[time]
lateness_ms = 500

[checkpoint]
interval_ms = {checkpoint_ms}

[health]
interval_ms = 200
broker_timeout_ms = 1000
{extra}
"#
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn spend(api: &str, campaign: &str) -> Option<u64> {
    let (status, body) = http_get(&format!("{api}/v1/campaigns/{campaign}"))?;
    (status == 200).then(|| body["spend_micros"].as_u64().unwrap_or(0))
}

fn readyz(api: &str) -> Option<(u16, serde_json::Value)> {
    http_get(&format!("{api}/readyz"))
}

fn wait_ready(api: &str) {
    assert!(
        eventually(Duration::from_secs(60), || readyz(api)
            .is_some_and(|(s, _)| s == 200)),
        "not ready: {:?}",
        readyz(api)
    );
}

fn wait_spend(api: &str, campaign: &str, expected: u64) {
    assert!(
        eventually(Duration::from_secs(60), || spend(api, campaign)
            == Some(expected)),
        "spend of {campaign}: {:?}, expected {expected}",
        spend(api, campaign)
    );
}

/// `/readyz` is 503 with the reason while the broker is down (killed, then frozen), 200 again
/// once it is back, and every event is charged exactly once through the outages.
#[test]
fn readiness_follows_a_broker_outage_and_spend_stays_exact() {
    let mut broker = Broker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), &brokers, "", 200, "");
    create_topics(&file);
    let p = producer(&brokers);
    let budget = 10_000_000_000;
    let campaign = campaign_json("o-cpm", "adv", Billing::Cpm, budget);
    produce(&p, "ads.campaigns", "o-cpm", Some(campaign.as_bytes()));
    let mut expected = 0;
    for i in 0..20u64 {
        let price = 100 + i;
        let imp = signed_impression("o-cpm", &format!("o-{i}"), price);
        produce(
            &p,
            "ads.impressions",
            &format!("o-{i}"),
            Some(imp.as_bytes()),
        );
        expected += price;
    }
    flush(&p);
    drop(p);
    let run = Running::start(&file, &dir.path().join("state"), &[]);
    wait_ready(&run.api);
    wait_spend(&run.api, "o-cpm", expected);
    assert_eq!(metric(&run.api, "adstream_broker_reachable"), Some(1.0));

    broker.stop();
    assert!(
        eventually(Duration::from_secs(30), || readyz(&run.api).is_some_and(
            |(s, body)| s == 503 && body["reasons"][0]["reason"] == "broker_unreachable"
        )),
        "readyz while the broker is down: {:?}",
        readyz(&run.api)
    );
    assert_eq!(metric(&run.api, "adstream_broker_reachable"), Some(0.0));
    assert_eq!(spend(&run.api, "o-cpm"), Some(expected));

    broker.restart();
    wait_ready(&run.api);
    let p = producer(&brokers);
    for i in 20..40u64 {
        let price = 100 + i;
        let imp = signed_impression("o-cpm", &format!("o-{i}"), price);
        produce(
            &p,
            "ads.impressions",
            &format!("o-{i}"),
            Some(imp.as_bytes()),
        );
        expected += price;
    }
    flush(&p);
    wait_spend(&run.api, "o-cpm", expected);
    assert_eq!(metric(&run.api, "adstream_broker_reachable"), Some(1.0));

    // A hung broker (connections open, no answers) is unreachable too.
    broker.pause();
    let seen = eventually(Duration::from_secs(30), || {
        readyz(&run.api).is_some_and(|(s, body)| {
            s == 503 && body["reasons"][0]["reason"] == "broker_unreachable"
        })
    });
    broker.resume();
    assert!(seen, "readyz while the broker is frozen");
    wait_ready(&run.api);
    for i in 40..50u64 {
        let price = 100 + i;
        let imp = signed_impression("o-cpm", &format!("o-{i}"), price);
        produce(
            &p,
            "ads.impressions",
            &format!("o-{i}"),
            Some(imp.as_bytes()),
        );
        expected += price;
    }
    flush(&p);
    wait_spend(&run.api, "o-cpm", expected);
    run.kill();
}

/// A dead letter for a topic that does not exist (and is not auto-created) is counted as failed
/// with its reason; the pipeline goes on charging and delivering the rest.
#[test]
fn an_undeliverable_output_record_is_counted_with_its_reason() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    create_topics(&pipeline(&dir.path().join("all"), &brokers, "", 200, ""));
    let file = pipeline(
        &dir.path().join("missing"),
        &brokers,
        "deadletter = \"it.missing\"",
        200,
        "\n[kafka.properties]\n\"topic.metadata.propagation.max.ms\" = \"1000\"\n",
    );
    let p = producer(&brokers);
    let campaign = campaign_json("f-cpm", "adv", Billing::Cpm, 10_000_000_000);
    produce(&p, "ads.campaigns", "f-cpm", Some(campaign.as_bytes()));
    produce(&p, "ads.impressions", "bad", Some(b"{not json"));
    let imp = signed_impression("f-cpm", "f-1", 700);
    produce(&p, "ads.impressions", "f-1", Some(imp.as_bytes()));
    flush(&p);
    let run = Running::start(&file, &dir.path().join("state"), &[]);
    wait_spend(&run.api, "f-cpm", 700);
    let failed = "adstream_output_records_total{outcome=\"failed\",topic=\"it.missing\"}";
    assert!(
        eventually(Duration::from_secs(60), || metric(&run.api, failed)
            == Some(1.0)),
        "{failed}: {:?}",
        metric(&run.api, failed)
    );
    let text = http_get_text(&format!("{}/metrics", run.api));
    assert!(
        text.contains("adstream_output_failures_total{reason=\"unknown_topic"),
        "{text}"
    );
    assert!(
        metric(
            &run.api,
            "adstream_output_records_total{outcome=\"delivered\",topic=\"budget.status\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // The failure settled: checkpoints go on, and so does the pipeline.
    let imp = signed_impression("f-cpm", "f-2", 300);
    produce(&p, "ads.impressions", "f-2", Some(imp.as_bytes()));
    flush(&p);
    wait_spend(&run.api, "f-cpm", 1_000);
    run.kill();
}

fn http_get_text(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

/// How many dead letters carry each payload.
fn dead_letter_payloads(brokers: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for doc in read_dead_letters(brokers) {
        *out.entry(doc["payload"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    out
}

/// Bad messages, a clean stop, more bad messages, a SIGKILL before any further checkpoint, a
/// restart that reads them all again: every bad message has exactly one dead letter, the bad
/// campaign (read again on every start) included.
#[test]
fn dead_letters_are_published_once_across_a_sigkill() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(&dir.path().join("p"), &brokers, "", 200, "");
    // The same pipeline with checkpoints ten minutes apart: a run killed within them replays
    // everything it read.
    let rare = pipeline(&dir.path().join("rare"), &brokers, "", 600_000, "");
    create_topics(&file);
    let state = dir.path().join("state");
    let p = producer(&brokers);
    let campaign = campaign_json("d-cpm", "adv", Billing::Cpm, 10_000_000_000);
    produce(&p, "ads.campaigns", "d-cpm", Some(campaign.as_bytes()));
    // The campaigns topic is read from its beginning on every start.
    produce(&p, "ads.campaigns", "d-bad", Some(b"{bad-campaign"));
    // Everything on one partition (one key), so a last message's dead letter means the ones
    // before it are done.
    let batch = |tag: &str, spend: &mut u64| {
        for i in 0..10u64 {
            let bad = format!("{{bad-{tag}-{i}");
            produce(&p, "ads.impressions", "k", Some(bad.as_bytes()));
            let imp = signed_impression("d-cpm", &format!("d-{tag}-{i}"), 100 + i);
            produce(&p, "ads.impressions", "k", Some(imp.as_bytes()));
            *spend += 100 + i;
        }
        flush(&p);
    };
    let has = |payload: &str| dead_letter_payloads(&brokers).contains_key(payload);
    let mut expected = 0;

    let mut run = Running::start(&file, &state, &[]);
    batch("a", &mut expected);
    assert!(eventually(Duration::from_secs(60), || has("{bad-a-9")));
    wait_spend(&run.api, "d-cpm", expected);
    send_signal(&run.child, "-TERM");
    assert!(exit_within(&mut run.child, Duration::from_secs(60)).is_some());

    let run = Running::start(&rare, &state, &[]);
    wait_ready(&run.api);
    batch("b", &mut expected);
    // Killed mid-stream: once some of batch b's dead letters are out.
    assert!(eventually(Duration::from_secs(60), || has("{bad-b-4")));
    run.kill();

    let run = Running::start(&file, &state, &[]);
    wait_ready(&run.api);
    produce(&p, "ads.impressions", "k", Some(b"{sentinel"));
    flush(&p);
    assert!(eventually(Duration::from_secs(60), || has("{sentinel")));
    wait_spend(&run.api, "d-cpm", expected);
    let payloads = dead_letter_payloads(&brokers);
    let mut want: BTreeMap<String, usize> = ["a", "b"]
        .iter()
        .flat_map(|t| (0..10).map(move |i| (format!("{{bad-{t}-{i}"), 1)))
        .collect();
    want.insert("{sentinel".into(), 1);
    want.insert("{bad-campaign".into(), 1);
    assert_eq!(payloads, want, "one dead letter per bad message");
    let skipped = metric(
        &run.api,
        "adstream_output_records_total{outcome=\"already_published\",topic=\"ads.deadletter\"}",
    );
    assert!(
        skipped.is_some_and(|n| n >= 5.0),
        "batch b was read again and its dead letters not republished: {skipped:?}"
    );
    run.kill();
}

/// Partitions added to an input topic while a pipeline runs are read (by exactly one of its
/// workers), their events charged, and their offsets checkpointed across a restart.
#[test]
fn partitions_added_while_running_are_read_and_charged() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), &brokers, "", 200, "");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("partitions = 4", "partitions = 2")
        .replace("workers = 1", "workers = 2");
    std::fs::write(&file, text).unwrap();
    create_topics(&file);
    let p = producer(&brokers);
    let campaign = campaign_json("n-cpm", "adv", Billing::Cpm, 10_000_000_000);
    produce(&p, "ads.campaigns", "n-cpm", Some(campaign.as_bytes()));
    let mut expected = 0;
    for i in 0..10u64 {
        let imp = signed_impression("n-cpm", &format!("n-{i}"), 100 + i);
        produce_to(&p, "ads.impressions", (i % 2) as i32, "k", imp.as_bytes());
        expected += 100 + i;
    }
    flush(&p);
    drop(p);
    let state = dir.path().join("state");
    let mut run = Running::start(&file, &state, &[]);
    wait_ready(&run.api);
    wait_spend(&run.api, "n-cpm", expected);

    broker.add_partitions("ads.impressions", 4);
    let partitions = "adstream_input_partitions{topic=\"ads.impressions\"}";
    assert!(
        eventually(Duration::from_secs(30), || metric(&run.api, partitions)
            == Some(4.0)),
        "{partitions}: {:?}",
        metric(&run.api, partitions)
    );
    let p = producer(&brokers);
    for i in 10..20u64 {
        let imp = signed_impression("n-cpm", &format!("n-{i}"), 100 + i);
        produce_to(
            &p,
            "ads.impressions",
            2 + (i % 2) as i32,
            "k",
            imp.as_bytes(),
        );
        expected += 100 + i;
    }
    flush(&p);
    wait_spend(&run.api, "n-cpm", expected);
    let lag = "adstream_consumer_lag{partition=\"3\",topic=\"ads.impressions\"}";
    assert!(
        eventually(Duration::from_secs(30), || metric(&run.api, lag)
            == Some(0.0)),
        "{lag}: {:?}",
        metric(&run.api, lag)
    );

    // A clean stop and a restart: the new partitions' offsets were checkpointed.
    send_signal(&run.child, "-TERM");
    assert!(exit_within(&mut run.child, Duration::from_secs(60)).is_some());
    let run = Running::start(&file, &state, &[]);
    wait_ready(&run.api);
    assert_eq!(spend(&run.api, "n-cpm"), Some(expected));
    let imp = signed_impression("n-cpm", "n-last", 1_000);
    produce_to(&p, "ads.impressions", 3, "k", imp.as_bytes());
    flush(&p);
    wait_spend(&run.api, "n-cpm", expected + 1_000);
    run.kill();
}

/// Messages deleted (as retention does) after the checkpoint and before a restart read them are
/// reported, never skipped silently: counted per partition, and one `offsets_lost` dead letter
/// names the range; reading resumes at the low watermark.
#[test]
fn offsets_lost_to_retention_are_reported() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), &brokers, "", 200, "");
    create_topics(&file);
    let p = producer(&brokers);
    let campaign = campaign_json("r-cpm", "adv", Billing::Cpm, 10_000_000_000);
    produce(&p, "ads.campaigns", "r-cpm", Some(campaign.as_bytes()));
    let batch = |tag: &str, price: u64| {
        for i in 0..5 {
            let imp = signed_impression("r-cpm", &format!("r-{tag}-{i}"), price);
            produce_to(&p, "ads.impressions", 0, "k", imp.as_bytes());
        }
        flush(&p);
    };
    batch("kept", 100);
    let state = dir.path().join("state");
    let mut run = Running::start(&file, &state, &[]);
    wait_spend(&run.api, "r-cpm", 500);
    send_signal(&run.child, "-TERM");
    assert!(exit_within(&mut run.child, Duration::from_secs(60)).is_some());
    // Offsets 5..10 go before the pipeline reads them; 10..15 stay.
    batch("deleted", 1_000);
    batch("late", 10);
    broker.delete_records("ads.impressions", 0, 10);

    let run = Running::start(&file, &state, &[]);
    wait_spend(&run.api, "r-cpm", 550);
    assert_eq!(
        metric(
            &run.api,
            "adstream_offsets_lost_total{partition=\"0\",topic=\"ads.impressions\"}"
        ),
        Some(5.0)
    );
    let summary = eventually(Duration::from_secs(30), || {
        read_dead_letters(&brokers)
            .iter()
            .any(|d| d["reason"] == "offsets_lost" && d["offset"] == 5 && d["partition"] == 0)
    });
    assert!(summary, "{:?}", read_dead_letters(&brokers));
    run.kill();
}

/// A dead letter keeps the refused message's bytes exactly (here not UTF-8) under its key, with
/// the reason and source in Kafka headers; and after a checkpoint the pipeline's consumer group
/// (`adstream-` + the pipeline's name) holds the checkpointed offsets, for a plain Kafka client
/// (a lag monitor) to read.
#[test]
fn dead_letters_keep_the_original_bytes_and_offsets_are_committed_for_monitoring() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    let broker = Broker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(dir.path(), &brokers, "", 200, "");
    create_topics(&file);
    let run = Running::start(&file, &dir.path().join("state"), &[]);
    wait_ready(&run.api);
    let p = producer(&brokers);
    let campaign = campaign_json("o-cpm", "adv", Billing::Cpm, 10_000_000_000);
    produce(&p, "ads.campaigns", "o-cpm", Some(campaign.as_bytes()));
    flush(&p);
    wait_for_campaign(&run.api, "o-cpm");
    let binary: &[u8] = b"\xff\xfe{\"not\": utf-8 \x00\xc3\x28}";
    produce(&p, "ads.impressions", "bin-key", Some(binary));
    let mut expected = 0;
    for i in 0..20u64 {
        let imp = signed_impression("o-cpm", &format!("o-{i}"), 100 + i);
        produce(
            &p,
            "ads.impressions",
            &format!("k{i}"),
            Some(imp.as_bytes()),
        );
        expected += 100 + i;
    }
    flush(&p);

    let dead = find_dead_letter(&brokers, "bin-key", Duration::from_secs(60))
        .expect("a dead letter for the binary message");
    assert_eq!(dead["payload_bytes"], serde_json::json!(binary), "{dead}");
    assert_eq!(dead["reason"], "malformed_json", "{dead}");
    assert_eq!(dead["topic"], "ads.impressions", "{dead}");
    assert!(dead["partition"].as_i64().is_some() && dead["offset"].as_i64().is_some());
    assert_eq!(dead["payload_truncated"], false, "{dead}");
    assert!(!dead["detail"].as_str().unwrap_or("").is_empty(), "{dead}");
    wait_spend(&run.api, "o-cpm", expected);

    // Every impressions partition's committed offset reaches its end once a checkpoint covers
    // what was read (the checkpoints are 200 ms apart).
    let monitor: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "adstream-it")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let ends: BTreeMap<i32, i64> = (0..4)
        .map(|partition| {
            let (_, high) = monitor
                .fetch_watermarks("ads.impressions", partition, Duration::from_secs(10))
                .unwrap();
            (partition, high)
        })
        .collect();
    assert!(ends.values().any(|e| *e > 0));
    let committed = || -> BTreeMap<i32, i64> {
        let mut list = TopicPartitionList::new();
        for partition in ends.keys() {
            list.add_partition("ads.impressions", *partition);
        }
        monitor
            .committed_offsets(list, Duration::from_secs(10))
            .map(|l| {
                l.elements()
                    .iter()
                    .map(|e| match e.offset() {
                        Offset::Offset(o) => (e.partition(), o),
                        _ => (e.partition(), 0),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(60), || committed() == ends),
        "committed {:?}, ends {ends:?}",
        committed()
    );
    run.kill();
}
