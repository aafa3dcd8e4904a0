//! Budget pacing against a running pipeline on a real broker: the reservation gate under
//! delayed billing events with two serving replicas, and the throttle with pause, resume and a
//! budget change, as seen through `GET /v1/campaigns/{id}` and `budget.status`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use adstream_operators::time::EventTime;
use chrono::Timelike;
use common::*;

fn campaign(id: &str, budget: u64, tz: &str, status: &str) -> String {
    format!(
        r#"{{"campaign_id":"{id}","advertiser_id":"adv-{id}","status":"{status}","daily_budget_micros":{budget},"timezone":"{tz}","billing":"cpm","bid_micros":10000000,"targeting":{{}},"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
    )
}

/// The win of `campaign` in a BidResponse: its token.
fn win_token(body: &serde_json::Value, campaign: &str) -> Option<String> {
    body["seatbid"][0]["bid"]
        .as_array()?
        .iter()
        .find(|b| b["cid"] == campaign)
        .and_then(|b| b["ext"]["billing_token"].as_str().map(String::from))
}

fn impression(req: &str, campaign: &str, token: &str) -> String {
    serde_json::json!({"event_id": format!("imp-{req}"), "ts": EventTime::now().millis(),
        "request_id": req, "imp_id": "1", "campaign_id": campaign, "ad_id": format!("{campaign}-ad"),
        "user_id": "u1", "billing_token": token})
    .to_string()
}

fn request(id: &str) -> String {
    format!(r#"{{"id":"{id}","imp":[{{"id":"1"}}],"user":{{"id":"u1"}},"tmax":500}}"#)
}

fn state(api: &str, campaign: &str) -> serde_json::Value {
    http_get(&format!("{api}/v1/campaigns/{campaign}"))
        .map(|(_, b)| b)
        .unwrap_or_default()
}

/// A burst of requests whose impressions all arrive late: the reservations stop the campaign
/// at its budget, across two serving replicas, before a single billing event has arrived.
#[test]
fn a_burst_with_late_billing_events_never_overspends() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_file(
        dir.path(),
        &broker.brokers(),
        "\n[serving]\nreserve_cpm = 0.01\n\n[pacing]\nenabled = false\n",
    );
    create_topics(&pipeline);
    let p = producer(&broker.brokers());
    // 10 micros per impression (the reserve price), 95 of budget: at most 9 wins.
    produce(
        &p,
        "ads.campaigns",
        "burst",
        Some(campaign("burst", 95, "UTC", "active").as_bytes()),
    );
    flush(&p);
    let state_dir = dir.path().join("state");
    let run = Running::start(&pipeline, &state_dir, &["--workers", "2"]);
    let api = run.api.clone();
    assert!(eventually(Duration::from_secs(60), || {
        http_get(&format!("{api}/v1/campaigns/burst")).is_some_and(|(s, _)| s == 200)
    }));

    let mut wins = Vec::new();
    for i in 0..100 {
        let req = format!("b{i}");
        let (_, body) = post(&api, &request(&req));
        if let Some(token) = win_token(&body, "burst") {
            wins.push((req, token));
        }
    }
    let n = wins.len() as u64;
    assert!(n * 10 <= 95, "{n} wins of 10 on a budget of 95");
    // Each replica keeps its share of the budget left: the campaign stops less than
    // replicas x charge short of its budget.
    assert!(
        n * 10 > 95 - 2 * 10,
        "only {n} wins: the gate held back too much"
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            let s = state(&api, "burst");
            s["reserved_micros"] == n * 10 && s["spend_micros"] == 0
        }),
        "{}",
        state(&api, "burst")
    );

    // The impressions arrive late (all after the burst): charged, settled, within budget.
    for (req, token) in &wins {
        produce(
            &p,
            "ads.impressions",
            req,
            Some(impression(req, "burst", token).as_bytes()),
        );
    }
    flush(&p);
    assert!(
        eventually(Duration::from_secs(30), || {
            let s = state(&api, "burst");
            s["spend_micros"] == n * 10 && s["reserved_micros"] == 0
        }),
        "{}",
        state(&api, "burst")
    );
    let (_, body) = post(&api, &request("after"));
    assert!(win_token(&body, "burst").is_none(), "{body}");
    let status = find_record(
        &broker.brokers(),
        "budget.status",
        "burst",
        Duration::from_secs(30),
        |d| {
            d["spend_micros"] == n * 10
                && d["reserved_micros"] == 0
                && d["pacing"]["mode"] == "asap"
        },
    );
    assert!(
        status.is_some(),
        "budget.status never showed the settled state"
    );
}

