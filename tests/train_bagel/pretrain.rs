//! ShapesBench stage 1 through `train::run`: the tiny model pretrained from scratch on the
//! bench's data with understanding samples (`RunConfig::shapes_pretrain`), every weight
//! trained. The model starts as a BAGEL folder (`BagelConfig::save_folder` and
//! `ema.safetensors`), as a caller building its own model config passes it.

use std::path::Path;

use super::{B, run_dir};
use uno_core::bagel::{Bagel, BagelConfig};
use uno_core::checkpoint::{SaveDtype, UnexpectedKeys, WeightReader};
use uno_core::data::SyntheticScenes;
use uno_core::data::shapes::{ShapesBench, ShapesBenchConfig};
use uno_core::train::{
    ModelSource, RunConfig, RunError, RunSpec, ShapesBenchData, TOKENIZER_FILE, TrainData, run,
};
use uno_core::trainer::StepMetrics;

const BENCH: ShapesBenchData = ShapesBenchData {
    bench_seed: 0,
    understanding_fraction: 0.5,
    caption_is_prompt: false,
};

/// A freshly initialised tiny model over the bench's vocabulary as a BAGEL folder: the
/// runs compared below start from the same weights (Burn's initialisers draw from a
/// global RNG that tests running in parallel share).
fn tiny_folder(dir: &Path) {
    let bench = bench_set();
    let config = BagelConfig::tiny(bench.tokenizer().vocab_size(), bench.special_tokens());
    let model = config.init::<B>(&Default::default()).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    config.save_folder(dir).unwrap();
    model
        .save_safetensors(&dir.join("ema.safetensors"), SaveDtype::F32)
        .unwrap();
}

fn bench_set() -> SyntheticScenes {
    SyntheticScenes::shapes_bench(ShapesBench::new(ShapesBenchConfig { seed: 0 }), 1, 16).unwrap()
}

fn spec(dir: &Path, iterations: u64, resume: bool, extra: &[&str]) -> RunSpec {
    let mut overrides = vec![
        format!("iterations={iterations}"),
        format!("output_dir=\"{}\"", dir.display()),
        "metrics.progress=false".into(),
        "metrics.eval_every=0".into(),
        "metrics.summary_window=6".into(),
        "checkpoint.every=15".into(),
        "checkpoint.keep_last=4".into(),
        "data.batch.samples=4".into(),
        // A constant rate, so that a run stopped at 15 of 30 steps resumes the same run.
        "schedule.kind=\"constant\"".into(),
        "schedule.warmup_steps=3".into(),
        "data.vae_image.min=16".into(),
        "data.vae_image.max=16".into(),
        "data.vit_image.min=16".into(),
        "data.vit_image.max=16".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    RunSpec {
        config: RunConfig::shapes_pretrain()
            .with_overrides(&overrides)
            .unwrap(),
        model: ModelSource::Tiny,
        data: TrainData::ShapesBench(BENCH),
        resume,
        allow_config_change: false,
        stop: None,
    }
}

fn text_losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok())
        .map(|m| m.components["text"])
        .collect()
}

fn und_q_proj(model: &Bagel<B>) -> Vec<f32> {
    uno_testing::to_vec(
        model.language_model.layers[0]
            .und
            .self_attn
            .q_proj
            .weight
            .val(),
    )
}

#[test]
fn stage_one_lowers_the_text_loss_and_resumes_exactly() {
    let device = Default::default();
    let (source, straight, split) = (
        run_dir("pretrain-init"),
        run_dir("pretrain-straight"),
        run_dir("pretrain-split"),
    );
    tiny_folder(&source);
    let spec = |dir: &Path, iterations: u64, resume: bool, extra: &[&str]| RunSpec {
        model: ModelSource::Folder(source.clone()),
        ..spec(dir, iterations, resume, extra)
    };
    let report = run::<B>(spec(&straight, 30, false, &[]), &device).unwrap();
    assert_eq!((report.summary.end_step, report.summary.skipped), (30, 0));
    let text = text_losses(&straight);
    assert_eq!(text.len(), 30);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&text[..6]), mean(&text[24..]));
    assert!(
        last < 0.8 * first,
        "the understanding CE did not go down: first {first}, last {last}"
    );
    let (first, last) = (
        report.summary.first_window_loss.unwrap(),
        report.summary.last_window_loss.unwrap(),
    );
    assert!(last < first, "total: first {first}, last {last}");

    run::<B>(spec(&split, 15, false, &[]), &device).unwrap();
    run::<B>(spec(&split, 30, true, &[]), &device).unwrap();
    for file in ["model.safetensors", "ema.safetensors"] {
        let (a, b) = (
            std::fs::read(straight.join(file)).unwrap(),
            std::fs::read(split.join(file)).unwrap(),
        );
        assert!(a == b, "{file}: a resumed run differs from a straight one");
    }
    // Every weight trained, after the resume too: the understanding expert moved between
    // the checkpoint at step 15 and the end.
    let (_, trained, _) = Bagel::<B>::load_folder(&split, &device, UnexpectedKeys::Error).unwrap();
    let reader = WeightReader::open(split.join("step-000015/model.safetensors")).unwrap();
    let (_, fresh, _) = Bagel::<B>::load_folder(&split, &device, UnexpectedKeys::Error).unwrap();
    let (at_15, _) = fresh
        .load_safetensors(&reader, UnexpectedKeys::Error)
        .unwrap();
    assert_ne!(und_q_proj(&trained), und_q_proj(&at_15));

    // The folder keeps the bench's vocabulary (prompts and re-captions).
    let kept = uno_core::data::TextTokenizer::from_file(&split.join(TOKENIZER_FILE)).unwrap();
    let bench = bench_set();
    for text in [
        "three circles left of a square",
        "the picture shows a navy box .",
    ] {
        assert_eq!(
            kept.encode(text).unwrap(),
            bench.tokenizer().encode(text).unwrap()
        );
    }
    // What trains is part of the run: resuming it as post-training is refused.
    let err = run::<B>(
        spec(
            &split,
            32,
            true,
            &["model.trainable=\"generation\"", "loss.text=0"],
        ),
        &device,
    )
    .unwrap_err();
    assert!(
        matches!(&err, RunError::ConfigChanged { changes, .. }
            if changes.iter().any(|c| c.contains("model.trainable"))),
        "{err}"
    );
    for dir in [source, straight, split] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Bad stage 1 settings are refused before anything is written, naming their key.
#[test]
fn bad_pretraining_values_name_their_key() {
    let device = Default::default();
    let dir = run_dir("pretrain-bad");
    for (extra, fraction, key) in [
        ("loss.text=-1", 0.5, "loss.text"),
        ("model.precision=\"bf16_mixed\"", 0.5, "model.trainable"),
        ("loss.text=1", 1.5, "understanding_fraction"),
    ] {
        let mut spec = spec(&dir, 4, false, &[extra]);
        spec.data = TrainData::ShapesBench(ShapesBenchData {
            understanding_fraction: fraction,
            ..BENCH
        });
        let err = run::<B>(spec, &device).unwrap_err();
        assert!(err.to_string().contains(key), "{extra}: {err}");
        assert!(!dir.exists(), "nothing is written before the checks");
    }
}
