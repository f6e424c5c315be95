//! BAGEL's image transform (`data/transforms.py`, `MaxLongEdgeMinShortEdgeResize` and
//! `ImageTransform`): keep the aspect ratio, never crop, bring the long side down to `max`
//! and the short side up to `min`, round both to the model's stride, resample bicubic with
//! antialiasing.
//!
//! # The rule, step by step (BAGEL's, in f64 like Python's floats)
//!
//! 1. `scale = min(max / long_side, 1)`, then `scale = max(scale, min / short_side)` (so the
//!    short side wins when the two disagree).
//! 2. Each side becomes `round(side * scale)`, then the nearest multiple of `stride`, at
//!    least one stride. `round` is Python's: ties go to the even integer (`388.5 -> 388`).
//! 3. If the result has more than `max_pixels` pixels, step 2 is applied again to the
//!    result with `scale = max_pixels / pixels`. This is BAGEL's formula as written: an
//!    area ratio used as a side scale, so it shrinks more than the cap needs (a 1024x768
//!    image under a 512x512 cap becomes 336x256, not about 592x448). uno-rs keeps it, since
//!    the released model was trained with it.
//! 4. If the long side still exceeds `max` (the short-side minimum can push it there), step
//!    2 is applied again with `scale = max / long_side`.
//!
//! # Resampling
//!
//! BAGEL resizes PIL images with torchvision's `F.resize(..., BICUBIC, antialias=True)`,
//! i.e. PIL's bicubic (Keys' cubic with `a = -0.5`, which is the Catmull-Rom spline) whose
//! support is widened by the scale factor when downscaling (antialiasing). The `image`
//! crate's `resize` with [`FilterType::CatmullRom`] is that same filter with the same
//! widening (`imageops::sample`: `support * max(ratio, 1)`), so it is used as is, on `f32`
//! pixels (no 8-bit rounding between resize and normalisation).
//!
//! # Range
//!
//! The output stays in `[0, 1]` ([`RgbImage`]'s range). BAGEL's normalisation (mean 0.5,
//! std 0.5, i.e. `2x - 1` into `[-1, 1]`) is applied where the pixels enter the model: the
//! ViT input and the codecs. Doing it there keeps one pixel convention on the host.

use ::image::{ImageBuffer, Rgb, imageops::FilterType};
use serde::{Deserialize, Serialize};

use crate::{DataError, RgbImage};

/// BAGEL's default pixel cap (`ImageTransform(max_pixels=14*14*9*1024)`).
pub const BAGEL_MAX_PIXELS: usize = 14 * 14 * 9 * 1024;

/// One side of BAGEL's image transform: the size range, the stride both sides are rounded
/// to, and the pixel cap. Every field is required in TOML (no side is a sensible default
/// for the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTransformConfig {
    /// Smallest short side in pixels (before stride rounding); the long side's cap wins
    /// only when this would push it past `max` (step 4 of the rule).
    pub min: usize,
    /// Largest long side in pixels.
    pub max: usize,
    /// Both sides become multiples of this: the VAE token size (16 = 8x downsampling x 2x2
    /// latent patch) or the ViT patch (14).
    pub stride: usize,
    /// Pixel cap (BAGEL's `max_pixels`, default [`BAGEL_MAX_PIXELS`]).
    pub max_pixels: usize,
}

impl ImageTransformConfig {
    /// BAGEL's generation side (`t2i_pretrain` and `unified_edit` `image_transform_args`,
    /// the paper's `(512, 1024)`): min 512, max 1024, stride 16.
    pub fn bagel_vae() -> Self {
        Self {
            min: 512,
            max: 1024,
            stride: 16,
            max_pixels: BAGEL_MAX_PIXELS,
        }
    }

    /// BAGEL's ViT side of editing data (`unified_edit` `vit_image_transform_args`): min 224,
    /// max 518, stride 14 (at most 37 patches a side).
    pub fn bagel_vit() -> Self {
        Self {
            min: 224,
            max: 518,
            stride: 14,
            max_pixels: BAGEL_MAX_PIXELS,
        }
    }

    /// BAGEL's understanding data (`vlm_sft`): min 378, max 980, stride 14, at most
    /// 2,007,040 pixels (never more than 70 patches a side).
    pub fn bagel_understanding() -> Self {
        Self {
            min: 378,
            max: 980,
            stride: 14,
            max_pixels: 2_007_040,
        }
    }

