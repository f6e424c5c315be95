//! Micro-batches from a data set: consecutive items, CFG dropout of the condition text,
//! packed into one sequence, images uploaded to the device.

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::data::{Dataset, RgbImage, TrainItem};
use crate::objectives::ConditionDropoutConfig;
use crate::packing::{PackedSequence, PackingConfig, Sample, SplitSpec};
use crate::trainer::{BoxError, DataSource, TrainRng};

/// One packed micro-batch and its pixels (one image per `pack.images` entry).
#[derive(Debug, Clone)]
pub struct TrainBatch<B: Backend> {
    /// The micro-batch's samples packed into one sequence.
    pub pack: PackedSequence,
    /// One RGB image `[3, H, W]` in `[0, 1]` per entry of `pack.images`, in order
    /// (CFG-dropped images have no entry in either).
    pub images: Vec<Tensor<B, 3>>,
}

/// Micro-batch `p` holds items `p * batch_size ..` (wrapping around the data set), so a
/// position fully determines its items and resume continues exactly.
pub struct PackedBatches<D, B: Backend> {
    /// The items, read by index.
    pub dataset: D,
    /// Items per micro-batch (all packed into one sequence).
    pub batch_size: usize,
    /// How items are packed; it must match the model ([`crate::bagel::BagelConfig::packing`]).
    pub packing: PackingConfig,
    /// Condition dropout for CFG, drawn per item from the training RNG: the text (BAGEL:
    /// 0.1) and, for edits, the source's ViT and clean VAE splits (BAGEL: 0.3 each).
    pub dropout: ConditionDropoutConfig,
    /// Where the images are uploaded.
    pub device: B::Device,
}

impl<D: Dataset, B: Backend> DataSource for PackedBatches<D, B> {
    type Batch = TrainBatch<B>;

    fn batch(&mut self, position: u64, rng: &mut TrainRng) -> Result<TrainBatch<B>, BoxError> {
        let len = self.dataset.len();
        if len == 0 || self.batch_size == 0 {
            return Err("empty data set or batch size 0".into());
        }
        let mut samples = Vec::with_capacity(self.batch_size);
        let mut images = Vec::new();
        for j in 0..self.batch_size {
            let index = ((position as usize) * self.batch_size + j) % len;
            let mut item = self.dataset.get(index)?;
            let drop = self.dropout.decide(rng)?;
            match &mut item.sample {
                Sample::TextToImage { drop_prompt, .. } => *drop_prompt = drop.text,
                Sample::Edit { dropout, .. } => {
                    dropout.instruction = drop.text;
                    dropout.source_vit = drop.vit;
                    dropout.source_vae = drop.vae;
                }
                Sample::Understanding { .. } | Sample::Custom(_) => {}
            }
            images.extend(
                item_images(&item)
                    .into_iter()
                    .map(|image| upload(image, &self.device)),
            );
            samples.push(item.sample);
        }
        let pack = PackedSequence::pack(&samples, &self.packing)?;
        Ok(TrainBatch { pack, images })
    }

    /// The data set indexes of the micro-batch's items (`item 17`).
    fn sample_ids(&self, position: u64) -> Vec<String> {
        let len = self.dataset.len();
        if len == 0 {
            return Vec::new();
        }
        (0..self.batch_size)
            .map(|j| format!("item {}", ((position as usize) * self.batch_size + j) % len))
            .collect()
    }
}

/// The pixels behind an item's image splits, in plan order: condition images (ViT or
/// clean VAE) are the source image (or the item's only image), noised images the target.
pub fn item_images(item: &TrainItem) -> Vec<&RgbImage> {
    item.sample
        .plan()
        .iter()
        .filter_map(|spec| match spec {
            SplitSpec::VitImage(_) | SplitSpec::VaeImage(_) => {
                Some(item.source.as_ref().unwrap_or(&item.target))
            }
            SplitSpec::NoisedImage(_) => Some(&item.target),
            _ => None,
        })
        .collect()
}

fn upload<B: Backend>(image: &RgbImage, device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(
        TensorData::new(image.data.clone(), [3, image.height, image.width]),
        device,
    )
}
