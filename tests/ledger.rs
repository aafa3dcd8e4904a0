//! The spend ledger against a real broker: duplicates, forgeries, garbage and late events, a
//! SIGKILL mid-stream and a restart; spend must equal the independently computed sum.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use adstream_operators::events::Billing;
use adstream_operators::time::day::budget_day;
use adstream_operators::time::EventTime;
use chrono::NaiveDate;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A message to produce.
struct Msg {
    topic: &'static str,
    key: String,
    payload: Option<Vec<u8>>,
}

struct Scenario {
    campaigns: Vec<Msg>,
    first: Vec<Msg>,
    second: Vec<Msg>,
    /// campaign -> day -> spend
    expected: BTreeMap<String, BTreeMap<NaiveDate, u64>>,
    reasons: BTreeSet<&'static str>,
}

fn msg(topic: &'static str, key: &str, payload: impl Into<Vec<u8>>) -> Msg {
    Msg {
        topic,
        key: key.to_string(),
        payload: Some(payload.into()),
    }
}

/// A deterministic xorshift generator, so the scenario needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn scenario(requests: usize, seed: u64) -> Scenario {
    let mut rng = Rng(seed | 1);
    let now = EventTime::now();
    let campaigns_def = [
        ("c-cpm", "a-1", Billing::Cpm),
        ("c-cpc", "a-2", Billing::Cpc),
        ("c-cpa", "a-3", Billing::Cpa),
    ];
    let campaigns = campaigns_def
        .iter()
        .map(|(id, adv, b)| {
            msg(
                "ads.campaigns",
                id,
                campaign_json(id, adv, *b, 10_000_000_000),
            )
        })
        .collect();
    let mut events: Vec<Msg> = Vec::new();
    let mut expected: BTreeMap<String, BTreeMap<NaiveDate, u64>> = BTreeMap::new();
    let mut charge = |c: &str, ts: EventTime, price: u64| {
        *expected
            .entry(c.to_string())
            .or_default()
            .entry(budget_day(ts, campaign_tz()))
            .or_default() += price;
    };
    for i in 0..requests {
        let (campaign, advertiser, billing) = campaigns_def[i % 3];
        let rid = format!("r{seed}-{i}");
        let user = format!("u{seed}-{i}");
        let price = 100 + rng.below(5_000);
        // Some events are late: a minute and a half behind the others.
        let late = rng.below(10) == 0;
        let ts = EventTime(now.millis() - if late { 90_000 } else { 0 } + i as i64);
        let claims = claims(
            &rid,
            campaign,
            advertiser,
            billing,
            price,
            EventTime(ts.millis() - 50),
        );
        let tok = token(&claims);
        let imp = ad_event(&format!("imp-{rid}"), ts, &user, &claims, Some(tok.clone()));
        events.push(msg("ads.impressions", &rid, imp.clone()));
        // Spend goes to the budget day of the win (its token's issue time).
        let issued = claims.issued;
        if billing == Billing::Cpm {
            charge(campaign, issued, price);
        }
        if billing != Billing::Cpm && rng.below(10) < 7 {
            let click_ts = EventTime(ts.millis() + 500);
            let click = ad_event(
                &format!("clk-{rid}"),
                click_ts,
                &user,
                &claims,
                Some(tok.clone()),
            );
            events.push(msg("ads.clicks", &rid, click));
            if billing == Billing::Cpc {
                charge(campaign, issued, price);
            }
            if billing == Billing::Cpa && rng.below(2) == 0 {
                let conv_ts = EventTime(click_ts.millis() + 1_000);
                let conv = serde_json::json!({"event_id": format!("conv-{rid}"), "ts": conv_ts.millis(), "user_id": user,
                    "advertiser_id": advertiser, "type": "purchase", "value_micros": 1000});
                events.push(msg("ads.conversions", &user, conv.to_string()));
                charge(campaign, issued, price);
            }
        }
        // Exact duplicates of billing events: never charged twice.
        if rng.below(8) == 0 {
            events.push(msg("ads.impressions", &rid, imp));
        }
    }
    // Bad input of every kind; none of it may move spend.
    let forged = claims("forged-1", "c-cpm", "a-1", Billing::Cpm, 999_999, now);
    let forged_token = adstream_operators::token::sign(b"not-the-secret", &forged);
    let mut altered = claims("altered-1", "c-cpc", "a-2", Billing::Cpc, 1, now);
    let altered_token = token(&altered);
    altered.request_id = "someone-else".into();
    let ghost = claims("ghost-1", "c-ghost", "a-9", Billing::Cpm, 777, now);
    let bad: Vec<Msg> = vec![
        msg("ads.impressions", "garbage", "{this is not json"),
        msg(
            "ads.clicks",
            "fields",
            r#"{"event_id":"x","ts":"yesterday-ish"}"#,
        ),
        msg(
            "ads.impressions",
            "forged-1",
            ad_event("f1", now, "u", &forged, Some(forged_token)),
        ),
        msg(
            "ads.clicks",
            "altered-1",
            ad_event("a1", now, "u", &altered, Some(altered_token)),
        ),
        msg(
            "ads.impressions",
            "notoken",
            ad_event("n1", now, "u", &forged, None),
        ),
        msg(
            "ads.impressions",
            "ghost-1",
            ad_event("g1", now, "u", &ghost, Some(token(&ghost))),
        ),
        msg("ads.impressions", "big", vec![b'x'; 70 * 1024]),
    ];
    let reasons = [
        "malformed_json",
        "invalid_field",
        "bad_token",
        "token_mismatch",
        "missing_token",
        "unknown_campaign",
        "oversize",
        "duplicate",
    ]
    .into_iter()
    .collect();
    let half = events.len() / 2;
    let mut second: Vec<Msg> = events.split_off(half);
    let mut first = events;
    first.extend(bad.into_iter().take(4));
    // The second half also re-sends some of the first half's billing events.
    for m in first
        .iter()
        .filter(|m| m.topic == "ads.impressions")
        .step_by(7)
        .take(30)
    {
        second.push(Msg {
            topic: m.topic,
            key: m.key.clone(),
            payload: m.payload.clone(),
        });
    }
    let ghost_etc: Vec<Msg> = vec![
        msg(
            "ads.impressions",
            "notoken",
            ad_event("n1", now, "u", &forged, None),
        ),
        msg(
            "ads.impressions",
            "ghost-1",
            ad_event("g1", now, "u", &ghost, Some(token(&ghost))),
        ),
        msg("ads.impressions", "big", vec![b'x'; 70 * 1024]),
    ];
    second.extend(ghost_etc);
    Scenario {
        campaigns,
        first,
        second,
        expected,
        reasons,
    }
}

