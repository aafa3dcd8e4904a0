//! The simulator's ground truth: what it served and produced, and the oracle that says what the
//! ledger must charge.
//!
//! The oracle applies the contract (`SPEC.md`) to the events that were actually delivered to
//! Kafka, independently of the pipeline's code: each distinct valid billing event is charged once
//! to the local day of its win, and each campaign-day is billed at most its budget (the rest is
//! overdelivery); a conversion goes to the user's last click on that advertiser
//! within the click window, else the last impression within the view window, and is charged when
//! that touch's win bills per conversion, at most once per win. Repeats of a charged event are
//! dead letters, as are malformed messages and forged tokens.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use adstream_operators::attribution::Windows;
use adstream_operators::events::{Billing, EventKind};
use adstream_operators::quality::auc;
use adstream_operators::time::day::budget_day;
use adstream_operators::time::EventTime;
use anyhow::Context;
use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Serialize;

/// The win an impression or click belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct WinRef {
    /// `request_id`.
    pub request_id: String,
    /// `imp_id`.
    pub imp_id: String,
    /// Campaign charged.
    pub campaign_id: String,
    /// Its advertiser.
    pub advertiser_id: String,
    /// Billing unit of the win.
    pub billing: Billing,
    /// What its billing event is charged, micros.
    pub charge_micros: u64,
    /// The campaign's time zone.
    pub tz: Tz,
    /// When the auction issued the win's token, ms (its budget day is the day charged).
    pub issued_ms: i64,
    /// The campaign's daily budget, micros (a hard limit on what is billed).
    pub budget_micros: u64,
}

/// A well-formed event with a valid token (or a conversion), as delivered to Kafka.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivered {
    /// Impression, click or conversion.
    pub kind: EventKind,
    /// `event_id`.
    pub event_id: String,
    /// Event time, ms.
    pub ts_ms: i64,
    /// `user_id`.
    pub user_id: String,
    /// Impressions and clicks: their win. Conversions: `None`.
    pub win: Option<WinRef>,
    /// Conversions: the advertiser.
    pub advertiser_id: String,
    /// Which fault, if any, produced this copy (`duplicate`, `late`).
    pub fault: &'static str,
}

#[derive(Clone, Debug)]
struct TouchRec {
    ts_ms: i64,
    seq: u64,
    win: WinRef,
}

/// One served ad with its truth, for model-quality evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct ServedRow {
    /// `request_id`.
    pub request_id: String,
    /// `imp_id`.
    pub imp_id: String,
    /// Campaign.
    pub campaign_id: String,
    /// Creative.
    pub ad_id: String,
    /// User.
    pub user_id: String,
    /// Billing unit.
    pub billing: &'static str,
    /// Charge of the billing event, micros.
    pub charge_micros: u64,
    /// The ranker's predicted CTR.
    pub pctr: f64,
    /// The ranker's predicted CVR.
    pub pcvr: f64,
    /// The model that scored it.
    pub model_version: String,
    /// True click probability.
    pub true_ctr: f64,
    /// True conversion probability after a click.
    pub true_cvr: f64,
    /// Whether the ad rendered.
    pub rendered: bool,
    /// Whether the user clicked (drawn from `true_ctr`).
    pub clicked: bool,
    /// Whether the user converted (drawn from `true_cvr`).
    pub converted: bool,
}

/// A rendered impression reduced to what click-AUC needs (kept in memory for the whole run).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// True click probability.
    pub true_ctr: f32,
    /// The ranker's predicted CTR.
    pub pctr: f32,
    /// Whether the user clicked.
    pub clicked: bool,
}

/// Spend the ledger must show for one campaign and local day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct ExpectedSpend {
    /// Campaign.
    pub campaign_id: String,
    /// Local budget day.
    pub day: NaiveDate,
    /// Billed, micros.
    pub spend_micros: u64,
    /// Delivered past the budget (free), micros.
    pub overdelivery_micros: u64,
}

