//! The one error type of this crate.

use thiserror::Error;

/// Everything that can go wrong when computing an objective.
///
/// Messages name the offending tensor (or argument) and give the expected and the found
/// shape, count or value, so a failing training step says what to fix.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ObjectiveError {
    /// A tensor does not have the shape the objective needs.
    #[error("`{tensor}`: expected shape {expected}, found {found:?}")]
    Shape {
        /// Name of the offending tensor (e.g. `"flow.pred"`).
        tensor: &'static str,
        /// The expected shape, in words (e.g. `"[N, C] = [4, 16]"`).
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A host-side list (labels, timestep slots, ...) has the wrong length.
    #[error("`{what}`: expected {expected} entries, found {found}")]
    Count {
        /// Name of the offending list.
        what: &'static str,
        /// Expected number of entries.
        expected: usize,
        /// Number of entries found.
        found: usize,
    },
    /// A caption label is neither a valid class index nor [`crate::IGNORE_INDEX`].
    #[error(
        "`caption.labels[{index}]` = {label} is out of range for a vocabulary of {vocab} logits \
         (use IGNORE_INDEX = u32::MAX to skip a position)"
    )]
    LabelOutOfRange {
        /// Position of the label in the list.
        index: usize,
        /// The label found.
        label: u32,
        /// Number of classes (logit columns).
        vocab: usize,
    },
    /// A tensor (or the loss computed from it) contains NaN or +-inf.
    #[error("`{tensor}` contains NaN or infinite values (loss `{loss}` is not finite)")]
    NonFinite {
        /// Name of the offending tensor, or of the loss itself when every input is finite
        /// and the loss overflowed.
        tensor: &'static str,
        /// The loss term being computed.
        loss: &'static str,
    },
    /// A configuration value or argument is outside its valid range.
    #[error("`{name}` = {value} is invalid: {expected}")]
    InvalidValue {
        /// Name of the offending value.
        name: &'static str,
        /// The value found, formatted.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// The number of metaqueries is not a perfect square, so no sqrt(N) x sqrt(N) grid exists.
    #[error(
        "{num_queries} metaqueries is not a perfect square: cannot pool targets to a square grid"
    )]
    NotSquare {
        /// Number of metaqueries asked for.
        num_queries: usize,
    },
    /// A global normaliser is zero although this rank has tokens for the term.
    #[error(
        "global count for `{term}` is 0 but this rank has {local} tokens: the global count must include them"
    )]
    GlobalCount {
        /// The loss term.
        term: &'static str,
        /// Local token count.
        local: usize,
    },
    /// The backend failed while reading a value back to the host.
    #[error("backend error while reading `{what}` back: {message}")]
    Backend {
        /// What was being read.
        what: &'static str,
        /// The backend's message.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ObjectiveError>;
