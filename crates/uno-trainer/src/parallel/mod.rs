//! Data-parallel training on Burn's collective engine (burn-collective): N peers, one
//! thread per device, every peer a full replica of the model.
//!
//! Per step (see `docs/distributed.md` for the whole design and the launch):
//! * the step's micro-batches are `peers x grad_accumulation` consecutive data positions;
//!   peer `r` reads the `r`-th block of `grad_accumulation` of them, a disjoint shard;
//! * the loss item counts ([`TrainStep::loss_counts`](crate::TrainStep::loss_counts)) are
//!   summed over all peers BEFORE the first forward, so each peer normalises its per-token
//!   loss sums by the global counts (BAGEL's normalisation); a model without counts has
//!   each micro-batch loss divided by `peers x grad_accumulation`;
//! * after the backward, the trainable parameters' gradients are summed over the peers in
//!   one all-reduce, then clipped by their global norm, so every peer applies the same
//!   AdamW step and the same EMA update: the replicas stay bit-identical (with
//!   `optimizer.shard_state`, each peer steps its own share and the shares are exchanged:
//!   [`shard`]);
//! * peer 0 alone writes checkpoints and metrics, between two agreements, so that a
//!   checkpoint is written only when every peer finished the step, and every peer learns
//!   whether the write succeeded.
//!
//! The same global batch on one device gives the same weights up to float summation order
//! (tested to 1e-6 relative). Failures are agreed ([`Peer`]): a peer that errors or panics
//! stops every peer at the next agreement.

mod broadcast;
mod grads;
mod launch;
mod peer;
mod shard;

pub(crate) use broadcast::broadcast_module;
pub(crate) use grads::all_reduce_grads;
pub use launch::{PeerError, run_data_parallel};
pub(crate) use peer::agreed;
pub use peer::{MAX_PEERS, Peer};
pub(crate) use shard::OptimizerShard;
