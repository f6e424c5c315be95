//! Shared by the `bagel`, `alignment` and `checkpointing` tests: the tiny BAGEL on the first
//! items of a synthetic scene set, packed into one sequence.

use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};
use uno_core::bagel::{Bagel, BagelConfig};
use uno_core::data::{Dataset, SyntheticConfig, SyntheticScenes, TrainItem};
use uno_core::packing::PackedSequence;

/// The model, its config, the pack of the items, their VAE images `[3, H, W]` and the items.
pub struct Scenes<B: Backend> {
    pub config: BagelConfig,
    pub model: Bagel<B>,
    pub pack: PackedSequence,
    pub images: Vec<Tensor<B, 3>>,
    pub items: Vec<TrainItem>,
}

/// The first `items` items of `set`, and the tiny model for its vocabulary (freshly
/// initialised from Burn's global RNG).
pub fn scenes<B: Backend>(set: SyntheticConfig, items: usize) -> Scenes<B> {
    let set = SyntheticScenes::new(set).unwrap();
    let config = BagelConfig::tiny(set.tokenizer().vocab_size(), set.special_tokens());
    let device = Default::default();
    let model = config.init::<B>(&device).unwrap();
    let items: Vec<TrainItem> = (0..items).map(|i| set.get(i).unwrap()).collect();
    let samples: Vec<_> = items.iter().map(|i| i.sample.clone()).collect();
    let pack = PackedSequence::pack(&samples, &config.packing()).unwrap();
    let images = items
        .iter()
        .map(|i| {
            let t = &i.target.vae;
            Tensor::from_data(
                TensorData::new(t.data.clone(), [3, t.height, t.width]),
                &device,
            )
        })
        .collect();
    Scenes {
        config,
        model,
        pack,
        images,
        items,
    }
}

/// The set of [`gradient_scenes`]: three scenes of 16 px with up to three shapes.
pub fn gradient_set() -> SyntheticConfig {
    SyntheticConfig {
        len: 3,
        image_size: 16,
        max_shapes: 3,
        seed: 5,
    }
}

/// Three scenes with both supervision splits, for gradient tests: `llm2vae` is given
/// values (BAGEL zero-initialises it, which would cut the flow gradient to the decoder).
pub fn gradient_scenes<B: Backend>() -> Scenes<B> {
    let mut s = scenes::<B>(gradient_set(), 3);
    let llm2vae = &mut s.model.generation.llm2vae;
    llm2vae.weight = llm2vae
        .weight
        .clone()
        .map(|w| w.random_like(Distribution::Normal(0.0, 0.2)));
    s
}
