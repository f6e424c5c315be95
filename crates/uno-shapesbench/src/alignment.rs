//! Gradient diagnostics (the paper's Figure 8) on a fixed held-out batch: per decoder
//! layer, the cosine between the generation expert's gradients of the flow-matching loss
//! and of the caption / visual losses ([`gradient_alignment`]).
//!
//! Every model is measured the same way: the joint objective's terms (unweighted) on the
//! same batch under the same noise, whatever losses its arm trained with, so that the SFT
//! arm's end point is comparable with the joint arm's. Every arm starts from the stage 1
//! model, so the start point is one measurement shared by all arms.

use std::path::Path;

use serde::{Deserialize, Serialize};
use uno_core::bagel::{Bagel, LossNormalization, UnoBatch};
use uno_core::burn::tensor::backend::AutodiffBackend;
use uno_core::checkpoint::UnexpectedKeys;
use uno_core::data::shapes::ShapesBench;
use uno_core::data::{DataError, Dataset, SyntheticScenes, TrainItem};
use uno_core::objectives::ConditionDropoutConfig;
use uno_core::train::{Ablation, BatchFill, LayerAlignment, PackedBatches, gradient_alignment};
use uno_core::trainer::{DataSource, TrainRng};

use crate::plots::{Series, metric_series};
use crate::{Arm, BenchError};

/// The fixed batch: `samples` training-distribution items from `first_item` on (far past
/// any run's data, so never trained on), drawn at `image_size`, with both supervision
/// splits, under noise seed `noise_seed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlignmentBatch {
    /// Items in the batch.
    pub samples: usize,
    /// Index of the first item in the benchmark's training stream.
    pub first_item: usize,
    /// Image side in pixels (the model's training size).
    pub image_size: usize,
    /// Seed of the timesteps and noise.
    pub noise_seed: u64,
}

/// When a model was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The stage 1 model every arm starts from.
    Start,
    /// The arm's final EMA weights.
    End,
}

/// One line of `alignment.jsonl`: a decoder layer of one measured model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignmentRecord {
    /// The arm (none for the shared start point).
    pub arm: Option<Arm>,
    /// The arm's training seed (none for the start point).
    pub seed: Option<u64>,
    /// Start or end.
    pub phase: Phase,
    /// The layer's figures.
    #[serde(flatten)]
    pub layer: LayerAlignment,
}

/// Items `offset..` of a data set, as a data set of `len` items.
struct Skip<D> {
    inner: D,
    offset: usize,
    len: usize,
}

impl<D: Dataset> Dataset for Skip<D> {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<TrainItem, DataError> {
        self.inner.get(self.offset + index)
    }
}

/// Load the BAGEL folder `model_dir` (its EMA weights) and measure its per-layer gradient
/// alignment on `batch` of `bench`'s training distribution.
pub fn held_out_alignment<B: AutodiffBackend>(
    model_dir: &Path,
    bench: &ShapesBench,
    batch: &AlignmentBatch,
    device: &B::Device,
) -> Result<Vec<LayerAlignment>, BenchError> {
    if batch.samples == 0 {
        return Err(BenchError::setting(
            "alignment.samples",
            0,
            "at least one sample",
        ));
    }
    let (mut config, model, _) = Bagel::<B>::load_folder(model_dir, device, UnexpectedKeys::Warn)?;
    let codec = config.load_codec::<B>(model_dir, device)?;
    (config.loss.caption, config.loss.visual) = Ablation::Joint.weights();
    let objective = config.objective()?;
    let end = batch.first_item.checked_add(batch.samples).ok_or_else(|| {
        BenchError::setting("alignment.first_item", batch.first_item, "too large")
    })?;
    let data = Skip {
        inner: SyntheticScenes::shapes_bench(bench.clone(), end, batch.image_size)?,
        offset: batch.first_item,
        len: batch.samples,
    };
    let no_dropout = ConditionDropoutConfig::new()
        .with_text(0.0)
        .with_vit(0.0)
        .with_vae(0.0);
    let mut source = PackedBatches::<_, B>::new(
        data,
        BatchFill::Samples(batch.samples),
        config.packing(),
        no_dropout,
        device.clone(),
    );
    let packed = source
        .batch(0, &mut TrainRng::new(0))
        .map_err(|e| BenchError::Batch(e.to_string()))?;
    let model = model.freeze_for_uno();
    Ok(gradient_alignment(
        &model,
        UnoBatch {
            pack: &packed.pack,
            images: &packed.images,
            vit_targets: &packed.vit_targets,
            noise_seed: batch.noise_seed,
            normalization: LossNormalization::PerPack,
        },
        &codec,
        &objective,
    )?)
}