/// What the oracle concluded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Expected {
    /// Spend per campaign and day.
    pub spend: Vec<ExpectedSpend>,
    /// Dead letters the pipeline must emit, by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Delivered events by kind.
    pub delivered: BTreeMap<String, u64>,
    /// AUC of the true CTR against the drawn clicks (the best any model can do).
    pub oracle_auc: Option<f64>,
    /// AUC of the served pCTR against the drawn clicks.
    pub served_auc: Option<f64>,
}

impl Expected {
    /// Total expected spend, micros.
    pub fn total_spend(&self) -> u64 {
        self.spend.iter().map(|s| s.spend_micros).sum()
    }
}

/// The oracle over delivered events.
#[derive(Debug, Default)]
pub struct Oracle {
    windows: Windows,
    seen: HashSet<(String, String, EventKind)>,
    touches: HashMap<(String, String), (Vec<TouchRec>, Vec<TouchRec>)>,
    conversions: Vec<Delivered>,
    /// Delivered (billed + overdelivered) micros and the budget, per campaign-day.
    spend: BTreeMap<(String, NaiveDate), (u64, u64)>,
    dead: BTreeMap<String, u64>,
    delivered: BTreeMap<String, u64>,
    seq: u64,
}

impl Oracle {
    /// An oracle with these attribution windows.
    pub fn new(windows: Windows) -> Self {
        Oracle {
            windows,
            ..Oracle::default()
        }
    }

    fn charge(&mut self, win: &WinRef) {
        let day = budget_day(EventTime(win.issued_ms), win.tz);
        let entry = self
            .spend
            .entry((win.campaign_id.clone(), day))
            .or_default();
        entry.0 += win.charge_micros;
        entry.1 = win.budget_micros;
    }

    fn dead_letter(&mut self, reason: &str) {
        *self.dead.entry(reason.to_string()).or_default() += 1;
    }

    /// Counts a message the pipeline must refuse (malformed, forged...) under `reason`.
    pub fn invalid(&mut self, reason: &str) {
        self.dead_letter(reason);
    }

    /// Records an event delivered to Kafka.
    pub fn delivered(&mut self, event: Delivered) {
        *self
            .delivered
            .entry(event.kind.as_str().to_string())
            .or_default() += 1;
        self.seq += 1;
        let Some(win) = event.win.clone() else {
            self.conversions.push(event);
            return;
        };
        let key = (win.request_id.clone(), win.imp_id.clone(), event.kind);
        let charged_here = win.billing.charged_event() == event.kind;
        if !self.seen.insert(key) {
            if charged_here {
                self.dead_letter("duplicate");
            }
            return;
        }
        if charged_here {
            self.charge(&win);
        }
        let touches = self
            .touches
            .entry((event.user_id.clone(), win.advertiser_id.clone()))
            .or_default();
        let rec = TouchRec {
            ts_ms: event.ts_ms,
            seq: self.seq,
            win,
        };
        match event.kind {
            EventKind::Click => touches.0.push(rec),
            _ => touches.1.push(rec),
        }
    }

    fn attribute(&self, user: &str, advertiser: &str, ts_ms: i64) -> Option<WinRef> {
        let (clicks, impressions) = self
            .touches
            .get(&(user.to_string(), advertiser.to_string()))?;
        let last = |list: &[TouchRec], window: i64| {
            list.iter()
                .filter(|t| t.ts_ms <= ts_ms && ts_ms - t.ts_ms <= window)
                .max_by_key(|t| (t.ts_ms, t.seq))
                .map(|t| t.win.clone())
        };
        last(clicks, self.windows.click_ms).or_else(|| last(impressions, self.windows.view_ms))
    }

