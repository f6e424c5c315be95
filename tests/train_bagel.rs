//! End-to-end UNO post-training of the tiny BAGEL on the synthetic data, through the public
//! `uno-core` API: the loss goes down, frozen weights stay bit-identical, and a resumed run
//! reproduces a straight one exactly.

use std::path::{Path, PathBuf};

use uno_core::backend::{Autodiff, Flex};
use uno_core::bagel::{Bagel, BagelConfig};
use uno_core::checkpoint::{SaveDtype, UnexpectedKeys, WeightReader};
use uno_core::data::{RgbImage, SyntheticConfig, SyntheticScenes};
use uno_core::objectives::ConditionDropoutConfig;
use uno_core::train::{BatchFill, PackedBatches, RunConfig, UnoTrainee};
use uno_core::trainer::{ScheduleKind, TrainConfig, Trainer};

type B = Autodiff<Flex>;

#[path = "train_bagel/checkpointing.rs"]
mod checkpointing;
#[path = "train_bagel/parallel.rs"]
mod parallel;
#[path = "train_bagel/precision.rs"]
mod precision;
#[path = "train_bagel/pretrain.rs"]
mod pretrain;
#[path = "train_bagel/run_safety.rs"]
mod run_safety;

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uno-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The embedded tiny run's trainer settings, writing into `dir`.
fn config(dir: &Path, iterations: u64, overrides: &[&str]) -> TrainConfig {
    let mut all = vec![
        format!("iterations={iterations}"),
        format!("output_dir=\"{}\"", dir.display()),
        "metrics.progress=false".to_string(),
    ];
    all.extend(overrides.iter().map(|s| s.to_string()));
    RunConfig::tiny().with_overrides(&all).unwrap().trainer
}

fn setup(seed: u64) -> (SyntheticScenes, BagelConfig, Bagel<B>) {
    let data = SyntheticScenes::new(SyntheticConfig {
        image_size: 16,
        seed,
        ..SyntheticConfig::default()
    })
    .unwrap();
    let config = BagelConfig::tiny(data.tokenizer().vocab_size(), data.special_tokens());
    // Burn's initialisers draw from the backend's (global) RNG: seed it per model.
    let device = Default::default();
    <B as uno_core::burn::tensor::backend::Backend>::seed(&device, seed);
    let model = config.init::<B>(&device).unwrap();
    (data, config, model)
}

/// A BAGEL folder of [`setup`]`(seed)`'s tiny model (configs and `ema.safetensors`) in
/// [`run_dir`]`(name)`: a fixed starting point for runs that must begin from the same weights
/// (a `Tiny` model draws its initial weights from Burn's process-global RNG).
fn model_folder(name: &str, seed: u64) -> (PathBuf, BagelConfig) {
    let dir = run_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (_, config, model) = setup(seed);
    config.save_folder(&dir).unwrap();
    model
        .save_safetensors(&dir.join("ema.safetensors"), SaveDtype::F32)
        .unwrap();
    (dir, config)
}

fn batches(data: SyntheticScenes, config: &BagelConfig) -> PackedBatches<SyntheticScenes, B> {
    PackedBatches::new(
        data,
        BatchFill::Samples(4),
        config.packing(),
        ConditionDropoutConfig::new(),
        Default::default(),
    )
}

/// Shuffled epochs of 10 items, packed to a token budget (a synthetic sample is 40 to 70
/// tokens, so 1 to 4 samples a pack): micro-batches hold varying numbers of items and the
/// data source's cursor is not a function of the position.
fn budget_batches(
    data: SyntheticScenes,
    config: &BagelConfig,
) -> PackedBatches<SyntheticScenes, B> {
    PackedBatches::new(
        data,
        BatchFill::Tokens {
            expected: 120,
            max: 160,
        },
        config.packing(),
        ConditionDropoutConfig::new(),
        Default::default(),
    )
    .shuffled(5)
}

