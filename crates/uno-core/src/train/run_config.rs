//! [`RunConfig`]: one TOML file describes a UNO run: the generic trainer's settings
//! ([`TrainConfig`], flattened: `iterations`, `[optimizer]`, `[schedule]`, ...) and the
//! settings of the model side that the trainer never reads (`[loss]`, `[model]`, `[data]`,
//! `[diagnostics]`).
//!
//! Loading order: defaults (paper appendix A, Table 11), then the file (unknown keys are
//! errors, in either part), then `key=value` overrides ([`apply_overrides`]), then
//! [`RunConfig::validate`]. [`RunConfig::apply_to`] is the one place the run's settings
//! reach a [`BagelConfig`].

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use super::{BatchFill, RunError};
use crate::bagel::{BagelConfig, Precision};
use crate::data::ImageTransformConfig;
use crate::packing::{MetaqueryAttention, PackingConfig, SupervisionVisibility};
use crate::trainer::{TrainConfig, TrainError, apply_overrides};

/// The embedded default run: a tiny BAGEL-shaped model on the synthetic shapes data, a
/// few minutes on a 2-core CPU (`configs/tiny.toml` in this crate).
const TINY: &str = include_str!("../../configs/tiny.toml");

/// The embedded ShapesBench stage 1: the tiny model pretrained from scratch, every weight
/// trained on the understanding CE and flow matching (`configs/shapes_pretrain.toml`).
const SHAPES_PRETRAIN: &str = include_str!("../../configs/shapes_pretrain.toml");

/// Everything a UNO run needs (paper appendix A, Table 11), as one TOML file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunConfig {
    /// The generic training loop's settings; in the file they are top-level keys and
    /// tables (`iterations`, `seed`, `output_dir`, `[optimizer]`, `[schedule]`, `[ema]`,
    /// `[checkpoint]`, `[guards]`, `[metrics]`).
    #[serde(flatten)]
    pub trainer: TrainConfig,
    /// `[loss]`: weights of the auxiliary losses.
    pub loss: LossWeights,
    /// `[model]`: settings the model is built or checked with.
    pub model: ModelSettings,
    /// `[data]`: how micro-batches are made.
    pub data: DataSettings,
    /// `[diagnostics]`: measurements logged with the evaluations.
    pub diagnostics: DiagnosticsSettings,
}

/// Measurements logged with each evaluation (`metrics.eval_every`, in `metrics.jsonl`'s
/// `eval` lines). They never change an update, so they may change on resume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiagnosticsSettings {
    /// The per-layer gradient alignment of the paper's Figure 8 on the first held-out
    /// batch ([`super::HeldOut::alignment`]: `align_caption_l{i}`, `align_visual_l{i}`,
    /// `align_flow_norm_l{i}`), at every evaluation. Costs three forwards and backwards of
    /// that batch per evaluation. The embedded data's held-out scenes then carry both
    /// supervision splits even when the run trains neither (an SFT run's figures compare
    /// with a joint run's); a held-out manifest carries the splits the run trains with.
    pub alignment: bool,
}

/// Weights of the auxiliary losses: `L = L_fm + caption * L_cap + visual * L_vis + text *
/// L_text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossWeights {
    /// Caption (language) loss weight (paper: 0.1).
    pub caption: f64,
    /// Visual (metaquery) loss weight (paper: 0.2).
    pub visual: f64,
    /// Understanding-answer cross entropy weight (BAGEL's `ce_loss` on understanding
    /// samples; default 0: UNO post-training has none). Pretraining from scratch
    /// (ShapesBench's stage 1) sets it to teach the understanding expert to caption.
    pub text: f64,
}

/// Which weights a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainable {
    /// UNO post-training ([`crate::bagel::Bagel::freeze_for_uno`]): the generation expert,
    /// the generation embeddings and the metaqueries; the understanding side is frozen but
    /// gradients flow through it.
    #[default]
    Generation,
    /// Pretraining from scratch ([`crate::bagel::Bagel::train_all`]): both experts, the
    /// embeddings, `lm_head`, the ViT, the connector and the metaqueries. The codec and
    /// the fixed sin-cos position tables stay frozen.
    All,
}

