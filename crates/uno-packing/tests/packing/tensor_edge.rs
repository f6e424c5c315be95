//! The tensor edge: masks and index lists reach Burn unchanged, on every backend.

use burn::tensor::backend::Backend;
use uno_packing::{ImageSize, PackedSequence, PackingConfig, Sample, index_tensor};

fn mask_and_indexes_round_trip<B: Backend>() {
    let device = Default::default();
    let config = PackingConfig {
        num_metaqueries: 3,
        ..PackingConfig::default()
    };
    let sample = Sample::text_to_image(vec![1, 2], ImageSize::new(32, 16), vec![3, 4]);
    let pack = PackedSequence::pack(&[sample], &config).unwrap();
    let mask = pack.samples[0].mask.to_tensor::<B>(&device);
    assert_eq!(mask.dims(), [1, 1, pack.len, pack.len]);
    // Read back through Int: backends store bools differently (wgpu as u32).
    let values: Vec<i64> = mask.int().into_data().convert::<i64>().to_vec().unwrap();
    let expected: Vec<i64> = pack.dense_mask(0).iter().map(|&m| i64::from(m)).collect();
    assert_eq!(values, expected);
    assert!(expected.contains(&0) && expected.contains(&1));
    let idx = index_tensor::<B>(&pack.noised_indexes, &device);
    let got: Vec<i64> = idx.into_data().convert::<i64>().to_vec::<i64>().unwrap();
    assert_eq!(got, [5, 6]);
}

uno_testing::backend_tests!(mask_and_indexes_round_trip);
