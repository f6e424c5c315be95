//! Token-weighted losses across gradient accumulation (BAGEL's normalisation): micro-batches
//! of different sizes, each normalised by the step's total counts and summed, give the
//! losses and gradients of one pack holding all their samples. The reference is that one
//! pack, computed independently (one forward, one backward). The same holds with
//! understanding samples mixed in, their answer CE on and every weight trained.

use std::ops::Range;

use burn::backend::Autodiff;
use burn::module::Param;
use burn::tensor::{Tensor, TensorData, backend::AutodiffBackend, backend::Backend};
use uno_core::bagel::{Bagel, BagelConfig, LossNormalization, UnoBatch, UnoForward, flow_slots};
use uno_core::data::{Dataset, SyntheticConfig, SyntheticScenes, TrainItem};
use uno_core::objectives::{FlowNoise, LossCounts};
use uno_core::packing::{PackedSequence, SampleKind};
use uno_core::train::{item_images, item_vit_target};
use uno_core::vae::PixelCodec;
use uno_testing::{assert_close, to_vec};

/// 16 px images, 4 px latent tokens and patches: 16 VAE tokens per sample.
const TOKENS_PER_IMAGE: usize = 16;

struct Part<B: Backend> {
    pack: PackedSequence,
    images: Vec<Tensor<B, 3>>,
    vit_targets: Vec<Tensor<B, 3>>,
    noise: FlowNoise,
}

fn upload<B: Backend>(image: &uno_core::data::RgbImage, device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(
        TensorData::new(image.data.clone(), [3, image.height, image.width]),
        device,
    )
}

fn part<B: Backend>(
    items: &[TrainItem],
    config: &BagelConfig,
    noise: FlowNoise,
    device: &B::Device,
) -> Part<B> {
    let samples: Vec<_> = items.iter().map(|i| i.sample.clone()).collect();
    let images = items
        .iter()
        .flat_map(item_images)
        .map(|image| upload(image, device))
        .collect();
    let vit_targets = items
        .iter()
        .filter_map(item_vit_target)
        .map(|image| upload(image, device))
        .collect();
    Part {
        pack: PackedSequence::pack(&samples, &config.packing()).unwrap(),
        images,
        vit_targets,
        noise,
    }
}

/// The draw of noised images `samples` out of the whole pack's draw (noised image `i` owns
/// VAE rows `16 i .. 16 (i + 1)`; understanding samples have none).
fn slice(noise: &FlowNoise, samples: Range<usize>) -> FlowNoise {
    let rows = samples.start * TOKENS_PER_IMAGE..samples.end * TOKENS_PER_IMAGE;
    let c = noise.channels;
    FlowNoise {
        image_timesteps: noise.image_timesteps[samples].to_vec(),
        token_timesteps: noise.token_timesteps[rows.clone()].to_vec(),
        noise: noise.noise[rows.start * c..rows.end * c].to_vec(),
        noised_rows: (0..rows.len()).collect(),
        channels: c,
    }
}

fn forward<B: Backend>(
    model: &Bagel<B>,
    config: &BagelConfig,
    part: &Part<B>,
    normalization: LossNormalization,
) -> UnoForward<B> {
    let batch = UnoBatch {
        pack: &part.pack,
        images: &part.images,
        vit_targets: &part.vit_targets,
        noise_seed: 0,
        normalization,
    };
    model
        .uno_forward_with_noise(
            batch,
            &part.noise,
            &PixelCodec,
            &config.objective().unwrap(),
        )
        .unwrap()
}

/// Gradients of a few generation-side parameters (and, when every weight trains, of
/// understanding-side ones), concatenated.
fn grads<B: AutodiffBackend>(model: &Bagel<B>, grads: &B::Gradients) -> Vec<f32> {
    let layer = &model.language_model.layers[0];
    let und: [&Param<Tensor<B, 2>>; 2] =
        [&layer.und.self_attn.q_proj.weight, &model.lm_head.weight];
    let und = und.into_iter().filter(|p| p.is_require_grad());
    let params: [&Param<Tensor<B, 2>>; 4] = [
        &layer.moe_gen.self_attn.k_proj.weight,
        &layer.moe_gen.mlp.up_proj.weight,
        &model.metaqueries,
        &model.language_model.layers[1]
            .moe_gen
            .self_attn
            .v_proj
            .weight,
    ];
    params
        .into_iter()
        .chain(und)
        .flat_map(|p| {
            // A micro-batch of understanding samples only gives the generation side none.
            let g: Option<Tensor<B::InnerBackend, 2>> = p.val().grad(grads);
            g.map_or_else(|| vec![0.0; p.val().shape().num_elements()], to_vec)
        })
        .collect()
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
    to_vec(t)[0]
}

