//! Unit and property tests of the user-history rules.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::events::Billing;
use crate::token::WinClaims;

/// A touch of request `rid` (slot `1`) on campaign `c{campaign}` at `ts`.
fn touch(rid: &str, campaign: u32, kind: EventKind, ts: i64) -> Touch {
    Touch {
        ts: EventTime(ts),
        kind,
        claims: Arc::new(WinClaims {
            request_id: rid.into(),
            imp_id: "1".into(),
            campaign_id: format!("c{campaign}"),
            advertiser_id: format!("a{}", campaign % 3),
            ad_id: format!("ad{campaign}"),
            billing: Billing::Cpc,
            charge_micros: 1,
            issued: EventTime(ts),
            country: None,
            device: None,
        }),
    }
}

const H: i64 = HOUR_MS;

/// What a checkpoint of `shard` would write now.
fn changes(shard: &mut Histories) -> Vec<(String, Option<UserHistory>)> {
    let mut out = Vec::new();
    shard.drain_changes(|user, h| out.push((user.to_string(), h.cloned())));
    out
}

/// State written when the counts were four bytes wide reads back the same (checkpoints carry
/// them as varints); an hour's count saturates at the two-byte maximum.
#[test]
fn counts_written_four_bytes_wide_restore_and_saturate() {
    #[derive(serde::Serialize)]
    struct WideCounts {
        hour: i64,
        impressions: [u32; COUNT_HOURS],
        clicks: [u32; COUNT_HOURS],
    }
    #[derive(serde::Serialize)]
    struct WideHistory {
        clicks: Vec<Clicked>,
        counts: WideCounts,
        seen: std::collections::VecDeque<(u64, i64)>,
        last: EventTime,
    }
    let mut impressions = [0u32; COUNT_HOURS];
    impressions[3] = 40_000;
    let wide = WideHistory {
        clicks: Vec::new(),
        counts: WideCounts {
            hour: 27,
            impressions,
            clicks: [1; COUNT_HOURS],
        },
        seen: [(9, 27)].into(),
        last: EventTime(27 * H),
    };
    let bytes = crate::checkpoint::codec::encode(&wide).expect("encode");
    let read: UserHistory = crate::checkpoint::codec::decode(b"history/x", &bytes).expect("decode");
    assert_eq!(read.counts.hour, 27);
    assert_eq!(read.counts.impressions[3], 40_000);
    assert_eq!(read.counts.clicks, [1; COUNT_HOURS]);
    assert_eq!(read.seen, [(9, 27)]);

    let mut shard = Histories::new(HistoryConfig::default());
    for i in 0..70_000 {
        shard.record(
            &"u".into(),
            &touch(&format!("r{i}"), 1, EventKind::Impression, 5 * H),
        );
    }
    let e = shard
        .get("u")
        .expect("kept")
        .engagement_at(EventTime(5 * H));
    assert_eq!(e.impressions_24h, u32::from(u16::MAX));
}

#[test]
fn clicks_are_kept_newest_first_and_counted_per_window() {
    let config = HistoryConfig {
        recent_clicks: 2,
        ..HistoryConfig::default()
    };
    let mut h = UserHistory::default();
    let t0 = 1_000 * H;
    assert!(h.record(&touch("r1", 1, EventKind::Impression, t0), &config));
    assert!(h.record(&touch("r1", 1, EventKind::Click, t0 + 10), &config));
    assert!(h.record(&touch("r2", 2, EventKind::Impression, t0 + H), &config));
    assert!(h.record(&touch("r2", 2, EventKind::Click, t0 + H + 10), &config));
    assert!(h.record(&touch("r3", 3, EventKind::Click, t0 + 2 * H), &config));
    let e = h.engagement_at(EventTime(t0 + 2 * H + 1));
    assert_eq!(
        e.clicked_campaigns,
        vec!["c3", "c2"],
        "the newest two, newest first"
    );
    assert_eq!(e.clicked_advertisers, vec!["a0", "a2"]);
    assert_eq!(e.clicked_ads, vec!["ad3", "ad2"]);
    assert_eq!((e.impressions_24h, e.clicks_24h), (2, 3));
    // Serving before the newest click does not see it.
    let before = h.engagement_at(EventTime(t0 + H + 20));
    assert_eq!(before.clicked_campaigns, vec!["c2"]);
    // A day on, the first hour has left the window.
    let later = h.engagement_at(EventTime(t0 + 24 * H));
    assert_eq!((later.impressions_24h, later.clicks_24h), (1, 2));
    let much_later = h.engagement_at(EventTime(t0 + 60 * H));
    assert_eq!((much_later.impressions_24h, much_later.clicks_24h), (0, 0));
    assert_eq!(
        much_later.clicked_campaigns.len(),
        2,
        "clicks outlive the counts"
    );
}

