//! Flow matching: shift formula, timestep distribution, noising, velocity target, loss.

use crate::common;

use burn::tensor::{Tensor, TensorData, backend::AutodiffBackend, backend::Backend};
use common::{central_fd, pseudo_random, scalar, t2};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use uno_objectives::flow::{normal_cdf, sigmoid, unshift_timestep};
use uno_objectives::{
    FlowMatchingConfig, FlowNoise, FlowSlot, ObjectiveError, UNO_TIMESTEP_SHIFT,
    flow_matching_loss, sample_timesteps, shift_timestep, shifted_timestep_cdf,
};
use uno_testing::{assert_close, assert_tensor_close, to_vec};

fn noised(image: usize) -> FlowSlot {
    FlowSlot::Noised { image }
}

// ---------------------------------------------------------------- host-only (no tensors)

#[test]
fn shift_at_known_points() {
    // s = 4 (UNO): 0 -> 0, 1 -> 1, 0.5 -> 4*0.5 / (1 + 3*0.5) = 2 / 2.5 = 0.8.
    assert_eq!(shift_timestep(0.0, 4.0), 0.0);
    assert_eq!(shift_timestep(1.0, 4.0), 1.0);
    assert!((shift_timestep(0.5, 4.0) - 0.8).abs() < 1e-15);
    // s = 3, t = 0.25: 0.75 / 1.5 = 0.5.
    assert!((shift_timestep(0.25, 3.0) - 0.5).abs() < 1e-15);
    // s = 1 is the identity.
    for t in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
        assert_eq!(shift_timestep(t, 1.0), t);
    }
    // unshift inverts shift.
    for t in [0.05, 0.3, 0.5, 0.77, 0.99] {
        assert!((unshift_timestep(shift_timestep(t, 4.0), 4.0) - t).abs() < 1e-12);
    }
    assert_eq!(UNO_TIMESTEP_SHIFT, 4.0);
    assert_eq!(FlowMatchingConfig::new().timestep_shift, 4.0);
}

#[test]
fn normal_cdf_known_values() {
    assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
    assert!((normal_cdf(1.959_963_985) - 0.975).abs() < 1e-7);
    assert!((normal_cdf(-1.0) - 0.158_655_254).abs() < 1e-7);
    // Analytic CDF: at x = shift(0.5) = 0.8 the logit is 0, so P = 1/2.
    assert!((shifted_timestep_cdf(0.8, 4.0) - 0.5).abs() < 1e-7);
    assert_eq!(shifted_timestep_cdf(0.0, 4.0), 0.0);
    assert_eq!(shifted_timestep_cdf(1.0, 4.0), 1.0);
}

/// Kolmogorov-Smirnov statistic of `samples` against `cdf`.
fn ks_statistic(mut samples: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = samples.len() as f64;
    samples
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).max((i + 1) as f64 / n - f)
        })
        .fold(0.0, f64::max)
}

#[test]
fn shifted_timesteps_match_analytic_cdf_ks() {
    const N: usize = 10_000;
    // 1% critical value of the one-sample KS test for large n: 1.628 / sqrt(n).
    let critical = 1.628 / (N as f64).sqrt();
    for shift in [1.0, 3.0, 4.0] {
        let mut rng = StdRng::seed_from_u64(20_240_601);
        let samples = sample_timesteps(N, shift, &mut rng).unwrap();
        assert!(samples.iter().all(|&t| t > 0.0 && t < 1.0));
        let d = ks_statistic(samples.clone(), |x| shifted_timestep_cdf(x, shift));
        assert!(d < critical, "shift {shift}: KS {d} >= critical {critical}");
        // The check has power: the same samples against a wrong shift are rejected.
        let wrong = if shift == 1.0 { 4.0 } else { 1.0 };
        let d_wrong = ks_statistic(samples, |x| shifted_timestep_cdf(x, wrong));
        assert!(
            d_wrong > critical,
            "shift {shift} vs {wrong}: KS {d_wrong} should exceed {critical}"
        );
    }
}

