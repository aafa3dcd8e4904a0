//! What happens after a win: the ad renders (an impression), the user may click seconds later,
//! and may convert minutes to days after the click, each drawn from the true probabilities.

use rand::Rng;
use rand_distr::{Distribution, Exp, LogNormal};

use super::traffic::SimClock;

/// Delays and rates of the user's side.
#[derive(Clone, Debug)]
pub struct OutcomeParams {
    /// Share of wins the client renders (an impression is logged).
    pub render_rate: f64,
    /// Median wall delay from the response to the impression, ms.
    pub impression_delay_ms: f64,
    /// Median wall delay from the impression to a click, ms (clicks are not compressed).
    pub click_delay_ms: f64,
    /// Longest click delay, ms.
    pub max_click_delay_ms: f64,
    /// Shortest wall delay from a click to its conversion, ms (after compression).
    pub min_conversion_delay_ms: f64,
}

impl Default for OutcomeParams {
    fn default() -> Self {
        OutcomeParams {
            render_rate: 0.97,
            impression_delay_ms: 150.0,
            click_delay_ms: 4_000.0,
            max_click_delay_ms: 60_000.0,
            min_conversion_delay_ms: 1_000.0,
        }
    }
}

/// The fate of one win, as wall-clock offsets from the response.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fate {
    /// Impression after this many ms, if rendered.
    pub impression_ms: Option<i64>,
    /// Click after this many ms, if clicked.
    pub click_ms: Option<i64>,
    /// Conversion after this many ms, if converted.
    pub conversion_ms: Option<i64>,
}

/// Simulated delay from a click to its conversion, ms: about 35% within the hour, half within a
/// day, the rest over the following days (Chapelle 2014's shape).
pub fn conversion_delay_sim_ms(rng: &mut impl Rng) -> f64 {
    let hour = 3_600_000.0;
    if rng.random_bool(0.37) {
        Exp::new(1.0 / (15.0 * 60_000.0)).map_or(hour / 4.0, |e| e.sample(rng))
    } else {
        LogNormal::new((60.0 * hour).ln(), 1.2).map_or(60.0 * hour, |l| l.sample(rng))
    }
}

/// Draws the fate of a win whose true click and conversion probabilities are `ctr` and `cvr`.
pub fn draw(
    rng: &mut impl Rng,
    params: &OutcomeParams,
    clock: &SimClock,
    ctr: f64,
    cvr: f64,
) -> Fate {
    let mut fate = Fate::default();
    if !rng.random_bool(params.render_rate.clamp(0.0, 1.0)) {
        return fate;
    }
    let jitter = LogNormal::new(0.0, 0.5).map_or(1.0, |l| l.sample(rng));
    let impression = (params.impression_delay_ms * jitter).round() as i64;
    fate.impression_ms = Some(impression.max(1));
    if !rng.random_bool(ctr.clamp(0.0, 1.0)) {
        return fate;
    }
    let click_delay = LogNormal::new(params.click_delay_ms.max(1.0).ln(), 0.8)
        .map_or(params.click_delay_ms, |l| l.sample(rng))
        .min(params.max_click_delay_ms);
    let click = impression + click_delay.round().max(1.0) as i64;
    fate.click_ms = Some(click);
    if !rng.random_bool(cvr.clamp(0.0, 1.0)) {
        return fate;
    }
    let delay = clock
        .to_wall_ms(conversion_delay_sim_ms(rng))
        .max(params.min_conversion_delay_ms);
    fate.conversion_ms = Some(click + delay.round() as i64);
    fate
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn rates_and_order() {
        let mut rng = StdRng::seed_from_u64(2);
        let clock = SimClock::new(0, 0.0, 600_000);
        let p = OutcomeParams::default();
        let n = 100_000;
        let (mut imps, mut clicks, mut convs) = (0, 0, 0);
        for _ in 0..n {
            let f = draw(&mut rng, &p, &clock, 0.1, 0.2);
            if let Some(i) = f.impression_ms {
                imps += 1;
                assert!(i > 0);
                if let Some(c) = f.click_ms {
                    clicks += 1;
                    assert!(c > i && c - i <= 60_000);
                    if let Some(v) = f.conversion_ms {
                        convs += 1;
                        assert!(v - c >= 1_000);
                    }
                }
            } else {
                assert_eq!(f.click_ms, None);
            }
        }
        let r = |a: i32, b: i32| a as f64 / b as f64;
        assert!((r(imps, n) - 0.97).abs() < 0.01);
        assert!((r(clicks, imps) - 0.1).abs() < 0.01);
        assert!((r(convs, clicks) - 0.2).abs() < 0.02);
    }

    #[test]
    fn conversion_delays_have_the_published_shape() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 50_000;
        let delays: Vec<f64> = (0..n).map(|_| conversion_delay_sim_ms(&mut rng)).collect();
        let within = |ms: f64| delays.iter().filter(|d| **d <= ms).count() as f64 / n as f64;
        let (hour, day) = (3_600_000.0, 86_400_000.0);
        assert!((0.33..0.40).contains(&within(hour)), "{}", within(hour));
        assert!((0.45..0.57).contains(&within(day)), "{}", within(day));
    }
}
