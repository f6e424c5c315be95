//! How an encoder with a Gaussian posterior turns an image into a latent.
//!
//! The FLUX encoder predicts a diagonal Gaussian `N(mean, exp(logvar))` per latent cell.
//! BAGEL's training encodes with FLUX's `DiagonalGaussian(sample=True)`, in train and eval
//! mode alike: `z = mean + exp(logvar / 2) * eps`, a fresh `eps ~ N(0, 1)` per image and
//! step. So the flow target `x0` is a draw from the posterior, not its mean, and the model
//! learns the posterior's spread too. [`LatentSampling::Sample`] does the same;
//! [`LatentSampling::Mean`] keeps the deterministic mean (inference, comparisons).
//!
//! # Randomness
//! `eps` is drawn on the HOST from `StdRng::seed_from_u64(seed)` (standard normals in
//! `[N, z, h, w]` row-major order) and uploaded, like the flow noise of
//! `uno_objectives::FlowNoise` and for the same reasons: identical latents on every backend,
//! and an exact replay on resume. The training forward gives each image its own seed
//! (`Bagel::uno_forward`).

use burn::tensor::{Tensor, TensorData, backend::Backend};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Which latent an encode returns from the posterior `N(mean, exp(logvar))`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LatentSampling {
    /// The posterior mean: deterministic.
    Mean,
    /// `mean + exp(logvar / 2) * eps`, `eps` drawn on the host from a seed (BAGEL's
    /// training encode; the default for training).
    #[default]
    Sample,
}

impl LatentSampling {
    /// The latent this choice takes from the posterior `N(mean, exp(logvar))`: the mean, or
    /// `mean + exp(logvar / 2) * eps` with `eps` drawn on the host from `seed`.
    ///
    /// # Shapes
    /// - `mean`, `logvar`, output: `[N, z, h, w]`
    pub fn latent<B: Backend>(
        self,
        mean: Tensor<B, 4>,
        logvar: Tensor<B, 4>,
        seed: u64,
    ) -> Tensor<B, 4> {
        match self {
            Self::Mean => mean,
            Self::Sample => {
                let eps = host_normal(mean.dims(), seed, &mean.device());
                mean + (logvar * 0.5).exp() * eps
            }
        }
    }
}

/// Standard normal noise of `shape` drawn on the host from `seed` (row-major order) and
/// uploaded to `device`.
///
/// # Shapes
/// - output: `shape`
fn host_normal<B: Backend>(shape: [usize; 4], seed: u64, device: &B::Device) -> Tensor<B, 4> {
    let mut rng = StdRng::seed_from_u64(seed);
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| rng.sample(StandardNormal))
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}