/// A time zone in which it is now between 08:00 and 16:00, far from the budget day's edges.
fn midday_zone() -> String {
    let hour = chrono::Utc::now().hour() as i32;
    let offset = 12 - hour; // local = UTC + offset is about noon
    match offset {
        0 => "Etc/GMT".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

/// The throttle engages once the campaign is ahead of its curve; pausing stops it at once;
/// resuming with a larger budget re-plans the rest of the day from what is committed, rather
/// than chasing the whole day's curve.
#[test]
fn pacing_throttles_pauses_resumes_and_replans() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_file(
        dir.path(),
        &broker.brokers(),
        "\n[serving]\nreserve_cpm = 0.01\n\n[pacing]\ninterval_ms = 200\nhorizon_ms = 1000\npublish_ms = 100\n",
    );
    create_topics(&pipeline);
    let p = producer(&broker.brokers());
    let tz = midday_zone();
    produce(
        &p,
        "ads.campaigns",
        "steady",
        Some(campaign("steady", 1_000_000, &tz, "active").as_bytes()),
    );
    flush(&p);
    let state_dir = dir.path().join("state");
    let run = Running::start(&pipeline, &state_dir, &[]);
    let api = run.api.clone();
    assert!(eventually(Duration::from_secs(60), || {
        state(&api, "steady")["pacing"]["mode"].is_string()
    }));

    // Created mid-day, it aims at its budget over the rest of the day: a few micros per second.
    // Wins at full participation put it ahead, and the controller throttles it.
    let mut i = 0;
    let throttled = eventually(Duration::from_secs(60), || {
        i += 1;
        post(&api, &request(&format!("s{i}")));
        let s = state(&api, "steady");
        s["pacing"]["mode"] == "paced" && s["pacing"]["pass_probability"].as_f64().unwrap() < 0.1
    });
    assert!(throttled, "{}", state(&api, "steady"));
    let mut wins = 0;
    for k in 0..200 {
        let (_, body) = post(&api, &request(&format!("t{k}")));
        wins += usize::from(win_token(&body, "steady").is_some());
    }
    assert!(wins < 50, "throttled to under 10% yet won {wins} of 200");
    assert!(
        find_record(
            &broker.brokers(),
            "budget.status",
            "steady",
            Duration::from_secs(30),
            |d| d["pacing"]["mode"] == "paced"
        )
        .is_some(),
        "budget.status carries no pacing state"
    );

    // Paused: shown at once, and no more wins.
    produce(
        &p,
        "ads.campaigns",
        "steady",
        Some(campaign("steady", 1_000_000, &tz, "paused").as_bytes()),
    );
    flush(&p);
    assert!(eventually(Duration::from_secs(30), || {
        let s = state(&api, "steady");
        s["pacing"]["mode"] == "paused" && s["pacing"]["pass_probability"] == 0.0
    }));
    for k in 0..20 {
        let (_, body) = post(&api, &request(&format!("p{k}")));
        assert!(
            win_token(&body, "steady").is_none(),
            "a paused campaign won"
        );
    }

    // Resumed with twice the budget at about noon, local time: the whole day's curve would be
    // near 1,000,000 by now; the re-planned one starts from what is committed.
    produce(
        &p,
        "ads.campaigns",
        "steady",
        Some(campaign("steady", 2_000_000, &tz, "active").as_bytes()),
    );
    flush(&p);
    assert!(
        eventually(Duration::from_secs(30), || {
            let s = state(&api, "steady");
            let committed = s["pacing"]["committed_micros"].as_u64().unwrap_or(u64::MAX);
            let target = s["pacing"]["target_micros"].as_u64().unwrap_or(u64::MAX);
            s["budget_micros"] == 2_000_000
                && s["pacing"]["mode"] != "paused"
                && target >= committed.saturating_sub(10)
                && target < committed + 50_000
        }),
        "{}",
        state(&api, "steady")
    );
}
