//! Timestep embedder, 2-D sin-cos tables and the generation-input sum, against hand values
//! and `tools/vision_reference.py` (`tests/data/vision_embed.safetensors`).

use crate::fixture;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use fixture::{CoreFixture, Fixture};
use uno_core::embed::{
    GenerationEmbeddingsConfig, PositionEmbeddingConfig, TimestepEmbedderConfig, VisionError,
    sincos_2d_table, timestep_sinusoid,
};
use uno_testing::{assert_close, assert_tensor_close, to_vec};

const TOL: f32 = 1e-4;

fn t1<B: Backend>(v: &[f32], device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

/// dim 8, grid 3: q = 2, omega = [1, 1/100]; row r*3 + c is
/// [sin c, sin c/100, cos c, cos c/100, sin r, sin r/100, cos r, cos r/100].
#[test]
fn sincos_table_by_hand() {
    let table = sincos_2d_table(8, 3).unwrap();
    assert_eq!(table.len(), 9 * 8);
    let row = |r: f64, c: f64| -> Vec<f32> {
        [
            c.sin(),
            (c / 100.0).sin(),
            c.cos(),
            (c / 100.0).cos(),
            r.sin(),
            (r / 100.0).sin(),
            r.cos(),
            (r / 100.0).cos(),
        ]
        .map(|v| v as f32)
        .to_vec()
    };
    for r in 0..3 {
        for c in 0..3 {
            let i = r * 3 + c;
            assert_eq!(
                &table[i * 8..(i + 1) * 8],
                &row(r as f64, c as f64)[..],
                "row {i} (r {r}, c {c})"
            );
        }
    }
    // Row 0 is [0, 0, 1, 1, 0, 0, 1, 1].
    assert_eq!(&table[..8], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
}

/// BAGEL-7B's latent table (hidden 3584, 64x64), a few entries by hand: q = 896,
/// row 5 * 64 + 7 (r 5, c 7).
#[test]
fn sincos_table_bagel_size_entries() {
    let (dim, grid) = (3584usize, 64usize);
    let table = sincos_2d_table(dim, grid).unwrap();
    assert_eq!(table.len(), grid * grid * dim);
    let q = dim / 4;
    let row = &table[(5 * 64 + 7) * dim..(5 * 64 + 8) * dim];
    let omega = |k: usize| 1.0 / 10000f64.powf(k as f64 / q as f64);
    assert_eq!(row[0], 7f64.sin() as f32);
    assert_eq!(row[q], 7f64.cos() as f32);
    assert_eq!(row[2 * q], 5f64.sin() as f32);
    assert_eq!(row[3 * q], 5f64.cos() as f32);
    assert_eq!(row[q - 1], (7.0 * omega(q - 1)).sin() as f32);
    assert_eq!(row[3 * q + 100], (5.0 * omega(100)).cos() as f32);
}

#[test]
fn sincos_table_matches_reference() {
    let f = Fixture::load("vision_embed.safetensors");
    for (key, dim, grid) in [
        ("expected.sincos_d16_g5", 16, 5),
        ("expected.sincos_d24_g7", 24, 7),
    ] {
        let (expected, shape) = f.f32(key);
        assert_eq!(shape, vec![grid * grid, dim]);
        assert_close(&sincos_2d_table(dim, grid).unwrap(), &expected, 1e-6, 0.0);
    }
}

#[test]
fn sincos_table_rejects_bad_width() {
    for dim in [0, 6, 10] {
        let err = sincos_2d_table(dim, 4).unwrap_err();
        assert!(
            matches!(err, VisionError::InvalidConfig(ref m) if m.contains(&dim.to_string())),
            "{err}"
        );
    }
}

fn position_embedding_lookup<B: Backend>() {
    let device = Default::default();
    let pe = PositionEmbeddingConfig::new(3, 8)
        .init::<B>(&device)
        .unwrap();
    assert_eq!(pe.rows(), 9);
    assert!(!pe.pos_embed.is_require_grad(), "the table is frozen");
    let table = sincos_2d_table(8, 3).unwrap();
    let ids = [5usize, 0, 8, 5];
    let expected: Vec<f32> = ids
        .iter()
        .flat_map(|&i| table[i * 8..(i + 1) * 8].to_vec())
        .collect();
    assert_tensor_close(pe.forward(&ids).unwrap(), [4, 8], &expected, 1e-7, 0.0);
    let err = pe.forward(&[1, 9]).unwrap_err();
    assert_eq!(
        err,
        VisionError::PositionIdOutOfRange {
            what: "pos_embed",
            id: 9,
            index: 1,
            rows: 9
        }
    );
    assert!(err.to_string().contains("position id 9"), "{err}");
    assert!(
        PositionEmbeddingConfig::new(3, 10)
            .init::<B>(&device)
            .is_err()
    );
}

/// t = 0: [cos 0 .. | sin 0 ..] = [1 x 128 | 0 x 128]. t = 1: element k is cos(f_k), element
/// 128 + k is sin(f_k), f_k = 10000^(-k/128); f_0 = 1, f_64 = 0.01.
fn timestep_sinusoid_by_hand<B: Backend>() {
    let device = Default::default();
    let s = to_vec(timestep_sinusoid(
        t1::<B>(&[0.0, 1.0], &device),
        256,
        10000.0,
    ));
    assert_eq!(s.len(), 512);
    assert!(s[..128].iter().all(|&v| v == 1.0), "t=0 cos half is 1");
    assert!(s[128..256].iter().all(|&v| v == 0.0), "t=0 sin half is 0");
    let t1row = &s[256..];
    let close = |a: f32, b: f64| assert!((a as f64 - b).abs() < 1e-6, "{a} vs {b}");
    close(t1row[0], 1f64.cos());
    close(t1row[128], 1f64.sin());
    close(t1row[64], 0.01f64.cos());
    close(t1row[128 + 64], 0.01f64.sin());
    close(t1row[127], (10000f64.powf(-127.0 / 128.0)).cos());
    // t is used as is, not scaled by 1000: t = 1 differs from t = 0.001.
    let s2 = to_vec(timestep_sinusoid(t1::<B>(&[0.001], &device), 256, 10000.0));
    assert!((s2[128] - 0.001).abs() < 1e-6);
    // Odd width: a zero column at the end.
    let s3 = to_vec(timestep_sinusoid(t1::<B>(&[0.5], &device), 5, 10000.0));
    assert_eq!(s3.len(), 5);
    assert_eq!(s3[4], 0.0);
    close(s3[0], 0.5f64.cos());
    close(s3[1], (0.5 * 10000f64.powf(-0.5)).cos());
    close(s3[2], 0.5f64.sin());
}

fn timestep_embedder_matches_reference<B: Backend>() {
    let device = Default::default();
    let f = Fixture::load("vision_embed.safetensors");
    let t = f.tensor::<B, 1>("input.t", &device);
    let (sin, shape) = f.f32("expected.sinusoid");
    assert_tensor_close(
        timestep_sinusoid(t.clone(), 256, 10000.0),
        [shape[0], shape[1]],
        &sin,
        TOL,
        TOL,
    );
    let te = TimestepEmbedderConfig::new(32).init::<B>(&device);
    let te = f.load_into(te, "time_embedder.", &device);
    let (out, shape) = f.f32("expected.time_out");
    assert_tensor_close(te.forward(t), [shape[0], shape[1]], &out, TOL, TOL);
}

fn generation_input_matches_reference<B: Backend>() {
    let device = Default::default();
    let f = Fixture::load("vision_embed.safetensors");
    let mut g = GenerationEmbeddingsConfig::new(32)
        .with_max_latent_size(4)
        .init::<B>(&device)
        .unwrap();
    g.vae2llm = f.load_into(g.vae2llm, "vae2llm.", &device);
    g.time_embedder = f.load_into(g.time_embedder, "time_embedder.", &device);
    let x_t = f.tensor::<B, 2>("input.gen_x_t", &device);
    let t = f.tensor::<B, 1>("input.gen_t", &device);
    let ids = f.usizes("input.gen_ids");
    let (expected, _) = f.f32("expected.gen_input");
    let out = g.input(x_t.clone(), t.clone(), &ids).unwrap();
    assert_tensor_close(out, [5, 32], &expected, TOL, TOL);

    // llm2vae is zero-initialised (weight and bias).
    let h = Tensor::<B, 2>::ones([3, 32], &device);
    assert_tensor_close(g.output(h), [3, 64], &[0.0; 3 * 64], 0.0, 0.0);

    // Errors name the culprit.
    let err = g.input(x_t.clone(), t.clone(), &ids[..4]).unwrap_err();
    assert!(matches!(err, VisionError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("found 4"), "{err}");
    let err = g
        .input(x_t.clone(), t.clone().narrow(0, 0, 4), &ids)
        .unwrap_err();
    assert!(err.to_string().contains("timesteps"), "{err}");
    let err = g
        .input(x_t.clone(), t.clone(), &[0, 1, 2, 16, 3])
        .unwrap_err();
    assert!(
        matches!(
            err,
            VisionError::PositionIdOutOfRange {
                id: 16,
                index: 3,
                rows: 16,
                ..
            }
        ),
        "{err}"
    );
    let err = g.input(x_t.narrow(1, 0, 60), t, &ids).unwrap_err();
    assert!(err.to_string().contains("expected 64, found 60"), "{err}");
}

uno_testing::backend_tests!(
    position_embedding_lookup,
    timestep_sinusoid_by_hand,
    timestep_embedder_matches_reference,
    generation_input_matches_reference
);
