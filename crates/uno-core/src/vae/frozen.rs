//! A frozen codec called from an autodiff backend, run on the backend without autodiff.
//!
//! # Why
//! The codec is never trained and its latents are data. Under `Autodiff<B>`, Burn leaves an
//! op untracked only when no input requires a gradient: a codec whose weights still require
//! one records the whole encode and keeps every activation until the latents are dropped
//! (one 256^2 image, release-size FLUX: 1.4 GB peak to encode, 2.4 GB to decode, against
//! 0.5 / 0.6 GB frozen). With `no_grad` weights the ops are untracked but still go through
//! the autodiff layer and are registered in its graph. Running the codec on
//! `B::InnerBackend` takes that layer out whatever the caller froze: the images go in with
//! [`Tensor::inner`], the result comes back as a leaf with [`Tensor::from_inner`], exactly
//! what `detach()` would give (`docs/performance.md`, "FLUX autoencoder").

use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use super::{LatentCodec, LatentSampling, Posterior, VisionError};

/// `C`, a codec of `B::InnerBackend`, used as a codec of the autodiff backend `B`: inputs
/// are taken off the graph, outputs are graph leaves that need no gradient.
///
/// Build it from a module of the autodiff backend with `AutodiffModule::valid`, e.g.
/// `FrozenCodec(codec.valid())` (a cheap copy of the parameter handles).
#[derive(Debug, Clone)]
pub struct FrozenCodec<C>(pub C);

impl<B, C> LatentCodec<B> for FrozenCodec<C>
where
    B: AutodiffBackend,
    C: LatentCodec<B::InnerBackend>,
{
    fn latent_channels(&self) -> usize {
        self.0.latent_channels()
    }

    fn downsample(&self) -> usize {
        self.0.downsample()
    }

    fn encode_posterior(&self, images: Tensor<B, 4>) -> Result<Posterior<B>, VisionError> {
        Ok(self
            .0
            .encode_posterior(images.inner())?
            .map(Tensor::from_inner))
    }

    fn latent_from(
        &self,
        posterior: Posterior<B>,
        sampling: LatentSampling,
        seed: u64,
    ) -> Tensor<B, 4> {
        let posterior = posterior.map(|t| t.inner());
        Tensor::from_inner(self.0.latent_from(posterior, sampling, seed))
    }

    fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        self.0.decode(latents.inner()).map(Tensor::from_inner)
    }
}
