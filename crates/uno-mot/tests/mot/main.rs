//! Integration tests of the MoT decoder, instantiated per backend with
//! `uno_testing::backend_tests!` (flex always; ndarray/wgpu/cuda behind this crate's features).

mod attention;
mod common;
mod errors;
mod fd_grad;
mod forward;
mod freeze;
mod kv_cache;
mod precision;
mod reference;
mod rope;
mod stats;
mod tape;
