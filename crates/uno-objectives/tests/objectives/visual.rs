//! Metaquery cosine loss and target pooling.

use crate::common;

use burn::tensor::{Tensor, TensorData, backend::AutodiffBackend, backend::Backend};
use common::{central_fd, pseudo_random, scalar, t2};
use uno_objectives::{
    ObjectiveError, cosine_similarity_rows, metaquery_cosine_loss, metaquery_grid_side,
    pool_target_grid, pool_target_tokens,
};
use uno_testing::{assert_close, assert_tensor_close, to_vec};

fn t3<B: Backend>(values: &[f32], shape: [usize; 3]) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
}

fn visual_hand_values<B: Backend>() {
    // cos([1,0],[2,0]) = 1 -> 0; cos([1,1],[1,0]) = 1/sqrt2 -> 0.29289322;
    // cos([0,2],[0,-1]) = -1 -> 2. Mean 0.76429774 (tools/objectives_reference.py).
    let pred = t2::<B>(&[1.0, 0.0, 1.0, 1.0, 0.0, 2.0], 3, 2);
    let target = t2::<B>(&[2.0, 0.0, 1.0, 0.0, 0.0, -1.0], 3, 2);
    let term = metaquery_cosine_loss(pred, target).unwrap();
    assert_eq!(term.count, 3);
    assert_close(&[scalar(term.mean) as f32], &[0.764_297_7], 1e-6, 1e-6);
    assert_close(&[scalar(term.sum) as f32], &[2.292_893_2], 1e-6, 1e-6);
}

fn visual_scale_invariant_and_parallel<B: Backend>() {
    let (m, d) = (4, 6);
    let p = pseudo_random(m * d, 31);
    let t = pseudo_random(m * d, 32);
    let base = scalar(
        metaquery_cosine_loss(t2::<B>(&p, m, d), t2::<B>(&t, m, d))
            .unwrap()
            .mean,
    );
    assert!(base > 0.1, "random vectors are not parallel: {base}");
    for k in [3.7f32, 1e-3, 250.0] {
        let scaled: Vec<f32> = p.iter().map(|x| x * k).collect();
        let l = scalar(
            metaquery_cosine_loss(t2::<B>(&scaled, m, d), t2::<B>(&t, m, d))
                .unwrap()
                .mean,
        );
        assert!((l - base).abs() < 1e-5, "scale {k}: {l} vs {base}");
    }
    // Parallel (positive multiples, per row different): 0. Anti-parallel: 2.
    let parallel: Vec<f32> = t
        .iter()
        .enumerate()
        .map(|(i, x)| x * (1.0 + (i / d) as f32))
        .collect();
    let l = scalar(
        metaquery_cosine_loss(t2::<B>(&parallel, m, d), t2::<B>(&t, m, d))
            .unwrap()
            .mean,
    );
    assert!(l.abs() < 1e-6, "parallel: {l}");
    let anti: Vec<f32> = t.iter().map(|x| -2.0 * x).collect();
    let l = scalar(
        metaquery_cosine_loss(t2::<B>(&anti, m, d), t2::<B>(&t, m, d))
            .unwrap()
            .mean,
    );
    assert!((l - 2.0).abs() < 1e-6, "anti-parallel: {l}");
    // A zero prediction row: cosine 0 (loss 1), finite.
    let zero_row = [0.0, 0.0, 1.0, 0.0];
    let term = metaquery_cosine_loss(
        t2::<B>(&zero_row, 2, 2),
        t2::<B>(&[1.0, 0.0, 1.0, 0.0], 2, 2),
    )
    .unwrap();
    assert_close(&[scalar(term.mean) as f32], &[0.5], 1e-6, 0.0);
}

