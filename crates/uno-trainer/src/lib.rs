//! The UNO post-training loop.
//!
//! Not implemented yet (issue #6): AdamW with BAGEL's defaults, warmup + cosine/constant
//! schedules, global-norm clipping, EMA of the trainable weights, atomic checkpoints and
//! exact resume. This crate exports nothing until then, so nothing can be mistaken for it.
