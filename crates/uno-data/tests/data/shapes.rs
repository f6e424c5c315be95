//! ShapesBench: the fixed split, prompt texts, and the pixel judge on ground-truth and
//! deliberately wrong renders.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uno_data::shapes::{
    BenchScores, Category, Color, ObjectSpec, PixelJudge, PromptSpec, Relation, ShapesBench,
    ShapesBenchConfig,
};
use uno_data::{DataError, Dataset, RgbImage, Scene, ShapeKind, SyntheticScenes};
use uno_packing::Sample;

/// The tiny preset's image side (`crates/uno-core/configs/tiny.toml`, `[data]`).
const SIDE: usize = 32;

fn bench() -> ShapesBench {
    ShapesBench::new(ShapesBenchConfig::default())
}

#[test]
fn held_out_pairs_are_one_per_shape_and_never_trained_on() {
    let bench = bench();
    let pairs = bench.held_out_pairs();
    // The split docs/shapesbench.md documents: it changes only with the seed (or with
    // `rand`'s shuffle, which this catches).
    assert_eq!(
        pairs,
        [
            (Color::Green, ShapeKind::Circle),
            (Color::Red, ShapeKind::Square),
            (Color::Blue, ShapeKind::Triangle),
        ]
    );
    let shapes: Vec<ShapeKind> = pairs.iter().map(|p| p.1).collect();
    assert_eq!(shapes, ShapeKind::ALL);
    let mut colors: Vec<Color> = pairs.iter().map(|p| p.0).collect();
    colors.sort();
    colors.dedup();
    assert_eq!(colors.len(), 3, "{pairs:?}");
    assert_eq!(
        ShapesBench::new(ShapesBenchConfig::default()).held_out_pairs(),
        pairs
    );
    assert!(
        (1..6).any(|seed| ShapesBench::new(ShapesBenchConfig { seed }).held_out_pairs() != pairs)
    );

    let names_held_out = |spec: &PromptSpec| pairs.iter().any(|&(c, s)| spec.names_pair(c, s));
    for category in Category::ALL {
        assert!(!bench.train_prompts(category).iter().any(names_held_out));
    }
    for index in 0..2000 {
        let (spec, scene) = bench.train_example(index);
        assert_eq!((spec.clone(), scene.clone()), bench.train_example(index));
        for shape in &scene.shapes {
            assert!(
                !pairs.contains(&(Color::ALL[shape.color], shape.kind)),
                "training example {index} ({}) draws a held-out pair",
                spec.text()
            );
        }
    }
}

#[test]
fn held_out_prompts_per_category() {
    let bench = bench();
    let count = |c| {
        bench
            .held_out_prompts()
            .iter()
            .filter(|p| p.category == c)
            .count()
    };
    // Colour-free categories: all their prompts. Colours: the 3 held-out pairs. Colour
    // attribution: of the 30 colour pairs on each of the 3 shape pairs, the 21 naming no
    // held-out pair train (the first colour avoids its shape's held-out colour: 5 ways; the
    // second then avoids its own and the first: 5 ways when the first is the second shape's
    // held-out colour, else 4), so 9 per shape pair are held out.
    let expected = [
        (Category::SingleObject, 3, 3),
        (Category::TwoObjects, 6, 6),
        (Category::Counting, 9, 9),
        (Category::Colors, 3, 15),
        (Category::Position, 24, 24),
        (Category::ColorAttribution, 27, 63),
    ];
    for (category, held_out, train) in expected {
        assert_eq!(count(category), held_out, "{category:?}");
        assert_eq!(bench.train_prompts(category).len(), train, "{category:?}");
    }
    let pairs = bench.held_out_pairs();
    for spec in bench.held_out_prompts() {
        if matches!(spec.category, Category::Colors | Category::ColorAttribution) {
            assert!(
                pairs.iter().any(|&(c, s)| spec.names_pair(c, s)),
                "{}",
                spec.text()
            );
        }
    }
}

#[test]
fn prompt_texts() {
    let object = |shape, color, count| ObjectSpec {
        shape,
        color,
        count,
    };
    let spec = |category, objects, relation| PromptSpec {
        category,
        objects,
        relation,
    };
    let cases = [
        (
            spec(
                Category::Counting,
                vec![object(ShapeKind::Circle, None, 3)],
                None,
            ),
            "three circles",
        ),
        (
            spec(
                Category::Position,
                vec![
                    object(ShapeKind::Circle, None, 1),
                    object(ShapeKind::Square, None, 1),
                ],
                Some(Relation::LeftOf),
            ),
            "a circle left of a square",
        ),
        (
            spec(
                Category::ColorAttribution,
                vec![
                    object(ShapeKind::Circle, Some(Color::Red), 1),
                    object(ShapeKind::Triangle, Some(Color::Blue), 1),
                ],
                None,
            ),
            "a red circle and a blue triangle",
        ),
    ];
    for (spec, text) in cases {
        assert_eq!(spec.text(), text);
    }
}

