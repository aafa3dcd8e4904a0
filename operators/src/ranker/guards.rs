//! Publish guards: a candidate model replaces the live one only if it is not worse on the same
//! recent examples.
//!
//! Both sides are scored out of sample: the candidate by progressive validation (each example
//! scored before the candidate trained on it), the live model (or, before the first model, the
//! scores serving logged) on those same examples at snapshot time. The click task decides; the
//! conversion task is checked too once it has enough positives.

use serde::{Deserialize, Serialize};

use super::validation::TaskMetrics;

/// Thresholds of the guards (the pipeline file's `[model.guards]`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuardConfig {
    /// Click-labelled examples a candidate must have been judged on.
    pub min_examples: usize,
    /// Click positives among them.
    pub min_positives: usize,
    /// Largest AUC drop below the baseline that is still accepted.
    pub max_auc_drop: f64,
    /// Accepted range of calibration (mean prediction / observed rate).
    pub calibration: [f64; 2],
    /// Largest ratio between the candidate's and the baseline's mean prediction, either way
    /// (a prediction spike).
    pub max_prediction_shift: f64,
    /// Conversion positives needed before the conversion head is judged too.
    pub min_conversion_positives: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            min_examples: 2_000,
            min_positives: 20,
            max_auc_drop: 0.01,
            calibration: [0.75, 1.33],
            max_prediction_shift: 1.5,
            min_conversion_positives: 30,
        }
    }
}

impl GuardConfig {
    /// Whether a calibration (mean prediction / observed rate) is within the accepted range.
    pub fn calibrated(&self, calibration: f64) -> bool {
        calibration >= self.calibration[0] && calibration <= self.calibration[1]
    }
}

/// Scores of one task on the judged examples: (candidate, baseline, label).
pub type Judged = [(f64, f64, bool)];

/// The guards' decision, kept in the version's metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the candidate may go live.
    pub passed: bool,
    /// Why not, one line per failed check.
    pub reasons: Vec<String>,
    /// The candidate's click metrics on the judged examples.
    pub candidate: TaskMetrics,
    /// The baseline's click metrics on the same examples.
    pub baseline: TaskMetrics,
    /// The candidate's conversion metrics.
    pub candidate_conversion: TaskMetrics,
    /// The baseline's conversion metrics.
    pub baseline_conversion: TaskMetrics,
}

/// (score, label) pairs.
type Pairs = Vec<(f64, bool)>;

fn split(judged: &Judged) -> (Pairs, Pairs) {
    judged.iter().map(|(c, b, y)| ((*c, *y), (*b, *y))).unzip()
}

/// What a candidate is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// The scores serving logged (the prior, before any version went live).
    Logged,
    /// The live model version.
    LiveModel,
}

/// How many times `max_auc_drop` a calibrated candidate may rank below a live model that is out
/// of the calibration bounds on the same examples (and its mean prediction may move freely).
/// A live model selects the traffic it is judged on; one that went live early can
/// under-predict the segments it now serves by a third while still ranking them well, and
/// every auction it prices is off by that much.
pub const MISCALIBRATED_AUC_ALLOWANCE: f64 = 5.0;

fn compare(
    task: &str,
    candidate: &TaskMetrics,
    baseline: &TaskMetrics,
    against: Baseline,
    config: &GuardConfig,
    reasons: &mut Vec<String>,
) {
    let in_bounds = |c: Option<f64>| c.is_some_and(|c| config.calibrated(c));
    // A calibrated candidate against a baseline out of bounds: a wider ranking allowance, and
    // the level may move (towards calibration).
    let recalibrates = against == Baseline::LiveModel
        && in_bounds(candidate.calibration)
        && !in_bounds(baseline.calibration);
    let allowed_drop = if recalibrates {
        config.max_auc_drop * MISCALIBRATED_AUC_ALLOWANCE
    } else {
        config.max_auc_drop
    };
    if let (Some(c), Some(b)) = (candidate.auc, baseline.auc) {
        if c < b - allowed_drop {
            reasons.push(format!(
                "{task} AUC {c:.4} is more than {allowed_drop} below the live model's {b:.4}"
            ));
        }
    }
    if recalibrates {
        return;
    }
    if let (Some(c), Some(b)) = (candidate.mean_prediction, baseline.mean_prediction) {
        let shift = config.max_prediction_shift.max(1.0);
        if b > 0.0 && !(c / b <= shift && b / c.max(f64::MIN_POSITIVE) <= shift) {
            reasons.push(format!(
                "{task} mean prediction {c:.5} against the live model's {b:.5}: a shift beyond {shift}x"
            ));
        }
    }
}

