//! Progressive validation: every example is scored before it is trained on, and the last
//! `window` (score, label) pairs of each task give the model's live quality.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::quality;

/// Quality of one task over a window of examples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    /// Examples in the window.
    pub examples: usize,
    /// Positives among them.
    pub positives: usize,
    /// ROC AUC (`None` without both classes).
    pub auc: Option<f64>,
    /// Mean log loss.
    pub log_loss: Option<f64>,
    /// Log loss over the base rate's entropy.
    pub normalised_entropy: Option<f64>,
    /// Mean prediction over observed rate.
    pub calibration: Option<f64>,
    /// Mean prediction.
    pub mean_prediction: Option<f64>,
}

impl TaskMetrics {
    /// The metrics of `pairs`.
    pub fn of(pairs: &[(f64, bool)]) -> Self {
        let positives = pairs.iter().filter(|(_, y)| *y).count();
        TaskMetrics {
            examples: pairs.len(),
            positives,
            auc: quality::auc(pairs),
            log_loss: quality::log_loss(pairs),
            normalised_entropy: quality::normalised_entropy(pairs),
            calibration: quality::calibration(pairs),
            mean_prediction: (!pairs.is_empty())
                .then(|| pairs.iter().map(|(p, _)| p).sum::<f64>() / pairs.len() as f64),
        }
    }
}

/// The last `capacity` (score, label) pairs of a task.
#[derive(Clone, Debug)]
pub struct Window {
    capacity: usize,
    pairs: VecDeque<(f64, bool)>,
}

impl Window {
    /// An empty window of `capacity` pairs.
    pub fn new(capacity: usize) -> Self {
        Window {
            capacity: capacity.max(1),
            pairs: VecDeque::with_capacity(capacity.clamp(1, 1 << 20)),
        }
    }

    /// Adds a pair, forgetting the oldest beyond capacity.
    pub fn push(&mut self, score: f64, label: bool) {
        if self.pairs.len() == self.capacity {
            self.pairs.pop_front();
        }
        self.pairs.push_back((score, label));
    }

    /// Pairs held.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The window's metrics.
    pub fn metrics(&self) -> TaskMetrics {
        TaskMetrics::of(&self.pairs.iter().copied().collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_forgets_the_oldest_and_measures_the_rest() {
        let mut w = Window::new(4);
        for (s, y) in [
            (0.9, false),
            (0.1, true),
            (0.8, true),
            (0.2, false),
            (0.7, true),
            (0.3, false),
        ] {
            w.push(s, y);
        }
        assert_eq!(w.len(), 4);
        let m = w.metrics();
        assert_eq!((m.examples, m.positives), (4, 2));
        assert_eq!(m.auc, Some(1.0));
        assert!((m.mean_prediction.unwrap_or_default() - 0.5).abs() < 1e-12);
        assert!((m.calibration.unwrap_or_default() - 1.0).abs() < 1e-12);
    }
}
