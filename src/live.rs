//! The live view a process serves over HTTP: every campaign's budget state, kept current by the
//! ledger's broadcast updates, and the process's readiness.
//!
//! Readiness ([`LiveState::readiness`], `GET /readyz`) is honest about the inputs: a process is
//! ready once every source has read what its partitions held at start-up, and stays ready only
//! while the brokers answer, no partition it reads is more than `health.max_lag_messages`
//! behind its end, and its outputs are not backed up. The Kafka monitor
//! ([`crate::kafka::monitor`]) and the clients' error callbacks feed it; [`evaluate`] is the
//! rule, and every reason it gives names what is wrong (a topic and partition for a lag).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use adstream_operators::ledger::status::{BudgetBook, BudgetStatus};
use adstream_operators::records::LedgerState;
use adstream_operators::records::PacingUpdate;
use adstream_operators::time::EventTime;

/// Campaign statuses built per hold of the book's lock when listing every campaign.
const LISTING_CHUNK: usize = 1_024;

/// Shared between the dataflow workers (writers) and the HTTP handlers (readers).
#[derive(Default)]
pub struct LiveState {
    book: RwLock<BudgetBook>,
    sources_caught_up: RwLock<Vec<Arc<AtomicBool>>>,
    /// What the Kafka monitor and the clients report.
    pub health: Health,
}

/// How far a partition is behind its end.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Messages between the position read and the partition's end.
    pub lag: i64,
}

/// The Kafka side of readiness, written by the monitor and the clients' callbacks.
#[derive(Default)]
pub struct Health {
    broker: Mutex<Option<String>>,
    lagging: Mutex<Vec<PartitionLag>>,
    max_lag: Mutex<i64>,
    output_congested: Mutex<Option<Arc<AtomicBool>>>,
    reachable_gauge: Mutex<Option<prometheus::IntGauge>>,
}

impl Health {
    /// The brokers do not answer (`Some(why)`), or answer again (`None`).
    pub fn set_broker_unreachable(&self, why: Option<String>) {
        if let Ok(g) = self.reachable_gauge.lock() {
            if let Some(g) = g.as_ref() {
                g.set(i64::from(why.is_none()));
            }
        }
        if let Ok(mut b) = self.broker.lock() {
            *b = why;
        }
    }

    /// Registers the gauge that shows whether the brokers answer (1) or not (0).
    pub fn track_broker(&self, gauge: prometheus::IntGauge) {
        gauge.set(i64::from(self.broker_unreachable().is_none()));
        if let Ok(mut g) = self.reachable_gauge.lock() {
            *g = Some(gauge);
        }
    }

    /// Whether the brokers were last seen unreachable.
    pub fn broker_unreachable(&self) -> Option<String> {
        self.broker.lock().ok().and_then(|b| b.clone())
    }

    /// The lag of every partition this process reads, measured together, and the limit.
    pub fn set_lags(&self, lagging: Vec<PartitionLag>, max_lag: i64) {
        if let Ok(mut l) = self.lagging.lock() {
            *l = lagging;
        }
        if let Ok(mut m) = self.max_lag.lock() {
            *m = max_lag;
        }
    }

    /// Registers the flag the sinks raise while their queue is full.
    pub fn track_output(&self, congested: Arc<AtomicBool>) {
        if let Ok(mut c) = self.output_congested.lock() {
            *c = Some(congested);
        }
    }
}

/// Why a process is not ready; JSON `{"reason": "...", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotReady {
    /// No source has started yet.
    Starting,
    /// Sources still reading what their partitions held at start-up.
    CatchingUp {
        /// Sources not caught up.
        sources: usize,
    },
    /// The brokers do not answer.
    BrokerUnreachable {
        /// The last error seen.
        detail: String,
    },
    /// A partition is further behind its end than allowed.
    Lagging {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Messages behind.
        lag: i64,
        /// The pipeline's `health.max_lag_messages`.
        max_lag: i64,
    },
    /// The producer's queue is full: outputs wait and the inputs are held.
    OutputBacklog,
}

/// `GET /readyz`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    /// 200 when true, 503 otherwise.
    pub ready: bool,
    /// Every reason it is not (empty when ready).
    pub reasons: Vec<NotReady>,
}

