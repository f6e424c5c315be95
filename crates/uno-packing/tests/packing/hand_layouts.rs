//! Hand-written expected masks, position ids and index lists for small samples of every
//! kind. Matrices are spelled out row by row: row q, column k, `1` = q attends to k.

use uno_packing::{
    AttnMode, CeTargets, EditDropout, ImageSize, MetaqueryAttention, PackedSequence, PackingConfig,
    Sample, SampleKind, SpecialTokens, Supervision, SupervisionVisibility,
};

const S: SpecialTokens = SpecialTokens {
    im_start: 90,
    im_end: 91,
    vision_start: 92,
    vision_end: 93,
};

/// 16 px per token for both ViT and VAE so one image size gives one token per 16x16.
fn config() -> PackingConfig {
    PackingConfig {
        special_tokens: S,
        vocab_size: 100,
        vit_patch_size: 16,
        num_metaqueries: 2,
        ..PackingConfig::default()
    }
}

fn expected_mask(rows: &[&str]) -> Vec<bool> {
    rows.iter()
        .flat_map(|r| {
            assert_eq!(r.len(), rows.len(), "row {r:?} has the wrong length");
            r.chars().map(|c| c == '0')
        })
        .collect()
}

fn render(mask: &[bool], n: usize) -> Vec<String> {
    mask.chunks(n)
        .map(|row| row.iter().map(|&m| if m { '0' } else { '1' }).collect())
        .collect()
}

