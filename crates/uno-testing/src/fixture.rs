//! [`Fixture`]: a safetensors file written by a reference script under `tools/`, read back
//! by the tests that compare against it (tensors by key, with dtype and shape checked).
//!
//! The model-specific loaders (a module's parameters by path, a decoder layer by BAGEL
//! name) stay with each crate's tests; this is the shared part: bytes to typed values.

use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::{Dtype, SafeTensors};

/// A reference file, held as bytes; every accessor panics with the file and key at fault
/// (a broken fixture is a broken test, not a user error).
pub struct Fixture {
    bytes: Vec<u8>,
    name: String,
}

impl Fixture {
    /// Read the file at `path`.
    #[track_caller]
    pub fn read(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Self {
            bytes,
            name: path.display().to_string(),
        }
    }

    /// A fixture embedded with `include_bytes!`.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.to_vec(),
            name: name.to_string(),
        }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|e| panic!("{}: not a safetensors file: {e}", self.name))
    }

    /// Every tensor key.
    pub fn keys(&self) -> Vec<String> {
        self.st().names().into_iter().map(str::to_string).collect()
    }

    /// Whether the file holds tensor `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.st().tensor(key).is_ok()
    }

    /// The `__metadata__` value of `key`, if any.
    #[track_caller]
    pub fn metadata(&self, key: &str) -> Option<String> {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes)
            .unwrap_or_else(|e| panic!("{}: header: {e}", self.name));
        meta.metadata().as_ref().and_then(|m| m.get(key).cloned())
    }

    /// Raw little-endian data and shape of `key`, checked to be of `dtype`.
    #[track_caller]
    fn raw(&self, key: &str, dtype: Dtype) -> (Vec<u8>, Vec<usize>) {
        let st = self.st();
        let view = st
            .tensor(key)
            .unwrap_or_else(|e| panic!("{}: key {key}: {e}", self.name));
        assert_eq!(view.dtype(), dtype, "{}: {key} is not {dtype:?}", self.name);
        (view.data().to_vec(), view.shape().to_vec())
    }

    /// A float32 tensor's values and shape.
    #[track_caller]
    pub fn f32(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        let (bytes, shape) = self.raw(key, Dtype::F32);
        let values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (values, shape)
    }

    /// A float32 tensor's values.
    #[track_caller]
    pub fn values(&self, key: &str) -> Vec<f32> {
        self.f32(key).0
    }

    /// An int64 tensor's values.
    #[track_caller]
    pub fn i64s(&self, key: &str) -> Vec<i64> {
        let (bytes, _) = self.raw(key, Dtype::I64);
        bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    }

    /// An int64 tensor of indexes as `usize`s.
    #[track_caller]
    pub fn usizes(&self, key: &str) -> Vec<usize> {
        self.i64s(key).into_iter().map(|v| v as usize).collect()
    }

    /// A uint8 tensor's values and shape (bool masks).
    #[track_caller]
    pub fn u8s(&self, key: &str) -> (Vec<u8>, Vec<usize>) {
        self.raw(key, Dtype::U8)
    }

    /// A float32 tensor on `device`, its rank checked.
    #[track_caller]
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        device: &B::Device,
    ) -> Tensor<B, D> {
        let (data, shape) = self.f32(key);
        assert_eq!(shape.len(), D, "{}: {key}: rank", self.name);
        Tensor::from_data(TensorData::new(data, shape), device)
    }
}
