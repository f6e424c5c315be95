//! The paper's data path at the release's geometry: real-size images (generated here) go
//! through BAGEL's two transforms, pack with their own latent and ViT grids, and one UNO
//! forward + backward runs on a BAGEL-shaped model whose ViT and latent geometry are the
//! release's (ViT patch 14 with 70 positions a side, 16-px latent tokens, a 64 x 64 latent
//! position table, 256 metaqueries) but whose widths and depths are tiny.
//!
//! The codec is a stand-in with FLUX's geometry (8x downsampling, 16 channels): each latent
//! cell is the mean of its 8x8 pixel block, so the test exercises shapes, not FLUX's
//! convolutions (they have their own parity tests).

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{Tensor, TensorData};
use uno_core::bagel::{BagelConfig, CodecConfig, LossNormalization, UnoBatch};
use uno_core::data::{ImageTransforms, RgbImage, SyntheticConfig, SyntheticScenes};
use uno_core::mot::MotConfig;
use uno_core::packing::{ImageSize, PackedSequence, Sample};
use uno_core::patch::VisionError;
use uno_core::vae::{FluxAeConfig, LatentCodec, Posterior};
use uno_core::vision::SiglipVisionConfig;

type B = Autodiff<Flex>;

/// FLUX's latent geometry without its weights: an 8x8 mean pool, padded to 16 channels.
#[derive(Module, Debug, Clone, Copy, Default)]
struct PoolCodec;

impl<B: Backend> LatentCodec<B> for PoolCodec {
    fn latent_channels(&self) -> usize {
        16
    }

    fn downsample(&self) -> usize {
        8
    }

    fn encode_posterior(&self, images: Tensor<B, 4>) -> Result<Posterior<B>, VisionError> {
        let pooled = avg_pool2d(images, [8, 8], [8, 8], [0, 0], true, false);
        let [n, c, h, w] = pooled.dims();
        let pad = Tensor::zeros([n, 16 - c, h, w], &pooled.device());
        Ok(Posterior::point(Tensor::cat(vec![pooled, pad], 1)))
    }

    fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        Ok(latents)
    }
}

/// A `width x height` image with smooth colour ramps (something to resample).
fn ramp(width: usize, height: usize) -> RgbImage {
    let mut image = RgbImage::filled(height, width, [0.0; 3]);
    for row in 0..height {
        for col in 0..width {
            let (y, x) = (row as f32 / height as f32, col as f32 / width as f32);
            image.set_pixel(row, col, [x, y, 0.5 * (x + y)]);
        }
    }
    image
}

fn upload(image: &RgbImage) -> Tensor<B, 3> {
    Tensor::from_data(
        TensorData::new(image.data.clone(), [3, image.height, image.width]),
        &Default::default(),
    )
}

#[test]
fn real_size_images_pack_and_train_at_release_geometry() {
    let words = SyntheticScenes::new(SyntheticConfig::default()).unwrap();
    let vocab = words.tokenizer().vocab_size();
    let mut config = BagelConfig::tiny(vocab, words.special_tokens());
    config.llm = MotConfig {
        vocab_size: vocab,
        num_hidden_layers: 1,
        ..MotConfig::tiny()
    };
    config.vit = SiglipVisionConfig {
        patch_size: 14,
        image_size: 980, // 70 positions a side, as the release
        num_hidden_layers: 1,
        layers_used: Some(1),
        ..SiglipVisionConfig::tiny()
    };
    config.pixels_per_latent_token = 16;
    config.max_latent_size = 64;
    config.num_metaqueries = 256;
    config.codec = CodecConfig::Flux(FluxAeConfig {
        ch_mult: vec![1, 1, 1, 1], // downsample 8: 16-px tokens of width 64
        ..FluxAeConfig::tiny()
    });
    let packing = config.packing();
    assert_eq!(
        (
            packing.vit_patch_size,
            packing.vit_max_patches_per_side,
            packing.vae_downsample,
            packing.max_latent_size
        ),
        (14, 70, 16, 64)
    );

    // Table 12's average text lengths: a 171-token prompt, an 80-token caption.
    let ids = |n: usize| {
        (0..n)
            .map(|i| (i % (vocab - 5)) as u32 + 1)
            .collect::<Vec<_>>()
    };
    let transforms = ImageTransforms::bagel();
    let pairs: Vec<_> = [(1024, 768), (640, 1280), (512, 512)]
        .into_iter()
        .map(|(w, h)| transforms.apply(&ramp(w, h)).unwrap())
        .collect();
    let vae: Vec<_> = pairs.iter().map(|p| (p.vae.height, p.vae.width)).collect();
    let vit: Vec<_> = pairs.iter().map(|p| (p.vit.height, p.vit.width)).collect();
    // See uno-data's transform tests for the arithmetic.
    assert_eq!(vae, [(768, 1024), (1024, 512), (512, 512)]);
    assert_eq!(vit, [(392, 518), (518, 252), (518, 518)]);
    let samples: Vec<Sample> = pairs
        .iter()
        .map(|p| {
            Sample::text_to_image(ids(171), ImageSize::new(p.vae.height, p.vae.width), ids(80))
        })
        .collect();
    let pack = PackedSequence::pack(&samples, &packing).unwrap();
    let grids: Vec<_> = pack.images.iter().map(|i| (i.rows, i.cols)).collect();
    assert_eq!(grids, [(48, 64), (64, 32), (32, 32)]);
    // Latent ids use the release's row stride of 64: the second image's second row starts
    // at 64, its last token is 63 * 64 + 31.
    let second = &pack.latent_position_ids[3072..3072 + 2048];
    assert_eq!((second[32], second[2047]), (64, 63 * 64 + 31));
    let tokens = pack.composition();
    assert_eq!(
        (
            tokens.text,
            tokens.image,
            tokens.caption,
            tokens.metaqueries
        ),
        (3 * 173, 3072 + 2048 + 1024 + 3 * 2, 3 * 82, 3 * 256)
    );

    let device = Default::default();
    <B as Backend>::seed(&device, 0);
    let model = config.init::<B>(&device).unwrap().freeze_for_uno();
    let images: Vec<_> = pairs.iter().map(|p| upload(&p.vae)).collect();
    let vit_targets: Vec<_> = pairs.iter().map(|p| upload(&p.vit)).collect();
    let out = model
        .uno_forward(
            UnoBatch {
                pack: &pack,
                images: &images,
                vit_targets: &vit_targets,
                noise_seed: 1,
                normalization: LossNormalization::PerPack,
            },
            &PoolCodec,
            &config.objective().unwrap(),
        )
        .unwrap();
    let counts = out.loss.counts;
    assert_eq!(
        (
            counts.noised_tokens,
            counts.caption_tokens,
            counts.metaqueries
        ),
        (6144, 3 * 81, 768)
    );
    let total: f32 = uno_testing::to_vec(out.loss.total.clone())[0];
    assert!(total.is_finite() && total > 0.0, "loss {total}");
    let grads = out.loss.total.backward();
    let g: Tensor<Flex, 2> = model.metaqueries.val().grad(&grads).unwrap();
    let norm: f32 = uno_testing::to_vec(g.powf_scalar(2.0).sum())[0];
    assert!(norm > 0.0, "metaqueries got no gradient");
}