    /// Attributes the conversions (in event-time order) and returns the verdict; `scored` holds
    /// (true CTR, served pCTR, clicked) of every rendered impression.
    pub fn finish(mut self, scored: &[Scored]) -> Expected {
        let mut conversions = std::mem::take(&mut self.conversions);
        conversions.sort_by_key(|c| c.ts_ms);
        let mut seen_conversions = HashSet::new();
        for conv in &conversions {
            let Some(win) = self.attribute(&conv.user_id, &conv.advertiser_id, conv.ts_ms) else {
                continue;
            };
            if win.billing != Billing::Cpa {
                continue;
            }
            let first_for_win = self.seen.insert((
                win.request_id.clone(),
                win.imp_id.clone(),
                EventKind::Conversion,
            ));
            let new_conversion =
                seen_conversions.insert((conv.advertiser_id.clone(), conv.event_id.clone()));
            if first_for_win && new_conversion {
                self.charge(&win);
            } else {
                self.dead_letter("duplicate");
            }
        }
        let pairs = |f: fn(&Scored) -> f32| -> Vec<(f64, bool)> {
            scored
                .iter()
                .map(|r| (f64::from(f(r)), r.clicked))
                .collect()
        };
        Expected {
            spend: self
                .spend
                .into_iter()
                .map(|((campaign_id, day), (delivered, budget))| {
                    // Billed: the contract's cap, min(delivered, budget), whatever the order.
                    let (spend_micros, overdelivery_micros) =
                        adstream_operators::ledger::split_charge(delivered, 0, budget);
                    ExpectedSpend {
                        campaign_id,
                        day,
                        spend_micros,
                        overdelivery_micros,
                    }
                })
                .collect(),
            dead_letters: self.dead,
            delivered: self.delivered,
            oracle_auc: auc(&pairs(|r| r.true_ctr)),
            served_auc: auc(&pairs(|r| r.pctr)),
        }
    }
}

/// Ground-truth files: `served.jsonl` (every win with its truth) and `events.jsonl` (every
/// message delivered, fault included), then `expected.json` (the oracle's verdict).
pub struct TruthFiles {
    dir: PathBuf,
    served: std::io::BufWriter<std::fs::File>,
    events: std::io::BufWriter<std::fs::File>,
}

