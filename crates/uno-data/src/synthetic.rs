//! An embedded synthetic data set: procedurally drawn scenes of coloured shapes at known
//! grid cells, each with a prompt and a lexically different re-caption (the paper's
//! semantic augmentation, section 3.3: the caption must be recovered from the image, not
//! copied from the prompt's tokens). No files needed: item `i` is a pure function of
//! `(seed, i)`, so the default run and the tests are reproducible and resumable.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::shapes::{COUNTS, Category, PromptSpec, ShapesBench};
use crate::tokenizer::SPECIAL_TOKENS;
use crate::{
    DataError, Dataset, ImageTransformConfig, ImageTransforms, RgbImage, TextTokenizer, TrainItem,
};
use uno_packing::{ImageSize, Sample, SpecialTokens, Supervision};

/// (prompt word, re-caption word, RGB); the shapes benchmark's `Color` indexes it.
pub(crate) const COLORS: [(&str, &str, [f32; 3]); 6] = [
    ("red", "crimson", [0.9, 0.1, 0.1]),
    ("green", "emerald", [0.1, 0.75, 0.2]),
    ("blue", "navy", [0.1, 0.2, 0.9]),
    ("yellow", "golden", [0.95, 0.85, 0.1]),
    ("purple", "violet", [0.6, 0.2, 0.8]),
    ("orange", "amber", [1.0, 0.55, 0.0]),
];

/// The light grey every scene is drawn on.
pub(crate) const BACKGROUND: [f32; 3] = [0.92, 0.92, 0.92];

/// Grid cells of a 3x3 layout: (prompt words, re-caption words), row-major.
const CELLS: [(&str, &str); 9] = [
    ("top left", "northwest corner"),
    ("top", "north edge"),
    ("top right", "northeast corner"),
    ("left", "west edge"),
    ("center", "middle"),
    ("right", "east edge"),
    ("bottom left", "southwest corner"),
    ("bottom", "south edge"),
    ("bottom right", "southeast corner"),
];

/// Function words of both templates.
const GLUE: [&str; 12] = [
    "a", "at", "the", "and", "in", "picture", "shows", "there", "is", "also", ",", ".",
];

/// The shape drawn in a cell. Each has a prompt word and a different re-caption word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeKind {
    /// "circle" in the prompt, "disc" in the re-caption.
    Circle,
    /// "square" in the prompt, "box" in the re-caption.
    Square,
    /// "triangle" in the prompt, "wedge" in the re-caption (apex up).
    Triangle,
}

impl ShapeKind {
    /// Every shape, in index order.
    pub const ALL: [Self; 3] = [Self::Circle, Self::Square, Self::Triangle];

    /// (prompt word, re-caption word)
    pub(crate) fn words(self) -> (&'static str, &'static str) {
        match self {
            Self::Circle => ("circle", "disc"),
            Self::Square => ("square", "box"),
            Self::Triangle => ("triangle", "wedge"),
        }
    }

    /// Whether the offset `(dy, dx)` from the cell centre, in units of the shape's radius,
    /// lies inside the shape.
    fn contains(self, dy: f32, dx: f32) -> bool {
        match self {
            Self::Circle => dy * dy + dx * dx <= 1.0,
            Self::Square => dy.abs() <= 0.8 && dx.abs() <= 0.8,
            // Apex up, base at dy = 0.8.
            Self::Triangle => (-0.9..=0.8).contains(&dy) && dx.abs() <= (dy + 0.9) / 1.7 * 0.9,
        }
    }
}

/// One shape of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Which shape.
    pub kind: ShapeKind,
    /// Index into the colour table (0..6: red, green, blue, yellow, purple, orange).
    pub color: usize,
    /// Row-major cell of the 3x3 grid.
    pub cell: usize,
}

/// A scene: shapes in distinct cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scene {
    /// 1 to `max_shapes` shapes, each in its own cell, in drawing and text order.
    pub shapes: Vec<Shape>,
}

impl Scene {
    /// "a red circle at the top left and a blue square at the right"
    pub fn prompt(&self) -> String {
        let parts: Vec<String> = self
            .shapes
            .iter()
            .map(|s| {
                let (color, _, _) = COLORS[s.color];
                format!("a {color} {} at the {}", s.kind.words().0, CELLS[s.cell].0)
            })
            .collect();
        parts.join(" and ")
    }

