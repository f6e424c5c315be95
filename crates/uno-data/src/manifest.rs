//! A JSONL manifest of real training data, one record per line:
//!
//! ```text
//! {"image": "imgs/0001.png", "prompt": "a cat on a mat", "recaption": "a tabby lies on a rug"}
//! {"source": "src.png", "instruction": "make it night", "target": "tgt.png", "target_caption": "a dark street"}
//! ```
//!
//! Relative paths are resolved against the manifest's folder. Records are parsed and
//! checked when the manifest is opened (errors name the line), and every image file they
//! name must exist then (one error lists all missing files); images are decoded lazily.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{DataError, Dataset, ImagePair, ImageTransforms, RgbImage, TextTokenizer, TrainItem};
use uno_packing::{ImageSize, Sample, Supervision};

/// One manifest line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ManifestRecord {
    /// Text-to-image: the generated image, its prompt and a lexically different re-caption.
    TextToImage {
        /// The target image, relative to the manifest's folder or absolute.
        image: PathBuf,
        /// The generation prompt.
        prompt: String,
        /// The re-caption, supervised by the caption loss.
        recaption: String,
    },
    /// Editing: source image, instruction, target image and the target's caption.
    Edit {
        /// The image to edit, relative to the manifest's folder or absolute.
        source: PathBuf,
        /// The edit instruction.
        instruction: String,
        /// The edited image, relative to the manifest's folder or absolute.
        target: PathBuf,
        /// A caption of the edited image, supervised by the caption loss.
        target_caption: String,
    },
}

/// A manifest-backed data set.
#[derive(Debug, Clone)]
pub struct ManifestDataset {
    root: PathBuf,
    records: Vec<ManifestRecord>,
    tokenizer: TextTokenizer,
    transforms: ImageTransforms,
    /// Which supervision splits items carry: `(caption, metaqueries)`.
    supervision: (bool, bool),
}

impl ManifestDataset {
    /// Read and check every line of `path`. Each image is decoded when its item is read and
    /// goes through both `transforms` (BAGEL's: aspect ratio kept, no crop), giving its
    /// VAE-side and ViT-side copies.
    pub fn open(
        path: &Path,
        tokenizer: TextTokenizer,
        transforms: ImageTransforms,
    ) -> Result<Self, DataError> {
        transforms.vae.validate("vae transform")?;
        transforms.vit.validate("vit transform")?;
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let root = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut records = Vec::new();
        let mut missing = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: ManifestRecord =
                serde_json::from_str(line).map_err(|e| DataError::Manifest {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: format!(
                        "{e} (expected {{image, prompt, recaption}} or {{source, instruction, target, target_caption}})"
                    ),
                })?;
            let images = match &record {
                ManifestRecord::TextToImage { image, .. } => vec![image],
                ManifestRecord::Edit { source, target, .. } => vec![source, target],
            };
            for image in images {
                let full = root.join(image);
                if !full.is_file() {
                    missing.push((i + 1, full));
                }
            }
            records.push(record);
        }
        if !missing.is_empty() {
            return Err(DataError::MissingImages {
                path: path.to_path_buf(),
                missing,
            });
        }
        if records.is_empty() {
            return Err(DataError::Manifest {
                path: path.to_path_buf(),
                line: 0,
                message: "no records".into(),
            });
        }
        Ok(Self {
            root,
            records,
            tokenizer,
            transforms,
            supervision: (true, true),
        })
    }

    /// Which supervision splits items carry: `(caption, metaqueries)` (both by default). A
    /// run packs only the splits of objectives with a positive weight, so a disabled
    /// objective costs no tokens (paper Table 7's ablations).
    pub fn with_supervision(mut self, caption: bool, metaqueries: bool) -> Self {
        self.supervision = (caption, metaqueries);
        self
    }

    /// The parsed records, in file order (blank lines skipped).
    pub fn records(&self) -> &[ManifestRecord] {
        &self.records
    }

    fn image(&self, path: &Path) -> Result<ImagePair, DataError> {
        let full = self.root.join(path);
        let decoded = RgbImage::from_dynamic(&RgbImage::load(&full)?);
        self.transforms.apply(&decoded)
    }
}

impl Dataset for ManifestDataset {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn get(&self, index: usize) -> Result<TrainItem, DataError> {
        let record = self.records.get(index).ok_or(DataError::OutOfRange {
            index,
            len: self.records.len(),
        })?;
        let size = |image: &RgbImage| ImageSize::new(image.height, image.width);
        let vae = |pair: &ImagePair| size(&pair.vae);
        let (with_caption, metaqueries) = self.supervision;
        let supervision = |caption: &str| -> Result<Supervision, DataError> {
            Ok(Supervision {
                caption: with_caption
                    .then(|| self.tokenizer.encode(caption))
                    .transpose()?,
                metaqueries,
            })
        };
        match record {
            ManifestRecord::TextToImage {
                image,
                prompt,
                recaption,
            } => {
                let target = self.image(image)?;
                Ok(TrainItem {
                    sample: Sample::TextToImage {
                        prompt: self.tokenizer.encode(prompt)?,
                        target: vae(&target),
                        supervision: supervision(recaption)?,
                        drop_prompt: false,
                    },
                    target,
                    source: None,
                    prompt: prompt.clone(),
                    caption: recaption.clone(),
                })
            }
            ManifestRecord::Edit {
                source,
                instruction,
                target,
                target_caption,
            } => {
                let (source, target) = (self.image(source)?, self.image(target)?);
                Ok(TrainItem {
                    sample: Sample::Edit {
                        source: vae(&source),
                        source_vit: size(&source.vit),
                        instruction: self.tokenizer.encode(instruction)?,
                        target: vae(&target),
                        supervision: supervision(target_caption)?,
                        dropout: Default::default(),
                    },
                    target,
                    source: Some(source),
                    prompt: instruction.clone(),
                    caption: target_caption.clone(),
                })
            }
        }
    }
}
