//! Bad input gives a typed error naming the sample and split, and never a panic; a bad
//! sample offered to the greedy packer leaves the open pack intact.

use uno_packing::{
    GreedyPacker, ImageSize, PackBudget, PackError, PackedSequence, PackingConfig, Sample,
    SplitKind, SplitSpec,
};

fn ok_sample() -> Sample {
    Sample::text_to_image(vec![1, 2], ImageSize::new(32, 32), vec![3])
}

fn pack_err(samples: &[Sample], config: &PackingConfig) -> PackError {
    PackedSequence::pack(samples, config).unwrap_err()
}

#[test]
fn empty_text_split() {
    let bad = Sample::text_to_image(vec![], ImageSize::new(32, 32), vec![3]);
    let err = pack_err(&[ok_sample(), bad], &PackingConfig::default());
    assert_eq!(
        err,
        PackError::EmptySplit {
            sample: 1,
            split: 0,
            kind: SplitKind::Text
        }
    );
    assert_eq!(err.to_string(), "sample 1, split 0 (Text): has no tokens");
}

#[test]
fn empty_caption_and_empty_sample() {
    let bad = Sample::text_to_image(vec![1], ImageSize::new(32, 32), vec![]);
    assert!(matches!(
        pack_err(&[bad], &PackingConfig::default()),
        PackError::EmptySplit {
            sample: 0,
            split: 2,
            kind: SplitKind::Caption
        }
    ));
    let nothing = Sample::Custom(vec![SplitSpec::DroppedImage]);
    assert_eq!(
        pack_err(&[nothing], &PackingConfig::default()),
        PackError::EmptySample { sample: 0 }
    );
}

#[test]
fn caption_without_noised_target() {
    let bad = Sample::Custom(vec![
        SplitSpec::Text {
            tokens: vec![1],
            loss: false,
        },
        SplitSpec::VaeImage(ImageSize::new(32, 32)),
        SplitSpec::Caption(vec![3]),
    ]);
    assert_eq!(
        pack_err(&[bad], &PackingConfig::default()),
        PackError::SupervisionWithoutTarget {
            sample: 0,
            split: 2,
            kind: SplitKind::Caption
        }
    );
    let mq_first = Sample::Custom(vec![SplitSpec::Metaqueries]);
    assert!(matches!(
        pack_err(&[mq_first], &PackingConfig::default()),
        PackError::SupervisionWithoutTarget {
            kind: SplitKind::Metaqueries,
            ..
        }
    ));
}

#[test]
fn zero_metaqueries() {
    let config = PackingConfig {
        num_metaqueries: 0,
        ..PackingConfig::default()
    };
    assert_eq!(
        pack_err(&[ok_sample()], &config),
        PackError::ZeroMetaqueries {
            sample: 0,
            split: 3
        }
    );
    // Without a metaquery split, zero metaqueries is fine.
    let plain = Sample::plain_text_to_image(vec![1], ImageSize::new(32, 32));
    assert!(PackedSequence::pack(&[plain], &config).is_ok());
}

#[test]
fn token_out_of_vocab() {
    let bad = Sample::text_to_image(vec![1, 152_064], ImageSize::new(32, 32), vec![3]);
    let err = pack_err(&[bad], &PackingConfig::default());
    assert_eq!(
        err,
        PackError::TokenOutOfVocab {
            sample: 0,
            split: 0,
            kind: SplitKind::Text,
            position: 1,
            id: 152_064,
            vocab_size: 152_064
        }
    );
    assert!(err.to_string().contains("token 1 has id 152064"));
}

