//! The float types a BAGEL model trains in.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType};
use serde::{Deserialize, Serialize};

use super::Bagel;

/// How the decoder computes during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32: the reference path, bit-exact on every backend.
    #[default]
    F32,
    /// bf16 mixed precision in the decoder ([`uno_mot::MotModel::with_compute_dtype`]):
    /// the frozen understanding expert stored in bf16 (no f32 copy exists), the trainable
    /// generation expert kept as f32 master weights (f32 gradients, AdamW moments and EMA)
    /// and cast at use, every decoder activation in bf16. Embeddings, ViT, connector,
    /// `lm_head` and losses stay f32. Backends: flex and cuda; ndarray and wgpu have no
    /// bf16.
    Bf16Mixed,
}

impl Precision {
    /// Whether `B` computes in this precision on `device` (`false`: bf16 on ndarray or
    /// wgpu).
    pub fn supported<B: Backend>(self, device: &B::Device) -> bool {
        match self {
            Self::F32 => true,
            Self::Bf16Mixed => B::supports_dtype(device, DType::BF16),
        }
    }
}

impl<B: Backend> Bagel<B> {
    /// The model set up to train in `precision` (see [`Precision`]); `F32` leaves it as it
    /// is. Apply it again after loading weights: loaded tensors arrive in f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        if precision == Precision::Bf16Mixed {
            self.language_model = self
                .language_model
                .store_und_as(FloatDType::BF16)
                .with_compute_dtype(FloatDType::BF16);
        }
        self
    }
}
