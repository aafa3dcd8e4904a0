//! Unit and property tests of the label join's rules.

use proptest::prelude::*;

use super::*;
use crate::records::AttributedConversion;
use crate::time::EventTime;

/// A served record of request `rid`, slot `1`, at `ts` (only the join key and time matter here).
pub(crate) fn served(rid: &str, ts: i64) -> Served {
    let doc = serde_json::json!({
        "request_id": rid, "imp_id": "1", "ts": ts, "campaign_id": "c", "advertiser_id": "adv",
        "ad_id": "a", "billing": "cpc", "charge_micros": 10, "price_ecpm_micros": 10,
        "pctr": 0.01, "pcvr": 0.1, "model_version": "m", "user_id": "u", "country": null,
        "device": null, "interests": [], "tag_id": null,
    });
    serde_json::from_value(doc).expect("a served record")
}

fn srv(rid: &str, ts: i64) -> LabelEvent {
    LabelEvent::Served(Box::new(served(rid, ts)))
}

fn imp(rid: &str, ts: i64) -> LabelEvent {
    LabelEvent::Impression {
        request_id: rid.into(),
        imp_id: "1".into(),
        ts: EventTime(ts),
    }
}

fn clk(rid: &str, ts: i64) -> LabelEvent {
    LabelEvent::Click {
        request_id: rid.into(),
        imp_id: "1".into(),
        ts: EventTime(ts),
    }
}

fn conv(rid: &str, ts: i64, via_click: bool) -> LabelEvent {
    LabelEvent::Conversion(AttributedConversion {
        request_id: rid.into(),
        imp_id: "1".into(),
        conversion_id: format!("conv-{rid}-{ts}"),
        ts: EventTime(ts),
        via_click,
        value_micros: 0,
        claims: std::sync::Arc::new(crate::token::WinClaims {
            request_id: rid.into(),
            imp_id: "1".into(),
            campaign_id: "c".into(),
            advertiser_id: "a".into(),
            ad_id: "ad".into(),
            billing: crate::events::Billing::Cpc,
            charge_micros: 1,
            issued: EventTime(ts),
            country: None,
            device: None,
        }),
    })
}

/// (request, click, conversion, label_ms), sorted.
type Summary = Vec<(String, Option<bool>, Option<bool>, i64)>;

fn summary(examples: &[LabeledExample]) -> Summary {
    let mut s: Summary = examples
        .iter()
        .map(|e| {
            assert!(
                e.click.is_some() != e.conversion.is_some(),
                "exactly one label: {e:?}"
            );
            (
                e.served.request_id.clone(),
                e.click,
                e.conversion,
                e.label_ms,
            )
        })
        .collect();
    s.sort();
    s
}

fn row(
    rid: &str,
    click: Option<bool>,
    conversion: Option<bool>,
    at: i64,
) -> (String, Option<bool>, Option<bool>, i64) {
    (rid.to_string(), click, conversion, at)
}

const CFG: LabelConfig = LabelConfig {
    click_window_ms: 1_000,
    impression_wait_ms: 500,
    conversion_window_ms: 10_000,
    max_pending: 1_000,
};

/// Applies `events` in order, then advances to `end`; returns every example.
fn run(join: &mut LabelJoin, events: Vec<LabelEvent>, end: i64) -> Vec<LabeledExample> {
    let mut out = Vec::new();
    for e in events {
        out.extend(join.apply(e));
    }
    out.extend(join.advance(end));
    out
}

#[test]
fn in_order_click_then_conversion() {
    let mut j = LabelJoin::new(CFG);
    assert!(j.apply(srv("r", 100)).is_empty());
    assert!(j.apply(imp("r", 110)).is_empty());
    let clicked = j.apply(clk("r", 300));
    assert_eq!(
        summary(&clicked),
        vec![
            row("r", None, Some(false), 300),
            row("r", Some(true), None, 300)
        ]
    );
    assert_eq!(clicked[0].served.request_id, "r");
    let converted = j.apply(conv("r", 5_000, true));
    assert_eq!(summary(&converted), vec![row("r", None, Some(true), 5_000)]);
    // Nothing more, ever; the example is forgotten after the conversion window.
    assert!(j.advance(10_300).is_empty());
    assert_eq!(j.len(), 1);
    assert!(j.advance(10_301).is_empty());
    assert!(j.is_empty());
    let s = j.stats();
    assert_eq!(
        (s.served, s.impressions, s.clicks, s.conversions),
        (1, 1, 1, 1)
    );
    assert_eq!(
        (
            s.examples_click_pos,
            s.examples_click_neg,
            s.examples_conv_pos,
            s.examples_conv_neg
        ),
        (1, 0, 1, 1)
    );
}

