//! uno-objectives' integration tests, one binary (each test binary links all of Burn).

mod caption;
mod common;
mod dropout;
mod flow;
mod loss;
mod visual;
