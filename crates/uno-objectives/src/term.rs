//! [`LossTerm`]: one loss component with the count it was normalised by, and the shared
//! finiteness check.

use burn::tensor::{ElementConversion, Tensor, backend::Backend};

use crate::error::{ObjectiveError, Result};

/// One loss component of a pack.
///
/// `sum` is the sum of the per-item losses (per noised token, per caption target, per
/// metaquery) and `count` the number of items, so that `mean = sum / count` on this pack.
/// Data-parallel training that normalises globally (as BAGEL does) divides `sum` by the
/// all-reduced count instead, see [`LossTerm::normalized_by`].
///
/// An empty term (no tokens) has `count == 0` and `sum == mean == 0` (a constant, not NaN).
#[derive(Debug, Clone)]
pub struct LossTerm<B: Backend> {
    /// `sum / count`, shape `[1]`; zero when `count == 0`.
    pub mean: Tensor<B, 1>,
    /// Sum of the per-item losses, shape `[1]`.
    pub sum: Tensor<B, 1>,
    /// Number of items the term averages over.
    pub count: usize,
}

impl<B: Backend> LossTerm<B> {
    /// The loss of an empty index set: constant zeros and `count == 0`.
    pub fn zero(device: &B::Device) -> Self {
        Self {
            mean: Tensor::zeros([1], device),
            sum: Tensor::zeros([1], device),
            count: 0,
        }
    }

    pub(crate) fn from_sum(sum: Tensor<B, 1>, count: usize) -> Self {
        debug_assert!(count > 0);
        let mean = sum.clone().div_scalar(count as f64);
        Self { mean, sum, count }
    }

    /// `sum / denominator`, for normalising by a count gathered over all data-parallel ranks.
    ///
    /// With `denominator == 0` the term must be empty too (then zero is returned); otherwise
    /// [`ObjectiveError::GlobalCount`] names the term.
    pub fn normalized_by(&self, denominator: usize, term: &'static str) -> Result<Tensor<B, 1>> {
        if denominator == 0 {
            if self.count == 0 {
                return Ok(self.sum.zeros_like());
            }
            return Err(ObjectiveError::GlobalCount {
                term,
                local: self.count,
            });
        }
        Ok(self.sum.clone().div_scalar(denominator as f64))
    }
}

/// Read a one-element tensor back to the host (a device synchronisation).
pub(crate) fn read_scalar<B: Backend>(x: Tensor<B, 1>, what: &'static str) -> Result<f64> {
    x.try_into_scalar()
        .map(|v| v.elem::<f64>())
        .map_err(|e| ObjectiveError::Backend {
            what,
            message: format!("{e:?}"),
        })
}

/// `sum(x * 0)`: zero when every element of `x` is finite, NaN otherwise (`0 * inf` and
/// `0 * NaN` are NaN). Costs one element-wise product and one reduction, no read-back.
pub(crate) fn nonfinite_probe<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    x.detach().mul_scalar(0.0).sum()
}

/// Check that `probe` (the detached loss sum, possibly plus [`nonfinite_probe`]s) is finite.
///
/// This is ONE scalar read-back per loss term (it synchronises the device). Only when it
/// fails are the `inputs` probed one by one (more read-backs, on the error path only) to
/// name the offending tensor; if every input is finite the loss itself overflowed and is
/// named instead.
pub(crate) fn ensure_finite<B: Backend>(
    probe: Tensor<B, 1>,
    loss: &'static str,
    inputs: &[(&'static str, Tensor<B, 2>)],
) -> Result<()> {
    if read_scalar(probe, loss)?.is_finite() {
        return Ok(());
    }
    for (name, x) in inputs {
        if !read_scalar(nonfinite_probe(x.clone()), name)?.is_finite() {
            return Err(ObjectiveError::NonFinite { tensor: name, loss });
        }
    }
    Err(ObjectiveError::NonFinite { tensor: loss, loss })
}

/// Check two `[N, C]` tensors have the same shape.
pub(crate) fn check_same_shape(
    a_name: &'static str,
    a: [usize; 2],
    b_name: &'static str,
    b: [usize; 2],
) -> Result<()> {
    if a != b {
        return Err(ObjectiveError::Shape {
            tensor: b_name,
            expected: format!("{a:?} (the shape of `{a_name}`)"),
            found: b.to_vec(),
        });
    }
    Ok(())
}
