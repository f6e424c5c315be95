//! Training samples as users build them, and their lowering to split plans.

use serde::{Deserialize, Serialize};

use crate::split::{ImageSize, SplitSpec};

/// UNO's supervision of one noised target image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Supervision {
    /// The re-caption (lexically different from the prompt, paper section 3.3): caption CE.
    pub caption: Option<Vec<u32>>,
    /// Whether to append the metaquery split: visual (cosine) loss.
    pub metaqueries: bool,
}

impl Supervision {
    /// No supervision splits: plain BAGEL training.
    pub fn none() -> Self {
        Self::default()
    }

    /// Both UNO objectives.
    pub fn joint(caption: Vec<u32>) -> Self {
        Self {
            caption: Some(caption),
            metaqueries: true,
        }
    }

    fn is_none(&self) -> bool {
        self.caption.is_none() && !self.metaqueries
    }
}

/// Which conditions of an edit sample are dropped for classifier-free guidance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EditDropout {
    /// Leave the instruction text out (a dropped text takes no position).
    pub instruction: bool,
    /// Drop the source image's ViT split (its position id is still taken).
    pub source_vit: bool,
    /// Drop the source image's clean VAE split (its position id is still taken).
    pub source_vae: bool,
}

/// One training sample. Token ids are the tokenizer's, without special tokens: the packer
/// adds `<|im_start|>`/`<|im_end|>` and the vision markers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sample {
    /// Condition text, noised target, then UNO's caption and metaqueries (if any).
    TextToImage {
        /// The condition text's token ids.
        prompt: Vec<u32>,
        /// Size of the image to generate (a multiple of the VAE token size, 16 pixels per
        /// side by default).
        target: ImageSize,
        /// UNO splits appended after the noised target.
        supervision: Supervision,
        /// Drop the prompt for CFG (the split is left out).
        drop_prompt: bool,
    },
    /// Source image (clean VAE, then ViT), instruction, noised target, supervision.
    Edit {
        /// Size of the source image's VAE copy (a multiple of the VAE token size, 16 pixels
        /// per side by default), for its clean VAE split.
        source: ImageSize,
        /// Size of the source image's ViT copy (a multiple of the ViT patch, 14 pixels per
        /// side by default), for its ViT split. BAGEL transforms the two copies separately
        /// (VAE side 512..1024, ViT side 224..518), so the sizes usually differ.
        source_vit: ImageSize,
        /// The edit instruction's token ids.
        instruction: Vec<u32>,
        /// Size of the edited image to generate (a multiple of the VAE token size).
        target: ImageSize,
        /// UNO splits appended after the noised target.
        supervision: Supervision,
        /// Conditions dropped for classifier-free guidance.
        dropout: EditDropout,
    },
    /// ViT image, optional question (no loss), answer (CE loss).
    Understanding {
        /// Size of the image seen through the ViT (a multiple of the ViT patch, 14 pixels per
        /// side by default).
        image: ImageSize,
        /// Question token ids, packed as a text split without loss.
        question: Option<Vec<u32>>,
        /// Answer token ids, the CE targets.
        answer: Vec<u32>,
    },
    /// Any plan of splits; validated like the typed variants.
    Custom(Vec<SplitSpec>),
}

/// The kind of a sample, for statistics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleKind {
    /// Text-to-image with at least one UNO supervision split.
    TextToImage,
    /// Plain BAGEL text-to-image (no supervision splits).
    PlainTextToImage,
    /// An edit sample, with or without supervision splits.
    Edit,
    /// An understanding sample (image, question, answer).
    Understanding,
    /// A [`Sample::Custom`] plan.
    Custom,
}

impl Sample {
    /// A UNO text-to-image sample with both supervision splits.
    pub fn text_to_image(prompt: Vec<u32>, target: ImageSize, caption: Vec<u32>) -> Self {
        Self::TextToImage {
            prompt,
            target,
            supervision: Supervision::joint(caption),
            drop_prompt: false,
        }
    }

    /// A plain BAGEL text-to-image sample (flow matching only).
    pub fn plain_text_to_image(prompt: Vec<u32>, target: ImageSize) -> Self {
        Self::TextToImage {
            prompt,
            target,
            supervision: Supervision::none(),
            drop_prompt: false,
        }
    }

    /// A UNO editing sample with both supervision splits, whose source has one size for
    /// both copies (it must then suit both grids: a multiple of 16 and of 14 pixels per
    /// side, i.e. of 112, under the default config).
    pub fn edit(
        source: ImageSize,
        instruction: Vec<u32>,
        target: ImageSize,
        caption: Vec<u32>,
    ) -> Self {
        Self::Edit {
            source,
            source_vit: source,
            instruction,
            target,
            supervision: Supervision::joint(caption),
            dropout: EditDropout::default(),
        }
    }

    /// An understanding sample: image, optional question, supervised answer.
    pub fn understanding(image: ImageSize, question: Option<Vec<u32>>, answer: Vec<u32>) -> Self {
        Self::Understanding {
            image,
            question,
            answer,
        }
    }

    /// The sample's kind; a text-to-image sample without supervision is
    /// [`SampleKind::PlainTextToImage`].
    pub fn kind(&self) -> SampleKind {
        match self {
            Self::TextToImage { supervision, .. } if supervision.is_none() => {
                SampleKind::PlainTextToImage
            }
            Self::TextToImage { .. } => SampleKind::TextToImage,
            Self::Edit { .. } => SampleKind::Edit,
            Self::Understanding { .. } => SampleKind::Understanding,
            Self::Custom(_) => SampleKind::Custom,
        }
    }

    /// The sample's split plan, in sequence order (BAGEL's order for every kind).
    pub fn plan(&self) -> Vec<SplitSpec> {
        let mut plan = Vec::new();
        match self {
            Self::TextToImage {
                prompt,
                target,
                supervision,
                drop_prompt,
            } => {
                if !drop_prompt {
                    plan.push(text(prompt, false));
                }
                push_target(&mut plan, *target, supervision);
            }
            Self::Edit {
                source,
                source_vit,
                instruction,
                target,
                supervision,
                dropout,
            } => {
                plan.push(image_or_dropped(
                    dropout.source_vae,
                    SplitSpec::VaeImage(*source),
                ));
                plan.push(image_or_dropped(
                    dropout.source_vit,
                    SplitSpec::VitImage(*source_vit),
                ));
                if !dropout.instruction {
                    plan.push(text(instruction, false));
                }
                push_target(&mut plan, *target, supervision);
            }
            Self::Understanding {
                image,
                question,
                answer,
            } => {
                plan.push(SplitSpec::VitImage(*image));
                if let Some(q) = question {
                    plan.push(text(q, false));
                }
                plan.push(text(answer, true));
            }
            Self::Custom(splits) => plan.clone_from(splits),
        }
        plan
    }
}

fn text(tokens: &[u32], loss: bool) -> SplitSpec {
    SplitSpec::Text {
        tokens: tokens.to_vec(),
        loss,
    }
}

fn image_or_dropped(dropped: bool, image: SplitSpec) -> SplitSpec {
    if dropped {
        SplitSpec::DroppedImage
    } else {
        image
    }
}

fn push_target(plan: &mut Vec<SplitSpec>, target: ImageSize, supervision: &Supervision) {
    plan.push(SplitSpec::NoisedImage(target));
    if let Some(caption) = &supervision.caption {
        plan.push(SplitSpec::Caption(caption.clone()));
    }
    if supervision.metaqueries {
        plan.push(SplitSpec::Metaqueries);
    }
}
