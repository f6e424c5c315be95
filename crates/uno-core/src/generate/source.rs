//! An edit's source image, in the two copies that training feeds the model.

use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::GenerateError;
use crate::data::{ImageTransforms, RgbImage};

/// The source image of an edit as BAGEL sees it: one copy for the codec (its clean latents)
/// and one for the ViT (its understanding tokens), each `[3, H, W]` in `[0, 1]`.
///
/// Why two: the copies sit on different grids (BAGEL: 512..1024 px in multiples of the
/// 16-px latent token, 224..518 px in multiples of the 14-px ViT patch), exactly as the
/// training data path makes them ([`ImageTransforms`]); a single tensor fits both only when
/// the two grids share a size, as in the tiny model.
#[derive(Debug, Clone)]
pub struct EditSource<B: Backend> {
    /// The codec's copy: each side a multiple of the codec's pixels per latent token.
    pub vae: Tensor<B, 3>,
    /// The ViT's copy: each side a multiple of the ViT patch.
    pub vit: Tensor<B, 3>,
}

impl<B: Backend> EditSource<B> {
    /// Both copies of `image` through `transforms` (use the run's `[data] vae_image` and
    /// `vit_image`, BAGEL's [`ImageTransforms::bagel`] for a release).
    pub fn from_image(
        image: &RgbImage,
        transforms: &ImageTransforms,
        device: &B::Device,
    ) -> Result<Self, GenerateError> {
        let pair = transforms.apply(image)?;
        let upload = |image: RgbImage| {
            Tensor::from_data(
                TensorData::new(image.data, [3, image.height, image.width]),
                device,
            )
        };
        Ok(Self {
            vae: upload(pair.vae),
            vit: upload(pair.vit),
        })
    }

    /// One tensor as both copies: for models whose latent and ViT grids agree on its size.
    pub fn same(image: Tensor<B, 3>) -> Self {
        Self {
            vae: image.clone(),
            vit: image,
        }
    }
}
