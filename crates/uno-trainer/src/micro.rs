//! The micro-batches of one step on one device: forward, backward and accumulation, with
//! the loss values read back for the metrics line.

use std::collections::BTreeMap;

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Tensor, backend::AutodiffBackend};

use crate::clip::scale_grads;
use crate::error::{BoxError, Result, TrainError};
use crate::model::{StepContext, TrainStep};
use crate::parallel::Peer;
use crate::params::TrainableParams;

/// What a step's micro-batches gave on this device (or, after [`Self::all_reduce`], on
/// all peers together).
pub(crate) struct MicroBatches {
    /// Sum of the micro-batch losses as returned (before the accumulation scale).
    pub loss_sum: f64,
    /// Each named component, summed like the loss.
    pub components: BTreeMap<String, f64>,
    /// Each named count, summed.
    pub counts: BTreeMap<String, u64>,
    /// Tokens and samples processed.
    pub tokens: u64,
    /// See `tokens`.
    pub samples: u64,
    /// Why the step must be skipped (a non-finite loss), if it must.
    pub skip_reason: Option<String>,
    /// End of the data positions forwarded (a non-finite micro-batch stops the step).
    pub read_end: u64,
    /// The accumulated gradients (`None` when the step stopped at a non-finite loss).
    pub grads: Option<GradientsParams>,
}

/// Forward and backward `batches` (position, batch) with one seed each; each loss is
/// divided by `scale` before its backward (the number of micro-batches of the step for a
/// model without counts, so that the gradients average; 1 for a token-weighted model, whose
/// losses are already fractions of the step).
pub(crate) fn forward_micro_batches<B: AutodiffBackend, M: TrainStep<B>>(
    model: &M,
    batches: Vec<(u64, M::Batch)>,
    seeds: &[u64],
    step: u64,
    step_counts: &[u64],
    scale: u64,
) -> Result<MicroBatches> {
    let forward_error = |source| TrainError::Forward { step, source };
    let k = batches.len();
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut single: Option<GradientsParams> = None;
    let mut out_all = MicroBatches {
        loss_sum: 0.0,
        components: BTreeMap::new(),
        counts: BTreeMap::new(),
        tokens: 0,
        samples: 0,
        skip_reason: None,
        read_end: batches.first().map_or(0, |(p, _)| *p),
        grads: None,
    };
    for ((micro, (position, batch)), seed) in (0u32..).zip(batches).zip(seeds) {
        out_all.read_end = position + 1;
        let ctx = StepContext {
            step,
            micro_batch: micro,
            data_position: position,
            seed: *seed,
            step_counts: step_counts.to_vec(),
        };
        let out = model.forward_step(batch, &ctx).map_err(forward_error)?;
        let values = read_scalars(&out.loss, &out.components).map_err(forward_error)?;
        out_all.tokens += out.tokens;
        out_all.samples += out.samples;
        out_all.loss_sum += values[0];
        for ((name, _), v) in out.components.iter().zip(&values[1..]) {
            *out_all.components.entry((*name).to_string()).or_default() += v;
        }
        for (name, n) in &out.counts {
            *out_all.counts.entry((*name).to_string()).or_default() += n;
        }
        if !values[0].is_finite() {
            out_all.skip_reason = Some(format!("non-finite loss at data position {position}"));
            return Ok(out_all);
        }
        // Average micro-batch gradients by scaling each loss (exact for scale = 1), or the
        // gradients the model computed itself.
        let grads = match out.grads {
            Some(grads) if scale > 1 => {
                let trainable = TrainableParams::of::<B, M>(model);
                scale_grads::<B, M>(model, grads, &trainable, 1.0 / scale as f64)
            }
            Some(grads) => grads,
            None if scale > 1 => {
                GradientsParams::from_grads(out.loss.div_scalar(scale as f64).backward(), model)
            }
            None => GradientsParams::from_grads(out.loss.backward(), model),
        };
        if k > 1 {
            accumulator.accumulate::<B>(model, grads);
        } else {
            single = Some(grads);
        }
    }
    out_all.grads = Some(single.unwrap_or_else(|| accumulator.grads()));
    Ok(out_all)
}

impl MicroBatches {
    /// The loss values, counts and skip decision summed over all peers (the gradients are
    /// left to [`crate::parallel`]'s all-reduce). Every peer ends with the same values, so
    /// every peer takes the same decisions (skip, divergence, clipping).
    pub(crate) fn all_reduce<B: AutodiffBackend>(mut self, peer: &Peer<B>) -> Result<Self> {
        let mut exact = vec![
            self.tokens,
            self.samples,
            u64::from(self.skip_reason.is_some()),
        ];
        exact.extend(self.counts.values());
        let exact = peer.sum_exact("all-reduce of the step's counts", &exact)?;
        let mut floats = vec![self.loss_sum as f32];
        floats.extend(self.components.values().map(|v| *v as f32));
        let floats = peer.sum_f32("all-reduce of the step's losses", floats)?;
        self.tokens = exact[0];
        self.samples = exact[1];
        if exact[2] > 0 && self.skip_reason.is_none() {
            self.skip_reason = Some("non-finite loss on another peer".to_string());
        }
        for (v, sum) in self.counts.values_mut().zip(&exact[3..]) {
            *v = *sum;
        }
        self.loss_sum = f64::from(floats[0]);
        for (v, sum) in self.components.values_mut().zip(&floats[1..]) {
            *v = f64::from(*sum);
        }
        Ok(self)
    }
}

/// Element-wise sum of the micro-batches' loss counts; empty when none reports any, an
/// error when they disagree on the number of terms.
pub(crate) fn step_totals(per_batch: impl Iterator<Item = Vec<u64>>) -> Result<Vec<u64>, BoxError> {
    let mut totals: Vec<u64> = Vec::new();
    for (micro, counts) in per_batch.enumerate() {
        if micro == 0 {
            totals = counts;
        } else if counts.len() != totals.len() {
            return Err(format!(
                "micro-batch {micro} reports {} loss counts, micro-batch 0 reported {}",
                counts.len(),
                totals.len()
            )
            .into());
        } else {
            totals.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
        }
    }
    Ok(totals)
}

/// Read the loss and the components back in one device sync.
fn read_scalars<B: AutodiffBackend>(
    loss: &Tensor<B, 1>,
    components: &[(&'static str, Tensor<B, 1>)],
) -> Result<Vec<f64>, BoxError> {
    let mut parts = vec![loss.clone().inner().reshape([1])];
    for (name, t) in components {
        if t.shape().num_elements() != 1 {
            return Err(format!(
                "loss component `{name}` has shape {:?}, expected [1]",
                t.dims()
            )
            .into());
        }
        parts.push(t.clone().inner().reshape([1]));
    }
    if loss.shape().num_elements() != 1 {
        return Err(format!("loss has shape {:?}, expected [1]", loss.dims()).into());
    }
    let values = Tensor::cat(parts, 0)
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .map_err(|e| format!("reading the loss back: {e:?}"))?;
    Ok(values)
}
