//! GroupNorm with statistics that stay accurate over large groups (FLUX's GroupNorm(32)).
//!
//! # Why not `burn::nn::GroupNorm`
//! Burn's GroupNorm sums each group with the backend's plain `sum_dim`. A group of a FLUX
//! activation holds `C / 32 * H * W` values (4M at 1024^2), and on mostly flat images the
//! f32 sums of some backends put the mean far off (see [`crate::mot::stats`]); the
//! normalised output, which divides by the group's small spread, inherits that error
//! amplified: on a flat 4M-element group Burn's GroupNorm is 4e-2 off on ndarray and 2e-4
//! on flex, this one 1e-5 on both (`tests/core/vae.rs`). Training encodes every image every
//! step, so this one uses [`crate::mot::stats`] (blocked sums, two-pass variance, f32
//! statistics for bf16 inputs).
//!
//! The parameters keep Burn's names (`gamma`, `beta`) and the type keeps Burn's name, so
//! checkpoint rules that map a `GroupNorm`'s `gamma`/`beta` to PyTorch's `weight`/`bias`
//! apply unchanged.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::{DType, Tensor, backend::Backend};

use super::VisionError;
use crate::mot::stats::moments_dim;

/// Configuration of a [`GroupNorm`] (always affine, as FLUX's are).
#[derive(Config, Debug)]
pub struct GroupNormConfig {
    /// Groups the channels are split into (contiguous runs of `num_channels / num_groups`).
    pub num_groups: usize,
    /// Channels of the input.
    pub num_channels: usize,
    /// Added to the variance before the square root.
    #[config(default = 1e-6)]
    pub epsilon: f64,
}

impl GroupNormConfig {
    /// A GroupNorm with `gamma = 1`, `beta = 0`.
    ///
    /// # Errors
    /// [`VisionError::InvalidConfig`] when `num_groups` is zero or does not divide
    /// `num_channels`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<GroupNorm<B>, VisionError> {
        if self.num_groups == 0 || !self.num_channels.is_multiple_of(self.num_groups) {
            return Err(VisionError::InvalidConfig(format!(
                "GroupNorm: {} channels not divisible by {} groups",
                self.num_channels, self.num_groups
            )));
        }
        Ok(GroupNorm {
            gamma: Initializer::Ones.init([self.num_channels], device),
            beta: Initializer::Zeros.init([self.num_channels], device),
            num_groups: self.num_groups,
            epsilon: self.epsilon,
        })
    }
}

/// `y = (x - mean_g) / sqrt(var_g + eps) * gamma_c + beta_c`, with the mean and biased
/// variance of each sample's group `g` of channels, as PyTorch's `nn.GroupNorm`.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// Per-channel scale (PyTorch `weight`), `[C]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Per-channel shift (PyTorch `bias`), `[C]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Number of channel groups.
    pub num_groups: usize,
    /// Added to the variance before the square root.
    pub epsilon: f64,
}

impl<B: Backend> GroupNorm<B> {
    /// Normalise each group with f32 statistics, then scale and shift per channel; the
    /// result has `x`'s float type.
    ///
    /// # Shapes
    /// - `x`: `[N, C, H, W]`, `C` the configured channel count
    /// - output: `[N, C, H, W]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let shape = x.dims();
        let [n, c, h, w] = shape;
        let (g, per_group) = (self.num_groups, c / self.num_groups);
        let dtype = x.dtype();
        let moments = moments_dim(x.reshape([n, g, per_group * h * w]), 2);
        // gamma / std folded into one per-(sample, channel) factor: one pass over the
        // activation instead of a division and a multiplication.
        let inv_std = (moments.var + self.epsilon)
            .sqrt()
            .recip()
            .reshape([n, g, 1, 1]);
        let param =
            |p: &Param<Tensor<B, 1>>| p.val().cast(DType::F32).reshape([1, g, per_group, 1]);
        let scale = param(&self.gamma) * inv_std;
        let y = moments.centered.reshape([n, g, per_group, h * w]) * scale + param(&self.beta);
        y.cast(dtype).reshape(shape)
    }
}
