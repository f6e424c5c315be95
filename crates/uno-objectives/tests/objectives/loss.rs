//! The combined UNO objective.

use crate::common;

use burn::tensor::{backend::AutodiffBackend, backend::Backend};
use common::{scalar, t2};
use uno_objectives::{IGNORE_INDEX, LossCounts, ObjectiveError, UnoLossConfig, UnoLossInputs};
use uno_testing::{assert_close, to_vec};

const LN2: f32 = std::f32::consts::LN_2;
const LN5: f32 = 1.609_438;
const LABELS: [u32; 3] = [1, 2, IGNORE_INDEX];

/// The tiny cases of the per-loss tests (flow 4.5 over 2 tokens, caption 0.78430796 over 2
/// targets, visual 0.76429774 over 3 metaqueries; tools/objectives_reference.py).
fn inputs<B: Backend>(visual_pred: &[f32]) -> UnoLossInputs<'static, B> {
    UnoLossInputs::new(&Default::default())
        .flow(
            t2(&[1.0, 2.0, 3.0, 4.0], 2, 2),
            t2(&[0.0, 0.0, 1.0, 1.0], 2, 2),
        )
        .caption(
            t2(&[0.0, 0.0, 0.0, 0.0, LN2, LN5, 100.0, -100.0, 3.0], 3, 3),
            &LABELS,
        )
        .visual(
            t2(visual_pred, 3, 2),
            t2(&[2.0, 0.0, 1.0, 0.0, 0.0, -1.0], 3, 2),
        )
}
const MQ: [f32; 6] = [1.0, 0.0, 1.0, 1.0, 0.0, 2.0];

fn combined_hand_values<B: Backend>() {
    let config = UnoLossConfig::new();
    assert_eq!(
        (config.caption, config.visual, config.check_finite),
        (0.1, 0.2, true)
    );
    let loss = config.init().unwrap();
    let out = loss.forward(inputs::<B>(&MQ)).unwrap();
    assert_eq!(
        out.counts,
        LossCounts {
            noised_tokens: 2,
            caption_tokens: 2,
            metaqueries: 3,
            text_tokens: 0
        }
    );
    assert_close(&[scalar(out.flow) as f32], &[4.5], 1e-6, 1e-6);
    assert_close(&[scalar(out.caption) as f32], &[0.784_307_96], 1e-6, 1e-6);
    assert_close(&[scalar(out.visual) as f32], &[0.764_297_7], 1e-6, 1e-6);
    // 4.5 + 0.1 * 0.78430796 + 0.2 * 0.76429774 = 4.73129034.
    assert_close(&[scalar(out.total) as f32], &[4.731_290_3], 1e-5, 1e-6);

    // Other weights through the generated builder.
    let loss = UnoLossConfig::new()
        .with_caption(1.0)
        .with_visual(0.5)
        .init()
        .unwrap();
    let out = loss.forward(inputs::<B>(&MQ)).unwrap();
    // 4.5 + 0.78430796 + 0.5 * 0.76429774 = 5.66645683.
    assert_close(&[scalar(out.total) as f32], &[5.666_456_8], 1e-5, 1e-6);
}

fn disabled_terms_are_not_computed<B: Backend>() {
    // Visual weight 0 and NaN visual inputs: not computed, so no error; count 0.
    let loss = UnoLossConfig::new().with_visual(0.0).init().unwrap();
    let nan_mq = [f32::NAN; 6];
    let out = loss.forward(inputs::<B>(&nan_mq)).unwrap();
    assert_eq!(out.counts.metaqueries, 0);
    assert_eq!(scalar(out.visual), 0.0);
    // 4.5 + 0.1 * 0.78430796.
    assert_close(&[scalar(out.total) as f32], &[4.578_430_8], 1e-5, 1e-6);
    // With the weight on, the same NaN is reported and named.
    let err = UnoLossConfig::new()
        .init()
        .unwrap()
        .forward(inputs::<B>(&nan_mq))
        .unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::NonFinite {
            tensor: "visual.pred",
            loss: "visual"
        }
    );
    // Caption weight 0 too: total = flow.
    let loss = UnoLossConfig::new()
        .with_visual(0.0)
        .with_caption(0.0)
        .init()
        .unwrap();
    let out = loss.forward(inputs::<B>(&MQ)).unwrap();
    assert_eq!(
        out.counts,
        LossCounts {
            noised_tokens: 2,
            caption_tokens: 0,
            metaqueries: 0,
            text_tokens: 0
        }
    );
    assert_close(&[scalar(out.total) as f32], &[4.5], 1e-6, 1e-6);
}

