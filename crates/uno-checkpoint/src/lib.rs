//! # uno-checkpoint
//!
//! Checkpoint I/O: named weights in safetensors files, read memory-mapped, written
//! atomically, and the atomic-write primitives every file the workspace persists goes
//! through.
//!
//! This is the generic layer the BAGEL key mapping (in `uno-core`) is built on; it knows
//! nothing about BAGEL's names.
//!
//! * [`WeightReader`] opens one `*.safetensors` file or a sharded checkpoint through its
//!   `*.safetensors.index.json`, memory-mapped: opening reads the headers only, and each
//!   tensor is converted on request (BF16 / F16 / F32 / F64 -> f32 on the host -> the
//!   backend's float element), so a 29 GB `ema.safetensors` costs the memory of its largest
//!   tensor, not of the file. Shapes are checked (expected vs found, by key), PyTorch Linear
//!   weights `[out, in]` are transposed to Burn's `[in, out]` ([`Layout::TorchLinear`]), and
//!   values go straight into module parameters ([`WeightReader::load_param`],
//!   [`WeightReader::load_linear`], ...). The reader tracks consumed keys: a loader checks its
//!   full key list up front ([`WeightReader::check_keys`], listing the first missing keys)
//!   and ends with [`WeightReader::finish`], which errors on, warns about or ignores the
//!   checkpoint keys it never read ([`UnexpectedKeys`]).
//! * [`WeightWriter`] collects named tensors (kept as handles, converted one at a time while
//!   writing) and writes one safetensors file in f32, bf16 or f16 ([`SaveDtype`]), with
//!   optional `__metadata__`, atomically (temporary file in the target's directory, fsync,
//!   rename).
//! * [`write_atomically`], [`write_bytes_atomically`], [`write_synced`], [`sync_dir`]: the
//!   crash-safe write recipe, shared with `uno-trainer`'s checkpoint directories.
//! * [`read_json_config`] parses a JSON config with errors that name the file.
//! * [`CheckpointError`]: every error names its culprit (path, key, expected and found
//!   shape); nothing here panics on a user file.
//!
//! # Why not `burn-store`
//!
//! ARCHITECTURE.md says to use the framework first. `burn-store` 0.21's `SafetensorsStore`
//! memory-maps files, remaps keys with regexes and has a `PyTorchToBurnAdapter` (Linear
//! transpose, `weight -> gamma`). It falls short here on points we need:
//!
//! 1. **No sharded checkpoints**: it reads one file (or one byte buffer); nothing reads a
//!    `*.safetensors.index.json` weight map, and a module cannot be applied from several
//!    stores without `allow_partial` bookkeeping of our own.
//! 2. **No bf16 -> float cast**: its applier creates each tensor in the *file's* dtype
//!    (`Tensor::from_data(data, (device, snapshot.dtype))`); bf16 data on the ndarray
//!    backend aborts. The only cast adapter, `HalfPrecisionAdapter`, handles F16 <-> F32.
//! 3. **Writes are not durable**: it saves with `safetensors::serialize_to_file` (rename of a
//!    temporary file) without fsync, and only whole modules.
//! 4. **Module-tree keys only**: it loads by walking a module's field paths, so the model's
//!    struct tree would have to mirror BAGEL's key tree (or be regex-remapped onto it).
//!    BAGEL's mapping includes non-1:1 cases (gen expert initialised from the und expert
//!    when its keys are absent, fixed sin-cos tables that are accepted and recomputed),
//!    which a per-key API expresses directly.
//!
//! It is also not a dependency of this crate (it is burn's `store` feature). The layer here
//! reuses what it can from the same crates burn-store builds on: the `safetensors` crate for
//! header parsing/validation and serialization, `memmap2` for mapping, and Burn's own
//! parameter-loading path (`Param::lazy_shape`, `lazy_device`, `transform_for_load`, exactly
//! as burn-store's applier does).
//!
//! # Example
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::nn::LinearConfig;
//! use uno_checkpoint::{SaveDtype, UnexpectedKeys, WeightReader, WeightWriter};
//!
//! # fn main() -> Result<(), uno_checkpoint::CheckpointError> {
//! let device = Default::default();
//! let reader = WeightReader::open("ema.safetensors")?; // or "model.safetensors.index.json"
//! reader.check_keys(["connector.fc1.weight", "connector.fc1.bias"])?;
//! let fc1 = LinearConfig::new(1152, 3584).init::<Flex>(&device);
//! let fc1 = reader.load_linear(fc1, "connector.fc1")?; // [out, in] -> [in, out]
//! reader.finish(UnexpectedKeys::Warn)?;
//!
//! let mut writer = WeightWriter::new(SaveDtype::BF16).with_metadata("format", "pt");
//! writer.add_linear("connector.fc1", &fc1)?; // [in, out] -> [out, in]
//! writer.write("out/ema.safetensors")?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod atomic;
mod config;
mod convert;
mod error;
mod reader;
mod writer;

pub use atomic::{sync_dir, write_atomically, write_bytes_atomically, write_synced};
pub use config::read_json_config;
pub use convert::{Layout, SaveDtype};
pub use error::{CheckpointError, KEYS_SHOWN};
pub use reader::{LoadReport, UnexpectedKeys, WeightReader};
pub use safetensors::Dtype;
pub use writer::WeightWriter;
