//! Caption next-token cross entropy (paper eq. 1).
//!
//! The packer gives, per caption of `n` tokens, `n + 1` targets: the predictions from
//! `<|im_start|>` and from every caption token, labelled with the caption tokens then
//! `<|im_end|>`. The model gathers the logits at those positions; this loss receives the
//! `[N, V]` logits and the `N` labels (host `&[u32]`, as the packer produces them).

use burn::tensor::{Int, Tensor, TensorData, activation::log_softmax, backend::Backend};

use crate::error::{ObjectiveError, Result};
use crate::term::{LossTerm, ensure_finite, nonfinite_probe};

/// Label of a position that has no target and is skipped (PyTorch uses -100; labels here are
/// unsigned token ids, so the sentinel is `u32::MAX`).
pub const IGNORE_INDEX: u32 = u32::MAX;

/// Number of labels that carry a loss (not [`IGNORE_INDEX`]): the caption count of a pack,
/// known on the host before the forward pass (for all-reducing global counts early).
pub fn caption_target_count(labels: &[u32]) -> usize {
    labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
}

/// Mean next-token cross entropy `-log softmax(logits)[label]` over the non-ignored targets.
///
/// * `logits`: `[N, V]`; `labels`: `N` token ids `< V`, or [`IGNORE_INDEX`].
/// * No targets, or every label ignored: zero loss with `count == 0` (not NaN).
/// * Errors: label count != N, label >= V, non-finite logits in a used row (`-inf` included:
///   mask vocabulary entries with a large negative number instead). One scalar read-back.
pub fn caption_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: &[u32],
) -> Result<LossTerm<B>> {
    cross_entropy_term(logits, labels, true, CeNames::CAPTION)
}

/// The names a next-token CE term reports its errors under: the same loss serves UNO's
/// caption and the understanding answers (BAGEL's `ce_loss`), which are separate terms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CeNames {
    loss: &'static str,
    logits: &'static str,
    labels: &'static str,
}

impl CeNames {
    pub(crate) const CAPTION: Self = Self {
        loss: "caption",
        logits: "caption.logits",
        labels: "caption.labels (one per row of caption.logits)",
    };
    pub(crate) const TEXT: Self = Self {
        loss: "text",
        logits: "text.logits",
        labels: "text.labels (one per row of text.logits)",
    };
}

pub(crate) fn cross_entropy_term<B: Backend>(
    logits: Tensor<B, 2>,
    labels: &[u32],
    check: bool,
    names: CeNames,
) -> Result<LossTerm<B>> {
    let [n, vocab] = logits.dims();
    if labels.len() != n {
        return Err(ObjectiveError::Count {
            what: names.labels,
            expected: n,
            found: labels.len(),
        });
    }
    let mut rows = Vec::with_capacity(n);
    let mut targets = Vec::with_capacity(n);
    for (i, &label) in labels.iter().enumerate() {
        if label == IGNORE_INDEX {
            continue;
        }
        if label as usize >= vocab {
            return Err(ObjectiveError::LabelOutOfRange {
                index: i,
                label,
                vocab,
            });
        }
        rows.push(i as i64);
        targets.push(label as i64);
    }
    let device = logits.device();
    let count = rows.len();
    if count == 0 {
        return Ok(LossTerm::zero(&device));
    }
    let used = if count == n {
        logits
    } else {
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [count]), &device);
        logits.select(0, idx)
    };
    let target_idx = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [count, 1]), &device);
    let picked = log_softmax(used.clone(), 1).gather(1, target_idx);
    let sum = picked.sum().neg();
    if check {
        // The loss alone misses a `-inf` logit off the label; the probe catches it.
        let probe = sum.clone().detach() + nonfinite_probe(used.clone());
        ensure_finite(probe, names.loss, &[(names.logits, used)])?;
    }
    Ok(LossTerm::from_sum(sum, count))
}
