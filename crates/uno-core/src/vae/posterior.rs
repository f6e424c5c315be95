//! What an encoder says about images before a latent is chosen.

use burn::tensor::{Tensor, backend::Backend};

use super::LatentSampling;

/// The encoder's posterior `N(mean, exp(logvar))` per latent cell, in the encoder's own
/// space (for FLUX before scaling and shifting), or a single point for a deterministic
/// codec.
///
/// # Why a type of its own
/// The posterior depends on the images alone; the latent drawn from it depends on a seed
/// that changes every step. Splitting an encode at this point lets a [`super::LatentCache`]
/// keep the expensive half while every step still draws its own latent, through the very
/// same operations as an encode without a cache (so a cached run is bit-identical).
///
/// # Shapes
/// - `mean`, `logvar`: `[N, z, h, w]`
#[derive(Debug, Clone)]
pub struct Posterior<B: Backend> {
    /// The posterior mean.
    pub mean: Tensor<B, 4>,
    /// The log-variance, or `None` for a codec without a variance (the latent is the mean).
    pub logvar: Option<Tensor<B, 4>>,
}

impl<B: Backend> Posterior<B> {
    /// A deterministic posterior: the latent is `mean` whatever the sampling.
    pub fn point(mean: Tensor<B, 4>) -> Self {
        Self { mean, logvar: None }
    }

    /// The latent `sampling` takes, in the encoder's space: the mean, or (with a variance)
    /// [`LatentSampling::latent`]'s draw from `seed`.
    ///
    /// # Shapes
    /// - output: `[N, z, h, w]`
    pub fn latent(self, sampling: LatentSampling, seed: u64) -> Tensor<B, 4> {
        match self.logvar {
            Some(logvar) => sampling.latent(self.mean, logvar, seed),
            None => self.mean,
        }
    }

    /// The same posterior with `f` applied to each tensor (e.g. to move it between a
    /// backend and its inner backend).
    pub fn map<C: Backend>(self, f: impl Fn(Tensor<B, 4>) -> Tensor<C, 4>) -> Posterior<C> {
        Posterior {
            mean: f(self.mean),
            logvar: self.logvar.map(f),
        }
    }
}
