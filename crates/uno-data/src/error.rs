//! Data errors: each names the file, line, record or field at fault.

use std::path::PathBuf;

/// Why data could not be read, decoded or tokenized.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file (the manifest) could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A manifest line that is not a valid record, or a manifest with no records.
    #[error("{path}, line {line}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// 1-based line number; 0 when the whole file is at fault (no records).
        line: usize,
        /// What is wrong (the JSON error and the expected record shapes).
        message: String,
    },
    /// Image files a manifest names that are not there, all of them, found when the
    /// manifest is opened (not one at a time, hours into a run).
    #[error(
        "{path}: {} image file(s) missing: {}",
        .missing.len(),
        missing_list(.missing)
    )]
    MissingImages {
        /// The manifest file.
        path: PathBuf,
        /// `(line, resolved image path)` of every missing file, in file order.
        missing: Vec<(usize, PathBuf)>,
    },
    /// An image that could not be opened, decoded or saved.
    #[error("cannot decode image {path}: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The `image` crate's error.
        message: String,
    },
    /// A tokenizer that could not be loaded, built or saved, a text it could not encode or
    /// decode, or a vocabulary without one of BAGEL's special tokens.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// [`crate::Dataset::get`] with an index at or past the end.
    #[error("index {index} out of range for a data set of {len} items")]
    OutOfRange {
        /// The requested index.
        index: usize,
        /// Items in the data set.
        len: usize,
    },
    /// An image transform that cannot work (a zero stride or size, `min` above `max`, a pixel
    /// cap below one stride squared), or an image it cannot resize (a zero side).
    #[error("image transform {name}: {reason}")]
    Transform {
        /// The transform's config key (e.g. `data.vae_image`), or `image` for the image.
        name: String,
        /// What is wrong, with the values.
        reason: String,
    },
    /// A benchmark prompt spec with no layout on the 3x3 grid (a count of 0, more objects
    /// than cells, a relation not between two single objects).
    #[error("no layout for the prompt \"{prompt}\": {reason}")]
    Layout {
        /// The prompt's text.
        prompt: String,
        /// What is wrong, with the values.
        reason: String,
    },
    /// An invalid data-set setting (a bad [`crate::SyntheticConfig`]).
    #[error("invalid data config: {0}")]
    Config(String),
}

/// Missing files shown in a [`DataError::MissingImages`] message; the rest are counted.
pub const MISSING_SHOWN: usize = 10;

fn missing_list(missing: &[(usize, PathBuf)]) -> String {
    let mut text = missing
        .iter()
        .take(MISSING_SHOWN)
        .map(|(line, path)| format!("{} (line {line})", path.display()))
        .collect::<Vec<_>>()
        .join(", ");
    if missing.len() > MISSING_SHOWN {
        text.push_str(&format!(" and {} more", missing.len() - MISSING_SHOWN));
    }
    text
}