fn visual_errors_and_empty<B: Backend>() {
    let err =
        metaquery_cosine_loss(t2::<B>(&[0.0; 6], 3, 2), t2::<B>(&[0.0; 6], 2, 3)).unwrap_err();
    assert!(
        matches!(&err, ObjectiveError::Shape { tensor: "visual.target", found, .. } if found == &vec![2, 3]),
        "{err}"
    );
    let mut bad = vec![1.0; 6];
    bad[1] = f32::NAN;
    let err = metaquery_cosine_loss(t2::<B>(&bad, 3, 2), t2::<B>(&[1.0; 6], 3, 2)).unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::NonFinite {
            tensor: "visual.pred",
            loss: "visual"
        }
    );
    bad[1] = f32::INFINITY;
    let err = metaquery_cosine_loss(t2::<B>(&[1.0; 6], 3, 2), t2::<B>(&bad, 3, 2)).unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::NonFinite {
            tensor: "visual.target",
            loss: "visual"
        }
    );
    let device = Default::default();
    let empty = Tensor::<B, 2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 4]), &device);
    let term = metaquery_cosine_loss(empty.clone(), empty).unwrap();
    assert_eq!(term.count, 0);
    assert_eq!(scalar(term.mean), 0.0);
}

fn pooling_hand_values<B: Backend>() {
    // 4x4 grid, channel 0 = 4y + x, channel 1 = 100 + 4y + x; 2x2 cells average 2x2 blocks:
    // (0,1,4,5) = 2.5, (2,3,6,7) = 4.5, (8,9,12,13) = 10.5, (10,11,14,15) = 12.5.
    let g: Vec<f32> = (0..16).flat_map(|v| [v as f32, 100.0 + v as f32]).collect();
    let pooled = pool_target_grid(t3::<B>(&g, [4, 4, 2]), 4).unwrap();
    assert_tensor_close(
        pooled,
        [4, 2],
        &[2.5, 102.5, 4.5, 104.5, 10.5, 110.5, 12.5, 112.5],
        1e-5,
        0.0,
    );
    // Same features as raster tokens [16, 2].
    let pooled = pool_target_tokens(t2::<B>(&g, 16, 2), [4, 4], 4).unwrap();
    assert_tensor_close(
        pooled,
        [4, 2],
        &[2.5, 102.5, 4.5, 104.5, 10.5, 110.5, 12.5, 112.5],
        1e-5,
        0.0,
    );
    // Non-divisible 5x5 -> 2x2, v = 5y + x: adaptive bins 0..3 and 2..5 on both axes.
    // Cell (0,0) mean 5*1 + 1 = 6; (0,1) 5*1 + 3 = 8; (1,0) 5*3 + 1 = 16; (1,1) 18.
    let g: Vec<f32> = (0..25).map(|v| v as f32).collect();
    let pooled = pool_target_grid(t3::<B>(&g, [5, 5, 1]), 4).unwrap();
    assert_tensor_close(pooled, [4, 1], &[6.0, 8.0, 16.0, 18.0], 1e-5, 0.0);
    // Non-square 3x4 -> 2x2, v = 4y + x: rows 0..2 / 1..3, cols 0..2 / 2..4.
    // (0,0) 4*0.5 + 0.5 = 2.5; (0,1) 2 + 2.5 = 4.5; (1,0) 4*1.5 + 0.5 = 6.5; (1,1) 8.5.
    let g: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let pooled = pool_target_grid(t3::<B>(&g, [3, 4, 1]), 4).unwrap();
    assert_tensor_close(pooled, [4, 1], &[2.5, 4.5, 6.5, 8.5], 1e-5, 0.0);
    // N = 1: global mean (0 + ... + 11) / 12 = 5.5. Same-size grid: identity.
    let pooled = pool_target_grid(t3::<B>(&g, [3, 4, 1]), 1).unwrap();
    assert_tensor_close(pooled, [1, 1], &[5.5], 1e-5, 0.0);
    let g9: Vec<f32> = (0..9).map(|v| v as f32).collect();
    let pooled = pool_target_grid(t3::<B>(&g9, [3, 3, 1]), 9).unwrap();
    assert_tensor_close(pooled, [9, 1], &g9, 1e-6, 0.0);
    // An axis shorter than the metaquery grid repeats its cells. 1x16 -> 2x2, v = x: both
    // output rows are input row 0 (bins 0..1 and 0..1); columns 0..8 and 8..16 average to
    // 3.5 and 11.5.
    let g16: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let pooled = pool_target_grid(t3::<B>(&g16, [1, 16, 1]), 4).unwrap();
    assert_tensor_close(pooled, [4, 1], &[3.5, 11.5, 3.5, 11.5], 1e-5, 0.0);
    // 4x4 -> 5x5, v = 4y + x: bins floor(4i/5)..ceil(4(i+1)/5) = 0..1, 0..2, 1..3, 2..4,
    // 3..4, whose means are 0, 0.5, 1.5, 2.5, 3 on each axis; cell = 4 row + col.
    let axis = [0.0f32, 0.5, 1.5, 2.5, 3.0];
    let want: Vec<f32> = axis
        .iter()
        .flat_map(|r| axis.iter().map(move |c| 4.0 * r + c))
        .collect();
    let pooled = pool_target_grid(t3::<B>(&g16, [4, 4, 1]), 25).unwrap();
    assert_tensor_close(pooled, [25, 1], &want, 1e-5, 0.0);
}

