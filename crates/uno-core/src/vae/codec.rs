//! The codec a model was built for, as one type the trainer and the sampler can hold.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::{FluxAutoEncoder, LatentCodec, LatentSampling, PixelCodec, VisionError};

/// The FLUX autoencoder of a BAGEL release, or the identity [`PixelCodec`] of the toy runs
/// and tests ([`crate::bagel::BagelConfig::codec`] says which).
///
/// A module so that it moves to a device and can be frozen with the model it serves; it is
/// never trained (the trainee freezes it), and its weights live in `ae.safetensors`, apart
/// from the model's.
#[derive(Module, Debug)]
pub struct Codec<B: Backend> {
    /// `None`: the [`PixelCodec`].
    pub flux: Option<FluxAutoEncoder<B>>,
}

impl<B: Backend> Codec<B> {
    /// The identity [`PixelCodec`] (no weights).
    pub fn pixel() -> Self {
        Self { flux: None }
    }

    /// The FLUX autoencoder `ae`.
    pub fn flux(ae: FluxAutoEncoder<B>) -> Self {
        Self { flux: Some(ae) }
    }
}

impl<B: Backend> LatentCodec<B> for Codec<B> {
    fn latent_channels(&self) -> usize {
        match &self.flux {
            Some(ae) => ae.latent_channels(),
            None => LatentCodec::<B>::latent_channels(&PixelCodec),
        }
    }

    fn downsample(&self) -> usize {
        match &self.flux {
            Some(ae) => LatentCodec::<B>::downsample(ae),
            None => LatentCodec::<B>::downsample(&PixelCodec),
        }
    }

    fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        match &self.flux {
            Some(ae) => ae.encode(images),
            None => PixelCodec.encode(images),
        }
    }

    fn encode_with(
        &self,
        images: Tensor<B, 4>,
        sampling: LatentSampling,
        seed: u64,
    ) -> Result<Tensor<B, 4>, VisionError> {
        match &self.flux {
            Some(ae) => ae.encode_with(images, sampling, seed),
            None => PixelCodec.encode_with(images, sampling, seed),
        }
    }

    fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        match &self.flux {
            Some(ae) => ae.decode(latents),
            None => PixelCodec.decode(latents),
        }
    }
}
