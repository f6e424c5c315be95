//! Data errors: each names the file, line, record or field at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Manifest {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot decode image {path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("index {index} out of range for a data set of {len} items")]
    OutOfRange { index: usize, len: usize },
    #[error("invalid data config: {0}")]
    Config(String),
}
