//! uno-shapesbench's tests: one binary (STYLE.md 8).

mod caption;
mod generation;
mod pipeline;
mod plots;
mod report;