#[test]
fn unclicked_gets_its_negative_when_the_frontier_passes_the_click_window() {
    let mut j = LabelJoin::new(CFG);
    run(&mut j, vec![srv("r", 100), imp("r", 110)], 0);
    // Deadline 1,110: the frontier must pass it.
    assert!(j.advance(1_110).is_empty());
    assert_eq!(
        summary(&j.advance(1_111)),
        vec![row("r", Some(false), None, 1_110)]
    );
    assert!(j.advance(100_000).is_empty());
    assert!(j.is_empty());
}

#[test]
fn out_of_order_events_give_the_same_labels() {
    let mut j = LabelJoin::new(CFG);
    // Click, then conversion, before the served record; the impression last.
    assert!(j.apply(clk("r", 300)).is_empty());
    assert!(j.apply(conv("r", 2_000, true)).is_empty());
    let out = j.apply(srv("r", 100));
    assert_eq!(
        summary(&out),
        vec![
            row("r", None, Some(false), 300),
            row("r", None, Some(true), 2_000),
            row("r", Some(true), None, 300),
        ]
    );
    assert!(j.apply(imp("r", 110)).is_empty());
    assert!(j.advance(i64::MAX).is_empty());
    assert_eq!(j.stats().impressions, 1);
    assert_eq!(j.stats().duplicates, 0);
}

#[test]
fn a_click_needs_no_impression() {
    let mut j = LabelJoin::new(CFG);
    let out = run(&mut j, vec![srv("r", 100), clk("r", 150)], 0);
    assert_eq!(out.len(), 2);
    assert_eq!(j.stats().unrendered, 0);
    assert!(j.advance(i64::MAX).is_empty());
}

#[test]
fn duplicates_never_emit_twice() {
    let events = vec![
        srv("r", 100),
        imp("r", 110),
        clk("r", 300),
        conv("r", 2_000, true),
        srv("n", 100),
        imp("n", 120),
    ];
    let once = run(&mut LabelJoin::new(CFG), events.clone(), 1_500);
    let mut j = LabelJoin::new(CFG);
    let twice = run(
        &mut j,
        events.iter().chain(events.iter()).cloned().collect(),
        1_500,
    );
    assert_eq!(summary(&once), summary(&twice));
    assert_eq!(j.stats().duplicates, events.len() as u64);
    // Duplicates still recognised after the negative (the tombstone).
    assert!(j.apply(srv("n", 100)).is_empty());
    assert!(j.apply(imp("n", 120)).is_empty());
    assert_eq!(j.stats().duplicates, events.len() as u64 + 2);
}

#[test]
fn a_click_after_its_negative_is_late() {
    let mut j = LabelJoin::new(CFG);
    // Past the negative (1,110), not yet past its tombstone (1,610).
    let neg = run(&mut j, vec![srv("r", 100), imp("r", 110)], 1_200);
    assert_eq!(summary(&neg), vec![row("r", Some(false), None, 1_110)]);
    assert!(j.apply(clk("r", 1_050)).is_empty());
    assert!(j.apply(conv("r", 1_500, true)).is_empty());
    assert_eq!(j.stats().late_clicks, 1);
    assert_eq!(j.stats().late_conversions, 1);
    // A click past the known impression's window is late too, even before the negative.
    let mut j = LabelJoin::new(CFG);
    let out = run(
        &mut j,
        vec![srv("r", 100), imp("r", 110), clk("r", 1_111)],
        0,
    );
    assert!(out.is_empty());
    assert_eq!(j.stats().late_clicks, 1);
    assert_eq!(
        summary(&j.advance(i64::MAX)),
        vec![row("r", Some(false), None, 1_110)]
    );
}

