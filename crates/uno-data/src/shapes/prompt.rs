//! Benchmark prompts: GenEval's categories over the shapes world, each prompt carrying the
//! structured spec the judge checks, and the ground-truth layout of a spec.

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};

use super::Color;
use crate::{Scene, Shape, ShapeKind};

/// GenEval's prompt categories (its "size" has no counterpart here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// One shape, any colour: "a circle".
    SingleObject,
    /// Two different shapes, any colours: "a circle and a square".
    TwoObjects,
    /// Exactly 2 to 4 of one shape, any colours: "three circles".
    Counting,
    /// One shape of one colour: "a red circle".
    Colors,
    /// Two different shapes in a relative position: "a circle left of a square".
    Position,
    /// Two different shapes of two different colours, each bound to its own:
    /// "a red circle and a blue square".
    ColorAttribution,
}

impl Category {
    /// Every category, in report order (the order of the variants).
    pub const ALL: [Self; 6] = [
        Self::SingleObject,
        Self::TwoObjects,
        Self::Counting,
        Self::Colors,
        Self::Position,
        Self::ColorAttribution,
    ];

    /// The name used in reports and JSON (`single_object`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::SingleObject => "single_object",
            Self::TwoObjects => "two_objects",
            Self::Counting => "counting",
            Self::Colors => "colors",
            Self::Position => "position",
            Self::ColorAttribution => "color_attribution",
        }
    }
}

/// Where the first object of a [`Category::Position`] prompt is relative to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// Centroid column smaller.
    LeftOf,
    /// Centroid column larger.
    RightOf,
    /// Centroid row smaller.
    Above,
    /// Centroid row larger.
    Below,
}

impl Relation {
    /// Every relation.
    pub const ALL: [Self; 4] = [Self::LeftOf, Self::RightOf, Self::Above, Self::Below];

    /// The prompt words.
    pub fn words(self) -> &'static str {
        match self {
            Self::LeftOf => "left of",
            Self::RightOf => "right of",
            Self::Above => "above",
            Self::Below => "below",
        }
    }

    /// Whether a point at `a` stands in this relation to a point at `b` by more than
    /// `margin` (points are `[row, col]`, rows growing downwards).
    pub fn holds(self, a: [f32; 2], b: [f32; 2], margin: f32) -> bool {
        match self {
            Self::LeftOf => b[1] - a[1] > margin,
            Self::RightOf => a[1] - b[1] > margin,
            Self::Above => b[0] - a[0] > margin,
            Self::Below => a[0] - b[0] > margin,
        }
    }
}

/// One object phrase of a prompt: `count` shapes of one kind, of one colour when named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectSpec {
    /// The shape.
    pub shape: ShapeKind,
    /// The named colour; `None` when the prompt names none (any colour is right).
    pub color: Option<Color>,
    /// How many (1 unless the category is [`Category::Counting`]).
    pub count: usize,
}

/// A benchmark prompt as the judge sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PromptSpec {
    /// Which GenEval category the prompt tests.
    pub category: Category,
    /// The object phrases, in text order (one or two).
    pub objects: Vec<ObjectSpec>,
    /// For [`Category::Position`]: where `objects[0]` is relative to `objects[1]`.
    pub relation: Option<Relation>,
}

/// Number words, indexed by count (a scene holds at most 9 shapes, one per cell).
const COUNT_WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// Counts a [`Category::Counting`] prompt asks for.
pub const COUNTS: std::ops::RangeInclusive<usize> = 2..=4;

impl ObjectSpec {
    /// "a red circle", "three circles".
    fn phrase(&self) -> String {
        let color = self
            .color
            .map(|c| format!("{} ", c.name()))
            .unwrap_or_default();
        let shape = self.shape.words().0;
        match self.count {
            1 => format!("a {color}{shape}"),
            n => {
                let number = COUNT_WORDS
                    .get(n)
                    .map_or_else(|| n.to_string(), |w| w.to_string());
                format!("{number} {color}{shape}s")
            }
        }
    }
}

impl PromptSpec {
    /// The prompt text: "a circle left of a square", "a red circle and a blue square".
    pub fn text(&self) -> String {
        let phrases: Vec<String> = self.objects.iter().map(ObjectSpec::phrase).collect();
        match self.relation {
            Some(relation) => phrases.join(&format!(" {} ", relation.words())),
            None => phrases.join(" and "),
        }
    }

    /// Whether the prompt names `color` on `shape`.
    pub fn names_pair(&self, color: Color, shape: ShapeKind) -> bool {
        self.objects
            .iter()
            .any(|o| o.shape == shape && o.color == Some(color))
    }

