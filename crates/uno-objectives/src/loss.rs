//! The combined UNO objective `L = L_fm + w_cap L_cap + w_vis L_vis` (paper eq. 3), plus
//! BAGEL's understanding cross entropy `w_text L_text` for pretraining both experts at once.

use burn::tensor::{Tensor, backend::Backend};

use crate::caption::{CeNames, cross_entropy_term};
use crate::error::ObjectiveError;

// Not `Result`: the `Config` derive expands to code naming `Result<T, E>`.
type Res<T> = crate::error::Result<T>;
use crate::flow::flow_term;
use crate::term::LossTerm;
use crate::visual::visual_term;

/// Weights of the UNO objective.
///
/// Paper appendix A lists 0.1 and 0.2 (the table lost its row labels; read in order as
/// caption 0.1, visual 0.2). A weight of 0 disables its term: it is then not computed at all
/// (its inputs are ignored, its count reported as 0).
#[derive(burn::config::Config, Debug, PartialEq)]
pub struct UnoLossConfig {
    /// Weight of the caption cross entropy.
    #[config(default = 0.1)]
    pub caption: f64,
    /// Weight of the metaquery cosine loss.
    #[config(default = 0.2)]
    pub visual: f64,
    /// Weight of the understanding answers' cross entropy (BAGEL's `ce_loss` on
    /// `Sample::Understanding` answers). Not a UNO objective: post-training leaves it at 0;
    /// pretraining (ShapesBench's stage 1) turns it on to teach the understanding expert to
    /// caption.
    #[config(default = 0.0)]
    pub text: f64,
    /// Check every computed term for NaN/inf inputs (one scalar read-back, i.e. one device
    /// synchronisation, per term per step). Turn off to keep a GPU pipeline asynchronous.
    #[config(default = true)]
    pub check_finite: bool,
}

impl UnoLossConfig {
    /// Validate the weights (finite, `>= 0`) and build the loss.
    pub fn init(&self) -> Res<UnoLoss> {
        for (name, w) in [
            ("UnoLossConfig.caption", self.caption),
            ("UnoLossConfig.visual", self.visual),
            ("UnoLossConfig.text", self.text),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(ObjectiveError::InvalidValue {
                    name,
                    value: w.to_string(),
                    expected: "a finite weight >= 0 (0 disables the term)",
                });
            }
        }
        Ok(UnoLoss {
            config: self.clone(),
        })
    }
}

/// Per-term item counts: noised VAE tokens, caption targets (ignored labels excluded),
/// metaqueries and understanding-answer targets. Sum them over data-parallel ranks for [`UnoLoss::forward_global`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LossCounts {
    /// Noised VAE tokens carrying a flow loss.
    pub noised_tokens: usize,
    /// Caption target tokens (non-ignored labels).
    pub caption_tokens: usize,
    /// Metaqueries.
    pub metaqueries: usize,
    /// Understanding-answer targets (non-ignored labels).
    pub text_tokens: usize,
}

impl std::ops::Add for LossCounts {
    type Output = Self;

    /// Element-wise sum: combine the counts of several packs or ranks.
    fn add(self, rhs: Self) -> Self {
        Self {
            noised_tokens: self.noised_tokens + rhs.noised_tokens,
            caption_tokens: self.caption_tokens + rhs.caption_tokens,
            metaqueries: self.metaqueries + rhs.metaqueries,
            text_tokens: self.text_tokens + rhs.text_tokens,
        }
    }
}

