//! Forward semantics: experts, routing, masks.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use uno_mot::rope::RopeTables;
use uno_mot::{AttentionImpl, AttnSegment, JointAttention, MotModel, Routing, SampleAttention};
use uno_testing::{assert_close, to_vec};

use crate::common::{Pack, pack, tiny};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn run<B: Backend>(model: &MotModel<B>, p: &Pack<B>, routing: &Routing<B>) -> Vec<f32> {
    to_vec(
        model
            .forward(
                p.hidden.clone(),
                routing,
                p.position_ids.clone(),
                &p.samples,
            )
            .unwrap(),
    )
}

/// With `gen` a copy of `und`, the MoT equals a plain single-expert decoder (all tokens to
/// one expert, identity permutation) for any routing; with distinct experts it does not.
fn identical_experts_match_single_expert<B: Backend>() {
    let device = B::Device::default();
    let p = pack::<B>(32, 7, &device);
    let l = p.len();
    let distinct = tiny::<B>(2, 11, &device);
    let same = distinct.clone().init_gen_from_und();

    let single = run(&same, &p, &Routing::all_und(l, &device));
    let mot = run(&same, &p, &p.routing(&device));
    assert_close(&mot, &single, 1e-5, 1e-5);
    // All tokens to the (copied) gen expert, and a scrambled routing.
    let all: Vec<usize> = (0..l).collect();
    let all_gen = Routing::from_indices(&[], &all, l, &device).unwrap();
    assert_close(&run(&same, &p, &all_gen), &single, 1e-5, 1e-5);
    let und: Vec<usize> = (0..l).rev().filter(|i| i % 3 != 0).collect();
    let gen_idx: Vec<usize> = (0..l).filter(|i| i % 3 == 0).collect();
    let scrambled = Routing::from_indices(&und, &gen_idx, l, &device).unwrap();
    assert_close(&run(&same, &p, &scrambled), &single, 1e-5, 1e-5);

    // Power check: distinct experts do change the gen-routed computation.
    let d = max_abs_diff(&run(&distinct, &p, &p.routing(&device)), &single);
    assert!(
        d > 1e-2,
        "distinct experts should differ from single expert, diff {d}"
    );
}

/// Independent routing reference: every expert runs on ALL tokens and each token's result
/// is picked with a mask (no gather/scatter), using the public layer pieces.
fn select_reference<B: Backend>(model: &MotModel<B>, p: &Pack<B>, is_gen: &[bool]) -> Vec<f32> {
    let device = p.hidden.device();
    let l = p.len();
    let pick = |u: Tensor<B, 2>, g: Tensor<B, 2>| {
        let [_, w] = u.dims();
        let m: Tensor<B, 2, Bool> =
            Tensor::from_data(TensorData::new(is_gen.to_vec(), [l, 1]), &device);
        u.mask_where(m.expand([l, w]), g)
    };
    let (nh, nkv, hd) = (model.num_heads, model.num_kv_heads, model.head_dim);
    let rope = RopeTables::new(p.position_ids.clone(), hd, model.rope_theta);
    let attention =
        JointAttention::new(&p.samples, l, nh, nkv, AttentionImpl::Dense, &device).unwrap();
    let mut h = p.hidden.clone();
    for layer in &model.layers {
        let qkv = pick(layer.und.qkv(h.clone()), layer.moe_gen.qkv(h.clone()));
        let q = rope.apply(qkv.clone().narrow(1, 0, nh * hd), nh);
        let k = rope.apply(qkv.clone().narrow(1, nh * hd, nkv * hd), nkv);
        let v = qkv.narrow(1, (nh + nkv) * hd, nkv * hd);
        let a = attention.forward(q, k, v);
        h = pick(
            layer.und.finish(h.clone(), a.clone()),
            layer.moe_gen.finish(h, a),
        );
    }
    to_vec(pick(
        model.norm.forward(h.clone()),
        model.norm_moe_gen.forward(h),
    ))
}

