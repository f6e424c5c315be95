//! The crate's one error enum.

use std::path::PathBuf;

use uno_core::bagel::BagelError;
use uno_core::data::DataError;
use uno_core::generate::GenerateError;
use uno_core::train::RunError;

/// Everything that can stop a benchmark run, an evaluation, a report or a plot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A preset or evaluation setting out of range.
    #[error("invalid setting {name} = {value}: {reason}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// Its value, as text.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A training run (stage 1 or an arm).
    #[error("{stage}: {source}")]
    Run {
        /// Which run: `stage 1`, or the arm and seed.
        stage: String,
        /// The run's error.
        #[source]
        source: Box<RunError>,
    },
    /// Generating or captioning.
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// Loading or running the model outside the sampler.
    #[error(transparent)]
    Model(#[from] BagelError),
    /// Data, prompts or the tokenizer.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Packing or uploading the fixed batch of the gradient diagnostics.
    #[error("the held-out batch of the gradient diagnostics: {0}")]
    Batch(String),
    /// Reading or writing a file.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a run's `metrics.jsonl` that is not JSON.
    #[error("{}:{line}: not a JSON object: {reason}", .path.display())]
    Metrics {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        reason: String,
    },
    /// A benchmark record (`preset.json`, an arm's `arm.json`, a run's checkpoints) that
    /// cannot be read or written.
    #[error("{}: {reason}", .path.display())]
    Record {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A resume with a preset other than the one the folder was started with.
    #[error(
        "{} was started with another preset (\"{recorded}\"), which differs in {}: resume \
         with the same preset (the seeds may change), or start a new folder",
        .dir.display(),
        .fields.join(", ")
    )]
    PresetChanged {
        /// The benchmark's folder.
        dir: PathBuf,
        /// The name of the preset it was started with.
        recorded: String,
        /// The preset's fields that differ.
        fields: Vec<String>,
    },
    /// Serialising the report.
    #[error("cannot serialise {name}: {source}")]
    Serialize {
        /// What was being serialised.
        name: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// Drawing a plot.
    #[error("cannot draw {}: {reason}", .path.display())]
    Plot {
        /// The SVG being drawn.
        path: PathBuf,
        /// plotters' message.
        reason: String,
    },
}

impl BenchError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn setting(name: &'static str, value: impl ToString, reason: &'static str) -> Self {
        Self::Setting {
            name,
            value: value.to_string(),
            reason,
        }
    }
}
