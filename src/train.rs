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
    Ok(with_priors(lines.into_iter().map(|(_, _, l)| l))
        .flat_map(|l| examples_of(l.served, l.click, l.conversion))
        .collect())
}

/// `lines` in serving order, each line that logs no prior (a record of an earlier version, or
/// a history from elsewhere) given the per-campaign prior of the lines before it, counted as
/// serving counts (an outcome counted once its line is served: the history says nothing of
/// when it came). A model that corrects the prior is then trained against the prior the
/// pipeline seeded from the same lines (`--seed-prior`) goes on counting, never against the
/// global rate in training and a campaign's own at serving.
fn with_priors(lines: impl Iterator<Item = HistoryLine>) -> impl Iterator<Item = HistoryLine> {
    let mut prior = adstream_operators::ranker::prior::PriorRanker::default();
    lines.map(move |mut l| {
        if l.served.prior_pctr.is_none() || l.served.prior_pcvr.is_none() {
            let p = prior.predict(&l.served.campaign_id);
            l.served.prior_pctr = l.served.prior_pctr.or(Some(p.pctr));
            l.served.prior_pcvr = l.served.prior_pcvr.or(Some(p.pcvr));
        }
        let converted = l.click && l.conversion == Some(true);
        prior.observe(
            &l.served.campaign_id,
            1.0,
            f64::from(u8::from(l.click)),
            f64::from(u8::from(converted)),
        );
        l
    })
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
    /// What became of the examples' per-campaign counts: the prior a model with
    /// `prior_offset` was trained against.
    pub prior: PriorSeed,
}

/// Whether `adstream train` seeded the pipeline's per-campaign prior with its examples' counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriorSeed {
    /// The state store had no counts: these campaigns start from the examples' counts.
    Seeded(usize),
    /// The state store was left alone, for the reason given.
    Kept(String),
}

impl std::fmt::Display for PriorSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PriorSeed::Seeded(n) => write!(
                f,
                "the pipeline's prior starts from the examples' counts of {n} campaign(s)"
            ),
            PriorSeed::Kept(why) => write!(f, "the pipeline's prior was left alone: {why}"),
        }
    }
}

/// Seeds the per-campaign prior of the pipeline whose state is under `state_dir` with
/// `totals`, when that state has no counts yet (a pipeline bootstrapped from history starts
/// against the prior its first model was trained with, not the global rate). A store that is
/// open elsewhere (a running pipeline, which counts for itself) or belongs to a multi-process
/// pipeline (`process-0` written by more than one) is left alone, and says so; a store that
/// fails to write is an error.
fn seed_prior(
    state_dir: &Path,
    totals: &adstream_operators::activity::ActivityTotals,
) -> anyhow::Result<PriorSeed> {
    if totals.is_empty() {
        return Ok(PriorSeed::Kept("no campaign in the examples".into()));
    }
    let store = match crate::state::RocksStore::open(state_dir, 0, 1, true, None) {
        Ok(store) => store,
        Err(e) => return Ok(PriorSeed::Kept(format!("{e}"))),
    };
    let n = adstream_operators::activity::operator::seed(&store, totals)
        .with_context(|| format!("seeding the prior under {}", state_dir.display()))?;
    Ok(if n == 0 {
        PriorSeed::Kept("the pipeline has counts of its own".into())
    } else {
        PriorSeed::Seeded(n)
    })
}

/// Trains on the history file `history` with `pipeline`'s model settings into the registry
/// under `state_dir`.
pub fn train(
    pipeline: &Pipeline,
    history: &Path,
    state_dir: &Path,
    seed: bool,
) -> anyhow::Result<TrainReport> {
    let examples = read_history(history)?;
    anyhow::ensure!(
        !examples.is_empty(),
        "{}: no examples in the history",
        history.display()
    );
    train_examples(pipeline, examples, state_dir, seed)
}

/// Trains on `examples` (in serving order) with `pipeline`'s model settings into the registry
/// under `state_dir`; with `seed`, also starts the prior of a single-process pipeline there
/// that has no counts yet from the examples' ([`PriorSeed`]).
pub fn train_examples(
    pipeline: &Pipeline,
    examples: Vec<LabeledExample>,
    state_dir: &Path,
    seed: bool,
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
    let mut totals = adstream_operators::activity::ActivityTotals::default();
    for e in examples {
        totals.count_example(&e);
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
    let prior = if seed {
        seed_prior(state_dir, &totals)?
    } else {
        PriorSeed::Kept("not asked to seed it (--seed-prior)".into())
    };
    Ok(TrainReport {
        examples: status.examples,
        version,
        click: serde_json::to_value(&status.click)?,
        prior,
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
    fn the_prior_is_seeded_once_and_only_into_a_single_process_store() {
        use adstream_operators::activity::ActivityTotals;
        let mut totals = ActivityTotals::default();
        for i in 0..10 {
            let served: Served = serde_json::from_str(
                &line(i, i % 3 == 0)
                    .replace(r#","click":true"#, "")
                    .replace(r#","click":false"#, ""),
            )
            .unwrap();
            for e in examples_of(served, i % 3 == 0, Some(i == 3)) {
                totals.count_example(&e);
            }
        }
        let c0 = totals.get("c0").unwrap();
        // c0: i = 0, 2, 4, 6, 8; clicks at 0 and 6; no conversion (i = 3 is c1's).
        assert_eq!((c0.impressions, c0.clicks, c0.conversions), (5, 2, 0));
        assert_eq!(totals.get("c1").unwrap().conversions, 1);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            seed_prior(dir.path(), &totals).unwrap(),
            PriorSeed::Seeded(2)
        );
        match seed_prior(dir.path(), &totals).unwrap() {
            PriorSeed::Kept(why) => assert!(why.contains("counts of its own"), "{why}"),
            other => panic!("{other:?}"),
        }
        let store = crate::state::RocksStore::open(dir.path(), 0, 1, false, None).unwrap();
        let restored = adstream_operators::activity::operator::restore(&store, 0, 1).unwrap();
        assert_eq!(restored.all(), totals.all());
        drop(store);
        // A multi-process pipeline's state is left alone.
        let multi = tempfile::tempdir().unwrap();
        drop(crate::state::RocksStore::open(multi.path(), 0, 2, false, None).unwrap());
        assert!(matches!(
            seed_prior(multi.path(), &totals).unwrap(),
            PriorSeed::Kept(_)
        ));
    }

    #[test]
    fn lines_without_a_prior_get_the_prior_of_the_lines_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        // Lines 0, 2, 4 are c0's; 0 is clicked; line 4 logs a prior of its own.
        let logged = line(4, false).replace(
            r#""pcvr":0.05,"#,
            r#""pcvr":0.05,"prior_pctr":0.3,"prior_pcvr":0.2,"#,
        );
        let text = [
            line(0, true),
            line(1, false),
            line(2, false),
            line(3, false),
            logged,
        ]
        .join("\n");
        std::fs::write(&path, text).unwrap();
        let examples = read_history(&path).unwrap();
        let prior_of = |request: &str| {
            examples
                .iter()
                .find(|e| e.served.request_id == request)
                .map(|e| e.served.prior())
                .unwrap()
        };
        let fresh = adstream_operators::ranker::prior::PriorRanker::default();
        let mut after_one = fresh.clone();
        after_one.observe("c0", 1.0, 1.0, 0.0);
        let p = after_one.predict("c0");
        assert_eq!(prior_of("r0"), (fresh.ctr, fresh.cvr));
        assert_eq!(prior_of("r2"), (p.pctr, p.pcvr));
        assert_eq!(prior_of("r4"), (0.3, 0.2));
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