    /// A transform that maps a `side x side` image to itself (`min = max = side`), for the
    /// square synthetic data; `side` must be a multiple of `stride`.
    pub fn fixed(side: usize, stride: usize) -> Self {
        Self {
            min: side,
            max: side,
            stride,
            max_pixels: side.saturating_mul(side).max(BAGEL_MAX_PIXELS),
        }
    }

    /// Check the values: positive stride and sizes, `min <= max`, a pixel cap of at least
    /// one stride squared. `name` (the config key, e.g. `data.vae_image`) is put in the error.
    pub fn validate(&self, name: &str) -> Result<(), DataError> {
        let bad = |reason: String| {
            Err(DataError::Transform {
                name: name.to_string(),
                reason: format!("{reason}, got {self:?}"),
            })
        };
        if self.stride == 0 || self.min == 0 || self.max == 0 {
            return bad("stride, min and max must be positive".into());
        }
        if self.min > self.max {
            return bad("min must not exceed max".into());
        }
        if self.max_pixels < self.stride * self.stride {
            return bad(format!(
                "max_pixels must be at least stride^2 = {}",
                self.stride * self.stride
            ));
        }
        Ok(())
    }

    /// The `(height, width)` BAGEL's rule gives an image of `height x width` pixels (see the
    /// module doc). Both are positive multiples of `stride`.
    ///
    /// # Errors
    /// [`DataError::Transform`] for an empty image (a zero side) or an invalid config.
    pub fn target_size(&self, height: usize, width: usize) -> Result<(usize, usize), DataError> {
        self.validate("image transform")?;
        if height == 0 || width == 0 {
            return Err(DataError::Transform {
                name: "image".into(),
                reason: format!("cannot resize an empty image of {height}x{width} pixels"),
            });
        }
        let (w, h) = (width as f64, height as f64);
        let mut scale = (self.max as f64 / w.max(h)).min(1.0);
        scale = scale.max(self.min as f64 / w.min(h));
        let (mut w, mut h) = self.apply_scale(w, h, scale);
        let pixels = w * h;
        if pixels > self.max_pixels as f64 {
            (w, h) = self.apply_scale(w, h, self.max_pixels as f64 / pixels);
        }
        let long = w.max(h);
        if long > self.max as f64 {
            (w, h) = self.apply_scale(w, h, self.max as f64 / long);
        }
        Ok((h as usize, w as usize))
    }

    /// BAGEL's `_apply_scale`: round each scaled side, then to the nearest stride multiple
    /// (at least one stride). Works on whole numbers held in f64.
    fn apply_scale(&self, w: f64, h: f64, scale: f64) -> (f64, f64) {
        let stride = self.stride as f64;
        let divisible = |v: f64| ((v / stride).round_ties_even() * stride).max(stride);
        (
            divisible((w * scale).round_ties_even()),
            divisible((h * scale).round_ties_even()),
        )
    }

    /// Resize `image` to [`Self::target_size`] with antialiased bicubic resampling (see the
    /// module doc). An image already at its target size is returned unchanged.
    pub fn apply(&self, image: &RgbImage) -> Result<RgbImage, DataError> {
        let (height, width) = self.target_size(image.height, image.width)?;
        Ok(resize_bicubic(image, height, width))
    }
}

/// Antialiased bicubic (Catmull-Rom) resize of `image` to `height x width`, on `f32` pixels;
/// results are clamped to `[0, 1]` like PIL's.
pub fn resize_bicubic(image: &RgbImage, height: usize, width: usize) -> RgbImage {
    if (image.height, image.width) == (height, width) {
        return image.clone();
    }
    let (h, w) = (image.height, image.width);
    let buffer: ImageBuffer<Rgb<f32>, Vec<f32>> =
        ImageBuffer::from_fn(w as u32, h as u32, |col, row| {
            let (row, col) = (row as usize, col as usize);
            Rgb([0, 1, 2].map(|c| image.get(c, row, col)))
        });
    let resized =
        ::image::imageops::resize(&buffer, width as u32, height as u32, FilterType::CatmullRom);
    let mut out = RgbImage::filled(height, width, [0.0; 3]);
    for (col, row, pixel) in resized.enumerate_pixels() {
        out.set_pixel(row as usize, col as usize, pixel.0);
    }
    out
}

