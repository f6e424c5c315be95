//! Pretraining pieces (ShapesBench stage 1): the understanding CE (`loss.text`) on a pack
//! mixing understanding and text-to-image samples, and which weights it trains under
//! `trainable = "generation"` and `"all"`.

use burn::module::Param;
use burn::tensor::{Tensor, backend::AutodiffBackend, backend::Backend};
use uno_core::bagel::{Bagel, BagelConfig, UnoBatch, UnoForward};
use uno_core::data::{Dataset, SyntheticConfig, SyntheticScenes, TrainItem};
use uno_core::objectives::ConditionDropoutConfig;
use uno_core::packing::{ImageKind, PackedSequence, Sample};
use uno_core::train::{BatchFill, PackedBatches, TrainBatch, Trainable, UnoTrainee};
use uno_core::trainer::{DataSource, TrainRng, TrainStep};
use uno_core::vae::PixelCodec;
use uno_testing::to_vec;

/// 16 px scenes, half of them understanding samples.
fn mixed_set() -> SyntheticScenes {
    SyntheticScenes::new(SyntheticConfig {
        len: 12,
        image_size: 16,
        max_shapes: 2,
        seed: 5,
    })
    .unwrap()
    .with_understanding(0.5)
    .unwrap()
}

const SAMPLES: usize = 6;

/// The first micro-batch of the mixed set (file order), with every condition dropped:
/// dropout must leave the understanding samples whole.
fn setup<B: Backend>() -> (BagelConfig, Bagel<B>, TrainBatch<B>, Vec<TrainItem>) {
    let set = mixed_set();
    let mut config = BagelConfig::tiny(set.tokenizer().vocab_size(), set.special_tokens());
    config.loss.text = 1.0;
    let device = Default::default();
    B::seed(&device, 9);
    let model = config.init::<B>(&device).unwrap();
    let items: Vec<TrainItem> = (0..SAMPLES).map(|i| set.get(i).unwrap()).collect();
    let always = ConditionDropoutConfig::new()
        .with_text(1.0)
        .with_vit(1.0)
        .with_vae(1.0);
    let batch = PackedBatches::<_, B>::new(
        set,
        BatchFill::Samples(SAMPLES),
        config.packing(),
        always,
        device,
    )
    .batch(0, &mut TrainRng::new(1))
    .unwrap();
    (config, model, batch, items)
}

fn forward<B: Backend>(
    config: &BagelConfig,
    model: &Bagel<B>,
    batch: &TrainBatch<B>,
) -> UnoForward<B> {
    model
        .uno_forward(
            UnoBatch {
                pack: &batch.pack,
                images: &batch.images,
                vit_targets: &batch.vit_targets,
                noise_seed: 3,
                normalization: Default::default(),
            },
            &PixelCodec,
            &config.objective().unwrap(),
        )
        .unwrap()
}

