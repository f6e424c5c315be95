//! bf16 mixed precision end to end (`model.precision = "bf16_mixed"`): the tiny BAGEL trains
//! with the frozen understanding expert stored in bf16 and f32 master weights for the
//! generation expert, its losses track the f32 run's, and a resumed mixed run reproduces a
//! straight one exactly, the frozen expert still bf16 after loading.

use uno_core::bagel::{Bagel, Precision};
use uno_core::burn::tensor::DType;
use uno_core::checkpoint::{SaveDtype, UnexpectedKeys, WeightReader};
use uno_core::train::UnoTrainee;
use uno_core::trainer::Trainer;

use super::{B, batches, config, run_dir, setup};

/// Dtypes of the first layer's frozen and trained `q_proj` weights.
fn dtypes(model: &Bagel<B>) -> (DType, DType) {
    let layer = &model.language_model.layers[0];
    (
        layer.und.self_attn.q_proj.weight.val().dtype(),
        layer.moe_gen.self_attn.q_proj.weight.val().dtype(),
    )
}

/// Same initial weights for every run (Burn initialises lazily, so copies go through a file).
fn copies(n: usize, dir: &std::path::Path) -> Vec<Bagel<B>> {
    let (_, _, model) = setup(7);
    std::fs::create_dir_all(dir).unwrap();
    let init = dir.join("init.safetensors");
    model.save_safetensors(&init, SaveDtype::F32).unwrap();
    let reader = WeightReader::open(&init).unwrap();
    (0..n)
        .map(|i| {
            setup(20 + i as u64)
                .2
                .load_safetensors(&reader, UnexpectedKeys::Error)
                .unwrap()
                .0
        })
        .collect()
}

/// 6 steps in f32 and in bf16 mixed from the same weights and data: every mixed loss is
/// within 0.2% of the f32 one (measured on flex: 1.2e-4 relative at most; the tiny model's
/// losses are sums over many rows, which average the bf16 rounding out), and the mixed run
/// splits at step 3 and resumes bit-exactly.
#[test]
fn bf16_mixed_tracks_f32_and_resumes_exactly() {
    let dirs = [run_dir("f32"), run_dir("mixed"), run_dir("mixed-split")];
    let mut models = copies(3, &dirs[0]).into_iter();
    let (data, config_b, _) = setup(7);
    let objective = || config_b.objective().unwrap();
    let settings = ["schedule.warmup_steps=2"];
    let mut losses = Vec::new();
    for (dir, precision) in dirs[..2].iter().zip([Precision::F32, Precision::Bf16Mixed]) {
        let trainee =
            UnoTrainee::new(models.next().unwrap(), objective()).with_precision(precision);
        let mut trainer =
            Trainer::new(config(dir, 6, &settings), trainee, Default::default()).unwrap();
        let mut data = batches(data.clone(), &config_b);
        let run: Vec<f64> = (0..6)
            .map(|_| trainer.train_step(&mut data).unwrap().loss)
            .collect();
        let expected = match precision {
            Precision::F32 => (DType::F32, DType::F32),
            Precision::Bf16Mixed => (DType::BF16, DType::F32),
        };
        assert_eq!(dtypes(&trainer.model().model), expected);
        losses.push(run);
    }
    for (mixed, f32) in losses[1].iter().zip(&losses[0]) {
        assert!(mixed.is_finite());
        assert!(
            ((mixed - f32) / f32).abs() < 2e-3,
            "mixed loss {mixed} vs f32 {f32}"
        );
    }

    let mut data = batches(data.clone(), &config_b);
    let trainee =
        UnoTrainee::new(models.next().unwrap(), objective()).with_precision(Precision::Bf16Mixed);
    let mut first =
        Trainer::new(config(&dirs[2], 6, &settings), trainee, Default::default()).unwrap();
    let mut split: Vec<f64> = (0..3)
        .map(|_| first.train_step(&mut data).unwrap().loss)
        .collect();
    first.save_checkpoint().unwrap();
    drop(first);
    let trainee = UnoTrainee::new(setup(30).2, objective()).with_precision(Precision::Bf16Mixed);
    let mut resumed =
        Trainer::resume_or_new(config(&dirs[2], 6, &settings), trainee, Default::default())
            .unwrap();
    assert_eq!(
        dtypes(&resumed.model().model),
        (DType::BF16, DType::F32),
        "loaded weights get the precision again"
    );
    split.extend((0..3).map(|_| resumed.train_step(&mut data).unwrap().loss));
    assert_eq!(split, losses[1]);
    for dir in dirs {
        // The 6-step runs never reach a checkpoint, so not every folder exists.
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A backend without bf16 refuses the setting before anything is written, naming the key.
#[cfg(feature = "ndarray")]
#[test]
fn ndarray_refuses_bf16_mixed() {
    use uno_core::backend::{Autodiff, NdArray};
    use uno_core::train::{ModelSource, RunConfig, RunError, RunSpec, TrainData, run};

    let dir = run_dir("mixed-ndarray");
    let overrides = [
        format!("output_dir=\"{}\"", dir.display()),
        "model.precision=\"bf16_mixed\"".to_string(),
    ];
    let spec = RunSpec {
        config: RunConfig::tiny().with_overrides(&overrides).unwrap(),
        model: ModelSource::Tiny,
        data: TrainData::Synthetic,
        resume: false,
        allow_config_change: false,
        stop: None,
    };
    let err = run::<Autodiff<NdArray>>(spec, &Default::default()).unwrap_err();
    assert!(
        matches!(
            err,
            RunError::InvalidConfig {
                key: "model.precision",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("bf16"), "{err}");
    assert!(!dir.exists(), "nothing is written");
}
