//! The benchmark's fixed prompt sets: which colour-shape pairs are held out of training, the
//! training prompt distribution, and the held-out evaluation prompts.

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{Category, Color, PromptSpec};
use crate::{DataError, Scene, ShapeKind};

/// Settings of the benchmark. The default is THE benchmark: results are comparable only
/// between runs with the same seed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShapesBenchConfig {
    /// Picks the held-out colour-shape pairs and every training example (default 0).
    pub seed: u64,
}

/// The benchmark's prompt sets.
///
/// Three colour-shape pairs, one per shape and each of a different colour (drawn from the
/// seed), are held out: no training prompt names one and no training image draws one
/// (objects whose colour the prompt leaves open are drawn in a training colour of their
/// shape). Every shape keeps five training colours and every colour at least two training
/// shapes, so each word is learnt; only the pairing is new.
///
/// The held-out prompts are, for [`Category::Colors`] and [`Category::ColorAttribution`],
/// every prompt naming at least one held-out pair; the other four categories name no
/// colour, so they have no held-out composition and their evaluation prompts are all of
/// their prompts, the same ones training sees.
#[derive(Debug, Clone)]
pub struct ShapesBench {
    config: ShapesBenchConfig,
    held_out_pairs: Vec<(Color, ShapeKind)>,
    /// Training prompts per category, in [`Category::ALL`] order.
    train: Vec<Vec<PromptSpec>>,
    held_out: Vec<PromptSpec>,
}

impl ShapesBench {
    /// The benchmark of `config`'s seed.
    pub fn new(config: ShapesBenchConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut colors = Color::ALL;
        colors.shuffle(&mut rng);
        let held_out_pairs: Vec<(Color, ShapeKind)> =
            colors.into_iter().zip(ShapeKind::ALL).collect();
        let names_held_out = |spec: &PromptSpec| {
            held_out_pairs
                .iter()
                .any(|&(color, shape)| spec.names_pair(color, shape))
        };
        let mut train = Vec::new();
        let mut held_out = Vec::new();
        for category in Category::ALL {
            let prompts = PromptSpec::enumerate(category);
            let coloured = matches!(category, Category::Colors | Category::ColorAttribution);
            held_out.extend(
                prompts
                    .iter()
                    .filter(|p| !coloured || names_held_out(p))
                    .cloned(),
            );
            train.push(prompts.into_iter().filter(|p| !names_held_out(p)).collect());
        }
        Self {
            config,
            held_out_pairs,
            train,
            held_out,
        }
    }

    /// The settings the benchmark was built with.
    pub fn config(&self) -> &ShapesBenchConfig {
        &self.config
    }

    /// The colour-shape pairs no training prompt or image contains, one per shape.
    pub fn held_out_pairs(&self) -> &[(Color, ShapeKind)] {
        &self.held_out_pairs
    }

    /// Whether `color` on `shape` is held out of training.
    pub fn is_held_out(&self, color: Color, shape: ShapeKind) -> bool {
        self.held_out_pairs.contains(&(color, shape))
    }

    /// The training prompts of `category`, in a fixed order.
    pub fn train_prompts(&self, category: Category) -> &[PromptSpec] {
        &self.train[category as usize]
    }

    /// The evaluation prompts, grouped by category in [`Category::ALL`] order, in a fixed
    /// order.
    pub fn held_out_prompts(&self) -> &[PromptSpec] {
        &self.held_out
    }

    /// Training example `index`, a pure function of `(seed, index)`: a category drawn
    /// uniformly, one of its training prompts drawn uniformly, and a ground-truth scene of
    /// it ([`Self::layout`]).
    pub fn train_example(&self, index: u64) -> (PromptSpec, Scene) {
        let mut rng = StdRng::seed_from_u64(
            self.config
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(index),
        );
        let category = self.train[rng.random_range(0..self.train.len())].as_slice();
        let spec = category
            .choose(&mut rng)
            .expect("every category keeps training prompts")
            .clone();
        let scene = self.unchecked_layout(&spec, &mut rng);
        (spec, scene)
    }

    /// A ground-truth scene of `spec`: each object it names in its own cell of the 3x3
    /// grid, nothing else; an object whose colour the prompt leaves open gets a random
    /// training colour of its shape.
    pub fn layout<R: Rng>(&self, spec: &PromptSpec, rng: &mut R) -> Result<Scene, DataError> {
        match spec.layout_problem() {
            Some(reason) => Err(DataError::Layout {
                prompt: spec.text(),
                reason,
            }),
            None => Ok(self.unchecked_layout(spec, rng)),
        }
    }

    fn unchecked_layout<R: Rng>(&self, spec: &PromptSpec, rng: &mut R) -> Scene {
        spec.layout(rng, |shape| {
            Color::ALL
                .into_iter()
                .filter(|&c| !self.is_held_out(c, shape))
                .collect()
        })
    }
}