/// A mixed micro-batch packs every sample (understanding: ViT image then answer with CE
/// targets; text-to-image: prompt dropped, noised target, caption, metaqueries), and the
/// forward counts each term's items.
fn mixed_batch_packs_and_counts<B: Backend>() {
    let (config, model, batch, items) = setup::<B>();
    let answers: Vec<&Vec<u32>> = items
        .iter()
        .filter_map(|i| match &i.sample {
            Sample::Understanding { answer, .. } => Some(answer),
            _ => None,
        })
        .collect();
    let captions: Vec<usize> = items
        .iter()
        .filter_map(|i| match &i.sample {
            Sample::TextToImage { supervision, .. } => {
                Some(supervision.caption.as_ref().unwrap().len())
            }
            _ => None,
        })
        .collect();
    let (und, t2i) = (answers.len(), captions.len());
    assert!(
        und > 0 && t2i > 0,
        "{und} understanding, {t2i} text-to-image"
    );
    let pack = &batch.pack;
    assert_eq!(pack.num_samples(), SAMPLES);
    let kinds: Vec<ImageKind> = pack.images.iter().map(|l| l.kind).collect();
    assert_eq!(kinds.iter().filter(|&&k| k == ImageKind::Vit).count(), und);
    assert_eq!(kinds.len(), SAMPLES, "{kinds:?}");
    assert_eq!(batch.images.len(), SAMPLES);
    for (image, layout) in batch.images.iter().zip(&pack.images) {
        assert_eq!(image.dims(), [3, layout.size.height, layout.size.width]);
    }
    // Answer targets: every answer token then <|im_end|>, in pack order.
    let im_end = config.special_tokens.im_end;
    let labels: Vec<u32> = answers
        .iter()
        .flat_map(|a| a.iter().copied().chain([im_end]))
        .collect();
    assert_eq!(pack.text_ce.labels, labels);
    // Dropout took the prompts only: their tokens are gone from the pack.
    let prompt_words: usize = items
        .iter()
        .map(|i| match &i.sample {
            Sample::TextToImage { prompt, .. } => prompt.len(),
            _ => 0,
        })
        .sum();
    assert!(prompt_words > 0);
    let undropped = PackedSequence::pack(
        &items.iter().map(|i| i.sample.clone()).collect::<Vec<_>>(),
        &config.packing(),
    )
    .unwrap();
    assert_eq!(undropped.len - pack.len, prompt_words + 2 * t2i);
    assert_eq!(undropped.text_ce.labels, pack.text_ce.labels);

    let out = forward(&config, &model, &batch);
    let c = out.loss.counts;
    assert_eq!(c.text_tokens, labels.len());
    assert_eq!(
        c.caption_tokens,
        captions.iter().map(|n| n + 1).sum::<usize>()
    );
    assert_eq!(c.noised_tokens, t2i * 16);
    assert_eq!(c.metaqueries, t2i * config.num_metaqueries);
    assert_eq!(batch.vit_targets.len(), t2i);
}

/// `loss.text` is the mean next-token CE of `lm_head` over the answer targets' final
/// hidden states, computed here on the host from the model's own rows and weights.
fn text_ce_equals_host_ce<B: Backend>() {
    let (config, model, batch, _) = setup::<B>();
    let out = forward(&config, &model, &batch);
    let hidden_size = config.llm.hidden_size;
    let vocab = config.llm.vocab_size;
    let hidden = to_vec(out.hidden.clone());
    // Burn's Linear weight is [in, out].
    let weight = to_vec(model.lm_head.weight.val());
    let ce = &batch.pack.text_ce;
    let mut sum = 0.0f64;
    for (&row, &label) in ce.indexes.iter().zip(&ce.labels) {
        let h = &hidden[row * hidden_size..(row + 1) * hidden_size];
        let logits: Vec<f64> = (0..vocab)
            .map(|v| {
                (0..hidden_size)
                    .map(|k| f64::from(h[k]) * f64::from(weight[k * vocab + v]))
                    .sum()
            })
            .collect();
        let max = logits.iter().fold(f64::MIN, |m, &x| m.max(x));
        let log_z = max + logits.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        sum += log_z - logits[label as usize];
    }
    let host = sum / ce.len() as f64;
    let got = f64::from(to_vec(out.loss.text.clone())[0]);
    assert!(
        (got - host).abs() < 1e-5 * host,
        "text {got} vs host {host}"
    );
    // It enters the total with its weight (1 here): total - flow - 0.1 cap - 0.2 vis.
    let [total, flow, cap, vis] = [
        out.loss.total,
        out.loss.flow,
        out.loss.caption,
        out.loss.visual,
    ]
    .map(|t| f64::from(to_vec(t)[0]));
    assert!(
        (total - (flow + 0.1 * cap + 0.2 * vis + got)).abs() < 1e-4,
        "{total}"
    );
    // Weight 0 (post-training): not computed, count 0, total without it.
    let mut off = config.clone();
    off.loss.text = 0.0;
    let out = forward(&off, &model, &batch);
    assert_eq!(out.loss.counts.text_tokens, 0);
    assert_eq!(to_vec(out.loss.text), vec![0.0]);
}

fn grad_norm<B: AutodiffBackend, const D: usize>(
    p: &Param<Tensor<B, D>>,
    grads: &B::Gradients,
) -> Option<f32> {
    p.val().grad(grads).map(|g| {
        let g: Tensor<B::InnerBackend, D> = g;
        to_vec(g.powf_scalar(2.0).sum().sqrt())[0]
    })
}

