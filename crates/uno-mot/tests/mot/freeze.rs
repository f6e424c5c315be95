//! UNO's core: the understanding expert is frozen, yet gradients flow THROUGH it into the
//! generation expert.

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use uno_mot::MotModel;
use uno_testing::to_vec;

use crate::common::{pack, randn, tiny};

/// One float parameter: id, values, whether it requires grad, its gradient (if any).
struct Snap {
    id: ParamId,
    values: Vec<f32>,
    require_grad: bool,
    grad: Option<Vec<f32>>,
}

struct Collect<'a> {
    grads: Option<&'a GradientsParams>,
    out: Vec<Snap>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let val = param.val();
        self.out.push(Snap {
            id: param.id,
            require_grad: val.is_require_grad(),
            values: to_vec(val),
            grad: self
                .grads
                .and_then(|g| g.get::<B::InnerBackend, D>(param.id))
                .map(to_vec),
        });
    }
}

fn snap<B: AutodiffBackend, M: Module<B>>(m: &M, grads: Option<&GradientsParams>) -> Vec<Snap> {
    let mut c = Collect {
        grads,
        out: Vec::new(),
    };
    m.visit(&mut c);
    c.out
}

fn nonzero(v: &[f32]) -> bool {
    v.iter().any(|x| *x != 0.0) && v.iter().all(|x| x.is_finite())
}

/// Loss on und-routed text rows 12..15 of sample 1, which attend to the gen-routed clean
/// image rows 9..12 (caption-like tokens reading generation representations).
fn und_only_loss<B: AutodiffBackend>(model: &MotModel<B>) -> Tensor<B, 1> {
    let device = B::Device::default();
    let p = pack::<B>(32, 31, &device);
    for r in [12, 13, 14] {
        assert!(p.und.contains(&r));
    }
    let out = model
        .forward(
            p.hidden.clone(),
            &p.routing(&device),
            p.position_ids.clone(),
            &p.samples,
        )
        .unwrap();
    let rows: Tensor<B, 1, Int> =
        Tensor::from_data(TensorData::new(vec![12i64, 13, 14], [3]), &device);
    (out.select(0, rows) * randn::<B, 2>([3, 32], 77, &device)).sum()
}

fn frozen_check<B: AutodiffBackend>() {
    let device = B::Device::default();
    let model = tiny::<B>(2, 41, &device).freeze_und();

    let grads = GradientsParams::from_grads(und_only_loss(&model).backward(), &model);
    let und: Vec<Snap> = model
        .layers
        .iter()
        .flat_map(|l| snap(&l.und, Some(&grads)))
        .collect();
    let norm = snap(&model.norm, Some(&grads));
    for s in und.iter().chain(&norm) {
        assert!(
            !s.require_grad,
            "frozen und param {:?} still requires grad",
            s.id
        );
        assert!(
            s.grad.is_none(),
            "frozen und param {:?} got a gradient",
            s.id
        );
    }
    // Layer 0's whole gen expert influences the und rows through layer 1 (via gen K/V);
    // layer 1's gen K/V path influences them through the frozen und attention output.
    let gen0 = snap(&model.layers[0].moe_gen, Some(&grads));
    assert_eq!(
        gen0.len(),
        14,
        "gen expert params (with biases and q/k norms)"
    );
    for s in &gen0 {
        assert!(s.require_grad);
        let g = s.grad.as_ref().expect("gen layer-0 param has a gradient");
        assert!(
            nonzero(g),
            "gen layer-0 param {:?} has an all-zero gradient",
            s.id
        );
    }
    let l1 = &model.layers[1].moe_gen;
    for (name, ids) in [
        ("k_proj", vec![l1.self_attn.k_proj.weight.id]),
        ("v_proj", vec![l1.self_attn.v_proj.weight.id]),
        ("input_layernorm", vec![l1.input_layernorm.gamma.id]),
    ] {
        for id in ids {
            let g = grads
                .get::<B::InnerBackend, 2>(id)
                .map(to_vec)
                .or_else(|| grads.get::<B::InnerBackend, 1>(id).map(to_vec));
            assert!(
                g.as_deref().is_some_and(nonzero),
                "gen layer-1 {name} has no gradient"
            );
        }
    }

    // One AdamW step: und bit-identical, every gen param of layer 0 changed.
    let before_und: Vec<Snap> = model
        .layers
        .iter()
        .flat_map(|l| snap(&l.und, None))
        .collect();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.1)
        .init::<B, MotModel<B>>();
    let stepped = optim.step(1e-2, model.clone(), grads);
    let after_und: Vec<Snap> = stepped
        .layers
        .iter()
        .flat_map(|l| snap(&l.und, None))
        .collect();
    assert_eq!(before_und.len(), after_und.len());
    for (b, a) in before_und.iter().zip(&after_und) {
        assert_eq!(
            b.values, a.values,
            "frozen und param {:?} was updated",
            b.id
        );
    }
    assert_eq!(
        snap(&model.norm, None)[0].values,
        snap(&stepped.norm, None)[0].values
    );
    for (b, a) in gen0.iter().zip(snap(&stepped.layers[0].moe_gen, None)) {
        assert_ne!(b.values, a.values, "gen param {:?} was not updated", b.id);
    }

    // Power check: without freezing, the same loss does reach und params.
    let open = tiny::<B>(2, 41, &device);
    let grads = GradientsParams::from_grads(und_only_loss(&open).backward(), &open);
    let und_grads = snap(&open.layers[1].und, Some(&grads));
    assert!(und_grads.iter().all(|s| s.grad.is_some()));
}

/// `init_gen_from_und` copies values with fresh ids; the copies are trainable even when
/// copied from a frozen und expert, and receive their own gradients.
fn init_gen_check<B: AutodiffBackend>() {
    let device = B::Device::default();
    let model = tiny::<B>(1, 43, &device).freeze_und().init_gen_from_und();
    let und = snap(&model.layers[0].und, None);
    let gen_idx = snap(&model.layers[0].moe_gen, None);
    assert_eq!(und.len(), gen_idx.len());
    for (u, g) in und.iter().zip(&gen_idx) {
        assert_eq!(u.values, g.values);
        assert_ne!(u.id, g.id);
        assert!(!u.require_grad && g.require_grad);
    }
    assert_eq!(
        snap(&model.norm, None)[0].values,
        snap(&model.norm_moe_gen, None)[0].values
    );
    assert_ne!(model.norm.gamma.id, model.norm_moe_gen.gamma.id);

    let grads = GradientsParams::from_grads(und_only_loss(&model).backward(), &model);
    assert!(
        snap(&model.layers[0].und, Some(&grads))
            .iter()
            .all(|s| s.grad.is_none())
    );
    let kg = grads
        .get::<B::InnerBackend, 2>(model.layers[0].moe_gen.self_attn.k_proj.weight.id)
        .map(to_vec);
    assert!(kg.as_deref().is_some_and(nonzero));
    // The inner (non-autodiff) model is usable for inference.
    let _ = model.valid();
}

// Gradients need autodiff: `backend_tests!` instantiates per backend, this wraps it.
fn frozen_und_gets_no_update_and_gen_gets_grads<B: Backend>() {
    frozen_check::<Autodiff<B>>();
}

fn init_gen_from_und_copies_with_fresh_ids<B: Backend>() {
    init_gen_check::<Autodiff<B>>();
}

uno_testing::backend_tests!(
    frozen_und_gets_no_update_and_gen_gets_grads,
    init_gen_from_und_copies_with_fresh_ids,
);