/// Judges a candidate on the click and conversion examples labelled since the last snapshot,
/// against the scores serving logged.
pub fn judge(clicks: &Judged, conversions: &Judged, config: &GuardConfig) -> Verdict {
    judge_against(clicks, conversions, config, Baseline::Logged)
}

/// Judges a candidate as [`judge`] does, against `against`'s scores.
pub fn judge_against(
    clicks: &Judged,
    conversions: &Judged,
    config: &GuardConfig,
    against: Baseline,
) -> Verdict {
    let mut reasons = Vec::new();
    let (cand, base) = split(clicks);
    let candidate = TaskMetrics::of(&cand);
    let baseline = TaskMetrics::of(&base);
    if cand.iter().any(|(p, _)| !p.is_finite()) {
        reasons.push("the candidate predicts non-finite click probabilities".into());
    }
    if candidate.examples < config.min_examples || candidate.positives < config.min_positives {
        reasons.push(format!(
            "judged on {} click examples ({} positive); needs {} ({})",
            candidate.examples, candidate.positives, config.min_examples, config.min_positives
        ));
    }
    compare(
        "click",
        &candidate,
        &baseline,
        against,
        config,
        &mut reasons,
    );
    match candidate.calibration {
        Some(c) if !config.calibrated(c) => reasons.push(format!(
            "click calibration {c:.3} is outside [{}, {}]",
            config.calibration[0], config.calibration[1]
        )),
        _ => {}
    }
    let (cand, base) = split(conversions);
    let candidate_conversion = TaskMetrics::of(&cand);
    let baseline_conversion = TaskMetrics::of(&base);
    if candidate_conversion.positives >= config.min_conversion_positives {
        compare(
            "conversion",
            &candidate_conversion,
            &baseline_conversion,
            against,
            config,
            &mut reasons,
        );
    }
    Verdict {
        passed: reasons.is_empty(),
        reasons,
        candidate,
        baseline,
        candidate_conversion,
        baseline_conversion,
    }
}

