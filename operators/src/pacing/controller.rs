//! The throttle controller: turns the gap between target and committed spend into a
//! participation probability (see the module docs of [`crate::pacing`] for the law).

use serde::{Deserialize, Serialize};

use super::PacingConfig;

/// Participation of a campaign whose full-participation rate is not known yet: a market that
/// could spend its day's budget in minutes spends at most 1% of that rate while it is measured.
pub const EXPLORE_FROM: f64 = 0.01;

/// Factor by which participation grows per interval while nothing has been spent (full
/// participation after 4 intervals).
pub const EXPLORE_STEP: f64 = 4.0;

/// One campaign's controller state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Controller {
    /// Participation probability in force.
    pub pass: f64,
    /// Estimated committed spend rate at full participation, micros per ms.
    pub full_rate: Option<f64>,
    /// Committed spend at the last step.
    pub last_committed: u64,
    /// Time of the last step, ms.
    pub last_ms: Option<i64>,
}

impl Controller {
    /// A controller that has measured nothing yet: it starts at [`EXPLORE_FROM`] and explores
    /// upward until its first spend shows the full-participation rate.
    pub fn new(config: &PacingConfig) -> Self {
        Controller {
            pass: EXPLORE_FROM.max(config.min_pass).min(1.0),
            full_rate: None,
            last_committed: 0,
            last_ms: None,
        }
    }

    /// One control step at `now_ms` with `committed` (charged + reserved) and the target at
    /// `now + horizon`; returns the new participation probability.
    pub fn step(
        &mut self,
        config: &PacingConfig,
        now_ms: i64,
        committed: u64,
        target_at_horizon: u64,
    ) -> f64 {
        let min_pass = config.min_pass.clamp(1e-6, 1.0);
        if let Some(last) = self.last_ms {
            let dt = (now_ms - last) as f64;
            if dt > 0.0 {
                // Committed spend falls at a new day and when reservations expire or settle
                // below their estimate: that restarts the baseline and says nothing of the rate.
                let spent = committed.saturating_sub(self.last_committed) as f64;
                if spent > 0.0 {
                    let observed = spent / dt / self.pass.max(min_pass);
                    let a = config.rate_smoothing.clamp(0.01, 1.0);
                    self.full_rate = Some(match self.full_rate {
                        Some(r) => (1.0 - a) * r + a * observed,
                        None => observed,
                    });
                } else if committed == self.last_committed {
                    if let Some(r) = self.full_rate.as_mut() {
                        // Nothing spent at this participation: the rate is lower than thought.
                        *r *= 1.0 - config.rate_smoothing.clamp(0.01, 1.0) / 2.0;
                    }
                }
            }
        }
        self.last_ms = Some(now_ms);
        self.last_committed = committed;
        let gap = target_at_horizon.saturating_sub(committed) as f64;
        let horizon = config.horizon_ms.max(1) as f64;
        let desired = gap / horizon;
        self.pass = match self.full_rate {
            Some(r) if r > 0.0 => (desired / r).clamp(min_pass, 1.0),
            // Nothing spent yet: explore upward while behind (the first spend measures the
            // rate), hold while ahead.
            _ if gap > 0.0 => (self.pass * EXPLORE_STEP).clamp(min_pass, 1.0),
            _ => self.pass.clamp(min_pass, 1.0),
        };
        self.pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A market that spends `rate` micros per ms at full participation: the controller holds a
    /// campaign on a linear target, whatever the rate.
    #[test]
    fn tracks_a_linear_target() {
        let config = PacingConfig {
            interval_ms: 60_000,
            horizon_ms: 3_600_000,
            ..PacingConfig::default()
        };
        for rate in [0.005, 0.05, 1.0, 20.0] {
            let budget = 1_000_000u64;
            let day = 86_400_000i64;
            let target = |t: i64| (budget as f64 * (t as f64 / day as f64).min(1.0)) as u64;
            let mut c = Controller::new(&config);
            let mut committed = 0u64;
            let mut worst = 0.0f64;
            let mut t = 0;
            while t < day {
                let p = c.step(&config, t, committed, target(t + config.horizon_ms));
                committed = (committed + (rate * p * config.interval_ms as f64) as u64).min(budget);
                t += config.interval_ms;
                if t > 4 * 3_600_000 {
                    let err = (committed as f64 - target(t) as f64).abs() / budget as f64;
                    worst = worst.max(err);
                }
            }
            // Demand-limited markets (rate * day < budget) cannot reach the target.
            if rate * day as f64 >= 2.0 * budget as f64 {
                assert!(worst < 0.05, "rate {rate}: worst gap {worst}");
                assert!(
                    committed as f64 >= 0.97 * budget as f64,
                    "rate {rate}: spent {committed}"
                );
            } else {
                assert!(c.pass > 0.99, "a starved campaign takes part everywhere");
            }
        }
    }

    #[test]
    fn ahead_of_target_throttles_down() {
        let config = PacingConfig::default();
        let mut c = Controller::new(&config);
        c.step(&config, 0, 0, 1_000);
        c.full_rate = Some(10.0);
        let p = c.step(&config, 10_000, 5_000, 1_000);
        assert_eq!(p, config.min_pass);
    }
}
