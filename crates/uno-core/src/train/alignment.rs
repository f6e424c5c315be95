//! Gradient alignment of UNO's objectives (the paper's Figure 8): per decoder layer, the
//! cosine between the generation expert's gradient from flow matching alone and from the
//! caption loss alone / the visual loss alone, on one batch under one noise draw.
//!
//! A positive cosine means the auxiliary loss pushes the generation expert the way flow
//! matching does; the paper reads UNO's gains from these being positive. Each loss gets its
//! own forward and backward (Burn's backward consumes the graph); the forwards are
//! identical because the batch's `noise_seed` fixes timesteps and noise. The flow gradient
//! is kept while each auxiliary one is computed, so at most two copies of the generation
//! expert's gradient are alive at once.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

use crate::bagel::{Bagel, BagelError, UnoBatch, UnoObjective};
use crate::objectives::UnoLossOutput;
use crate::vae::LatentCodec;

/// The generation expert's gradient of one loss, per decoder layer: every parameter of
/// `layers.{i}.moe_gen`, flattened, in visit order; `None` for a parameter the loss does
/// not reach or a frozen one, which counts as a zero gradient. (In the last layer, the
/// caption and metaquery tokens read only the image tokens' keys and values, so the caption
/// and visual losses do not reach that layer's generation MLP.)
#[derive(Debug, Clone)]
pub struct ExpertGradients<B: Backend> {
    layers: Vec<Vec<Option<Tensor<B, 1>>>>,
}

impl<B: Backend> ExpertGradients<B> {
    /// Backpropagate `loss` and keep the gradients of `model`'s generation expert.
    ///
    /// # Shapes
    /// - `loss`: `[1]`
    pub fn of<A: AutodiffBackend<InnerBackend = B>>(model: &Bagel<A>, loss: Tensor<A, 1>) -> Self {
        let grads = loss.backward();
        let layers = model
            .language_model
            .layers
            .iter()
            .map(|layer| {
                let mut collect = Collect::<A> {
                    grads: &grads,
                    flat: Vec::new(),
                };
                layer.moe_gen.visit(&mut collect);
                collect.flat
            })
            .collect();
        Self { layers }
    }

    /// Number of decoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Euclidean norm of each layer's gradient.
    pub fn norms(&self) -> Vec<f64> {
        self.layers
            .iter()
            .map(|layer| dot(layer, layer).sqrt())
            .collect()
    }

    /// Per layer, the cosine between this gradient and `other`'s (`None` when either is
    /// zero). `other` comes from the same model, so the layers hold the same parameters.
    pub fn cosines(&self, other: &Self) -> Vec<Option<f64>> {
        self.layers
            .iter()
            .zip(&other.layers)
            .map(|(a, b)| {
                let norms = (dot(a, a) * dot(b, b)).sqrt();
                (norms > 0.0).then(|| (dot(a, b) / norms).clamp(-1.0, 1.0))
            })
            .collect()
    }
}

/// `sum_p <a_p, b_p>` over paired parameters (a missing gradient is zero), accumulated in
/// f64.
fn dot<B: Backend>(a: &[Option<Tensor<B, 1>>], b: &[Option<Tensor<B, 1>>]) -> f64 {
    a.iter()
        .zip(b)
        .filter_map(|pair| match pair {
            (Some(x), Some(y)) => Some((x.clone() * y.clone()).sum().into_scalar().elem::<f64>()),
            _ => None,
        })
        .sum()
}

struct Collect<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    flat: Vec<Option<Tensor<B::InnerBackend, 1>>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.flat.push(param.val().grad(self.grads).map(|grad| {
            let numel = grad.shape().num_elements();
            grad.reshape([numel])
        }));
    }
}

/// How an auxiliary loss's gradient on one layer's generation expert relates to the
/// flow-matching gradient.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TermAlignment {
    /// Cosine with the flow-matching gradient, in `[-1, 1]` (`None` when either is zero).
    pub cosine: Option<f64>,
    /// Norm of the auxiliary gradient (unweighted loss).
    pub norm: f64,
}

/// [`gradient_alignment`]'s figures for one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerAlignment {
    /// Decoder layer index.
    pub layer: usize,
    /// Norm of the flow-matching gradient of this layer's generation expert.
    pub flow_norm: f64,
    /// The caption loss's gradient (`None` when the batch has no caption term: no caption
    /// split, or a caption weight of 0).
    pub caption: Option<TermAlignment>,
    /// The visual loss's gradient (`None` when the batch has no visual term).
    pub visual: Option<TermAlignment>,
}

/// Per decoder layer, how the generation expert's gradients of the caption and visual
/// losses align with its flow-matching gradient, on `batch` (three forwards and backwards
/// under the batch's noise seed; the model's weights are not changed).
///
/// The losses are the unweighted components of `objective` under the batch's
/// normalisation; a term the objective disables (weight 0) or the pack does not carry is
/// reported as `None`.
pub fn gradient_alignment<B: AutodiffBackend>(
    model: &Bagel<B>,
    batch: UnoBatch<'_, B>,
    codec: &impl LatentCodec<B>,
    objective: &UnoObjective,
) -> Result<Vec<LayerAlignment>, BagelError> {
    let term = |pick: fn(UnoLossOutput<B>) -> (Tensor<B, 1>, usize)| {
        let out = model.uno_forward(batch, codec, objective)?;
        let (loss, count) = pick(out.loss);
        Ok::<_, BagelError>((count > 0).then(|| ExpertGradients::of(model, loss)))
    };
    let flow = term(|t| (t.flow, t.counts.noised_tokens))?;
    let flow_norms = flow.as_ref().map(ExpertGradients::norms);
    let against = |aux: Option<ExpertGradients<B::InnerBackend>>| {
        aux.map(|aux| {
            let cosines = match &flow {
                Some(flow) => flow.cosines(&aux),
                None => vec![None; aux.num_layers()],
            };
            aux.norms()
                .into_iter()
                .zip(cosines)
                .map(|(norm, cosine)| TermAlignment { cosine, norm })
                .collect::<Vec<_>>()
        })
    };
    let caption = against(term(|t| (t.caption, t.counts.caption_tokens))?);
    let visual = against(term(|t| (t.visual, t.counts.metaqueries))?);
    Ok((0..model.language_model.layers.len())
        .map(|layer| LayerAlignment {
            layer,
            flow_norm: flow_norms.as_ref().map_or(0.0, |n| n[layer]),
            caption: caption.as_ref().map(|c| c[layer]),
            visual: visual.as_ref().map(|v| v[layer]),
        })
        .collect())
}
