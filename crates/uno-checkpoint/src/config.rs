//! JSON config files (`llm_config.json`, `vit_config.json`, ...): parsing with clear errors.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::CheckpointError;

/// Read and parse a JSON config file into `T` (any `serde::Deserialize` type).
///
/// Errors name the file: [`CheckpointError::Io`] if it cannot be read,
/// [`CheckpointError::Config`] (with serde's line and column) if it does not parse into `T`.
pub fn read_json_config<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T, CheckpointError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(CheckpointError::io("read", path))?;
    serde_json::from_str(&text).map_err(|source| CheckpointError::Config {
        path: path.to_path_buf(),
        source,
    })
}
