//! The one error type of the crate.
//!
//! Every message names the offending field or argument and the values involved, so a bad
//! config file or a bad packed batch can be fixed from the message alone.

/// Errors from configuring the decoder or from calling it with inconsistent inputs.
///
/// Bad user input never panics: the forward passes check shapes and index lists first and
/// return one of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MotError {
    /// A size field that must be positive is zero.
    #[error("config field `{field}` must be > 0, got 0")]
    ZeroField {
        /// The field name, as in BAGEL's `llm_config.json`.
        field: &'static str,
    },
    /// A float field that must be positive and finite is not.
    #[error("config field `{field}` must be positive and finite, got {value}")]
    NonPositive {
        /// The field name, as in BAGEL's `llm_config.json`.
        field: &'static str,
        /// The offending value.
        value: f64,
    },
    /// `hidden_size` is not a multiple of `num_attention_heads`.
    #[error(
        "`hidden_size` ({hidden_size}) must be divisible by `num_attention_heads` ({num_attention_heads})"
    )]
    HiddenNotDivisibleByHeads {
        /// `hidden_size`.
        hidden_size: usize,
        /// `num_attention_heads`.
        num_attention_heads: usize,
    },
    /// `num_attention_heads` is not a multiple of `num_key_value_heads` (GQA).
    #[error(
        "`num_attention_heads` ({num_attention_heads}) must be divisible by `num_key_value_heads` ({num_key_value_heads})"
    )]
    HeadsNotDivisibleByKvHeads {
        /// `num_attention_heads`.
        num_attention_heads: usize,
        /// `num_key_value_heads`.
        num_key_value_heads: usize,
    },
    /// Rotate-half RoPE needs an even head dimension.
    #[error(
        "head_dim = `hidden_size` / `num_attention_heads` = {head_dim} must be even for rotate-half RoPE"
    )]
    OddHeadDim {
        /// `hidden_size / num_attention_heads`.
        head_dim: usize,
    },
    /// A tensor argument has the wrong shape.
    #[error("`{arg}` has shape {got:?}, expected {expected:?}")]
    Shape {
        /// The argument name.
        arg: &'static str,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape received.
        got: Vec<usize>,
    },
    /// The und and gen index lists do not have `len` entries in total.
    #[error(
        "routing: und ({num_und}) + gen ({num_gen}) indexes = {} but the pack has {len} tokens",
        num_und + num_gen
    )]
    RoutingCount {
        /// Number of und indexes.
        num_und: usize,
        /// Number of gen indexes.
        num_gen: usize,
        /// Number of tokens in the pack.
        len: usize,
    },
    /// A routing index is negative or `>= len`.
    #[error("routing: `{list}` index {index} is out of range for a pack of {len} tokens")]
    RoutingOutOfRange {
        /// `"und"` or `"gen"`.
        list: &'static str,
        /// The offending index.
        index: i64,
        /// Number of tokens in the pack.
        len: usize,
    },
    /// A token appears twice in the routing lists (so the lists are not a partition).
    #[error("routing: token {index} is listed twice (und and gen must partition 0..{len})")]
    RoutingDuplicate {
        /// The token listed twice.
        index: usize,
        /// Number of tokens in the pack.
        len: usize,
    },
    /// The samples do not tile `0..len` in order.
    #[error(
        "samples: sample {sample} starts at {start} but the previous samples end at {expected_start} (samples must tile 0..{len} in order, none empty)"
    )]
    SampleGap {
        /// Index of the offending sample.
        sample: usize,
        /// Its `start`.
        start: usize,
        /// Where it should start.
        expected_start: usize,
        /// Number of tokens in the pack.
        len: usize,
    },
    /// A sample is empty.
    #[error("samples: sample {sample} has len 0")]
    EmptySample {
        /// Index of the offending sample.
        sample: usize,
    },
    /// The samples end before or after the pack.
    #[error("samples cover 0..{covered} but the pack has {len} tokens")]
    SampleCoverage {
        /// Where the last sample ends.
        covered: usize,
        /// Number of tokens in the pack.
        len: usize,
    },
    /// A segment of a sample's attention pattern is empty.
    #[error("attention segments: segment {segment} has len 0")]
    EmptySegment {
        /// Index of the offending segment within its sample.
        segment: usize,
    },
    /// The segments of a sample do not tile it in order.
    #[error(
        "attention segments: segment {segment} starts at {start} but the previous segments end at {expected_start} (segments must tile the sample in order)"
    )]
    SegmentGap {
        /// Index of the offending segment within its sample.
        segment: usize,
        /// Its `start`.
        start: usize,
        /// Where it should start.
        expected_start: usize,
    },
    /// A segment's `sees` is not a strictly increasing list of earlier segments.
    #[error(
        "attention segments: segment {segment} sees {sees:?}, expected strictly increasing indexes of earlier segments (< {segment})"
    )]
    SegmentSees {
        /// Index of the offending segment within its sample.
        segment: usize,
        /// Its `sees` list.
        sees: Vec<usize>,
    },
    /// A KV cache does not belong to this model.
    #[error("kv cache has {got} layers, the model has {expected}")]
    CacheLayers {
        /// Number of layers in the model.
        expected: usize,
        /// Number of layers in the cache.
        got: usize,
    },
    /// The cached context plus the new tokens do not fit the cache.
    #[error("kv cache has room for {capacity} tokens, {needed} are needed (allocate a larger one)")]
    CacheFull {
        /// Tokens the cache was allocated for.
        capacity: usize,
        /// Cached tokens plus the new ones.
        needed: usize,
    },
}
