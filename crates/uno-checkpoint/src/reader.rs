//! [`WeightReader`]: memory-mapped, single-file or sharded safetensors checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::CheckpointError;
use crate::convert::{Layout, decode_f32};
use crate::error::first_keys;

/// What [`WeightReader::finish`] does with checkpoint keys the model never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnexpectedKeys {
    /// Fail with [`CheckpointError::UnexpectedKeys`] (listing the first few).
    Error,
    /// Print one warning line to stderr listing the first few, and succeed.
    #[default]
    Warn,
    /// Succeed silently (they are still listed in the [`LoadReport`]).
    Ignore,
}

/// The outcome of a load, from [`WeightReader::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// How many keys were read (or explicitly marked as consumed).
    pub consumed: usize,
    /// Keys of the checkpoint never read nor marked, sorted.
    pub unexpected: Vec<String>,
}

/// One memory-mapped safetensors file.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

/// Where one tensor lives: its shard and absolute byte range in that shard's map.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// `*.safetensors.index.json` (Hugging Face / BAGEL sharded checkpoints).
#[derive(Deserialize)]
struct IndexFile {
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    weight_map: BTreeMap<String, String>,
}

/// Read-only, memory-mapped access to the tensors of a safetensors checkpoint: one
/// `*.safetensors` file, or the shards listed by a `*.safetensors.index.json`.
///
/// Opening parses the headers only; the data stays in the page cache of the mapped files
/// and is converted tensor by tensor on request, so reading a 29 GB `ema.safetensors` needs
/// the memory of the largest tensor (as f32), not of the file.
///
/// The reader also tracks which keys were consumed, so a loader can report the checkpoint
/// keys it never used ([`WeightReader::finish`]) and, with [`WeightReader::check_keys`], all
/// the keys it needs that are absent, before loading anything.
///
/// # Files must not change while mapped
///
/// The files are memory-mapped: truncating or rewriting one while a reader holds it is
/// undefined behaviour (typically a `SIGBUS`). Writers of this module never rewrite a file in
/// place (they rename a new file over it, which leaves existing maps intact), but other
/// programs must not modify a checkpoint while it is being read.
pub struct WeightReader {
    origin: PathBuf,
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
    index_metadata: Option<serde_json::Value>,
    consumed: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for WeightReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightReader")
            .field("origin", &self.origin)
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.entries.len())
            .finish()
    }
}

/// Memory-map `path` read-only.
fn map_file(path: &Path) -> Result<Mmap, CheckpointError> {
    let file = File::open(path).map_err(CheckpointError::io("open", path))?;
    let len = file
        .metadata()
        .map_err(CheckpointError::io("stat", path))?
        .len();
    if len < 8 {
        // Also avoids mapping an empty file, which some platforms refuse.
        return Err(CheckpointError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("{len} bytes, shorter than the 8-byte header length"),
        });
    }
    // SAFETY: `Mmap::map` is unsafe because the mapped bytes can change (or vanish, after a
    // truncation) if another process modifies the file while it is mapped, which Rust's
    // aliasing rules cannot express. We map read-only and only ever read through `&[u8]`
    // slices bounds-checked against the header; the contract that checkpoint files are not
    // modified while a `WeightReader` holds them is documented on `WeightReader`. This is
    // the only `unsafe` of the checkpoint module.
    unsafe { Mmap::map(&file) }.map_err(CheckpointError::io("memory-map", path))
}

/// One opened safetensors file: the map, its tensors (shard index 0) and `__metadata__`.
struct OpenedShard {
    shard: Shard,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
}

/// Map and parse one safetensors file.
fn open_shard(path: &Path) -> Result<OpenedShard, CheckpointError> {
    let mmap = map_file(path)?;
    let corrupt = |e: safetensors::SafeTensorError| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // Validates the header: UTF-8 JSON, offsets contiguous and consistent with
    // dtype x shape, data exactly filling the rest of the file.
    let (header_len, meta) = SafeTensors::read_metadata(&mmap).map_err(corrupt)?;
    let data_start = 8 + header_len;
    let mut entries = BTreeMap::new();
    for (name, info) in meta.tensors() {
        let (s, e) = info.data_offsets;
        entries.insert(
            name,
            Entry {
                shard: 0,
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: data_start + s,
                end: data_start + e,
            },
        );
    }
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(OpenedShard {
        shard: Shard {
            path: path.to_path_buf(),
            mmap,
        },
        entries,
        metadata,
    })
}

