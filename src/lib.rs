#![doc = include_str!("../README.md")]
//! (The workspace root package: it only hosts examples, benches and cross-crate tests, and
//! doc-tests the README's code with the public `uno-core` API, as a user's crate would.)
