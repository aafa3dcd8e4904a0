//! The ranking model: hashed embeddings, a DCN-v2 cross network and an MLP, with a click head and
//! a conversion head (candle).
//!
//! ```text
//!   categorical ─▶ embedding ─┐
//!   bags ───────▶ mean-pooled ├─▶ x0 ─▶ cross: x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l ─▶ MLP ─┬─▶ click logit
//!   numeric, dense ───────────┘                                                          └─▶ conversion logit
//! ```
//!
//! The conversion head is trained on clicked examples with fake negatives (see
//! [`crate::labels`]): it learns `q = p / (1 + p)`, and [`RankerModel::predict`] returns
//! `p = q / (1 - q)`, Ktena et al.'s fake-negative calibration.

use candle_core::{DType, Device, IndexOp, Module, Tensor, Var};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::features::{EncodedBatch, FeatureSpec, INTERACTION_DIM};
use crate::ranker::prior::Prediction;

/// Sizes of the model (the pipeline file's `[model]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Width of every embedding.
    pub embedding_dim: usize,
    /// Cross layers (full rank).
    pub cross_layers: usize,
    /// Widths of the MLP's hidden layers.
    pub hidden: Vec<usize>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            embedding_dim: 8,
            cross_layers: 2,
            hidden: vec![128, 64],
        }
    }
}

/// Log-odds of the initial click and (fake-negative) conversion rates.
const CLICK_PRIOR_LOGIT: f64 = -3.9;
const CONVERSION_PRIOR_LOGIT: f64 = -3.0;

/// The model's input tensors for one batch.
pub struct Inputs {
    categorical: Vec<Tensor>,
    bags: Vec<(Tensor, Tensor)>,
    dense: Option<Tensor>,
    /// The heads' prior offsets (`[batch, 2]`), for a model that learns corrections to the
    /// prior.
    offsets: Option<Tensor>,
    len: usize,
}

/// The embedding lookups of one training batch, as variables: the loss is differentiated
/// against the looked-up embeddings (one row per lookup), not through the lookup itself, and
/// [`BatchRows::read_gradients`] sums their gradients per row read. candle's backward of
/// a lookup (`index_add`) runs on a GPU in one thread per embedding column, looping over every
/// lookup of the batch: it was the fixed per-example cost of training there.
pub struct BatchRows {
    /// Per table: its variable's name in the model's `VarMap`.
    pub names: Vec<String>,
    /// Per table: the row of each lookup.
    ids: Vec<Vec<u32>>,
    /// Per table: the looked-up embeddings (`[lookups, dim]`), the variables the loss is
    /// differentiated against.
    looked: Vec<Var>,
}

/// The distinct rows of a table one batch read (increasing) and their gradients (`[rows, dim]`).
pub type ReadGradient = (Vec<u32>, Tensor);

impl BatchRows {
    /// Per table: the distinct rows the batch read (in increasing order) and the gradient of
    /// each (`[rows read, dim]`, each row's the sum over its lookups), or `None` when the loss
    /// does not depend on the table. Rows not read have no gradient: a lazy optimiser step
    /// leaves them alone ([`crate::ranker::optim::AdamW::step_sparse`]).
    pub fn read_gradients(
        &self,
        grads: &candle_core::backprop::GradStore,
    ) -> candle_core::Result<Vec<Option<ReadGradient>>> {
        self.looked
            .iter()
            .zip(&self.ids)
            .map(|(looked, ids)| {
                let Some(g) = grads.get(looked) else {
                    return Ok(None);
                };
                let mut rows = ids.clone();
                rows.sort_unstable();
                rows.dedup();
                // Each lookup's place among the rows read: its segment.
                let at: Vec<u32> = ids
                    .iter()
                    .map(|id| rows.partition_point(|r| r < id) as u32)
                    .collect();
                let sums = segment_sum(&at, g, rows.len())?;
                Ok(Some((rows, sums)))
            })
            .collect()
    }
}

/// Sums the rows of `values` (`[m, dim]`) by `segment` (each row's segment, below `segments`)
/// into `[segments, dim]`. On a GPU the scatter-add is split into chunks summed afterwards:
/// candle's kernel runs one thread per column and loops over the scattered rows, so one
/// unsplit scatter of a large batch is serial (it was the fixed per-example cost of training).
fn segment_sum(segment: &[u32], values: &Tensor, segments: usize) -> candle_core::Result<Tensor> {
    let (m, dim) = values.dims2()?;
    let device = values.device();
    // At most this many partial sums at once (64 MiB of f32).
    const PARTIALS: usize = 1 << 24;
    let chunks = if device.is_cpu() {
        1
    } else {
        (PARTIALS / ((segments + 1) * dim).max(1)).clamp(1, m.max(1))
    };
    segment_sum_in(segment, values, segments, chunks)
}

