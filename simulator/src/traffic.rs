//! When requests arrive: a daily traffic curve over a simulated clock that may run faster than
//! the wall clock, so that a whole simulated day fits in minutes.

use rand::Rng;
use rand_distr::{Distribution, Poisson};

/// Relative request volume per hour of the day, mean 1.
#[derive(Clone, Debug, PartialEq)]
pub struct DailyCurve {
    hourly: [f64; 24],
}

/// Why a curve was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CurveError {
    /// Not 24 numbers.
    #[error("a daily curve needs 24 comma-separated hourly weights, got {0}")]
    Length(usize),
    /// A weight that is not a finite number >= 0.
    #[error("hourly weight {index} ({value:?}) is not a number >= 0")]
    Weight {
        /// Hour.
        index: usize,
        /// What was given.
        value: String,
    },
    /// All zero.
    #[error("a daily curve needs at least one positive weight")]
    Empty,
}

impl DailyCurve {
    /// Consumer internet traffic: a trough around 04:00 at about a third of the mean, a peak
    /// around 20:00 at about 1.5 times it.
    pub fn diurnal() -> Self {
        let raw = [
            0.55, 0.42, 0.34, 0.30, 0.29, 0.33, 0.48, 0.72, 0.92, 1.02, 1.08, 1.12, 1.15, 1.13,
            1.10, 1.10, 1.14, 1.22, 1.34, 1.46, 1.52, 1.45, 1.18, 0.82,
        ];
        Self::normalised(raw)
    }

    /// The same volume all day.
    pub fn flat() -> Self {
        DailyCurve { hourly: [1.0; 24] }
    }

    fn normalised(raw: [f64; 24]) -> Self {
        let mean = raw.iter().sum::<f64>() / 24.0;
        let mut hourly = raw;
        for h in &mut hourly {
            *h /= mean;
        }
        DailyCurve { hourly }
    }

    /// Parses `flat`, `diurnal`, or 24 comma-separated hourly weights (scaled to mean 1).
    pub fn parse(text: &str) -> Result<Self, CurveError> {
        match text.trim() {
            "diurnal" => return Ok(Self::diurnal()),
            "flat" => return Ok(Self::flat()),
            _ => {}
        }
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        if parts.len() != 24 {
            return Err(CurveError::Length(parts.len()));
        }
        let mut raw = [0.0; 24];
        for (i, p) in parts.iter().enumerate() {
            match p.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => raw[i] = v,
                _ => {
                    return Err(CurveError::Weight {
                        index: i,
                        value: p.to_string(),
                    })
                }
            }
        }
        if raw.iter().all(|v| *v == 0.0) {
            return Err(CurveError::Empty);
        }
        Ok(Self::normalised(raw))
    }

    /// Relative volume at `hour` (0..24, fractional), interpolated between hour centres.
    pub fn at(&self, hour: f64) -> f64 {
        let h = (hour - 0.5).rem_euclid(24.0);
        let i = h.floor() as usize % 24;
        let frac = h - h.floor();
        self.hourly[i] * (1.0 - frac) + self.hourly[(i + 1) % 24] * frac
    }
}

/// The simulated clock: simulated time of day as a function of wall time.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    start_wall_ms: i64,
    start_hour: f64,
    day_ms: i64,
}

impl SimClock {
    /// A clock at `start_hour` when the wall clock reads `start_wall_ms`, on which a simulated
    /// day lasts `day_ms` of wall time.
    pub fn new(start_wall_ms: i64, start_hour: f64, day_ms: i64) -> Self {
        SimClock {
            start_wall_ms,
            start_hour: start_hour.rem_euclid(24.0),
            day_ms: day_ms.max(1),
        }
    }

    /// Simulated hour of day (0..24) at wall time `wall_ms`.
    pub fn hour(&self, wall_ms: i64) -> f64 {
        let elapsed = (wall_ms - self.start_wall_ms) as f64 / self.day_ms as f64 * 24.0;
        (self.start_hour + elapsed).rem_euclid(24.0)
    }

    /// Simulated milliseconds per wall millisecond.
    pub fn speedup(&self) -> f64 {
        86_400_000.0 / self.day_ms as f64
    }

    /// Wall milliseconds a simulated span of `sim_ms` takes.
    pub fn to_wall_ms(&self, sim_ms: f64) -> f64 {
        sim_ms / self.speedup()
    }
}

/// Requests arriving in a tick of `tick_ms` at a mean of `rate_per_s` scaled by the curve.
pub fn arrivals(
    rng: &mut impl Rng,
    curve: &DailyCurve,
    clock: &SimClock,
    wall_ms: i64,
    rate_per_s: f64,
    tick_ms: f64,
) -> u64 {
    let mean = rate_per_s * curve.at(clock.hour(wall_ms)) * tick_ms / 1000.0;
    if mean <= 0.0 {
        return 0;
    }
    match Poisson::new(mean) {
        Ok(p) => p.sample(rng) as u64,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn curves_have_mean_one() {
        for curve in [DailyCurve::diurnal(), DailyCurve::flat()] {
            let mean: f64 = (0..2400).map(|i| curve.at(i as f64 / 100.0)).sum::<f64>() / 2400.0;
            assert!((mean - 1.0).abs() < 1e-3, "{mean}");
        }
        let d = DailyCurve::diurnal();
        assert!(d.at(4.0) < 0.4 && d.at(20.0) > 1.4);
    }

    #[test]
    fn parse_names_what_is_wrong() {
        assert_eq!(DailyCurve::parse("flat"), Ok(DailyCurve::flat()));
        assert_eq!(DailyCurve::parse("1,2"), Err(CurveError::Length(2)));
        let mut parts = vec!["1"; 24];
        parts[5] = "x";
        assert_eq!(
            DailyCurve::parse(&parts.join(",")),
            Err(CurveError::Weight {
                index: 5,
                value: "x".into()
            })
        );
        assert_eq!(
            DailyCurve::parse(&["0"; 24].join(",")),
            Err(CurveError::Empty)
        );
        let c = DailyCurve::parse(&["2"; 24].join(",")).unwrap();
        assert_eq!(c, DailyCurve::flat());
    }

    #[test]
    fn compressed_clock() {
        // A day in 10 minutes, starting at 06:00.
        let c = SimClock::new(1_000, 6.0, 600_000);
        assert!((c.hour(1_000) - 6.0).abs() < 1e-9);
        assert!((c.hour(1_000 + 150_000) - 12.0).abs() < 1e-9);
        assert!((c.hour(1_000 + 600_000) - 6.0).abs() < 1e-9);
        assert!((c.speedup() - 144.0).abs() < 1e-9);
        assert!((c.to_wall_ms(3_600_000.0) - 25_000.0).abs() < 1e-6);
    }

    #[test]
    fn arrivals_follow_the_rate() {
        let mut rng = StdRng::seed_from_u64(1);
        let clock = SimClock::new(0, 12.0, 86_400_000);
        let curve = DailyCurve::flat();
        let total: u64 = (0..1000)
            .map(|i| arrivals(&mut rng, &curve, &clock, i * 10, 500.0, 10.0))
            .sum();
        // 10 s at 500/s.
        assert!((4_700..5_300).contains(&total), "{total}");
    }
}