/// Model-side settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// Number of metaquery tokens (paper: 256); must equal the model's (they are weights).
    /// Appendix D's "number of metaqueries" ablation is a model with another count.
    pub metaqueries: u32,
    /// Flow-matching timestep shift (paper: 4.0).
    pub timestep_shift: f64,
    /// Attention among the metaqueries: `"causal"` (the paper's default) or `"full"`
    /// (appendix D's bidirectional ablation).
    pub metaquery_attention: MetaqueryAttention,
    /// What the caption and metaqueries see: `"noised_target_only"` (the paper's leakage
    /// masking), `"all_but_prompt"` (also an edit's source image) or `"everything"`
    /// (appendix D's "mask off" ablation: the caption may see the prompt).
    pub supervision_visibility: SupervisionVisibility,
    /// `"f32"` (default) or `"bf16_mixed"`: the decoder in bf16 with the frozen expert
    /// stored in bf16 and f32 master weights for the trained one ([`Precision`]; flex and
    /// cuda only).
    pub precision: Precision,
    /// Which weights train: `"generation"` (UNO post-training, default) or `"all"`
    /// (pretraining from scratch; f32 only) ([`Trainable`]).
    pub trainable: Trainable,
    /// Per-layer activation checkpointing: keep each decoder layer's input only and
    /// recompute the layer in the backward (one more forward of the decoder per step), for
    /// packs of more than [`Self::checkpoint_above_tokens`] tokens. Default on.
    pub checkpoint_layers: bool,
    /// The pack length above which [`Self::checkpoint_layers`] applies (default 2048:
    /// a paper-sized sample of ~3.9k tokens is checkpointed, the tiny runs are not).
    pub checkpoint_above_tokens: usize,
}

/// How micro-batches are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSettings {
    /// How a micro-batch is filled: `{ samples = 8 }`, or BAGEL's token budget `{ tokens =
    /// { expected = 32768, max = 36864 } }`.
    pub batch: BatchFill,
    /// Longest sample in tokens; longer ones are skipped and counted (BAGEL's
    /// `max_num_tokens_per_sample`, 16384).
    pub max_sample_tokens: usize,
    /// Read every epoch in a new order drawn from the run's seed (else file order).
    pub shuffle: bool,
    /// The VAE-side transform of every image (BAGEL: min 512, max 1024, stride 16); its
    /// stride must be the model's pixels per latent token.
    pub vae_image: ImageTransformConfig,
    /// The ViT-side transform (BAGEL's edit data: min 224, max 518, stride 14), for the
    /// clean target's visual-loss features and an edit source's ViT split; its stride must
    /// be the model's ViT patch.
    pub vit_image: ImageTransformConfig,
    /// Host memory, in MiB, for the codec's posteriors of the images seen so far, so that
    /// later epochs skip the encoder ([`crate::vae::LatentCache`]; results are
    /// bit-identical either way). 0 encodes every image at every step.
    pub latent_cache_mib: usize,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            caption: 0.1,
            visual: 0.2,
            text: 0.0,
        }
    }
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            metaqueries: 256,
            timestep_shift: 4.0,
            metaquery_attention: MetaqueryAttention::Causal,
            supervision_visibility: SupervisionVisibility::NoisedTargetOnly,
            precision: Precision::F32,
            trainable: Trainable::Generation,
            checkpoint_layers: true,
            checkpoint_above_tokens: 2048,
        }
    }
}

impl Default for DataSettings {
    fn default() -> Self {
        Self {
            batch: BatchFill::Tokens {
                expected: 32_768,
                max: 36_864,
            },
            max_sample_tokens: 16_384,
            shuffle: true,
            vae_image: ImageTransformConfig::bagel_vae(),
            vit_image: ImageTransformConfig::bagel_vit(),
            latent_cache_mib: 2048,
        }
    }
}

/// The file's tables that belong to the model side; every other key is the trainer's.
const MODEL_SIDE: [&str; 4] = ["loss", "model", "data", "diagnostics"];

impl<'de> Deserialize<'de> for RunConfig {
    /// Split the file's keys between the two parts: `[loss]`, `[model]`, `[data]` and
    /// `[diagnostics]` are the model side's, everything else goes to [`TrainConfig`], which rejects unknown
    /// keys (serde's `flatten` cannot be combined with `deny_unknown_fields`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        fn part<T: Default + serde::de::DeserializeOwned, E: serde::de::Error>(
            table: &mut toml::Table,
            key: &str,
        ) -> Result<T, E> {
            match table.remove(key) {
                Some(value) => value.try_into().map_err(E::custom),
                None => Ok(T::default()),
            }
        }
        let mut table = toml::Table::deserialize(deserializer)?;
        let [loss, model, data, diagnostics] = MODEL_SIDE;
        Ok(Self {
            loss: part(&mut table, loss)?,
            model: part(&mut table, model)?,
            data: part(&mut table, data)?,
            diagnostics: part(&mut table, diagnostics)?,
            trainer: toml::Value::Table(table)
                .try_into()
                .map_err(D::Error::custom)?,
        })
    }
}

