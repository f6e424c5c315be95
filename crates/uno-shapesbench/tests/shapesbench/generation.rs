//! The generation evaluation on image sources whose answers are known: the ground truth
//! scores 100 % in every category, the same layouts with every shape replaced by another
//! 0 %, and a non-finite image counts as wrong.

use uno_core::data::shapes::{
    BenchScores, Category, PixelJudge, PromptSpec, ShapesBench, ShapesBenchConfig,
};
use uno_core::data::{RgbImage, Scene, ShapeKind};
use uno_shapesbench::{BenchError, EvalSettings, GroundTruth, PromptImages, judge_prompts};

fn bench() -> ShapesBench {
    ShapesBench::new(ShapesBenchConfig { seed: 0 })
}

fn settings() -> EvalSettings {
    EvalSettings {
        images_per_prompt: 2,
        image_size: 32,
        seed: 3,
    }
}

fn accuracies(scores: &BenchScores) -> Vec<(Category, f64)> {
    Category::ALL
        .into_iter()
        .map(|c| (c, scores.accuracy(c).unwrap()))
        .collect()
}

#[test]
fn ground_truth_scores_everything() {
    let bench = bench();
    let prompts = bench.held_out_prompts();
    let judged = judge_prompts(
        &mut GroundTruth { bench: &bench },
        prompts,
        &PixelJudge::default(),
        &settings(),
    )
    .unwrap();
    assert_eq!(judged.images.len(), 2 * prompts.len());
    assert_eq!(judged.non_finite, 0);
    // 72 held-out prompts: 3 + 6 + 9 + 3 + 24 + 27, two images each.
    let judged_per_category: Vec<usize> = Category::ALL
        .iter()
        .map(|c| judged.scores.per_category[c].1)
        .collect();
    assert_eq!(judged_per_category, [6, 12, 18, 6, 48, 54]);
    for (category, accuracy) in accuracies(&judged.scores) {
        assert_eq!(accuracy, 1.0, "{category:?}");
    }
}

/// The ground truth's layouts with every circle drawn as a square, every square as a
/// triangle and every triangle as a circle: each prompt names a shape that is then absent
/// (or, for counting, present zero times).
struct WrongShapes<'a>(GroundTruth<'a>);

impl PromptImages for WrongShapes<'_> {
    fn images(
        &mut self,
        spec: &PromptSpec,
        seeds: &[u64],
        size: usize,
    ) -> Result<Vec<RgbImage>, BenchError> {
        let bench = self.0.bench;
        seeds
            .iter()
            .map(|&seed| {
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
                let mut scene: Scene = bench.layout(spec, &mut rng)?;
                for shape in &mut scene.shapes {
                    shape.kind = match shape.kind {
                        ShapeKind::Circle => ShapeKind::Square,
                        ShapeKind::Square => ShapeKind::Triangle,
                        ShapeKind::Triangle => ShapeKind::Circle,
                    };
                }
                Ok(scene.render(size))
            })
            .collect()
    }
}

#[test]
fn wrong_renders_score_nothing() {
    let bench = bench();
    let judged = judge_prompts(
        &mut WrongShapes(GroundTruth { bench: &bench }),
        bench.held_out_prompts(),
        &PixelJudge::default(),
        &settings(),
    )
    .unwrap();
    for (category, accuracy) in accuracies(&judged.scores) {
        assert_eq!(accuracy, 0.0, "{category:?}");
    }
}

/// A ground-truth image with one NaN pixel.
struct OneNan<'a>(GroundTruth<'a>);

impl PromptImages for OneNan<'_> {
    fn images(
        &mut self,
        spec: &PromptSpec,
        seeds: &[u64],
        size: usize,
    ) -> Result<Vec<RgbImage>, BenchError> {
        let mut images = self.0.images(spec, seeds, size)?;
        for image in &mut images {
            image.data[0] = f32::NAN;
        }
        Ok(images)
    }
}

#[test]
fn non_finite_images_are_counted_and_wrong() {
    let bench = bench();
    let prompts = &bench.held_out_prompts()[..4];
    let judged = judge_prompts(
        &mut OneNan(GroundTruth { bench: &bench }),
        prompts,
        &PixelJudge::default(),
        &settings(),
    )
    .unwrap();
    assert_eq!(judged.non_finite, 8);
    assert_eq!(judged.scores.overall(), Some(0.0));
    let err = judge_prompts(
        &mut GroundTruth { bench: &bench },
        prompts,
        &PixelJudge::default(),
        &EvalSettings {
            images_per_prompt: 0,
            ..settings()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("images_per_prompt"), "{err}");
}
