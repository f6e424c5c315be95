//! Host-side element conversion (BF16/F16/F32/F64 <-> f32) and the Linear transpose.
//!
//! Everything goes through `f32` on the host: backends are handed `f32` data and convert it
//! to their own float element, so a backend without bf16 (ndarray) never sees bf16 data.

use half::{bf16, f16};
use safetensors::Dtype;

use crate::CheckpointError;

/// How a tensor is laid out in the file relative to the Burn tensor it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Same shape and element order in the file and in Burn.
    #[default]
    AsStored,
    /// A Linear weight: PyTorch's `nn.Linear.weight` is `[out, in]`, Burn's
    /// `burn::nn::Linear::weight` is `[in, out]` (`y = x W + b`). Reading transposes
    /// `[out, in] -> [in, out]`, writing transposes back. Rank 2 only.
    TorchLinear,
}

impl Layout {
    /// The file's shape for a Burn shape (reversed for [`Layout::TorchLinear`]).
    pub fn file_shape(self, burn_shape: &[usize]) -> Vec<usize> {
        match self {
            Layout::AsStored => burn_shape.to_vec(),
            Layout::TorchLinear => burn_shape.iter().rev().copied().collect(),
        }
    }

    pub(crate) fn check_rank(self, key: &str, rank: usize) -> Result<(), CheckpointError> {
        match self {
            Layout::TorchLinear if rank != 2 => Err(CheckpointError::UnsupportedLayout {
                key: key.to_string(),
                layout: self,
                rank,
            }),
            _ => Ok(()),
        }
    }

    /// Reorder row-major `values` of file shape `file_shape` into Burn's order.
    pub(crate) fn to_burn(self, values: Vec<f32>, file_shape: &[usize]) -> Vec<f32> {
        match (self, file_shape) {
            (Layout::TorchLinear, &[rows, cols]) => transpose(&values, rows, cols),
            _ => values,
        }
    }

    /// Reorder row-major `values` of Burn shape `burn_shape` into the file's order.
    pub(crate) fn to_file(self, values: Vec<f32>, burn_shape: &[usize]) -> Vec<f32> {
        // A 2-D transpose is its own inverse up to the shape it is read with.
        self.to_burn(values, burn_shape)
    }
}

/// Element type of the tensors a [`WeightWriter`](crate::WeightWriter) writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveDtype {
    /// 32-bit floats: a lossless round trip of f32 models.
    #[default]
    F32,
    /// bfloat16 (round to nearest even), the dtype of BAGEL's release files.
    BF16,
    /// IEEE half precision (round to nearest even).
    F16,
}

impl SaveDtype {
    /// The safetensors dtype written.
    pub fn safetensors_dtype(self) -> Dtype {
        match self {
            SaveDtype::F32 => Dtype::F32,
            SaveDtype::BF16 => Dtype::BF16,
            SaveDtype::F16 => Dtype::F16,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            SaveDtype::F32 => 4,
            SaveDtype::BF16 | SaveDtype::F16 => 2,
        }
    }
}

/// Row-major `[rows, cols]` -> `[cols, rows]`.
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    debug_assert_eq!(values.len(), rows * cols);
    let mut out = vec![0.0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Decode little-endian `bytes` of `dtype` to `f32`.
///
/// F32, F16 and BF16 are exact; F64 is rounded to the nearest f32. Anything else (integers,
/// bool, fp8, ...) is [`CheckpointError::UnsupportedDtype`].
pub(crate) fn decode_f32(
    key: &str,
    dtype: Dtype,
    bytes: &[u8],
) -> Result<Vec<f32>, CheckpointError> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    let values = match dtype {
        Dtype::F32 => each::<4>(bytes, f32::from_le_bytes),
        Dtype::BF16 => each::<2>(bytes, |b| bf16::from_bits(u16::from_le_bytes(b)).to_f32()),
        Dtype::F16 => each::<2>(bytes, |b| f16::from_bits(u16::from_le_bytes(b)).to_f32()),
        Dtype::F64 => each::<8>(bytes, |b| f64::from_le_bytes(b) as f32),
        other => {
            return Err(CheckpointError::UnsupportedDtype {
                key: key.to_string(),
                dtype: other.to_string(),
                expected: "a float tensor (F32, F16, BF16 or F64)",
            });
        }
    };
    Ok(values)
}

/// Encode `values` as little-endian `dtype` bytes.
pub(crate) fn encode(values: &[f32], dtype: SaveDtype) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    match dtype {
        SaveDtype::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        SaveDtype::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes())),
        SaveDtype::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes())),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_is_row_major() {
        // [[1, 2, 3], [4, 5, 6]] -> [[1, 4], [2, 5], [3, 6]]
        assert_eq!(
            transpose(&[1., 2., 3., 4., 5., 6.], 2, 3),
            vec![1., 4., 2., 5., 3., 6.]
        );
    }

    #[test]
    fn bf16_encode_decode_exact_values() {
        let v = [1.0f32, -2.5, 3.140625, 0.0];
        let bytes = encode(&v, SaveDtype::BF16);
        assert_eq!(bytes.len(), 8);
        assert_eq!(decode_f32("k", Dtype::BF16, &bytes).unwrap(), v.to_vec());
    }
}
