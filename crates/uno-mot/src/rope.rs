//! 1-D rotary position embedding, rotate-half convention (HF Qwen2 / BAGEL), at arbitrary
//! position ids.
//!
//! burn-nn's `RotaryEncoding` rotates interleaved pairs over contiguous positions; BAGEL
//! rotates halves (`x * cos + rotate_half(x) * sin`, `rotate_half(x) = [-x2, x1]`) and several
//! tokens (all tokens of one image) share one id, so this small module is ours.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData, get_device_settings};

/// Cos/sin tables for one set of position ids, shared by all layers of a forward pass.
#[derive(Debug, Clone)]
pub struct RopeTables<B: Backend> {
    /// `[n, 1, head_dim]`.
    pub cos: Tensor<B, 3>,
    /// `[n, 1, head_dim]`.
    pub sin: Tensor<B, 3>,
}

impl<B: Backend> RopeTables<B> {
    /// Tables for `position_ids` (`[n]`): angle `p * theta^(-2i/head_dim)`, `i < head_dim/2`,
    /// duplicated over the two halves (HF `cat(freqs, freqs)`).
    ///
    /// The angles, cosines and sines are computed in f32 whatever the default float type,
    /// then cast to it: bf16 holds integers exactly only up to 256 (ids 2048..4096 are
    /// rounded to multiples of 16), and BAGEL samples reach ids near 4k.
    pub fn new(position_ids: Tensor<B, 1, Int>, head_dim: usize, theta: f64) -> Self {
        let device = position_ids.device();
        let float_dtype = get_device_settings::<B>(&device).float_dtype;
        let [n] = position_ids.dims();
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
            .collect();
        let inv_freq =
            Tensor::<B, 1>::from_data(TensorData::new(inv_freq, [half]), (&device, DType::F32));
        let positions = position_ids.cast(FloatDType::F32).reshape([n, 1]);
        let freqs = positions * inv_freq.reshape([1, half]);
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 1).reshape([n, 1, head_dim]);
        Self {
            cos: emb.clone().cos().cast(float_dtype),
            sin: emb.sin().cast(float_dtype),
        }
    }

    /// Rotate `x` (`[n, heads * head_dim]`, rows in the same order as the position ids).
    /// One call; a forward pass that rotates many tensors with the same head count builds
    /// [`Self::for_heads`] once instead.
    pub fn apply(&self, x: Tensor<B, 2>, heads: usize) -> Tensor<B, 2> {
        self.for_heads(heads).apply(x)
    }

    /// The tables laid out for tensors of `heads` heads: `[n, heads * head_dim]`, with the
    /// sign of `rotate_half` folded into the sine.
    ///
    /// Why: `x * cos` with `cos` broadcast over the middle (head) axis is a strided
    /// element loop on the CPU backends, forward and backward, in every layer; with tables
    /// as wide as `x` both products are plain contiguous (SIMD) ones. The values are the
    /// same, so the rotation is bit-identical: `rotate_half(x) * sin = [-x2, x1] * [s, s]
    /// = [x2, x1] * [-s, s]`.
    pub fn for_heads(&self, heads: usize) -> HeadRope<B> {
        let [n, _, head_dim] = self.cos.dims();
        let half = head_dim / 2;
        let signed_sin = Tensor::cat(
            vec![
                self.sin.clone().narrow(2, 0, half).neg(),
                self.sin.clone().narrow(2, half, half),
            ],
            2,
        );
        let wide = |t: Tensor<B, 3>| t.repeat_dim(1, heads).reshape([n, heads * head_dim]);
        HeadRope {
            cos: wide(self.cos.clone()),
            signed_sin: wide(signed_sin),
            heads,
        }
    }
}

/// [`RopeTables`] widened to one head count (see [`RopeTables::for_heads`]).
#[derive(Debug, Clone)]
pub struct HeadRope<B: Backend> {
    cos: Tensor<B, 2>,
    signed_sin: Tensor<B, 2>,
    heads: usize,
}

impl<B: Backend> HeadRope<B> {
    /// Rotate `x` (`[n, heads * head_dim]`): `x * cos + [x2, x1] * [-sin, sin]` per head.
    pub fn apply(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, width] = x.dims();
        let head_dim = width / self.heads;
        let half = head_dim / 2;
        let heads = x.clone().reshape([n, self.heads, head_dim]);
        let swapped = Tensor::cat(
            vec![
                heads.clone().narrow(2, half, half),
                heads.narrow(2, 0, half),
            ],
            2,
        )
        .reshape([n, width]);
        x * self.cos.clone() + swapped * self.signed_sin.clone()
    }
}
