//! Splits: the contiguous runs of tokens a sample is made of, and how each attends.

use serde::{Deserialize, Serialize};

/// Attention mode of a split (BAGEL's three, plus UNO's supervision modes).
///
/// Visibility between splits of one sample is decided by [`crate::SampleMask`]; this enum
/// only says what a split *is*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttnMode {
    /// Text: lower-triangular inside the split, sees earlier splits.
    Causal,
    /// Clean image (ViT or VAE): bidirectional inside, sees earlier splits.
    Full,
    /// Noised VAE image: bidirectional inside, sees earlier splits, hidden from every other
    /// split except the UNO supervision splits of its sample.
    Noise,
    /// UNO re-caption: causal inside, sees only its noised target (by default).
    Caption,
    /// UNO metaqueries, predicted autoregressively (the paper's default).
    MetaqueryCausal,
    /// UNO metaqueries, bidirectional (paper appendix D ablation).
    MetaqueryFull,
}

impl AttnMode {
    /// Caption and metaquery splits: UNO's supervision, hidden from all other splits.
    pub fn is_supervision(self) -> bool {
        matches!(
            self,
            Self::Caption | Self::MetaqueryCausal | Self::MetaqueryFull
        )
    }

    /// Whether a token sees only itself and earlier tokens of its own split.
    pub fn is_causal_inside(self) -> bool {
        matches!(self, Self::Causal | Self::Caption | Self::MetaqueryCausal)
    }
}

/// What a split holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    /// `<|im_start|> text <|im_end|>`.
    Text,
    /// `<|vision_start|>` ViT patches `<|vision_end|>`.
    VitImage,
    /// `<|vision_start|>` clean VAE latents `<|vision_end|>` (a condition, t = 0).
    VaeImage,
    /// `<|vision_start|>` noised VAE latents `<|vision_end|>` (the generation target).
    NoisedImage,
    /// UNO: `<|im_start|> re-caption <|im_end|>`, supervised with cross entropy.
    Caption,
    /// UNO: the learnable metaquery tokens, supervised with the visual loss.
    Metaqueries,
}

/// Which expert of the MoT computes a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expert {
    /// Understanding expert: text (image markers included), ViT patches, metaqueries.
    Und,
    /// Generation expert: VAE latents, clean or noised.
    Gen,
}

/// An image's size in pixels. It must be a multiple of the ViT patch (14) or the VAE
/// token size (16: 8x downsampling, then 2x2 latent patches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageSize {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl ImageSize {
    /// An image of `height` x `width` pixels (height first, like tensors' `[H, W]`).
    pub fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }
}

/// One step of a sample's plan, before packing. The typed [`crate::Sample`] variants lower
/// to these; [`crate::Sample::Custom`] takes them directly for layouts the variants do not
/// cover (interleaved multi-image data, say). Both go through the same validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitSpec {
    /// A text turn; `loss` adds next-token CE targets (understanding data).
    Text {
        /// Token ids without special tokens (the packer adds `<|im_start|>`/`<|im_end|>`).
        tokens: Vec<u32>,
        /// Whether the split's tokens (and its closing `<|im_end|>`) are CE targets.
        loss: bool,
    },
    /// An image seen through the ViT (understanding expert).
    VitImage(ImageSize),
    /// A clean VAE image (generation expert, t = 0).
    VaeImage(ImageSize),
    /// A noised VAE image to denoise (flow-matching target).
    NoisedImage(ImageSize),
    /// UNO's re-caption of the preceding noised image.
    Caption(Vec<u32>),
    /// UNO's metaqueries for the preceding noised image (count from the config).
    Metaqueries,
    /// A condition image dropped for classifier-free guidance: no tokens, but the position
    /// counter advances as if it were there (BAGEL). A dropped *text* is simply left out.
    DroppedImage,
}
