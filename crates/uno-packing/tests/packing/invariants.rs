//! Property tests over thousands of random sample mixes: the mask and layout invariants
//! UNO's correctness rests on (no leakage, no cross-sample attention, BAGEL's positions).

use proptest::prelude::*;
use uno_packing::{
    AttnMode, EditDropout, ImageSize, MetaqueryAttention, PackedSequence, PackingConfig, Sample,
    SplitKind, SplitSpec, Supervision, SupervisionVisibility,
};

fn config(mq: usize, full_mq: bool, all_but_prompt: bool) -> PackingConfig {
    PackingConfig {
        vocab_size: 1000,
        special_tokens: uno_packing::SpecialTokens {
            im_start: 990,
            im_end: 991,
            vision_start: 992,
            vision_end: 993,
        },
        vit_patch_size: 16,
        num_metaqueries: mq,
        metaquery_attention: if full_mq {
            MetaqueryAttention::Full
        } else {
            MetaqueryAttention::Causal
        },
        supervision_visibility: if all_but_prompt {
            SupervisionVisibility::AllButPrompt
        } else {
            SupervisionVisibility::NoisedTargetOnly
        },
        ..PackingConfig::default()
    }
}

fn tokens() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..900, 1..6)
}

fn image() -> impl Strategy<Value = ImageSize> {
    (1usize..4, 1usize..4).prop_map(|(r, c)| ImageSize::new(16 * r, 16 * c))
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
            tokens(),
            image(),
            supervision(),
            any::<[bool; 3]>()
        )
            .prop_map(|(src, ins, t, s, d)| Sample::Edit {
                source: src,
                source_vit: src,
                instruction: ins,
                target: t,
                supervision: s,
                dropout: EditDropout {
                    instruction: d[0],
                    source_vit: d[1],
                    source_vae: d[2],
                },
            }),
        (image(), prop::option::of(tokens()), tokens())
            .prop_map(|(i, q, a)| Sample::understanding(i, q, a)),
    ]
}

/// BAGEL's position rule, re-derived from the plan: text and metaqueries +1 per token,
/// images share one id, clean images and dropped images advance by 1, noised do not.
fn expected_positions(sample: &Sample, config: &PackingConfig) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rope = 0;
    for spec in sample.plan() {
        match spec {
            SplitSpec::Text { tokens, .. } | SplitSpec::Caption(tokens) => {
                out.extend(rope..rope + tokens.len() + 2);
                rope += tokens.len() + 2;
            }
            SplitSpec::Metaqueries => {
                out.extend(rope..rope + config.num_metaqueries);
                rope += config.num_metaqueries;
            }
            SplitSpec::VitImage(s) | SplitSpec::VaeImage(s) | SplitSpec::NoisedImage(s) => {
                let n = (s.height / 16) * (s.width / 16) + 2;
                out.extend(std::iter::repeat_n(rope, n));
                if !matches!(spec, SplitSpec::NoisedImage(_)) {
                    rope += 1;
                }
            }
            SplitSpec::DroppedImage => rope += 1,
        }
    }
    out
}

fn check_partition(len: usize, lists: &[&[usize]]) {
    let mut seen = vec![0u8; len];
    for list in lists {
        assert!(
            list.windows(2).all(|w| w[0] < w[1]),
            "index list not ascending"
        );
        for &i in *list {
            seen[i] += 1;
        }
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "index lists do not partition 0..{len}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn pack_invariants(
        samples in prop::collection::vec(sample(), 1..5),
        mq in 1usize..4,
        full_mq: bool,
        all_but_prompt: bool,
    ) {
        let config = config(mq, full_mq, all_but_prompt);
        let pack = PackedSequence::pack(&samples, &config).unwrap();

        // Samples tile the sequence; positions restart and follow BAGEL's rules.
        let mut expected_pos = Vec::new();
        let mut next = 0;
        for (layout, sample) in pack.samples.iter().zip(&samples) {
            prop_assert_eq!(layout.start, next);
            prop_assert_eq!(layout.mask.len(), layout.len);
            next += layout.len;
            expected_pos.extend(expected_positions(sample, &config));
        }
        prop_assert_eq!(next, pack.len);
        prop_assert_eq!(&pack.position_ids, &expected_pos);

        // Index lists partition the sequence, by token group and by expert.
        check_partition(pack.len, &[&pack.text_indexes, &pack.vit_indexes, &pack.vae_indexes, &pack.metaquery_indexes]);
        check_partition(pack.len, &[&pack.und_indexes, &pack.gen_indexes]);
        prop_assert_eq!(&pack.gen_indexes, &pack.vae_indexes);
        prop_assert_eq!(pack.text_ids.len(), pack.text_indexes.len());
        prop_assert_eq!(pack.vae_timestep_slots.len(), pack.vae_indexes.len());
        prop_assert_eq!(pack.caption_ce.indexes.len(), pack.caption_ce.labels.len());

        for (s, layout) in pack.samples.iter().enumerate() {
            let mask = pack.dense_mask(s);
            let n = layout.len;
            let splits = &pack.splits[layout.splits.clone()];
            for (qi, q) in splits.iter().enumerate() {
                for (ki, k) in splits.iter().enumerate() {
                    for qt in q.start..q.start + q.len {
                        for kt in k.start..k.start + k.len {
                            let (ql, kl) = (qt - layout.start, kt - layout.start);
                            let sees = !mask[ql * n + kl];
                            prop_assert_eq!(sees, layout.mask.attends(ql, kl));
                            if qt == kt {
                                prop_assert!(sees, "token {} does not see itself", qt);
                            }
                            if qi == ki && matches!(q.mode, AttnMode::Causal | AttnMode::Caption | AttnMode::MetaqueryCausal) {
                                prop_assert_eq!(sees, kt <= qt, "causal inside split");
                            }
                            if qi != ki && sees {
                                // Nothing outside the supervision splits sees a noised split.
                                if k.kind == SplitKind::NoisedImage {
                                    prop_assert!(q.mode.is_supervision());
                                }
                                // Supervision splits are seen by no other split.
                                prop_assert!(!k.mode.is_supervision());
                                // Supervision never sees a text split (the prompt).
                                if q.mode.is_supervision() {
                                    prop_assert!(k.kind != SplitKind::Text);
                                }
                                // Only earlier splits are visible.
                                prop_assert!(ki < qi);
                            }
                        }
                    }
                }
                // Supervision sees its noised target entirely.
                if q.mode.is_supervision() {
                    let target = splits[..qi].iter().rposition(|s| s.kind == SplitKind::NoisedImage).unwrap();
                    let t = &splits[target];
                    let ql = q.start - layout.start;
                    for kt in t.start..t.start + t.len {
                        prop_assert!(!mask[ql * n + kt - layout.start]);
                    }
                }
            }
        }
    }
}
