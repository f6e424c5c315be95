//! [`WeightWriter`]: named tensors to one safetensors file, written atomically.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::{Dtype, SafeTensorError, View};

use crate::CheckpointError;
use crate::atomic::write_atomically;
use crate::convert::{Layout, SaveDtype, encode};

/// Produces a tensor's data (in Burn's shape and order) when the file is written.
type Fetch<'a> = Box<dyn Fn() -> Result<TensorData, CheckpointError> + 'a>;

struct Pending<'a> {
    burn_shape: Vec<usize>,
    layout: Layout,
    fetch: Fetch<'a>,
}

/// Collects named tensors and writes them to one safetensors file, atomically.
///
/// Tensors are not copied when added: the writer keeps a handle (a clone of the tensor, or a
/// closure) and converts each one to the output dtype only while writing it, so saving a
/// model needs host memory for its largest tensor, not for the whole model.
///
/// [`WeightWriter::write`] writes a temporary file in the target's directory, fsyncs it and
/// renames it over the target: the target is either its old content or the complete new
/// file, never a partial one, and a [`WeightReader`](crate::WeightReader) that has the old
/// file mapped keeps reading the old data. On failure the temporary file is removed.
///
/// The lifetime `'a` is that of borrowed data sources ([`WeightWriter::add_deferred`]);
/// writers that only own tensors are `WeightWriter<'static>`.
pub struct WeightWriter<'a> {
    dtype: SaveDtype,
    metadata: BTreeMap<String, String>,
    entries: BTreeMap<String, Pending<'a>>,
}

