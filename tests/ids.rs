//! Ids against a real broker: ids with control characters or beyond the length limit are
//! refused at every input (an `invalid_field` dead letter naming the field on Kafka, a 400 naming
//! the field over HTTP), and valid but unusual ids (`%`, `/`, spaces, non-ASCII, the longest
//! allowed) keep their spend across a SIGTERM and a restart (the bug this pins: an id with a NUL
//! byte once lost its spend on restart, because state keys used NUL as a separator).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use adstream_operators::events::{Billing, MAX_ID_BYTES};
use adstream_operators::time::EventTime;
use adstream_operators::token::WinClaims;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Valid ids a naive key encoding would trip on.
fn unusual_ids() -> Vec<String> {
    let longest = "é".repeat(MAX_ID_BYTES / 2);
    assert_eq!(longest.len(), MAX_ID_BYTES);
    vec![
        "50% off/summer sale".to_string(),
        "%00".to_string(),
        "été 广告 ✓".to_string(),
        longest,
    ]
}

/// Every byte but the unreserved ones percent-encoded: one path segment.
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn campaign(id: &str, advertiser: &str, ad: &str) -> String {
    serde_json::json!({
        "campaign_id": id, "advertiser_id": advertiser, "status": "active",
        "daily_budget_micros": 10_000_000_000u64, "timezone": campaign_zone(), "billing": "cpm",
        "bid_micros": 10_000_000u64, "creatives": [{"ad_id": ad}],
    })
    .to_string()
}

fn spend(api: &str, id: &str) -> Option<u64> {
    let (status, body) = http_get(&format!("{api}/v1/campaigns/{}", path_segment(id)))?;
    (status == 200)
        .then(|| body["spend_micros"].as_u64())
        .flatten()
}

fn spends(api: &str, ids: &[String]) -> BTreeMap<String, Option<u64>> {
    ids.iter().map(|id| (id.clone(), spend(api, id))).collect()
}

/// Every dead letter on `ads.deadletter`, until `done` says enough were read (or 60 s pass).
fn dead_letters(
    brokers: &str,
    mut done: impl FnMut(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "it-ids")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset("ads.deadletter", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !done(&seen) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen.push(dead_letter_doc(&m));
        }
    }
    seen
}