    /// "the picture shows a crimson disc in the northwest corner , there is also a navy
    /// box in the east edge ." Content words never repeat the prompt's.
    pub fn recaption(&self) -> String {
        let parts: Vec<String> = self
            .shapes
            .iter()
            .map(|s| {
                let (_, color, _) = COLORS[s.color];
                format!("a {color} {} in the {}", s.kind.words().1, CELLS[s.cell].1)
            })
            .collect();
        format!("the picture shows {} .", parts.join(" , there is also "))
    }

    /// Draw the scene on a light grey background as a `size` x `size` image.
    pub fn render(&self, size: usize) -> RgbImage {
        let mut image = RgbImage::filled(size, size, BACKGROUND);
        let cell = size as f32 / 3.0;
        let radius = cell * 0.38;
        for shape in &self.shapes {
            let (cy, cx) = (
                (shape.cell / 3) as f32 * cell + cell / 2.0,
                (shape.cell % 3) as f32 * cell + cell / 2.0,
            );
            for row in 0..size {
                for col in 0..size {
                    let dy = (row as f32 + 0.5 - cy) / radius;
                    let dx = (col as f32 + 0.5 - cx) / radius;
                    if shape.kind.contains(dy, dx) {
                        image.set_pixel(row, col, COLORS[shape.color].2);
                    }
                }
            }
        }
        image
    }
}

/// Settings of the synthetic set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Number of items; `get` rejects indexes past it (the training batches wrap around
    /// for longer runs).
    pub len: usize,
    /// Image side in pixels (square images).
    pub image_size: usize,
    /// Shapes per scene: 1 to this many.
    pub max_shapes: usize,
    /// Seed of every scene: item `i` depends only on `(seed, i)`.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            len: 10_000,
            image_size: 32,
            max_shapes: 2,
            seed: 0,
        }
    }
}

/// Where a synthetic set's scenes and prompts come from.
#[derive(Debug, Clone)]
enum Prompts {
    /// 1 to `max_shapes` random shapes, the prompt naming each one's colour, shape and cell.
    Grid,
    /// ShapesBench's training distribution ([`ShapesBench::train_example`]).
    Bench(ShapesBench),
    /// ShapesBench's evaluation prompts in turn, each laid out from `(seed, index)`.
    BenchHeldOut(ShapesBench),
}

/// Mixed into the seed for the understanding draw, so it is independent of the scene draws
/// that start from the same seed.
const UNDERSTANDING_SALT: u64 = 0x000a_5e57_a9e1;

/// The synthetic data set, with its own word-level tokenizer: random scenes with prompts
/// naming every shape's cell ([`Self::new`]), or the ShapesBench training distribution
/// ([`Self::shapes_bench`]).
#[derive(Debug, Clone)]
pub struct SyntheticScenes {
    config: SyntheticConfig,
    prompts: Prompts,
    tokenizer: TextTokenizer,
    supervision: (bool, bool),
    transforms: ImageTransforms,
    /// Fraction of the items that are understanding samples ([`Self::with_understanding`]).
    understanding: f64,
    /// The UNO caption is the prompt itself ([`Self::with_prompt_captions`]).
    caption_is_prompt: bool,
}

impl SyntheticScenes {
    /// A data set whose items carry both UNO supervision splits.
    pub fn new(config: SyntheticConfig) -> Result<Self, DataError> {
        Self::build(config, Prompts::Grid, Self::vocabulary())
    }

    /// ShapesBench's training distribution as a data set of `len` items drawn at
    /// `image_size` pixels: item `i` is [`ShapesBench::train_example`]`(i)`, its prompt the
    /// benchmark prompt, its caption the scene's re-caption ([`Scene::recaption`]). The
    /// config it reports has the bench's seed and its largest scene (4 shapes). Its
    /// vocabulary is [`Self::bench_vocabulary`].
    pub fn shapes_bench(
        bench: ShapesBench,
        len: usize,
        image_size: usize,
    ) -> Result<Self, DataError> {
        let seed = bench.config().seed;
        Self::build_bench(Prompts::Bench(bench), seed, len, image_size)
    }

