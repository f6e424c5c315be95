//! A greedy packer that fills sequences up to a token budget, as BAGEL's data loader does.

use serde::{Deserialize, Serialize};

use crate::config::PackingConfig;
use crate::error::PackError;
use crate::packed::PackedSequence;
use crate::plan::plan_sample;
use crate::sample::Sample;

/// Token budget of one pack (BAGEL: expected 32768, hard maximum 36864).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackBudget {
    /// A pack is closed once it holds at least this many tokens.
    pub expected_tokens: usize,
    /// A pack never holds more; a sample that would overflow it opens the next pack.
    pub max_tokens: usize,
}

impl Default for PackBudget {
    fn default() -> Self {
        Self {
            expected_tokens: 32_768,
            max_tokens: 36_864,
        }
    }
}

/// Greedy packing of a stream of samples.
///
/// ```
/// use uno_packing::{GreedyPacker, ImageSize, PackBudget, PackingConfig, Sample};
/// let budget = PackBudget { expected_tokens: 100, max_tokens: 150 };
/// let mut packer = GreedyPacker::new(PackingConfig::default(), budget).unwrap();
/// let mut packs = Vec::new();
/// for _ in 0..5 {
///     let sample = Sample::plain_text_to_image(vec![1, 2, 3], ImageSize::new(128, 128));
///     packs.extend(packer.push(&sample).unwrap()); // 5 + 66 tokens each
/// }
/// packs.extend(packer.finish());
/// assert_eq!(packs.iter().map(|p| p.num_samples()).collect::<Vec<_>>(), [2, 2, 1]);
/// ```
#[derive(Debug, Clone)]
pub struct GreedyPacker {
    config: PackingConfig,
    budget: PackBudget,
    current: PackedSequence,
    /// Samples offered so far, bad ones included: errors name samples by this count.
    offered: usize,
}

impl GreedyPacker {
    /// A packer with an empty open pack.
    ///
    /// # Errors
    ///
    /// [`PackError::Config`] when `config` is invalid or the budget does not satisfy
    /// `0 < expected_tokens <= max_tokens`.
    pub fn new(config: PackingConfig, budget: PackBudget) -> Result<Self, PackError> {
        config.validate()?;
        if budget.expected_tokens == 0 || budget.expected_tokens > budget.max_tokens {
            return Err(PackError::Config(format!(
                "pack budget needs 0 < expected_tokens ({}) <= max_tokens ({})",
                budget.expected_tokens, budget.max_tokens
            )));
        }
        Ok(Self {
            config,
            budget,
            current: PackedSequence::default(),
            offered: 0,
        })
    }

    /// Offer one sample. Returns the previous pack when it is complete: it reached the
    /// expected budget, or this sample would push it past the hard maximum (the sample then
    /// opens the next pack). On error the sample is skipped and the open pack is unchanged,
    /// so one bad record costs nothing else.
    pub fn push(&mut self, sample: &Sample) -> Result<Option<PackedSequence>, PackError> {
        let index = self.offered;
        self.offered += 1;
        let planned = plan_sample(sample, index, &self.config)?;
        if planned.tokens > self.budget.max_tokens {
            return Err(PackError::SampleTooLong {
                sample: index,
                tokens: planned.tokens,
                max: self.budget.max_tokens,
            });
        }
        let full = self.current.len >= self.budget.expected_tokens
            || self.current.len + planned.tokens > self.budget.max_tokens;
        let done = (full && self.current.len > 0).then(|| std::mem::take(&mut self.current));
        self.current.append(planned, &self.config);
        Ok(done)
    }

    /// The last, partly filled pack, if any.
    pub fn finish(self) -> Option<PackedSequence> {
        (self.current.len > 0).then_some(self.current)
    }
}