#[test]
fn flow_noise_sampling_structure_and_reproducibility() {
    // Tokens: slot 1, clean, slot 0, slot 1.
    let slots = [noised(1), FlowSlot::Clean, noised(0), noised(1)];
    let a = FlowNoise::sample(&slots, 3, 4.0, 7).unwrap();
    let b = FlowNoise::sample(&slots, 3, 4.0, 7).unwrap();
    let c = FlowNoise::sample(&slots, 3, 4.0, 8).unwrap();
    assert_eq!(a, b, "same seed must give identical noise and timesteps");
    assert_ne!(a.noise, c.noise, "another seed must give other noise");
    assert_eq!(a.image_timesteps.len(), 2);
    assert_eq!(a.noised_rows, vec![0, 2, 3]);
    // Tokens of one image share its timestep; the clean token has t = 0 and zero noise.
    assert_eq!(a.token_timesteps[0], a.image_timesteps[1] as f32);
    assert_eq!(a.token_timesteps[3], a.image_timesteps[1] as f32);
    assert_eq!(a.token_timesteps[2], a.image_timesteps[0] as f32);
    assert_eq!(a.token_timesteps[1], 0.0);
    assert_eq!(&a.noise[3..6], &[0.0, 0.0, 0.0]);
    assert!(a.noise[0..3].iter().chain(&a.noise[6..]).all(|&v| v != 0.0));
    // Documented draw order: slot logits first, then the noised rows' channels.
    let mut rng = StdRng::seed_from_u64(7);
    let n0: f64 = rng.sample(StandardNormal);
    let n1: f64 = rng.sample(StandardNormal);
    assert_eq!(
        a.image_timesteps,
        vec![
            shift_timestep(sigmoid(n0), 4.0),
            shift_timestep(sigmoid(n1), 4.0)
        ]
    );
    let first_noise: f32 = rng.sample(StandardNormal);
    assert_eq!(a.noise[0], first_noise);
    // Bad shift.
    assert!(matches!(
        FlowNoise::sample(&slots, 3, 0.0, 7),
        Err(ObjectiveError::InvalidValue {
            name: "timestep_shift",
            ..
        })
    ));
}

// ---------------------------------------------------------------- per backend

fn flow_loss_hand_values<B: Backend>() {
    // Token 0: ((1-0)^2 + (2-0)^2) / 2 = 2.5; token 1: ((3-1)^2 + (4-1)^2) / 2 = 6.5.
    // Mean over tokens 4.5 (tools/objectives_reference.py: sum 9, mean 4.5, count 2).
    let pred = t2::<B>(&[1.0, 2.0, 3.0, 4.0], 2, 2);
    let target = t2::<B>(&[0.0, 0.0, 1.0, 1.0], 2, 2);
    let term = flow_matching_loss(pred, target).unwrap();
    assert_eq!(term.count, 2);
    assert_close(&[scalar(term.mean) as f32], &[4.5], 1e-6, 1e-6);
    assert_close(&[scalar(term.sum) as f32], &[9.0], 1e-6, 1e-6);
}

fn flow_noise_apply_hand_values<B: Backend>() {
    // x0 rows [1,2], [3,4] (clean), [5,6]; t = 0.25, 0, 0.5; eps rows [1,-1], 0, [2,2].
    // x_t = (1-t) x0 + t eps: [0.75+0.25, 1.5-0.25] = [1, 1.25]; [3, 4]; [3.5, 4].
    // v = eps - x0 on noised rows: [0, -3], [-3, -4].
    let noise = FlowNoise {
        image_timesteps: vec![0.25, 0.5],
        token_timesteps: vec![0.25, 0.0, 0.5],
        noise: vec![1.0, -1.0, 0.0, 0.0, 2.0, 2.0],
        noised_rows: vec![0, 2],
        channels: 2,
    };
    let x0 = t2::<B>(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, 2);
    let out = noise.apply(x0).unwrap();
    assert_tensor_close(out.x_t, [3, 2], &[1.0, 1.25, 3.0, 4.0, 3.5, 4.0], 1e-6, 0.0);
    assert_tensor_close(out.token_timesteps, [3], &[0.25, 0.0, 0.5], 0.0, 0.0);
    assert_tensor_close(
        out.velocity_target.unwrap(),
        [2, 2],
        &[0.0, -3.0, -3.0, -4.0],
        1e-6,
        0.0,
    );
    assert_eq!(out.noised_rows, vec![0, 2]);
}