impl RunConfig {
    /// The embedded tiny run (`configs/tiny.toml`): hidden 32, 2 layers, PixelCodec latents,
    /// the synthetic shapes data; a few minutes on a 2-core CPU.
    pub fn tiny() -> Self {
        Self::from_toml_str(TINY, "configs/tiny.toml (embedded)")
            .expect("the embedded tiny config parses")
    }

    /// The embedded ShapesBench stage 1 (`configs/shapes_pretrain.toml`): the tiny model
    /// pretrained from scratch with `trainable = "all"`, the understanding CE
    /// (`loss.text = 1`) and flow matching, no UNO terms. Pair it with
    /// [`super::TrainData::ShapesBench`] and a non-zero understanding fraction.
    pub fn shapes_pretrain() -> Self {
        Self::from_toml_str(SHAPES_PRETRAIN, "configs/shapes_pretrain.toml (embedded)")
            .expect("the embedded shapes_pretrain config parses")
    }

    /// Parse TOML text (missing keys take their defaults, unknown keys are errors), without
    /// validating. `source_name` is used in error messages.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self, RunError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            RunError::Trainer(TrainError::ConfigParse {
                source_name: source_name.to_string(),
                message: e.to_string().trim_end().to_string(),
            })
        })
    }

    /// Load a run: `path` (or [`Self::tiny`] when `None`), then the `key=value` overrides,
    /// then [`Self::validate`].
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self, RunError> {
        let config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| RunError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::from_toml_str(&text, &path.display().to_string())?
            }
            None => Self::tiny(),
        };
        let config = config.with_overrides(overrides)?;
        config.validate()?;
        Ok(config)
    }

    /// Apply dotted `key=value` overrides to either part (`optimizer.lr=2e-4`,
    /// `loss.caption=0`, `data.batch.samples=4`). Does not validate ranges.
    pub fn with_overrides<S: AsRef<str>>(self, overrides: &[S]) -> Result<Self, RunError> {
        Ok(apply_overrides(self, overrides)?)
    }

    /// The whole resolved configuration as TOML (what a run folder records).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a run config serialises to TOML")
    }

    /// Check every value is in range; the error names the key.
    pub fn validate(&self) -> Result<(), RunError> {
        self.trainer.validate()?;
        let bad = |key: &'static str, value: &dyn ToString, reason: &'static str| {
            Err(RunError::InvalidConfig {
                key,
                value: value.to_string(),
                reason,
            })
        };
        for (key, w) in [
            ("loss.caption", self.loss.caption),
            ("loss.visual", self.loss.visual),
            ("loss.text", self.loss.text),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return bad(key, &w, "must be finite and >= 0");
            }
        }
        let m = &self.model;
        if m.metaqueries == 0 {
            return bad("model.metaqueries", &0, "must be at least 1");
        }
        if !(m.timestep_shift.is_finite() && m.timestep_shift > 0.0) {
            return bad(
                "model.timestep_shift",
                &m.timestep_shift,
                "must be finite and > 0",
            );
        }
        if m.trainable == Trainable::All && m.precision != Precision::F32 {
            return bad(
                "model.trainable",
                &"all with precision = \"bf16_mixed\"",
                "bf16_mixed stores the understanding expert in bf16 without f32 master \
                 weights, so it cannot train: use precision = \"f32\" to train every weight",
            );
        }
        if m.trainable == Trainable::Generation && self.loss.text > 0.0 {
            return bad(
                "loss.text",
                &self.loss.text,
                "the text loss reaches only the understanding side (its expert, the \
                 embeddings, lm_head, the ViT), which model.trainable = \"generation\" \
                 freezes: it would change no weight; set model.trainable = \"all\" or \
                 loss.text = 0",
            );
        }
        let d = &self.data;
        if !d.batch.is_valid() {
            return bad(
                "data.batch",
                &format!("{:?}", d.batch),
                "needs samples >= 1, or tokens with 0 < expected <= max",
            );
        }
        if d.max_sample_tokens == 0 {
            return bad("data.max_sample_tokens", &0, "must be at least 1");
        }
        for (key, transform) in [
            ("data.vae_image", d.vae_image),
            ("data.vit_image", d.vit_image),
        ] {
            if let Err(e) = transform.validate(key) {
                return Err(RunError::Data(e));
            }
        }
        Ok(())
    }

    /// Put this run's loss weights and timestep shift into `model`, after checking that the
    /// run's metaquery count is the model's (a model's metaqueries are weights: a run cannot
    /// change their number).
    pub fn apply_to(&self, model: &mut BagelConfig) -> Result<(), RunError> {
        if model.num_metaqueries != self.model.metaqueries as usize {
            return Err(RunError::MetaqueryMismatch {
                config: self.model.metaqueries as usize,
                model: model.num_metaqueries,
            });
        }
        model.loss.caption = self.loss.caption;
        model.loss.visual = self.loss.visual;
        model.loss.text = self.loss.text;
        model.timestep_shift = self.model.timestep_shift;
        Ok(())
    }

    /// How this run packs data for `model`: the model's grids and tokens, with the run's
    /// mask settings (`model.metaquery_attention`, `model.supervision_visibility`) and
    /// sample-length limit. Checks that the image transforms' strides are the model's (the
    /// VAE side's is its pixels per latent token, the ViT side's its patch) and that their
    /// largest images fit the position tables.
    pub fn packing(&self, model: &BagelConfig) -> Result<PackingConfig, RunError> {
        let packing = PackingConfig {
            metaquery_attention: self.model.metaquery_attention,
            supervision_visibility: self.model.supervision_visibility,
            max_sample_tokens: self.data.max_sample_tokens,
            ..model.packing()
        };
        for (key, transform, stride, table) in [
            (
                "data.vae_image",
                self.data.vae_image,
                packing.vae_downsample,
                packing.max_latent_size,
            ),
            (
                "data.vit_image",
                self.data.vit_image,
                packing.vit_patch_size,
                packing.vit_max_patches_per_side,
            ),
        ] {
            if transform.stride != stride {
                return Err(RunError::TransformMismatch {
                    key,
                    reason: format!(
                        "stride {} but the model's grid is {stride} pixels per token",
                        transform.stride
                    ),
                });
            }
            if transform.max > stride * table {
                return Err(RunError::TransformMismatch {
                    key,
                    reason: format!(
                        "max {} exceeds the model's position table of {table} x {stride} = {} pixels",
                        transform.max,
                        stride * table
                    ),
                });
            }
        }
        Ok(packing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_side_tables_are_split_off_and_unknown_keys_rejected() {
        let text = "iterations = 7\n[optimizer]\nlr = 3e-4\n[loss]\ncaption = 0.5\n\
                    [model]\nmetaqueries = 4\n[data]\nbatch = { samples = 2 }\n";
        let c = RunConfig::from_toml_str(text, "x.toml").unwrap();
        assert_eq!((c.trainer.iterations, c.trainer.optimizer.lr), (7, 3e-4));
        assert_eq!((c.loss.caption, c.loss.visual), (0.5, 0.2));
        assert_eq!(
            (c.model.metaqueries, c.data.batch),
            (4, BatchFill::Samples(2))
        );
        for (text, key) in [
            ("[loss]\ncaptoin = 1\n", "captoin"),
            ("[data]\nvit_image = { min = 1, maxx = 2 }\n", "maxx"),
            ("[model]\nresolution = { min = 1, max = 2 }\n", "resolution"),
            ("[optimizer]\nlrr = 1\n", "lrr"),
            ("iteration = 1\n", "iteration"),
            ("[data]\nbatch = 1\n", "batch"),
        ] {
            let err = RunConfig::from_toml_str(text, "x.toml").unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(key) && msg.contains("x.toml"), "{msg}");
        }
    }

    #[test]
    fn serialises_flat_and_round_trips() {
        let c = RunConfig::tiny()
            .with_overrides(&[
                "loss.visual=0.5",
                "data.batch.samples=3",
                "optimizer.lr=1e-3",
            ])
            .unwrap();
        let text = c.to_toml();
        assert!(
            text.contains("iterations = ") && !text.contains("[trainer]"),
            "{text}"
        );
        assert_eq!(RunConfig::from_toml_str(&text, "round trip").unwrap(), c);
    }

    #[test]
    fn overrides_reach_both_parts_and_validation_names_the_key() {
        let c = RunConfig::default()
            .with_overrides(&["data.vae_image.max=768", "iterations=3"])
            .unwrap();
        assert_eq!((c.data.vae_image.max, c.trainer.iterations), (768, 3));
        for (raw, key) in [
            ("loss.caption=-1", "loss.caption"),
            ("loss.visual=nan", "loss.visual"),
            ("loss.text=-0.5", "loss.text"),
            ("loss.text=inf", "loss.text"),
            ("model.metaqueries=0", "model.metaqueries"),
            ("model.timestep_shift=0", "model.timestep_shift"),
            ("data.vae_image.min=2048", "data.vae_image"),
            ("data.vit_image.stride=0", "data.vit_image"),
            ("data.batch.tokens.expected=0", "data.batch"),
            ("data.max_sample_tokens=0", "data.max_sample_tokens"),
            ("optimizer.lr=0", "optimizer.lr"),
        ] {
            let err = RunConfig::default()
                .with_overrides(&[raw])
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains(key), "{raw}: {err}");
        }
        let err = RunConfig::default()
            .with_overrides(&["model.trainable=\"all\"", "model.precision=\"bf16_mixed\""])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("model.trainable"), "{err}");
        // A text loss with the understanding side frozen would train nothing.
        let err = RunConfig::default()
            .with_overrides(&["loss.text=0.5"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("loss.text") && err.to_string().contains("0.5"),
            "{err}"
        );
        RunConfig::default()
            .with_overrides(&["loss.text=0.5", "model.trainable=\"all\""])
            .unwrap()
            .validate()
            .unwrap();
        let err = RunConfig::default()
            .with_overrides(&["model.trainable=\"everything\""])
            .unwrap_err();
        assert!(err.to_string().contains("everything"), "{err}");
        let err = RunConfig::default()
            .with_overrides(&["loss.captoin=1"])
            .unwrap_err();
        assert!(err.to_string().contains("loss.captoin"), "{err}");
    }

    #[test]
    fn apply_to_sets_weights_and_refuses_other_metaquery_counts() {
        let mut model = BagelConfig::tiny(64, Default::default());
        let run = RunConfig::tiny()
            .with_overrides(&[
                "loss.caption=0.3",
                "loss.text=0.7",
                "model.timestep_shift=2.5",
            ])
            .unwrap();
        run.apply_to(&mut model).unwrap();
        assert_eq!(
            (model.loss.caption, model.loss.visual, model.loss.text),
            (0.3, 0.2, 0.7)
        );
        assert_eq!(model.timestep_shift, 2.5);
        let err = RunConfig::default().apply_to(&mut model).unwrap_err();
        assert!(
            matches!(
                err,
                RunError::MetaqueryMismatch {
                    config: 256,
                    model: 4
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn shapes_pretrain_trains_everything_on_the_text_and_flow_losses() {
        let c = RunConfig::shapes_pretrain();
        c.validate().unwrap();
        assert_eq!(c.model.trainable, Trainable::All);
        assert_eq!(
            (c.loss.text, c.loss.caption, c.loss.visual),
            (1.0, 0.0, 0.0)
        );
        assert!(c.data.shuffle);
        // The defaults leave post-training as it was.
        let tiny = RunConfig::tiny();
        assert_eq!(
            (tiny.model.trainable, tiny.loss.text),
            (Trainable::Generation, 0.0)
        );
        let text = c.to_toml();
        assert!(text.contains("trainable = \"all\""), "{text}");
        assert_eq!(RunConfig::from_toml_str(&text, "round trip").unwrap(), c);
    }

    #[test]
    fn packing_takes_the_mask_ablations_and_checks_the_transforms() {
        let model = BagelConfig::tiny(64, Default::default());
        let run = RunConfig::tiny()
            .with_overrides(&[
                "model.metaquery_attention=\"full\"",
                "model.supervision_visibility=\"everything\"",
                "data.max_sample_tokens=99",
            ])
            .unwrap();
        let packing = run.packing(&model).unwrap();
        assert_eq!(packing.metaquery_attention, MetaqueryAttention::Full);
        assert_eq!(
            packing.supervision_visibility,
            SupervisionVisibility::Everything
        );
        assert_eq!(packing.max_sample_tokens, 99);
        // The paper's 16-px VAE side does not fit the tiny model's 4-px tokens.
        let err = RunConfig::default().packing(&model).unwrap_err();
        assert!(
            matches!(
                err,
                RunError::TransformMismatch {
                    key: "data.vae_image",
                    ..
                }
            ),
            "{err}"
        );
        // Nor does a ViT side larger than the tiny ViT's 8 x 4-px position table.
        let err = RunConfig::tiny()
            .with_overrides(&["data.vit_image.max=64"])
            .unwrap()
            .packing(&model)
            .unwrap_err();
        assert!(err.to_string().contains("data.vit_image"), "{err}");
    }
}
