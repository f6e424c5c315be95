//! The tensor edge: index lists and masks as Burn tensors, for the model's forward.

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

use crate::mask::SampleMask;

impl SampleMask {
    /// The dense mask as a `[1, 1, L, L]` bool tensor (`true` = masked), the layout
    /// `burn::tensor::module::attention` broadcasts over batch and heads.
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 4, Bool> {
        let n = self.len();
        Tensor::from_data(TensorData::new(self.dense(), [1, 1, n, n]), device)
    }
}

/// A list of token positions (or ids) as a 1-D int tensor, for `select`/`gather`.
pub fn index_tensor<B: Backend>(indexes: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = indexes.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [indexes.len()]), device)
}