/// The readiness rule: ready when every source (at least one) has caught up, the brokers
/// answer, no partition lags beyond `max_lag` and the outputs are not backed up.
pub fn evaluate(
    sources_caught_up: &[bool],
    broker: Option<&str>,
    lagging: &[PartitionLag],
    max_lag: i64,
    output_backlog: bool,
) -> Readiness {
    let mut reasons = Vec::new();
    let behind = sources_caught_up.iter().filter(|c| !**c).count();
    if sources_caught_up.is_empty() {
        reasons.push(NotReady::Starting);
    } else if behind > 0 {
        reasons.push(NotReady::CatchingUp { sources: behind });
    }
    if let Some(detail) = broker {
        reasons.push(NotReady::BrokerUnreachable {
            detail: detail.to_string(),
        });
    }
    reasons.extend(
        lagging
            .iter()
            .filter(|l| l.lag > max_lag)
            .map(|l| NotReady::Lagging {
                topic: l.topic.clone(),
                partition: l.partition,
                lag: l.lag,
                max_lag,
            }),
    );
    if output_backlog {
        reasons.push(NotReady::OutputBacklog);
    }
    Readiness {
        ready: reasons.is_empty(),
        reasons,
    }
}

impl LiveState {
    /// Folds a ledger update in.
    pub fn apply(&self, out: &LedgerState) {
        if let Ok(mut book) = self.book.write() {
            book.apply(out);
        }
    }

    /// Folds a campaign's pacing update in.
    pub fn apply_pacing(&self, update: &PacingUpdate) {
        if let Ok(mut book) = self.book.write() {
            book.apply_pacing(update);
        }
    }

    /// A campaign's status now.
    pub fn status(&self, campaign: &str) -> Option<BudgetStatus> {
        self.book.read().ok()?.status(campaign, EventTime::now())
    }

    /// A campaign's status for budget day `day`.
    pub fn status_on(&self, campaign: &str, day: chrono::NaiveDate) -> Option<BudgetStatus> {
        self.book
            .read()
            .ok()?
            .status_on(campaign, day, EventTime::now())
    }

    /// The advertiser of a defined campaign.
    pub fn advertiser_of(&self, campaign: &str) -> Option<String> {
        let book = self.book.read().ok()?;
        let listed = book.catalog().get(campaign)?;
        Some(listed.campaign.advertiser_id.clone())
    }

    /// Every campaign's status now. The book is read a chunk of campaigns at a time, so a
    /// large catalog does not hold up the worker that writes it for the whole listing (each
    /// status is of one instant; the listing is not one snapshot across campaigns).
    pub fn all(&self) -> Vec<BudgetStatus> {
        let ids = match self.book.read() {
            Ok(book) => book.campaign_ids(),
            Err(_) => return Vec::new(),
        };
        let now = EventTime::now();
        let mut all = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LISTING_CHUNK) {
            let Ok(book) = self.book.read() else {
                break;
            };
            all.extend(chunk.iter().filter_map(|c| book.status(c, now)));
        }
        all
    }

    /// Visits every defined campaign with its spend today and its daily budget
    /// ([`BudgetBook::visit_spend_today`]), holding the book for that one pass only.
    pub fn visit_spend_today(&self, visit: impl FnMut(&str, u64, u64)) {
        if let Ok(book) = self.book.read() {
            book.visit_spend_today(EventTime::now(), visit);
        }
    }

    /// The statuses of the at most `k` campaigns with the most spend on their latest budget day
    /// ([`BudgetBook::top_spenders`]), most first, and how many campaigns are known. Holds the
    /// book for one pass over its campaigns and `k` statuses, so a large catalog does not hold
    /// up the worker that writes the book.
    pub fn top(&self, k: usize) -> (Vec<BudgetStatus>, usize) {
        let Ok(book) = self.book.read() else {
            return (Vec::new(), 0);
        };
        let now = EventTime::now();
        let (ids, known) = book.top_spenders(k);
        let statuses = ids
            .into_iter()
            .filter_map(|c| book.status(c, now))
            .collect();
        (statuses, known)
    }

    /// Registers a source's caught-up flag for readiness.
    pub fn track_source(&self, flag: Arc<AtomicBool>) {
        if let Ok(mut v) = self.sources_caught_up.write() {
            v.push(flag);
        }
    }

    /// Whether this process is ready and, if not, every reason why ([`evaluate`]).
    pub fn readiness(&self) -> Readiness {
        let sources: Vec<bool> = self
            .sources_caught_up
            .read()
            .map(|v| v.iter().map(|f| f.load(Ordering::Relaxed)).collect())
            .unwrap_or_default();
        let h = &self.health;
        let broker = h.broker_unreachable();
        let lagging = h.lagging.lock().map(|l| l.clone()).unwrap_or_default();
        let max_lag = h.max_lag.lock().map(|m| *m).unwrap_or(0);
        let backlog = h
            .output_congested
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.load(Ordering::Relaxed)))
            .unwrap_or(false);
        evaluate(&sources, broker.as_deref(), &lagging, max_lag, backlog)
    }

    /// Whether this process is ready ([`LiveState::readiness`]).
    pub fn ready(&self) -> bool {
        self.readiness().ready
    }

    /// Number of campaigns known.
    pub fn campaigns(&self) -> usize {
        self.book
            .read()
            .map(|b| b.campaign_ids().len())
            .unwrap_or(0)
    }
}