fn missing_inputs_and_empty_pack<B: Backend>() {
    let loss = UnoLossConfig::new().init().unwrap();
    let device = Default::default();
    // A plain BAGEL t2i pack: flow only.
    let out = loss
        .forward(UnoLossInputs::<B>::new(&device).flow(
            t2(&[1.0, 2.0, 3.0, 4.0], 2, 2),
            t2(&[0.0, 0.0, 1.0, 1.0], 2, 2),
        ))
        .unwrap();
    assert_eq!(
        out.counts,
        LossCounts {
            noised_tokens: 2,
            ..Default::default()
        }
    );
    assert_close(&[scalar(out.total) as f32], &[4.5], 1e-6, 1e-6);
    // Nothing at all: zeros, zero counts, not NaN.
    let out = loss.forward(UnoLossInputs::<B>::new(&device)).unwrap();
    assert_eq!(out.counts, LossCounts::default());
    assert_eq!(to_vec(out.total), vec![0.0]);
    assert_eq!(to_vec(out.flow), vec![0.0]);
    // Caption with every label ignored.
    let out = loss
        .forward(UnoLossInputs::<B>::new(&device).caption(t2(&[1.0, 2.0], 1, 2), &[IGNORE_INDEX]))
        .unwrap();
    assert_eq!(out.counts.caption_tokens, 0);
    assert_eq!(to_vec(out.total), vec![0.0]);
}

fn global_normalisation<B: Backend>() {
    let loss = UnoLossConfig::new().init().unwrap();
    let global = LossCounts {
        noised_tokens: 4,
        caption_tokens: 4,
        metaqueries: 6,
        text_tokens: 0,
    };
    let out = loss.forward_global(inputs::<B>(&MQ), global, 1.0).unwrap();
    // Sums 9, 1.56861592, 2.29289322 over 4, 4, 6 (tools/objectives_reference.py).
    assert_close(&[scalar(out.flow) as f32], &[2.25], 1e-6, 1e-6);
    assert_close(&[scalar(out.caption) as f32], &[0.392_153_98], 1e-6, 1e-6);
    assert_close(&[scalar(out.visual) as f32], &[0.382_148_87], 1e-6, 1e-6);
    assert_close(&[scalar(out.total) as f32], &[2.365_645_2], 1e-5, 1e-6);
    assert_eq!(
        out.counts,
        LossCounts {
            noised_tokens: 2,
            caption_tokens: 2,
            metaqueries: 3,
            text_tokens: 0
        }
    );
    // Counts of two ranks add up element-wise.
    assert_eq!(
        out.counts + out.counts,
        LossCounts {
            noised_tokens: 4,
            caption_tokens: 4,
            metaqueries: 6,
            text_tokens: 0
        }
    );
    // Averaged gradients over 2 ranks: scale 2 doubles every term.
    let out = loss.forward_global(inputs::<B>(&MQ), global, 2.0).unwrap();
    assert_close(
        &[scalar(out.total) as f32],
        &[2.0 * 2.365_645_2],
        1e-5,
        1e-6,
    );
    // A global count of 0 while this rank has items is an error naming the term.
    let err = loss
        .forward_global(
            inputs::<B>(&MQ),
            LossCounts {
                metaqueries: 0,
                ..global
            },
            1.0,
        )
        .unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::GlobalCount {
            term: "visual",
            local: 3
        }
    );
    assert!(matches!(
        loss.forward_global(inputs::<B>(&MQ), global, 0.0)
            .unwrap_err(),
        ObjectiveError::InvalidValue { name: "scale", .. }
    ));
}

fn combined_errors<B: Backend>() {
    for (c, v) in [(-0.1, 0.2), (0.1, f64::NAN), (f64::INFINITY, 0.2)] {
        let err = UnoLossConfig::new()
            .with_caption(c)
            .with_visual(v)
            .init()
            .unwrap_err();
        assert!(matches!(err, ObjectiveError::InvalidValue { .. }), "{err}");
    }
    let loss = UnoLossConfig::new().init().unwrap();
    let device = Default::default();
    let err = loss
        .forward(UnoLossInputs::<B>::new(&device).flow(t2(&[0.0; 4], 2, 2), t2(&[0.0; 6], 3, 2)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ObjectiveError::Shape {
                tensor: "flow.target",
                ..
            }
        ),
        "{err}"
    );
    // With the check off a NaN passes through (the caller chose no read-back).
    let loss = UnoLossConfig::new()
        .with_check_finite(false)
        .init()
        .unwrap();
    let out = loss
        .forward(
            UnoLossInputs::<B>::new(&device).flow(t2(&[f32::NAN, 0.0], 1, 2), t2(&[0.0; 2], 1, 2)),
        )
        .unwrap();
    assert!(scalar(out.total).is_nan());
}