fn flow_noise_matches_host_formula<B: Backend>() {
    // Sampled noise uploaded and applied: compare with the host computation in f32, so every
    // backend is pinned to the same host stream (cross-backend identity, see also
    // `noise_identical_on_flex_and_ndarray`).
    let slots = [noised(0), noised(0), FlowSlot::Clean, noised(1), noised(1)];
    let c = 4;
    let noise = FlowNoise::sample(&slots, c, 4.0, 1234).unwrap();
    let x0_host = pseudo_random(slots.len() * c, 3);
    let out = noise.apply(t2::<B>(&x0_host, slots.len(), c)).unwrap();
    let mut expected_xt = Vec::new();
    let mut expected_v = Vec::new();
    for (row, slot) in slots.iter().enumerate() {
        let t = noise.token_timesteps[row];
        for ch in 0..c {
            let x = x0_host[row * c + ch];
            let e = noise.noise[row * c + ch];
            expected_xt.push((1.0 - t) * x + t * e);
            if *slot != FlowSlot::Clean {
                expected_v.push(e - x);
            }
        }
    }
    assert_tensor_close(out.x_t, [5, c], &expected_xt, 1e-6, 1e-6);
    assert_tensor_close(
        out.velocity_target.unwrap(),
        [4, c],
        &expected_v,
        1e-6,
        1e-6,
    );
    // Clean row is untouched.
    assert_eq!(noise.token_timesteps[2], 0.0);
}

fn clean_only_pack_has_no_target<B: Backend>() {
    let noise = FlowNoise::sample(&[FlowSlot::Clean, FlowSlot::Clean], 3, 4.0, 1).unwrap();
    assert!(noise.image_timesteps.is_empty());
    let x0 = pseudo_random(6, 9);
    let out = noise.apply(t2::<B>(&x0, 2, 3)).unwrap();
    assert!(out.velocity_target.is_none());
    assert!(out.noised_rows.is_empty());
    assert_tensor_close(out.x_t, [2, 3], &x0, 0.0, 0.0);
    // Wrong x0 shape.
    let err = noise.apply(t2::<B>(&x0, 3, 2)).unwrap_err();
    assert!(
        matches!(&err, ObjectiveError::Shape { tensor: "flow.x0", found, .. } if found == &vec![3, 2]),
        "{err}"
    );
    // A hand-made draw whose fields disagree is an error, not a panic.
    let short = FlowNoise {
        noise: vec![0.0; 5],
        ..noise.clone()
    };
    let err = short.apply(t2::<B>(&x0, 2, 3)).unwrap_err();
    assert!(
        matches!(&err, ObjectiveError::Shape { tensor: "flow.noise", found, .. } if found == &vec![5]),
        "{err}"
    );
    let stray = FlowNoise {
        noised_rows: vec![2],
        ..noise
    };
    let err = stray.apply(t2::<B>(&x0, 2, 3)).unwrap_err();
    assert!(
        matches!(&err, ObjectiveError::Shape { tensor: "flow.noised_rows", found, .. } if found == &vec![2]),
        "{err}"
    );
}

fn straight_line_ode_is_exact<B: Backend>() {
    // dx/dt = v = eps - x0 is constant, so Euler from t = 0 to 1 is exact at any step count:
    // x0 + sum v dt = eps. And x_t lies on that line: (x_t2 - x_t1) / (t2 - t1) = v.
    let slots = vec![noised(0); 4];
    let c = 3;
    let mut noise = FlowNoise::sample(&slots, c, 4.0, 99).unwrap();
    let x0_host = pseudo_random(4 * c, 5);
    let x0 = t2::<B>(&x0_host, 4, c);
    let v = noise.apply(x0.clone()).unwrap().velocity_target.unwrap();
    let steps = 10;
    let mut x = x0.clone();
    for _ in 0..steps {
        x = x + v.clone().mul_scalar(1.0 / steps as f64);
    }
    assert_tensor_close(x, [4, c], &noise.noise, 1e-5, 1e-5);
    // Finite difference of the noising path along t equals the target velocity.
    let (t1, t2v) = (0.3f32, 0.7f32);
    noise.token_timesteps = vec![t1; 4];
    let x1 = noise.apply(x0.clone()).unwrap().x_t;
    noise.token_timesteps = vec![t2v; 4];
    let x2 = noise.apply(x0).unwrap().x_t;
    let slope = (x2 - x1).div_scalar((t2v - t1) as f64);
    assert_tensor_close(slope, [4, c], &to_vec(v), 1e-5, 1e-5);
}