/// An image as the model sees it: the generation side (VAE, noised or clean latents) and
/// the understanding side (ViT), each transformed by its own [`ImageTransformConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePair {
    /// The VAE-side copy (a multiple of the VAE token size per side).
    pub vae: RgbImage,
    /// The ViT-side copy (a multiple of the ViT patch per side).
    pub vit: RgbImage,
}

/// The two transforms every image goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTransforms {
    /// The generation side (BAGEL: [`ImageTransformConfig::bagel_vae`]).
    pub vae: ImageTransformConfig,
    /// The understanding side (BAGEL's edit data: [`ImageTransformConfig::bagel_vit`]).
    pub vit: ImageTransformConfig,
}

impl ImageTransforms {
    /// BAGEL's editing transforms: VAE 512..1024 / 16, ViT 224..518 / 14.
    pub fn bagel() -> Self {
        Self {
            vae: ImageTransformConfig::bagel_vae(),
            vit: ImageTransformConfig::bagel_vit(),
        }
    }

    /// Both copies of `image`.
    pub fn apply(&self, image: &RgbImage) -> Result<ImagePair, DataError> {
        Ok(ImagePair {
            vae: self.vae.apply(image)?,
            vit: self.vit.apply(image)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(height, width)` of a `width x height` image (the order image sizes are quoted in).
    fn size(config: ImageTransformConfig, width: usize, height: usize) -> (usize, usize) {
        config.target_size(height, width).unwrap()
    }

    #[test]
    fn vae_side_keeps_paper_sizes_and_clamps_long_and_short_sides() {
        let vae = ImageTransformConfig::bagel_vae();
        // scale = max(min(1024/1024, 1), 512/768) = 1: unchanged.
        assert_eq!(size(vae, 1024, 768), (768, 1024));
        // scale = max(1024/1280, 512/640) = 0.8: 512 x 1024.
        assert_eq!(size(vae, 640, 1280), (1024, 512));
        // scale = max(min(2, 1), 1) = 1.
        assert_eq!(size(vae, 512, 512), (512, 512));
        // Upscaled to the minimum: 256 * 2 = 512.
        assert_eq!(size(vae, 256, 256), (512, 512));
        // Downscaled: 2048 * 0.5 = 1024, 1536 * 0.5 = 768.
        assert_eq!(size(vae, 2048, 1536), (768, 1024));
        // Not a multiple: 1000 * 1 = 1000 -> 1000/16 = 62.5 -> 62 (ties to even) -> 992;
        // 700 -> 43.75 -> 44 -> 704.
        assert_eq!(size(vae, 1000, 700), (704, 992));
    }

    #[test]
    fn extreme_aspect_ratios_let_the_long_side_win() {
        let vae = ImageTransformConfig::bagel_vae();
        // 4000x1000: scale = max(0.256, 0.512) = 0.512 -> 2048 x 512 (1,048,576 pixels, under
        // the cap); long side 2048 > 1024 -> scale 0.5 -> 1024 x 256.
        assert_eq!(size(vae, 4000, 1000), (256, 1024));
        // 1000x1: scale = max(1, 512) = 512 -> 512000 x 512, over the cap: scale =
        // 1806336 / 262144000 -> 3528 -> 3520 (220.5 ties to 220), 3.528 -> 4 -> 16 (one
        // stride at least); long side 3520 > 1024 -> 1024 x (4.65 -> 5 -> 16).
        assert_eq!(size(vae, 1000, 1), (16, 1024));
        // The tall twin.
        assert_eq!(size(vae, 1, 1000), (1024, 16));
    }

    #[test]
    fn tiny_images_are_upscaled_to_the_minimum() {
        let vae = ImageTransformConfig::bagel_vae();
        // 10x7: scale = 512/7 -> 731.43 -> 731 -> 45.69 -> 46 -> 736; 512.
        assert_eq!(size(vae, 10, 7), (512, 736));
        // 1x1 -> 512 x 512.
        assert_eq!(size(vae, 1, 1), (512, 512));
        let vit = ImageTransformConfig::bagel_vit();
        // 1x1 -> 224 -> 224/14 = 16 -> 224.
        assert_eq!(size(vit, 1, 1), (224, 224));
    }

    #[test]
    fn vit_side_rounds_to_the_patch_with_python_ties() {
        let vit = ImageTransformConfig::bagel_vit();
        // 1024x768: scale = 518/1024 = 0.505859375; 768 * scale = 388.5 -> 388 (tie to
        // even) -> 27.71 -> 28 patches = 392; 518 = 37 patches.
        assert_eq!(size(vit, 1024, 768), (392, 518));
        // 640x1280: scale = 518/1280; 640 * scale = 259 -> 18.5 -> 18 patches = 252.
        assert_eq!(size(vit, 640, 1280), (518, 252));
        // 512x512: scale 1 (no upscale past the image: min(518/512, 1)); 512/14 = 36.57 -> 37.
        assert_eq!(size(vit, 512, 512), (518, 518));
        let und = ImageTransformConfig::bagel_understanding();
        // 3000x3000: scale = 980/3000 -> 980 = 70 patches, 960,400 pixels under the cap.
        assert_eq!(size(und, 3000, 3000), (980, 980));
    }

    #[test]
    fn max_pixels_uses_bagels_area_ratio_as_a_side_scale() {
        let capped = ImageTransformConfig {
            max_pixels: 512 * 512,
            ..ImageTransformConfig::bagel_vae()
        };
        // 1024x768 = 786,432 pixels > 262,144: scale = 1/3 -> 341.33 -> 341 -> 21.31 -> 21
        // -> 336; 256 -> 256.
        assert_eq!(size(capped, 1024, 768), (256, 336));
        // Under the cap nothing changes.
        assert_eq!(size(capped, 512, 512), (512, 512));
    }

    #[test]
    fn bad_configs_and_empty_images_are_refused() {
        let vae = ImageTransformConfig::bagel_vae();
        assert!(vae.target_size(0, 5).is_err());
        for bad in [
            ImageTransformConfig { stride: 0, ..vae },
            ImageTransformConfig { min: 2000, ..vae },
            ImageTransformConfig {
                max_pixels: 10,
                ..vae
            },
        ] {
            let err = bad.validate("data.vae_image").unwrap_err().to_string();
            assert!(err.contains("data.vae_image"), "{err}");
        }
    }

    #[test]
    fn bicubic_keeps_constants_and_identity() {
        let flat = RgbImage::filled(30, 50, [0.25, 0.5, 0.75]);
        let small = resize_bicubic(&flat, 7, 11);
        assert_eq!((small.height, small.width), (7, 11));
        for c in 0..3 {
            for (r, col) in [(0, 0), (3, 5), (6, 10)] {
                let want = [0.25, 0.5, 0.75][c];
                assert!((small.get(c, r, col) - want).abs() < 1e-5);
            }
        }
        assert_eq!(resize_bicubic(&flat, 30, 50), flat);
    }

    #[test]
    fn downscaling_is_antialiased() {
        // One-pixel black/white columns. Point-sampling a 4x reduction would pick one
        // column phase (all 0 or all 1); an antialiased filter averages to about 0.5.
        let mut stripes = RgbImage::filled(8, 64, [0.0; 3]);
        for row in 0..8 {
            for col in (0..64).step_by(2) {
                stripes.set_pixel(row, col, [1.0; 3]);
            }
        }
        let small = resize_bicubic(&stripes, 2, 16);
        for col in 2..14 {
            let v = small.get(0, 1, col);
            assert!((v - 0.5).abs() < 0.05, "column {col}: {v}");
        }
    }

    #[test]
    fn upscaling_interpolates_with_catmull_rom() {
        // A 1-D step 0,0,1,1 upscaled 2x: output pixel centres fall at input x = 0.75, 1.25,
        // ... ; at x = 1.25 (output 3) the Catmull-Rom weights of inputs 0..3 at distances
        // 1.25, 0.25, 0.75, 1.75 are -0.0703125, 0.8671875, 0.2265625, -0.0234375, so the
        // value is 0.2265625 - 0.0234375 = 0.203125 (weights sum to 1).
        let mut step = RgbImage::filled(1, 4, [0.0; 3]);
        step.set_pixel(0, 2, [1.0; 3]);
        step.set_pixel(0, 3, [1.0; 3]);
        let up = resize_bicubic(&step, 1, 8);
        assert!(
            (up.get(0, 0, 3) - 0.203125).abs() < 1e-5,
            "{}",
            up.get(0, 0, 3)
        );
        assert!((up.get(0, 0, 4) - (1.0 - 0.203125)).abs() < 1e-5);
    }
}
