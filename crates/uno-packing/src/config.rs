//! Packing configuration: special tokens, image grids and UNO's supervision layout.
//! Defaults are BAGEL-7B-MoT's release values and the paper's UNO settings.

use serde::{Deserialize, Serialize};

use crate::error::PackError;

/// Qwen2.5 special token ids that frame text and images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    /// `<|im_start|>`: opens every text split (BAGEL's "bos").
    pub im_start: u32,
    /// `<|im_end|>`: closes every text split (BAGEL's "eos").
    pub im_end: u32,
    /// `<|vision_start|>`: opens every image split.
    pub vision_start: u32,
    /// `<|vision_end|>`: closes every image split.
    pub vision_end: u32,
}

impl Default for SpecialTokens {
    fn default() -> Self {
        Self {
            im_start: 151_644,
            im_end: 151_645,
            vision_start: 151_652,
            vision_end: 151_653,
        }
    }
}

/// How metaqueries attend to each other (paper appendix D: both work about equally).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaqueryAttention {
    /// Autoregressive, the paper's default.
    #[default]
    Causal,
    /// Bidirectional among the metaqueries.
    Full,
}

/// What the caption and metaquery splits may see besides themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisionVisibility {
    /// Only the noised target image (markers included): no prompt, no source image. This
    /// is the paper's leakage masking, applied to everything that could carry the answer.
    #[default]
    NoisedTargetOnly,
    /// The noised target and every earlier clean image split (an edit's source image), but
    /// never a text split (the prompt / instruction).
    AllButPrompt,
    /// Every earlier split of the sample, the prompt included: the paper's appendix D
    /// ablation with the leakage mask off (the caption may copy the prompt).
    Everything,
}

/// Everything the packer needs besides the samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PackingConfig {
    /// The markers the packer wraps around text and image splits.
    pub special_tokens: SpecialTokens,
    /// Token ids must be below this (Qwen2.5: 152064).
    pub vocab_size: u32,
    /// ViT patch side in pixels (SigLIP: 14).
    pub vit_patch_size: usize,
    /// Side of the ViT position table (70: ids are `row * 70 + col`).
    pub vit_max_patches_per_side: usize,
    /// Pixels per VAE token side: 8x VAE downsampling times the 2x2 latent patch.
    pub vae_downsample: usize,
    /// Side of the latent position table (release config: 64; ids `row * 64 + col`).
    pub max_latent_size: usize,
    /// Metaqueries per supervised image (paper: 256).
    pub num_metaqueries: usize,
    /// Attention among the metaqueries (paper default: causal).
    pub metaquery_attention: MetaqueryAttention,
    /// What the caption and metaquery splits see (default: the noised target only).
    pub supervision_visibility: SupervisionVisibility,
    /// Longest sample accepted (BAGEL's `max_num_tokens_per_sample`).
    pub max_sample_tokens: usize,
}

impl Default for PackingConfig {
    fn default() -> Self {
        Self {
            special_tokens: SpecialTokens::default(),
            vocab_size: 152_064,
            vit_patch_size: 14,
            vit_max_patches_per_side: 70,
            vae_downsample: 16,
            max_latent_size: 64,
            num_metaqueries: 256,
            metaquery_attention: MetaqueryAttention::Causal,
            supervision_visibility: SupervisionVisibility::NoisedTargetOnly,
            max_sample_tokens: 16_384,
        }
    }
}

impl PackingConfig {
    /// Check the configuration on its own (samples are checked when packed).
    pub fn validate(&self) -> Result<(), PackError> {
        let t = &self.special_tokens;
        for (name, id) in [
            ("im_start", t.im_start),
            ("im_end", t.im_end),
            ("vision_start", t.vision_start),
            ("vision_end", t.vision_end),
        ] {
            if id >= self.vocab_size {
                return Err(PackError::Config(format!(
                    "special token {name} = {id} is not below vocab_size {}",
                    self.vocab_size
                )));
            }
        }
        for (name, v) in [
            ("vit_patch_size", self.vit_patch_size),
            ("vit_max_patches_per_side", self.vit_max_patches_per_side),
            ("vae_downsample", self.vae_downsample),
            ("max_latent_size", self.max_latent_size),
            ("max_sample_tokens", self.max_sample_tokens),
        ] {
            if v == 0 {
                return Err(PackError::Config(format!("{name} must be positive")));
            }
        }
        Ok(())
    }
}