/// [`segment_sum`] in `chunks` chunks.
fn segment_sum_in(
    segment: &[u32],
    values: &Tensor,
    segments: usize,
    chunks: usize,
) -> candle_core::Result<Tensor> {
    let (m, dim) = values.dims2()?;
    let device = values.device();
    let chunks = chunks.max(1);
    let per = m.div_ceil(chunks).max(1);
    let padded = chunks * per;
    // Padding lookups add zeros to an extra segment, dropped at the end.
    let mut ids = Vec::with_capacity(padded);
    ids.extend_from_slice(segment);
    ids.resize(padded, segments as u32);
    let ids = Tensor::from_vec(ids, (chunks, per, 1), device)?
        .broadcast_as((chunks, per, dim))?
        .contiguous()?;
    let src = if padded > m {
        Tensor::cat(
            &[
                values,
                &Tensor::zeros((padded - m, dim), values.dtype(), device)?,
            ],
            0,
        )?
    } else {
        values.contiguous()?
    };
    let partial = Tensor::zeros((chunks, segments + 1, dim), values.dtype(), device)?;
    partial.scatter_add_set(&ids, &src.reshape((chunks, per, dim))?, 1)?;
    partial.sum(0)?.narrow(0, 0, segments)
}

/// The matrix that sums `width` slots of `dim` columns each: `[width * dim, dim]`, a one where
/// a slot's column meets its output column.
fn slot_sum(
    width: usize,
    dim: usize,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let mut ones = vec![0f32; width * dim * dim];
    for slot in 0..width {
        for j in 0..dim {
            ones[(slot * dim + j) * dim + j] = 1.0;
        }
    }
    Tensor::from_vec(ones, (width * dim, dim), device)?.to_dtype(dtype)
}

/// A bag's pooled embedding per row (`[rows, dim]`): the weighted sum of its `width` looked-up
/// embeddings (`looked`: `[rows * width, dim]`; `weights`: `[rows, width, 1]`), as a product with
/// [`slot_sum`]'s matrix.
fn pool(
    looked: &Tensor,
    weights: &Tensor,
    width: usize,
    slot_sum: &Tensor,
    rows: usize,
) -> candle_core::Result<Tensor> {
    let dim = looked.dim(1)?;
    looked
        .reshape((rows, width, dim))?
        .broadcast_mul(weights)?
        .reshape((rows, width * dim))?
        .matmul(slot_sum)
}

/// The network; its parameters live in the `VarBuilder` it was built from.
pub struct RankerModel {
    tables: Vec<Embedding>,
    /// Each table's variable name (`emb.<feature>.weight`).
    table_names: Vec<String>,
    bag_widths: Vec<usize>,
    /// Per bag: the matrix that sums a row's `width` embeddings (`[width * dim, dim]`, ones
    /// where a slot's column meets its output column). Pooling is a matrix product with it:
    /// candle's sum over the middle axis of `[rows, width, dim]` walks it element by element,
    /// and was a fifth of scoring a request's candidates.
    bag_sums: Vec<Tensor>,
    /// The conversion head's interaction embeddings ([`FeatureSpec::conversion_interactions`]),
    /// one table per feature named there (`interact.<feature>.weight`), with the place of that
    /// feature among `tables` and, for a bag, [`slot_sum`]'s matrix at their width.
    interactions: Vec<(Embedding, usize, Option<Tensor>)>,
    /// The pairs, as indices into `interactions`.
    interaction_pairs: Vec<[usize; 2]>,
    cross: Vec<Linear>,
    mlp: Vec<Linear>,
    click: Linear,
    conversion: Linear,
    /// Whether the heads' logits are corrections added to each example's prior offsets
    /// ([`FeatureSpec::prior_offset`], [`FeatureSpec::conversion_prior_offset`]).
    prior_offset: bool,
    device: Device,
    dtype: DType,
}

