//! AdamW with its moments in the open, so a snapshot can carry them and a restart resumes
//! training where it stopped (candle's own `AdamW` keeps them private).
//!
//! Decoupled weight decay (Loshchilov & Hutter) applies to dense layers only: embedding rows
//! are decayed only through their gradients, so rows of rare values are not pulled to zero
//! while they are not seen.
//!
//! The optimiser also keeps an exponential moving average of the weights (Polyak averaging,
//! [`AdamW::average_step`]). Online labels come in bursts (a click at once, its impression's
//! negative only when the click window closes), so the weights after the last step swing with
//! the label mix of the last few batches; the average is what a snapshot serves. While the
//! average is the weights themselves (no step folded in yet, or `keep = 0`), nothing is copied.

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::ranker::model::BatchRows;

/// Optimiser settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Step size.
    pub learning_rate: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay of dense layers.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            learning_rate: 2e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    /// The moving average of `var`; `None` while it is `var` itself (averaging off, or no step
    /// folded in yet), so a learner without averaging copies no weights per step.
    average: Option<Tensor>,
    decay: bool,
    /// Its step as a share of the learning rate ([`AdamW::scale_rate`]).
    rate: f64,
}

/// AdamW over every variable of a [`VarMap`].
pub struct AdamW {
    config: AdamWConfig,
    slots: Vec<Slot>,
    step: u64,
}

/// Name prefix of the moments in a snapshot's tensors.
const M: &str = "adam.m.";
const V: &str = "adam.v.";