/// Append `records` to `path` as JSON lines.
pub fn write_alignment(path: &Path, records: &[AlignmentRecord]) -> Result<(), BenchError> {
    let mut text = String::new();
    for record in records {
        text += &serde_json::to_string(record).map_err(|source| BenchError::Serialize {
            name: "an alignment record",
            source,
        })?;
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| BenchError::io("write", path, e))
}

/// Reads one term's cosine off a layer's figures.
type CosineOf = fn(&LayerAlignment) -> Option<f64>;

/// The plot's lines: per measured model (the start point, then each arm's end, over its
/// seeds' first), the caption and the visual cosine per layer.
pub fn alignment_series(records: &[AlignmentRecord]) -> Vec<Series> {
    let mut models: Vec<(Option<Arm>, Option<u64>, Phase)> = Vec::new();
    for r in records {
        let key = (r.arm, r.seed, r.phase);
        if !models.contains(&key) {
            models.push(key);
        }
    }
    let mut series = Vec::new();
    for (arm, seed, phase) in models {
        let name = match (arm, seed) {
            (Some(arm), Some(seed)) => format!("{} (seed {seed})", arm.label()),
            (Some(arm), None) => arm.label().to_string(),
            _ => "stage 1 (start)".to_string(),
        };
        let of_model = || {
            records
                .iter()
                .filter(move |r| (r.arm, r.seed, r.phase) == (arm, seed, phase))
        };
        let terms: [(&str, CosineOf); 2] = [
            ("caption", |l| l.caption.and_then(|t| t.cosine)),
            ("visual", |l| l.visual.and_then(|t| t.cosine)),
        ];
        for (term, cosine) in terms {
            let points: Vec<(f64, f64)> = of_model()
                .filter_map(|r| Some((r.layer.layer as f64, cosine(&r.layer)?)))
                .collect();
            if !points.is_empty() {
                series.push(Series {
                    label: format!("{name}: {term}"),
                    points,
                });
            }
        }
    }
    series
}

/// The cosines a run logged at its evaluations (`diagnostics.alignment`: the
/// `align_caption_l{i}` and `align_visual_l{i}` values of `metrics.jsonl`), averaged over
/// the decoder layers: one series per term, labelled `{label}: caption` / `: visual`. A
/// step where some layer's cosine is undefined is left out of that term's line.
pub fn training_alignment(metrics: &Path, label: &str) -> Result<Vec<Series>, BenchError> {
    let mut series = Vec::new();
    for term in ["caption", "visual"] {
        let mut layers = Vec::new();
        loop {
            let points = metric_series(metrics, &format!("align_{term}_l{}", layers.len()))?;
            if points.is_empty() {
                break;
            }
            layers.push(points);
        }
        let Some(first) = layers.first() else {
            continue;
        };
        let points = first
            .iter()
            .filter_map(|&(step, _)| {
                let at_step: Vec<f64> = layers
                    .iter()
                    .filter_map(|l| l.iter().find(|p| p.0 == step).map(|p| p.1))
                    .collect();
                (at_step.len() == layers.len())
                    .then(|| (step, at_step.iter().sum::<f64>() / at_step.len() as f64))
            })
            .collect();
        series.push(Series {
            label: format!("{label}: {term}"),
            points,
        });
    }
    Ok(series)
}
