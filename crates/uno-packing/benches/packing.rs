//! Packing + block-mask building for a 32k-token pack of BAGEL-sized UNO samples (paper
//! appendix B: 171 text + 3362 image + 80 caption + 256 metaquery tokens per sample).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use uno_packing::{GreedyPacker, ImageSize, PackBudget, PackingConfig, Sample};

/// 169 prompt tokens (+2 markers = 171), a 896x960 target (56x60 = 3360 latents + 2 =
/// 3362), 78 caption tokens (+2 = 80) and the config's 256 metaqueries: 3869 tokens.
fn bagel_sized_sample(seed: u32) -> Sample {
    let ids = |n: u32| (0..n).map(|i| (seed * 131 + i * 7) % 150_000).collect();
    Sample::text_to_image(ids(169), ImageSize::new(896, 960), ids(78))
}

fn bench_packing(c: &mut Criterion) {
    let samples: Vec<Sample> = (0..9).map(bagel_sized_sample).collect();
    let config = PackingConfig::default();
    c.bench_function("greedy_pack_32k_tokens_9_samples", |b| {
        b.iter(|| {
            let mut packer = GreedyPacker::new(config.clone(), PackBudget::default()).unwrap();
            let mut packs = Vec::new();
            for sample in &samples {
                packs.extend(packer.push(black_box(sample)).unwrap());
            }
            packs.extend(packer.finish());
            // 8 samples stay below 32768; the 9th fits under 36864 and closes the pack.
            assert_eq!((packs.len(), packs[0].len), (1, 9 * 3869));
            packs
        })
    });
    let pack = uno_packing::PackedSequence::pack(&samples[..1], &config).unwrap();
    c.bench_function("dense_mask_one_3869_token_sample", |b| {
        b.iter(|| black_box(&pack).dense_mask(0))
    });
}

criterion_group!(benches, bench_packing);
criterion_main!(benches);
