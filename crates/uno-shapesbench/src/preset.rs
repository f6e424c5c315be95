//! Benchmark presets: the model, the two stages' lengths, the seeds and the evaluation.

use serde::{Deserialize, Serialize};
use uno_core::bagel::BagelConfig;
use uno_core::generate::{Guidance, SamplerConfig};
use uno_core::packing::SpecialTokens;

use crate::{AlignmentBatch, Arm, EvalSettings};

/// The shape of the benchmark's BAGEL-shaped model (everything else is
/// [`BagelConfig::tiny`]'s: PixelCodec latents of 4-px tokens, 4-px ViT patches over 32 px,
/// 4 metaqueries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Decoder hidden size (both experts).
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads (head dim = hidden / heads).
    pub heads: usize,
    /// Key-value heads (GQA).
    pub kv_heads: usize,
    /// SwiGLU intermediate size.
    pub intermediate: usize,
    /// ViT hidden size.
    pub vit_hidden: usize,
    /// ViT layers used.
    pub vit_layers: usize,
}

impl ModelShape {
    /// The model configuration over a vocabulary.
    pub fn config(&self, vocab_size: usize, special_tokens: SpecialTokens) -> BagelConfig {
        let mut config = BagelConfig::tiny(vocab_size, special_tokens);
        let llm = &mut config.llm;
        llm.hidden_size = self.hidden;
        llm.num_hidden_layers = self.layers;
        llm.num_attention_heads = self.heads;
        llm.num_key_value_heads = self.kv_heads;
        llm.intermediate_size = self.intermediate;
        let vit = &mut config.vit;
        vit.hidden_size = self.vit_hidden;
        vit.intermediate_size = 2 * self.vit_hidden;
        vit.num_hidden_layers = self.vit_layers + 1;
        vit.layers_used = Some(self.vit_layers);
        config
    }
}

/// The length and learning rate of one training stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSettings {
    /// Optimizer steps.
    pub iterations: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Samples per step.
    pub batch: usize,
}

/// Everything a benchmark run needs besides the device and output folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchPreset {
    /// Its name in the report.
    pub name: String,
    /// The benchmark's seed (0 is THE benchmark).
    pub bench_seed: u64,
    /// The model.
    pub model: ModelShape,
    /// Training and evaluation image side in pixels.
    pub image_size: usize,
    /// Stage 1: pretraining from scratch.
    pub stage1: StageSettings,
    /// Stage 1's fraction of understanding (captioning) samples.
    pub understanding_fraction: f64,
    /// Stage 2: every arm, from the stage 1 model.
    pub stage2: StageSettings,
    /// Stage 2 training seeds: every arm runs under each.
    pub seeds: Vec<u64>,
    /// The arms, in order.
    pub arms: Vec<Arm>,
    /// Images per held-out prompt, size and seeds.
    pub eval: EvalSettings,
    /// Evaluate only the first this many held-out prompts of each category (`None`: all
    /// 72; the micro preset's shortcut).
    pub prompts_per_category: Option<usize>,
    /// The sampler of the evaluation.
    pub sampler: SamplerConfig,
    /// Held-out scenes stage 1 captions.
    pub caption_scenes: usize,
    /// The gradient diagnostics' batch; `None`: not measured.
    pub alignment: Option<AlignmentBatch>,
}

/// Far past any preset's training data: items from here on are never trained on.
const ALIGNMENT_FIRST_ITEM: usize = 1 << 40;

impl BenchPreset {
    /// A 2-core CPU in under 15 minutes (docs/shapesbench.md, "Running the benchmark"):
    /// proves the pipeline runs, nothing about UNO.
    pub fn smoke() -> Self {
        Self {
            name: "smoke".into(),
            bench_seed: 0,
            model: ModelShape {
                hidden: 64,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                intermediate: 128,
                vit_hidden: 32,
                vit_layers: 2,
            },
            image_size: 32,
            stage1: StageSettings {
                iterations: 1500,
                lr: 2e-3,
                batch: 8,
            },
            understanding_fraction: 0.5,
            stage2: StageSettings {
                iterations: 200,
                lr: 5e-4,
                batch: 8,
            },
            seeds: vec![0],
            arms: Arm::ALL.to_vec(),
            eval: EvalSettings {
                images_per_prompt: 2,
                image_size: 32,
                seed: 1000,
            },
            prompts_per_category: None,
            sampler: SamplerConfig {
                steps: 20,
                ..bagel_sampler()
            },
            caption_scenes: 72,
            alignment: Some(AlignmentBatch {
                samples: 8,
                first_item: ALIGNMENT_FIRST_ITEM,
                image_size: 32,
                noise_seed: 7,
            }),
        }
    }

    /// The real comparison: a larger model, long stage 1, 4 seeds (GPU if present).
    pub fn full() -> Self {
        Self {
            name: "full".into(),
            model: ModelShape {
                hidden: 128,
                layers: 4,
                heads: 4,
                kv_heads: 2,
                intermediate: 256,
                vit_hidden: 64,
                vit_layers: 2,
            },
            stage1: StageSettings {
                iterations: 6000,
                lr: 2e-3,
                batch: 32,
            },
            stage2: StageSettings {
                iterations: 1000,
                lr: 5e-4,
                batch: 32,
            },
            seeds: vec![0, 1, 2, 3],
            eval: EvalSettings {
                images_per_prompt: 4,
                image_size: 32,
                seed: 1000,
            },
            sampler: bagel_sampler(),
            caption_scenes: 144,
            alignment: Some(AlignmentBatch {
                samples: 16,
                ..Self::smoke()
                    .alignment
                    .expect("the smoke preset measures alignment")
            }),
            ..Self::smoke()
        }
    }

    /// The smallest run that exercises every stage (the tests' preset): the tiny model, a
    /// handful of steps, one seed, two arms, a few prompts' worth of sampling.
    pub fn micro() -> Self {
        Self {
            name: "micro".into(),
            model: ModelShape {
                hidden: 32,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                intermediate: 48,
                vit_hidden: 32,
                vit_layers: 2,
            },
            stage1: StageSettings {
                iterations: 3,
                lr: 2e-3,
                batch: 2,
            },
            stage2: StageSettings {
                iterations: 2,
                lr: 5e-4,
                batch: 2,
            },
            arms: vec![Arm::Sft, Arm::Joint],
            eval: EvalSettings {
                images_per_prompt: 1,
                image_size: 32,
                seed: 1000,
            },
            prompts_per_category: Some(1),
            sampler: SamplerConfig {
                steps: 3,
                ..bagel_sampler()
            },
            caption_scenes: 2,
            alignment: Some(AlignmentBatch {
                samples: 2,
                ..Self::smoke()
                    .alignment
                    .expect("the smoke preset measures alignment")
            }),
            ..Self::smoke()
        }
    }
}

/// BAGEL's inference defaults (50 steps, shift 3, text CFG 4 in (0.4, 1]).
fn bagel_sampler() -> SamplerConfig {
    SamplerConfig {
        guidance: Guidance::default(),
        ..SamplerConfig::default()
    }
}