/// Test setup shared by the HTTP, dashboard and live-state tests.
#[cfg(test)]
impl LiveState {
    /// Defines campaign `id` of `advertiser` in UTC with this daily budget, billing type
    /// (`"cpm"`, `"cpc"`, `"cpa"`) and bid, as the ledger's catalog would replicate it.
    pub(crate) fn define_for_test(
        &self,
        id: &str,
        advertiser: &str,
        budget_micros: u64,
        billing: &str,
        bid_micros: u64,
    ) {
        use adstream_operators::events::Campaign;
        use adstream_operators::records::CatalogUpdate;
        let json = format!(
            r#"{{"campaign_id":"{id}","advertiser_id":"{advertiser}","daily_budget_micros":{budget_micros},"timezone":"UTC","billing":"{billing}","bid_micros":{bid_micros}}}"#
        );
        let campaign = Campaign::parse(json.as_bytes()).expect("a valid test campaign");
        self.apply(&LedgerState::Campaign(CatalogUpdate::new(
            id.into(),
            Some(Box::new(campaign)),
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(partition: i32, lag: i64) -> PartitionLag {
        PartitionLag {
            topic: "ads.clicks".into(),
            partition,
            lag,
        }
    }

    #[test]
    fn listing_reads_every_campaign_across_chunks_in_id_order() {
        use adstream_operators::records::DaySpend;
        let live = LiveState::default();
        let n = LISTING_CHUNK * 2 + 3;
        for i in 0..n {
            live.define_for_test(&format!("c{i:05}"), "a", 1000, "cpm", 1);
        }
        // A campaign charged but no longer defined is listed too.
        live.apply(&LedgerState::Spend(DaySpend {
            campaign_id: "gone".into(),
            day: adstream_operators::time::day::budget_day(EventTime::now(), chrono_tz::UTC),
            spend_micros: 5,
            overdelivery_micros: 0,
        }));
        let all = live.all();
        assert_eq!(all.len(), n + 1);
        assert!(all.windows(2).all(|w| w[0].campaign_id < w[1].campaign_id));
        assert_eq!(all.last().map(|s| s.status.as_str()), Some("deleted"));
    }

    #[test]
    fn ready_only_when_caught_up_reachable_current_and_flowing() {
        assert!(evaluate(&[true, true], None, &[lag(0, 10)], 10, false).ready);
        assert_eq!(
            evaluate(&[], None, &[], 10, false).reasons,
            vec![NotReady::Starting]
        );
        assert_eq!(
            evaluate(&[true, false], None, &[], 10, false).reasons,
            vec![NotReady::CatchingUp { sources: 1 }]
        );
        let r = evaluate(
            &[true],
            Some("all brokers down"),
            &[lag(0, 11), lag(1, 3)],
            10,
            true,
        );
        assert!(!r.ready);
        assert_eq!(
            r.reasons,
            vec![
                NotReady::BrokerUnreachable {
                    detail: "all brokers down".into()
                },
                NotReady::Lagging {
                    topic: "ads.clicks".into(),
                    partition: 0,
                    lag: 11,
                    max_lag: 10
                },
                NotReady::OutputBacklog,
            ]
        );
    }

    #[test]
    fn reasons_name_the_partition_in_json() {
        let r = evaluate(&[true], None, &[lag(3, 500)], 100, false);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"ready": false, "reasons": [{"reason": "lagging",
                "topic": "ads.clicks", "partition": 3, "lag": 500, "max_lag": 100}]})
        );
    }

    /// A process goes unready while the broker is down and ready again once it answers.
    #[test]
    fn readiness_follows_the_broker() {
        let live = LiveState::default();
        live.track_source(Arc::new(AtomicBool::new(true)));
        assert!(live.ready());
        live.health
            .set_broker_unreachable(Some("metadata request timed out".into()));
        assert!(!live.ready());
        live.health.set_broker_unreachable(None);
        assert!(live.ready());
        let congested = Arc::new(AtomicBool::new(true));
        live.health.track_output(congested.clone());
        assert_eq!(live.readiness().reasons, vec![NotReady::OutputBacklog]);
        congested.store(false, Ordering::Relaxed);
        assert!(live.ready());
    }
}