#[test]
fn image_sizes() {
    let not_div = Sample::plain_text_to_image(vec![1], ImageSize::new(32, 40));
    assert_eq!(
        pack_err(&[not_div], &PackingConfig::default()),
        PackError::ImageNotDivisible {
            sample: 0,
            split: 1,
            kind: SplitKind::NoisedImage,
            height: 32,
            width: 40,
            multiple: 16
        }
    );
    let zero = Sample::understanding(ImageSize::new(0, 14), None, vec![1]);
    assert!(matches!(
        pack_err(&[zero], &PackingConfig::default()),
        PackError::ImageNotDivisible {
            kind: SplitKind::VitImage,
            multiple: 14,
            ..
        }
    ));
    // 65 latent tokens per side: past the 64x64 latent position table.
    let big = Sample::plain_text_to_image(vec![1], ImageSize::new(16 * 65, 16));
    assert!(matches!(
        pack_err(&[big], &PackingConfig::default()),
        PackError::ImageTooLarge {
            rows: 65,
            cols: 1,
            max: 64,
            ..
        }
    ));
    // 71 patches: past the 70x70 ViT table.
    let big_vit = Sample::understanding(ImageSize::new(14, 14 * 71), None, vec![1]);
    assert!(matches!(
        pack_err(&[big_vit], &PackingConfig::default()),
        PackError::ImageTooLarge {
            cols: 71,
            max: 70,
            ..
        }
    ));
}

#[test]
fn sample_too_long() {
    let config = PackingConfig {
        max_sample_tokens: 20,
        ..PackingConfig::default()
    };
    // 2+2 prompt, 4+2 image, 1+2 caption, 256 metaqueries
    assert_eq!(
        pack_err(&[ok_sample()], &config),
        PackError::SampleTooLong {
            sample: 0,
            tokens: 269,
            max: 20
        }
    );
}

#[test]
fn bad_config() {
    let config = PackingConfig {
        vocab_size: 100,
        ..PackingConfig::default()
    };
    let err = pack_err(&[ok_sample()], &config);
    assert!(matches!(err, PackError::Config(_)));
    assert!(err.to_string().contains("im_start = 151644"));
    let budget = PackBudget {
        expected_tokens: 10,
        max_tokens: 5,
    };
    assert!(GreedyPacker::new(PackingConfig::default(), budget).is_err());
}

#[test]
fn greedy_packer_survives_bad_samples() {
    let config = PackingConfig {
        num_metaqueries: 4,
        ..PackingConfig::default()
    };
    // ok_sample: 4 + 6 + 3 + 4 = 17 tokens
    let budget = PackBudget {
        expected_tokens: 30,
        max_tokens: 40,
    };
    let mut packer = GreedyPacker::new(config, budget).unwrap();
    assert!(packer.push(&ok_sample()).unwrap().is_none());
    let bad = Sample::text_to_image(vec![], ImageSize::new(32, 32), vec![3]);
    assert_eq!(
        packer.push(&bad).unwrap_err(),
        PackError::EmptySplit {
            sample: 1,
            split: 0,
            kind: SplitKind::Text
        }
    );
    let huge = Sample::plain_text_to_image(vec![1; 50], ImageSize::new(32, 32));
    assert!(matches!(
        packer.push(&huge).unwrap_err(),
        PackError::SampleTooLong {
            sample: 2,
            max: 40,
            ..
        }
    ));
    assert!(packer.push(&ok_sample()).unwrap().is_none()); // 34 tokens
    let first = packer
        .push(&ok_sample())
        .unwrap()
        .expect("34 >= 30 closes the pack");
    assert_eq!((first.num_samples(), first.len), (2, 34));
    let rest = packer.finish().unwrap();
    assert_eq!((rest.num_samples(), rest.len), (1, 17));
}

#[test]
fn greedy_packer_overflow_opens_next_pack() {
    let config = PackingConfig {
        num_metaqueries: 4,
        ..PackingConfig::default()
    };
    let budget = PackBudget {
        expected_tokens: 30,
        max_tokens: 33,
    };
    let mut packer = GreedyPacker::new(config, budget).unwrap();
    assert!(packer.push(&ok_sample()).unwrap().is_none());
    // 17 + 17 > 33: the first pack closes below its expected budget.
    let first = packer.push(&ok_sample()).unwrap().unwrap();
    assert_eq!(first.len, 17);
    assert_eq!(packer.finish().unwrap().len, 17);
}