impl Verdict {
    /// Judges the snapshot's own weights too: `own` is what they predict for the judged click
    /// examples. The progressive scores the other checks read are those of the model while it
    /// was learning; the weights that would be served can sit elsewhere (a few steps of a large
    /// learning rate move the mean prediction by a third), so their calibration must be in range
    /// as well.
    pub fn check_snapshot(&mut self, own: &[(f64, bool)], config: &GuardConfig) {
        let Some(c) = crate::quality::calibration(own) else {
            return;
        };
        if !config.calibrated(c) {
            self.reasons.push(format!(
                "the snapshot's own click calibration {c:.3} on the judged examples is outside [{}, {}]",
                config.calibration[0], config.calibration[1]
            ));
            self.passed = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_off_calibration_is_refused_whatever_its_trajectory() {
        let judged = examples(|y, _| if y { 0.08 } else { 0.045 });
        let mut verdict = judge(&judged, &[], &GuardConfig::default());
        assert!(verdict.passed, "{:?}", verdict.reasons);
        // The same labels; the snapshot's weights predict twice the rate.
        let own: Vec<(f64, bool)> = judged.iter().map(|(_, _, y)| (0.1, *y)).collect();
        verdict.check_snapshot(&own, &GuardConfig::default());
        assert!(!verdict.passed);
        assert!(verdict.reasons[0].contains("snapshot's own click calibration 2.000"));
        let mut ok = judge(&judged, &[], &GuardConfig::default());
        let own: Vec<(f64, bool)> = judged.iter().map(|(_, _, y)| (0.05, *y)).collect();
        ok.check_snapshot(&own, &GuardConfig::default());
        assert!(ok.passed, "{:?}", ok.reasons);
    }

    /// 4000 examples, 5% positive; `good` ranks them, `flat` does not.
    fn examples(candidate: impl Fn(bool, usize) -> f64) -> Vec<(f64, f64, bool)> {
        (0..4_000)
            .map(|i| {
                let y = i % 20 == 0;
                let baseline = if y { 0.07 } else { 0.05 } + (i % 7) as f64 * 0.001;
                (candidate(y, i), baseline, y)
            })
            .collect()
    }

    #[test]
    fn a_better_calibrated_model_passes() {
        let v = judge(
            &examples(|y, i| if y { 0.08 } else { 0.045 } + (i % 5) as f64 * 0.001),
            &[],
            &GuardConfig::default(),
        );
        assert!(v.passed, "{:?}", v.reasons);
    }

    #[test]
    fn a_worse_ranking_is_refused() {
        let v = judge(
            &examples(|y, i| if y { 0.04 } else { 0.05 } + (i % 3) as f64 * 0.001),
            &[],
            &GuardConfig::default(),
        );
        assert!(!v.passed);
        assert!(
            v.reasons.iter().any(|r| r.contains("click AUC")),
            "{:?}",
            v.reasons
        );
    }

    #[test]
    fn a_prediction_spike_and_bad_calibration_are_refused() {
        let v = judge(
            &examples(|y, _| if y { 0.5 } else { 0.3 }),
            &[],
            &GuardConfig::default(),
        );
        assert!(!v.passed);
        assert!(
            v.reasons.iter().any(|r| r.contains("shift")),
            "{:?}",
            v.reasons
        );
        assert!(
            v.reasons.iter().any(|r| r.contains("calibration")),
            "{:?}",
            v.reasons
        );
    }

    #[test]
    fn a_calibrated_model_may_replace_a_miscalibrated_one_at_a_small_ranking_cost() {
        // The live model ranks a little better but predicts a third of the rate; the
        // candidate ranks a little worse (a few tied scores) at the rate.
        let judged: Vec<(f64, f64, bool)> = (0..4_000)
            .map(|i| {
                let y = i % 20 == 0;
                let live = if y { 0.03 } else { 0.015 } + (i % 7) as f64 * 0.0001;
                let candidate =
                    if y || i % 50 == 1 { 0.08 } else { 0.048 } + (i % 7) as f64 * 0.0001;
                (candidate, live, y)
            })
            .collect();
        let config = GuardConfig::default();
        let v = judge_against(&judged, &[], &config, Baseline::LiveModel);
        assert!(v.passed, "{:?}", v.reasons);
        // Not against the scores serving logged (the prior): a first version must rank well.
        assert!(!judge(&judged, &[], &config).passed);
        let (c, b) = (
            v.candidate.auc.unwrap_or(0.0),
            v.baseline.auc.unwrap_or(1.0),
        );
        assert!(
            c < b - config.max_auc_drop,
            "the case needs a lower AUC: {c} vs {b}"
        );
        // A calibrated live model is not replaced by the same candidate.
        let calibrated_live: Vec<(f64, f64, bool)> =
            judged.iter().map(|(c, b, y)| (*c, b * 3.3, *y)).collect();
        let v = judge_against(&calibrated_live, &[], &config, Baseline::LiveModel);
        assert!(!v.passed);
        assert!(v.reasons[0].contains("click AUC"), "{:?}", v.reasons);
    }

    #[test]
    fn too_few_examples_are_refused() {
        let few: Vec<_> = examples(|y, _| if y { 0.08 } else { 0.04 })
            .into_iter()
            .take(100)
            .collect();
        let v = judge(&few, &[], &GuardConfig::default());
        assert!(!v.passed);
        assert!(v.reasons[0].contains("judged on 100"), "{:?}", v.reasons);
    }
}
