//! An identity "VAE" on pixels, for tests and toy runs.

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::{LatentCodec, Posterior, VisionError};

/// The identity codec: no weights, exact round trip.
///
/// **Mapping.** An RGB image `[N, 3, H, W]` (`H`, `W` multiples of 2, or of 4 for tokens)
/// becomes a latent `[N, 16, H/2, W/2]` by space-to-depth: latent channel
/// `(dy * 2 + dx) * 3 + c` at cell `(y, x)` is pixel `(2y + dy, 2x + dx)` of channel `c`,
/// values unchanged (in `[0, 1]`); channels 12..16 are zero. Decoding reads channels 0..12
/// back (ignoring 12..16) and clamps to `[0, 1]`. With the 2x2 latent tokens of
/// [`LatentCodec::encode_tokens`], one 64-d token is a 4x4 pixel block, so an image is
/// 4 times its token grid per side.
#[derive(Module, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PixelCodec;

/// Pixels per latent cell side.
const F: usize = 2;
/// Latent channels (FLUX's, so the tokens are 64-d like BAGEL's).
const Z: usize = 16;
/// Channels carrying pixels: `3 * F * F`.
const USED: usize = 3 * F * F;

impl<B: Backend> LatentCodec<B> for PixelCodec {
    fn latent_channels(&self) -> usize {
        Z
    }

    fn downsample(&self) -> usize {
        F
    }

    fn encode_posterior(&self, images: Tensor<B, 4>) -> Result<Posterior<B>, VisionError> {
        let [n, c, h, w] = images.dims();
        if c != 3 {
            return Err(VisionError::shape("PixelCodec image channels", 3, c));
        }
        VisionError::check_divisible("PixelCodec encode", h, w, F)?;
        let (lh, lw) = (h / F, w / F);
        // [n, c, y, dy, x, dx] -> [n, dy, dx, c, y, x]
        let used = images
            .reshape([n, c, lh, F, lw, F])
            .permute([0, 3, 5, 1, 2, 4])
            .reshape([n, USED, lh, lw]);
        let pad = Tensor::zeros([n, Z - USED, lh, lw], &used.device());
        Ok(Posterior::point(Tensor::cat(vec![used, pad], 1)))
    }

    fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        let [n, z, lh, lw] = latents.dims();
        if z != Z {
            return Err(VisionError::shape("PixelCodec latent channels", Z, z));
        }
        // [n, dy, dx, c, y, x] -> [n, c, y, dy, x, dx]
        Ok(latents
            .narrow(1, 0, USED)
            .reshape([n, F, F, 3, lh, lw])
            .permute([0, 3, 4, 1, 5, 2])
            .reshape([n, 3, lh * F, lw * F])
            .clamp(0.0, 1.0))
    }
}
