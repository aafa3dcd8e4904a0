//! Billing notices: an exchange fires a win's `burl` (`GET /v1/billing?token=...&u=...`) when
//! the impression is billable, and adstream turns it into the same billing event an impression
//! logger would send: an impression on the impressions topic, carrying the win's verified token.
//!
//! Idempotent: the ledger charges once per (request, slot, billing event), so a notice fired
//! twice, or a notice and an impression of the same win, bill once. A notice repeated to the
//! same process is answered without publishing it again (the ledger would dead-letter the copy
//! as a duplicate). The answer waits until Kafka has the event: 204 means it is durable; 503
//! (broker unreachable) tells the exchange to retry.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use adstream_operators::events::check_id;
use adstream_operators::time::EventTime;
use adstream_operators::token::{verify, TokenError, WinClaims};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// Wins remembered per process to answer a repeated notice without publishing it again.
const REMEMBERED: usize = 100_000;

/// How long a notice waits for Kafka before it is answered 503.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a notice was not turned into a billing event.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// The token is missing, malformed or does not verify (400).
    #[error("query `token`: {0}")]
    Token(#[from] TokenError),
    /// The user id is not a valid id (400).
    #[error("query `u`: {0}")]
    User(String),
    /// Kafka did not take the event in time (503: the exchange retries).
    #[error("the billing event could not be published: {0}")]
    Publish(String),
}

/// What a fired notice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Published as an impression.
    Published,
    /// This process already published the same win's notice.
    Repeat,
}

/// The impression event a notice stands for: the win's identity from its verified claims, the
/// token itself, an event id derived from the token's signature (the same for every firing of
/// one notice), and the time it was fired.
pub fn impression_of(
    claims: &WinClaims,
    token: &str,
    user_id: Option<&str>,
    at: EventTime,
) -> serde_json::Value {
    let signature = token.rsplit('.').next().unwrap_or(token);
    json!({
        "event_id": format!("notice-{signature}"),
        "ts": at.millis(),
        "request_id": claims.request_id,
        "imp_id": claims.imp_id,
        "campaign_id": claims.campaign_id,
        "ad_id": claims.ad_id,
        "user_id": user_id.unwrap_or("unknown"),
        "billing_token": token,
    })
}

/// The wins this process published a notice of: a set, and its insertion order for eviction.
type Remembered = (HashSet<(String, String)>, VecDeque<(String, String)>);

/// Turns fired notices into impressions on Kafka.
pub struct BillingNotices {
    producer: FutureProducer,
    topic: String,
    /// Counts deliveries and failures by topic, as the sinks do.
    metrics: crate::metrics::Metrics,
    secret: Vec<u8>,
    recent: Mutex<Remembered>,
}

impl BillingNotices {
    /// A publisher to `topic` with the pipeline's client settings, verifying with `secret`;
    /// deliveries and failures are counted in `metrics`' output families, by topic.
    pub fn new(
        config: &ClientConfig,
        topic: &str,
        secret: Vec<u8>,
        metrics: crate::metrics::Metrics,
    ) -> anyhow::Result<Self> {
        let mut config = config.clone();
        crate::kafka::properties::set_defaults(&mut config, &[("linger.ms", "1")]);
        config
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .set("allow.auto.create.topics", "false");
        Ok(BillingNotices {
            producer: config.create()?,
            topic: topic.to_string(),
            metrics,
            secret,
            recent: Mutex::new((HashSet::new(), VecDeque::new())),
        })
    }

    /// Verifies `token` and publishes its impression (see the module doc).
    pub async fn fire(&self, token: &str, user_id: Option<&str>) -> Result<Notice, NoticeError> {
        let claims = verify(&self.secret, token)?;
        if let Some(user) = user_id {
            check_id(user).map_err(|e| NoticeError::User(e.to_string()))?;
        }
        let win = (claims.request_id.clone(), claims.imp_id.clone());
        if self.recent.lock().is_ok_and(|r| r.0.contains(&win)) {
            return Ok(Notice::Repeat);
        }
        let event = impression_of(&claims, token, user_id, EventTime::now());
        let payload = event.to_string();
        let record = FutureRecord::to(&self.topic)
            .key(claims.request_id.as_bytes())
            .payload(payload.as_bytes());
        let count = |outcome: &str| {
            self.metrics
                .output_records
                .with_label_values(&[self.topic.as_str(), outcome])
                .inc();
        };
        self.producer
            .send(record, DELIVERY_TIMEOUT)
            .await
            .map_err(|(e, _)| {
                count("failed");
                let why = e
                    .rdkafka_error_code()
                    .map_or_else(|| "client".to_string(), crate::kafka::output::reason);
                self.metrics
                    .output_failures
                    .with_label_values(&[self.topic.as_str(), why.as_str()])
                    .inc();
                NoticeError::Publish(e.to_string())
            })?;
        count("delivered");
        if let Ok(mut recent) = self.recent.lock() {
            let (set, order) = &mut *recent;
            if set.insert(win.clone()) {
                order.push_back(win);
                if order.len() > REMEMBERED {
                    if let Some(old) = order.pop_front() {
                        set.remove(&old);
                    }
                }
            }
        }
        Ok(Notice::Published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adstream_operators::events::{AdEvent, Billing};
    use adstream_operators::token::{sign, verify_event};

    #[test]
    fn a_notice_is_the_impression_of_its_win() {
        let claims = WinClaims {
            request_id: "r1".into(),
            imp_id: "1".into(),
            campaign_id: "c".into(),
            advertiser_id: "a".into(),
            ad_id: "ad".into(),
            billing: Billing::Cpm,
            charge_micros: 1_000,
            issued: EventTime(1_000),
            country: Some("US".into()),
            device: None,
        };
        let token = sign(b"secret", &claims);
        let event = impression_of(&claims, &token, Some("u1"), EventTime(2_000));
        let parsed = AdEvent::parse(event.to_string().as_bytes()).expect("a valid impression");
        assert_eq!(verify_event(b"secret", &parsed).expect("verifies"), claims);
        assert_eq!(parsed.user_id, "u1");
        assert_eq!(parsed.ts, EventTime(2_000));
        // Fired again later: the same event id (one win, one notice).
        let again = impression_of(&claims, &token, Some("u1"), EventTime(9_000));
        assert_eq!(again["event_id"], event["event_id"]);
        assert!(event["event_id"].as_str().unwrap().len() < 64);
        let anonymous = impression_of(&claims, &token, None, EventTime(2_000));
        assert!(AdEvent::parse(anonymous.to_string().as_bytes()).is_ok());
    }
}
