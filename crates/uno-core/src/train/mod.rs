//! UNO post-training of BAGEL with the generic [`crate::trainer`] loop: the model side
//! ([`UnoTrainee`], a [`TrainStep`](crate::trainer::TrainStep)) and the data side
//! ([`PackedBatches`], a [`DataSource`](crate::trainer::DataSource) over any
//! [`Dataset`](crate::data::Dataset)).

mod batches;
mod eval;
mod trainee;

pub use batches::{PackedBatches, TrainBatch, item_images};
pub use eval::HeldOut;
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

    /// Which supervision splits the data should carry: `(caption, metaqueries)`. A
    /// disabled objective gets no split, so it costs no tokens.
    pub fn splits(self) -> (bool, bool) {
        let (caption, visual) = self.weights();
        (caption > 0.0, visual > 0.0)
    }
}