    /// ShapesBench's evaluation prompts ([`ShapesBench::held_out_prompts`]) as a data set
    /// of `len` items drawn at `image_size` pixels: item `i` is prompt `i mod n` laid out
    /// ([`ShapesBench::layout`]) from `(seed, i)`, so that under another seed than the
    /// training set's its scenes are never trained on. Items are built like
    /// [`Self::shapes_bench`]'s (same vocabulary, supervision, understanding fraction).
    pub fn shapes_bench_held_out(
        bench: ShapesBench,
        seed: u64,
        len: usize,
        image_size: usize,
    ) -> Result<Self, DataError> {
        Self::build_bench(Prompts::BenchHeldOut(bench), seed, len, image_size)
    }

    /// A ShapesBench set (`prompts` is one of the bench's): room for its largest scene (4
    /// shapes) and the bench's vocabulary.
    fn build_bench(
        prompts: Prompts,
        seed: u64,
        len: usize,
        image_size: usize,
    ) -> Result<Self, DataError> {
        let config = SyntheticConfig {
            len,
            image_size,
            max_shapes: *COUNTS.end(),
            seed,
        };
        let words = Self::bench_vocabulary();
        Self::build(config, prompts, words.iter().map(String::as_str))
    }

    fn build<'a>(
        config: SyntheticConfig,
        prompts: Prompts,
        words: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, DataError> {
        if config.len == 0 || config.image_size < 3 || !(1..=9).contains(&config.max_shapes) {
            return Err(DataError::Config(format!(
                "synthetic set needs len > 0, image_size >= 3 and 1 <= max_shapes <= 9, got {config:?}"
            )));
        }
        let tokenizer = TextTokenizer::word_level(words)?;
        let identity = ImageTransformConfig::fixed(config.image_size, 1);
        Ok(Self {
            config,
            prompts,
            tokenizer,
            supervision: (true, true),
            transforms: ImageTransforms {
                vae: identity,
                vit: identity,
            },
            understanding: 0.0,
            caption_is_prompt: false,
        })
    }

