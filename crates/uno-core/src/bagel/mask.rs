//! `uno-packing`'s block masks as the decoder's attention segments: the one place where a
//! BAGEL/UNO split becomes a plain [`SampleAttention`] (`uno-mot` knows no split kinds).

use crate::mot::{AttnSegment, MotError, SampleAttention};
use crate::packing::{PackedSequence, SampleMask};

/// The attention pattern of one sample whose first token is row `start` of its pack: one
/// segment per split, causal inside for text, caption and causal metaqueries, seeing the
/// splits the packer's visibility rules allow.
pub fn sample_attention(start: usize, mask: &SampleMask) -> Result<SampleAttention, MotError> {
    let segments = mask
        .splits
        .iter()
        .map(|split| AttnSegment {
            start: split.start,
            len: split.len,
            causal_inside: split.mode.is_causal_inside(),
            sees: split.sees.clone(),
        })
        .collect();
    SampleAttention::new(start, segments)
}

/// [`sample_attention`] of every sample of `pack`, in order (what
/// [`crate::mot::MotModel::forward`] takes).
pub fn pack_attention(pack: &PackedSequence) -> Result<Vec<SampleAttention>, MotError> {
    pack.samples
        .iter()
        .map(|s| sample_attention(s.start, &s.mask))
        .collect()
}
