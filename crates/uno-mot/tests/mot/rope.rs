//! RoPE tables at BAGEL's position ids (up to ~4k), in f32 and in bf16, against the angles
//! computed in f64 on the host.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use uno_mot::rope::RopeTables;
use uno_testing::{assert_close, to_vec};

const HEAD_DIM: usize = 16;
const THETA: f64 = 1e6;

/// Ids as a 3.9k-token BAGEL sample has them: text, an image sharing one id, large ids.
fn ids() -> Vec<i64> {
    let mut ids: Vec<i64> = (0..40).collect();
    ids.extend([171; 8]);
    ids.extend((2040..2060).chain(3990..4010));
    ids
}

/// `(cos, sin)` of `p * theta^(-2i/d)`, duplicated over the halves, in f64.
fn reference(ids: &[i64]) -> (Vec<f32>, Vec<f32>) {
    let half = HEAD_DIM / 2;
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for &p in ids {
        for i in 0..HEAD_DIM {
            let inv = THETA.powf(-2.0 * (i % half) as f64 / HEAD_DIM as f64);
            let angle = p as f64 * inv;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

fn tables<B: Backend>(ids: &[i64], device: &B::Device) -> RopeTables<B> {
    let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), device);
    RopeTables::new(ids, HEAD_DIM, THETA)
}

/// f32: the tables agree with f64 to f32 rounding of the angle (`4010 * 2^-24 ~ 2.4e-4`).
fn f32_tables_match_f64<B: Backend>() {
    let ids = ids();
    let rope = tables::<B>(&ids, &Default::default());
    let (cos, sin) = reference(&ids);
    assert_close(&to_vec(rope.cos), &cos, 5e-4, 0.0);
    assert_close(&to_vec(rope.sin), &sin, 5e-4, 0.0);
}

/// bf16: the angles are still computed in f32, so the only error is the final rounding of
/// values in [-1, 1] to bf16 (at most 2^-9 ~ 2e-3). Built from bf16 ids, `3999` would be
/// `4000` and the first frequency's cosine off by up to 2.
fn bf16_tables_match_f64<B: Backend>(test: &str) {
    let Some(device) = uno_testing::bf16_child::<B>(test) else {
        return;
    };
    let ids = ids();
    let rope = tables::<B>(&ids, &device);
    assert_eq!(rope.cos.dtype(), burn::tensor::DType::BF16);
    let (cos, sin) = reference(&ids);
    assert_close(&to_vec(rope.cos), &cos, 2.5e-3, 0.0);
    assert_close(&to_vec(rope.sin), &sin, 2.5e-3, 0.0);
}

#[test]
fn bf16_flex() {
    bf16_tables_match_f64::<burn::backend::Flex>("rope::bf16_flex");
}

#[cfg(feature = "cuda")]
#[test]
fn bf16_cuda() {
    bf16_tables_match_f64::<burn::backend::Cuda>("rope::bf16_cuda");
}

/// The rotation itself, against `x * cos(a) + rotate_half(x) * sin(a)` per head computed in
/// f64 on the host, for 3 query heads and 1 KV head (the widened tables of
/// `RopeTables::for_heads` must line up with every head) and through `RopeTables::apply`.
/// Ids below 200 keep the f32 angle within `200 * 2^-24` of the f64 one.
fn rotation_matches_f64<B: Backend>() {
    let device = Default::default();
    let ids: Vec<i64> = (0..24).map(|i| (i * 37 % 199) as i64).collect();
    let rope = tables::<B>(&ids, &device);
    let half = HEAD_DIM / 2;
    for heads in [3usize, 1] {
        let n = ids.len();
        let x: Vec<f32> = (0..n * heads * HEAD_DIM)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let mut expected = vec![0f32; x.len()];
        for (t, &p) in ids.iter().enumerate() {
            for h in 0..heads {
                let base = (t * heads + h) * HEAD_DIM;
                for i in 0..half {
                    let angle = p as f64 * THETA.powf(-2.0 * i as f64 / HEAD_DIM as f64);
                    let (s, c) = angle.sin_cos();
                    let (x1, x2) = (x[base + i] as f64, x[base + half + i] as f64);
                    expected[base + i] = (x1 * c - x2 * s) as f32;
                    expected[base + half + i] = (x2 * c + x1 * s) as f32;
                }
            }
        }
        let xt = Tensor::<B, 2>::from_data(TensorData::new(x, [n, heads * HEAD_DIM]), &device);
        assert_close(
            &to_vec(rope.for_heads(heads).apply(xt.clone())),
            &expected,
            3e-5,
            0.0,
        );
        assert_close(&to_vec(rope.apply(xt, heads)), &expected, 3e-5, 0.0);
    }
}

uno_testing::backend_tests!(f32_tables_match_f64, rotation_matches_f64);
