//! Operating a cluster: two processes on loopback give exactly the results of one process; when
//! one process of the cluster is killed the other exits by itself (so a supervisor restarts
//! both) and, restarted, the cluster resumes from its checkpoints; SIGTERM drains, takes a final
//! checkpoint and exits 0, and a restart after it replays nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use adstream_operators::events::Billing;
use adstream_operators::time::EventTime;
use common::*;

const CAMPAIGNS: [(&str, &str, Billing); 3] = [
    ("k-cpm", "a-1", Billing::Cpm),
    ("k-cpc", "a-2", Billing::Cpc),
    ("k-cpm2", "a-1", Billing::Cpm),
];

/// Produces campaigns and `n` requests' impressions (and clicks for CPC), with duplicates;
/// returns the expected spend per campaign.
fn produce_traffic(brokers: &str, n: usize) -> BTreeMap<String, u64> {
    let p = producer(brokers);
    for (id, adv, billing) in CAMPAIGNS {
        produce(
            &p,
            "ads.campaigns",
            id,
            Some(campaign_json(id, adv, billing, 10_000_000_000).as_bytes()),
        );
    }
    let now = EventTime::now();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..n {
        let (campaign, adv, billing) = CAMPAIGNS[i % 3];
        let rid = format!("kr-{i}");
        let price = 100 + (i as u64 * 37) % 900;
        let ts = EventTime(now.millis() + i as i64);
        let c = claims(
            &rid,
            campaign,
            adv,
            billing,
            price,
            EventTime(ts.millis() - 10),
        );
        let tok = token(&c);
        let imp = ad_event(&format!("imp-{rid}"), ts, "u1", &c, Some(tok.clone()));
        produce(&p, "ads.impressions", &rid, Some(imp.as_bytes()));
        if i % 11 == 0 {
            produce(&p, "ads.impressions", &rid, Some(imp.as_bytes()));
        }
        match billing {
            Billing::Cpm => *expected.entry(campaign.into()).or_default() += price,
            _ => {
                let click = ad_event(
                    &format!("clk-{rid}"),
                    EventTime(ts.millis() + 5),
                    "u1",
                    &c,
                    Some(tok),
                );
                produce(&p, "ads.clicks", &rid, Some(click.as_bytes()));
                *expected.entry(campaign.into()).or_default() += price;
            }
        }
    }
    flush(&p);
    expected
}

fn spend(api: &str) -> BTreeMap<String, u64> {
    CAMPAIGNS
        .iter()
        .filter_map(|(id, _, _)| {
            let (status, body) = http_get(&format!("{api}/v1/campaigns/{id}"))?;
            (status == 200).then(|| (id.to_string(), body["spend_micros"].as_u64().unwrap_or(0)))
        })
        .collect()
}

/// A pipeline whose reports go to topics of their own (`report.<tag>`), so two runs over the
/// same input can be compared.
fn pipeline_for(dir: &Path, brokers: &str, tag: &str) -> std::path::PathBuf {
    let sub = dir.join(tag);
    std::fs::create_dir_all(&sub).unwrap();
    pipeline_file(
        &sub,
        brokers,
        &format!(
            "\n[[reporting.reports]]\nname = \"campaign_minute\"\ntopic = \"report.{tag}\"\ndimensions = [\"campaign_id\"]\nwindow_ms = 60000\nfinal_after_ms = 600000\nupdate_ms = 200\n\n[metrics]\nper_campaign = true\n"
        ),
    )
}

