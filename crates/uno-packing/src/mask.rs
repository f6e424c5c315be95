//! The block attention mask: per sample, per split, which splits it sees and how it sees
//! itself. O(splits) to store; a dense `L x L` matrix only on request.
//!
//! Rules (BAGEL, plus UNO's supervision splits; ARCHITECTURE.md "Packed sequences"):
//! * samples never see each other (one [`SampleMask`] per sample);
//! * every split sees all earlier splits of its sample, except that
//!   * a `noise` split is hidden from every other split but its sample's supervision splits,
//!   * supervision splits (caption, metaqueries) are hidden from every other split,
//!   * a supervision split sees only its noised target (the latest noise split before it),
//!     or under [`SupervisionVisibility::AllButPrompt`] also the earlier clean images, or
//!     under [`SupervisionVisibility::Everything`] (the "mask off" ablation) every earlier
//!     split;
//! * inside a split: causal for text, caption and causal metaqueries, full otherwise.

use serde::{Deserialize, Serialize};

use crate::config::SupervisionVisibility;
use crate::split::AttnMode;

/// One split's row of the block mask. Offsets are relative to the sample's first token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMask {
    /// First token of the split, relative to the sample.
    pub start: usize,
    /// Tokens in the split.
    pub len: usize,
    /// The split's attention mode: causal or full inside itself (its visibility to other
    /// splits is already resolved into their `sees`).
    pub mode: AttnMode,
    /// Indexes (within the sample) of the *other* splits this split sees entirely.
    pub sees: Vec<usize>,
}

/// The attention mask of one sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleMask {
    /// The sample's splits in sequence order, contiguous from token 0.
    pub splits: Vec<SplitMask>,
}

impl SampleMask {
    /// Build the mask of a sample from its splits' `(mode, len)` in order.
    pub fn new(modes_and_lens: &[(AttnMode, usize)], visibility: SupervisionVisibility) -> Self {
        let modes: Vec<AttnMode> = modes_and_lens.iter().map(|(m, _)| *m).collect();
        let mut start = 0;
        let splits = modes_and_lens
            .iter()
            .enumerate()
            .map(|(q, &(mode, len))| {
                let split = SplitMask {
                    start,
                    len,
                    mode,
                    sees: (0..q)
                        .filter(|&k| split_sees(&modes, q, k, visibility))
                        .collect(),
                };
                start += len;
                split
            })
            .collect();
        Self { splits }
    }

    /// Number of tokens in the sample.
    pub fn len(&self) -> usize {
        self.splits.last().map_or(0, |s| s.start + s.len)
    }

    /// Whether the sample has no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index of the split holding token `pos` (relative to the sample).
    pub fn split_of(&self, pos: usize) -> usize {
        self.splits.partition_point(|s| s.start + s.len <= pos)
    }

    /// Whether query token `q` may attend to key token `k` (both relative to the sample).
    pub fn attends(&self, q: usize, k: usize) -> bool {
        let (qs, ks) = (self.split_of(q), self.split_of(k));
        if qs == ks {
            !self.splits[qs].mode.is_causal_inside() || k <= q
        } else {
            self.splits[qs].sees.contains(&ks)
        }
    }

    /// The dense boolean mask, row-major `[len, len]`, `true` = masked (Burn's polarity;
    /// BAGEL's additive float masks are the opposite, this is the one conversion point).
    pub fn dense(&self) -> Vec<bool> {
        let n = self.len();
        let mut masked = vec![true; n * n];
        for split in &self.splits {
            for q in split.start..split.start + split.len {
                let row = &mut masked[q * n..(q + 1) * n];
                for &k in &split.sees {
                    let other = &self.splits[k];
                    row[other.start..other.start + other.len].fill(false);
                }
                let inner_end = if split.mode.is_causal_inside() {
                    q + 1
                } else {
                    split.start + split.len
                };
                row[split.start..inner_end].fill(false);
            }
        }
        masked
    }
}

/// Whether split `q` sees the earlier split `k` (`k < q`) of the same sample.
fn split_sees(modes: &[AttnMode], q: usize, k: usize, visibility: SupervisionVisibility) -> bool {
    let (query, key) = (modes[q], modes[k]);
    if key.is_supervision() {
        return false;
    }
    if query.is_supervision() {
        let target = modes[..q].iter().rposition(|m| *m == AttnMode::Noise);
        return match visibility {
            SupervisionVisibility::NoisedTargetOnly => Some(k) == target,
            SupervisionVisibility::AllButPrompt => Some(k) == target || key == AttnMode::Full,
            SupervisionVisibility::Everything => true,
        };
    }
    key != AttnMode::Noise
}