fn weights(model: &Bagel<B>) -> Vec<f32> {
    let layer = &model.language_model.layers[0];
    let mut v = uno_testing::to_vec(layer.moe_gen.mlp.up_proj.weight.val());
    v.extend(uno_testing::to_vec(model.metaqueries.val()));
    v
}

#[test]
fn loss_goes_down_and_frozen_weights_stay() {
    let dir = run_dir("down");
    let (data, config, model) = setup(0);
    let und_before = uno_testing::to_vec(
        model.language_model.layers[1]
            .und
            .self_attn
            .q_proj
            .weight
            .val(),
    );
    let lm_head_before = uno_testing::to_vec(model.lm_head.weight.val());
    let gen_before = weights(&model);
    let trainee = UnoTrainee::new(model, config.objective().unwrap());
    let mut trainer = Trainer::new(config_with_window(&dir), trainee, Default::default()).unwrap();
    let summary = trainer.fit(&mut batches(data, &config), None).unwrap();
    let (first, last) = (
        summary.first_window_loss.unwrap(),
        summary.last_window_loss.unwrap(),
    );
    assert!(
        last < 0.8 * first,
        "loss did not go down: first {first}, last {last}"
    );
    let model = &trainer.model().model;
    assert_eq!(
        uno_testing::to_vec(
            model.language_model.layers[1]
                .und
                .self_attn
                .q_proj
                .weight
                .val()
        ),
        und_before
    );
    assert_eq!(
        uno_testing::to_vec(model.lm_head.weight.val()),
        lm_head_before
    );
    assert_ne!(weights(model), gen_before);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn config_with_window(dir: &Path) -> TrainConfig {
    config(dir, 120, &["metrics.summary_window=20"])
}

/// With shuffled epochs, token-budget packs and accumulation over 2 micro-batches (so the
/// checkpoint must keep the data cursor, not only the position).
#[test]
fn resume_reproduces_a_straight_run() {
    let (straight_dir, split_dir) = (run_dir("straight"), run_dir("split"));
    let settings = ["schedule.warmup_steps=2", "grad_accumulation=2"];
    let (data, config_b, model) = setup(1);
    let data = SyntheticScenes::new(SyntheticConfig {
        len: 10,
        ..data.config().clone()
    })
    .unwrap();
    let objective = || config_b.objective().unwrap();
    // The same initial weights for both runs: Burn initialises parameters lazily (a clone
    // made before first use draws its own values), so copy them through a checkpoint.
    std::fs::create_dir_all(&straight_dir).unwrap();
    let init = straight_dir.join("init.safetensors");
    model.save_safetensors(&init, SaveDtype::F32).unwrap();
    let reader = WeightReader::open(&init).unwrap();
    let fresh = setup(3).2;
    let (model_copy, _) = fresh
        .load_safetensors(&reader, UnexpectedKeys::Error)
        .unwrap();
    let mut data_a = budget_batches(data.clone(), &config_b);
    let mut straight = Trainer::new(
        config(&straight_dir, 6, &settings),
        UnoTrainee::new(model, objective()),
        Default::default(),
    )
    .unwrap();
    let straight_losses: Vec<f64> = (0..6)
        .map(|_| straight.train_step(&mut data_a).unwrap().loss)
        .collect();

    let mut data_b = budget_batches(data.clone(), &config_b);
    let mut first = Trainer::new(
        config(&split_dir, 6, &settings),
        UnoTrainee::new(model_copy, objective()),
        Default::default(),
    )
    .unwrap();
    let mut split_losses: Vec<f64> = (0..3)
        .map(|_| first.train_step(&mut data_b).unwrap().loss)
        .collect();
    first.save_checkpoint().unwrap();
    drop(first);
    // A differently initialised model resumes from the checkpoint: weights, EMA, optimizer
    // state, RNG and data position all come from disk.
    let (_, _, other) = setup(2);
    let mut data_c = budget_batches(data, &config_b);
    let mut resumed = Trainer::resume_or_new(
        config(&split_dir, 6, &settings),
        UnoTrainee::new(other, objective()),
        Default::default(),
    )
    .unwrap();
    assert_eq!(resumed.step(), 3);
    split_losses.extend((0..3).map(|_| resumed.train_step(&mut data_c).unwrap().loss));

    assert_eq!(split_losses, straight_losses);
    // 6 steps x 2 packs of 1 to 4 samples went through more than one shuffled epoch.
    assert_eq!(data_c.cursor(), data_a.cursor());
    assert!(data_a.cursor() > 12, "cursor {}", data_a.cursor());
    assert!(
        weights(&resumed.model().model) == weights(&straight.model().model),
        "weights differ after resume"
    );
    assert!(
        weights(&resumed.ema().model) == weights(&straight.ema().model),
        "EMA differs after resume"
    );
    for d in [straight_dir, split_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A folder whose configuration names a FLUX autoencoder trains with it: the codec loads
/// from the folder's `ae.safetensors`, the trainee's flow loss is computed on its latents
/// (not the PixelCodec's) without autodiff, its posteriors are cached so that a repeated
/// batch skips the encoder with a bit-identical loss, it stays frozen through training
/// while the generation expert moves, and a folder without the file is a named error.
#[test]
fn trains_with_the_flux_codec_of_a_folder() {
    use uno_core::bagel::{AE_FILE, CodecConfig, save_codec};
    use uno_core::burn::module::AutodiffModule;
    use uno_core::burn::module::Module;
    use uno_core::trainer::{DataSource, StepContext, TrainRng, TrainStep};
    use uno_core::vae::{Codec, FluxAeConfig, FrozenCodec, PixelCodec};

    let dir = run_dir("flux");
    std::fs::create_dir_all(&dir).unwrap();
    let (data, mut model_config, model) = setup(4);
    // ch_mult [1, 2]: downsample 2, z 16, so 4-px tokens of width 64 like the tiny model's.
    model_config.codec = CodecConfig::Flux(FluxAeConfig::tiny());
    model_config.validate().unwrap();
    let device = Default::default();
    let ae = FluxAeConfig::tiny().init::<B>(&device).unwrap();
    model_config.save_folder(&dir).unwrap();
    model
        .save_safetensors(&dir.join("ema.safetensors"), SaveDtype::F32)
        .unwrap();
    save_codec(&Codec::flux(ae), &dir).unwrap();

    let (loaded_config, model, _) =
        Bagel::<B>::load_folder(&dir, &device, UnexpectedKeys::Error).unwrap();
    assert_eq!(loaded_config.codec, CodecConfig::Flux(FluxAeConfig::tiny()));
    let codec = loaded_config.load_codec::<B>(&dir, &device).unwrap();
    let Codec::Flux(ae) = &codec else {
        panic!("the folder names a FLUX codec")
    };
    let ae_before = uno_testing::to_vec(ae.encoder.conv_in.weight.val());
    let objective = loaded_config.objective().unwrap();
    let trainee = UnoTrainee::new(model, objective.clone())
        .with_codec(codec)
        .with_latent_cache(1 << 20);
    assert!(trainee.codec.num_params() > 0);

    let batch = batches(data.clone(), &loaded_config)
        .batch(0, &mut TrainRng::new(0))
        .unwrap();
    let ctx = StepContext {
        step: 0,
        micro_batch: 0,
        data_position: 0,
        seed: 11,
        step_counts: vec![],
    };
    let flow = |trainee: &UnoTrainee<B>| {
        let step = trainee.forward_step(batch.clone(), &ctx).unwrap();
        uno_testing::to_vec(step.components[0].1.clone())[0]
    };
    let trainee_flow = flow(&trainee);
    let images = batch.images.len() as u64;
    assert!(images > 0);
    assert_eq!(trainee.latent_cache.stats().misses, images);
    assert_eq!(flow(&trainee), trainee_flow, "a cached step differs");
    assert_eq!(trainee.latent_cache.stats().hits, images);
    let Codec::Flux(ae) = &trainee.codec else {
        unreachable!()
    };
    let direct = flow_loss(&trainee.model, &batch, &FrozenCodec(ae.valid()), &objective);
    let pixel = flow_loss(&trainee.model, &batch, &PixelCodec, &objective);
    assert_eq!(trainee_flow, direct);
    assert!(
        (trainee_flow - pixel).abs() > 1e-3,
        "FLUX and PixelCodec latents gave the same flow loss {pixel}"
    );

    let gen_before = weights(&trainee.model);
    let mut trainer = Trainer::new(
        config(&dir, 3, &["schedule.warmup_steps=1"]),
        trainee,
        device,
    )
    .unwrap();
    let summary = trainer
        .fit(&mut batches(data, &loaded_config), None)
        .unwrap();
    assert_eq!((summary.end_step, summary.skipped), (3, 0));
    let trained = trainer.model();
    let Codec::Flux(trained_ae) = &trained.codec else {
        unreachable!()
    };
    assert_eq!(
        uno_testing::to_vec(trained_ae.encoder.conv_in.weight.val()),
        ae_before,
        "the codec must stay frozen"
    );
    assert_ne!(weights(&trained.model), gen_before);

    std::fs::remove_file(dir.join(AE_FILE)).unwrap();
    let err = loaded_config.load_codec::<B>(&dir, &device).unwrap_err();
    assert!(err.to_string().contains(AE_FILE), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The flow loss of `batch` (noise seed 11) with `codec`'s latents.
fn flow_loss(
    model: &Bagel<B>,
    batch: &uno_core::train::TrainBatch<B>,
    codec: &impl uno_core::vae::LatentCodec<B>,
    objective: &uno_core::bagel::UnoObjective,
) -> f32 {
    let batch = uno_core::bagel::UnoBatch {
        pack: &batch.pack,
        images: &batch.images,
        vit_targets: &batch.vit_targets,
        noise_seed: 11,
        normalization: Default::default(),
    };
    let out = model.uno_forward(batch, codec, objective).unwrap();
    uno_testing::to_vec(out.loss.flow)[0]
}

/// The paper's two runs (appendix A, Table 11) as `configs/` holds them.
#[test]
fn paper_configs_parse_to_the_paper_table() {
    let generation =
        RunConfig::from_toml_str(include_str!("../configs/paper.toml"), "paper.toml").unwrap();
    generation.validate().unwrap();
    let t = &generation.trainer;
    assert_eq!(t.iterations, 5000);
    assert_eq!((t.optimizer.lr, t.optimizer.weight_decay), (1e-4, 0.0));
    assert_eq!((t.optimizer.beta1, t.optimizer.beta2), (0.9, 0.95));
    assert_eq!((t.optimizer.grad_clip, t.ema.decay), (1.0, 0.9999));
    assert_eq!(t.schedule.kind, ScheduleKind::Cosine);
    assert_eq!(
        (generation.loss.caption, generation.loss.visual),
        (0.1, 0.2)
    );
    assert_eq!(generation.model.metaqueries, 256);
    assert_eq!(generation.model.timestep_shift, 4.0);
    // Table 11's resolution (512, 1024) is the VAE side of BAGEL's transform.
    let d = &generation.data;
    assert_eq!(
        (d.vae_image.min, d.vae_image.max, d.vae_image.stride),
        (512, 1024, 16)
    );
    assert_eq!(
        (d.vit_image.min, d.vit_image.max, d.vit_image.stride),
        (224, 518, 14)
    );
    // 400 samples per step: 48 BAGEL token-budget packs (see the config's comment).
    assert_eq!(
        d.batch,
        BatchFill::Tokens {
            expected: 32768,
            max: 36864
        }
    );
    assert_eq!(t.grad_accumulation, 48);
    // 48 packs of at least 32768 tokens hold at least 400 average samples (Table 12).
    let (packs, average) = (t.grad_accumulation as usize, 171 + 3362 + 80 + 256);
    assert!(packs * 32768 / average >= 400);
    let editing =
        RunConfig::from_toml_str(include_str!("../configs/paper_editing.toml"), "editing").unwrap();
    assert_eq!(editing.trainer.schedule.kind, ScheduleKind::Constant);
    assert_eq!(editing.trainer.optimizer.lr, 1e-4);
    assert_eq!(editing.trainer.grad_accumulation, 36);
    assert_eq!(
        (editing.loss, editing.model, editing.data),
        (generation.loss, generation.model, generation.data)
    );
}

/// `train::run` end to end on the embedded tiny run: it leaves a BAGEL folder whose final
/// weights are the last checkpoint's and which loads strictly, refuses to start a new run
/// over it, and resumes it.
#[test]
fn run_leaves_a_loadable_folder_refuses_reuse_and_resumes() {
    use uno_core::generate::{CaptionConfig, GUTTER, GridSpec, SamplerConfig, sample_grid};
    use uno_core::train::{ModelSource, RunError, RunSpec, TOKENIZER_FILE, TrainData, run};

    let dir = run_dir("run");
    let device = Default::default();
    let spec = |iterations: u64, resume: bool| RunSpec {
        config: RunConfig::tiny()
            .with_overrides(&[
                format!("iterations={iterations}"),
                format!("output_dir=\"{}\"", dir.display()),
                "metrics.progress=false".into(),
                "metrics.eval_every=2".into(),
                "checkpoint.every=2".into(),
                "data.batch.samples=2".into(),
                "schedule.warmup_steps=1".into(),
                "diagnostics.alignment=true".into(),
            ])
            .unwrap(),
        model: ModelSource::Tiny,
        data: TrainData::Synthetic,
        resume,
        // Resumed with more iterations: the cosine schedule changes.
        allow_config_change: true,
        stop: None,
    };
    let report = run::<B>(spec(4, false), &device).unwrap();
    assert_eq!((report.summary.end_step, report.summary.skipped), (4, 0));
    assert_eq!(report.output_dir, dir);
    let final_model = std::fs::read(dir.join("model.safetensors")).unwrap();
    let checkpoint = std::fs::read(dir.join("step-000004/model.safetensors")).unwrap();
    assert!(
        final_model == checkpoint,
        "final weights differ from the last checkpoint"
    );
    let (config, _, _) = Bagel::<B>::load_folder(&dir, &device, UnexpectedKeys::Error).unwrap();
    assert_eq!((config.loss.caption, config.loss.visual), (0.1, 0.2));
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics.matches("\"ema_eval_total\"").count(),
        2,
        "{metrics}"
    );
    // Each evaluation logs the model's gradient alignment per decoder layer.
    let evals: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|l| l.get("eval").cloned())
        .collect();
    assert_eq!(evals.len(), 2, "{metrics}");
    for eval in &evals {
        for layer in 0..2 {
            assert!(eval[format!("align_flow_norm_l{layer}")].as_f64().unwrap() > 0.0);
            for term in ["caption", "visual"] {
                let cosine = eval[format!("align_{term}_l{layer}")].as_f64().unwrap();
                assert!((-1.0..=1.0).contains(&cosine), "{term} l{layer}: {cosine}");
            }
        }
    }
    // Each step line counts its tokens by kind.
    assert_eq!(
        metrics.matches("\"metaquery_tokens\"").count(),
        4,
        "{metrics}"
    );
    // The folder keeps the vocabulary it trained with, and generate reads it from there.
    let kept = uno_core::data::TextTokenizer::from_file(&dir.join(TOKENIZER_FILE)).unwrap();
    let synthetic = SyntheticScenes::new(SyntheticConfig::default()).unwrap();
    assert_eq!(
        kept.encode("a red circle at the top").unwrap(),
        synthetic
            .tokenizer()
            .encode("a red circle at the top")
            .unwrap()
    );

    let err = run::<B>(spec(4, false), &device).unwrap_err();
    assert!(matches!(err, RunError::ExistingRun { .. }), "{err}");
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        final_model
    );

    let resumed = run::<B>(spec(6, true), &device).unwrap();
    assert_eq!(resumed.summary.end_step, 6);

    // The folder generates: 4 held-out prompts x 2 seeds, captioned, as one PNG grid.
    let grid = GridSpec {
        model_dir: dir.clone(),
        tokenizer: None,
        prompts: Vec::new(),
        seeds: vec![0, 1],
        size: 16,
        source: None,
        sampler: SamplerConfig {
            steps: 3,
            ..SamplerConfig::default()
        },
        caption: Some(CaptionConfig {
            max_tokens: 3,
            ..CaptionConfig::default()
        }),
        out: None,
    };
    let report = sample_grid::<Flex>(&grid, &device).unwrap();
    assert_eq!(report.path, dir.join("samples.png"));
    assert_eq!(report.prompts.len(), 4);
    assert!(
        report.captions.iter().all(|row| row.len() == 2),
        "{report:?}"
    );
    let png = std::fs::read(&report.path).unwrap();
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!(&png[1..4], b"PNG");
    assert_eq!(
        (be(16), be(20)),
        (2 * (16 + GUTTER) + GUTTER, 4 * (16 + GUTTER) + GUTTER)
    );
    // Editing: a 24x8 source goes through the run's own transforms (run.toml) and the
    // edit comes out at its codec copy's size.
    let source = dir.join("source.png");
    let mut image = RgbImage::filled(8, 24, [0.9, 0.2, 0.1]);
    image.set_pixel(3, 5, [0.0, 0.0, 1.0]);
    image.save(&source).unwrap();
    let vae = RunConfig::load(Some(&dir.join("run.toml")), &[])
        .unwrap()
        .data
        .vae_image;
    let (h, w) = vae.target_size(8, 24).unwrap();
    let edit = GridSpec {
        prompts: vec!["a red circle at the top".into()],
        seeds: vec![0],
        source: Some(source),
        caption: None,
        out: Some(dir.join("edit.png")),
        ..grid.clone()
    };
    let report = sample_grid::<Flex>(&edit, &device).unwrap();
    let png = std::fs::read(&report.path).unwrap();
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!(
        (be(16), be(20)),
        (w as u32 + 2 * GUTTER, h as u32 + 2 * GUTTER)
    );
    let missing = GridSpec {
        model_dir: dir.join("nope"),
        ..grid.clone()
    };
    let err = sample_grid::<Flex>(&missing, &device).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A BAGEL-format folder whose FLUX autoencoder is not the release's (width 16, two levels)
/// trains through `train::run` (the codec read from the folder's own configuration and
/// `ae.safetensors`, copied into the run folder), resumes exactly (latents drawn from the
/// step's seed), and generates through `sample_grid` from the run folder.
#[test]
fn flux_folder_trains_resumes_exactly_and_generates() {
    use uno_core::bagel::{AE_FILE, CodecConfig, save_codec};
    use uno_core::generate::{GridSpec, SamplerConfig, sample_grid};
    use uno_core::train::{ModelSource, RunSpec, TrainData, run};
    use uno_core::vae::{Codec, FluxAeConfig};

    let source = run_dir("flux-src");
    std::fs::create_dir_all(&source).unwrap();
    let (_, mut model_config, model) = setup(5);
    let ae_config = FluxAeConfig {
        ch: 16,
        ..FluxAeConfig::tiny()
    };
    model_config.codec = CodecConfig::Flux(ae_config.clone());
    model_config.save_folder(&source).unwrap();
    model
        .save_safetensors(&source.join("ema.safetensors"), SaveDtype::F32)
        .unwrap();
    let device = Default::default();
    save_codec(&Codec::flux(ae_config.init::<B>(&device).unwrap()), &source).unwrap();

    let spec = |dir: &Path, iterations: u64, resume: bool| RunSpec {
        config: RunConfig::tiny()
            .with_overrides(&[
                format!("iterations={iterations}"),
                format!("output_dir=\"{}\"", dir.display()),
                "metrics.progress=false".into(),
                "metrics.eval_every=0".into(),
                "checkpoint.every=2".into(),
                "data.batch.samples=2".into(),
                "schedule.warmup_steps=1".into(),
                "data.vae_image.min=16".into(),
                "data.vae_image.max=16".into(),
                "data.vit_image.min=16".into(),
                "data.vit_image.max=16".into(),
            ])
            .unwrap(),
        model: ModelSource::Folder(source.clone()),
        data: TrainData::Synthetic,
        resume,
        // Resumed with more iterations (the first two steps' learning rates are the same
        // under both lengths, so the runs still agree).
        allow_config_change: true,
        stop: None,
    };
    let (straight, split) = (run_dir("flux-straight"), run_dir("flux-split"));
    run::<B>(spec(&straight, 4, false), &device).unwrap();
    run::<B>(spec(&split, 2, false), &device).unwrap();
    run::<B>(spec(&split, 4, true), &device).unwrap();
    for file in ["model.safetensors", "ema.safetensors"] {
        let (a, b) = (
            std::fs::read(straight.join(file)).unwrap(),
            std::fs::read(split.join(file)).unwrap(),
        );
        assert!(a == b, "{file}: a resumed run differs from a straight one");
    }
    assert_eq!(
        std::fs::read(straight.join(AE_FILE)).unwrap(),
        std::fs::read(source.join(AE_FILE)).unwrap(),
        "the run folder carries the codec, unchanged"
    );
    let loaded = BagelConfig::from_folder(&straight).unwrap();
    assert_eq!(loaded.codec, CodecConfig::Flux(ae_config));

    let report = sample_grid::<Flex>(
        &GridSpec {
            model_dir: straight.clone(),
            tokenizer: None,
            prompts: vec!["a red circle".into()],
            seeds: vec![3],
            size: 16,
            source: None,
            sampler: SamplerConfig {
                steps: 3,
                ..SamplerConfig::default()
            },
            caption: None,
            out: None,
        },
        &device,
    )
    .unwrap();
    assert!(report.path.is_file());
    for dir in [source, straight, split] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A loaded model whose special tokens are not the synthetic vocabulary's (a release's
/// Qwen2.5 ids, say) is never fed the synthetic word ids: the run refuses before writing.
#[test]
fn a_folder_model_refuses_the_synthetic_vocabulary() {
    use uno_core::packing::SpecialTokens;
    use uno_core::train::{ModelSource, RunError, RunSpec, TrainData, run};

    let source = run_dir("foreign-vocab");
    std::fs::create_dir_all(&source).unwrap();
    let specials = SpecialTokens {
        im_start: 196,
        im_end: 197,
        vision_start: 198,
        vision_end: 199,
    };
    let config = BagelConfig::tiny(200, specials);
    let device = Default::default();
    let model = config.init::<B>(&device).unwrap();
    config.save_folder(&source).unwrap();
    model
        .save_safetensors(&source.join("ema.safetensors"), SaveDtype::F32)
        .unwrap();
    let out = run_dir("foreign-vocab-out");
    let spec = RunSpec {
        config: RunConfig::tiny()
            .with_overrides(&[format!("output_dir=\"{}\"", out.display())])
            .unwrap(),
        model: ModelSource::Folder(source.clone()),
        data: TrainData::Synthetic,
        resume: false,
        allow_config_change: false,
        stop: None,
    };
    let err = run::<B>(spec, &device).unwrap_err();
    assert!(
        matches!(&err, RunError::Tokenizer { reason, .. } if reason.contains("special tokens")),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written before the checks");
    std::fs::remove_dir_all(&source).unwrap();
}