#[test]
fn an_unrendered_ad_is_dropped() {
    let mut j = LabelJoin::new(CFG);
    assert!(run(&mut j, vec![srv("r", 100)], 601).is_empty());
    assert_eq!(j.stats().unrendered, 1);
    assert!(j.is_empty());
    // Its impression, too late, waits for a served record that never comes.
    assert!(run(&mut j, vec![imp("r", 700)], i64::MAX).is_empty());
    assert_eq!(j.stats().orphans_expired, 1);
    assert!(j.is_empty());
}

#[test]
fn orphan_outcomes_wait_for_their_served_record() {
    let mut j = LabelJoin::new(CFG);
    run(&mut j, vec![imp("r", 100), clk("r", 200)], 600);
    assert_eq!(j.len(), 1, "deadline 600 not passed");
    assert_eq!(j.apply(srv("r", 90)).len(), 2);
    run(&mut j, vec![imp("o", 100), clk("o", 200)], 601);
    assert_eq!(j.stats().orphans_expired, 1);
}

#[test]
fn a_conversion_after_the_window_is_ignored() {
    let mut j = LabelJoin::new(CFG);
    let out = run(
        &mut j,
        vec![
            srv("r", 100),
            imp("r", 110),
            clk("r", 300),
            conv("r", 10_301, true),
        ],
        0,
    );
    assert_eq!(
        summary(&out).len(),
        2,
        "click positive and fake negative only"
    );
    assert_eq!(j.stats().late_conversions, 1);
    // Also when it comes before its click.
    let mut j = LabelJoin::new(CFG);
    let out = run(
        &mut j,
        vec![conv("r", 10_301, true), srv("r", 100), clk("r", 300)],
        0,
    );
    assert_eq!(out.len(), 2);
    assert_eq!(j.stats().late_conversions, 1);
    // At the edge of the window it counts.
    let out = run(
        &mut LabelJoin::new(CFG),
        vec![srv("r", 100), clk("r", 300), conv("r", 10_300, true)],
        0,
    );
    assert_eq!(out.len(), 3);
}

#[test]
fn view_through_conversions_give_no_label() {
    let mut j = LabelJoin::new(CFG);
    let out = run(
        &mut j,
        vec![srv("r", 100), imp("r", 110), conv("r", 500, false)],
        i64::MAX,
    );
    assert_eq!(summary(&out), vec![row("r", Some(false), None, 1_110)]);
    assert_eq!(j.stats().view_through, 1);
    assert_eq!(j.stats().conversions, 1);
}

#[test]
fn a_second_conversion_is_a_duplicate() {
    let mut j = LabelJoin::new(CFG);
    let out = run(
        &mut j,
        vec![
            srv("r", 100),
            clk("r", 300),
            conv("r", 400, true),
            conv("r", 500, true),
        ],
        0,
    );
    assert_eq!(out.iter().filter(|e| e.conversion == Some(true)).count(), 1);
    assert_eq!(j.stats().duplicates, 1);
}

#[test]
fn state_is_bounded_by_closing_the_earliest_deadlines() {
    // Served records wait long for their impression, so the rendered ones are due first.
    let cfg = LabelConfig {
        max_pending: 3,
        impression_wait_ms: 5_000,
        ..CFG
    };
    let mut j = LabelJoin::new(cfg);
    let mut out = Vec::new();
    for k in 0..5 {
        let rid = format!("r{k}");
        out.extend(j.apply(srv(&rid, k * 100)));
        out.extend(j.apply(imp(&rid, k * 100 + 1)));
        assert!(j.len() <= 3);
    }
    // r0 and r1 had the earliest deadlines: their negatives come early, at those deadlines.
    assert_eq!(
        summary(&out),
        vec![
            row("r0", Some(false), None, 1_001),
            row("r1", Some(false), None, 1_101),
        ]
    );
    assert_eq!(j.stats().evicted, 2);
    assert_eq!(j.stats().examples_click_neg, 2);
    // The rest close normally; the evicted left no tombstone.
    assert_eq!(j.advance(i64::MAX).len(), 3);
    assert!(j.apply(clk("r0", 500)).is_empty());
    assert_eq!(j.stats().late_clicks, 0);
}

