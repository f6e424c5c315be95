//! Fuzz target: the packer on arbitrary, mostly invalid input: any token ids, image sides
//! (zero and unaligned included), custom split plans in any order, and configurations with
//! any field at 0 or out of range, through `PackedSequence::pack` and the `GreedyPacker`.
//! Each call must return `Ok` or a `PackError`, never panic; a pack that succeeds must
//! account for every token (`len` = sum of split lengths) and answer mask queries. CI runs
//! a seeded pass; `UNO_FUZZ_SECONDS=600` runs longer (see `uno_testing::fuzz`).

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use uno_packing::{
    EditDropout, GreedyPacker, ImageSize, MetaqueryAttention, PackBudget, PackedSequence,
    PackingConfig, Sample, SpecialTokens, SplitSpec, Supervision, SupervisionVisibility,
};

fn tokens() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(prop_oneof![9 => 0u32..60, 1 => any::<u32>()], 0..8)
}

/// Mostly multiples of 16 (which the plausible configurations below accept), else any.
fn image() -> impl Strategy<Value = ImageSize> {
    prop_oneof![
        3 => (1usize..5, 1usize..5).prop_map(|(h, w)| ImageSize::new(16 * h, 16 * w)),
        1 => (0usize..200, 0usize..200).prop_map(|(h, w)| ImageSize::new(h, w)),
    ]
}

fn split() -> impl Strategy<Value = SplitSpec> {
    prop_oneof![
        (tokens(), any::<bool>()).prop_map(|(tokens, loss)| SplitSpec::Text { tokens, loss }),
        image().prop_map(SplitSpec::VitImage),
        image().prop_map(SplitSpec::VaeImage),
        image().prop_map(SplitSpec::NoisedImage),
        tokens().prop_map(SplitSpec::Caption),
        Just(SplitSpec::Metaqueries),
        Just(SplitSpec::DroppedImage),
    ]
}

fn supervision() -> impl Strategy<Value = Supervision> {
    (prop::option::of(tokens()), any::<bool>()).prop_map(|(caption, metaqueries)| Supervision {
        caption,
        metaqueries,
    })
}

fn sample() -> impl Strategy<Value = Sample> {
    prop_oneof![
        (tokens(), image(), supervision(), any::<bool>()).prop_map(|(p, t, s, d)| {
            Sample::TextToImage {
                prompt: p,
                target: t,
                supervision: s,
                drop_prompt: d,
            }
        }),
        (
            image(),
            image(),
            tokens(),
            image(),
            supervision(),
            any::<[bool; 3]>()
        )
            .prop_map(
                |(source, source_vit, instruction, target, supervision, d)| Sample::Edit {
                    source,
                    source_vit,
                    instruction,
                    target,
                    supervision,
                    dropout: EditDropout {
                        instruction: d[0],
                        source_vit: d[1],
                        source_vae: d[2],
                    },
                }
            ),
        (image(), prop::option::of(tokens()), tokens())
            .prop_map(|(i, q, a)| Sample::understanding(i, q, a)),
        prop::collection::vec(split(), 0..6).prop_map(Sample::Custom),
    ]
}

/// Half plausible (small vocabulary with its special tokens at the top, patch and
/// downsampling dividing 16), half anything.
fn config() -> impl Strategy<Value = PackingConfig> {
    let plausible = (
        prop::sample::select(vec![1usize, 2, 4, 8, 16]),
        prop::sample::select(vec![1usize, 2, 4, 8, 16]),
        0usize..6,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![64usize..200, 200usize..5000],
    )
        .prop_map(|(patch, down, mq, full, all, max)| {
            build(
                [60, 61, 62, 63],
                64,
                (patch, 70, down, 64),
                (mq, full, all, max),
            )
        });
    prop_oneof![plausible, any_config()]
}

fn any_config() -> impl Strategy<Value = PackingConfig> {
    (
        prop::array::uniform4(prop_oneof![0u32..70, any::<u32>()]),
        prop_oneof![0u32..80, any::<u32>()],
        (0usize..20, 0usize..40, 0usize..20, 0usize..40),
        (0usize..40, any::<bool>(), any::<bool>(), 0usize..3000),
    )
        .prop_map(|(special, vocab_size, geometry, mask)| {
            build(special, vocab_size, geometry, mask)
        })
}

/// The packing config of `special` token ids (im start / end, vision start / end), a
/// vocabulary size, `(patch, vit side, downsample, latent side)` and `(metaqueries, full
/// metaquery attention, supervision sees all but the prompt, max sample tokens)`.
fn build(
    special: [u32; 4],
    vocab_size: u32,
    (patch, vit_side, down, latent): (usize, usize, usize, usize),
    (mq, full, all, max): (usize, bool, bool, usize),
) -> PackingConfig {
    PackingConfig {
        special_tokens: SpecialTokens {
            im_start: special[0],
            im_end: special[1],
            vision_start: special[2],
            vision_end: special[3],
        },
        vocab_size,
        vit_patch_size: patch,
        vit_max_patches_per_side: vit_side,
        vae_downsample: down,
        max_latent_size: latent,
        num_metaqueries: mq,
        metaquery_attention: if full {
            MetaqueryAttention::Full
        } else {
            MetaqueryAttention::Causal
        },
        supervision_visibility: if all {
            SupervisionVisibility::AllButPrompt
        } else {
            SupervisionVisibility::NoisedTargetOnly
        },
        max_sample_tokens: max,
    }
}

/// Non-empty inputs that packed: the share of cases that reach the layout code.
static PACKED: AtomicU64 = AtomicU64::new(0);

#[test]
fn fuzz_packer() {
    let input = (
        config(),
        prop::collection::vec(sample(), 0..4),
        (0usize..3000, 0usize..3000),
    );
    let cases = uno_testing::fuzz("packer", input, |(config, samples, (expected, max))| {
        if let Ok(pack) = PackedSequence::pack(&samples, &config) {
            PACKED.fetch_add(u64::from(!samples.is_empty()), Ordering::Relaxed);
            let total: usize = pack.splits.iter().map(|s| s.len).sum();
            prop_assert_eq!(total, pack.len);
            for sample in &pack.samples {
                let n = sample.len.min(4);
                for q in 0..n {
                    for k in 0..n {
                        let _ = sample.mask.attends(q, k);
                    }
                }
            }
        }
        let budget = PackBudget {
            expected_tokens: expected,
            max_tokens: max,
        };
        if let Ok(mut packer) = GreedyPacker::new(config, budget) {
            for sample in &samples {
                if packer.push(sample).is_err() {
                    break;
                }
            }
            let _ = packer.finish();
        }
        Ok(())
    });
    let packed = PACKED.load(Ordering::Relaxed);
    eprintln!("packer: {packed} of {cases} cases packed a non-empty sample list");
    assert!(packed > 0, "the generator never produced a valid input");
}