/// `understanding`: the fraction of understanding samples; above 0 their answer CE is on
/// (`loss.text = 1`) and every weight trains.
fn micro_batches_equal_one_batch<B: AutodiffBackend>(understanding: f64) {
    let set = SyntheticScenes::new(SyntheticConfig {
        len: 5,
        image_size: 16,
        max_shapes: 3,
        seed: 21,
    })
    .unwrap()
    .with_understanding(understanding)
    .unwrap();
    let mut config = BagelConfig::tiny(set.tokenizer().vocab_size(), set.special_tokens());
    let device = Default::default();
    B::seed(&device, 3);
    let model = config.init::<B>(&device).unwrap();
    let model = if understanding > 0.0 {
        config.loss.text = 1.0;
        model.train_all()
    } else {
        model.freeze_for_uno()
    };
    let items: Vec<TrainItem> = (0..5).map(|i| set.get(i).unwrap()).collect();
    let generated = |items: &[TrainItem]| {
        items
            .iter()
            .filter(|i| i.sample.kind() != SampleKind::Understanding)
            .count()
    };
    let (t2i, first) = (generated(&items), generated(&items[..1]));

    let whole_pack = PackedSequence::pack(
        &items.iter().map(|i| i.sample.clone()).collect::<Vec<_>>(),
        &config.packing(),
    )
    .unwrap();
    let noise = FlowNoise::sample(&flow_slots(&whole_pack), 64, 4.0, 7).unwrap();
    let whole = part::<B>(&items, &config, noise.clone(), &device);
    // Two micro-batches of different sizes: 1 and 4 samples.
    let micro = [
        part::<B>(&items[..1], &config, slice(&noise, 0..first), &device),
        part::<B>(&items[1..], &config, slice(&noise, first..t2i), &device),
    ];
    assert_ne!(micro[0].pack.len, micro[1].pack.len);

    let reference = forward(&model, &config, &whole, LossNormalization::PerPack);
    let totals = reference.loss.counts;
    assert_eq!(totals.noised_tokens, t2i * TOKENS_PER_IMAGE);
    assert_eq!(totals.metaqueries, t2i * 4);
    assert_eq!(totals.text_tokens, whole.pack.text_ce.len());
    if understanding > 0.0 {
        assert!(t2i > 0 && t2i < 5, "{t2i} of 5 samples generate");
        assert!(totals.text_tokens > 0);
    }
    let reference_loss = scalar(reference.loss.total.clone());
    let reference_grads = grads(&model, &reference.loss.total.backward());

    let mut summed_loss = 0.0;
    let mut summed_grads = vec![0.0f32; reference_grads.len()];
    let mut mean_grads = vec![0.0f32; reference_grads.len()];
    let mut counts = LossCounts::default();
    let mut means = Vec::new();
    for part in &micro {
        let out = forward(&model, &config, part, LossNormalization::StepTotals(totals));
        counts = counts + out.loss.counts;
        summed_loss += scalar(out.loss.total.clone());
        for (s, g) in summed_grads
            .iter_mut()
            .zip(grads(&model, &out.loss.total.backward()))
        {
            *s += g;
        }
        // The alternative BAGEL does not use: the mean of per-pack means.
        let out = forward(&model, &config, part, LossNormalization::PerPack);
        means.push(scalar(out.loss.total.clone()));
        for (s, g) in mean_grads
            .iter_mut()
            .zip(grads(&model, &out.loss.total.backward()))
        {
            *s += g / micro.len() as f32;
        }
    }
    assert_eq!(counts, totals);
    assert!(
        (summed_loss - reference_loss).abs() <= 1e-5 * reference_loss.abs(),
        "summed {summed_loss} vs one pack {reference_loss}"
    );
    // f32 sums over the samples' tokens in another order; entries are compared relative to
    // the largest gradient (a small entry can be a cancellation of large terms).
    let largest = reference_grads.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    assert!(largest > 1e-3, "largest gradient {largest}");
    let tol = 1e-4 * largest;
    assert_close(&summed_grads, &reference_grads, tol, 0.0);
    // The tolerance tells the two normalisations apart: the mean of per-pack means weighs
    // the 1-sample pack's tokens 4 times more.
    let worst = |g: &[f32]| {
        g.iter()
            .zip(&reference_grads)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
    };
    assert!(
        worst(&mean_grads) > 20.0 * tol,
        "mean of means is off by {} only (tolerance {tol})",
        worst(&mean_grads)
    );
    // The loss gap depends on how far apart the two packs' means happen to be (5e-4 on
    // one llvmpipe, more elsewhere), so it is judged against the token-weighted sum's own
    // f32 error rather than a fixed number.
    let mean_of_means = (means[0] + means[1]) / 2.0;
    let summed_error = (summed_loss - reference_loss)
        .abs()
        .max(1e-6 * reference_loss.abs());
    assert!(
        (mean_of_means - reference_loss).abs() > 10.0 * summed_error,
        "mean of means {mean_of_means} vs {reference_loss} (token-weighted sum {summed_loss})"
    );
}

fn token_weighted_accumulation<B: Backend>() {
    micro_batches_equal_one_batch::<Autodiff<B>>(0.0);
}

/// Pretraining's mix: understanding samples with their answer CE next to text-to-image
/// ones, every weight trained.
fn token_weighted_accumulation_with_answers<B: Backend>() {
    micro_batches_equal_one_batch::<Autodiff<B>>(0.5);
}

uno_testing::backend_tests!(
    token_weighted_accumulation,
    token_weighted_accumulation_with_answers
);
