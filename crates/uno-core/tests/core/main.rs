//! uno-core's integration tests, one binary: every test binary links all of Burn, so one
//! binary per file would multiply CI's link time.

mod accumulation;
mod alignment;
mod bagel;
mod bagel_checkpoint;
mod batches;
mod checkpointing;
mod embed;
mod fixture;
mod generate;
mod paper_shapes;
mod parity;
mod pretrain;
mod scenes;
mod vae;
mod vision;