#[test]
fn checkpointed_state_restores_to_the_same_behaviour() {
    let events = vec![
        srv("clicked", 100),
        clk("clicked", 300),
        srv("rendered", 100),
        imp("rendered", 150),
        srv("waiting", 100),
        clk("orphan", 400),
    ];
    let mut j = LabelJoin::new(CFG);
    run(&mut j, events, 0);
    let changes = j.take_changes();
    assert_eq!(changes.len(), 4);
    assert!(j.take_changes().is_empty());
    let mut restored = LabelJoin::new(CFG);
    for (key, entry) in changes {
        let entry = entry.expect("held");
        let bytes = serde_json::to_vec(&entry).expect("serialisable");
        restored.restore(key, serde_json::from_slice(&bytes).expect("round trip"));
    }
    assert_eq!(restored.len(), j.len());
    let tail = vec![
        conv("clicked", 700, true),
        clk("clicked", 300),
        srv("orphan", 350),
    ];
    let a = run(&mut j, tail.clone(), i64::MAX);
    let b = run(&mut restored, tail, i64::MAX);
    assert_eq!(summary(&a), summary(&b));
    assert_eq!(
        summary(&b),
        vec![
            row("clicked", None, Some(true), 700),
            row("orphan", None, Some(false), 400),
            row("orphan", Some(true), None, 400),
            row("rendered", Some(false), None, 1_150),
        ]
    );
    assert_eq!(restored.stats().unrendered, 1);
    assert_eq!(restored.stats().duplicates, 1);
    // Deletions are tracked too.
    assert!(restored
        .take_changes()
        .iter()
        .all(|(_, entry)| entry.is_none()));
}

/// Every scenario the rules know, each event inside its windows.
fn scenario() -> Vec<LabelEvent> {
    vec![
        // Clicked and converted.
        srv("a", 100),
        imp("a", 110),
        clk("a", 200),
        conv("a", 3_000, true),
        // Rendered, not clicked.
        srv("b", 100),
        imp("b", 130),
        // Never rendered.
        srv("c", 100),
        // Clicked, no conversion; a view-through conversion elsewhere.
        srv("d", 150),
        imp("d", 160),
        clk("d", 900),
        conv("e", 500, false),
        // Clicked without an impression.
        srv("f", 100),
        clk("f", 250),
        // Outcomes without a served record.
        imp("g", 100),
        clk("g", 120),
        conv("g", 400, true),
        // Conversion via click, past its window.
        srv("h", 100),
        imp("h", 105),
        clk("h", 110),
        conv("h", 20_000, true),
    ]
}

#[test]
fn the_scenario_in_order() {
    let mut j = LabelJoin::new(CFG);
    let got = summary(&run(&mut j, scenario(), i64::MAX));
    assert_eq!(
        got,
        vec![
            row("a", None, Some(false), 200),
            row("a", None, Some(true), 3_000),
            row("a", Some(true), None, 200),
            row("b", Some(false), None, 1_130),
            row("d", None, Some(false), 900),
            row("d", Some(true), None, 900),
            row("f", None, Some(false), 250),
            row("f", Some(true), None, 250),
            row("h", None, Some(false), 110),
            row("h", Some(true), None, 110),
        ]
    );
    let s = j.stats();
    assert_eq!(
        (
            s.unrendered,
            s.orphans_expired,
            s.view_through,
            s.late_conversions
        ),
        (1, 1, 1, 1)
    );
}

/// The scenario, with the events at `dups` repeated, in every order.
fn shuffled() -> impl Strategy<Value = (Vec<LabelEvent>, u64)> {
    proptest::collection::vec(any::<proptest::sample::Index>(), 0..8).prop_flat_map(|dups| {
        let base = scenario();
        let mut events = base.clone();
        events.extend(dups.iter().map(|i| base[i.index(base.len())].clone()));
        // View-through conversions hold no state, so their repeats are not recognised.
        let repeats = events[base.len()..]
            .iter()
            .filter(|e| !matches!(e, LabelEvent::Conversion(c) if !c.via_click))
            .count() as u64;
        (Just(events).prop_shuffle(), Just(repeats))
    })
}

proptest! {
    /// The labels do not depend on the order events arrive in, nor on duplicates.
    #[test]
    fn labels_are_independent_of_order_and_duplicates((events, repeats) in shuffled()) {
        let want = summary(&run(&mut LabelJoin::new(CFG), scenario(), i64::MAX));
        let mut j = LabelJoin::new(CFG);
        let got = summary(&run(&mut j, events, i64::MAX));
        prop_assert_eq!(got, want);
        prop_assert_eq!(j.stats().duplicates, repeats);
        prop_assert!(j.is_empty());
    }
}
