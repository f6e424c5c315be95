//! Classifier-free guidance as BAGEL applies it: a text branch and an image branch, with an
//! optional renormalisation of the guided velocity.

use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use super::GenerateError;

/// How the guided velocity is scaled back towards the conditional one's norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Renorm {
    /// No renormalisation.
    None,
    /// One factor for the whole image: `clamp(|v| / |v_cfg|, min, 1)` (Frobenius norms).
    #[default]
    Global,
    /// One factor per token (norms over channels).
    Channel,
    /// Per token, applied to the text-guided velocity before image guidance.
    TextChannel,
}

/// Guidance settings (BAGEL's defaults: text 4.0, image 1.5, interval (0.4, 1.0], global
/// renorm with minimum 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Guidance {
    /// Text scale `s_t`; `<= 1` disables guidance altogether (as BAGEL does).
    pub text_scale: f64,
    /// Image scale `s_i`; `<= 1` disables the image branch. Used only when the context has
    /// condition images (editing): for text-to-image there is nothing to drop.
    pub image_scale: f64,
    /// Guidance is on for `lo < t <= hi`, off (plain conditional velocity) elsewhere.
    pub interval: (f64, f64),
    /// How the guided velocity's norm is pulled back (default: [`Renorm::Global`]).
    pub renorm: Renorm,
    /// Lower bound of the renorm factor (upper bound 1).
    pub renorm_min: f64,
}

impl Default for Guidance {
    fn default() -> Self {
        Self {
            text_scale: 4.0,
            image_scale: 1.5,
            interval: (0.4, 1.0),
            renorm: Renorm::Global,
            renorm_min: 0.0,
        }
    }
}

/// Added to norms before dividing (BAGEL's 1e-8).
const NORM_EPS: f64 = 1e-8;

impl Guidance {
    /// No guidance: the conditional velocity alone.
    pub fn none() -> Self {
        Self {
            text_scale: 1.0,
            image_scale: 1.0,
            ..Self::default()
        }
    }

    /// Check the settings before a run starts.
    ///
    /// # Errors
    /// [`GenerateError::Setting`] for non-finite or negative scales, an interval outside
    /// `[0, 1]` or reversed, or `renorm_min` outside `[0, 1]`.
    pub fn validate(&self) -> Result<(), GenerateError> {
        for (name, value) in [
            ("guidance.text_scale", self.text_scale),
            ("guidance.image_scale", self.image_scale),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(GenerateError::setting(name, value, "a finite number >= 0"));
            }
        }
        let (lo, hi) = self.interval;
        if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
            return Err(GenerateError::setting(
                "guidance.interval",
                format!("({lo}, {hi})"),
                "0 <= lo <= hi <= 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.renorm_min) {
            return Err(GenerateError::setting(
                "guidance.renorm_min",
                self.renorm_min,
                "a number in [0, 1]",
            ));
        }
        Ok(())
    }

    /// Whether the text branch runs at timestep `t`.
    pub fn text_active(&self, t: f64) -> bool {
        self.text_scale > 1.0 && t > self.interval.0 && t <= self.interval.1
    }

    /// Whether the image branch runs at `t` (it needs the text branch, as in BAGEL).
    pub fn image_active(&self, t: f64) -> bool {
        self.text_active(t) && self.image_scale > 1.0
    }

    /// The guided velocity `[N, C]` from the conditional `v`, the text-unconditional
    /// `v_text` (context without the last text) and the image-unconditional `v_image`
    /// (context without images):
    ///
    /// `v_t' = v_text + s_t (v - v_text)`; with an image branch
    /// `v' = v_image + s_i (v_t' - v_image)`, else `v' = v_t'`; then `v' * clamp(|v| / |v'|,
    /// min, 1)` under [`Renorm::Global`] / [`Renorm::Channel`]. [`Renorm::TextChannel`]
    /// scales `v_t'` per token before the image step instead. Without `v_text` the
    /// result is `v`.
    ///
    /// # Shapes
    /// - `v`, `v_text`, `v_image`: `[N, C]` (image tokens, latent channels)
    /// - output: `[N, C]`
    pub fn combine<B: Backend>(
        &self,
        v: Tensor<B, 2>,
        v_text: Option<Tensor<B, 2>>,
        v_image: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 2> {
        let Some(v_text) = v_text else {
            return v;
        };
        let text_guided = v_text.clone() + (v.clone() - v_text).mul_scalar(self.text_scale);
        let image_step = |x: Tensor<B, 2>| match &v_image {
            Some(vi) => vi.clone() + (x - vi.clone()).mul_scalar(self.image_scale),
            None => x,
        };
        match self.renorm {
            Renorm::None => image_step(text_guided),
            Renorm::TextChannel => {
                let scaled =
                    text_guided.clone() * self.factor(row_norms(v), row_norms(text_guided));
                image_step(scaled)
            }
            Renorm::Global => {
                let guided = image_step(text_guided);
                let factor = self.factor(global_norm(v), global_norm(guided.clone()));
                guided * factor
            }
            Renorm::Channel => {
                let guided = image_step(text_guided);
                let factor = self.factor(row_norms(v), row_norms(guided.clone()));
                guided * factor
            }
        }
    }

    fn factor<B: Backend>(&self, reference: Tensor<B, 2>, guided: Tensor<B, 2>) -> Tensor<B, 2> {
        (reference / guided.add_scalar(NORM_EPS)).clamp(self.renorm_min, 1.0)
    }
}

/// Per-row L2 norms, `[N, 1]`.
fn row_norms<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    x.powi_scalar(2).sum_dim(1).sqrt()
}

/// The Frobenius norm, `[1, 1]`.
fn global_norm<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let [n, c] = x.dims();
    x.reshape([1, n * c]).powi_scalar(2).sum_dim(1).sqrt()
}