#[test]
fn a_repeated_event_counts_once_and_a_late_click_goes_in_time_order() {
    let config = HistoryConfig::default();
    let mut h = UserHistory::default();
    let t0 = 500 * H;
    assert!(h.record(&touch("r1", 1, EventKind::Impression, t0), &config));
    assert!(!h.record(&touch("r1", 1, EventKind::Impression, t0), &config));
    assert!(h.record(&touch("r1", 1, EventKind::Click, t0 + 5), &config));
    assert!(!h.record(&touch("r1", 1, EventKind::Click, t0 + 5), &config));
    assert!(h.record(&touch("r3", 3, EventKind::Click, t0 + 30), &config));
    assert!(h.record(&touch("r2", 2, EventKind::Click, t0 + 20), &config));
    let e = h.engagement_at(EventTime(t0 + 40));
    assert_eq!(e.clicked_campaigns, vec!["c3", "c2", "c1"]);
    assert_eq!((e.impressions_24h, e.clicks_24h), (1, 3));
    // An impression older than the counted hours changes nothing.
    assert!(h.record(&touch("r9", 9, EventKind::Impression, t0 + 30 * H), &config));
    assert!(!h.record(&touch("r8", 8, EventKind::Impression, t0), &config));
}

#[test]
fn users_are_published_saved_and_forgotten_after_retention() {
    let config = HistoryConfig {
        recent_clicks: 4,
        retention_ms: 48 * H,
    };
    let mut shard = Histories::new(config);
    let t0 = 100 * H;
    shard.record(&"u1".into(), &touch("r1", 1, EventKind::Click, t0));
    shard.record(
        &"u2".into(),
        &touch("r2", 2, EventKind::Impression, t0 + 30 * H),
    );
    shard.record(&"".into(), &touch("r3", 3, EventKind::Click, t0));
    let updates = shard.take_updates();
    let mut users: Vec<&str> = updates.iter().map(|u| &*u.user_id).collect();
    users.sort_unstable();
    assert_eq!(
        users,
        vec!["u1", "u2"],
        "a touch without a user is not kept"
    );
    assert!(shard.take_updates().is_empty());
    assert_eq!(changes(&mut shard).len(), 2);
    // u1's last event is 48 h old at t0 + 49 h; u2's is not.
    shard.expire(t0 + 49 * H);
    assert!(shard.get("u1").is_none());
    assert!(shard.get("u2").is_some());
    let updates = shard.take_updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(&*updates[0].user_id, "u1");
    assert!(updates[0].history.is_none(), "forgotten");
    assert_eq!(changes(&mut shard), vec![("u1".to_string(), None)]);
    // A later event within the same hour of retention end is still expired in the end.
    let mut late = Histories::new(config);
    late.record(&"u3".into(), &touch("r4", 4, EventKind::Impression, t0));
    late.record(
        &"u3".into(),
        &touch("r5", 5, EventKind::Impression, t0 + 30 * 60_000),
    );
    late.expire(t0 + 48 * H + 10 * 60_000);
    assert!(
        late.get("u3").is_some(),
        "its newest event is not 48 h old yet"
    );
    late.expire(t0 + 49 * H + 40 * 60_000);
    assert!(late.get("u3").is_none(), "filed again, and forgotten");
    // A restored user is published again (replicas start empty).
    let mut restored = Histories::new(config);
    restored.restore("u2".into(), shard.get("u2").cloned().unwrap_or_default());
    assert_eq!(restored.take_updates().len(), 1);
    assert!(changes(&mut restored).is_empty(), "already saved");
    assert!(restored.bytes_per_user() > 0);
}

