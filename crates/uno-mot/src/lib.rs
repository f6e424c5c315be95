//! BAGEL's mixture-of-transformers decoder (issue #3 fills this crate).