impl std::fmt::Debug for WeightWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightWriter")
            .field("dtype", &self.dtype)
            .field("metadata", &self.metadata)
            .field("keys", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> WeightWriter<'a> {
    /// An empty writer whose float tensors are written as `dtype`.
    pub fn new(dtype: SaveDtype) -> Self {
        Self {
            dtype,
            metadata: BTreeMap::new(),
            entries: BTreeMap::new(),
        }
    }

    /// The output dtype.
    pub fn dtype(&self) -> SaveDtype {
        self.dtype
    }

    /// Add a `__metadata__` entry (builder form).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_metadata(key, value);
        self
    }

    /// Add or replace a `__metadata__` entry.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// Tensor names added so far, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of tensors added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no tensor was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` was added.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Add a tensor produced on demand while writing, in Burn's shape `burn_shape` (written
    /// as `layout.file_shape(burn_shape)`). The closure runs once, during
    /// [`WeightWriter::write`]; an error it returns aborts the write (the target file is left
    /// untouched). This streams tensors from elsewhere, e.g. copying the keys of a
    /// [`WeightReader`](crate::WeightReader) one at a time with `read_data`.
    pub fn add_deferred(
        &mut self,
        key: impl Into<String>,
        burn_shape: Vec<usize>,
        layout: Layout,
        fetch: impl Fn() -> Result<TensorData, CheckpointError> + 'a,
    ) -> Result<(), CheckpointError> {
        let key = key.into();
        layout.check_rank(&key, burn_shape.len())?;
        if self.entries.contains_key(&key) {
            return Err(CheckpointError::DuplicateKey { key });
        }
        self.entries.insert(
            key,
            Pending {
                burn_shape,
                layout,
                fetch: Box::new(fetch),
            },
        );
        Ok(())
    }

    /// Add host data (any float dtype), in Burn's shape and order.
    pub fn add_data(
        &mut self,
        key: impl Into<String>,
        data: TensorData,
        layout: Layout,
    ) -> Result<(), CheckpointError> {
        let key = key.into();
        check_float(&key, &data)?;
        let shape = data.shape.as_slice().to_vec();
        self.add_deferred(key, shape, layout, move || Ok(data.clone()))
    }

    /// Add a float tensor, written as stored.
    pub fn add_tensor<B: Backend, const D: usize>(
        &mut self,
        key: impl Into<String>,
        tensor: Tensor<B, D>,
    ) -> Result<(), CheckpointError> {
        self.add_tensor_as(key, tensor, Layout::AsStored)
    }

    /// Add a float tensor with a [`Layout`] (its shape is Burn's).
    pub fn add_tensor_as<B: Backend, const D: usize>(
        &mut self,
        key: impl Into<String>,
        tensor: Tensor<B, D>,
        layout: Layout,
    ) -> Result<(), CheckpointError> {
        let key = key.into();
        let dtype = tensor.dtype();
        if !dtype.is_float() {
            return Err(CheckpointError::UnsupportedDtype {
                key,
                dtype: format!("{dtype:?}"),
                expected: "a float tensor (F32, F16, BF16 or F64)",
            });
        }
        let shape = tensor.shape().as_slice().to_vec();
        self.add_deferred(key, shape, layout, move || Ok(tensor.to_data()))
    }

    /// Add a Burn Linear weight `[in, out]`, written as PyTorch's `[out, in]`.
    pub fn add_linear_weight<B: Backend>(
        &mut self,
        key: impl Into<String>,
        weight: Tensor<B, 2>,
    ) -> Result<(), CheckpointError> {
        self.add_tensor_as(key, weight, Layout::TorchLinear)
    }

    /// Add a module parameter in Burn's record form (after its save mapper, the form
    /// [`WeightReader::load_param`](crate::WeightReader::load_param) reads back).
    pub fn add_param<B: Backend, const D: usize>(
        &mut self,
        key: impl Into<String>,
        param: &Param<Tensor<B, D>>,
        layout: Layout,
    ) -> Result<(), CheckpointError> {
        self.add_tensor_as(key, param.transform_for_save().into_value(), layout)
    }

    /// Add a `burn::nn::Linear` (default row layout) as PyTorch's `{prefix}.weight`
    /// (`[out, in]`) and `{prefix}.bias` (if any).
    pub fn add_linear<B: Backend>(
        &mut self,
        prefix: &str,
        linear: &Linear<B>,
    ) -> Result<(), CheckpointError> {
        self.add_param(
            format!("{prefix}.weight"),
            &linear.weight,
            Layout::TorchLinear,
        )?;
        if let Some(bias) = &linear.bias {
            self.add_param(format!("{prefix}.bias"), bias, Layout::AsStored)?;
        }
        Ok(())
    }

    /// Add a `burn::nn::LayerNorm` as PyTorch's `{prefix}.weight` (gamma) and
    /// `{prefix}.bias` (beta, if any).
    pub fn add_layer_norm<B: Backend>(
        &mut self,
        prefix: &str,
        norm: &LayerNorm<B>,
    ) -> Result<(), CheckpointError> {
        self.add_param(format!("{prefix}.weight"), &norm.gamma, Layout::AsStored)?;
        if let Some(beta) = &norm.beta {
            self.add_param(format!("{prefix}.bias"), beta, Layout::AsStored)?;
        }
        Ok(())
    }

    /// Add a `burn::nn::Embedding` as `{prefix}.weight`.
    pub fn add_embedding<B: Backend>(
        &mut self,
        prefix: &str,
        embedding: &Embedding<B>,
    ) -> Result<(), CheckpointError> {
        self.add_param(
            format!("{prefix}.weight"),
            &embedding.weight,
            Layout::AsStored,
        )
    }

    /// Write all tensors to `path` atomically ([`write_atomically`]: temporary file in the
    /// same directory, fsync, rename over `path`, then a best-effort fsync of the directory).
    ///
    /// On error `path` is untouched and no temporary file is left behind.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let path = path.as_ref();
        write_atomically(path, |tmp| self.write_temp(path, tmp))
    }

    /// Serialize everything to `tmp` (with the safetensors crate's own writer).
    fn write_temp(&self, path: &Path, tmp: &Path) -> Result<(), CheckpointError> {
        let error = RefCell::new(None);
        let views: Vec<(&str, EntryView<'_, 'a>)> = self
            .entries
            .iter()
            .map(|(key, pending)| {
                let view = EntryView {
                    key,
                    file_shape: pending.layout.file_shape(&pending.burn_shape),
                    pending,
                    dtype: self.dtype,
                    error: &error,
                };
                (key.as_str(), view)
            })
            .collect();
        let metadata: Option<HashMap<String, String>> = (!self.metadata.is_empty()).then(|| {
            self.metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        // safetensors writes through its own `tempfile` (mode 0600) renamed over `tmp`: note
        // the mode an ordinary create gives (0666 less the umask, as every other file of a
        // model folder has) and put it back afterwards.
        let mode = std::fs::File::create(tmp)
            .and_then(|f| f.metadata())
            .map(|m| m.permissions())
            .map_err(|source| CheckpointError::Io {
                action: "create",
                path: tmp.to_path_buf(),
                source,
            })?;
        let written = safetensors::serialize_to_file(views, metadata, tmp);
        // A tensor that failed to convert is the root cause of whatever followed.
        if let Some(e) = error.into_inner() {
            return Err(e);
        }
        written.map_err(|e| match e {
            SafeTensorError::IoError(source) => CheckpointError::Io {
                action: "write",
                path: path.to_path_buf(),
                source,
            },
            other => CheckpointError::Write {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
        std::fs::set_permissions(tmp, mode).map_err(|source| CheckpointError::Io {
            action: "set the permissions of",
            path: tmp.to_path_buf(),
            source,
        })
    }
}

fn check_float(key: &str, data: &TensorData) -> Result<(), CheckpointError> {
    if data.dtype.is_float() {
        Ok(())
    } else {
        Err(CheckpointError::UnsupportedDtype {
            key: key.to_string(),
            dtype: format!("{:?}", data.dtype),
            expected: "a float tensor (F32, F16, BF16 or F64)",
        })
    }
}

/// One tensor as the safetensors serializer sees it; converts on `data()`.
struct EntryView<'w, 'a> {
    key: &'w str,
    pending: &'w Pending<'a>,
    file_shape: Vec<usize>,
    dtype: SaveDtype,
    /// The first conversion error; later tensors are skipped once it is set.
    error: &'w RefCell<Option<CheckpointError>>,
}

impl EntryView<'_, '_> {
    fn numel(&self) -> usize {
        self.file_shape.iter().product()
    }

    fn bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let data = (self.pending.fetch)()?;
        check_float(self.key, &data)?;
        let burn_shape = &self.pending.burn_shape;
        if data.shape.as_slice() != burn_shape.as_slice() {
            return Err(CheckpointError::InvalidTensor {
                key: self.key.to_string(),
                reason: format!(
                    "declared shape {burn_shape:?}, data has shape {:?}",
                    data.shape.as_slice()
                ),
            });
        }
        let values = data.convert::<f32>().into_vec::<f32>().map_err(|e| {
            CheckpointError::InvalidTensor {
                key: self.key.to_string(),
                reason: format!("cannot read as f32: {e:?}"),
            }
        })?;
        if values.len() != self.numel() {
            return Err(CheckpointError::InvalidTensor {
                key: self.key.to_string(),
                reason: format!("{} values for shape {burn_shape:?}", values.len()),
            });
        }
        let values = self.pending.layout.to_file(values, burn_shape);
        Ok(encode(&values, self.dtype))
    }
}

impl View for EntryView<'_, '_> {
    fn dtype(&self) -> Dtype {
        self.dtype.safetensors_dtype()
    }

    fn shape(&self) -> &[usize] {
        &self.file_shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if self.error.borrow().is_none() {
            match self.bytes() {
                Ok(bytes) => return Cow::Owned(bytes),
                Err(e) => *self.error.borrow_mut() = Some(e),
            }
        }
        // The write is abandoned (the temporary file is deleted): skip the remaining work.
        Cow::Borrowed(&[])
    }

    fn data_len(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}