#[test]
fn layout_rejects_specs_that_do_not_fit_the_grid() {
    let spec = PromptSpec {
        category: Category::Counting,
        objects: vec![ObjectSpec {
            shape: ShapeKind::Square,
            color: None,
            count: 10,
        }],
        relation: None,
    };
    let err = bench()
        .layout(&spec, &mut StdRng::seed_from_u64(0))
        .unwrap_err();
    assert!(matches!(err, DataError::Layout { ref prompt, .. } if prompt == "10 squares"));
    assert!(err.to_string().contains("9 cells"), "{err}");
}

/// Ground-truth scenes: every held-out prompt in `layouts` layouts, and `train` training
/// examples.
fn ground_truth(layouts: u64, train: u64) -> Vec<(PromptSpec, Scene)> {
    let bench = bench();
    let mut rng = StdRng::seed_from_u64(11);
    let mut cases: Vec<(PromptSpec, Scene)> = bench
        .held_out_prompts()
        .iter()
        .flat_map(|spec| (0..layouts).map(move |_| spec.clone()))
        .map(|spec| {
            let scene = bench.layout(&spec, &mut rng).unwrap();
            (spec, scene)
        })
        .collect();
    cases.extend((0..train).map(|i| bench.train_example(i)));
    cases
}

/// Judge every case, with `distort(case index, render)` applied to each render; the scores
/// per category.
fn judge_all(
    cases: &[(PromptSpec, Scene)],
    side: usize,
    distort: impl Fn(u64, RgbImage) -> RgbImage,
) -> BenchScores {
    let judge = PixelJudge::default();
    let mut scores = BenchScores::default();
    for (k, (spec, scene)) in cases.iter().enumerate() {
        let image = distort(k as u64, scene.render(side));
        scores.record(spec.category, judge.score(&image, spec));
    }
    scores
}

fn assert_all_categories_at_least(scores: &BenchScores, floor: f64) {
    for category in Category::ALL {
        let accuracy = scores.accuracy(category).unwrap();
        assert!(accuracy >= floor, "{category:?}: {accuracy} ({scores:?})");
    }
}

#[test]
fn judge_accepts_ground_truth_renders() {
    let cases = ground_truth(4, 600);
    assert!(cases.len() > 800);
    for side in [SIDE, 64] {
        let scores = judge_all(&cases, side, |_, image| image);
        assert_all_categories_at_least(&scores, 0.99);
    }
}

