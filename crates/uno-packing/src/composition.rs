//! What a pack's tokens are spent on, for per-step metrics.

use serde::{Deserialize, Serialize};

use crate::packed::PackedSequence;
use crate::split::SplitKind;

/// Tokens of a pack by kind, markers included (`<|im_start|>`/`<|im_end|>` count as text or
/// caption, `<|vision_start|>`/`<|vision_end|>` as image). The paper's average training
/// sample (Table 12) is 171 prompt / 3362 image / 80 caption / 256 metaquery tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenComposition {
    /// Text splits: prompts, edit instructions, understanding questions and answers.
    pub text: usize,
    /// Image splits: ViT patches, clean and noised VAE latents.
    pub image: usize,
    /// UNO re-captions.
    pub caption: usize,
    /// UNO metaqueries.
    pub metaqueries: usize,
}

impl TokenComposition {
    /// All tokens counted (the pack's length).
    pub fn total(&self) -> usize {
        self.text + self.image + self.caption + self.metaqueries
    }
}

impl std::ops::Add for TokenComposition {
    type Output = Self;

    /// Field-wise sum: the composition of several packs.
    fn add(self, rhs: Self) -> Self {
        Self {
            text: self.text + rhs.text,
            image: self.image + rhs.image,
            caption: self.caption + rhs.caption,
            metaqueries: self.metaqueries + rhs.metaqueries,
        }
    }
}

impl PackedSequence {
    /// The pack's tokens by kind; they sum to `len`.
    pub fn composition(&self) -> TokenComposition {
        let mut c = TokenComposition::default();
        for split in &self.splits {
            let slot = match split.kind {
                SplitKind::Text => &mut c.text,
                SplitKind::VitImage | SplitKind::VaeImage | SplitKind::NoisedImage => &mut c.image,
                SplitKind::Caption => &mut c.caption,
                SplitKind::Metaqueries => &mut c.metaqueries,
            };
            *slot += split.len;
        }
        c
    }
}
