//! Reproducible initial weights: a [`SimpleBackend`] over a [`VarMap`] that creates each new
//! variable from a seeded generator instead of candle's (unseeded, on the CPU) random source,
//! with the distribution its init hint names. The same spec and seed give the same starting
//! model, so training on the same examples gives the same version, whatever the machine.

use std::sync::Mutex;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarMap};

/// The seed of a fresh model's weights.
pub const INIT_SEED: u64 = 0x6164_7374_7265_616d;

/// SplitMix64: small, fast, and good enough for initial weights.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

/// A [`VarMap`] whose new variables are drawn from a generator seeded once.
pub struct SeededVarMap {
    map: VarMap,
    rng: Mutex<SplitMix>,
}

impl SeededVarMap {
    /// New variables go into `map`, drawn from `seed`.
    pub fn new(map: VarMap, seed: u64) -> Self {
        SeededVarMap {
            map,
            rng: Mutex::new(SplitMix(seed)),
        }
    }

    fn values(&self, shape: &Shape, init: Init) -> Vec<f64> {
        let n = shape.elem_count();
        let mut rng = match self.rng.lock() {
            Ok(rng) => rng,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut uniform = |lo: f64, up: f64| -> Vec<f64> {
            (0..n).map(|_| lo + (up - lo) * rng.unit()).collect()
        };
        match init {
            Init::Const(c) => vec![c; n],
            Init::Uniform { lo, up } => uniform(lo, up),
            Init::Randn { mean, stdev } => normals(&uniform(0.0, 1.0), mean, stdev),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape).max(1) as f64).sqrt();
                match dist {
                    NormalOrUniform::Uniform => {
                        let bound = 3f64.sqrt() * std;
                        uniform(-bound, bound)
                    }
                    NormalOrUniform::Normal => normals(&uniform(0.0, 1.0), 0.0, std),
                }
            }
        }
    }
}

/// As many normals of mean `mean` and spread `stdev` as `uniforms` (each in (0, 1)), two from
/// each pair (Box-Muller); a last one left alone is paired with 1/2.
fn normals(uniforms: &[f64], mean: f64, stdev: f64) -> Vec<f64> {
    uniforms
        .chunks(2)
        .flat_map(|pair| {
            let u = pair.first().copied().unwrap_or(0.5).max(f64::MIN_POSITIVE);
            let v = pair.get(1).copied().unwrap_or(0.5);
            let r = (-2.0 * u.ln()).sqrt();
            let a = std::f64::consts::TAU * v;
            [mean + stdev * r * a.cos(), mean + stdev * r * a.sin()]
        })
        .take(uniforms.len())
        .collect()
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let data = self.map.data();
        let mut vars = match data.lock() {
            Ok(vars) => vars,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(var) = vars.get(name) {
            let t = var.as_tensor();
            if t.shape() != &s {
                candle_core::bail!("{name}: shape {:?}, asked for {:?}", t.shape(), s);
            }
            return Ok(t.clone());
        }
        let values = self.values(&s, h);
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("{name}: a seeded var map creates variables by shape (use `get`)")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map
            .data()
            .lock()
            .map(|vars| vars.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarBuilder;

    fn draw(seed: u64) -> Vec<f32> {
        let map = VarMap::new();
        let vb = VarBuilder::from_backend(
            Box::new(SeededVarMap::new(map.clone(), seed)),
            DType::F32,
            Device::Cpu,
        );
        let w = vb
            .get_with_hints(
                (200, 50),
                "w",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.05,
                },
            )
            .expect("w");
        let l = candle_nn::linear(50, 20, vb.pp("l")).expect("linear");
        assert!(map.data().lock().expect("vars").contains_key("l.weight"));
        let mut v: Vec<f32> = w.flatten_all().and_then(|t| t.to_vec1()).expect("values");
        v.extend(
            l.weight()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("values"),
        );
        v
    }

    #[test]
    fn the_same_seed_gives_the_same_weights_with_the_hinted_spread() {
        let (a, b, c) = (draw(1), draw(1), draw(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let normal = &a[..10_000];
        let mean = normal.iter().map(|x| *x as f64).sum::<f64>() / 1e4;
        let std = (normal
            .iter()
            .map(|x| (*x as f64 - mean).powi(2))
            .sum::<f64>()
            / 1e4)
            .sqrt();
        assert!(
            mean.abs() < 0.002 && (std - 0.05).abs() < 0.002,
            "{mean} {std}"
        );
        // The linear layer's Kaiming hint: spread about 1 / sqrt(fan in), not a constant.
        let linear = &a[10_000..];
        let spread = (linear.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / 1e3).sqrt();
        let scale = 1.0 / 50f64.sqrt();
        assert!(spread > scale / 2.0 && spread < scale * 2.0, "{spread}");
    }
}