#[test]
fn bad_ids_are_refused_and_unusual_ids_keep_their_spend_across_a_restart() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_file(dir.path(), &brokers, "");
    create_topics(&pipeline);
    let p = producer(&brokers);

    // Valid but unusual ids: campaigns, advertisers, ads, requests and users.
    let ids = unusual_ids();
    let now = EventTime::now();
    let mut expected: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for (n, id) in ids.iter().enumerate() {
        let advertiser = format!("adv {id}").chars().take(100).collect::<String>();
        let ad = format!("ad/{n} %");
        produce(
            &p,
            "ads.campaigns",
            id,
            Some(campaign(id, &advertiser, &ad).as_bytes()),
        );
        let mut total = 0;
        for i in 0..5u64 {
            let price = 10 + i + 100 * n as u64;
            let claims = WinClaims {
                request_id: format!("req %{i}/{n} ü"),
                imp_id: format!("imp {i}%"),
                campaign_id: id.clone(),
                advertiser_id: advertiser.clone(),
                ad_id: ad.clone(),
                billing: Billing::Cpm,
                charge_micros: price,
                issued: EventTime(now.millis() - 50),
                country: None,
                device: None,
            };
            let user = format!("user/{i} %41 ñ");
            let imp = ad_event(
                &format!("imp-{n}-{i}"),
                now,
                &user,
                &claims,
                Some(token(&claims)),
            );
            produce(
                &p,
                "ads.impressions",
                &claims.request_id,
                Some(imp.as_bytes()),
            );
            total += price;
        }
        expected.insert(id.clone(), Some(total));
    }

    // Invalid ids on every Kafka input: (topic, key, payload, field the dead letter names).
    let ok = claims("r-ok", "c-ok", "a-ok", Billing::Cpm, 7, now);
    let event = |field: &str, value: &str| {
        let mut doc: serde_json::Value =
            serde_json::from_str(&ad_event("e-bad", now, "u", &ok, Some(token(&ok)))).unwrap();
        doc[field] = value.into();
        doc.to_string()
    };
    let long = "x".repeat(MAX_ID_BYTES + 1);
    let bad: Vec<(&str, String, String, &str)> = vec![
        (
            "ads.campaigns",
            "bad\u{0}c".into(),
            campaign("bad\u{0}c", "a", "ad"),
            "field `key`",
        ),
        (
            "ads.campaigns",
            "c-adv".into(),
            campaign("c-adv", "adv\nx", "ad"),
            "field `advertiser_id`",
        ),
        (
            "ads.campaigns",
            "c-ad".into(),
            campaign("c-ad", "a", "ad\u{1b}[31m"),
            "field `creatives[0].ad_id`",
        ),
        (
            "ads.impressions",
            "r-ok".into(),
            event("user_id", "u\tx"),
            "field `user_id`",
        ),
        (
            "ads.clicks",
            "r-ok".into(),
            event("request_id", "r\u{0}ok"),
            "field `request_id`",
        ),
        (
            "ads.impressions",
            "r-ok".into(),
            event("imp_id", &long),
            "field `imp_id`",
        ),
        (
            "ads.conversions",
            "u".into(),
            serde_json::json!({"event_id": "e\u{85}", "ts": now.millis(), "user_id": "u",
                "advertiser_id": "a", "type": "purchase"})
            .to_string(),
            "field `event_id`",
        ),
    ];
    for (topic, key, payload, _) in &bad {
        produce(&p, topic, key, Some(payload.as_bytes()));
    }
    flush(&p);

    let state = dir.path().join("state");
    let mut running = Running::start(&pipeline, &state, &["--workers", "2"]);
    let api = running.api.clone();
    assert!(
        eventually(Duration::from_secs(120), || spends(&api, &ids) == expected),
        "spend {:?}, expected {expected:?}",
        spends(&api, &ids)
    );

    // Each refused with `invalid_field`, naming the field, its bytes unchanged.
    let found = |letters: &[serde_json::Value], topic: &str, payload: &str, field: &str| {
        letters.iter().any(|d| {
            d["topic"] == topic
                && d["payload"] == payload
                && d["reason"] == "invalid_field"
                && d["detail"].as_str().unwrap_or_default().contains(field)
        })
    };
    let all_found = |letters: &[serde_json::Value]| {
        bad.iter()
            .all(|(topic, _, payload, field)| found(letters, topic, payload, field))
    };
    let letters = dead_letters(&brokers, all_found);
    for (topic, key, payload, field) in &bad {
        assert!(
            found(&letters, topic, payload, field),
            "no invalid_field dead letter naming {field} for {key:?} on {topic}; got {letters:#?}"
        );
    }

    // Over HTTP: 400 with a JSON error naming the field.
    let (status, body) = http_get(&format!("{api}/v1/campaigns/bad%00c")).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("path `id`"),
        "{body}"
    );
    let (status, body) = http_get(&format!(
        "{api}/v1/campaigns/{}",
        "y".repeat(MAX_ID_BYTES + 1)
    ))
    .unwrap();
    assert_eq!(status, 400, "{body}");
    let requests = [
        (
            serde_json::json!({"id": "r\u{0}1", "imp": [{"id": "1"}]}),
            "`id`",
        ),
        (
            serde_json::json!({"id": "r", "imp": [{"id": "1\n"}]}),
            "`imp[0].id`",
        ),
        (
            serde_json::json!({"id": "r", "imp": [{"id": "1", "tagid": "t\u{7f}"}]}),
            "`imp[0].tagid`",
        ),
        (
            serde_json::json!({"id": "r", "imp": [{"id": "1"}], "user": {"id": "u\u{0}"}}),
            "`user.id`",
        ),
        (
            serde_json::json!({"id": long, "imp": [{"id": "1"}]}),
            "`id`",
        ),
    ];
    for (request, field) in requests {
        let (status, body) = post(&api, &request.to_string());
        assert_eq!(status, 400, "{request}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(field),
            "{request}: {body}"
        );
    }

    // SIGTERM, restart: every unusual id still has its spend, charged once.
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status =
        exit_within(&mut running.child, Duration::from_secs(60)).expect("exits on SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}");
    let running = Running::start(&pipeline, &state, &["--workers", "2"]);
    assert!(eventually(Duration::from_secs(60), || {
        http_get(&format!("{}/readyz", running.api)).is_some_and(|(s, _)| s == 200)
    }));
    // (Restored spend is in the live view by then; waiting a little longer only makes a loss
    // show as a timeout rather than as a race.)
    assert!(
        eventually(Duration::from_secs(30), || spends(&running.api, &ids)
            == expected),
        "spend after the restart {:?}, expected {expected:?}",
        spends(&running.api, &ids)
    );
}
