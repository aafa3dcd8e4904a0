//! Serving against a running pipeline on a real broker: targeting, second-price arithmetic,
//! one win per advertiser, no fill, bad input, tokens charged by the ledger, budget exhaustion.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn campaign(id: &str, adv: &str, billing: &str, bid: u64, budget: u64, targeting: &str) -> String {
    let zone = campaign_zone();
    format!(
        r#"{{"campaign_id":"{id}","advertiser_id":"{adv}","daily_budget_micros":{budget},"timezone":"{zone}","billing":"{billing}","bid_micros":{bid},"targeting":{targeting},"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
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

    // User history: u1 clicks q1's us-a1 ad (twice: a repeated event counts once). The graph's
    // user-history state reaches the serving replicas, and u1's next served ads log it as the
    // ranker's history features.
    let click = serde_json::json!({"event_id": "clk-q1-1", "ts": adstream_operators::time::EventTime::now().millis(),
        "request_id": "q1", "imp_id": "1", "campaign_id": "us-a1", "ad_id": "us-a1-ad", "user_id": "u1",
        "billing_token": w[0].3})
    .to_string();
    for _ in 0..2 {
        produce(&p, "ads.clicks", "q1", Some(click.as_bytes()));
    }
    flush(&p);
    let mut seen = serde_json::Value::Null;
    let mut logged = false;
    for i in 0..60 {
        let req = format!("hist{i}");
        post(&api, &US_DESKTOP.replace("REQ", &req));
        let Some(doc) = read_served(&broker.brokers(), &req, 1).pop() else {
            continue;
        };
        seen = doc["history"].clone();
        if seen["clicked_campaigns"] == serde_json::json!(["us-a1"]) {
            logged = true;
            break;
        }
    }
    assert!(logged, "u1's click never reached serving's history: {seen}");
    assert_eq!(
        seen["clicked_advertisers"],
        serde_json::json!(["A"]),
        "{seen}"
    );
    assert_eq!(
        seen["clicks_24h"], 1,
        "the repeated click counts once: {seen}"
    );
    assert!(seen["impressions_24h"].as_u64() >= Some(1), "{seen}");
}

/// A typed campaign of advertiser `adv` for the formats test: US only, CPM, with `extra` fields
/// (creatives, brand) spliced in.
fn typed(id: &str, adv: &str, bid: u64, extra: &str) -> String {
    let zone = campaign_zone();
    format!(
        r#"{{"campaign_id":"{id}","advertiser_id":"{adv}","daily_budget_micros":1000000000,"timezone":"{zone}","billing":"cpm","bid_micros":{bid},"targeting":{{"countries":["US"]}},{extra}}}"#
    )
}

/// GETs `url`; its status.
fn get_status(url: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().status().as_u16() })
}

