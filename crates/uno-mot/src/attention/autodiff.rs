//! The blockwise attention as ONE node of Burn's autodiff graph, with its own backward.
//!
//! Recorded op by op, the blockwise forward would keep every tile's scores and
//! probabilities for the backward: `heads x L^2` floats again, only in pieces. As a custom
//! operation (burn-autodiff's `Backward` trait, as Burn's `custom-wgpu-kernel` example and
//! its own module ops do) the graph keeps just the inputs, the output and one log-sum-exp
//! per row and head, and the backward recomputes the tiles ([`super::blockwise::backward`]).

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use super::blockwise::{self, Heads};
use super::plan::TilePlan;
use crate::dispatch::{AutodiffVisitor, cast, visit};

/// What the backward needs: inputs, output, log-sum-exp per query block, the tiling.
#[derive(Debug, Clone)]
struct Saved<X: Backend> {
    q: Tensor<X, 2>,
    k: Tensor<X, 2>,
    v: Tensor<X, 2>,
    out: Tensor<X, 2>,
    lse: Vec<Tensor<X, 3>>,
    plan: Arc<TilePlan>,
    heads: Heads,
}

#[derive(Debug)]
struct BlockwiseBackward;

impl<X: Backend> Backward<X, 3> for BlockwiseBackward {
    type State = Saved<X>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = float::<X, 2>(grads.consume::<X>(&ops.node));
        let s = ops.state;
        let (dq, dk, dv) =
            blockwise::backward(&s.q, &s.k, &s.v, &s.out, &s.lse, &grad, &s.plan, s.heads);
        for (parent, g) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                grads.register::<X>(node.id, g.into_primitive().tensor());
            }
        }
    }
}

fn float<X: Backend, const D: usize>(primitive: X::FloatTensorPrimitive) -> Tensor<X, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// The blockwise attention on `Autodiff<X, C>` as one graph node.
fn attention_node<X: Backend, C: CheckpointStrategy>(
    q: Tensor<Autodiff<X, C>, 2>,
    k: Tensor<Autodiff<X, C>, 2>,
    v: Tensor<Autodiff<X, C>, 2>,
    plan: &Arc<TilePlan>,
    heads: Heads,
) -> Tensor<Autodiff<X, C>, 2> {
    let q = q.into_primitive().tensor();
    let k = k.into_primitive().tensor();
    let v = v.into_primitive().tensor();
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    let (qi, ki, vi) = (
        float::<X, 2>(q.primitive),
        float::<X, 2>(k.primitive),
        float::<X, 2>(v.primitive),
    );
    let out = match BlockwiseBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, lse) = blockwise::forward(&qi, &ki, &vi, plan, heads);
            let saved = Saved {
                q: qi,
                k: ki,
                v: vi,
                out: out.clone(),
                lse,
                plan: plan.clone(),
                heads,
            };
            prep.finish(saved, out.into_primitive().tensor())
        }
        OpsKind::UnTracked(prep) => {
            let (out, _) = blockwise::forward(&qi, &ki, &vi, plan, heads);
            prep.finish(out.into_primitive().tensor())
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The blockwise attention on any backend: one autodiff node with a recomputing backward on
/// the autodiff backends this crate knows ([`crate::dispatch`]), ordinary tensor ops
/// elsewhere (plain backends: no graph; other autodiff backends: correct, but the graph
/// keeps every tile).
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    plan: &Arc<TilePlan>,
    heads: Heads,
) -> Tensor<B, 2> {
    struct Run<'a, B: Backend> {
        qkv: (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>),
        plan: &'a Arc<TilePlan>,
        heads: Heads,
    }
    impl<B: Backend> AutodiffVisitor<B> for Run<'_, B> {
        type Output = Tensor<B, 2>;
        fn autodiff<X: Backend, C: CheckpointStrategy>(self) -> Tensor<B, 2> {
            let (q, k, v) = self.qkv;
            let out = attention_node::<X, C>(cast(q), cast(k), cast(v), self.plan, self.heads);
            cast(out)
        }
        fn other(self) -> Tensor<B, 2> {
            let (q, k, v) = self.qkv;
            blockwise::forward(&q, &k, &v, self.plan, self.heads).0
        }
    }
    visit(Run {
        qkv: (q, k, v),
        plan,
        heads,
    })
}

/// Whether [`super::AttentionImpl::Blockwise`] trains on `B` without keeping the tiles for
/// the backward: true for `Autodiff<X>` over the backends this crate was built with (its
/// `flex`, `ndarray`, `wgpu`, `cuda` features). A trainer can warn when it is false for an
/// autodiff backend.
pub fn has_blockwise_backward<B: Backend>() -> bool {
    struct Probe;
    impl<B: Backend> AutodiffVisitor<B> for Probe {
        type Output = bool;
        fn autodiff<X: Backend, C: CheckpointStrategy>(self) -> bool {
            true
        }
        fn other(self) -> bool {
            false
        }
    }
    visit::<B, _>(Probe)
}
