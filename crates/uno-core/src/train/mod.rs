//! UNO post-training of BAGEL with the generic [`crate::trainer`] loop.
//!
//! * [`run`]: a whole run from a [`RunSpec`] (model, data, [`RunConfig`], resume), the
//!   entry point behind `examples/train_bagel.rs`; [`run_parallel`]: the same, data
//!   parallel over several devices;
//! * [`RunConfig`]: the run's one TOML file (trainer settings plus `[loss]`, `[model]`,
//!   `[data]`), applied to a model with [`RunConfig::apply_to`];
//! * the pieces it is made of, for custom loops: the model side ([`UnoTrainee`], a
//!   [`TrainStep`](crate::trainer::TrainStep)), the data side ([`PackedBatches`], a
//!   [`DataSource`](crate::trainer::DataSource) over any [`Dataset`](crate::data::Dataset))
//!   and held-out evaluation ([`HeldOut`]);
//! * [`gradient_alignment`]: how the caption and visual gradients align with the flow
//!   gradient per decoder layer (the paper's Figure 8).

mod alignment;
mod batches;
mod error;
mod eval;
mod folder;
mod record;
mod run;
mod run_config;
mod trainee;

pub use alignment::{ExpertGradients, LayerAlignment, TermAlignment, gradient_alignment};
pub use batches::{BatchFill, PackedBatches, TrainBatch, item_images, item_vit_target};
pub use error::RunError;
pub use eval::HeldOut;
pub use folder::check_not_foreign;
pub use record::{RUN_CONFIG_FILE, RUN_INPUTS_FILE, RunInputs, config_changes, save_record};
pub use run::{
    HELD_OUT_SEED, ModelSource, RunReport, RunSpec, ShapesBenchData, TOKENIZER_FILE, TrainData,
    devices, run, run_parallel,
};
pub use run_config::{
    DataSettings, DiagnosticsSettings, LossWeights, ModelSettings, RunConfig, Trainable,
};
pub use trainee::UnoTrainee;

/// The paper's Table 7 loss ablations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ablation {
    /// Flow matching only (plain BAGEL fine-tuning).
    Sft,
    /// Flow matching + caption (language supervision).
    Language,
    /// Flow matching + metaquery regression (visual supervision).
    Visual,
    /// All three (UNO).
    Joint,
}

impl Ablation {
    /// `(caption weight, visual weight)`: the paper's 0.1 and 0.2, or 0 when disabled.
    pub fn weights(self) -> (f64, f64) {
        match self {
            Self::Sft => (0.0, 0.0),
            Self::Language => (0.1, 0.0),
            Self::Visual => (0.0, 0.2),
            Self::Joint => (0.1, 0.2),
        }
    }

    /// Set `loss`'s weights to this ablation's (a disabled objective also gets no split in
    /// the data: [`run`] packs splits only for positive weights).
    pub fn apply(self, loss: &mut LossWeights) {
        (loss.caption, loss.visual) = self.weights();
    }
}