/// `trainable = "all"`: the understanding CE trains the understanding expert, the
/// embeddings, `lm_head`, the ViT and the connector; the fixed position tables stay
/// frozen. `"generation"`: it reaches no weight (nothing trainable sits under the answer
/// tokens), while the UNO losses still train the generation expert. Loaded weights keep
/// the flags.
fn trainable_all_trains_the_understanding_side<B: AutodiffBackend>() {
    let (config, model, batch, _) = setup::<B>();
    let model = UnoTrainee::new(model, config.objective().unwrap())
        .with_trainable(Trainable::All)
        .model;
    let grads = forward(&config, &model, &batch).loss.text.backward();
    let layer = &model.language_model.layers[1];
    let positive =
        |name: &str, g: Option<f32>| assert!(g.is_some_and(|g| g > 0.0), "{name}: {g:?}");
    positive(
        "und q_proj",
        grad_norm(&layer.und.self_attn.q_proj.weight, &grads),
    );
    positive(
        "und up_proj",
        grad_norm(&layer.und.mlp.up_proj.weight, &grads),
    );
    positive("embed_tokens", grad_norm(&model.embed_tokens, &grads));
    positive("lm_head", grad_norm(&model.lm_head.weight, &grads));
    positive("connector", grad_norm(&model.connector.fc1.weight, &grads));
    positive(
        "vit patch embedding",
        grad_norm(
            &model
                .vit_model
                .vision_model
                .embeddings
                .patch_embedding
                .weight,
            &grads,
        ),
    );
    assert!(grad_norm(&model.vit_pos_embed.pos_embed, &grads).is_none());
    assert!(
        !model
            .generation
            .latent_pos_embed
            .pos_embed
            .is_require_grad()
    );
    // The answers never pass the generation expert.
    let gen_q = grad_norm(&layer.moe_gen.self_attn.q_proj.weight, &grads);
    assert!(gen_q.is_none_or(|g| g == 0.0), "gen q_proj: {gen_q:?}");

    let generation = UnoTrainee::new(model.clone(), config.objective().unwrap()).model;
    // Burn's backward consumes the graph: one forward per loss.
    let text_grads = forward(&config, &generation, &batch).loss.text.backward();
    let layer = &generation.language_model.layers[1];
    assert!(grad_norm(&layer.und.self_attn.q_proj.weight, &text_grads).is_none());
    assert!(grad_norm(&generation.lm_head.weight, &text_grads).is_none());
    // The total (flow, caption and visual; BAGEL's zero `llm2vae` leaves the flow loss
    // alone no decoder gradient at init) trains the generation expert.
    let grads = forward(&config, &generation, &batch).loss.total.backward();
    let layer = &generation.language_model.layers[0];
    positive(
        "gen k_proj",
        grad_norm(&layer.moe_gen.self_attn.k_proj.weight, &grads),
    );
    assert!(grad_norm(&layer.und.self_attn.q_proj.weight, &grads).is_none());

    // A resume's load keeps `all`.
    let dir = std::env::temp_dir().join(format!("uno-pretrain-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    let trainee =
        UnoTrainee::new(model, config.objective().unwrap()).with_trainable(Trainable::All);
    trainee.save_weights(&path).unwrap();
    let fresh = UnoTrainee::new(
        config.init::<B>(&Default::default()).unwrap(),
        config.objective().unwrap(),
    )
    .with_trainable(Trainable::All);
    let loaded = fresh.load_weights(&path).unwrap();
    let layer = &loaded.model.language_model.layers[0];
    assert!(layer.und.self_attn.q_proj.weight.is_require_grad());
    assert!(loaded.model.lm_head.weight.is_require_grad());
    assert!(!loaded.model.vit_pos_embed.pos_embed.is_require_grad());
    assert_eq!(loaded.trainable, Trainable::All);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn text_gradients_follow_trainable<B: Backend>() {
    trainable_all_trains_the_understanding_side::<burn::backend::Autodiff<B>>();
}

uno_testing::backend_tests!(
    mixed_batch_packs_and_counts,
    text_ce_equals_host_ce,
    text_gradients_follow_trainable,
);
