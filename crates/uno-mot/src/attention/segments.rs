//! The attention pattern of one sample, as segments (O(segments) to store, not O(len^2)).
//!
//! A segment is a run of consecutive tokens that attends by one rule: BAGEL's splits (text,
//! ViT image, clean or noised VAE image, UNO's caption and metaqueries). This crate does not
//! know those kinds; `uno-core` translates `uno-packing`'s split masks into segments. The
//! blockwise attention reads the segments directly to skip key blocks a query block cannot
//! see; [`SampleAttention::dense`] materialises the `[len, len]` mask for the dense path and
//! for tests.

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

use crate::MotError;

/// A run of consecutive tokens of one sample that attends by one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttnSegment {
    /// First token, relative to the sample.
    pub start: usize,
    /// Number of tokens (> 0).
    pub len: usize,
    /// Each token sees only itself and the earlier tokens of this segment (text); otherwise
    /// it sees the whole segment (images).
    pub causal_inside: bool,
    /// Indexes of *earlier* segments of the same sample that every token of this segment
    /// sees entirely, strictly increasing. Segments not listed are hidden.
    pub sees: Vec<usize>,
}

/// The attention pattern of one sample of a pack: which keys each query token sees.
///
/// Every token sees at least itself (a segment always sees its own diagonal), so no row of
/// the attention is empty; the constructor enforces the invariants that guarantee it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleAttention {
    start: usize,
    len: usize,
    segments: Vec<AttnSegment>,
}

impl SampleAttention {
    /// A sample starting at token `start` of the pack, made of `segments` that tile
    /// `0..len` in order (relative offsets), none empty, each seeing only earlier segments
    /// (strictly increasing indexes). No segments at all is allowed here (an empty sample
    /// is rejected by the forward, which knows its index).
    pub fn new(start: usize, segments: Vec<AttnSegment>) -> Result<Self, MotError> {
        let mut end = 0;
        for (i, s) in segments.iter().enumerate() {
            if s.len == 0 {
                return Err(MotError::EmptySegment { segment: i });
            }
            if s.start != end {
                return Err(MotError::SegmentGap {
                    segment: i,
                    start: s.start,
                    expected_start: end,
                });
            }
            let mut previous = None;
            for &seen in &s.sees {
                if seen >= i || previous.is_some_and(|p| seen <= p) {
                    return Err(MotError::SegmentSees {
                        segment: i,
                        sees: s.sees.clone(),
                    });
                }
                previous = Some(seen);
            }
            end += s.len;
        }
        Ok(Self {
            start,
            len: end,
            segments,
        })
    }

    /// A plain decoder's sample: one causal segment of `len` tokens.
    pub fn causal(start: usize, len: usize) -> Self {
        Self::single(start, len, true)
    }

    /// One bidirectional segment of `len` tokens (every token sees the whole sample).
    pub fn full(start: usize, len: usize) -> Self {
        Self::single(start, len, false)
    }

    fn single(start: usize, len: usize, causal_inside: bool) -> Self {
        let segments = if len == 0 {
            Vec::new()
        } else {
            vec![AttnSegment {
                start: 0,
                len,
                causal_inside,
                sees: Vec::new(),
            }]
        };
        Self {
            start,
            len,
            segments,
        }
    }

    /// First token of the sample in the pack.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Number of tokens of the sample.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the sample has no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[AttnSegment] {
        &self.segments
    }

    /// Calls `f` for every query token (relative row) with the key ranges it sees
    /// (relative, disjoint, increasing): the seen segments, then its own visible part.
    pub(crate) fn for_each_row(&self, mut f: impl FnMut(usize, &[Range<usize>])) {
        let mut ranges = Vec::new();
        for segment in &self.segments {
            ranges.clear();
            ranges.extend(segment.sees.iter().map(|&k| {
                let seen = &self.segments[k];
                seen.start..seen.start + seen.len
            }));
            let end = segment.start + segment.len;
            for row in segment.start..end {
                let own_end = if segment.causal_inside { row + 1 } else { end };
                ranges.push(segment.start..own_end);
                f(row, &ranges);
                ranges.pop();
            }
        }
    }

    /// The dense mask, row-major `[len, len]`, `true` = masked (Burn's polarity).
    pub fn dense(&self) -> Vec<bool> {
        let n = self.len;
        let mut masked = vec![true; n * n];
        self.for_each_row(|row, ranges| {
            for r in ranges {
                masked[row * n + r.start..row * n + r.end].fill(false);
            }
        });
        masked
    }

    /// [`Self::dense`] as a tensor on `device`.
    ///
    /// # Shapes
    /// - output: `[len, len]`, `true` = masked
    pub fn dense_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2, Bool> {
        Tensor::from_data(TensorData::new(self.dense(), [self.len, self.len]), device)
    }
}