/// What real exchanges send: banner, video, native and audio imps (OpenRTB 2.6, alpha-3
/// countries), block lists, floors in another currency, and billing notices fired twice.
#[test]
fn formats_brand_safety_currency_and_billing_notices() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_file(
        dir.path(),
        &broker.brokers(),
        "\n[serving]\nno_bid = \"nbr\"\n\n[pacing]\nenabled = false\n\n[currency]\naccount = \"USD\"\nrates = { EUR = 2.0 }\n",
    );
    create_topics(&pipeline);
    let p = producer(&broker.brokers());
    let defs = [
        (
            "disp",
            typed(
                "disp",
                "D",
                3_000_000,
                r#""adomain":["disp.com"],"cat":["IAB1"],"creatives":[{"ad_id":"disp-300","w":300,"h":250,"adm":"<a href='https://disp.com'><img src='https://cdn/300.png'></a>"},{"ad_id":"disp-728","w":728,"h":90,"adm":"<img>"}]"#,
            ),
        ),
        (
            "vid",
            typed(
                "vid",
                "V",
                4_000_000,
                r#""adomain":["vid.com"],"cat":["IAB9-7"],"creatives":[{"ad_id":"vid-15","type":"video","mimes":["video/mp4"],"duration":15,"protocols":[2,3,7],"adm":"<VAST version=\"3.0\"></VAST>"}]"#,
            ),
        ),
        (
            "nat",
            typed(
                "nat",
                "N",
                2_000_000,
                r#""adomain":["nat.com"],"cat":["IAB2"],"creatives":[{"ad_id":"nat-1","type":"native","native":{"title":"Ten tips","sponsored":"Nat","image":{"url":"https://cdn/n.png","w":1200,"h":627},"click_url":"https://nat.com/tips"}}]"#,
            ),
        ),
        (
            "aud",
            typed(
                "aud",
                "A",
                2_500_000,
                r#""adomain":["aud.com"],"cat":["IAB3"],"creatives":[{"ad_id":"aud-30","type":"audio","mimes":["audio/mpeg"],"duration":30,"nurl":"https://aud.com/vast"}]"#,
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
    for (id, _) in &defs {
        assert!(
            eventually(Duration::from_secs(60), || http_get(&format!(
                "{api}/v1/campaigns/{id}"
            ))
            .is_some_and(|(s, _)| s == 200)),
            "campaign {id} never became known"
        );
    }
    let request = |id: &str, imp: &str, extra: &str| {
        format!(
            r#"{{"id":"{id}","imp":[{imp}],"device":{{"geo":{{"country":"USA"}},"devicetype":2}},"user":{{"id":"u 1"}},"site":{{"id":"s","domain":"news.example"}},"tmax":500{extra}}}"#
        )
    };
    let bid_of = |body: &serde_json::Value| body["seatbid"][0]["bid"][0].clone();
    // The serving replicas may lag the catalog by a tick: wait for the first fill.
    let banner = request(
        "b1",
        r#"{"id":"1","banner":{"w":300,"h":250,"format":[{"w":300,"h":250},{"w":320,"h":50}]},"bidfloor":0.5}"#,
        "",
    );
    let mut answer = (0, serde_json::Value::Null);
    assert!(
        eventually(Duration::from_secs(30), || {
            answer = post(
                &api,
                &banner.replace("\"b1\"", &format!("\"b1-{}\"", rand_id())),
            );
            answer.0 == 200 && answer.1["seatbid"].is_array()
        }),
        "{answer:?}"
    );
    let (_, body) = post(&api, &banner);
    let bid = bid_of(&body);
    assert_eq!(body["cur"], "USD");
    assert_eq!(bid["cid"], "disp");
    assert_eq!(bid["crid"], "disp-300", "the creative of the slot's size");
    assert_eq!(
        (bid["mtype"].as_u64(), bid["w"].as_u64(), bid["h"].as_u64()),
        (Some(1), Some(300), Some(250))
    );
    assert!(bid["adm"].as_str().unwrap().contains("disp.com"));
    assert_eq!(bid["adomain"], serde_json::json!(["disp.com"]));
    assert_eq!(bid["cat"], serde_json::json!(["IAB1"]));
    let burl = bid["burl"].as_str().unwrap().to_string();
    assert!(
        burl.starts_with(&format!("{api}/v1/billing?token=")),
        "{burl}"
    );
    assert!(burl.ends_with("&u=u+1"), "{burl}");
    let charge = bid["ext"]["charge_micros"].as_u64().unwrap();
    assert!(charge > 0);

    // Video, native, audio: each gets the one creative of its kind.
    let (_, body) = post(
        &api,
        &request(
            "v1",
            r#"{"id":"1","video":{"mimes":["video/mp4","video/webm"],"minduration":5,"maxduration":30,"protocols":[3,6],"w":640,"h":480}}"#,
            "",
        ),
    );
    let bid = bid_of(&body);
    assert_eq!(
        (bid["cid"].as_str(), bid["mtype"].as_u64()),
        (Some("vid"), Some(2))
    );
    assert!(bid["adm"].as_str().unwrap().starts_with("<VAST"));
    assert_eq!(
        (bid["w"].as_u64(), bid["h"].as_u64()),
        (Some(640), Some(480))
    );
    let native_request = serde_json::json!({"ver":"1.2","assets":[{"id":1,"required":1,"title":{"len":90}},{"id":2,"required":1,"img":{"type":3,"wmin":600,"hmin":314}},{"id":3,"data":{"type":1}}]}).to_string();
    let native_imp =
        serde_json::json!({"id":"1","native":{"request":native_request,"ver":"1.2"}}).to_string();
    let (_, body) = post(&api, &request("n1", &native_imp, ""));
    let bid = bid_of(&body);
    assert_eq!(
        (bid["cid"].as_str(), bid["mtype"].as_u64()),
        (Some("nat"), Some(4))
    );
    let adm: serde_json::Value = serde_json::from_str(bid["adm"].as_str().unwrap()).unwrap();
    assert_eq!(adm["link"]["url"], "https://nat.com/tips");
    assert_eq!(adm["assets"].as_array().unwrap().len(), 3);
    let (_, body) = post(
        &api,
        &request(
            "a1",
            r#"{"id":"1","audio":{"mimes":["audio/mpeg"],"maxduration":60}}"#,
            "",
        ),
    );
    let bid = bid_of(&body);
    assert_eq!(
        (bid["cid"].as_str(), bid["mtype"].as_u64()),
        (Some("aud"), Some(3))
    );
    assert_eq!(bid["nurl"], "https://aud.com/vast");
    assert!(bid.get("adm").is_none());

    // Block lists: the video campaign's category and the display advertiser's domain.
    let video_imp = r#"{"id":"1","video":{"mimes":["video/mp4"]}}"#;
    let (status, body) = post(&api, &request("x1", video_imp, r#","bcat":["IAB9"]"#));
    assert_eq!((status, body["nbr"].as_u64()), (200, Some(502)), "{body}");
    let banner_imp = r#"{"id":"1","banner":{"w":300,"h":250}}"#;
    let (_, body) = post(&api, &request("x2", banner_imp, r#","badv":["DISP.com"]"#));
    assert_eq!(body["nbr"], 502);
    let (_, body) = post(&api, &request("x3", banner_imp, r#","bseat":["adstream"]"#));
    assert_eq!(body["nbr"], 503);
    let (_, body) = post(&api, &request("x4", banner_imp, r#","wseat":["other"]"#));
    assert_eq!(body["nbr"], 503);
    // A banner slot no creative fits.
    let (_, body) = post(
        &api,
        &request("x5", r#"{"id":"1","banner":{"w":160,"h":600}}"#, ""),
    );
    assert_eq!(body["nbr"], 501);

    // Currency: a floor of 1 EUR is 2 USD; the response in EUR, priced at that floor.
    let (_, body) = post(
        &api,
        &request(
            "e1",
            r#"{"id":"1","banner":{"w":300,"h":250},"bidfloor":1.0,"bidfloorcur":"EUR"}"#,
            r#","cur":["EUR"]"#,
        ),
    );
    assert_eq!(body["cur"], "EUR", "{body}");
    assert!(
        (bid_of(&body)["price"].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "{body}"
    );
    let (_, body) = post(
        &api,
        &request(
            "e2",
            r#"{"id":"1","banner":{"w":300,"h":250},"bidfloor":1.0,"bidfloorcur":"XYZ"}"#,
            "",
        ),
    );
    assert_eq!(body["nbr"], 504);
    assert!(
        metric(
            &api,
            "adstream_skipped_imps_total{reason=\"unknown_currency\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    let (_, body) = post(&api, &request("e3", banner_imp, r#","cur":["CHF"]"#));
    assert_eq!(body["nbr"], 504);

    // Debug: every campaign's part in the request (no admin token is set in this pipeline).
    let (_, body) = post(&api, &request("d1", banner_imp, r#","ext":{"debug":true}"#));
    let explained: Vec<(String, String)> = body["ext"]["debug"]["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["campaign_id"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("aud", "format"),
        ("disp", "won"),
        ("nat", "format"),
        ("vid", "format"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(explained, expected);

    // The billing notice of b1's win, fired twice, and the impression of the same win: billed once.
    assert_eq!(get_status(&burl), 204);
    assert_eq!(get_status(&burl), 204);
    assert!(eventually(Duration::from_secs(30), || {
        http_get(&format!("{api}/v1/campaigns/disp"))
            .is_some_and(|(_, b)| b["spend_micros"] == charge)
    }));
    let token = burl
        .split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    produce(
        &p,
        "ads.impressions",
        "b1",
        Some(serde_json::json!({"event_id": "logger-b1", "ts": adstream_operators::time::EventTime::now().millis(),
            "request_id": "b1", "imp_id": "1", "campaign_id": "disp", "ad_id": "disp-300", "user_id": "u 1",
            "billing_token": token}).to_string().as_bytes()),
    );
    flush(&p);
    assert!(
        eventually(Duration::from_secs(30), || metric(
            &api,
            "adstream_dead_letters_total{reason=\"duplicate\"}"
        )
        .unwrap_or(0.0)
            >= 1.0),
        "the logger's impression of a billed win is a duplicate"
    );
    let (_, state) = http_get(&format!("{api}/v1/campaigns/disp")).unwrap();
    assert_eq!(state["spend_micros"], charge, "{state}");
    // Forged or missing tokens are refused.
    assert_eq!(
        get_status(&format!("{api}/v1/billing?token=v1.e30.AAAA")),
        400
    );
    assert_eq!(get_status(&format!("{api}/v1/billing")), 400);
    assert_eq!(
        metric(
            &api,
            "adstream_billing_notices_total{outcome=\"published\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&api, "adstream_billing_notices_total{outcome=\"repeat\"}"),
        Some(1.0)
    );
}

/// A fresh suffix for request ids.
fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