    /// Make a deterministic `fraction` of the items understanding samples (BAGEL's
    /// pretraining mixes them with generation): the scene's ViT-side image, no question,
    /// and its re-caption as the answer (the language the caption loss uses later). Which
    /// items is decided per index from the seed ([`Self::is_understanding`]), so an item
    /// stays a pure function of `(seed, index)`. `fraction` must be in `[0, 1]`.
    pub fn with_understanding(mut self, fraction: f64) -> Result<Self, DataError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(DataError::Config(format!(
                "understanding fraction must be in [0, 1], got {fraction}"
            )));
        }
        self.understanding = fraction;
        Ok(self)
    }

    /// Use the prompt's own tokens as the UNO caption target instead of the re-caption:
    /// the paper's Table 7 ablation without semantic augmentation.
    pub fn with_prompt_captions(mut self, caption_is_prompt: bool) -> Self {
        self.caption_is_prompt = caption_is_prompt;
        self
    }

    /// Whether item `index` is an understanding sample: a hash of `(seed, index)` mapped to
    /// `[0, 1)` falls under the understanding fraction.
    pub fn is_understanding(&self, index: usize) -> bool {
        let mut z = (self.config.seed ^ UNDERSTANDING_SALT)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(index as u64);
        // SplitMix64's finaliser: consecutive indexes give unrelated draws.
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let uniform = (z >> 11) as f64 / (1u64 << 53) as f64;
        uniform < self.understanding
    }

    /// Pass every rendered `image_size` square through `transforms` (by default both copies
    /// are the rendered image itself).
    pub fn with_transforms(mut self, transforms: ImageTransforms) -> Self {
        self.transforms = transforms;
        self
    }

    /// Which supervision splits items carry: `(caption, metaqueries)` (paper Table 7's
    /// ablations: sft = neither, language = caption, visual = metaqueries, joint = both).
    pub fn with_supervision(mut self, caption: bool, metaqueries: bool) -> Self {
        self.supervision = (caption, metaqueries);
        self
    }

    /// Every word either template can produce, then the four special tokens.
    pub fn vocabulary() -> Vec<&'static str> {
        let mut words: Vec<&str> = GLUE.to_vec();
        for (p, r, _) in COLORS {
            words.extend([p, r]);
        }
        for kind in ShapeKind::ALL {
            let (p, r) = kind.words();
            words.extend([p, r]);
        }
        for (p, r) in CELLS {
            words.extend(p.split(' ').chain(r.split(' ')));
        }
        words.extend(SPECIAL_TOKENS);
        let mut seen = std::collections::HashSet::new();
        words.retain(|w| seen.insert(*w));
        words
    }

    /// [`Self::vocabulary`], then the words of ShapesBench's prompts it lacks ("three",
    /// "circles", "left", "of", ...): a word shared with the grid prompts keeps its id.
    pub fn bench_vocabulary() -> Vec<String> {
        let mut words: Vec<String> = Self::vocabulary().into_iter().map(String::from).collect();
        for spec in Category::ALL.into_iter().flat_map(PromptSpec::enumerate) {
            for word in spec.text().split(' ') {
                if !words.iter().any(|w| w == word) {
                    words.push(word.to_string());
                }
            }
        }
        words
    }

    /// The word-level tokenizer over [`Self::vocabulary`] (or [`Self::bench_vocabulary`]).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The special token ids of this vocabulary, for `PackingConfig::special_tokens`.
    pub fn special_tokens(&self) -> SpecialTokens {
        self.tokenizer
            .special_tokens()
            .expect("the synthetic vocabulary holds the special tokens")
    }

    /// The settings the set was built with.
    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }

    /// The scene of item `index`: a pure function of `(seed, index)`.
    pub fn scene(&self, index: usize) -> Scene {
        self.prompted_scene(index).1
    }

    /// The prompt and scene of item `index`.
    fn prompted_scene(&self, index: usize) -> (String, Scene) {
        match &self.prompts {
            Prompts::Grid => {
                let scene = self.grid_scene(index);
                (scene.prompt(), scene)
            }
            Prompts::Bench(bench) => {
                let (spec, scene) = bench.train_example(index as u64);
                (spec.text(), scene)
            }
            Prompts::BenchHeldOut(bench) => {
                let prompts = bench.held_out_prompts();
                let spec = &prompts[index % prompts.len()];
                let mut rng = StdRng::seed_from_u64(
                    self.config
                        .seed
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .wrapping_add(index as u64),
                );
                let scene = bench
                    .layout(spec, &mut rng)
                    .expect("every evaluation prompt has a layout");
                (spec.text(), scene)
            }
        }
    }

    fn grid_scene(&self, index: usize) -> Scene {
        let mut rng = StdRng::seed_from_u64(
            self.config
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(index as u64),
        );
        let count = rng.random_range(1..=self.config.max_shapes);
        let mut cells: Vec<usize> = (0..9).collect();
        cells.shuffle(&mut rng);
        let shapes = cells[..count]
            .iter()
            .map(|&cell| Shape {
                kind: ShapeKind::ALL[rng.random_range(0..ShapeKind::ALL.len())],
                color: rng.random_range(0..COLORS.len()),
                cell,
            })
            .collect();
        Scene { shapes }
    }
}

impl Dataset for SyntheticScenes {
    fn len(&self) -> usize {
        self.config.len
    }

    fn get(&self, index: usize) -> Result<TrainItem, DataError> {
        if index >= self.config.len {
            return Err(DataError::OutOfRange {
                index,
                len: self.config.len,
            });
        }
        let (prompt, scene) = self.prompted_scene(index);
        let target = self
            .transforms
            .apply(&scene.render(self.config.image_size))?;
        let recaption = scene.recaption();
        let (sample, caption) = if self.is_understanding(index) {
            let sample = Sample::Understanding {
                image: ImageSize::new(target.vit.height, target.vit.width),
                question: None,
                answer: self.tokenizer.encode(&recaption)?,
            };
            (sample, recaption)
        } else {
            let caption = match self.caption_is_prompt {
                true => prompt.clone(),
                false => recaption,
            };
            let (with_caption, metaqueries) = self.supervision;
            let sample = Sample::TextToImage {
                prompt: self.tokenizer.encode(&prompt)?,
                target: ImageSize::new(target.vae.height, target.vae.width),
                supervision: Supervision {
                    caption: with_caption
                        .then(|| self.tokenizer.encode(&caption))
                        .transpose()?,
                    metaqueries,
                },
                drop_prompt: false,
            };
            (sample, caption)
        };
        Ok(TrainItem {
            sample,
            target,
            source: None,
            prompt,
            caption,
        })
    }
}