/// Independent Gaussian noise of standard deviation `sigma` on every channel (Box-Muller).
fn add_noise(mut image: RgbImage, sigma: f32, seed: u64) -> RgbImage {
    let mut rng = StdRng::seed_from_u64(seed);
    for value in &mut image.data {
        let (u, v): (f32, f32) = (rng.random_range(f32::EPSILON..1.0), rng.random());
        let normal = (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos();
        *value = (*value + sigma * normal).clamp(0.0, 1.0);
    }
    image
}

fn blur(image: &RgbImage, sigma: f32) -> RgbImage {
    RgbImage::from_rgb8(&image::imageops::blur(&image.to_rgb8(), sigma))
}

#[test]
fn judge_accepts_noisy_and_blurred_ground_truth() {
    let cases = ground_truth(2, 300);
    let noisy = judge_all(&cases, SIDE, |k, image| add_noise(image, 0.05, k));
    assert_all_categories_at_least(&noisy, 0.99);
    let blurred = judge_all(&cases, SIDE, |k, image| {
        add_noise(blur(&image, 0.6), 0.03, k)
    });
    assert_all_categories_at_least(&blurred, 0.99);
}

/// A shape the spec does not name.
fn unnamed_shape(spec: &PromptSpec) -> ShapeKind {
    let named: Vec<ShapeKind> = spec.objects.iter().map(|o| o.shape).collect();
    // A spec names at most two shapes.
    ShapeKind::ALL
        .into_iter()
        .find(|s| !named.contains(s))
        .unwrap()
}

/// Every way to get `spec` wrong that applies to it, as scenes built from a right one.
fn wrong_scenes(spec: &PromptSpec, right: &Scene) -> Vec<(&'static str, Scene)> {
    let mut wrong = Vec::new();
    let first = spec.objects[0];
    // The first object drawn as a shape the prompt does not name.
    let mut scene = right.clone();
    scene.shapes[0].kind = unnamed_shape(spec);
    wrong.push(("wrong shape", scene));
    if let Some(color) = first.color {
        let named: Vec<Color> = spec.objects.iter().filter_map(|o| o.color).collect();
        let other = Color::ALL.into_iter().find(|c| !named.contains(c)).unwrap();
        let mut scene = right.clone();
        scene.shapes[0].color = other.index();
        wrong.push(("wrong colour", scene));
        if let Some(second) = spec.objects.get(1).and_then(|o| o.color) {
            let mut scene = right.clone();
            (scene.shapes[0].color, scene.shapes[1].color) = (second.index(), color.index());
            wrong.push(("swapped colours", scene));
        }
    }
    // One object too few; for counting also one too many.
    let mut scene = right.clone();
    scene.shapes.pop();
    wrong.push(("one missing", scene));
    if spec.category == Category::Counting {
        let mut scene = right.clone();
        let free = (0..9)
            .find(|c| right.shapes.iter().all(|s| s.cell != *c))
            .unwrap();
        scene.shapes.push(uno_data::Shape {
            cell: free,
            ..right.shapes[0]
        });
        wrong.push(("one extra", scene));
    }
    if spec.relation.is_some() {
        let mut scene = right.clone();
        (scene.shapes[0].cell, scene.shapes[1].cell) = (right.shapes[1].cell, right.shapes[0].cell);
        wrong.push(("swapped position", scene));
    }
    wrong
}

#[test]
fn judge_rejects_wrong_renders() {
    let judge = PixelJudge::default();
    let mut tried = std::collections::BTreeMap::new();
    for (spec, right) in ground_truth(2, 0) {
        for (what, scene) in wrong_scenes(&spec, &right) {
            *tried.entry(what).or_insert(0) += 1;
            assert!(
                !judge.score(&scene.render(SIDE), &spec),
                "{what}: \"{}\" scored 1 on {scene:?}",
                spec.text()
            );
        }
    }
    // Every kind of mistake was tried on many prompts.
    for what in [
        "wrong shape",
        "wrong colour",
        "swapped colours",
        "one missing",
        "one extra",
        "swapped position",
    ] {
        assert!(
            tried.get(what).copied().unwrap_or(0) >= 6,
            "{what}: {tried:?}"
        );
    }
}

#[test]
fn scores_average_categories_not_images() {
    let mut scores = BenchScores::default();
    for correct in [true, true, true, false] {
        scores.record(Category::Counting, correct);
    }
    scores.record(Category::Colors, false);
    assert_eq!(scores.accuracy(Category::Counting), Some(0.75));
    assert_eq!(scores.accuracy(Category::Colors), Some(0.0));
    assert_eq!(scores.accuracy(Category::Position), None);
    assert_eq!(scores.overall(), Some(0.375));
    assert_eq!(BenchScores::default().overall(), None);
}

#[test]
fn bench_training_set_items_are_train_examples() {
    let bench = bench();
    let set = SyntheticScenes::shapes_bench(bench.clone(), 40, SIDE).unwrap();
    let grid: Vec<String> = SyntheticScenes::vocabulary()
        .into_iter()
        .map(String::from)
        .collect();
    let words = SyntheticScenes::bench_vocabulary();
    assert_eq!(words[..grid.len()], grid);
    for word in ["three", "circles", "left", "of", "above", "below"] {
        assert!(words.iter().any(|w| w == word), "{word}");
    }
    let decode = |ids: &[u32]| set.tokenizer().decode(ids).unwrap();
    for i in [0, 7, 39] {
        let item = set.get(i).unwrap();
        let (spec, scene) = bench.train_example(i as u64);
        assert_eq!(item.prompt, spec.text());
        assert_eq!(item.caption, scene.recaption());
        assert_eq!(item.target.vae, scene.render(SIDE));
        assert_eq!(set.scene(i), scene);
        let Sample::TextToImage {
            prompt,
            supervision,
            ..
        } = item.sample
        else {
            panic!("bench items are text-to-image")
        };
        assert_eq!(decode(&prompt), item.prompt);
        assert_eq!(decode(&supervision.caption.unwrap()), item.caption);
    }
    assert!(matches!(
        set.get(40),
        Err(DataError::OutOfRange { index: 40, len: 40 })
    ));
}

/// Stage 1's mix: a deterministic fraction of the items are understanding samples (the
/// scene's ViT-side image, no question, its re-caption as the answer), decided per index
/// and independent of the scenes (an item keeps the scene of its training example).
#[test]
fn understanding_items_are_a_deterministic_binomial_fraction() {
    const LEN: usize = 4000;
    const FRACTION: f64 = 0.3;
    let make = |fraction: f64| {
        SyntheticScenes::shapes_bench(bench(), LEN, SIDE)
            .unwrap()
            .with_understanding(fraction)
            .unwrap()
    };
    let set = make(FRACTION);
    let flags: Vec<bool> = (0..LEN).map(|i| set.is_understanding(i)).collect();
    let count = flags.iter().filter(|&&f| f).count() as f64;
    // Binomial(4000, 0.3): mean 1200, standard deviation 29; 4 deviations either way.
    let sd = (LEN as f64 * FRACTION * (1.0 - FRACTION)).sqrt();
    assert!(
        (count - LEN as f64 * FRACTION).abs() < 4.0 * sd,
        "{count} understanding items of {LEN}"
    );
    // Not clustered: each half holds its share too.
    let first_half = flags[..LEN / 2].iter().filter(|&&f| f).count() as f64;
    assert!(
        (first_half - count / 2.0).abs() < 4.0 * sd,
        "{first_half} in the first half"
    );
    let again = make(FRACTION);
    assert!((0..LEN).all(|i| again.is_understanding(i) == flags[i]));
    assert!((0..LEN).all(|i| !make(0.0).is_understanding(i)));
    assert!((0..LEN).all(|i| make(1.0).is_understanding(i)));

    let bench = bench();
    let decode = |ids: &[u32]| set.tokenizer().decode(ids).unwrap();
    let mut seen = (0, 0);
    for (i, &flag) in flags.iter().enumerate().take(40) {
        let item = set.get(i).unwrap();
        let (spec, scene) = bench.train_example(i as u64);
        assert_eq!(
            (&item.prompt, &item.target.vit),
            (&spec.text(), &scene.render(SIDE))
        );
        match item.sample {
            Sample::Understanding {
                image,
                question,
                answer,
            } => {
                assert!(flag, "item {i}");
                assert_eq!((image.height, image.width, question), (SIDE, SIDE, None));
                assert_eq!(decode(&answer), scene.recaption());
                assert_eq!(item.caption, scene.recaption());
                seen.0 += 1;
            }
            Sample::TextToImage { .. } => {
                assert!(!flag, "item {i}");
                seen.1 += 1;
            }
            other => panic!("item {i}: {other:?}"),
        }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "{seen:?}");
    for bad in [-0.1, 1.5, f64::NAN] {
        let err = SyntheticScenes::shapes_bench(bench.clone(), 4, SIDE)
            .unwrap()
            .with_understanding(bad)
            .unwrap_err();
        assert!(err.to_string().contains("understanding fraction"), "{err}");
    }
}

/// The paper's Table 7 right half ("no semantic augmentation"): the caption target is the
/// prompt's own tokens.
#[test]
fn prompt_captions_repeat_the_prompt() {
    let set = SyntheticScenes::shapes_bench(bench(), 20, SIDE)
        .unwrap()
        .with_prompt_captions(true);
    for i in 0..20 {
        let item = set.get(i).unwrap();
        let Sample::TextToImage {
            prompt,
            supervision,
            ..
        } = item.sample
        else {
            panic!("no understanding fraction: text-to-image only")
        };
        assert_eq!(supervision.caption.as_ref(), Some(&prompt), "item {i}");
        assert_eq!(item.caption, item.prompt);
        assert_ne!(item.caption, set.scene(i).recaption());
    }
}

/// The held-out set cycles through the bench's evaluation prompts, each drawn as a
/// ground-truth scene the judge accepts, laid out from its own seed.
#[test]
fn held_out_set_draws_the_evaluation_prompts() {
    let bench = bench();
    let prompts = bench.held_out_prompts();
    let len = prompts.len() + 5;
    let set = SyntheticScenes::shapes_bench_held_out(bench.clone(), 7, len, SIDE).unwrap();
    let other = SyntheticScenes::shapes_bench_held_out(bench.clone(), 8, len, SIDE).unwrap();
    let judge = PixelJudge::default();
    let mut differ = 0;
    for i in 0..len {
        let item = set.get(i).unwrap();
        let spec = &prompts[i % prompts.len()];
        assert_eq!(item.prompt, spec.text());
        assert!(
            judge.score(&item.target.vae, spec),
            "item {i}: {}",
            item.prompt
        );
        differ += usize::from(set.scene(i) != other.scene(i));
        assert_eq!(set.scene(i), set.scene(i));
    }
    assert!(
        differ > len / 2,
        "{differ} of {len} scenes differ between seeds"
    );
}