fn produce_all(brokers: &str, msgs: &[Msg]) {
    let p = producer(brokers);
    for m in msgs {
        produce(&p, m.topic, &m.key, m.payload.as_deref());
    }
    flush(&p);
}

fn spend_on(api: &str, campaign: &str, day: NaiveDate) -> Option<u64> {
    let (status, body) = http_get(&format!("{api}/v1/campaigns/{campaign}?day={day}"))?;
    (status == 200)
        .then(|| body["spend_micros"].as_u64())
        .flatten()
}

fn matches_expected(api: &str, expected: &BTreeMap<String, BTreeMap<NaiveDate, u64>>) -> bool {
    expected
        .iter()
        .all(|(c, days)| days.iter().all(|(d, s)| spend_on(api, c, *d) == Some(*s)))
}

fn dead_letter_reasons(brokers: &str, want: &BTreeSet<&'static str>) -> BTreeSet<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "it-deadletters")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset("ads.deadletter", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline && !want.iter().all(|r| seen.contains(*r)) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let doc = dead_letter_doc(&m);
            assert!(doc["topic"].as_str().unwrap().starts_with("ads."), "{doc}");
            assert!(
                doc["offset"].as_i64().is_some() && doc["partition"].as_i64().is_some(),
                "{doc}"
            );
            seen.insert(doc["reason"].as_str().unwrap().to_string());
        }
    }
    seen
}

