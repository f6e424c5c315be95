//! How code generic over `B: Backend` reaches operations that need `Autodiff<X, C>` spelled
//! out (custom backward passes).
//!
//! # Why a `TypeId` dispatch
//! A custom backward is implemented for `Autodiff<X, C>` (burn-autodiff's `Backward` trait
//! sees the inner backend `X`), but every public signature of this workspace is
//! `B: Backend`, and Burn has no specialisation. The alternatives were:
//! * a backend extension trait (`B: FlashBackend`), implemented for `Autodiff<X, C>` and for
//!   each plain backend: the bound would spread to every generic function of every crate
//!   (model, objectives, trainer), and a user's own backend could not implement our trait
//!   for Burn's types (orphan rule);
//! * this dispatch: [`visit`] compares `TypeId::of::<B>()` with `Autodiff<X, C>` for the
//!   backends this crate is built with (features `flex`, `ndarray`, `wgpu`, `cuda`; both of
//!   Burn's checkpoint strategies) and hands the visitor the concrete `X` and `C`; values
//!   are moved between the two spellings of the same type with [`cast`].
//!
//! Any other backend takes the visitor's [`AutodiffVisitor::other`] path, which must be
//! correct for every backend (typically the same computation in ordinary tensor ops, which
//! autodiff then records op by op: correct gradients, more memory).

use std::any::{Any, TypeId};

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::tensor::backend::Backend;

/// Work that needs the inner backend of an autodiff backend `B`.
pub(crate) trait AutodiffVisitor<B: Backend> {
    /// What the work returns.
    type Output;
    /// Called when `B` is `Autodiff<X, C>`.
    fn autodiff<X: Backend, C: CheckpointStrategy>(self) -> Self::Output;
    /// Called for every other backend.
    fn other(self) -> Self::Output;
}

/// Run `visitor` with the concrete inner backend of `B` when `B` is a recognised
/// `Autodiff<X, C>`, else its [`AutodiffVisitor::other`] path.
pub(crate) fn visit<B: Backend, V: AutodiffVisitor<B>>(visitor: V) -> V::Output {
    macro_rules! try_inner {
        ($inner:ty) => {
            if TypeId::of::<B>() == TypeId::of::<Autodiff<$inner, NoCheckpointing>>() {
                return visitor.autodiff::<$inner, NoCheckpointing>();
            }
            if TypeId::of::<B>() == TypeId::of::<Autodiff<$inner, BalancedCheckpointing>>() {
                return visitor.autodiff::<$inner, BalancedCheckpointing>();
            }
        };
    }
    #[cfg(feature = "flex")]
    try_inner!(burn::backend::Flex);
    #[cfg(feature = "ndarray")]
    try_inner!(burn::backend::NdArray);
    #[cfg(feature = "wgpu")]
    try_inner!(burn::backend::Wgpu);
    #[cfg(feature = "cuda")]
    try_inner!(burn::backend::Cuda);
    visitor.other()
}

/// Move a value between two spellings of the same type (`T` and `U` must be equal, which
/// [`visit`] has checked through the backend's `TypeId`).
pub(crate) fn cast<T: 'static, U: 'static>(value: T) -> U {
    *(Box::new(value) as Box<dyn Any>)
        .downcast::<U>()
        .expect("visit checked that the backend types are equal")
}