/// The rows of `topic` without the fields that depend on when they were written.
fn rows_without_time(brokers: &str, topic: &str) -> BTreeMap<String, serde_json::Value> {
    let mut rows = report_rows(brokers, topic);
    for row in rows.values_mut() {
        if let Some(o) = row.as_object_mut() {
            o.remove("watermark");
            o.remove("final");
        }
    }
    rows
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

#[test]
fn two_processes_match_one_survive_losing_one_and_drain_on_sigterm() {
    let broker = Broker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let one = pipeline_for(dir.path(), &brokers, "one");
    let two = pipeline_for(dir.path(), &brokers, "two");
    create_topics(&one);
    create_topics(&two);
    let expected = produce_traffic(&brokers, 600);

    // One process, two workers.
    let mut single = Running::start(&one, &dir.path().join("state-one"), &["--workers", "2"]);
    assert!(
        eventually(Duration::from_secs(120), || spend(&single.api) == expected),
        "one process: spend {:?}, expected {expected:?}",
        spend(&single.api)
    );
    let rows_one = || rows_without_time(&brokers, "report.one");
    let want_rows: BTreeMap<String, i64> = expected
        .iter()
        .map(|(c, s)| (c.clone(), *s as i64))
        .collect();
    assert!(eventually(Duration::from_secs(60), || {
        sum_by(
            &report_rows(&brokers, "report.one"),
            "campaign_id",
            "spend_micros",
        ) == want_rows
    }));

    // What an operator scrapes: lag per partition (from librdkafka's statistics, every 5 s),
    // checkpoint age, budget utilisation per campaign (`[metrics] per_campaign = true`), events by
    // stream and outcome.
    let metrics_url = format!("{}/metrics", single.api);
    let scrape = || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            reqwest::get(&metrics_url)
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    assert!(
        eventually(Duration::from_secs(30), || {
            let text = scrape();
            text.contains("adstream_consumer_lag{partition=\"0\",topic=\"ads.impressions\"} 0")
                && text.contains("adstream_checkpoint_age_seconds ")
                && text.contains("adstream_budget_utilisation{campaign=\"k-cpm\"}")
                && text
                    .contains("adstream_events_total{outcome=\"accepted\",stream=\"impressions\"}")
        }),
        "{}",
        scrape()
    );

    // SIGTERM: drains, checkpoints, exits 0; a restart resumes with nothing to replay.
    signal(&single.child, "-TERM");
    let status = wait_exit(&mut single.child, Duration::from_secs(60)).expect("exits on SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}");
    let single = Running::start(&one, &dir.path().join("state-one"), &["--workers", "2"]);
    assert!(eventually(Duration::from_secs(60), || {
        http_get(&format!("{}/readyz", single.api)).is_some_and(|(s, _)| s == 200)
    }));
    // Ready means the API's view has applied everything read at start-up: the spend is exact
    // at once (regression: `{}` was once read right after /readyz turned 200).
    assert_eq!(
        spend(&single.api),
        expected,
        "a restart after SIGTERM charges nothing twice"
    );
    single.kill();

    // Two processes of one worker each, over the same input.
    let hostfile = dir.path().join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let state = dir.path().join("state-two");
    let start = |i: usize| {
        Running::start(
            &two,
            &state,
            &[
                "--process",
                &i.to_string(),
                "--processes",
                "2",
                "--hostfile",
                hostfile.to_str().unwrap(),
            ],
        )
    };
    let (mut p0, p1) = (start(0), start(1));
    assert!(eventually(Duration::from_secs(90), || spend(&p0.api)
        .values()
        .any(|s| *s > 0)));
    // Losing process 1: process 0 cannot go on, and exits by itself for its supervisor.
    p1.kill();
    let status = wait_exit(&mut p0.child, Duration::from_secs(60)).expect("process 0 exits");
    assert_eq!(
        status.code(),
        Some(adstream::runtime::EXIT_CLUSTER_BROKEN),
        "process 0's exit status {status}"
    );
    // Both restart and resume from their checkpoints.
    let (p0, p1) = (start(0), start(1));
    for api in [&p0.api, &p1.api] {
        assert!(
            eventually(Duration::from_secs(120), || spend(api) == expected),
            "two processes at {api}: spend {:?}, expected {expected:?}",
            spend(api)
        );
    }
    assert!(eventually(Duration::from_secs(60), || rows_without_time(
        &brokers,
        "report.two"
    ) == rows_one()));
    drop((p0, p1));
}
