//! Image <-> latent codecs for the generation path.
//!
//! * [`LatentCodec`]: the trait the model uses: images in `[0, 1]` to latents and back, and
//!   BAGEL's 2x2 latent tokens (`(py, px, c)`, 64-d for 16 latent channels);
//! * [`FluxAutoEncoder`]: the FLUX autoencoder (`ae.safetensors` names), scale 0.3611,
//!   shift 0.1159;
//! * [`LatentCache`] and [`CachedCodec`]: encoder posteriors kept per image, so repeated
//!   epochs skip the encoder;
//! * [`FrozenCodec`]: a codec of an autodiff backend run without autodiff (training);
//! * [`GroupNorm`]: FLUX's GroupNorm with statistics that stay accurate over large groups;
//! * [`LatentSampling`]: the posterior mean or a seeded draw from it (BAGEL's training);
//! * [`Posterior`]: what an encoder says about an image before a latent is chosen;
//! * [`PixelCodec`]: an identity "VAE" on small RGB images for tests and toy runs;
//! * [`patchify_latent`] / [`unpatchify_latent`]: the 2x2 latent tokens.

mod cache;
mod codec;
mod flux;
mod frozen;
mod norm;
mod pixel;
mod posterior;
mod sampling;

pub use codec::Codec;

pub use cache::{CachedCodec, LatentCache, LatentCacheStats};
pub use flux::{
    AttnBlock, DownLevel, Downsample, FluxAeConfig, FluxAutoEncoder, FluxDecoder, FluxEncoder,
    FluxMid, ResnetBlock, UpLevel, Upsample,
};
pub use frozen::FrozenCodec;
pub use norm::{GroupNorm, GroupNormConfig};
pub use pixel::PixelCodec;
pub use posterior::Posterior;
pub use sampling::LatentSampling;

use burn::tensor::{Tensor, backend::Backend};

pub use crate::patch::VisionError;
use crate::patch::{PixelLayout, patchify, unpatchify};

/// Latent cells per token side (BAGEL's `latent_patch_size`).
pub const LATENT_PATCH: usize = 2;

/// Latent `[z, h, w]` to tokens `[(h/2) * (w/2), 4 * z]`, each token a 2x2 block of cells
/// in `(py, px, c)` order (element `(py * 2 + px) * z + c`), raster order of blocks. This is
/// BAGEL's `einsum("chpwq->hwpqc")` on the latent; returns the token grid `[h/2, w/2]`.
///
/// # Errors
/// [`VisionError::NotDivisible`] when `h` or `w` is odd (BAGEL crops; we refuse).
pub fn patchify_latent<B: Backend>(
    latent: Tensor<B, 3>,
) -> Result<(Tensor<B, 2>, [usize; 2]), VisionError> {
    let [_, h, w] = latent.dims();
    VisionError::check_divisible("latent patchify", h, w, LATENT_PATCH)?;
    patchify(latent, LATENT_PATCH, PixelLayout::Chw)
}

/// Inverse of [`patchify_latent`]: tokens `[rows * cols, 4 * z]` to a latent
/// `[z, 2 * rows, 2 * cols]`.
///
/// # Errors
/// [`VisionError::ShapeMismatch`] when the token count or width does not fit the grid.
pub fn unpatchify_latent<B: Backend>(
    tokens: Tensor<B, 2>,
    grid: [usize; 2],
) -> Result<Tensor<B, 3>, VisionError> {
    unpatchify(tokens, grid, LATENT_PATCH, PixelLayout::Chw)
}

/// A codec by reference (e.g. the model's own codec, wrapped in a [`CachedCodec`]).
impl<B: Backend, C: LatentCodec<B> + ?Sized> LatentCodec<B> for &C {
    fn latent_channels(&self) -> usize {
        (**self).latent_channels()
    }

    fn downsample(&self) -> usize {
        (**self).downsample()
    }

    fn encode_posterior(&self, images: Tensor<B, 4>) -> Result<Posterior<B>, VisionError> {
        (**self).encode_posterior(images)
    }

    fn latent_from(
        &self,
        posterior: Posterior<B>,
        sampling: LatentSampling,
        seed: u64,
    ) -> Tensor<B, 4> {
        (**self).latent_from(posterior, sampling, seed)
    }

    fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        (**self).decode(latents)
    }
}

/// An image codec the generation path can work in.
///
/// **Ranges**: images are RGB floats in `[0, 1]` on both sides ([`Self::encode`] takes them,
/// [`Self::decode`] returns them, clamped). BAGEL's data pipeline normalises images to
/// `[-1, 1]`; map with `(x + 1) / 2` before calling [`Self::encode`] (a FLUX codec maps back
/// to `[-1, 1]` itself).
pub trait LatentCodec<B: Backend> {
    /// Channels of the latent (16 for FLUX).
    fn latent_channels(&self) -> usize;

    /// Pixels per latent cell along each side (8 for FLUX).
    fn downsample(&self) -> usize;

