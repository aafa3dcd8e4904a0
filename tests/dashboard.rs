//! The dashboard in a real browser: a pipeline on a real broker serves traffic, and headless
//! Chromium (Debian's `chromium`, installed by `deploy/local/test.sh`) loads `GET /`, runs the
//! page's JavaScript against `GET /v1/dashboard`, renders every chart with data, and takes a
//! screenshot (`target/tmp/dashboard.png`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use adstream_operators::time::EventTime;
use common::*;

const REQUEST: &str = r#"{"id":"REQ","imp":[{"id":"1"}],"device":{"geo":{"country":"US"},"devicetype":2},"user":{"id":"u1"},"site":{"id":"s"},"tmax":500}"#;

fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into()));
    let found = Command::new(&path).arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{} not found: install Debian's chromium (deploy/local/test.sh does) or set CHROMIUM",
        path.display()
    );
    path
}

/// Runs headless Chromium on `url` with `args`; its stdout.
fn headless(browser: &Path, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
            // Virtual time: the page's timers and fetches run until 6 s of page time passed.
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `attr` on the element whose text before it contains `marker`.
fn attr_after(dom: &str, marker: &str, attr: &str) -> Option<i64> {
    let at = dom.find(marker)?;
    let tag_start = dom[..at].rfind('<')?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[tag_start..tag_end];
    let value = tag.split(&format!("{attr}=\"")).nth(1)?.split('"').next()?;
    value.parse().ok()
}

#[test]
fn dashboard_renders_live_charts_in_chromium() {
    let browser = chromium();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_file(
        dir.path(),
        &broker.brokers(),
        "\n[pacing]\nenabled = false\n",
    );
    create_topics(&pipeline);
    let p = producer(&broker.brokers());
    for (id, adv) in [("dash-1", "a1"), ("dash-2", "a2")] {
        let zone = campaign_zone();
        let c = format!(
            r#"{{"campaign_id":"{id}","advertiser_id":"{adv}","daily_budget_micros":50000000,"timezone":"{zone}","billing":"cpm","bid_micros":2000000,"creatives":[{{"ad_id":"{id}-ad"}}]}}"#
        );
        produce(&p, "ads.campaigns", id, Some(c.as_bytes()));
    }
    flush(&p);
    let run = Running::start(&pipeline, &dir.path().join("state"), &[]);
    let api = run.api.clone();
    assert!(eventually(Duration::from_secs(60), || {
        http_get(&format!("{api}/v1/campaigns/dash-2")).is_some_and(|(s, _)| s == 200)
    }));
    // Traffic: requests, impressions of the wins, and one malformed message (a dead letter).
    produce(&p, "ads.impressions", "junk", Some(b"{not json"));
    let mut n = 0;
    let ready = eventually(Duration::from_secs(90), || {
        for _ in 0..20 {
            n += 1;
            let (status, body) = post(&api, &REQUEST.replace("REQ", &format!("req-{n}")));
            if status != 200 {
                continue;
            }
            let bid = &body["seatbid"][0]["bid"][0];
            let event = serde_json::json!({"event_id": format!("imp-{n}"), "ts": EventTime::now().millis(),
                "request_id": format!("req-{n}"), "imp_id": "1", "campaign_id": bid["cid"], "ad_id": bid["adid"],
                "user_id": "u1", "billing_token": bid["ext"]["billing_token"]});
            produce(
                &p,
                "ads.impressions",
                &format!("req-{n}"),
                Some(event.to_string().as_bytes()),
            );
        }
        flush(&p);
        let Some((200, doc)) = http_get(&format!("{api}/v1/dashboard")) else {
            return false;
        };
        let spent = doc["campaigns"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["spend_micros"].as_u64() > Some(0)));
        let samples = doc["traffic"]["t"].as_array().map_or(0, Vec::len);
        let dead = doc["dead_letters"]["by_reason"]["malformed_json"].as_u64() > Some(0);
        spent && samples >= 3 && dead
    });
    assert!(ready, "the dashboard's history never filled");

    let url = format!("{api}/");
    let dom = headless(&browser, &url, &["--dump-dom"]);
    assert!(dom.contains("adstream dashboard"), "{dom}");
    let updated = attr_after(&dom, "<body", "data-updated").unwrap_or(0);
    assert!(updated >= 1, "the page never rendered data: {dom}");
    assert_eq!(
        attr_after(&dom, "<body", "data-campaigns"),
        Some(2),
        "{dom}"
    );
    for chart in [
        "campaign:dash-1",
        "campaign:dash-2",
        "traffic",
        "model",
        "dead_letters",
    ] {
        let points = attr_after(&dom, &format!("data-chart=\"{chart}\""), "data-points");
        assert!(
            points.unwrap_or(0) >= 3,
            "chart {chart} has {points:?} points: {dom}"
        );
    }
    assert!(
        dom.matches("<canvas").count() >= 5,
        "every chart draws on a canvas"
    );
    assert!(
        dom.contains("malformed_json"),
        "dead letters by reason are listed"
    );

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &browser,
        &url,
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot {}",
        shot.display()
    );
    println!("dashboard screenshot: {}", shot.display());
}