fn assert_mask(pack: &PackedSequence, sample: usize, rows: &[&str]) {
    let got = pack.dense_mask(sample);
    assert_eq!(
        render(&got, rows.len()),
        rows.iter().map(|r| r.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(got, expected_mask(rows));
    // The token-level query agrees with the dense matrix.
    let mask = &pack.samples[sample].mask;
    for q in 0..rows.len() {
        for k in 0..rows.len() {
            assert_eq!(mask.attends(q, k), !got[q * rows.len() + k], "q {q} k {k}");
        }
    }
}

#[test]
fn uno_text_to_image() {
    let sample = Sample::text_to_image(vec![5], ImageSize::new(16, 32), vec![7]);
    let pack = PackedSequence::pack(&[sample], &config()).unwrap();
    // prompt: <s> 5 </s> | noised: <v> z z </v> | caption: <s> 7 </s> | mq mq
    assert_eq!(pack.len, 12);
    assert_mask(
        &pack,
        0,
        &[
            "100000000000",
            "110000000000",
            "111000000000",
            "111111100000",
            "111111100000",
            "111111100000",
            "111111100000",
            "000111110000",
            "000111111000",
            "000111111100",
            "000111100010",
            "000111100011",
        ],
    );
    assert_eq!(pack.position_ids, [0, 1, 2, 3, 3, 3, 3, 3, 4, 5, 6, 7]);
    assert_eq!(pack.text_indexes, [0, 1, 2, 3, 6, 7, 8, 9]);
    assert_eq!(pack.text_ids, [90, 5, 91, 92, 93, 90, 7, 91]);
    assert_eq!(pack.vae_indexes, [4, 5]);
    assert_eq!(pack.noised_indexes, [4, 5]);
    assert_eq!(pack.latent_position_ids, [0, 1]);
    assert_eq!(pack.metaquery_indexes, [10, 11]);
    assert_eq!(pack.gen_indexes, [4, 5]);
    assert_eq!(pack.und_indexes, [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]);
    assert_eq!(
        pack.caption_ce,
        CeTargets {
            indexes: vec![7, 8],
            labels: vec![7, 91]
        }
    );
    assert!(pack.text_ce.is_empty());
    assert_eq!(pack.metaquery_groups.len(), 1);
    assert_eq!(pack.metaquery_groups[0].target_image, 0);
    assert_eq!(pack.samples[0].kind, SampleKind::TextToImage);
}

#[test]
fn plain_text_to_image_is_bagel() {
    let sample = Sample::plain_text_to_image(vec![5, 6], ImageSize::new(16, 16));
    let pack = PackedSequence::pack(&[sample], &config()).unwrap();
    assert_mask(
        &pack,
        0,
        &[
            "1000000", //
            "1100000", //
            "1110000", //
            "1111000", //
            "1111111", //
            "1111111", //
            "1111111", //
        ],
    );
    assert_eq!(pack.position_ids, [0, 1, 2, 3, 4, 4, 4]);
    assert!(pack.caption_ce.is_empty() && pack.metaquery_indexes.is_empty());
    assert_eq!(pack.samples[0].kind, SampleKind::PlainTextToImage);
}

#[test]
fn edit_noised_target_only() {
    let sample = Sample::edit(
        ImageSize::new(16, 16),
        vec![5],
        ImageSize::new(16, 16),
        vec![7],
    );
    let pack = PackedSequence::pack(&[sample], &config()).unwrap();
    // vae src 0..3 | vit src 3..6 | instruction 6..9 | noised 9..12 | caption 12..15 | mq 15..17
    assert_mask(
        &pack,
        0,
        &[
            "11100000000000000",
            "11100000000000000",
            "11100000000000000",
            "11111100000000000",
            "11111100000000000",
            "11111100000000000",
            "11111110000000000",
            "11111111000000000",
            "11111111100000000",
            "11111111111100000",
            "11111111111100000",
            "11111111111100000",
            "00000000011110000",
            "00000000011111000",
            "00000000011111100",
            "00000000011100010",
            "00000000011100011",
        ],
    );
    assert_eq!(
        pack.position_ids,
        [0, 0, 0, 1, 1, 1, 2, 3, 4, 5, 5, 5, 5, 6, 7, 8, 9]
    );
    assert_eq!(pack.vit_indexes, [4]);
    assert_eq!(pack.vae_indexes, [1, 10]);
    assert_eq!(pack.noised_indexes, [10]);
    assert_eq!(pack.gen_indexes, [1, 10]);
    use uno_packing::TimestepSlot::{Clean, Noised};
    assert_eq!(pack.vae_timestep_slots, [Clean, Noised { image: 2 }]);
    assert_eq!(pack.metaquery_groups[0].target_image, 2);
}

#[test]
fn mask_off_lets_supervision_see_the_prompt() {
    // Appendix D's ablation: the caption and metaqueries also see the prompt; nothing else
    // changes (the noised image is still hidden from the prompt, supervision from all).
    let config = PackingConfig {
        supervision_visibility: SupervisionVisibility::Everything,
        ..config()
    };
    let sample = Sample::text_to_image(vec![5], ImageSize::new(16, 32), vec![7]);
    let pack = PackedSequence::pack(&[sample], &config).unwrap();
    assert_mask(
        &pack,
        0,
        &[
            "100000000000",
            "110000000000",
            "111000000000",
            "111111100000",
            "111111100000",
            "111111100000",
            "111111100000",
            "111111110000",
            "111111111000",
            "111111111100",
            "111111100010",
            "111111100011",
        ],
    );
}

#[test]
fn edit_all_but_prompt_and_full_metaqueries() {
    let config = PackingConfig {
        supervision_visibility: SupervisionVisibility::AllButPrompt,
        metaquery_attention: MetaqueryAttention::Full,
        ..config()
    };
    let sample = Sample::edit(
        ImageSize::new(16, 16),
        vec![5],
        ImageSize::new(16, 16),
        vec![7],
    );
    let pack = PackedSequence::pack(&[sample], &config).unwrap();
    // Supervision now also sees the source image (VAE and ViT), never the instruction.
    let rows = [
        "11100000000000000",
        "11100000000000000",
        "11100000000000000",
        "11111100000000000",
        "11111100000000000",
        "11111100000000000",
        "11111110000000000",
        "11111111000000000",
        "11111111100000000",
        "11111111111100000",
        "11111111111100000",
        "11111111111100000",
        "11111100011110000",
        "11111100011111000",
        "11111100011111100",
        "11111100011100011",
        "11111100011100011",
    ];
    assert_mask(&pack, 0, &rows);
    assert_eq!(pack.splits[5].mode, AttnMode::MetaqueryFull);
}

#[test]
fn understanding_sample() {
    let sample = Sample::understanding(ImageSize::new(16, 32), Some(vec![5]), vec![6, 7]);
    let pack = PackedSequence::pack(&[sample], &config()).unwrap();
    // vit 0..4 | question 4..7 | answer 7..11
    assert_mask(
        &pack,
        0,
        &[
            "11110000000",
            "11110000000",
            "11110000000",
            "11110000000",
            "11111000000",
            "11111100000",
            "11111110000",
            "11111111000",
            "11111111100",
            "11111111110",
            "11111111111",
        ],
    );
    assert_eq!(pack.position_ids, [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(pack.vit_indexes, [1, 2]);
    assert_eq!(pack.vit_position_ids, [0, 1]);
    assert!(pack.gen_indexes.is_empty());
    assert_eq!(
        pack.text_ce,
        CeTargets {
            indexes: vec![7, 8, 9],
            labels: vec![6, 7, 91]
        }
    );
}

#[test]
fn cfg_dropped_conditions_keep_bagel_positions() {
    // A dropped text is left out; a dropped image still advances the counter.
    let t2i = Sample::TextToImage {
        prompt: vec![5],
        target: ImageSize::new(16, 16),
        supervision: Supervision {
            caption: Some(vec![7]),
            metaqueries: false,
        },
        drop_prompt: true,
    };
    let edit = Sample::Edit {
        source: ImageSize::new(16, 16),
        source_vit: ImageSize::new(14, 14),
        instruction: vec![5],
        target: ImageSize::new(16, 16),
        supervision: Supervision::none(),
        dropout: EditDropout {
            source_vit: true,
            ..EditDropout::default()
        },
    };
    let pack = PackedSequence::pack(&[t2i, edit], &config()).unwrap();
    assert_eq!(pack.samples[0].len, 6);
    assert_eq!(pack.position_ids[..6], [0, 0, 0, 0, 1, 2]);
    // edit: vae src (pos 0), vit dropped (counter -> 2), instruction 2..5, noised at 5
    assert_eq!(pack.position_ids[6..], [0, 0, 0, 2, 3, 4, 5, 5, 5]);
    assert_mask(
        &pack,
        0,
        &[
            "111000", //
            "111000", //
            "111000", //
            "111100", //
            "111110", //
            "111111", //
        ],
    );
    assert_eq!(pack.samples[1].start, 6);
    assert_eq!(pack.caption_ce.indexes, [3, 4]);
}

#[test]
fn samples_restart_positions_and_offset_indexes() {
    let a = Sample::plain_text_to_image(vec![5], ImageSize::new(16, 16));
    let b = Sample::understanding(ImageSize::new(16, 16), None, vec![6]);
    let pack = PackedSequence::pack(&[a, b], &config()).unwrap();
    assert_eq!(pack.len, 6 + 6);
    assert_eq!(pack.position_ids, [0, 1, 2, 3, 3, 3, 0, 0, 0, 1, 2, 3]);
    assert_eq!(pack.vit_indexes, [7]);
    assert_eq!(pack.text_ce.indexes, [9, 10]);
    assert_eq!(pack.samples[1].mask.len(), 6);
}

#[test]
fn mixed_resolutions_keep_their_own_grids() {
    // A 32x48 (h x w) target: 2 x 3 latent tokens; an edit whose source has a 16x32 VAE copy
    // (1 x 2) and a 32x16 ViT copy (2 x 1), and a 48x16 target (3 x 1).
    let t2i = Sample::text_to_image(vec![5], ImageSize::new(32, 48), vec![7]);
    let edit = Sample::Edit {
        source: ImageSize::new(16, 32),
        source_vit: ImageSize::new(32, 16),
        instruction: vec![5],
        target: ImageSize::new(48, 16),
        supervision: Supervision::joint(vec![7]),
        dropout: EditDropout::default(),
    };
    let config = config();
    assert_eq!(t2i.token_count(&config), Ok(3 + 8 + 3 + 2));
    assert_eq!(edit.token_count(&config), Ok(4 + 4 + 3 + 5 + 3 + 2));
    let pack = PackedSequence::pack(&[t2i, edit], &config).unwrap();
    // Latent ids are row * max_latent_size (64) + col, per image.
    assert_eq!(
        pack.latent_position_ids,
        [0, 1, 2, 64, 65, 66, 0, 1, 0, 64, 128]
    );
    // ViT ids are row * 70 + col.
    assert_eq!(pack.vit_position_ids, [0, 70]);
    let grids: Vec<_> = pack.images.iter().map(|i| (i.rows, i.cols)).collect();
    assert_eq!(grids, [(2, 3), (1, 2), (2, 1), (3, 1)]);
    let c = pack.composition();
    assert_eq!((c.text, c.image, c.caption, c.metaqueries), (6, 21, 6, 4));
    assert_eq!(c.total(), pack.len);
}
