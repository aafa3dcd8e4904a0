//! Advertisers' money under the faults of a real exchange and logging fleet, against a running
//! pipeline on a real broker: a late click flood billed no more than the budget (the rest
//! reported as overdelivery), event times far from their win, prices above the bid and absurd
//! campaigns refused, a time-zone change at local noon that must not reopen the day, forged
//! served records, and the development secret.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use adstream_operators::events::Billing;
use adstream_operators::time::EventTime;
use chrono::Timelike;
use common::*;

fn campaign(id: &str, billing: &str, budget: u64, bid: u64, tz: &str) -> String {
    format!(
        r#"{{"campaign_id":"{id}","advertiser_id":"adv-{id}","status":"active","daily_budget_micros":{budget},"timezone":"{tz}","billing":"{billing}","bid_micros":{bid},"targeting":{{}},"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
    )
}

fn state(api: &str, campaign: &str) -> serde_json::Value {
    http_get(&format!("{api}/v1/campaigns/{campaign}"))
        .map(|(_, b)| b)
        .unwrap_or_default()
}

fn start(dir: &std::path::Path, broker: &Broker, extra: &str) -> (std::path::PathBuf, Running) {
    let pipeline = pipeline_file(dir, &broker.brokers(), extra);
    create_topics(&pipeline);
    let run = Running::start(&pipeline, &dir.join("state"), &[]);
    (pipeline, run)
}

/// The dead letter of the message keyed `key`, once it has been published.
fn dead_letter(broker: &Broker, key: &str) -> serde_json::Value {
    find_dead_letter(&broker.brokers(), key, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no dead letter for {key}"))
}

/// A CPC and a CPM campaign whose billing events all arrive after their budgets are spent, at a
/// far higher rate than any prediction: each is billed exactly its budget; the rest is reported
/// as overdelivery by the API, `budget.status`, the reports and the metrics.
#[test]
fn a_late_click_flood_bills_the_budget_and_reports_the_rest_as_overdelivery() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, run) = start(dir.path(), &broker, "\n[pacing]\nenabled = false\n");
    let p = producer(&broker.brokers());
    let budgets = [
        ("flood-cpc", "cpc", 1_000_000u64),
        ("flood-cpm", "cpm", 5_000_000),
    ];
    for (id, billing, budget) in budgets {
        produce(
            &p,
            "ads.campaigns",
            id,
            Some(campaign(id, billing, budget, 10_000_000, "UTC").as_bytes()),
        );
    }
    flush(&p);
    wait_for_campaign(&run.api, "flood-cpc");
    wait_for_campaign(&run.api, "flood-cpm");
    // 300 clicks of 9,999 micros (2.99 budgets), 700 impressions of 9,999 (1.4 budgets).
    let now = EventTime::now();
    let mut delivered = std::collections::BTreeMap::new();
    for (id, billing, n, topic) in [
        ("flood-cpc", Billing::Cpc, 300, "ads.clicks"),
        ("flood-cpm", Billing::Cpm, 700, "ads.impressions"),
    ] {
        for i in 0..n {
            let rid = format!("{id}-{i}");
            let c = claims(&rid, id, &format!("adv-{id}"), billing, 9_999, now);
            let event = ad_event(
                &format!("e-{rid}"),
                EventTime(now.millis() + 1_000),
                "u1",
                &c,
                Some(token(&c)),
            );
            produce(&p, topic, &rid, Some(event.as_bytes()));
            *delivered.entry(id).or_insert(0u64) += 9_999;
        }
    }
    flush(&p);
    for (id, _, budget) in budgets {
        let over = delivered[id] - budget;
        assert!(
            eventually(Duration::from_secs(60), || {
                let s = state(&run.api, id);
                s["spend_micros"] == budget && s["overdelivery_micros"] == over
            }),
            "{id}: {}",
            state(&run.api, id)
        );
        assert_eq!(state(&run.api, id)["remaining_micros"], 0);
        let status = find_record(
            &broker.brokers(),
            "budget.status",
            id,
            Duration::from_secs(60),
            |d| d["spend_micros"] == budget && d["overdelivery_micros"] == over,
        );
        assert!(status.is_some(), "{id}: budget.status never showed it");
    }
    // The reports split the same amounts, and the metrics count them.
    assert!(
        eventually(Duration::from_secs(60), || {
            let rows = report_rows(&broker.brokers(), "report.campaign_minute");
            let spend = sum_by(&rows, "campaign_id", "spend_micros");
            let over = sum_by(&rows, "campaign_id", "overdelivery_micros");
            budgets.iter().all(|(id, _, budget)| {
                spend.get(*id) == Some(&(*budget as i64))
                    && over.get(*id) == Some(&((delivered[id] - budget) as i64))
            })
        }),
        "the report rows do not add up to the ledger"
    );
    let metrics = http_text(&format!("{}/metrics", run.api)).unwrap();
    assert!(
        metrics.contains(&format!(
            "adstream_charged_micros_total{{billing=\"cpc\",part=\"overdelivery\"}} {}",
            delivered["flood-cpc"] - 1_000_000
        )),
        "{metrics}"
    );
}