/// The understanding CE is the caption's CE as its own term: its own weight, count and
/// global normalisation; the same logits and labels give the caption's hand value
/// (0.78430796 over 2 targets, sum 1.56861592).
fn text_term_is_weighted_and_counted<B: Backend>() {
    let logits = || t2(&[0.0, 0.0, 0.0, 0.0, LN2, LN5, 100.0, -100.0, 3.0], 3, 3);
    // Off by default: inputs given, nothing computed.
    let out = UnoLossConfig::new()
        .init()
        .unwrap()
        .forward(inputs::<B>(&MQ).text(logits(), &LABELS))
        .unwrap();
    assert_eq!((out.counts.text_tokens, scalar(out.text)), (0, 0.0));
    let loss = UnoLossConfig::new().with_text(0.5).init().unwrap();
    let out = loss
        .forward(inputs::<B>(&MQ).text(logits(), &LABELS))
        .unwrap();
    assert_eq!(out.counts.text_tokens, 2);
    assert_close(&[scalar(out.text) as f32], &[0.784_307_96], 1e-6, 1e-6);
    // 4.73129034 + 0.5 * 0.78430796 = 5.12344432.
    assert_close(&[scalar(out.total) as f32], &[5.123_444], 1e-5, 1e-6);
    // Step totals: the sum over 8 targets of the step (1.56861592 / 8), the other terms
    // as in `global_normalisation`.
    let global = LossCounts {
        noised_tokens: 4,
        caption_tokens: 4,
        metaqueries: 6,
        text_tokens: 8,
    };
    let out = loss
        .forward_global(inputs::<B>(&MQ).text(logits(), &LABELS), global, 1.0)
        .unwrap();
    assert_close(&[scalar(out.text) as f32], &[0.196_076_99], 1e-6, 1e-6);
    assert_close(
        &[scalar(out.total) as f32],
        &[2.365_645_2 + 0.5 * 0.196_076_99],
        1e-5,
        1e-6,
    );
    let err = loss
        .forward_global(
            inputs::<B>(&MQ).text(logits(), &LABELS),
            LossCounts {
                text_tokens: 0,
                ..global
            },
            1.0,
        )
        .unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::GlobalCount {
            term: "text",
            local: 2
        }
    );
    // Errors name the text term, not the caption.
    let err = loss
        .forward(inputs::<B>(&MQ).text(t2(&[f32::NAN, 0.0], 1, 2), &[0]))
        .unwrap_err();
    assert_eq!(
        err,
        ObjectiveError::NonFinite {
            tensor: "text.logits",
            loss: "text"
        }
    );
    let err = UnoLossConfig::new().with_text(-1.0).init().unwrap_err();
    assert!(
        matches!(
            err,
            ObjectiveError::InvalidValue {
                name: "UnoLossConfig.text",
                ..
            }
        ),
        "{err}"
    );
}

fn combined_grad<B: AutodiffBackend>() {
    // d total / d flow_pred = 2 (pred - target) / (N C); d total / d logits = 0.1 * CE grad.
    let device = Default::default();
    let pred = t2::<B>(&[1.0, 2.0, 3.0, 4.0], 2, 2).require_grad();
    let logits = t2::<B>(&[0.0, 0.0, 0.0], 1, 3).require_grad();
    let labels = [0u32];
    let out = UnoLossConfig::new()
        .init()
        .unwrap()
        .forward(
            UnoLossInputs::new(&device)
                .flow(pred.clone(), t2(&[0.0, 0.0, 1.0, 1.0], 2, 2))
                .caption(logits.clone(), &labels),
        )
        .unwrap();
    let grads = out.total.backward();
    // (2/4) * (pred - target) = [0.5, 1.0, 1.0, 1.5].
    assert_close(
        &to_vec(pred.grad(&grads).unwrap()),
        &[0.5, 1.0, 1.0, 1.5],
        1e-6,
        1e-6,
    );
    // 0.1 * (softmax - onehot) = 0.1 * [1/3 - 1, 1/3, 1/3].
    let third = 1.0 / 3.0;
    assert_close(
        &to_vec(logits.grad(&grads).unwrap()),
        &[0.1 * (third - 1.0), 0.1 * third, 0.1 * third],
        1e-6,
        1e-5,
    );
}

fn combined_gradient_is_weighted_sum<B: Backend>() {
    combined_grad::<burn::backend::Autodiff<B>>();
}

uno_testing::backend_tests!(
    combined_hand_values,
    disabled_terms_are_not_computed,
    missing_inputs_and_empty_pack,
    global_normalisation,
    combined_errors,
    text_term_is_weighted_and_counted,
    combined_gradient_is_weighted_sum,
);