fn lock(m: &Mutex<BTreeSet<String>>) -> MutexGuard<'_, BTreeSet<String>> {
    // The set is always valid: a panic elsewhere while holding it cannot corrupt it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl WeightReader {
    /// Open a checkpoint: an index (`*.json`, see [`WeightReader::open_index`]) or a single
    /// safetensors file (anything else, see [`WeightReader::open_file`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        if path.extension().is_some_and(|e| e == "json") {
            Self::open_index(path)
        } else {
            Self::open_file(path)
        }
    }

    /// Open one `*.safetensors` file.
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let OpenedShard {
            shard,
            entries,
            metadata,
        } = open_shard(path)?;
        Ok(Self {
            origin: path.to_path_buf(),
            shards: vec![shard],
            entries,
            metadata,
            index_metadata: None,
            consumed: Mutex::new(BTreeSet::new()),
        })
    }

    /// Open a sharded checkpoint from its index, e.g. `model.safetensors.index.json`:
    /// `{"metadata": {...}, "weight_map": {"key": "shard-00001-of-00002.safetensors", ...}}`.
    ///
    /// Shard paths are relative to the index's directory. Every shard is opened and every
    /// key of the map checked against its shard up front. The reader's keys are those of
    /// the weight map (a shard's tensors the map does not list are not visible).
    pub fn open_index(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let index_path = path.as_ref();
        let text =
            std::fs::read_to_string(index_path).map_err(CheckpointError::io("read", index_path))?;
        let index: IndexFile =
            serde_json::from_str(&text).map_err(|e| CheckpointError::InvalidIndex {
                path: index_path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let dir = index_path.parent().unwrap_or_else(|| Path::new("."));

        // Shard file -> first key mapped to it (for error messages), in file order.
        let mut shard_files: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, file) in &index.weight_map {
            shard_files.entry(file.as_str()).or_insert(key.as_str());
        }

        let mut shards = Vec::with_capacity(shard_files.len());
        let mut shard_entries = Vec::with_capacity(shard_files.len());
        let mut shard_ids: BTreeMap<&str, usize> = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (file, first_key) in &shard_files {
            let shard_path = dir.join(file);
            if !shard_path.is_file() {
                return Err(CheckpointError::MissingShard {
                    index: index_path.to_path_buf(),
                    shard: shard_path,
                    key: (*first_key).to_string(),
                });
            }
            let OpenedShard {
                shard,
                entries,
                metadata: meta,
            } = open_shard(&shard_path)?;
            for (k, v) in meta {
                metadata.entry(k).or_insert(v);
            }
            shard_ids.insert(file, shards.len());
            shards.push(shard);
            shard_entries.push(entries);
        }

        let mut entries = BTreeMap::new();
        for (key, file) in &index.weight_map {
            let id = shard_ids[file.as_str()];
            let Some(entry) = shard_entries[id].get(key) else {
                return Err(CheckpointError::KeyNotInShard {
                    index: index_path.to_path_buf(),
                    shard: shards[id].path.clone(),
                    key: key.clone(),
                });
            };
            entries.insert(
                key.clone(),
                Entry {
                    shard: id,
                    ..entry.clone()
                },
            );
        }

        Ok(Self {
            origin: index_path.to_path_buf(),
            shards,
            entries,
            metadata,
            index_metadata: index.metadata,
            consumed: Mutex::new(BTreeSet::new()),
        })
    }

    /// The file or index this reader was opened from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The safetensors files mapped (one, or the shards in file-name order).
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the checkpoint has a tensor named `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The shape of `key` as stored in the file, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    /// The dtype of `key` as stored in the file, if present.
    pub fn dtype(&self, key: &str) -> Option<Dtype> {
        self.entries.get(key).map(|e| e.dtype)
    }

    /// The safetensors `__metadata__` string map (merged over shards, first shard wins).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The `"metadata"` object of a sharded checkpoint's index (e.g. `total_size`).
    pub fn index_metadata(&self) -> Option<&serde_json::Value> {
        self.index_metadata.as_ref()
    }

    fn missing(&self, keys: Vec<String>) -> CheckpointError {
        let (keys, total) = first_keys(keys);
        CheckpointError::MissingKeys {
            origin: self.origin.display().to_string(),
            keys,
            total,
        }
    }

    fn entry(&self, key: &str) -> Result<&Entry, CheckpointError> {
        self.entries
            .get(key)
            .ok_or_else(|| self.missing(vec![key.to_string()]))
    }

    fn bytes(&self, entry: &Entry) -> Result<&[u8], CheckpointError> {
        let shard = &self.shards[entry.shard];
        // In range by construction (validated header); checked anyway, never a panic.
        shard
            .mmap
            .get(entry.start..entry.end)
            .ok_or_else(|| CheckpointError::Corrupt {
                path: shard.path.clone(),
                reason: format!("data range {}..{} outside the file", entry.start, entry.end),
            })
    }

    /// Decode `key` to f32 host values in the file's shape, checking the dtype; does not
    /// mark the key consumed.
    fn decode(&self, key: &str) -> Result<(Vec<f32>, Vec<usize>), CheckpointError> {
        let entry = self.entry(key)?;
        let values = decode_f32(key, entry.dtype, self.bytes(entry)?)?;
        Ok((values, entry.shape.clone()))
    }

    /// Read `key` as f32 host data in the file's own shape and order (no shape check).
    /// Marks the key consumed.
    pub fn read_data(&self, key: &str) -> Result<TensorData, CheckpointError> {
        let (values, shape) = self.decode(key)?;
        self.mark_consumed(key);
        Ok(TensorData::new(values, shape))
    }

    /// Read `key` as f32 host data in Burn's shape `burn_shape` (checked against the file,
    /// after the `layout` transform). Marks the key consumed.
    pub fn read_data_as(
        &self,
        key: &str,
        burn_shape: &[usize],
        layout: Layout,
    ) -> Result<TensorData, CheckpointError> {
        layout.check_rank(key, burn_shape.len())?;
        let entry = self.entry(key)?;
        let expected = layout.file_shape(burn_shape);
        if entry.shape != expected {
            return Err(CheckpointError::ShapeMismatch {
                key: key.to_string(),
                expected,
                found: entry.shape.clone(),
                layout,
            });
        }
        let (values, file_shape) = self.decode(key)?;
        let values = layout.to_burn(values, &file_shape);
        self.mark_consumed(key);
        Ok(TensorData::new(values, burn_shape.to_vec()))
    }

    /// Read `key` into a float tensor of shape `shape` on `device`, converting BF16, F16,
    /// F32 or F64 to the backend's float element (through f32 on the host).
    ///
    /// Errors: the key is absent ([`CheckpointError::MissingKeys`]), its shape is not `shape`
    /// ([`CheckpointError::ShapeMismatch`], rank included), its dtype is not a float
    /// ([`CheckpointError::UnsupportedDtype`]).
    pub fn read_tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, CheckpointError> {
        self.read_tensor_as(key, shape, Layout::AsStored, device)
    }

    /// [`WeightReader::read_tensor`] with a [`Layout`]: `shape` is Burn's shape; the file
    /// holds `layout.file_shape(shape)`.
    pub fn read_tensor_as<B: Backend, const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        layout: Layout,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, CheckpointError> {
        let data = self.read_data_as(key, &shape, layout)?;
        Ok(Tensor::from_data(data, device))
    }

    /// Read a PyTorch Linear weight stored `[out, in]` as Burn's `[in, out]` = `shape`.
    pub fn read_linear_weight<B: Backend>(
        &self,
        key: &str,
        shape: [usize; 2],
        device: &B::Device,
    ) -> Result<Tensor<B, 2>, CheckpointError> {
        self.read_tensor_as(key, shape, Layout::TorchLinear, device)
    }

    /// [`WeightReader::read_tensor_as`], or `Ok(None)` when the key is absent (e.g. the
    /// generation expert of a checkpoint that has only the understanding expert). Every
    /// other error is returned.
    pub fn try_read_tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        layout: Layout,
        device: &B::Device,
    ) -> Result<Option<Tensor<B, D>>, CheckpointError> {
        if !self.contains(key) {
            return Ok(None);
        }
        self.read_tensor_as(key, shape, layout, device).map(Some)
    }

    /// Replace the value of a module parameter with `key`, keeping its id, device,
    /// `require_grad` and load/save mappers.
    ///
    /// This follows Burn's own loading path (the one `burn-store`'s applier uses): the
    /// expected shape is [`Param::lazy_shape`], the device [`Param::lazy_device`] (neither
    /// initialises a lazy parameter, so the random init is never computed), and the value
    /// is installed with [`Param::transform_for_load`]. The tensor is therefore taken in
    /// Burn's *record* form. For every default burn-nn module that is the value form; for
    /// the non-default `LinearLayout::Col` it is `[out, in]` (load it with
    /// `Layout::AsStored`).
    pub fn load_param<B: Backend, const D: usize>(
        &self,
        param: Param<Tensor<B, D>>,
        key: &str,
        layout: Layout,
    ) -> Result<Param<Tensor<B, D>>, CheckpointError> {
        let lazy_shape = param.lazy_shape();
        let shape: [usize; D] =
            lazy_shape
                .as_slice()
                .try_into()
                .map_err(|_| CheckpointError::InvalidTensor {
                    key: key.to_string(),
                    reason: format!(
                        "parameter of rank {D} reports shape {:?}",
                        lazy_shape.as_slice()
                    ),
                })?;
        let device = param.lazy_device();
        let tensor = self.read_tensor_as::<B, D>(key, shape, layout, &device)?;
        let id = param.id;
        Ok(param.transform_for_load(tensor, id))
    }

    /// Load a `burn::nn::Linear` (default row layout) from PyTorch's `{prefix}.weight`
    /// (`[out, in]`, transposed) and, if the module has a bias, `{prefix}.bias`.
    ///
    /// A bias in the file for a bias-free module is left unconsumed, so
    /// [`WeightReader::finish`] reports it.
    pub fn load_linear<B: Backend>(
        &self,
        linear: Linear<B>,
        prefix: &str,
    ) -> Result<Linear<B>, CheckpointError> {
        let weight = self.load_param(
            linear.weight,
            &format!("{prefix}.weight"),
            Layout::TorchLinear,
        )?;
        let bias = match linear.bias {
            Some(b) => Some(self.load_param(b, &format!("{prefix}.bias"), Layout::AsStored)?),
            None => None,
        };
        Ok(Linear { weight, bias })
    }

    /// Load a `burn::nn::LayerNorm` from PyTorch's `{prefix}.weight` (Burn's `gamma`) and
    /// `{prefix}.bias` (`beta`, if the module has one).
    pub fn load_layer_norm<B: Backend>(
        &self,
        norm: LayerNorm<B>,
        prefix: &str,
    ) -> Result<LayerNorm<B>, CheckpointError> {
        // `epsilon` is private: move the parameters out and back in.
        let mut norm = norm;
        norm.gamma = self.load_param(norm.gamma, &format!("{prefix}.weight"), Layout::AsStored)?;
        norm.beta = match norm.beta {
            Some(b) => Some(self.load_param(b, &format!("{prefix}.bias"), Layout::AsStored)?),
            None => None,
        };
        Ok(norm)
    }

    /// Load a `burn::nn::Embedding` from `{prefix}.weight` (`[n, d]` in both frameworks).
    pub fn load_embedding<B: Backend>(
        &self,
        embedding: Embedding<B>,
        prefix: &str,
    ) -> Result<Embedding<B>, CheckpointError> {
        let weight = self.load_param(
            embedding.weight,
            &format!("{prefix}.weight"),
            Layout::AsStored,
        )?;
        Ok(Embedding { weight })
    }

    /// Mark `key` as consumed without reading it (e.g. a fixed table the model recomputes).
    /// Unknown keys are ignored.
    pub fn mark_consumed(&self, key: &str) {
        if self.entries.contains_key(key) {
            lock(&self.consumed).insert(key.to_string());
        }
    }

    /// Mark every key matching `pred` as consumed; returns how many matched.
    pub fn mark_consumed_where(&self, pred: impl Fn(&str) -> bool) -> usize {
        let mut consumed = lock(&self.consumed);
        let mut n = 0;
        for key in self.entries.keys().filter(|k| pred(k)) {
            consumed.insert(key.clone());
            n += 1;
        }
        n
    }

    /// Keys read or marked so far, sorted.
    pub fn consumed_keys(&self) -> Vec<String> {
        lock(&self.consumed).iter().cloned().collect()
    }

    /// Keys not read nor marked so far, sorted.
    pub fn unconsumed_keys(&self) -> Vec<String> {
        let consumed = lock(&self.consumed);
        self.entries
            .keys()
            .filter(|k| !consumed.contains(*k))
            .cloned()
            .collect()
    }

    /// Check that every key in `expected` is present, before loading anything; the error
    /// lists the first few absent keys (sorted) and how many there are.
    pub fn check_keys<I, S>(&self, expected: I) -> Result<(), CheckpointError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let missing: Vec<String> = expected
            .into_iter()
            .filter(|k| !self.contains(k.as_ref()))
            .map(|k| k.as_ref().to_string())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(self.missing(missing))
        }
    }

    /// End a load: report the checkpoint's keys that were never consumed, per `policy`.
    pub fn finish(&self, policy: UnexpectedKeys) -> Result<LoadReport, CheckpointError> {
        let unexpected = self.unconsumed_keys();
        let consumed = lock(&self.consumed).len();
        if !unexpected.is_empty() {
            let (keys, total) = first_keys(unexpected.iter().cloned());
            let err = CheckpointError::UnexpectedKeys {
                origin: self.origin.display().to_string(),
                keys,
                total,
            };
            match policy {
                UnexpectedKeys::Error => return Err(err),
                UnexpectedKeys::Warn => eprintln!("warning: {err}"),
                UnexpectedKeys::Ignore => {}
            }
        }
        Ok(LoadReport {
            consumed,
            unexpected,
        })
    }
}
