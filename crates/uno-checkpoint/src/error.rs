//! [`CheckpointError`]: every failure of the checkpoint layer, each naming its culprit.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::Layout;

/// How many keys an error message lists before it summarises the rest as "... and N more".
pub const KEYS_SHOWN: usize = 5;

/// Everything that can go wrong reading or writing weights.
///
/// Each message names the culprit: the file (with its path), the key, the expected and found
/// shapes. No function of this module panics on a user file; it returns one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// An operating-system error on `path` (open, read, map, write, sync, rename).
    #[error("cannot {action} `{}`: {source}", .path.display())]
    Io {
        /// What was being done ("open", "memory-map", "rename into place", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The file is not a valid safetensors file: too short, cut off, a header that is not
    /// JSON, offsets that do not cover the data.
    #[error("truncated or corrupt safetensors file `{}`: {reason}", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (the safetensors crate's diagnosis where it has one).
        reason: String,
    },

    /// A sharded-checkpoint index (`*.safetensors.index.json`) that cannot be used.
    #[error("invalid checkpoint index `{}`: {reason}", .path.display())]
    InvalidIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The index names a shard file that does not exist.
    #[error(
        "shard `{}` named in index `{}` (e.g. for key `{key}`) does not exist",
        .shard.display(),
        .index.display()
    )]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The absent shard (resolved next to the index).
        shard: PathBuf,
        /// A key the index maps to that shard.
        key: String,
    },

    /// The index maps a key to a shard that does not contain it.
    #[error(
        "index `{}` maps key `{key}` to shard `{}`, which does not contain it",
        .index.display(),
        .shard.display()
    )]
    KeyNotInShard {
        /// The index file.
        index: PathBuf,
        /// The shard.
        shard: PathBuf,
        /// The key.
        key: String,
    },

    /// Keys the model needs are absent from the checkpoint.
    #[error("{total} expected key(s) missing from `{origin}`: {}", key_list(.keys, *.total))]
    MissingKeys {
        /// The checkpoint (file or index path).
        origin: String,
        /// The first [`KEYS_SHOWN`] missing keys, sorted.
        keys: Vec<String>,
        /// How many are missing in all.
        total: usize,
    },

    /// Keys of the checkpoint that the model never read (under [`UnexpectedKeys::Error`]).
    ///
    /// [`UnexpectedKeys::Error`]: crate::UnexpectedKeys::Error
    #[error("{total} unexpected key(s) in `{origin}` were not loaded: {}", key_list(.keys, *.total))]
    UnexpectedKeys {
        /// The checkpoint (file or index path).
        origin: String,
        /// The first [`KEYS_SHOWN`] unexpected keys, sorted.
        keys: Vec<String>,
        /// How many there are in all.
        total: usize,
    },

    /// The tensor's shape in the file is not the one the model expects.
    ///
    /// Both shapes are in the file's convention: for [`Layout::TorchLinear`] the expected
    /// shape is the PyTorch `[out, in]` of the Burn `[in, out]` weight asked for.
    #[error("shape mismatch for `{key}`: expected {expected:?}{}, found {found:?}", layout_note(*.layout, .expected))]
    ShapeMismatch {
        /// The key.
        key: String,
        /// The shape the model expects, in the file's convention.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
        /// The layout the tensor was requested with.
        layout: Layout,
    },

    /// The tensor's element type cannot be read as floats (or written).
    #[error("tensor `{key}` has unsupported dtype {dtype} (expected {expected})")]
    UnsupportedDtype {
        /// The key.
        key: String,
        /// The dtype found.
        dtype: String,
        /// What was accepted.
        expected: &'static str,
    },

    /// A layout that does not apply to a tensor of this rank (e.g. `TorchLinear` on 1-D).
    #[error("layout {layout:?} of `{key}` needs a rank-2 tensor, got rank {rank}")]
    UnsupportedLayout {
        /// The key.
        key: String,
        /// The layout asked for.
        layout: Layout,
        /// The tensor's rank.
        rank: usize,
    },

    /// The same key was added twice to a [`WeightWriter`](crate::WeightWriter).
    #[error("duplicate key `{key}`")]
    DuplicateKey {
        /// The key.
        key: String,
    },

    /// Tensor data handed to a writer that is inconsistent (shape, element type).
    #[error("tensor `{key}`: {reason}")]
    InvalidTensor {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// The safetensors serializer refused to write `path`.
    #[error("cannot write safetensors file `{}`: {reason}", .path.display())]
    Write {
        /// The target file.
        path: PathBuf,
        /// The reason.
        reason: String,
    },

    /// A JSON config file that does not parse into the expected structure.
    #[error("cannot parse JSON config `{}`: {source}", .path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// serde's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
}

impl CheckpointError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// `a, b, c` or `a, b, c, ... and 7 more`.
fn key_list(keys: &[String], total: usize) -> String {
    let mut out = keys
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if total > keys.len() {
        let _ = write!(out, ", ... and {} more", total - keys.len());
    }
    out
}

fn layout_note(layout: Layout, expected: &[usize]) -> String {
    match (layout, expected) {
        (Layout::TorchLinear, [out, inp]) => {
            format!(" (PyTorch Linear [out, in] of the Burn [in, out] = [{inp}, {out}] weight)")
        }
        _ => String::new(),
    }
}

/// Sorted, truncated list + total, for [`CheckpointError::MissingKeys`] and
/// [`CheckpointError::UnexpectedKeys`].
pub(crate) fn first_keys<I: IntoIterator<Item = String>>(keys: I) -> (Vec<String>, usize) {
    let mut all: Vec<String> = keys.into_iter().collect();
    all.sort();
    all.dedup();
    let total = all.len();
    all.truncate(KEYS_SHOWN);
    (all, total)
}
