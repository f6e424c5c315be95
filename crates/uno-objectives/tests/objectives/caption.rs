//! Caption next-token cross entropy.

use crate::common;

use burn::tensor::{Tensor, TensorData, backend::AutodiffBackend, backend::Backend};
use common::{central_fd, pseudo_random, scalar, t2};
use uno_objectives::{IGNORE_INDEX, ObjectiveError, caption_cross_entropy, caption_target_count};
use uno_testing::{assert_close, to_vec};

const LN2: f32 = std::f32::consts::LN_2;
const LN5: f32 = 1.609_438;

fn caption_hand_values<B: Backend>() {
    // Row 0: uniform over 3, label 1: CE = ln 3 = 1.0986123.
    // Row 1: logits ln1, ln2, ln5 -> softmax 1/8, 2/8, 5/8; label 2: CE = ln(8/5) = 0.4700036.
    // Row 2: ignored (extreme logits must not matter).
    // Mean over 2 targets: 0.78430796 (tools/objectives_reference.py).
    let logits = t2::<B>(&[0.0, 0.0, 0.0, 0.0, LN2, LN5, 100.0, -100.0, 3.0], 3, 3);
    let term = caption_cross_entropy(logits, &[1, 2, IGNORE_INDEX]).unwrap();
    assert_eq!(term.count, 2);
    assert_eq!(caption_target_count(&[1, 2, IGNORE_INDEX]), 2);
    assert_close(&[scalar(term.mean) as f32], &[0.784_307_96], 1e-6, 1e-6);
    assert_close(&[scalar(term.sum) as f32], &[1.568_615_9], 1e-6, 1e-6);

    // Without ignored rows (the no-select path): row 0 alone = ln 3.
    let logits = t2::<B>(&[0.0, 0.0, 0.0], 1, 3);
    let term = caption_cross_entropy(logits, &[0]).unwrap();
    assert_close(&[scalar(term.mean) as f32], &[1.098_612_3], 1e-6, 1e-6);
}

fn caption_ignored_and_empty<B: Backend>() {
    // Every label ignored: zero, count 0, and a NaN in an ignored row does not matter.
    let logits = t2::<B>(&[f32::NAN, 1.0, 2.0, 3.0], 2, 2);
    let term = caption_cross_entropy(logits, &[IGNORE_INDEX, IGNORE_INDEX]).unwrap();
    assert_eq!(term.count, 0);
    assert_eq!(scalar(term.mean), 0.0);
    // A NaN in an ignored row is skipped while the used row is checked and counted.
    let logits = t2::<B>(&[f32::NAN, 1.0, 0.0, 0.0], 2, 2);
    let term = caption_cross_entropy(logits, &[IGNORE_INDEX, 0]).unwrap();
    assert_eq!(term.count, 1);
    assert_close(&[scalar(term.mean) as f32], &[LN2], 1e-6, 1e-6);
    // No targets at all.
    let device = Default::default();
    let empty = Tensor::<B, 2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 5]), &device);
    let term = caption_cross_entropy(empty, &[]).unwrap();
    assert_eq!(term.count, 0);
    assert_eq!(scalar(term.sum), 0.0);
}

fn caption_errors<B: Backend>() {
    let logits = || t2::<B>(&[0.0; 6], 2, 3);
    let err = caption_cross_entropy(logits(), &[0]).unwrap_err();
    assert!(
        matches!(
            err,
            ObjectiveError::Count {
                expected: 2,
                found: 1,
                ..
            }
        ),
        "{err}"
    );
    let err = caption_cross_entropy(logits(), &[0, 3]).unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::LabelOutOfRange {
            index: 1,
            label: 3,
            vocab: 3
        }
    );
    let mut bad = vec![0.0; 6];
    bad[2] = f32::NAN;
    let err = caption_cross_entropy(t2::<B>(&bad, 2, 3), &[0, 1]).unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::NonFinite {
            tensor: "caption.logits",
            loss: "caption"
        }
    );
    // -inf off the label leaves the CE finite; the probe still reports it.
    bad[2] = f32::NEG_INFINITY;
    let err = caption_cross_entropy(t2::<B>(&bad, 2, 3), &[0, 1]).unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::NonFinite {
            tensor: "caption.logits",
            loss: "caption"
        }
    );
}

fn caption_grad_fd<B: AutodiffBackend>() {
    let (n, v) = (4, 5);
    let labels = [3, IGNORE_INDEX, 0, 4];
    let x = pseudo_random(n * v, 21)
        .iter()
        .map(|a| 2.0 * a)
        .collect::<Vec<f32>>();
    let logits = t2::<B>(&x, n, v).require_grad();
    let term = caption_cross_entropy(logits.clone(), &labels).unwrap();
    let grads = term.mean.backward();
    let grad = to_vec(logits.grad(&grads).expect("logits have a gradient"));
    let f = |p: &[f32]| {
        scalar(
            caption_cross_entropy(t2::<B>(p, n, v), &labels)
                .unwrap()
                .mean,
        )
    };
    let fd = central_fd(f, &x, 1e-2);
    assert_close(&grad, &fd, 2e-4, 2e-3);
    // Ignored row gets exactly zero gradient; used rows sum to zero (softmax - onehot).
    assert!(grad[v..2 * v].iter().all(|&g| g == 0.0));
    assert!(grad[..v].iter().sum::<f32>().abs() < 1e-6);
    // Label entry is negative: (p - 1) / count.
    assert!(grad[3] < 0.0);
}

fn caption_grad_matches_finite_differences<B: Backend>() {
    caption_grad_fd::<burn::backend::Autodiff<B>>();
}

uno_testing::backend_tests!(
    caption_hand_values,
    caption_ignored_and_empty,
    caption_errors,
    caption_grad_matches_finite_differences,
);
