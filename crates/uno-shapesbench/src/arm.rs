//! The stage 2 arms: the paper's Table 7 (left half: which losses; right half: caption =
//! prompt) and appendix D's mask ablation, all from the same stage 1 checkpoint.

use serde::{Deserialize, Serialize};
use uno_core::train::Ablation;

/// One way to post-train the stage 1 model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// Flow matching only.
    Sft,
    /// Flow matching + caption loss.
    Language,
    /// Flow matching + metaquery (visual) loss.
    Visual,
    /// All three: UNO.
    Joint,
    /// UNO with the prompt as the caption target (no semantic augmentation: the caption
    /// loss can be met by copying the prompt, so it collapses).
    CaptionIsPrompt,
    /// UNO with the leakage mask off: the caption and metaqueries may see the prompt.
    MaskOff,
}

impl Arm {
    /// Every arm, in report order.
    pub const ALL: [Self; 6] = [
        Self::Sft,
        Self::Language,
        Self::Visual,
        Self::Joint,
        Self::CaptionIsPrompt,
        Self::MaskOff,
    ];

    /// The report's row label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sft => "SFT",
            Self::Language => "+ language",
            Self::Visual => "+ visual",
            Self::Joint => "joint (UNO)",
            Self::CaptionIsPrompt => "joint, caption = prompt",
            Self::MaskOff => "joint, mask off",
        }
    }

    /// The folder name of its runs (`sft`, `caption_is_prompt`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sft => "sft",
            Self::Language => "language",
            Self::Visual => "visual",
            Self::Joint => "joint",
            Self::CaptionIsPrompt => "caption_is_prompt",
            Self::MaskOff => "mask_off",
        }
    }

    /// The loss ablation it trains with: the last two arms are joint.
    pub fn ablation(self) -> Ablation {
        match self {
            Self::Sft => Ablation::Sft,
            Self::Language => Ablation::Language,
            Self::Visual => Ablation::Visual,
            Self::Joint | Self::CaptionIsPrompt | Self::MaskOff => Ablation::Joint,
        }
    }

    /// Parse a [`Self::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}
