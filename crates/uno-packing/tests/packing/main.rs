//! uno-packing's integration tests, one binary (each test binary links all of Burn).

mod errors;
mod fuzz;
mod hand_layouts;
mod invariants;
mod tensor_edge;