/// Billing events whose time is far from their win's (a timestamp in seconds, a day ahead, two
/// days behind), a price above the campaign's bid, and a campaign with absurd money are each
/// dead-lettered with their own reason; only the valid event is charged.
#[test]
fn charges_are_checked_against_the_win_they_claim() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, run) = start(dir.path(), &broker, "");
    let p = producer(&broker.brokers());
    // CPM at 10 per mille: at most 10,000 micros per impression.
    produce(
        &p,
        "ads.campaigns",
        "checked",
        Some(campaign("checked", "cpm", 1_000_000_000, 10_000_000, "UTC").as_bytes()),
    );
    let huge = campaign("huge", "cpc", u64::MAX, u64::MAX, "UTC");
    produce(&p, "ads.campaigns", "huge", Some(huge.as_bytes()));
    flush(&p);
    wait_for_campaign(&run.api, "checked");
    let now = EventTime::now().millis();
    let hour = 3_600_000;
    let cases: [(&str, i64, u64, &str); 5] = [
        ("in-seconds", now / 1000, 5_000, "bad_event_time"),
        ("tomorrow", now + 23 * hour, 5_000, "bad_event_time"),
        ("two-days-ago", now - 48 * hour, 5_000, "bad_event_time"),
        ("above-bid", now, 1_000_000_000_000, "price_above_bid"),
        ("valid", now + 1_000, 5_000, ""),
    ];
    for (rid, ts, price, _) in cases {
        let c = claims(
            rid,
            "checked",
            "adv-checked",
            Billing::Cpm,
            price,
            EventTime(now),
        );
        let event = ad_event(
            &format!("e-{rid}"),
            EventTime(ts),
            "u1",
            &c,
            Some(token(&c)),
        );
        produce(&p, "ads.impressions", rid, Some(event.as_bytes()));
    }
    flush(&p);
    for (rid, _, _, reason) in cases {
        if !reason.is_empty() {
            let d = dead_letter(&broker, rid);
            assert_eq!(d["reason"], reason, "{rid}: {d}");
        }
    }
    assert_eq!(dead_letter(&broker, "huge")["reason"], "invalid_field");
    assert!(
        eventually(Duration::from_secs(30), || state(&run.api, "checked")
            ["spend_micros"]
            == 5_000),
        "{}",
        state(&run.api, "checked")
    );
    // Nothing was charged to another day either.
    let (_, all) = http_get(&format!("{}/v1/campaigns", run.api)).unwrap();
    let listed = all.as_array().cloned().unwrap_or_default();
    assert!(
        listed.iter().all(|c| c["campaign_id"] != "huge"),
        "the absurd campaign was listed: {all}"
    );
}

/// The fixed-offset zone (`Etc/GMT...`, whose sign is inverted) `hours` east of UTC.
fn zone(hours: i32) -> String {
    match hours {
        0 => "Etc/UTC".into(),
        h if h > 0 => format!("Etc/GMT-{h}"),
        h => format!("Etc/GMT+{}", -h),
    }
}

