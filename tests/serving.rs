//! Serving against a running pipeline on a real broker: targeting, second-price arithmetic,
//! one win per advertiser, no fill, bad input, tokens charged by the ledger, budget exhaustion.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn campaign(id: &str, adv: &str, billing: &str, bid: u64, budget: u64, targeting: &str) -> String {
    format!(
        r#"{{"campaign_id":"{id}","advertiser_id":"{adv}","daily_budget_micros":{budget},"timezone":"UTC","billing":"{billing}","bid_micros":{bid},"targeting":{targeting},"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
    )
}

const US_DESKTOP: &str = r#"{"id":"REQ","imp":[{"id":"1"},{"id":"2"}],"device":{"geo":{"country":"US"},"devicetype":2},"user":{"id":"u1"},"site":{"id":"s"},"tmax":500}"#;

fn winners(body: &serde_json::Value) -> Vec<(String, String, u64, String)> {
    body["seatbid"][0]["bid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["impid"].as_str().unwrap().to_string(),
                b["cid"].as_str().unwrap().to_string(),
                b["ext"]["charge_micros"].as_u64().unwrap(),
                b["ext"]["billing_token"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn impression(req: &str, imp: &str, campaign: &str, token: &str) -> String {
    serde_json::json!({"event_id": format!("imp-{req}-{imp}"), "ts": adstream_operators::time::EventTime::now().millis(),
        "request_id": req, "imp_id": imp, "campaign_id": campaign, "ad_id": format!("{campaign}-ad"), "user_id": "u1",
        "billing_token": token})
    .to_string()
}

/// The `ads.served` documents of request `request_id`, waiting for `want` of them.
fn read_served(brokers: &str, request_id: &str, want: usize) -> Vec<serde_json::Value> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "it-served")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset("ads.served", p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let doc: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            if doc["request_id"] == request_id {
                found.push(doc);
            }
        }
    }
    found
}