/// The routed MoT equals the run-both-and-select reference, for the pack's routing and for
/// a routing with some tokens swapped between experts; the swap changes the output.
fn routing_matches_select_reference<B: Backend>() {
    let device = B::Device::default();
    let p = pack::<B>(32, 3, &device);
    let l = p.len();
    let model = tiny::<B>(2, 5, &device);
    let mut is_gen = vec![false; l];
    for &i in &p.gen_idx {
        is_gen[i] = true;
    }
    let routed = run(&model, &p, &p.routing(&device));
    assert_close(&routed, &select_reference(&model, &p, &is_gen), 1e-5, 1e-5);

    let swap = [1usize, 5, 10, 14];
    let mut swapped = is_gen.clone();
    for &i in &swap {
        swapped[i] = !swapped[i];
    }
    let und: Vec<usize> = (0..l).filter(|&i| !swapped[i]).collect();
    let gen_idx: Vec<usize> = (0..l).filter(|&i| swapped[i]).collect();
    let r2 = Routing::from_indices(&und, &gen_idx, l, &device).unwrap();
    let routed2 = run(&model, &p, &r2);
    assert_close(
        &routed2,
        &select_reference(&model, &p, &swapped),
        1e-5,
        1e-5,
    );
    assert!(max_abs_diff(&routed, &routed2) > 1e-2);
}

/// With a diagonal mask (each token sees only itself, so no mixing), swapping the expert
/// of some tokens changes exactly those tokens' outputs.
fn routing_swap_changes_exactly_swapped_tokens<B: Backend>() {
    let device = B::Device::default();
    let mut p = pack::<B>(32, 9, &device);
    let l = p.len();
    let h = 32;
    // Every token its own segment that sees nothing else.
    let segments = (0..l)
        .map(|start| AttnSegment {
            start,
            len: 1,
            causal_inside: false,
            sees: Vec::new(),
        })
        .collect();
    p.samples = vec![SampleAttention::new(0, segments).unwrap()];
    let model = tiny::<B>(2, 13, &device);
    let before = run(&model, &p, &p.routing(&device));
    let swap = [2usize, 4, 11];
    let mut und: Vec<usize> = p
        .und
        .iter()
        .copied()
        .filter(|i| !swap.contains(i))
        .collect();
    let mut gen_idx: Vec<usize> = p
        .gen_idx
        .iter()
        .copied()
        .filter(|i| !swap.contains(i))
        .collect();
    for &i in &swap {
        if p.und.contains(&i) {
            gen_idx.push(i)
        } else {
            und.push(i)
        }
    }
    let after = run(
        &model,
        &p,
        &Routing::from_indices(&und, &gen_idx, l, &device).unwrap(),
    );
    for row in 0..l {
        let d = max_abs_diff(
            &before[row * h..(row + 1) * h],
            &after[row * h..(row + 1) * h],
        );
        if swap.contains(&row) {
            assert!(d > 1e-2, "swapped row {row} should change, diff {d}");
        } else {
            assert!(d <= 1e-6, "unswapped row {row} changed by {d}");
        }
    }
}

/// Perturbing a masked-out token leaves every token that cannot see it (directly or
/// through other tokens) unchanged to 1e-6; perturbing a visible one changes its viewers.
fn mask_respected<B: Backend>() {
    let device = B::Device::default();
    let p = pack::<B>(32, 21, &device);
    let l = p.len();
    let h = 32;
    let model = tiny::<B>(2, 17, &device);
    let routing = p.routing(&device);
    let base = run(&model, &p, &routing);
    let perturbed = |row: usize| {
        let mut bump = vec![0.0f32; l * h];
        for c in 0..h {
            bump[row * h + c] = 0.5;
        }
        let x = p.hidden.clone() + Tensor::from_data(TensorData::new(bump, [l, h]), &device);
        to_vec(
            model
                .forward(x, &routing, p.position_ids.clone(), &p.samples)
                .unwrap(),
        )
    };
    let row_diff =
        |out: &[f32], r: usize| max_abs_diff(&base[r * h..(r + 1) * h], &out[r * h..(r + 1) * h]);
    // Row 5 is in the noised image split (rows 4..7 of sample 0): hidden from all others.
    let out = perturbed(5);
    for r in 0..l {
        let d = row_diff(&out, r);
        if (4..7).contains(&r) {
            assert!(d > 1e-3, "noise row {r} sees row 5, diff {d}");
        } else {
            assert!(d <= 1e-6, "row {r} cannot see row 5 but changed by {d}");
        }
    }
    // Row 1 is causal text: rows 1..9 of sample 0 see it; row 0 and sample 1 do not.
    let out = perturbed(1);
    for r in 0..l {
        let d = row_diff(&out, r);
        if (1..9).contains(&r) {
            assert!(d > 1e-3, "row {r} sees row 1, diff {d}");
        } else {
            assert!(d <= 1e-6, "row {r} cannot see row 1 but changed by {d}");
        }
    }
}

uno_testing::backend_tests!(
    identical_experts_match_single_expert,
    routing_matches_select_reference,
    routing_swap_changes_exactly_swapped_tokens,
    mask_respected,
);