impl AdamW {
    /// An optimiser over `varmap`'s variables, with zero moments.
    pub fn new(varmap: &VarMap, config: AdamWConfig) -> candle_core::Result<Self> {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map poisoned".into()))?
            .clone();
        let mut names: Vec<_> = vars.into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = names
            .into_iter()
            .map(|(name, var)| {
                Ok(Slot {
                    decay: !name.starts_with("emb.") && !name.starts_with("interact."),
                    rate: 1.0,
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    average: None,
                    name,
                    var,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW {
            config,
            slots,
            step: 0,
        })
    }

    /// Steps the variables whose names start with `prefix` at `scale` times the learning rate
    /// (a head whose labels are rare: AdamW's step does not shrink with a loss's scale, so at
    /// the full rate a few noisy labels per batch move it as far as plenty would).
    pub fn scale_rate(&mut self, prefix: &str, scale: f64) {
        for slot in &mut self.slots {
            if slot.name.starts_with(prefix) {
                slot.rate = scale;
            }
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update from `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        self.step_with_rows(grads, None)
    }

    /// One update from `grads` of a loss taken against a batch's embedding lookups (`rows`, see
    /// [`crate::ranker::model::sparse_loss`]): dense variables are updated as by
    /// [`AdamW::step`], and each embedding table lazily: only the rows the batch read, their
    /// moments included, from their gradients summed over their lookups
    /// ([`BatchRows::read_gradients`]). A row read once is then not moved on by its momentum
    /// for the tens of steps after (which over-fits rare ids).
    pub fn step_sparse(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        rows: &BatchRows,
    ) -> candle_core::Result<()> {
        self.step_with_rows(grads, Some(rows))
    }

    fn step_with_rows(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        rows: Option<&BatchRows>,
    ) -> candle_core::Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let (bias1, bias2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let mut tables = match rows {
            Some(r) => r.read_gradients(grads)?,
            None => Vec::new(),
        };
        for slot in &mut self.slots {
            if let Some(i) = rows.and_then(|r| r.names.iter().position(|n| *n == slot.name)) {
                if let Some((read, g)) = tables.get_mut(i).and_then(Option::take) {
                    lazy_step(slot, &g, &read, c, (bias1, bias2))?;
                }
                continue;
            }
            let Some(g) = grads.get(&slot.var) else {
                continue;
            };
            let (m, v, update) = moments(&slot.m, &slot.v, g, c, (bias1, bias2))?;
            (slot.m, slot.v) = (m, v);
            let decay = if slot.decay {
                1.0 - c.learning_rate * c.weight_decay
            } else {
                1.0
            };
            let next = (slot.var.affine(decay, 0.0)?
                - update.affine(c.learning_rate * slot.rate, 0.0)?)?;
            slot.var.set(&next)?;
        }
        Ok(())
    }

    /// Folds the current weights into their moving average: `average = keep * average +
    /// (1 - keep) * weights`. `keep = 0` restarts the average at the weights.
    pub fn average_step(&mut self, keep: f64) -> candle_core::Result<()> {
        let keep = keep.clamp(0.0, 1.0);
        for slot in &mut self.slots {
            slot.average = if keep == 0.0 {
                None
            } else {
                let old = slot.average.as_ref().unwrap_or(slot.var.as_tensor());
                Some((old.affine(keep, 0.0)? + slot.var.affine(1.0 - keep, 0.0)?)?)
            };
        }
        Ok(())
    }

    /// The averaged weights, by variable name (a copy of the weights where no average is kept).
    pub fn averaged(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        self.slots
            .iter()
            .map(|s| {
                let average = match &s.average {
                    Some(a) => a.clone(),
                    None => s.var.as_tensor().copy()?,
                };
                Ok((s.name.clone(), average))
            })
            .collect()
    }

    /// The moments, named for a snapshot, and the step count.
    pub fn state(&self) -> (HashMap<String, Tensor>, u64) {
        let mut out = HashMap::new();
        for s in &self.slots {
            out.insert(format!("{M}{}", s.name), s.m.clone());
            out.insert(format!("{V}{}", s.name), s.v.clone());
        }
        (out, self.step)
    }

    /// Restores moments saved by [`AdamW::state`]; moments of variables that are missing or of
    /// another shape stay zero (a changed architecture starts them cold).
    pub fn restore(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        step: u64,
    ) -> candle_core::Result<()> {
        for s in &mut self.slots {
            if let (Some(m), Some(v)) = (
                tensors.get(&format!("{M}{}", s.name)),
                tensors.get(&format!("{V}{}", s.name)),
            ) {
                if m.shape() == s.var.shape() && v.shape() == s.var.shape() {
                    s.m = m.to_device(s.var.device())?.to_dtype(s.var.dtype())?;
                    s.v = v.to_device(s.var.device())?.to_dtype(s.var.dtype())?;
                }
            }
        }
        self.step = step;
        Ok(())
    }

    /// Whether `name` is one of the optimiser's own tensors (not a model parameter).
    pub fn is_state(name: &str) -> bool {
        name.starts_with(M) || name.starts_with(V)
    }
}

/// AdamW's moments after gradient `g` (from `m` and `v`) and the update they make, before the
/// step size (bias-corrected by `bias1`, `bias2`).
fn moments(
    m: &Tensor,
    v: &Tensor,
    g: &Tensor,
    c: AdamWConfig,
    (bias1, bias2): (f64, f64),
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let m = (m.affine(c.beta1, 0.0)? + g.affine(1.0 - c.beta1, 0.0)?)?;
    let v = (v.affine(c.beta2, 0.0)? + g.sqr()?.affine(1.0 - c.beta2, 0.0)?)?;
    let update =
        (m.affine(1.0 / bias1, 0.0)? / v.affine(1.0 / bias2, 0.0)?.sqrt()?.affine(1.0, c.eps)?)?;
    Ok((m, v, update))
}

/// The AdamW step of an embedding table `slot` (no weight decay) on the rows `read` alone
/// (distinct, increasing), from their gradients `g` (`[read, dim]`): the other rows, and their
/// moments, stay as they are.
fn lazy_step(
    slot: &mut Slot,
    g: &Tensor,
    read: &[u32],
    c: AdamWConfig,
    bias: (f64, f64),
) -> candle_core::Result<()> {
    if read.is_empty() {
        return Ok(());
    }
    let at = Tensor::from_slice(read, read.len(), slot.var.device())?;
    let (m0, v0, w0) = (
        slot.m.index_select(&at, 0)?,
        slot.v.index_select(&at, 0)?,
        slot.var.index_select(&at, 0)?,
    );
    let (m, v, update) = moments(&m0, &v0, g, c, bias)?;
    let w = (&w0 - update.affine(c.learning_rate * slot.rate, 0.0)?)?;
    // The rows are distinct, so adding each one's change sets it.
    slot.m = slot.m.index_add(&at, &(m - m0)?, 0)?;
    slot.v = slot.v.index_add(&at, &(v - v0)?, 0)?;
    let next = slot.var.index_add(&at, &(w - w0)?, 0)?;
    slot.var.set(&next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Init, VarBuilder};

    #[test]
    fn a_lazy_step_moves_the_rows_read_as_a_dense_step_would_and_no_other() {
        let device = Device::Cpu;
        let start = Tensor::new(
            &[[1.0f64, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]],
            &device,
        )
        .expect("t");
        let slot = |moment: f64| -> Slot {
            let var = Var::from_tensor(&start).expect("var");
            Slot {
                name: "emb.t".into(),
                m: start.affine(0.0, moment).expect("m"),
                v: start.affine(0.0, moment * moment).expect("v"),
                var,
                average: None,
                decay: false,
                rate: 1.0,
            }
        };
        // Rows 1 and 3 were read; a table's gradient is zero on rows not read.
        let g = Tensor::new(
            &[[0.0f64, 0.0], [0.5, -1.0], [0.0, 0.0], [-2.0, 0.25]],
            &device,
        )
        .expect("g");
        let c = AdamWConfig::default();
        let bias = (1.0 - c.beta1.powi(3), 1.0 - c.beta2.powi(3));
        let mut lazy = slot(0.1);
        // What the lazy step is given: the gradients of the rows read alone.
        let read = Tensor::new(&[1u32, 3], &device).expect("read");
        let g_read = g.index_select(&read, 0).expect("g of the rows read");
        lazy_step(&mut lazy, &g_read, &[1, 3], c, bias).expect("lazy");
        // The dense step over the same table, as `step_with_rows` takes it without rows.
        let dense = slot(0.1);
        let m = (dense.m.affine(c.beta1, 0.0).expect("m")
            + g.affine(1.0 - c.beta1, 0.0).expect("g"))
        .expect("m");
        let v = (dense.v.affine(c.beta2, 0.0).expect("v")
            + g.sqr().expect("g2").affine(1.0 - c.beta2, 0.0).expect("g2"))
        .expect("v");
        let update = (m.affine(1.0 / bias.0, 0.0).expect("m")
            / v.affine(1.0 / bias.1, 0.0)
                .and_then(|v| v.sqrt())
                .and_then(|v| v.affine(1.0, c.eps))
                .expect("v"))
        .expect("update");
        let w =
            (dense.var.as_tensor() - update.affine(c.learning_rate, 0.0).expect("u")).expect("w");
        let rows = |t: &Tensor| t.to_vec2::<f64>().expect("host");
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        let before = slot(0.1);
        for (got, dense, untouched) in [
            (rows(lazy.var.as_tensor()), rows(&w), rows(&start)),
            (rows(&lazy.m), rows(&m), rows(&before.m)),
            (rows(&lazy.v), rows(&v), rows(&before.v)),
        ] {
            for r in [1, 3] {
                assert!(
                    close(&got[r], &dense[r]),
                    "row {r}: {got:?} against {dense:?}"
                );
            }
            for r in [0, 2] {
                assert_eq!(got[r], untouched[r], "row {r} was not read: unchanged");
            }
        }
        // Nothing read: nothing moves.
        let mut idle = slot(0.1);
        let none = Tensor::zeros((0, 2), DType::F64, &device).expect("none");
        lazy_step(&mut idle, &none, &[], c, bias).expect("idle");
        assert_eq!(rows(idle.var.as_tensor()), rows(&start));
    }

    #[test]
    fn a_scaled_variable_steps_its_share_of_the_rate() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        let head = vb
            .get_with_hints(2, "head.w", Init::Const(1.0))
            .expect("var");
        let rest = vb
            .get_with_hints(2, "rest.w", Init::Const(1.0))
            .expect("var");
        let config = AdamWConfig {
            weight_decay: 0.0,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(&varmap, config).expect("opt");
        opt.scale_rate("head.", 0.25);
        let loss = (head.sum_all().expect("s") + rest.sum_all().expect("s")).expect("loss");
        opt.step(&loss.backward().expect("grad")).expect("step");
        let moved = |v: &Tensor| 1.0 - v.to_vec1::<f64>().expect("host")[0];
        // Adam's first step is the learning rate whatever the gradient's size.
        assert!((moved(&rest) - config.learning_rate).abs() < 1e-9);
        assert!((moved(&head) - 0.25 * config.learning_rate).abs() < 1e-9);
    }

    #[test]
    fn minimises_a_quadratic_and_round_trips_its_state() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        let w = vb.get_with_hints(3, "w", Init::Const(5.0)).expect("var");
        let target = Tensor::new(&[1.0f64, -2.0, 0.5], &Device::Cpu).expect("t");
        let mut opt = AdamW::new(
            &varmap,
            AdamWConfig {
                learning_rate: 0.05,
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
        )
        .expect("opt");
        for _ in 0..2_000 {
            let loss = (&w - &target)
                .and_then(|d| d.sqr())
                .and_then(|d| d.sum_all())
                .expect("loss");
            opt.step(&loss.backward().expect("grad")).expect("step");
        }
        let got = w.to_vec1::<f64>().expect("host");
        for (g, t) in got.iter().zip([1.0, -2.0, 0.5]) {
            assert!((g - t).abs() < 1e-2, "{got:?}");
        }
        let (state, steps) = opt.state();
        assert_eq!(steps, 2_000);
        let mut fresh = AdamW::new(&varmap, AdamWConfig::default()).expect("opt");
        fresh.restore(&state, steps).expect("restore");
        let (again, _) = fresh.state();
        for (k, t) in &state {
            let a = t.to_vec1::<f64>().expect("a");
            let b = again[k].to_vec1::<f64>().expect("b");
            assert_eq!(a, b, "{k}");
        }
        assert!(AdamW::is_state("adam.m.w") && !AdamW::is_state("w"));
    }
}