/// Runs the whole crash-and-restart scenario with `processes` processes of `workers` workers.
fn crash_and_restart(workers: usize, processes: usize, seed: u64) {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_file(dir.path(), &broker.brokers(), "");
    create_topics(&pipeline);
    let s = scenario(REQUESTS, seed);
    produce_all(&broker.brokers(), &s.campaigns);
    produce_all(&broker.brokers(), &s.first);

    let state = dir.path().join("state");
    let hostfile = dir.path().join("hosts");
    std::fs::write(
        &hostfile,
        (0..processes)
            .map(|_| format!("127.0.0.1:{}\n", free_port()))
            .collect::<String>(),
    )
    .unwrap();
    let start_all = || -> Vec<Running> {
        (0..processes)
            .map(|i| {
                let mut args = vec!["--workers".to_string(), workers.to_string()];
                if processes > 1 {
                    args.extend([
                        "--process".into(),
                        i.to_string(),
                        "--processes".into(),
                        processes.to_string(),
                        "--hostfile".into(),
                        hostfile.display().to_string(),
                    ]);
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Running::start(&pipeline, &state, &args)
            })
            .collect()
    };

    let running = start_all();
    let api = running[0].api.clone();
    // Kill hard once charging is under way.
    let started = eventually(Duration::from_secs(90), || {
        s.expected
            .iter()
            .any(|(c, days)| days.keys().any(|d| spend_on(&api, c, *d).unwrap_or(0) > 0))
    });
    assert!(started, "no spend appeared before the crash");
    for r in running {
        r.kill();
    }
    produce_all(&broker.brokers(), &s.second);

    let running = start_all();
    for r in &running {
        assert!(
            eventually(Duration::from_secs(120), || matches_expected(
                &r.api,
                &s.expected
            )),
            "spend at {} never matched: expected {:?}, got {:?}",
            r.api,
            s.expected,
            s.expected
                .iter()
                .map(|(c, days)| (
                    c.clone(),
                    days.keys()
                        .map(|d| spend_on(&r.api, c, *d))
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        );
    }
    // Nothing is charged later either (duplicates and replays are still flowing through).
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        matches_expected(&running[0].api, &s.expected),
        "spend moved after matching"
    );
    let seen = dead_letter_reasons(&broker.brokers(), &s.reasons);
    for r in &s.reasons {
        assert!(
            seen.contains(*r),
            "no dead letter with reason {r}; saw {seen:?}"
        );
    }
    let (status, _) = http_get(&format!("{}/v1/campaigns/c-ghost", running[0].api)).unwrap();
    assert_eq!(status, 404);
    reports_agree_with_the_ledger(&broker.brokers(), &s.expected);
}

/// The reports, read as an analyst would (the latest row per key of each compacted topic),
/// add up to the ledger's spend to the micro, per campaign and in total, after the duplicates,
/// the late events and the crash.
fn reports_agree_with_the_ledger(
    brokers: &str,
    expected: &BTreeMap<String, BTreeMap<NaiveDate, u64>>,
) {
    let per_campaign: BTreeMap<String, i64> = expected
        .iter()
        .map(|(c, days)| (c.clone(), days.values().sum::<u64>() as i64))
        .collect();
    let total: i64 = per_campaign.values().sum();
    let mut last = BTreeMap::new();
    let agree = eventually(Duration::from_secs(60), || {
        let minute = report_rows(brokers, "report.campaign_minute");
        let mut by_campaign = sum_by(&minute, "campaign_id", "spend_micros");
        // The ghost campaign's impression is reported, with nothing spent.
        by_campaign.retain(|_, spend| *spend != 0);
        let advertiser = sum_by(
            &report_rows(brokers, "report.advertiser_hour"),
            "advertiser_id",
            "spend_micros",
        );
        let geo = report_rows(brokers, "report.country_device_hour");
        let geo_total: i64 = sum_by(&geo, "country", "spend_micros").values().sum();
        last = by_campaign.clone();
        by_campaign == per_campaign
            && advertiser.values().sum::<i64>() == total
            && geo_total == total
    });
    assert!(
        agree,
        "report spend per campaign {last:?} never matched the ledger's {per_campaign:?}"
    );
    // Counts are exact too: one impression per request, each counted once despite duplicates
    // and replays (the ghost campaign's impression has a valid token: it is reported, unbilled).
    let minute = report_rows(brokers, "report.campaign_minute");
    let impressions = sum_by(&minute, "campaign_id", "impressions");
    let requests_each = (REQUESTS / 3) as i64;
    for c in ["c-cpm", "c-cpc", "c-cpa"] {
        assert_eq!(
            impressions.get(c),
            Some(&requests_each),
            "{c}: {impressions:?}"
        );
    }
    assert_eq!(impressions.get("c-ghost"), Some(&1));
}

/// Ad requests per scenario.
const REQUESTS: usize = 900;

#[test]
fn one_worker_survives_sigkill_with_exact_spend() {
    crash_and_restart(1, 1, 11);
}

#[test]
fn two_workers_survive_sigkill_with_exact_spend() {
    crash_and_restart(2, 1, 22);
}

#[test]
fn two_processes_survive_sigkill_with_exact_spend() {
    crash_and_restart(1, 2, 33);
}