/// Already-gathered inputs of one pack. Build with [`UnoLossInputs::new`] and the setters;
/// a term without inputs (e.g. a plain BAGEL t2i pack has no caption) counts 0 items.
#[derive(Debug, Clone)]
pub struct UnoLossInputs<'a, B: Backend> {
    device: B::Device,
    flow: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    caption: Option<(Tensor<B, 2>, &'a [u32])>,
    visual: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    text: Option<(Tensor<B, 2>, &'a [u32])>,
}

impl<'a, B: Backend> UnoLossInputs<'a, B> {
    /// No inputs yet; zero terms are created on `device`.
    pub fn new(device: &B::Device) -> Self {
        Self {
            device: device.clone(),
            flow: None,
            caption: None,
            visual: None,
            text: None,
        }
    }

    /// Predicted velocities `[N, C]` of the noised tokens and their targets `[N, C]`.
    pub fn flow(mut self, pred: Tensor<B, 2>, target: Tensor<B, 2>) -> Self {
        self.flow = Some((pred, target));
        self
    }

    /// Caption logits `[N, V]` and labels (`N`, [`crate::IGNORE_INDEX`] to skip).
    pub fn caption(mut self, logits: Tensor<B, 2>, labels: &'a [u32]) -> Self {
        self.caption = Some((logits, labels));
        self
    }

    /// Metaquery outputs `[M, D]` and their (pooled) targets `[M, D]`.
    pub fn visual(mut self, pred: Tensor<B, 2>, target: Tensor<B, 2>) -> Self {
        self.visual = Some((pred, target));
        self
    }

    /// Understanding-answer logits `[N, V]` and labels (`N`, [`crate::IGNORE_INDEX`] to
    /// skip): the same next-token CE as the caption, as a separate term.
    pub fn text(mut self, logits: Tensor<B, 2>, labels: &'a [u32]) -> Self {
        self.text = Some((logits, labels));
        self
    }
}

/// The loss of one pack: the weighted total and every (unweighted) component.
#[derive(Debug, Clone)]
pub struct UnoLossOutput<B: Backend> {
    /// `flow + caption_weight * caption + visual_weight * visual + text_weight * text`,
    /// shape `[1]`.
    pub total: Tensor<B, 1>,
    /// Flow-matching loss (unweighted).
    pub flow: Tensor<B, 1>,
    /// Caption cross entropy (unweighted; 0 when disabled or empty).
    pub caption: Tensor<B, 1>,
    /// Metaquery cosine loss (unweighted; 0 when disabled or empty).
    pub visual: Tensor<B, 1>,
    /// Understanding-answer cross entropy (unweighted; 0 when disabled or empty).
    pub text: Tensor<B, 1>,
    /// Local item counts of each term (0 for a disabled term).
    pub counts: LossCounts,
}

/// The combined objective, built by [`UnoLossConfig::init`].
#[derive(Debug, Clone)]
pub struct UnoLoss {
    config: UnoLossConfig,
}

struct Terms<B: Backend> {
    flow: LossTerm<B>,
    caption: LossTerm<B>,
    visual: LossTerm<B>,
    text: LossTerm<B>,
}

impl<B: Backend> Terms<B> {
    fn counts(&self) -> LossCounts {
        LossCounts {
            noised_tokens: self.flow.count,
            caption_tokens: self.caption.count,
            metaqueries: self.visual.count,
            text_tokens: self.text.count,
        }
    }
}

impl UnoLoss {
    /// The configuration this loss was built from.
    pub fn config(&self) -> &UnoLossConfig {
        &self.config
    }

    fn terms<B: Backend>(&self, inputs: UnoLossInputs<'_, B>) -> Res<Terms<B>> {
        let check = self.config.check_finite;
        let device = inputs.device;
        let flow = match inputs.flow {
            Some((pred, target)) => flow_term(pred, target, check)?,
            None => LossTerm::zero(&device),
        };
        let caption = match inputs.caption {
            Some((logits, labels)) if self.config.caption > 0.0 => {
                cross_entropy_term(logits, labels, check, CeNames::CAPTION)?
            }
            _ => LossTerm::zero(&device),
        };
        let visual = match inputs.visual {
            Some((pred, target)) if self.config.visual > 0.0 => visual_term(pred, target, check)?,
            _ => LossTerm::zero(&device),
        };
        let text = match inputs.text {
            Some((logits, labels)) if self.config.text > 0.0 => {
                cross_entropy_term(logits, labels, check, CeNames::TEXT)?
            }
            _ => LossTerm::zero(&device),
        };
        Ok(Terms {
            flow,
            caption,
            visual,
            text,
        })
    }

    /// `[flow, caption, visual, text]` already normalised, weighted into the total.
    fn combine<B: Backend>(
        &self,
        [flow, caption, visual, text]: [Tensor<B, 1>; 4],
        counts: LossCounts,
    ) -> UnoLossOutput<B> {
        let mut total = flow.clone();
        for (term, weight) in [
            (&caption, self.config.caption),
            (&visual, self.config.visual),
            (&text, self.config.text),
        ] {
            if weight > 0.0 {
                total = total + term.clone().mul_scalar(weight);
            }
        }
        UnoLossOutput {
            total,
            flow,
            caption,
            visual,
            text,
            counts,
        }
    }

    /// The loss of one pack, each term averaged over this pack's own items.
    pub fn forward<B: Backend>(&self, inputs: UnoLossInputs<'_, B>) -> Res<UnoLossOutput<B>> {
        let t = self.terms(inputs)?;
        let counts = t.counts();
        Ok(self.combine(
            [t.flow.mean, t.caption.mean, t.visual.mean, t.text.mean],
            counts,
        ))
    }

    /// The loss of one pack with each term's SUM divided by a global count: BAGEL's
    /// data-parallel normalisation, `sum * scale / global_count`. All-reduce (sum) the
    /// [`LossCounts`] of every rank first.
    ///
    /// `scale` is 1 when the ranks' gradients are SUMMED and the world size when they are
    /// AVERAGED (DDP; BAGEL multiplies by `world_size` for this reason). The output `counts`
    /// stay local. A global count of 0 with local items is an error.
    pub fn forward_global<B: Backend>(
        &self,
        inputs: UnoLossInputs<'_, B>,
        global: LossCounts,
        scale: f64,
    ) -> Res<UnoLossOutput<B>> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(ObjectiveError::InvalidValue {
                name: "scale",
                value: scale.to_string(),
                expected: "a finite number > 0 (1 for summed gradients, world size for averaged)",
            });
        }
        let t = self.terms(inputs)?;
        let counts = t.counts();
        let terms = [
            t.flow.normalized_by(global.noised_tokens, "flow")?,
            t.caption.normalized_by(global.caption_tokens, "caption")?,
            t.visual.normalized_by(global.metaqueries, "visual")?,
            t.text.normalized_by(global.text_tokens, "text")?,
        ];
        Ok(self.combine(terms.map(|term| term.mul_scalar(scale)), counts))
    }
}
