//! `adstream train`: a model version from logged history, before a pipeline goes live.
//!
//! The history is JSON Lines, one served ad per line: an `ads.served` record
//! (`schemas/served.schema.json`: the feature spec's sources, what serving predicted) plus its
//! outcome, `click` (boolean, required) and `conversion` (boolean, optional; only meaningful
//! for a click). Each line becomes the labelled examples the live label join would have made:
//! a click label, and for a click a conversion label (a fake negative, then a positive if it
//! converted). They are trained in serving order, in full batches, with the same learner,
//! progressive validation and publish guards as online training, into the pipeline's model
//! registry (`STATE_DIR/models`): a version that passes the guards goes live there, and
//! `adstream run` serves it from its start.

use std::io::BufRead;
use std::path::Path;

use adstream_operators::ranker::registry::Registry;
use adstream_operators::ranker::trainer::{select_device, Batcher, LabelAligner, Learner};
use adstream_operators::records::{LabeledExample, Served};
use anyhow::Context;
use serde::Deserialize;

use crate::pipeline::Pipeline;

/// One line of a history file.
#[derive(Debug, Deserialize)]
struct HistoryLine {
    #[serde(flatten)]
    served: Served,
    click: bool,
    #[serde(default)]
    conversion: Option<bool>,
}

/// The labelled examples of one served ad with its outcome, as the label join emits them.
pub fn examples_of(served: Served, clicked: bool, converted: Option<bool>) -> Vec<LabeledExample> {
    let at = served.ts.millis();
    let served = Box::new(served);
    let mut out = vec![LabeledExample {
        served: served.clone(),
        click: Some(clicked),
        conversion: None,
        label_ms: at,
    }];
    if clicked {
        out.push(LabeledExample {
            served: served.clone(),
            click: None,
            conversion: Some(false),
            label_ms: at,
        });
        if converted == Some(true) {
            out.push(LabeledExample {
                served,
                click: None,
                conversion: Some(true),
                label_ms: at,
            });
        }
    }
    out
}

/// Reads a history file; an unreadable line is an error naming it (nothing is skipped).
pub fn read_history(path: &Path) -> anyhow::Result<Vec<LabeledExample>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut lines: Vec<(i64, usize, HistoryLine)> = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: reading line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: HistoryLine = adstream_operators::events::parse_json(line.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), i + 1))?;
        lines.push((parsed.served.ts.millis(), i, parsed));
    }
    // Serving order (the file's order among equal times).
    lines.sort_by_key(|(ts, i, _)| (*ts, *i));
    Ok(lines
        .into_iter()
        .flat_map(|(_, _, l)| examples_of(l.served, l.click, l.conversion))
        .collect())
}

/// An input event of a replay from the topics, in event-time order.
enum Replayed {
    Served(Box<Served>),
    Touch(
        adstream_operators::events::AdEvent,
        adstream_operators::records::Touch,
    ),
    Conversion(adstream_operators::events::Conversion),
}

/// Reads the pipeline's own topics (`ads.served`, impressions, clicks, conversions) from their
/// beginning to their current end and replays what happened from `since` on through the
/// product's attribution and label join, as the live graph would have: the labelled examples
/// of every served ad whose windows closed by the newest event read. Billing events whose token
/// does not verify, and anything unreadable, are left out (the live graph dead-lettered them).
pub fn examples_from_topics(
    pipeline: &Pipeline,
    brokers: &str,
    since: adstream_operators::time::EventTime,
    timeout: std::time::Duration,
) -> anyhow::Result<(Vec<LabeledExample>, usize)> {
    use adstream_operators::attribution::{attributed, Attributor};
    use adstream_operators::events::{AdEvent, Conversion, EventKind};
    use adstream_operators::labels::LabelJoin;
    use adstream_operators::records::{LabelEvent, Touch};
    use adstream_operators::token::verify_event;

    let config = crate::kafka::client_config(pipeline, brokers)?;
    crate::kafka::check_connection(&config, brokers, std::time::Duration::from_secs(15))?;
    let secret = pipeline.unlock()?.serve.secret;
    let topics = &pipeline.topics;
    let mut events: Vec<(i64, usize, Replayed)> = Vec::new();
    let mut push = |ts: adstream_operators::time::EventTime, e: Replayed| {
        if ts >= since {
            let n = events.len();
            events.push((ts.millis(), n, e));
        }
    };
    crate::kafka::read_to_end(&config, &topics.served, timeout, |_, payload| {
        if let Some(Ok(s)) = payload.map(serde_json::from_slice::<Served>) {
            push(s.ts, Replayed::Served(Box::new(s)));
        }
    })?;
    for (topic, kind) in [
        (&topics.impressions, EventKind::Impression),
        (&topics.clicks, EventKind::Click),
    ] {
        crate::kafka::read_to_end(&config, topic, timeout, |_, payload| {
            let Some(Ok(event)) = payload.map(AdEvent::parse) else {
                return;
            };
            if let Ok(claims) = verify_event(&secret, &event) {
                let touch = Touch {
                    ts: event.ts,
                    kind,
                    claims: std::sync::Arc::new(claims),
                };
                push(event.ts, Replayed::Touch(event, touch));
            }
        })?;
    }
    crate::kafka::read_to_end(&config, &topics.conversions, timeout, |_, payload| {
        if let Some(Ok(c)) = payload.map(Conversion::parse) {
            push(c.ts, Replayed::Conversion(c));
        }
    })?;
    events.sort_by_key(|(ts, n, _)| (*ts, *n));
    let read = events.len();
    let newest = events.last().map_or(i64::MIN, |(ts, _, _)| *ts);
    let mut attributor = Attributor::new(pipeline.windows);
    let mut join = LabelJoin::new(pipeline.labels);
    let mut out = Vec::new();
    let mut frontier = i64::MIN;
    for (ts, _, event) in events {
        let input = match event {
            Replayed::Served(s) => Some(LabelEvent::Served(s)),
            Replayed::Touch(e, touch) => {
                attributor.record(&e.user_id, touch.clone());
                Some(match touch.kind {
                    EventKind::Click => LabelEvent::Click {
                        request_id: e.request_id,
                        imp_id: e.imp_id,
                        ts: e.ts,
                    },
                    _ => LabelEvent::Impression {
                        request_id: e.request_id,
                        imp_id: e.imp_id,
                        ts: e.ts,
                    },
                })
            }
            Replayed::Conversion(c) => attributor
                .attribute(&c.user_id, &c.advertiser_id, c.ts)
                .map(|touch| LabelEvent::Conversion(attributed(&touch, &c))),
        };
        if let Some(input) = input {
            out.extend(join.apply(input));
        }
        if ts > frontier.saturating_add(1_000) {
            frontier = ts;
            out.extend(join.advance(frontier));
        }
    }
    out.extend(join.advance(newest));
    Ok((out, read))
}