impl RankerModel {
    /// Builds the network for `spec` with `config`'s sizes; parameters come from (or are
    /// created in) `vb`.
    pub fn new(
        spec: &FeatureSpec,
        config: &ModelConfig,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let d = config.embedding_dim.max(1);
        let mut tables = Vec::new();
        let mut table_names = Vec::new();
        for (name, rows) in spec.tables() {
            table_names.push(format!("emb.{name}.weight"));
            let w = vb.pp("emb").pp(&name).get_with_hints(
                (rows, d),
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.05,
                },
            )?;
            tables.push(Embedding::new(w, d));
        }
        let bag_widths = spec.bag_widths();
        let categorical = spec.categorical_count();
        let (named, interaction_pairs) = spec.interaction_tables();
        let all = spec.tables();
        let mut interactions = Vec::new();
        for place in named {
            let Some((name, rows)) = all.get(place) else {
                continue;
            };
            table_names.push(format!("interact.{name}.weight"));
            let w = vb.pp("interact").pp(name).get_with_hints(
                (*rows, INTERACTION_DIM),
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.05,
                },
            )?;
            let sum = match place.checked_sub(categorical) {
                Some(bag) => Some(slot_sum(
                    bag_widths.get(bag).copied().unwrap_or(1),
                    INTERACTION_DIM,
                    vb.device(),
                    vb.dtype(),
                )?),
                None => None,
            };
            interactions.push((Embedding::new(w, INTERACTION_DIM), place, sum));
        }
        let x0 = tables.len() * d + spec.dense_dim();
        let mut cross = Vec::new();
        for l in 0..config.cross_layers {
            cross.push(candle_nn::linear(x0, x0, vb.pp(format!("cross{l}")))?);
        }
        let mut mlp = Vec::new();
        let mut width = x0;
        for (l, &h) in config.hidden.iter().enumerate() {
            mlp.push(candle_nn::linear(width, h, vb.pp(format!("mlp{l}")))?);
            width = h;
        }
        let head = |name: &str, bias: f64| -> candle_core::Result<Linear> {
            let vb = vb.pp(name);
            let w = vb.get_with_hints(
                (1, width),
                "weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.01,
                },
            )?;
            let b = vb.get_with_hints(1, "bias", Init::Const(bias))?;
            Ok(Linear::new(w, Some(b)))
        };
        // A correction to the prior starts at none.
        let click_bias = if spec.prior_offset {
            0.0
        } else {
            CLICK_PRIOR_LOGIT
        };
        let conversion_bias = if spec.prior_offset || spec.conversion_prior_offset {
            0.0
        } else {
            CONVERSION_PRIOR_LOGIT
        };
        let bag_sums = bag_widths
            .iter()
            .map(|&width| slot_sum(width, d, vb.device(), vb.dtype()))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(RankerModel {
            tables,
            table_names,
            bag_widths,
            bag_sums,
            interactions,
            interaction_pairs,
            cross,
            mlp,
            click: head("click", click_bias)?,
            conversion: head("conversion", conversion_bias)?,
            prior_offset: spec.prior_offset || spec.conversion_prior_offset,
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Moves an encoded batch to the model's device.
    pub fn inputs(&self, batch: &EncodedBatch) -> candle_core::Result<Inputs> {
        let n = batch.len;
        let categorical = batch
            .categorical
            .iter()
            .map(|ids| Tensor::from_slice(ids, n, &self.device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut bags = Vec::new();
        for ((ids, weights), &width) in batch.bags.iter().zip(&self.bag_widths) {
            let ids = Tensor::from_slice(ids, n * width, &self.device)?;
            let weights =
                Tensor::from_slice(weights, (n, width, 1), &self.device)?.to_dtype(self.dtype)?;
            bags.push((ids, weights));
        }
        let dense = if batch.dense.is_empty() {
            None
        } else {
            let dim = batch.dense.len() / n.max(1);
            Some(Tensor::from_slice(&batch.dense, (n, dim), &self.device)?.to_dtype(self.dtype)?)
        };
        let offsets = if self.prior_offset {
            Some(Tensor::from_slice(&batch.offsets, (n, 2), &self.device)?.to_dtype(self.dtype)?)
        } else {
            None
        };
        Ok(Inputs {
            categorical,
            bags,
            dense,
            offsets,
            len: n,
        })
    }

    /// Moves an encoded batch to the model's device for training, with its embedding lookups
    /// gathered as variables ([`BatchRows`]).
    pub fn training_inputs(&self, batch: EncodedBatch) -> candle_core::Result<(Inputs, BatchRows)> {
        let inputs = self.inputs(&batch)?;
        // The batch's ids are moved, not copied, into the gradients' sums.
        let mut host: Vec<Vec<u32>> = batch
            .categorical
            .into_iter()
            .chain(batch.bags.into_iter().map(|(ids, _)| ids))
            .collect();
        for (_, place, _) in &self.interactions {
            host.push(host.get(*place).cloned().unwrap_or_default());
        }
        let mut looked = Vec::new();
        for rows in self.look_up(&inputs)? {
            looked.push(Var::from_tensor(&rows)?);
        }
        Ok((
            inputs,
            BatchRows {
                names: self.table_names.clone(),
                ids: host,
                looked,
            },
        ))
    }

    /// Logits `[batch, 2]`: click, then conversion (each the prior's offset plus the heads'
    /// correction, for a model with a `prior_offset` spec).
    pub fn forward(&self, inputs: &Inputs) -> candle_core::Result<Tensor> {
        let looked = self.look_up(inputs)?;
        self.forward_looked(inputs, &looked)
    }

    /// Every table's rows for `inputs`' ids (`[lookups, dim]` each): the categorical features',
    /// the bags', then the interaction tables' (each with its feature's ids).
    fn look_up(&self, inputs: &Inputs) -> candle_core::Result<Vec<Tensor>> {
        let ids: Vec<&Tensor> = inputs
            .categorical
            .iter()
            .chain(inputs.bags.iter().map(|(ids, _)| ids))
            .collect();
        let mut looked = Vec::with_capacity(self.tables.len() + self.interactions.len());
        for (table, ids) in self.tables.iter().zip(&ids) {
            looked.push(table.embeddings().index_select(ids, 0)?);
        }
        for (table, place, _) in &self.interactions {
            if let Some(ids) = ids.get(*place) {
                looked.push(table.embeddings().index_select(ids, 0)?);
            }
        }
        Ok(looked)
    }

    /// [`RankerModel::forward`] from the embeddings already looked up ([`Self::look_up`]'s
    /// order).
    fn forward_looked(&self, inputs: &Inputs, looked: &[Tensor]) -> candle_core::Result<Tensor> {
        let (looked, interacting) = looked.split_at(self.tables.len().min(looked.len()));
        let mut parts = Vec::with_capacity(looked.len() + 1);
        let mut looked = looked.iter();
        for _ in &inputs.categorical {
            if let Some(rows) = looked.next() {
                parts.push(rows.clone());
            }
        }
        for (((_, weights), &width), sum) in
            inputs.bags.iter().zip(&self.bag_widths).zip(&self.bag_sums)
        {
            if let Some(rows) = looked.next() {
                parts.push(pool(rows, weights, width, sum, inputs.len)?);
            }
        }
        if let Some(dense) = &inputs.dense {
            parts.push(dense.clone());
        }
        let x0 = Tensor::cat(&parts, 1)?;
        let mut x = x0.clone();
        for layer in &self.cross {
            x = ((&x0 * layer.forward(&x)?)? + &x)?;
        }
        for layer in &self.mlp {
            x = layer.forward(&x)?.relu()?;
        }
        let mut conversion = self.conversion.forward(&x)?;
        if let Some(term) = self.interaction(inputs, interacting)? {
            conversion = (conversion + term)?;
        }
        let logits = Tensor::cat(&[self.click.forward(&x)?, conversion], 1)?;
        match &inputs.offsets {
            Some(offsets) => logits + offsets,
            None => Ok(logits),
        }
    }

    /// The conversion logit's interaction term (`[batch, 1]`): per pair, the dot product of
    /// its two features' interaction embeddings (a bag's pooled as in the network); `None`
    /// without pairs.
    fn interaction(
        &self,
        inputs: &Inputs,
        looked: &[Tensor],
    ) -> candle_core::Result<Option<Tensor>> {
        if self.interaction_pairs.is_empty() {
            return Ok(None);
        }
        let categorical = inputs.categorical.len();
        let mut vectors = Vec::with_capacity(looked.len());
        for ((_, place, sum), rows) in self.interactions.iter().zip(looked) {
            vectors.push(match (place.checked_sub(categorical), sum) {
                (Some(bag), Some(sum)) => {
                    let (_, weights) = inputs.bags.get(bag).ok_or_else(|| {
                        candle_core::Error::Msg(format!("no bag {bag} in the batch"))
                    })?;
                    let width = self.bag_widths.get(bag).copied().unwrap_or(1);
                    pool(rows, weights, width, sum, inputs.len)?
                }
                _ => rows.clone(),
            });
        }
        let mut term: Option<Tensor> = None;
        for [a, b] in &self.interaction_pairs {
            let (Some(a), Some(b)) = (vectors.get(*a), vectors.get(*b)) else {
                continue;
            };
            let dot = (a * b)?.sum_keepdim(1)?;
            term = Some(match term {
                Some(t) => (t + dot)?,
                None => dot,
            });
        }
        Ok(term)
    }

    /// Calibrated predictions for an encoded batch.
    pub fn predict(&self, batch: &EncodedBatch) -> candle_core::Result<Vec<Prediction>> {
        if batch.len == 0 {
            return Ok(Vec::new());
        }
        let logits = self.forward(&self.inputs(batch)?)?;
        let probs = candle_nn::ops::sigmoid(&logits)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?;
        Ok(probs
            .into_iter()
            .map(|row| {
                let (ctr, q) = (row.first().copied(), row.get(1).copied());
                Prediction {
                    pctr: ctr.unwrap_or(0.0),
                    pcvr: fake_negative_calibration(q.unwrap_or(0.0)),
                }
            })
            .collect())
    }
}

/// `p = q / (1 - q)`: the conversion rate from a head trained with fake negatives (each
/// converting click seen once as a negative and once as a positive learns `q = p / (1 + p)`).
pub fn fake_negative_calibration(q: f64) -> f64 {
    let q = q.clamp(0.0, 0.499);
    q / (1.0 - q)
}

/// Numerically stable binary cross-entropy with logits, summed over the examples whose `mask`
/// is 1 and divided by `denominator`: `max(x, 0) - x y + ln(1 + e^{-|x|})`.
pub fn masked_bce_with_logits(
    logits: &Tensor,
    labels: &Tensor,
    mask: &Tensor,
    denominator: f64,
) -> candle_core::Result<Tensor> {
    let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let loss = ((logits.relu()? - (logits * labels)?)? + softplus)?;
    (loss * mask)?
        .sum_all()?
        .affine(1.0 / denominator.max(1.0), 0.0)
}

/// How many examples of `targets` carry a click label and a conversion label.
pub fn label_counts(targets: &Targets) -> (usize, usize) {
    let count = |v: &[f32]| v.iter().filter(|m| **m > 0.0).count();
    (count(&targets.click_mask), count(&targets.conversion_mask))
}

/// Labels and masks of a training batch, one entry per example.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Targets {
    /// Click label (0/1).
    pub click: Vec<f32>,
    /// Whether the example carries a click label.
    pub click_mask: Vec<f32>,
    /// Conversion label (0/1).
    pub conversion: Vec<f32>,
    /// Whether the example carries a conversion label.
    pub conversion_mask: Vec<f32>,
}

/// Multi-task loss and the logits it was computed from (before any update: the progressive
/// validation scores). Each head's loss is its sum over labelled examples divided by its
/// `denominators` entry (the trainer's running mean of labels per batch, so that every example
/// weighs the same whatever batch it is in; the batch's own counts give the plain mean).
pub fn loss(
    model: &RankerModel,
    inputs: &Inputs,
    targets: &Targets,
    conversion_weight: f64,
    denominators: (f64, f64),
) -> candle_core::Result<(Tensor, Tensor)> {
    let logits = model.forward(inputs)?;
    loss_of(
        model,
        logits,
        inputs,
        targets,
        conversion_weight,
        denominators,
    )
}

/// [`loss`] of a training batch made by [`RankerModel::training_inputs`]: differentiated
/// against the batch's embedding rows, not the whole tables.
pub fn sparse_loss(
    model: &RankerModel,
    inputs: &Inputs,
    rows: &BatchRows,
    targets: &Targets,
    conversion_weight: f64,
    denominators: (f64, f64),
) -> candle_core::Result<(Tensor, Tensor)> {
    let looked: Vec<Tensor> = rows.looked.iter().map(|v| v.as_tensor().clone()).collect();
    let logits = model.forward_looked(inputs, &looked)?;
    loss_of(
        model,
        logits,
        inputs,
        targets,
        conversion_weight,
        denominators,
    )
}

fn loss_of(
    model: &RankerModel,
    logits: Tensor,
    inputs: &Inputs,
    targets: &Targets,
    conversion_weight: f64,
    denominators: (f64, f64),
) -> candle_core::Result<(Tensor, Tensor)> {
    let n = inputs.len;
    let dev = model.device();
    let t = |v: &[f32]| Tensor::from_slice(v, n, dev).and_then(|t| t.to_dtype(model.dtype));
    let click = masked_bce_with_logits(
        &logits.i((.., 0))?,
        &t(&targets.click)?,
        &t(&targets.click_mask)?,
        denominators.0,
    )?;
    let conversion = masked_bce_with_logits(
        &logits.i((.., 1))?,
        &t(&targets.conversion)?,
        &t(&targets.conversion_mask)?,
        denominators.1,
    )?;
    let total = (click + conversion.affine(conversion_weight, 0.0)?)?;
    Ok((total, logits))
}

/// Sigmoid of `[batch, 2]` logits, on the host.
pub fn probabilities(logits: &Tensor) -> candle_core::Result<Vec<[f64; 2]>> {
    let rows = candle_nn::ops::sigmoid(logits)?
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?;
    Ok(rows
        .into_iter()
        .map(|r| {
            [
                r.first().copied().unwrap_or(0.0),
                r.get(1).copied().unwrap_or(0.0),
            ]
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    #[test]
    fn pooling_by_product_is_the_weighted_sum_of_each_rows_slots() {
        let (rows, width, dim) = (5, 3, 4);
        let dev = Device::Cpu;
        let looked = Tensor::randn(0f32, 1.0, (rows * width, dim), &dev).unwrap();
        let weights = Tensor::from_vec(
            vec![
                0.5f32,
                0.5,
                0.0,
                1.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.25,
                0.25,
                0.5,
                1.0 / 3.0,
                1.0 / 3.0,
                1.0 / 3.0,
            ],
            (rows, width, 1),
            &dev,
        )
        .unwrap();
        let by_sum = looked
            .reshape((rows, width, dim))
            .unwrap()
            .broadcast_mul(&weights)
            .unwrap()
            .sum(1)
            .unwrap();
        let by_product = pool(
            &looked,
            &weights,
            width,
            &slot_sum(width, dim, &dev, DType::F32).unwrap(),
            rows,
        )
        .unwrap();
        let diff = (by_sum - &by_product)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "{diff}");
        // An empty bag (all weights zero) pools to zeros.
        let empty = by_product.get(2).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(empty.to_scalar::<f32>().unwrap(), 0.0);
    }

    fn tiny_spec() -> FeatureSpec {
        FeatureSpec::parse(
            r#"{"version":1,"features":[
            {"name":"user","type":"categorical","source":"user_id","buckets":7},
            {"name":"ad","type":"categorical","source":"ad_id","buckets":5},
            {"name":"interests","type":"multi_categorical","source":"interests","buckets":6,"max_values":3},
            {"name":"bid","type":"numeric","source":"bid_micros","log1p":true,"clip":[0,20],"mean":10,"std":3},
            {"name":"tod","type":"dense","source":"time_of_day","dim":2}]}"#,
        )
        .expect("spec")
    }

    fn tiny_batch(spec: &FeatureSpec) -> (EncodedBatch, Targets) {
        let interests = [
            vec!["a".to_string(), "b".to_string()],
            vec![],
            vec!["c".to_string()],
        ];
        let mut batch = spec.batch();
        let mut targets = Targets::default();
        for (i, users) in ["u1", "u2", "u3", "u4"].iter().enumerate() {
            let ad = format!("ad{}", i % 2);
            let ctx = super::super::features::FeatureContext {
                user_id: Some(users),
                campaign_id: "c",
                advertiser_id: "a",
                ad_id: &ad,
                interests: &interests[i % 3],
                bid_micros: 1_000 * (i as u64 + 1),
                ts: crate::time::EventTime(i as i64 * 3_600_000),
                ..Default::default()
            };
            spec.encode(&ctx, &mut batch);
            targets.click.push((i % 2) as f32);
            targets.click_mask.push(1.0);
            targets.conversion.push(u8::from(i == 1) as f32);
            targets.conversion_mask.push((i % 2) as f32);
        }
        (batch, targets)
    }

    #[test]
    fn gradients_match_finite_differences() {
        let spec = tiny_spec();
        let config = ModelConfig {
            embedding_dim: 3,
            cross_layers: 2,
            hidden: vec![5],
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        let model = RankerModel::new(&spec, &config, vb).expect("model");
        let (batch, targets) = tiny_batch(&spec);
        let inputs = model.inputs(&batch).expect("inputs");
        let (clicks, conversions) = label_counts(&targets);
        let denominators = (clicks as f64, conversions as f64);
        let eval = || -> f64 {
            loss(&model, &inputs, &targets, 0.7, denominators)
                .and_then(|(l, _)| l.to_scalar::<f64>())
                .expect("loss")
        };
        let (l, _) = loss(&model, &inputs, &targets, 0.7, denominators).expect("loss");
        let grads = l.backward().expect("backward");
        let vars = varmap.data().lock().expect("vars").clone();
        let mut checked = 0;
        for (name, var) in &vars {
            let grad = grads
                .get(var)
                .expect("gradient")
                .flatten_all()
                .expect("flat");
            let grad = grad.to_vec1::<f64>().expect("host");
            let base = var
                .flatten_all()
                .expect("flat")
                .to_vec1::<f64>()
                .expect("host");
            // A few coordinates of every parameter, including embedding rows in use.
            for k in [0, base.len() / 2, base.len() - 1] {
                let eps = 1e-6;
                let probe = |delta: f64| {
                    let mut v = base.clone();
                    v[k] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).expect("t"))
                        .expect("set");
                    eval()
                };
                let numeric = (probe(eps) - probe(-eps)) / (2.0 * eps);
                probe(0.0);
                let analytic = grad[k];
                assert!(
                    (numeric - analytic).abs() <= 1e-6 + 1e-4 * analytic.abs().max(numeric.abs()),
                    "{name}[{k}]: numeric {numeric} vs backprop {analytic}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 3 * 10, "checked {checked}");
    }

    #[test]
    fn gradients_summed_from_the_lookups_train_exactly_as_the_lookups_backward() {
        use crate::ranker::optim::{AdamW, AdamWConfig};
        let spec = tiny_spec();
        // No ReLU layer: with random weights one can be dead for an example, and then the
        // rows it read get no gradient and stay put; without, every row read moves.
        let config = ModelConfig {
            embedding_dim: 3,
            cross_layers: 1,
            hidden: vec![],
        };
        let build = || {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
            let model = RankerModel::new(&spec, &config, vb).expect("model");
            (varmap, model)
        };
        let (dense_map, dense) = build();
        let (sparse_map, sparse) = build();
        // The same starting point.
        let start = dense_map.data().lock().expect("vars").clone();
        for (name, var) in sparse_map.data().lock().expect("vars").iter() {
            var.set(start[name].as_tensor()).expect("copy");
        }
        let host = |t: &Tensor| {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f64>())
                .expect("host")
        };
        // Copied out: the variables are updated in place.
        let before: std::collections::HashMap<String, Vec<f64>> =
            start.iter().map(|(k, v)| (k.clone(), host(v))).collect();
        let (batch, targets) = tiny_batch(&spec);
        let (clicks, conversions) = label_counts(&targets);
        let denominators = (clicks as f64, conversions as f64);
        let adam = AdamWConfig {
            learning_rate: 0.05,
            ..AdamWConfig::default()
        };
        let mut dense_opt = AdamW::new(&dense_map, adam).expect("opt");
        let mut sparse_opt = AdamW::new(&sparse_map, adam).expect("opt");
        for step in 1..=3 {
            // Differentiated through the lookups, as candle does.
            let inputs = dense.inputs(&batch).expect("inputs");
            let (l, dense_logits) =
                loss(&dense, &inputs, &targets, 0.7, denominators).expect("loss");
            dense_opt.step(&l.backward().expect("grad")).expect("step");
            // Differentiated against the looked-up rows, summed per table.
            let (inputs, rows) = sparse.training_inputs(batch.clone()).expect("inputs");
            let (l, sparse_logits) =
                sparse_loss(&sparse, &inputs, &rows, &targets, 0.7, denominators).expect("loss");
            let (d, s) = (host(&dense_logits), host(&sparse_logits));
            for (d, s) in d.iter().zip(&s) {
                assert!((d - s).abs() < 1e-12, "step {step}: logits {d} vs {s}");
            }
            sparse_opt
                .step_sparse(&l.backward().expect("grad"), &rows)
                .expect("step");
            // The same update, every step.
            let after = sparse_map.data().lock().expect("vars").clone();
            for (name, var) in dense_map.data().lock().expect("vars").iter() {
                let (d, s) = (host(var), host(&after[name]));
                for (d, s) in d.iter().zip(&s) {
                    assert!((d - s).abs() < 1e-12, "step {step}, {name}: {d} vs {s}");
                }
            }
            if step == 1 {
                // A first step moves only the rows read: user (4 of 7 rows), ad (2 of 5),
                // interests (3 of 6; the padding row 0 is read with weight 0).
                let moved: usize = rows
                    .names
                    .iter()
                    .map(|name| {
                        let (s, b) = (host(&after[name]), &before[name]);
                        s.chunks(3).zip(b.chunks(3)).filter(|(s, b)| s != b).count()
                    })
                    .sum();
                assert_eq!(moved, 4 + 2 + 3);
            }
        }
    }

    #[test]
    fn segment_sums_are_the_same_in_any_number_of_chunks() {
        let segment: Vec<u32> = vec![2, 0, 2, 1, 4, 2, 0, 4, 4, 3, 2];
        let values: Vec<f64> = (0..segment.len() * 2)
            .map(|i| i as f64 * 0.5 - 3.0)
            .collect();
        let mut want = vec![0.0; 5 * 2];
        for (i, s) in segment.iter().enumerate() {
            for c in 0..2 {
                want[*s as usize * 2 + c] += values[i * 2 + c];
            }
        }
        let values = Tensor::from_vec(values, (segment.len(), 2), &Device::Cpu).expect("t");
        for chunks in [1, 2, 3, 4, 7, 11, 20] {
            let got = segment_sum_in(&segment, &values, 5, chunks)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .expect("sum");
            assert_eq!(got, want, "{chunks} chunks");
        }
    }

    #[test]
    fn stable_bce_matches_the_definition_and_survives_large_logits() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[-3.0f64, 0.5, 40.0, -40.0], &dev).expect("x");
        let y = Tensor::new(&[0.0f64, 1.0, 0.0, 1.0], &dev).expect("y");
        let m = Tensor::new(&[1.0f64, 1.0, 0.0, 0.0], &dev).expect("m");
        let l = masked_bce_with_logits(&x, &y, &m, 2.0)
            .and_then(|t| t.to_scalar::<f64>())
            .expect("loss");
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let expected = (-(1.0 - sig(-3.0)).ln() - sig(0.5).ln()) / 2.0;
        assert!((l - expected).abs() < 1e-12, "{l} vs {expected}");
        let all = Tensor::new(&[1.0f64; 4], &dev).expect("m");
        let l = masked_bce_with_logits(&x, &y, &all, 4.0)
            .and_then(|t| t.to_scalar::<f64>())
            .expect("loss");
        assert!(l.is_finite() && l > 10.0);
    }

    #[test]
    fn fresh_model_predicts_its_priors() {
        let spec = tiny_spec();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = RankerModel::new(&spec, &ModelConfig::default(), vb).expect("model");
        let (batch, _) = tiny_batch(&spec);
        let p = model.predict(&batch).expect("predict");
        assert_eq!(p.len(), 4);
        for p in p {
            assert!(p.pctr > 0.005 && p.pctr < 0.08, "{p:?}");
            assert!(p.pcvr > 0.01 && p.pcvr < 0.2, "{p:?}");
        }
    }

    #[test]
    fn with_prior_offset_a_fresh_model_predicts_each_examples_prior() {
        let priors = [(0.001, 0.3), (0.02, 0.05), (0.2, 0.001), (0.6, 0.25)];
        // The same example but for its prior, once per prior.
        let encode = |spec: &FeatureSpec| {
            let mut batch = spec.batch();
            for &(pctr, pcvr) in &priors {
                let ctx = super::super::features::FeatureContext {
                    user_id: Some("u"),
                    campaign_id: "c",
                    advertiser_id: "a",
                    ad_id: "ad",
                    prior: Prediction { pctr, pcvr },
                    ..Default::default()
                };
                spec.encode(&ctx, &mut batch);
            }
            batch
        };
        let fresh = |spec: &FeatureSpec| {
            let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu);
            RankerModel::new(spec, &ModelConfig::default(), vb).expect("model")
        };
        let mut spec = tiny_spec();
        spec.prior_offset = true;
        let batch = encode(&spec);
        let predicted = fresh(&spec).predict(&batch).expect("predict");
        let logit = |p: f64| (p / (1.0 - p)).ln();
        // The network's correction, the same for every row (its inputs are), and small at the
        // start (a zero bias, small weights).
        let corrections: Vec<(f64, f64)> = predicted
            .iter()
            .zip(&priors)
            .map(|(p, &(pctr, pcvr))| (logit(p.pctr) - logit(pctr), p.pcvr.ln() - f64::ln(pcvr)))
            .collect();
        for c in &corrections {
            assert!((c.0 - corrections[0].0).abs() < 1e-3, "{corrections:?}");
            assert!((c.1 - corrections[0].1).abs() < 1e-3, "{corrections:?}");
            assert!(c.0.abs() < 1.0 && c.1.abs() < 1.0, "{corrections:?}");
        }
        // Without the offset the same rows ignore the prior.
        spec.prior_offset = false;
        let p = fresh(&spec).predict(&batch).expect("predict");
        assert!(p.iter().all(|p| p.pctr < 0.1), "{p:?}");
        // With the conversion offset alone, the conversion head follows each prior and the
        // click head ignores it.
        spec.conversion_prior_offset = true;
        let p = fresh(&spec).predict(&encode(&spec)).expect("predict");
        let first = p[0].pcvr.ln() - f64::ln(priors[0].1);
        for (row, &(_, pcvr)) in p.iter().zip(&priors) {
            assert!((row.pctr - p[0].pctr).abs() < 1e-6, "{p:?}");
            let correction = row.pcvr.ln() - f64::ln(pcvr);
            assert!(
                (correction - first).abs() < 1e-3 && correction.abs() < 1.0,
                "{p:?}"
            );
        }
    }

    #[test]
    fn a_conversion_interaction_adds_the_dot_product_of_its_pairs_embeddings() {
        let mut spec = tiny_spec();
        spec.conversion_interactions = vec![["ad".into(), "interests".into()]];
        let (batch, _) = tiny_batch(&spec);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = RankerModel::new(&spec, &ModelConfig::default(), vb).expect("model");
        let logits = |model: &RankerModel| -> Vec<[f32; 2]> {
            let l = model
                .forward(&model.inputs(&batch).expect("inputs"))
                .expect("fwd");
            l.to_vec2::<f32>()
                .expect("host")
                .into_iter()
                .map(|r| [r[0], r[1]])
                .collect()
        };
        let with = logits(&model);
        // The same weights with the interaction's tables zeroed.
        let tables = |varmap: &VarMap, name: &str| {
            varmap.data().lock().expect("lock")[&format!("interact.{name}.weight")].clone()
        };
        let (ad, interests) = (tables(&varmap, "ad"), tables(&varmap, "interests"));
        let rows = |t: &Var| t.as_tensor().to_vec2::<f32>().expect("host");
        let (ad_rows, interest_rows) = (rows(&ad), rows(&interests));
        ad.set(&ad.zeros_like().expect("zeros")).expect("set");
        let without = logits(&model);
        for (i, (w, wo)) in with.iter().zip(&without).enumerate() {
            assert_eq!(w[0], wo[0], "the click logit does not read the interaction");
            // By hand: the ad's row dotted with the mean of the example's interest rows.
            let ad_row = &ad_rows[batch.categorical[1][i] as usize];
            let width = 3;
            let (ids, weights) = &batch.bags[0];
            let mut pooled = [0f32; INTERACTION_DIM];
            for slot in 0..width {
                let (id, weight) = (ids[i * width + slot] as usize, weights[i * width + slot]);
                for (p, v) in pooled.iter_mut().zip(&interest_rows[id]) {
                    *p += weight * v;
                }
            }
            let dot: f32 = ad_row.iter().zip(&pooled).map(|(a, b)| a * b).sum();
            assert!(
                (w[1] - wo[1] - dot).abs() < 1e-5,
                "row {i}: {w:?} {wo:?} {dot}"
            );
        }
        assert!(
            with.iter()
                .zip(&without)
                .any(|(w, wo)| (w[1] - wo[1]).abs() > 1e-6),
            "the interaction moved no conversion logit"
        );
    }

    #[test]
    fn fake_negative_calibration_inverts_q() {
        for p in [0.01, 0.1, 0.5] {
            let q = p / (1.0 + p);
            assert!((fake_negative_calibration(q) - p).abs() < 1e-12);
        }
    }
}