#[test]
fn serving_end_to_end() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_file(
        dir.path(),
        &broker.brokers(),
        // Throttling off: this test checks auction arithmetic and the budget gate exactly.
        "\n[serving]\nreserve_cpm = 0.01\n\n[pacing]\nenabled = false\n",
    );
    create_topics(&pipeline);
    let p = producer(&broker.brokers());
    let defs = [
        (
            "us-a1",
            campaign(
                "us-a1",
                "A",
                "cpm",
                5_000_000,
                1_000_000_000,
                r#"{"countries":["US"]}"#,
            ),
        ),
        (
            "us-a2",
            campaign(
                "us-a2",
                "A",
                "cpm",
                4_000_000,
                1_000_000_000,
                r#"{"countries":["US"]}"#,
            ),
        ),
        (
            "us-b",
            campaign(
                "us-b",
                "B",
                "cpm",
                3_000_000,
                25,
                r#"{"countries":["US"],"devices":["desktop"]}"#,
            ),
        ),
        (
            "fr-c",
            campaign(
                "fr-c",
                "C",
                "cpc",
                100_000,
                1_000_000_000,
                r#"{"countries":["FR"]}"#,
            ),
        ),
    ];
    for (id, doc) in &defs {
        produce(&p, "ads.campaigns", id, Some(doc.as_bytes()));
    }
    flush(&p);
    let state = dir.path().join("state");
    let run = Running::start(&pipeline, &state, &["--workers", "2"]);
    let api = run.api.clone();
    // Every campaign is known (each partition of the campaigns topic is read by its own worker).
    for (id, _) in &defs {
        assert!(
            eventually(Duration::from_secs(60), || http_get(&format!(
                "{api}/v1/campaigns/{id}"
            ))
            .is_some_and(|(s, _)| s == 200)),
            "{id} never appeared"
        );
    }

    // Two slots: A wins the first at B's price, B the second at the reserve (A cannot win twice).
    let (status, body) = post(&api, &US_DESKTOP.replace("REQ", "q1"));
    assert_eq!(status, 200, "{body}");
    let w = winners(&body);
    assert_eq!(w.len(), 2, "{body}");
    assert_eq!(
        (w[0].0.as_str(), w[0].1.as_str(), w[0].2),
        ("1", "us-a1", 3_000),
        "{body}"
    );
    assert_eq!(
        (w[1].0.as_str(), w[1].1.as_str(), w[1].2),
        ("2", "us-b", 10),
        "{body}"
    );
    assert_eq!(body["seatbid"][0]["bid"][0]["price"].as_f64().unwrap(), 3.0);

    // CPC in France: eCPM = 100_000 x 0.02 x 1000; price at the reserve, per click.
    let (status, body) = post(
        &api,
        r#"{"id":"q-fr","imp":[{"id":"1"}],"device":{"geo":{"country":"FR"}}}"#,
    );
    assert_eq!(status, 200, "{body}");
    let fr = winners(&body);
    assert_eq!((fr[0].1.as_str(), fr[0].2), ("fr-c", 500));
    assert_eq!(body["seatbid"][0]["bid"][0]["ext"]["billing"], "cpc");

    // No fill, floors, bad input.
    assert_eq!(
        post(
            &api,
            r#"{"id":"q-jp","imp":[{"id":"1"}],"device":{"geo":{"country":"JP"}}}"#
        )
        .0,
        204
    );
    assert_eq!(
        post(
            &api,
            r#"{"id":"q-fl","imp":[{"id":"1","bidfloor":100}],"device":{"geo":{"country":"FR"}}}"#
        )
        .0,
        204
    );
    let (status, body) = post(&api, r#"{"id":"bad","imp":[{"id":"1","bidfloor":"x"}]}"#);
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("imp[0].bidfloor"),
        "{body}"
    );
    assert_eq!(post(&api, "{not json").0, 400);
    assert_eq!(post(&api, &"x".repeat(100 * 1024)).0, 413);

    // Every win was logged to ads.served with the features and predictions used.
    let served = read_served(&broker.brokers(), "q1", 2);
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(served.iter().all(|d| d["country"] == "US"
        && d["device"] == "desktop"
        && d["model_version"] == "prior"));
    assert!(served.iter().any(|d| d["campaign_id"] == "us-a1"
        && d["charge_micros"] == 3_000
        && d["pctr"].as_f64().is_some()));

    // The tokens are charged by the ledger: us-a1 pays the second price.
    produce(
        &p,
        "ads.impressions",
        "q1",
        Some(impression("q1", "1", "us-a1", &w[0].3).as_bytes()),
    );
    flush(&p);
    assert!(eventually(Duration::from_secs(30), || {
        http_get(&format!("{api}/v1/campaigns/us-a1"))
            .is_some_and(|(_, b)| b["spend_micros"] == 3_000)
    }));

    // The budget gate: us-b (budget 25, 10 per impression) holds q1's win. It keeps winning
    // until its reservations would pass the budget, before any impression of its wins has
    // arrived: at most 2 wins. (Each of the 2 serving replicas may reserve only its half of the
    // budget left beside the other's reservations, so it may stop after 1.)
    let mut tokens = vec![(String::from("q1"), w[1].3.clone())];
    for i in 0..10 {
        let req = format!("qb{i}");
        let (_, body) = post(&api, &US_DESKTOP.replace("REQ", &req));
        match winners(&body).into_iter().find(|w| w.1 == "us-b") {
            Some(win) => tokens.push((req, win.3)),
            None => break,
        }
    }
    let wins = tokens.len() as u64;
    assert!(
        wins <= 2,
        "us-b won {wins} times on a budget of 2.5 charges"
    );
    // The API shows the reservations and the pacing state, broadcast by pacing.
    assert!(
        eventually(Duration::from_secs(30), || {
            http_get(&format!("{api}/v1/campaigns/us-b")).is_some_and(|(_, b)| {
                b["reserved_micros"] == 10 * wins
                    && b["remaining_micros"] == 25 - 10 * wins
                    && b["pacing"]["mode"] == "asap"
                    && b["pacing"]["committed_micros"] == 10 * wins
            })
        }),
        "{:?}",
        http_get(&format!("{api}/v1/campaigns/us-b"))
    );
    // The impressions arrive: charged and settled, and no room is left for another charge.
    for (req, token) in &tokens {
        produce(
            &p,
            "ads.impressions",
            req,
            Some(impression(req, "2", "us-b", token).as_bytes()),
        );
    }
    flush(&p);
    assert!(
        eventually(Duration::from_secs(30), || {
            http_get(&format!("{api}/v1/campaigns/us-b"))
                .is_some_and(|(_, b)| b["spend_micros"] == 10 * wins && b["reserved_micros"] == 0)
        }),
        "{:?}",
        http_get(&format!("{api}/v1/campaigns/us-b"))
    );
    if wins == 2 {
        let (_, body) = post(&api, &US_DESKTOP.replace("REQ", "after"));
        assert!(
            winners(&body).iter().all(|w| w.1 != "us-b"),
            "us-b won beyond its budget: {body}"
        );
    }
}