proptest! {
    /// Events in time order, each possibly repeated later: the counts are those of the
    /// distinct events in the 24 clock hours up to the newest, and the clicked list is the
    /// newest distinct clicks, newest first.
    #[test]
    fn counts_and_clicks_match_the_distinct_events(
        events in prop::collection::vec((0i64..3_000, prop::bool::ANY, 0u32..6), 1..120),
        repeats in prop::collection::vec((0usize..120, 0usize..120), 0..40),
        keep in 1usize..8,
    ) {
        let config = HistoryConfig { recent_clicks: keep, ..HistoryConfig::default() };
        // Timestamps in minutes from a base, in time order.
        let mut ts: Vec<i64> = events.iter().map(|(t, _, _)| 400 * H + t * 60_000).collect();
        ts.sort_unstable();
        let distinct: Vec<Touch> = events
            .iter()
            .enumerate()
            .map(|(i, (_, click, campaign))| {
                let kind = if *click { EventKind::Click } else { EventKind::Impression };
                touch(&format!("r{i}"), *campaign, kind, ts[i])
            })
            .collect();
        // The arrival order: each event, then any repeats of earlier ones due after it.
        let mut arrivals: Vec<&Touch> = Vec::new();
        for (i, t) in distinct.iter().enumerate() {
            arrivals.push(t);
            for (at, of) in &repeats {
                if *at == i && *of <= i {
                    arrivals.push(&distinct[*of]);
                }
            }
        }
        let mut h = UserHistory::default();
        for t in &arrivals {
            h.record(t, &config);
        }
        let now = EventTime(*ts.last().unwrap_or(&0));
        let e = h.engagement_at(now);
        let now_hour = now.millis().div_euclid(H);
        let within = |t: &&Touch| t.ts.millis().div_euclid(H) > now_hour - 24;
        let count = |kind: EventKind| {
            distinct.iter().filter(within).filter(|t| t.kind == kind).count() as u32
        };
        prop_assert_eq!(e.impressions_24h, count(EventKind::Impression));
        prop_assert_eq!(e.clicks_24h, count(EventKind::Click));
        let clicks: Vec<&Touch> = distinct.iter().filter(|t| t.kind == EventKind::Click).collect();
        let newest: Vec<i64> = clicks.iter().rev().take(keep).map(|t| t.ts.millis()).collect();
        let got: Vec<i64> = h.clicks.iter().rev().map(|c| c.ts.millis()).collect();
        prop_assert_eq!(got, newest);
        prop_assert_eq!(e.clicked_campaigns.len(), e.clicked_ads.len());
    }
}

fn any_history() -> impl Strategy<Value = UserHistory> {
    let clicked = (any::<i64>(), ".{0,12}", ".{0,12}", ".{0,12}").prop_map(
        |(ts, campaign_id, advertiser_id, ad_id)| Clicked {
            ts: EventTime(ts),
            campaign_id,
            advertiser_id,
            ad_id,
        },
    );
    (
        prop::collection::vec(clicked, 0..6),
        any::<i64>(),
        // Counts all below 128 (one byte each, the usual case), or any.
        prop_oneof![
            prop::array::uniform24(0u16..128),
            prop::array::uniform24(any::<u16>())
        ],
        prop_oneof![
            prop::array::uniform24(0u16..128),
            prop::array::uniform24(any::<u16>())
        ],
        prop::collection::vec((any::<u64>(), any::<i64>()), 0..70),
        any::<i64>(),
    )
        .prop_map(
            |(clicks, hour, impressions, click_counts, seen, last)| UserHistory {
                clicks,
                counts: HourCounts {
                    hour,
                    impressions,
                    clicks: click_counts,
                },
                seen: seen.into(),
                last: EventTime(last),
            },
        )
}

proptest! {
    /// The field-by-field checkpoint encoding is the serde encoding, byte for byte, and reads
    /// back as the same history.
    #[test]
    fn the_direct_checkpoint_encoding_is_serdes(history in any_history()) {
        let mut direct = vec![9, 9];
        history.write_checkpoint_value(&mut direct);
        let serde = crate::checkpoint::codec::encode(&history).expect("encode");
        prop_assert_eq!(&direct[2..], &serde[..]);
        let read: UserHistory =
            crate::checkpoint::codec::decode(b"history/u", &direct[2..]).expect("decode");
        prop_assert_eq!(read, history);
    }
}