/// What a training run did.
#[derive(Debug)]
pub struct TrainReport {
    /// Examples trained on.
    pub examples: u64,
    /// The version snapshotted at the end and the guards' verdict on it.
    pub version: Option<(u64, String)>,
    /// Progressive-validation click metrics at the end.
    pub click: serde_json::Value,
}

/// Trains on the history file `history` with `pipeline`'s model settings into the registry
/// under `state_dir`.
pub fn train(pipeline: &Pipeline, history: &Path, state_dir: &Path) -> anyhow::Result<TrainReport> {
    let examples = read_history(history)?;
    anyhow::ensure!(
        !examples.is_empty(),
        "{}: no examples in the history",
        history.display()
    );
    train_examples(pipeline, examples, state_dir)
}

/// Trains on `examples` (in serving order) with `pipeline`'s model settings into the registry
/// under `state_dir`.
pub fn train_examples(
    pipeline: &Pipeline,
    examples: Vec<LabeledExample>,
    state_dir: &Path,
) -> anyhow::Result<TrainReport> {
    let config = pipeline.model.trainer.clone();
    let device = select_device(config.device)?;
    let registry = Registry::open(state_dir.join("models"), config.keep_versions)?;
    let mut learner = Learner::new(
        pipeline.model.features.clone(),
        config.clone(),
        device,
        registry,
    )?;
    // The live trainer's path: positives in step with their negatives, full batches.
    let mut aligner = LabelAligner::new(usize::MAX);
    let mut aligned = Vec::with_capacity(examples.len());
    for e in examples {
        aligner.admit(e, &mut aligned);
    }
    aligned.extend(aligner.drain());
    let mut batcher = Batcher::new(config.batch_size);
    let mut batches = batcher.push(aligned);
    batches.extend(batcher.idle());
    for batch in batches {
        learner.train(batch)?;
    }
    learner.snapshot()?;
    let status = learner.status();
    let version = status.versions.last().map(|m| {
        let verdict = serde_json::to_value(m.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        (m.version, verdict)
    });
    Ok(TrainReport {
        examples: status.examples,
        version,
        click: serde_json::to_value(&status.click)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize, clicked: bool) -> String {
        format!(
            r#"{{"request_id":"r{i}","imp_id":"1","ts":{},"campaign_id":"c{}","advertiser_id":"a","ad_id":"x","billing":"cpc","charge_micros":1,"price_ecpm_micros":1,"pctr":0.05,"pcvr":0.05,"model_version":"prior","user_id":"u{}","country":"{}","device":null,"interests":[],"tag_id":null,"click":{clicked}}}"#,
            1_000_000 + i,
            i % 2,
            i % 50,
            ["US", "FR"][(i / 2) % 2]
        )
    }

    #[test]
    fn a_history_line_is_the_examples_the_join_would_make() {
        let served: Served =
            serde_json::from_str(&line(1, true).replace(r#","click":true"#, "")).unwrap();
        let e = examples_of(served.clone(), true, Some(true));
        let labels: Vec<_> = e.iter().map(|e| (e.click, e.conversion)).collect();
        assert_eq!(
            labels,
            vec![(Some(true), None), (None, Some(false)), (None, Some(true))]
        );
        assert_eq!(examples_of(served, false, None).len(), 1);
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        std::fs::write(&path, format!("{}\n\n{{\"nope\":1}}\n", line(0, false))).unwrap();
        let e = read_history(&path).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        let missing = line(0, false).replace(r#","click":false"#, "");
        std::fs::write(&path, missing).unwrap();
        let e = read_history(&path).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("click"), "{e}");
    }
}
