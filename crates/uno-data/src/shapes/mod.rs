//! ShapesBench: a compositional text-to-image benchmark over the synthetic shapes world, in
//! GenEval's categories, judged by pixels (issue #16; `docs/shapesbench.md`).
//!
//! * [`PromptSpec`]: a prompt and the structured spec behind it (objects with shape,
//!   colour and count, an optional relative position), in one of six [`Category`]s;
//! * [`ShapesBench`]: the fixed split, from a seed: colour-shape pairs held out of
//!   training, the training prompt distribution, the held-out evaluation prompts;
//! * [`PixelJudge`]: finds the objects of an RGB image (nearest palette colour, connected
//!   components, shape from the outline) and scores an image against a spec, 1 when every
//!   constraint holds; [`BenchScores`] aggregates per category.
//!
//! Pure Rust on [`crate::RgbImage`]s: the judge needs no tensors and no model.

mod color;
mod detect;
mod judge;
mod prompt;
mod score;
mod split;

pub use color::Color;
pub use detect::{Detection, PixelJudge};
pub use prompt::{COUNTS, Category, ObjectSpec, PromptSpec, Relation};
pub use score::BenchScores;
pub use split::{ShapesBench, ShapesBenchConfig};
