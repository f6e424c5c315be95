//! Shared by the `mot_step` and `layer_memory` benches (included with `#[path]`): one
//! sample of `len` tokens, half causal text routed to the understanding expert, then an
//! image routed to the generation expert that sees the text and itself, sharing one
//! position id.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use uno_mot::{AttnSegment, Routing, SampleAttention};

/// The routing, position ids and attention of the sample.
pub fn text_image<B: Backend>(
    len: usize,
    device: &B::Device,
) -> (Routing<B>, Tensor<B, 1, Int>, Vec<SampleAttention>) {
    let half = len / 2;
    let und: Vec<usize> = (0..half).collect();
    let gen_idx: Vec<usize> = (half..len).collect();
    let segments = vec![
        AttnSegment {
            start: 0,
            len: half,
            causal_inside: true,
            sees: vec![],
        },
        AttnSegment {
            start: half,
            len: len - half,
            causal_inside: false,
            sees: vec![0],
        },
    ];
    let pos: Vec<i64> = (0..len).map(|i| i.min(half) as i64).collect();
    (
        Routing::from_indices(&und, &gen_idx, len, device).expect("a partition"),
        Tensor::from_data(TensorData::new(pos, [len]), device),
        vec![SampleAttention::new(0, segments).expect("valid segments")],
    )
}
