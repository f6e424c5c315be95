//! BAGEL's configuration: the language model (`llm_config.json`), the ViT
//! (`vit_config.json`) and the generation / UNO settings.

use serde::{Deserialize, Serialize};

use super::BagelError;
use crate::mot::MotConfig;
use crate::objectives::UnoLossConfig;
use crate::packing::{PackingConfig, SpecialTokens};
use crate::vae::FluxAeConfig;
use crate::vision::SiglipVisionConfig;

/// Everything needed to build a [`super::Bagel`] and pack data for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BagelConfig {
    /// The MoT language model (`llm_config.json`; Qwen2.5-7B shaped for BAGEL-7B).
    pub llm: MotConfig,
    /// The SigLIP ViT (`vit_config.json`), with BAGEL's layer selection applied.
    pub vit: SiglipVisionConfig,
    /// Width of a latent token: `latent_channels * 2 * 2` (64 for FLUX's 16 channels).
    pub latent_token_dim: usize,
    /// Pixels per latent token side: the codec's downsampling times the 2x2 latent patch
    /// (16 for FLUX, 4 for [`crate::vae::PixelCodec`]).
    pub pixels_per_latent_token: usize,
    /// Side of the latent position table (release: 64).
    pub max_latent_size: usize,
    /// UNO metaqueries per supervised image (paper: 256).
    pub num_metaqueries: usize,
    /// Flow-matching timestep shift during training (UNO: 4.0).
    pub timestep_shift: f64,
    /// Ids of the text and image markers; each must be below `llm.vocab_size`.
    pub special_tokens: SpecialTokens,
    /// Loss weights (caption 0.1, visual 0.2).
    pub loss: UnoLossConfig,
    /// The codec the generation path works in.
    pub codec: CodecConfig,
}

/// The codec a model's latents come from; it fixes `latent_token_dim` and
/// `pixels_per_latent_token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecConfig {
    /// The identity [`crate::vae::PixelCodec`] of toy runs and tests: 4-px tokens of width
    /// 64, no weights.
    Pixel,
    /// The FLUX autoencoder of a release (weights in the folder's `ae.safetensors`).
    Flux(FluxAeConfig),
}

impl BagelConfig {
    /// BAGEL-7B-MoT with the FLUX VAE and the paper's UNO settings.
    pub fn bagel_7b() -> Self {
        Self {
            llm: MotConfig::bagel_7b(),
            vit: SiglipVisionConfig::so400m_bagel(),
            latent_token_dim: 64,
            pixels_per_latent_token: 16,
            max_latent_size: 64,
            num_metaqueries: 256,
            timestep_shift: 4.0,
            special_tokens: SpecialTokens::default(),
            loss: UnoLossConfig::new(),
            codec: CodecConfig::Flux(FluxAeConfig::flux()),
        }
    }

    /// A tiny BAGEL-shaped model that runs on a CPU in seconds: hidden 32, 2 layers, a
    /// 2-layer ViT with 4-pixel patches over up to 32x32 images, [`crate::vae::PixelCodec`]
    /// latents (64-d tokens of 4x4 pixels), 4 metaqueries. `vocab_size` and
    /// `special_tokens` come from the tokenizer (e.g. the synthetic set's).
    pub fn tiny(vocab_size: usize, special_tokens: SpecialTokens) -> Self {
        let mut llm = MotConfig::tiny();
        llm.vocab_size = vocab_size;
        let vit = SiglipVisionConfig {
            image_size: 32,
            patch_size: 4,
            ..SiglipVisionConfig::tiny()
        };
        Self {
            llm,
            vit,
            latent_token_dim: 64,
            pixels_per_latent_token: 4,
            max_latent_size: 16,
            num_metaqueries: 4,
            timestep_shift: 4.0,
            special_tokens,
            loss: UnoLossConfig::new(),
            codec: CodecConfig::Pixel,
        }
    }

    /// Check what the pieces cannot check alone.
    pub fn validate(&self) -> Result<(), BagelError> {
        self.llm.validate()?;
        self.vit.validate()?;
        let t = self.special_tokens;
        for (name, id) in [
            ("im_start", t.im_start),
            ("im_end", t.im_end),
            ("vision_start", t.vision_start),
            ("vision_end", t.vision_end),
        ] {
            if id as usize >= self.llm.vocab_size {
                return Err(BagelError::invalid(
                    name,
                    id,
                    format!("must be below llm.vocab_size {}", self.llm.vocab_size),
                ));
            }
        }
        if self.num_metaqueries == 0 || self.num_metaqueries.isqrt().pow(2) != self.num_metaqueries
        {
            return Err(BagelError::invalid(
                "num_metaqueries",
                self.num_metaqueries,
                "must be a positive perfect square (they regress a sqrt(N) x sqrt(N) feature grid)",
            ));
        }
        if self.latent_token_dim == 0 || self.pixels_per_latent_token == 0 {
            return Err(BagelError::invalid(
                "latent_token_dim, pixels_per_latent_token",
                format!(
                    "{}, {}",
                    self.latent_token_dim, self.pixels_per_latent_token
                ),
                "must be positive",
            ));
        }
        if let CodecConfig::Flux(ae) = &self.codec {
            ae.validate()?;
            let (px, dim) = (2 * ae.downsample(), 4 * ae.z_channels);
            if (px, dim) != (self.pixels_per_latent_token, self.latent_token_dim) {
                return Err(BagelError::invalid(
                    "pixels_per_latent_token, latent_token_dim",
                    format!(
                        "{}, {}",
                        self.pixels_per_latent_token, self.latent_token_dim
                    ),
                    format!(
                        "the FLUX autoencoder (downsample {}, z {}) makes {px}-px tokens of width {dim}",
                        ae.downsample(),
                        ae.z_channels,
                    ),
                ));
            }
        } else if (self.pixels_per_latent_token, self.latent_token_dim) != (4, 64) {
            return Err(BagelError::invalid(
                "pixels_per_latent_token, latent_token_dim",
                format!(
                    "{}, {}",
                    self.pixels_per_latent_token, self.latent_token_dim
                ),
                "without a FLUX autoencoder the codec is the PixelCodec (4-px tokens of width 64)",
            ));
        }
        if !(self.timestep_shift.is_finite() && self.timestep_shift > 0.0) {
            return Err(BagelError::invalid(
                "timestep_shift",
                self.timestep_shift,
                "must be finite and positive",
            ));
        }
        Ok(())
    }

    /// The packing configuration that matches this model's grids, vocabulary and
    /// metaqueries.
    pub fn packing(&self) -> PackingConfig {
        PackingConfig {
            special_tokens: self.special_tokens,
            vocab_size: self.llm.vocab_size as u32,
            vit_patch_size: self.vit.patch_size,
            vit_max_patches_per_side: self.vit.max_patches_per_side(),
            vae_downsample: self.pixels_per_latent_token,
            max_latent_size: self.max_latent_size,
            num_metaqueries: self.num_metaqueries,
            ..PackingConfig::default()
        }
    }
}