fn pooling_errors<B: Backend>() {
    let g = vec![0.0f32; 16];
    assert_eq!(
        pool_target_grid(t3::<B>(&g, [4, 4, 1]), 3).unwrap_err(),
        ObjectiveError::NotSquare { num_queries: 3 }
    );
    assert!(matches!(
        pool_target_grid(t3::<B>(&g, [4, 4, 1]), 0).unwrap_err(),
        ObjectiveError::InvalidValue {
            name: "num_queries",
            ..
        }
    ));
    assert!(matches!(
        pool_target_tokens(t2::<B>(&g, 16, 1), [3, 5], 4).unwrap_err(),
        ObjectiveError::Shape {
            tensor: "visual.target_features",
            ..
        }
    ));
    assert_eq!(metaquery_grid_side(256).unwrap(), 16);
}

fn visual_grads<B: AutodiffBackend>() {
    let (m, d) = (3, 4);
    let p = pseudo_random(m * d, 41);
    let t = pseudo_random(m * d, 42);
    let pred = t2::<B>(&p, m, d).require_grad();
    let target = t2::<B>(&t, m, d).require_grad();
    let term = metaquery_cosine_loss(pred.clone(), target.clone()).unwrap();
    let grads = term.mean.backward();
    let grad = to_vec(pred.grad(&grads).expect("pred has a gradient"));
    let f = |x: &[f32]| {
        scalar(
            metaquery_cosine_loss(t2::<B>(x, m, d), t2::<B>(&t, m, d))
                .unwrap()
                .mean,
        )
    };
    let fd = central_fd(f, &p, 1e-3);
    assert_close(&grad, &fd, 5e-4, 2e-3);
    assert!(grad.iter().any(|g| g.abs() > 1e-3));
    // Gradient stopped on the target: no gradient, or an all-zero one.
    if let Some(g) = target.grad(&grads) {
        assert!(
            to_vec(g).iter().all(|&v| v == 0.0),
            "target received gradient"
        );
    }
    // Control: the same cosine WITHOUT the loss's detach does give the target a gradient, so
    // the check above can fail.
    let target2 = t2::<B>(&t, m, d).require_grad();
    let cos = cosine_similarity_rows(t2::<B>(&p, m, d), target2.clone());
    let g2 = cos.sum().backward();
    let g = to_vec(
        target2
            .grad(&g2)
            .expect("undetached target gets a gradient"),
    );
    assert!(g.iter().any(|v| v.abs() > 1e-3));
    // A zero prediction row has a finite gradient (clamp before sqrt, no 0 * inf).
    let zp = t2::<B>(&[0.0, 0.0, 1.0, 2.0], 2, 2).require_grad();
    let term = metaquery_cosine_loss(zp.clone(), t2::<B>(&[1.0, 0.0, 1.0, 0.0], 2, 2)).unwrap();
    let g = to_vec(zp.grad(&term.mean.backward()).unwrap());
    assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
}

fn visual_grads_match_fd_and_stop_at_target<B: Backend>() {
    visual_grads::<burn::backend::Autodiff<B>>();
}

uno_testing::backend_tests!(
    visual_hand_values,
    visual_scale_invariant_and_parallel,
    visual_errors_and_empty,
    pooling_hand_values,
    pooling_errors,
    visual_grads_match_fd_and_stop_at_target,
);
