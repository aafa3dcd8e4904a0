//! Ranking quality measures over (score, label) pairs: ROC AUC, log loss, normalised entropy and
//! calibration. Used by the simulator's ground truth and by model validation.

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative (ties count half). `None` without both a positive and a negative.
pub fn auc(pairs: &[(f64, bool)]) -> Option<f64> {
    let mut sorted: Vec<(f64, bool)> = pairs
        .iter()
        .copied()
        .filter(|(s, _)| s.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = sorted.iter().filter(|(_, y)| *y).count() as f64;
    let negatives = sorted.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the positives' ranks, ties given their average rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        let pos = sorted[i..j].iter().filter(|(_, y)| *y).count() as f64;
        rank_sum += avg_rank * pos;
        i = j;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

fn clamp_p(p: f64) -> f64 {
    p.clamp(1e-7, 1.0 - 1e-7)
}

/// Mean binary cross-entropy of the predicted probabilities.
pub fn log_loss(pairs: &[(f64, bool)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let sum: f64 = pairs
        .iter()
        .map(|(p, y)| {
            let p = clamp_p(*p);
            if *y {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    Some(sum / pairs.len() as f64)
}

/// Log loss divided by the entropy of the base rate (below 1 beats predicting the average).
pub fn normalised_entropy(pairs: &[(f64, bool)]) -> Option<f64> {
    let loss = log_loss(pairs)?;
    let rate = pairs.iter().filter(|(_, y)| *y).count() as f64 / pairs.len() as f64;
    if rate <= 0.0 || rate >= 1.0 {
        return None;
    }
    let base = -(rate * rate.ln() + (1.0 - rate) * (1.0 - rate).ln());
    Some(loss / base)
}

/// Mean prediction over observed rate (1 is calibrated).
pub fn calibration(pairs: &[(f64, bool)]) -> Option<f64> {
    let positives = pairs.iter().filter(|(_, y)| *y).count() as f64;
    if positives == 0.0 {
        return None;
    }
    Some(pairs.iter().map(|(p, _)| *p).sum::<f64>() / positives)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(auc(&[(0.1, false), (0.9, true)]), Some(1.0));
        assert_eq!(auc(&[(0.9, false), (0.1, true)]), Some(0.0));
        assert_eq!(auc(&[(0.5, false), (0.5, true)]), Some(0.5));
        assert_eq!(auc(&[(0.5, true)]), None);
        // 3 positives, 2 negatives; pairs ordered right: (0.8>0.3),(0.8>0.6),(0.7>0.3),(0.7>0.6),(0.4>0.3) = 5 of 6.
        let p = [
            (0.8, true),
            (0.7, true),
            (0.4, true),
            (0.6, false),
            (0.3, false),
        ];
        assert!((auc(&p).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        let c = [
            (0.2, true),
            (0.2, false),
            (0.2, false),
            (0.2, false),
            (0.2, false),
        ];
        assert!((calibration(&c).unwrap() - 1.0).abs() < 1e-12);
        assert!((normalised_entropy(&c).unwrap() - 1.0).abs() < 1e-9);
    }

    proptest! {
        /// AUC equals the brute-force pair count.
        #[test]
        fn auc_matches_pair_count(v in proptest::collection::vec((0u8..10, any::<bool>()), 2..60)) {
            let pairs: Vec<(f64, bool)> = v.iter().map(|(s, y)| (*s as f64, *y)).collect();
            let (mut wins, mut n) = (0.0, 0.0);
            for (sp, yp) in &pairs {
                for (sn, yn) in &pairs {
                    if *yp && !*yn {
                        n += 1.0;
                        wins += if sp > sn { 1.0 } else if sp == sn { 0.5 } else { 0.0 };
                    }
                }
            }
            match auc(&pairs) {
                Some(a) => prop_assert!((a - wins / n).abs() < 1e-9),
                None => prop_assert_eq!(n, 0.0),
            }
        }
    }
}