fn flow_errors_and_empty<B: Backend>() {
    let err = flow_matching_loss(t2::<B>(&[0.0; 6], 2, 3), t2::<B>(&[0.0; 8], 2, 4)).unwrap_err();
    assert!(
        matches!(&err, ObjectiveError::Shape { tensor: "flow.target", found, .. } if found == &vec![2, 4]),
        "{err}"
    );
    assert!(
        err.to_string().contains("[2, 3]"),
        "message names the expected shape: {err}"
    );

    let mut bad = vec![0.5; 6];
    bad[4] = f32::NAN;
    let err = flow_matching_loss(t2::<B>(&bad, 2, 3), t2::<B>(&[0.0; 6], 2, 3)).unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::NonFinite {
            tensor: "flow.pred",
            loss: "flow"
        }
    );
    bad[4] = f32::INFINITY;
    let err = flow_matching_loss(t2::<B>(&[0.0; 6], 2, 3), t2::<B>(&bad, 2, 3)).unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::NonFinite {
            tensor: "flow.target",
            loss: "flow"
        }
    );

    // No noised tokens: zero loss, explicit zero count, not NaN.
    let device = Default::default();
    let empty = Tensor::<B, 2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 3]), &device);
    let term = flow_matching_loss(empty.clone(), empty).unwrap();
    assert_eq!(term.count, 0);
    assert_eq!(scalar(term.mean), 0.0);
    assert_eq!(scalar(term.sum), 0.0);
}

fn flow_grad_fd<B: AutodiffBackend>() {
    let (n, c) = (3, 4);
    let pred_host = pseudo_random(n * c, 11);
    let target_host = pseudo_random(n * c, 12);
    let pred = t2::<B>(&pred_host, n, c).require_grad();
    let term = flow_matching_loss(pred.clone(), t2::<B>(&target_host, n, c)).unwrap();
    let grads = term.mean.backward();
    let grad = to_vec(pred.grad(&grads).expect("pred has a gradient"));
    let f = |x: &[f32]| {
        scalar(
            flow_matching_loss(t2::<B>(x, n, c), t2::<B>(&target_host, n, c))
                .unwrap()
                .mean,
        )
    };
    let fd = central_fd(f, &pred_host, 1e-2);
    assert_close(&grad, &fd, 2e-4, 1e-3);
    // Analytic: 2 (pred - target) / (N C).
    let analytic: Vec<f32> = pred_host
        .iter()
        .zip(&target_host)
        .map(|(p, t)| 2.0 * (p - t) / (n * c) as f32)
        .collect();
    assert_close(&grad, &analytic, 1e-6, 1e-5);
}

/// `flow_grad_fd` on `Autodiff<B>` (`backend_tests!` instantiates per backend).
fn flow_grad_matches_finite_differences<B: Backend>() {
    flow_grad_fd::<burn::backend::Autodiff<B>>();
}

uno_testing::backend_tests!(
    flow_loss_hand_values,
    flow_noise_apply_hand_values,
    flow_noise_matches_host_formula,
    clean_only_pack_has_no_target,
    straight_line_ode_is_exact,
    flow_errors_and_empty,
    flow_grad_matches_finite_differences,
);

/// The same seed gives bit-identical noise tensors and x_t on both CPU backends.
#[cfg(feature = "ndarray")]
#[test]
fn noise_identical_on_flex_and_ndarray() {
    use burn::backend::{Flex, NdArray};
    let slots = [noised(0), FlowSlot::Clean, noised(1), noised(1), noised(0)];
    let c = 5;
    let x0 = pseudo_random(slots.len() * c, 77);
    let run = |seed: u64| -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let noise = FlowNoise::sample(&slots, c, 4.0, seed).unwrap();
        let a = noise.apply(t2::<Flex>(&x0, slots.len(), c)).unwrap();
        let b = noise.apply(t2::<NdArray>(&x0, slots.len(), c)).unwrap();
        let (ta, tb) = (to_vec(a.token_timesteps), to_vec(b.token_timesteps));
        assert_eq!(ta, tb, "timesteps differ between backends");
        let (va, vb) = (
            to_vec(a.velocity_target.unwrap()),
            to_vec(b.velocity_target.unwrap()),
        );
        assert_eq!(va, vb, "velocity targets differ between backends");
        let (xa, xb) = (to_vec(a.x_t), to_vec(b.x_t));
        assert_close(&xa, &xb, 1e-7, 1e-7);
        (ta, va, xa)
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).1, run(6).1);
}
