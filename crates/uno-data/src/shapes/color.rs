//! The six colours of the shapes world, as a type: a benchmark spec cannot name a colour
//! the renderer does not draw.

use serde::{Deserialize, Serialize};

use crate::synthetic::COLORS;

/// One colour of the synthetic palette (the order of the synthetic set's colour indexes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Color {
    /// Index 0.
    Red,
    /// Index 1.
    Green,
    /// Index 2.
    Blue,
    /// Index 3.
    Yellow,
    /// Index 4.
    Purple,
    /// Index 5.
    Orange,
}

impl Color {
    /// Every colour, in index order.
    pub const ALL: [Self; 6] = [
        Self::Red,
        Self::Green,
        Self::Blue,
        Self::Yellow,
        Self::Purple,
        Self::Orange,
    ];

    /// The index the synthetic set's [`crate::Shape::color`] uses.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The prompt word ("red").
    pub fn name(self) -> &'static str {
        COLORS[self.index()].0
    }

    /// The colour the renderer draws, RGB in `[0, 1]`.
    pub fn rgb(self) -> [f32; 3] {
        COLORS[self.index()].2
    }
}