    /// Every prompt of `category`, in a fixed order (for the coloured categories, including
    /// those naming held-out pairs: [`super::ShapesBench`] splits them).
    pub fn enumerate(category: Category) -> Vec<Self> {
        let one = |shape, color| ObjectSpec {
            shape,
            color,
            count: 1,
        };
        let spec = |objects, relation| Self {
            category,
            objects,
            relation,
        };
        let shapes = ShapeKind::ALL;
        let distinct_pairs = || {
            shapes
                .into_iter()
                .flat_map(move |a| shapes.into_iter().map(move |b| (a, b)))
                .filter(|(a, b)| a != b)
        };
        match category {
            Category::SingleObject => shapes.map(|s| spec(vec![one(s, None)], None)).to_vec(),
            Category::TwoObjects => distinct_pairs()
                .map(|(a, b)| spec(vec![one(a, None), one(b, None)], None))
                .collect(),
            Category::Counting => shapes
                .into_iter()
                .flat_map(|shape| {
                    COUNTS.map(move |count| {
                        spec(
                            vec![ObjectSpec {
                                shape,
                                color: None,
                                count,
                            }],
                            None,
                        )
                    })
                })
                .collect(),
            Category::Colors => Color::ALL
                .into_iter()
                .flat_map(|c| shapes.map(|s| spec(vec![one(s, Some(c))], None)))
                .collect(),
            Category::Position => distinct_pairs()
                .flat_map(|(a, b)| {
                    Relation::ALL.map(|r| spec(vec![one(a, None), one(b, None)], Some(r)))
                })
                .collect(),
            // Shapes in index order: "a red circle and a blue square" is the same
            // composition as "a blue square and a red circle".
            Category::ColorAttribution => distinct_pairs()
                .filter(|(a, b)| (*a as usize) < (*b as usize))
                .flat_map(|(a, b)| {
                    Color::ALL.into_iter().flat_map(move |ca| {
                        Color::ALL
                            .into_iter()
                            .filter(move |&cb| cb != ca)
                            .map(move |cb| (a, ca, b, cb))
                    })
                })
                .map(|(a, ca, b, cb)| spec(vec![one(a, Some(ca)), one(b, Some(cb))], None))
                .collect(),
        }
    }

    /// Why this spec has no layout on the 3x3 grid, if it has none: a count of 0, more
    /// objects than cells, or a relation not between exactly two single objects.
    pub(super) fn layout_problem(&self) -> Option<String> {
        let total: usize = self.objects.iter().map(|o| o.count).sum();
        if self.objects.is_empty() || self.objects.iter().any(|o| o.count == 0) {
            Some("every object needs a count of at least 1".into())
        } else if total > 9 {
            Some(format!("{total} objects do not fit the 9 cells"))
        } else if self.relation.is_some() && (self.objects.len() != 2 || total != 2) {
            Some("a relation needs exactly two objects of count 1".into())
        } else {
            None
        }
    }

    /// A ground-truth scene of this prompt: every object it names, each in its own cell of
    /// the 3x3 grid, nothing else. Objects without a named colour get one of
    /// `unnamed_colors(shape)`; a relation is met by the cells' grid rows or columns.
    ///
    /// The spec has passed [`Self::layout_problem`] and `unnamed_colors` never returns an
    /// empty list (every shape keeps five training colours).
    pub(super) fn layout<R: Rng>(
        &self,
        rng: &mut R,
        unnamed_colors: impl Fn(ShapeKind) -> Vec<Color>,
    ) -> Scene {
        let kinds: Vec<(ShapeKind, Option<Color>)> = self
            .objects
            .iter()
            .flat_map(|o| std::iter::repeat_n((o.shape, o.color), o.count))
            .collect();
        let cells: Vec<usize> = match self.relation {
            Some(relation) => {
                let pairs: Vec<(usize, usize)> = (0..9)
                    .flat_map(|a| (0..9).map(move |b| (a, b)))
                    .filter(|&(a, b)| relation.holds(cell_point(a), cell_point(b), 0.5))
                    .collect();
                let &(a, b) = pairs
                    .choose(rng)
                    .expect("every relation holds between two cells of a 3x3 grid");
                vec![a, b]
            }
            None => {
                let mut cells: Vec<usize> = (0..9).collect();
                cells.shuffle(rng);
                cells
            }
        };
        let shapes = kinds
            .iter()
            .zip(cells)
            .map(|(&(kind, color), cell)| {
                let color = color.unwrap_or_else(|| {
                    *unnamed_colors(kind)
                        .choose(rng)
                        .expect("unnamed_colors returns at least one colour")
                });
                Shape {
                    kind,
                    color: color.index(),
                    cell,
                }
            })
            .collect();
        Scene { shapes }
    }
}

/// `[row, col]` of a grid cell.
fn cell_point(cell: usize) -> [f32; 2] {
    [(cell / 3) as f32, (cell % 3) as f32]
}