/// A campaign at local noon switches to a zone where it is already another date: the day whose
/// budget is spent stays the budget day until it ends, so the budget is not spent twice.
#[test]
fn a_time_zone_change_at_local_noon_does_not_reopen_the_budget() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, run) = start(dir.path(), &broker, "\n[pacing]\nenabled = false\n");
    let p = producer(&broker.brokers());
    let hour = chrono::Utc::now().hour() as i32;
    let here = 12 - hour; // local noon, give or take the minutes
                          // Thirteen hours east is tomorrow there; thirteen west is yesterday.
    let there = if here <= 1 { here + 13 } else { here - 13 };
    let budget = 100_000u64;
    produce(
        &p,
        "ads.campaigns",
        "zoned",
        Some(campaign("zoned", "cpm", budget, 10_000_000, &zone(here)).as_bytes()),
    );
    flush(&p);
    wait_for_campaign(&run.api, "zoned");
    let day = state(&run.api, "zoned")["day"].clone();
    let mut sent = 0;
    let mut impression = |p: &rdkafka::producer::BaseProducer, n: u64| {
        for _ in 0..n {
            let rid = format!("z-{sent}");
            sent += 1;
            let now = EventTime::now();
            let c = claims(&rid, "zoned", "adv-zoned", Billing::Cpm, 10_000, now);
            let e = ad_event(&format!("e-{rid}"), now, "u1", &c, Some(token(&c)));
            produce(p, "ads.impressions", &rid, Some(e.as_bytes()));
        }
        flush(p);
    };
    impression(&p, 10);
    assert!(eventually(Duration::from_secs(30), || {
        state(&run.api, "zoned")["spend_micros"] == budget
    }));
    produce(
        &p,
        "ads.campaigns",
        "zoned",
        Some(campaign("zoned", "cpm", budget, 10_000_000, &zone(there)).as_bytes()),
    );
    flush(&p);
    // The change is known, and scheduled for the end of the day, not applied now.
    assert!(
        eventually(Duration::from_secs(30), || {
            state(&run.api, "zoned")["timezone_change"]["timezone"] == zone(there)
        }),
        "{}",
        state(&run.api, "zoned")
    );
    assert_eq!(state(&run.api, "zoned")["timezone"], zone(here));
    // Wins issued after the change still belong to the day already spent.
    impression(&p, 10);
    assert!(
        eventually(Duration::from_secs(30), || {
            let s = state(&run.api, "zoned");
            s["overdelivery_micros"] == 10 * 10_000
        }),
        "{}",
        state(&run.api, "zoned")
    );
    let s = state(&run.api, "zoned");
    assert_eq!(s["day"], day, "{s}");
    assert_eq!(s["spend_micros"], budget, "{s}");
    assert_eq!(s["remaining_micros"], 0, "{s}");
}

/// Served records read back from `ads.served` that this pipeline did not write (no token, a
/// token of another key, a real token on a record dated ahead) are dead-lettered, not joined.
#[test]
fn forged_served_records_are_dead_lettered() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, _run) = start(dir.path(), &broker, "");
    let p = producer(&broker.brokers());
    let now = EventTime::now();
    let c = claims("sv-ahead", "c1", "a1", Billing::Cpc, 100, now);
    let record = |rid: &str, ts: i64, token: Option<String>| {
        let mut doc = serde_json::json!({
            "request_id": rid, "imp_id": "1", "ts": ts, "campaign_id": "c1",
            "advertiser_id": "a1", "ad_id": "c1-ad", "billing": "cpc", "charge_micros": 100,
            "price_ecpm_micros": 100, "pctr": 0.5, "pcvr": 0.5, "model_version": "forged",
            "user_id": "u", "country": null, "device": null, "interests": [], "tag_id": null,
        });
        if let Some(t) = token {
            doc["billing_token"] = t.into();
        }
        doc.to_string()
    };
    let other_key = adstream_operators::token::sign(
        b"not-the-pipeline-secret",
        &claims("sv-other", "c1", "a1", Billing::Cpc, 100, now),
    );
    let cases = [
        (
            "sv-none",
            record("sv-none", now.millis(), None),
            "missing_token",
        ),
        (
            "sv-other",
            record("sv-other", now.millis(), Some(other_key)),
            "bad_token",
        ),
        (
            "sv-ahead",
            record("sv-ahead", now.millis() + 86_400_000, Some(token(&c))),
            "token_mismatch",
        ),
    ];
    for (key, body, _) in &cases {
        produce(&p, "ads.served", key, Some(body.as_bytes()));
    }
    flush(&p);
    for (key, _, reason) in cases {
        let d = dead_letter(&broker, key);
        assert_eq!(d["reason"], reason, "{key}: {d}");
        assert_eq!(d["topic"], "ads.served", "{d}");
    }
}

/// `run` refuses the development secret shipped in `pipelines/ads.toml` unless the pipeline
/// allows it explicitly, before touching Kafka.
#[test]
fn run_refuses_the_development_secret() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_file(dir.path(), "127.0.0.1:9", "");
    let text = std::fs::read_to_string(&pipeline)
        .unwrap()
        .replace(SECRET, adstream::pipeline::DEVELOPMENT_SECRET);
    std::fs::write(&pipeline, text).unwrap();
    let out = adstream()
        .arg("run")
        .arg(&pipeline)
        .args(["--state-dir"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("allow_development_secret"), "{stderr}");
}