impl TruthFiles {
    /// Creates (or truncates) the files in `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the truth directory {}", dir.display()))?;
        let open = |name: &str| -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
            let path = dir.join(name);
            let f = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            Ok(std::io::BufWriter::new(f))
        };
        Ok(TruthFiles {
            dir: dir.to_path_buf(),
            served: open("served.jsonl")?,
            events: open("events.jsonl")?,
        })
    }

    /// Appends a served row.
    pub fn served(&mut self, row: &ServedRow) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.served, row)?;
        self.served.write_all(b"\n")
    }

    /// Appends a delivered message.
    pub fn event(
        &mut self,
        topic: &str,
        key: &str,
        fault: &str,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let doc = serde_json::json!({
            "topic": topic,
            "key": key,
            "fault": fault,
            "payload": String::from_utf8_lossy(payload),
        });
        serde_json::to_writer(&mut self.events, &doc)?;
        self.events.write_all(b"\n")
    }

    /// Writes `expected.json` and flushes everything.
    pub fn finish(mut self, expected: &Expected) -> anyhow::Result<PathBuf> {
        self.served.flush()?;
        self.events.flush()?;
        let path = self.dir.join("expected.json");
        std::fs::write(&path, serde_json::to_vec_pretty(expected)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(rid: &str, campaign: &str, billing: Billing, charge: u64) -> WinRef {
        WinRef {
            request_id: rid.into(),
            imp_id: "1".into(),
            campaign_id: campaign.into(),
            advertiser_id: "adv".into(),
            billing,
            charge_micros: charge,
            tz: chrono_tz::UTC,
            issued_ms: 0,
            budget_micros: u64::MAX,
        }
    }

    fn event(kind: EventKind, ts: i64, w: &WinRef) -> Delivered {
        Delivered {
            kind,
            event_id: format!("{}-{}", w.request_id, kind.as_str()),
            ts_ms: ts,
            user_id: "u".into(),
            win: Some(w.clone()),
            advertiser_id: w.advertiser_id.clone(),
            fault: "",
        }
    }

    fn conversion(id: &str, ts: i64) -> Delivered {
        Delivered {
            kind: EventKind::Conversion,
            event_id: id.into(),
            ts_ms: ts,
            user_id: "u".into(),
            win: None,
            advertiser_id: "adv".into(),
            fault: "",
        }
    }

    fn spend(e: &Expected, campaign: &str) -> u64 {
        e.spend
            .iter()
            .filter(|s| s.campaign_id == campaign)
            .map(|s| s.spend_micros)
            .sum()
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn charges_each_billing_event_once() {
        let mut o = Oracle::new(Windows::default());
        let cpm = win("r1", "cpm", Billing::Cpm, 7);
        let cpc = win("r2", "cpc", Billing::Cpc, 100);
        o.delivered(event(EventKind::Impression, 10, &cpm));
        o.delivered(event(EventKind::Impression, 10, &cpm));
        o.delivered(event(EventKind::Impression, 20, &cpc));
        o.delivered(event(EventKind::Impression, 20, &cpc));
        o.delivered(event(EventKind::Click, 30, &cpc));
        let e = o.finish(&[]);
        assert_eq!(spend(&e, "cpm"), 7);
        assert_eq!(spend(&e, "cpc"), 100);
        // Only the repeated CPM impression is a billing duplicate.
        assert_eq!(e.dead_letters.get("duplicate"), Some(&1));
    }

    #[test]
    fn conversions_go_to_the_last_click_then_the_last_view() {
        let mut o = Oracle::new(Windows::default());
        let a = win("a", "cpa-a", Billing::Cpa, 1_000);
        let b = win("b", "cpa-b", Billing::Cpa, 2_000);
        let v = win("v", "cpa-v", Billing::Cpa, 3_000);
        o.delivered(event(EventKind::Click, 100, &a));
        o.delivered(event(EventKind::Click, 200, &b));
        o.delivered(event(EventKind::Impression, 300, &v));
        // After both clicks: the later click wins, not the later impression.
        o.delivered(conversion("c1", 400));
        // Between the clicks: the first.
        o.delivered(conversion("c2", 150));
        // Second conversion on b's win: a duplicate charge.
        o.delivered(conversion("c3", 500));
        // Clicks out of window: the impression, within its day.
        o.delivered(conversion("c4", 200 + 7 * DAY + 1));
        let e = o.finish(&[]);
        assert_eq!(spend(&e, "cpa-a"), 1_000);
        assert_eq!(spend(&e, "cpa-b"), 2_000);
        assert_eq!(
            spend(&e, "cpa-v"),
            0,
            "the view is older than a day by then"
        );
        assert_eq!(e.dead_letters.get("duplicate"), Some(&1));
    }

    #[test]
    fn non_cpa_touch_takes_the_conversion_without_charge() {
        let mut o = Oracle::new(Windows::default());
        let cpa = win("a", "cpa", Billing::Cpa, 1_000);
        let cpc = win("b", "cpc", Billing::Cpc, 50);
        o.delivered(event(EventKind::Click, 100, &cpa));
        o.delivered(event(EventKind::Click, 200, &cpc));
        o.delivered(conversion("c1", 300));
        let e = o.finish(&[]);
        assert_eq!(spend(&e, "cpa"), 0);
        assert_eq!(spend(&e, "cpc"), 50);
    }

    #[test]
    fn days_follow_the_campaign_time_zone() {
        let mut o = Oracle::new(Windows::default());
        let mut w = win("r", "tokyo", Billing::Cpm, 5);
        w.tz = chrono_tz::Asia::Tokyo;
        // 2026-01-01 20:00 UTC is already Jan 2 in Tokyo; the impression, an hour later, still
        // goes to its win's day.
        w.issued_ms = 1_767_297_600_000 - 3_600_000 * 6;
        o.delivered(event(EventKind::Impression, 1_767_297_600_000, &w));
        let e = o.finish(&[]);
        assert_eq!(e.spend[0].day, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
    }

    #[test]
    fn each_campaign_day_is_billed_at_most_its_budget() {
        let mut o = Oracle::new(Windows::default());
        for i in 0..10 {
            let mut w = win(&format!("r{i}"), "small", Billing::Cpc, 300);
            w.budget_micros = 1_000;
            o.delivered(event(EventKind::Click, 10 + i, &w));
        }
        let e = o.finish(&[]);
        assert_eq!(spend(&e, "small"), 1_000);
        assert_eq!(e.spend[0].overdelivery_micros, 2_000);
    }
}
