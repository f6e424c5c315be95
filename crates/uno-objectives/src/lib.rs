//! UNO objectives, generic over Burn backends (paper eq. 1-3, BAGEL's flow matching).
//!
//! * [`flow`]: timestep sampling and shift, seeded host-side noise ([`FlowNoise`]), noising
//!   of the VAE latents and the velocity target, [`flow_matching_loss`].
//! * [`caption`]: next-token [`caption_cross_entropy`] with [`IGNORE_INDEX`].
//! * [`visual`]: [`metaquery_cosine_loss`] (`1 - cos`, target gradient-stopped) and
//!   [`pool_target_grid`] / [`pool_target_tokens`] to a `sqrt(N) x sqrt(N)` grid.
//! * [`loss`]: [`UnoLossConfig`] / [`UnoLoss`] combining the three with weights and returning
//!   every component and the item counts ([`LossCounts`]) for global normalisation.
//! * [`dropout`]: seeded conditioning dropout for classifier-free guidance.
//!
//! # Conventions
//! The model gathers the hidden rows itself; the losses take already-gathered tensors
//! (`[N, C]` velocities, `[N, V]` logits, `[M, D]` metaquery outputs). Index-like inputs
//! (labels, timestep slots) are HOST slices, as uno-packing produces them, and are uploaded
//! on the device of the tensor they go with. Each loss returns a [`LossTerm`] (`mean`, `sum`,
//! `count`); an empty set gives zero with `count == 0`, never NaN. Every failure is an
//! [`ObjectiveError`], never a panic on user data.
//!
//! # Cost of the finiteness check
//! Each loss reads ONE scalar back from the device (the detached loss sum, plus for the
//! caption a `sum(logits * 0)` probe), which synchronises the device once per term. More
//! read-backs happen only on the error path, to name the offending tensor.
//! [`UnoLossConfig::check_finite`] turns the check off.

#![warn(missing_docs)]

pub mod caption;
pub mod dropout;
pub mod error;
pub mod flow;
pub mod loss;
mod term;
pub mod visual;

pub use caption::{IGNORE_INDEX, caption_cross_entropy, caption_target_count};
pub use dropout::{ConditionDrop, ConditionDropoutConfig, drop_condition};
pub use error::{ObjectiveError, Result};
pub use flow::{
    FlowMatchingConfig, FlowNoise, FlowSlot, NoisedLatents, UNO_TIMESTEP_SHIFT, flow_matching_loss,
    sample_timesteps, shift_timestep, shifted_timestep_cdf,
};
pub use loss::{LossCounts, UnoLoss, UnoLossConfig, UnoLossInputs, UnoLossOutput};
pub use term::LossTerm;
pub use visual::{
    cosine_similarity_rows, metaquery_cosine_loss, metaquery_grid_side, pool_target_grid,
    pool_target_tokens,
};
