//! The codec a model was built for, as one type the trainer and the sampler can hold.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::{FluxAutoEncoder, LatentCodec, LatentSampling, PixelCodec, Posterior, VisionError};

/// The FLUX autoencoder of a BAGEL release, or the identity [`PixelCodec`] of the toy runs
/// and tests ([`crate::bagel::BagelConfig::codec`] says which).
///
/// A module so that it moves to a device and can be frozen with the model it serves; it is
/// never trained (the trainee freezes it), and its weights live in `ae.safetensors`, apart
/// from the model's.
// One codec is held per model, never in collections, so the size of the FLUX variant costs
// nothing; Burn's Module derive does not take a boxed module.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Codec<B: Backend> {
    /// The identity [`PixelCodec`] (no weights).
    Pixel(PixelCodec),
    /// The FLUX autoencoder.
    Flux(FluxAutoEncoder<B>),
}

impl<B: Backend> Codec<B> {
    /// The identity [`PixelCodec`] (no weights).
    pub fn pixel() -> Self {
        Self::Pixel(PixelCodec)
    }

    /// The FLUX autoencoder `ae`.
    pub fn flux(ae: FluxAutoEncoder<B>) -> Self {
        Self::Flux(ae)
    }

    /// The codec as the trait the forward and the sampler use.
    fn inner(&self) -> &dyn LatentCodec<B> {
        match self {
            Self::Pixel(pixel) => pixel,
            Self::Flux(ae) => ae,
        }
    }
}

impl<B: Backend> LatentCodec<B> for Codec<B> {
    fn latent_channels(&self) -> usize {
        self.inner().latent_channels()
    }

    fn downsample(&self) -> usize {
        self.inner().downsample()
    }

    fn encode_posterior(&self, images: Tensor<B, 4>) -> Result<Posterior<B>, VisionError> {
        self.inner().encode_posterior(images)
    }

    fn latent_from(
        &self,
        posterior: Posterior<B>,
        sampling: LatentSampling,
        seed: u64,
    ) -> Tensor<B, 4> {
        self.inner().latent_from(posterior, sampling, seed)
    }

    fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        self.inner().decode(latents)
    }
}