    /// Images `[N, 3, H, W]` in `[0, 1]` to what the encoder says about them before a latent
    /// is chosen: the part of an encode that depends on the images alone, and so the part
    /// a [`LatentCache`] keeps. [`Self::latent_from`] finishes the encode.
    ///
    /// # Errors
    /// [`VisionError::ShapeMismatch`] for a wrong channel count,
    /// [`VisionError::NotDivisible`] for sides not multiples of `f` (= [`Self::downsample`]).
    fn encode_posterior(&self, images: Tensor<B, 4>) -> Result<Posterior<B>, VisionError>;

    /// The latent `[N, z, h, w]` that `sampling` takes from `posterior`, in the space the
    /// model sees (for FLUX scaled and shifted): the mean, or a draw with host noise from
    /// `seed` ([`LatentSampling`]). This default suits a codec in its latent space already:
    /// the mean, or [`LatentSampling::latent`] where the posterior has a variance.
    fn latent_from(
        &self,
        posterior: Posterior<B>,
        sampling: LatentSampling,
        seed: u64,
    ) -> Tensor<B, 4> {
        posterior.latent(sampling, seed)
    }

    /// Images `[N, 3, H, W]` in `[0, 1]` to latents `[N, z, H / f, W / f]` (`f` =
    /// [`Self::downsample`]), in the space the model sees: the posterior mean.
    ///
    /// # Errors
    /// Those of [`Self::encode_posterior`].
    fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        self.encode_with(images, LatentSampling::Mean, 0)
    }

    /// [`Self::encode`] with the latent chosen by `sampling` from the encoder's posterior:
    /// its mean (what [`Self::encode`] returns) or a draw with host noise from `seed`
    /// ([`LatentSampling`]). A codec without a posterior variance (the [`PixelCodec`]) is
    /// deterministic and ignores both.
    ///
    /// # Errors
    /// Those of [`Self::encode_posterior`].
    fn encode_with(
        &self,
        images: Tensor<B, 4>,
        sampling: LatentSampling,
        seed: u64,
    ) -> Result<Tensor<B, 4>, VisionError> {
        Ok(self.latent_from(self.encode_posterior(images)?, sampling, seed))
    }

    /// Latents `[N, z, h, w]` back to images `[N, 3, h * f, w * f]` clamped to `[0, 1]`.
    ///
    /// # Errors
    /// [`VisionError::ShapeMismatch`] for a wrong channel count.
    fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError>;

    /// Width of a latent token: `4 * z` (64 for `z = 16`).
    fn token_dim(&self) -> usize {
        LATENT_PATCH * LATENT_PATCH * self.latent_channels()
    }

    /// Pixels per token side: `2 * f` (16 for FLUX).
    fn pixels_per_token(&self) -> usize {
        LATENT_PATCH * self.downsample()
    }

    /// One image `[3, H, W]` in `[0, 1]` to latent tokens `[(H/2f) * (W/2f), 4z]` and the
    /// token grid, via [`Self::encode`] (the posterior mean) and [`patchify_latent`].
    ///
    /// # Errors
    /// [`VisionError::NotDivisible`] when `H` or `W` is not a multiple of `2f`, plus those
    /// of [`Self::encode`].
    fn encode_tokens(
        &self,
        image: Tensor<B, 3>,
    ) -> Result<(Tensor<B, 2>, [usize; 2]), VisionError> {
        self.encode_tokens_with(image, LatentSampling::Mean, 0)
    }

    /// [`Self::encode_tokens`] with the latent chosen as [`Self::encode_with`] does.
    ///
    /// # Errors
    /// Those of [`Self::encode_tokens`].
    fn encode_tokens_with(
        &self,
        image: Tensor<B, 3>,
        sampling: LatentSampling,
        seed: u64,
    ) -> Result<(Tensor<B, 2>, [usize; 2]), VisionError> {
        let [c, h, w] = image.dims();
        let p = self.pixels_per_token();
        VisionError::check_divisible("encode_tokens", h, w, p)?;
        let latent = self.encode_with(image.reshape([1, c, h, w]), sampling, seed)?;
        let [_, z, lh, lw] = latent.dims();
        patchify_latent(latent.reshape([z, lh, lw]))
    }

    /// Tokens `[rows * cols, 4z]` of one image back to the image `[3, 2f * rows, 2f * cols]`
    /// in `[0, 1]`, via [`unpatchify_latent`] and [`Self::decode`].
    ///
    /// # Errors
    /// [`VisionError::ShapeMismatch`] when the tokens do not fit the grid or `4z`.
    fn decode_tokens(
        &self,
        tokens: Tensor<B, 2>,
        grid: [usize; 2],
    ) -> Result<Tensor<B, 3>, VisionError> {
        let [_, d] = tokens.dims();
        if d != self.token_dim() {
            return Err(VisionError::shape(
                "latent token width (4 * z)",
                self.token_dim(),
                d,
            ));
        }
        let latent = unpatchify_latent(tokens, grid)?;
        let [z, lh, lw] = latent.dims();
        let image = self.decode(latent.reshape([1, z, lh, lw]))?;
        let [_, c, h, w] = image.dims();
        Ok(image.reshape([c, h, w]))
    }
}
