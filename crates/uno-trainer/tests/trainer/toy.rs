//! A tiny model for the trainer tests: `inp` (trainable) -> tanh -> `frozen` (no_grad) ->
//! tanh -> `head` (trainable), mean squared error against a target. Weights and data are
//! deterministic; the data adds noise drawn from the trainer RNG so that resume must restore
//! the RNG to reproduce it.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::activation::tanh;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::RngCore;
use uno_trainer::{BoxError, StepContext, StepOutput, TrainRng, TrainStep};

pub const IN: usize = 3;
pub const HIDDEN: usize = 4;
pub const OUT: usize = 2;

#[derive(Module, Debug)]
pub struct Toy<B: Backend> {
    pub inp: Linear<B>,
    pub frozen: Linear<B>,
    pub head: Linear<B>,
}

/// Deterministic values in [-0.5, 0.5) from `seed`.
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = TrainRng::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect()
}

fn linear<B: Backend>(seed: u64, d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    let w = TensorData::new(values(seed, d_in * d_out), [d_in, d_out]);
    let b = TensorData::new(values(seed + 1000, d_out), [d_out]);
    Linear {
        weight: Param::from_tensor(Tensor::from_data(w, device)),
        bias: Some(Param::from_tensor(Tensor::from_data(b, device))),
    }
}

/// The toy with weights from `seed`; `frozen` is frozen with `no_grad()`.
pub fn toy<B: Backend>(seed: u64, device: &B::Device) -> Toy<B> {
    Toy {
        inp: linear(seed, IN, HIDDEN, device),
        frozen: linear(seed + 1, HIDDEN, HIDDEN, device).no_grad(),
        head: linear(seed + 2, HIDDEN, OUT, device),
    }
}

/// A micro-batch: inputs `[n, IN]`, targets `[n, OUT]`; `poison` makes the loss NaN;
/// `weighted` makes the loss token-weighted (per-row sum over the step's rows).
#[derive(Debug, Clone)]
pub struct ToyBatch {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub rows: usize,
    pub poison: bool,
    pub weighted: bool,
}

/// Sample `i`: a fixed input and a target that is a smooth function of it.
pub fn sample(i: u64) -> (Vec<f32>, Vec<f32>) {
    let x = values(10_000 + i, IN);
    let y = vec![x[0] * 0.8 - x[1] * 0.3, (x[2] * 2.0).sin() * 0.5];
    (x, y)
}

/// `rows` consecutive samples starting at `first`, plus RNG noise of scale `noise`.
pub fn batch(first: u64, rows: usize, noise: f32, rng: &mut TrainRng) -> ToyBatch {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..rows as u64 {
        let (xi, yi) = sample(first + i);
        x.extend(xi);
        y.extend(yi);
    }
    if noise > 0.0 {
        for v in &mut x {
            *v += noise * ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5);
        }
    }
    ToyBatch {
        x,
        y,
        rows,
        poison: false,
        weighted: false,
    }
}

impl<B: AutodiffBackend> TrainStep<B> for Toy<B> {
    type Batch = ToyBatch;

    fn loss_counts(&self, batch: &ToyBatch) -> Vec<u64> {
        if batch.weighted {
            vec![batch.rows as u64]
        } else {
            Vec::new()
        }
    }

    fn forward_step(&self, batch: ToyBatch, ctx: &StepContext) -> Result<StepOutput<B>, BoxError> {
        let device = self.head.weight.device();
        let x = Tensor::<B, 2>::from_data(TensorData::new(batch.x, [batch.rows, IN]), &device);
        let y = Tensor::<B, 2>::from_data(TensorData::new(batch.y, [batch.rows, OUT]), &device);
        let h = tanh(self.inp.forward(x));
        let h = tanh(self.frozen.forward(h));
        let pred = self.head.forward(h);
        let diff = pred - y;
        let mut loss = if batch.weighted {
            // Each row's mean squared error, summed, over the step's rows.
            let per_row = diff.clone().powi_scalar(2).mean_dim(1);
            per_row.sum().div_scalar(ctx.step_counts[0] as f64)
        } else {
            diff.clone().powi_scalar(2).mean()
        };
        let l1 = diff.abs().mean();
        if batch.poison {
            loss = loss.mul_scalar(f32::NAN);
        }
        // The seed is derived from the trainer RNG: it must be the same after resume.
        let _ = ctx.seed;
        Ok(StepOutput {
            components: vec![("mse", loss.clone()), ("l1", l1)],
            loss,
            tokens: (batch.rows * IN) as u64,
            samples: batch.rows as u64,
            counts: vec![("rows", batch.rows as u64)],
            grads: None,
        })
    }

    fn weights_extension() -> &'static str {
        "mpk"
    }

    fn save_weights(&self, path: &Path) -> Result<(), BoxError> {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let bytes = Recorder::<B>::record(&recorder, self.clone().into_record(), ())?;
        std::fs::write(path, bytes)?;
        Ok(())
    }

    fn load_weights(self, path: &Path) -> Result<Self, BoxError> {
        let bytes = std::fs::read(path)?;
        let device = self.head.weight.device();
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let record = Recorder::<B>::load(&recorder, bytes, &device)?;
        Ok(self.load_record(record))
    }
}

/// The toy differentiating its own loss ([`StepOutput::grads`]), as a model whose backward
/// is not one `backward()` of its loss does.
#[derive(Module, Debug)]
pub struct SelfGrads<B: Backend> {
    pub toy: Toy<B>,
}

impl<B: AutodiffBackend> TrainStep<B> for SelfGrads<B> {
    type Batch = ToyBatch;

    fn loss_counts(&self, batch: &ToyBatch) -> Vec<u64> {
        self.toy.loss_counts(batch)
    }

    fn forward_step(&self, batch: ToyBatch, ctx: &StepContext) -> Result<StepOutput<B>, BoxError> {
        let out = self.toy.forward_step(batch, ctx)?;
        let grads = GradientsParams::from_grads(out.loss.clone().backward(), self);
        Ok(StepOutput {
            grads: Some(grads),
            ..out
        })
    }

    fn weights_extension() -> &'static str {
        Toy::<B>::weights_extension()
    }

    fn save_weights(&self, path: &Path) -> Result<(), BoxError> {
        self.toy.save_weights(path)
    }

    fn load_weights(self, path: &Path) -> Result<Self, BoxError> {
        Ok(Self {
            toy: self.toy.load_weights(path)?,
        })
    }
}

/// All float weights of a module, flattened in visit order (for bitwise comparisons).
pub fn flat<B: Backend>(linear: &Linear<B>) -> Vec<f32> {
    let mut out = uno_testing::to_vec(linear.weight.val());
    if let Some(b) = &linear.bias {
        out.extend(uno_testing::to_vec(b.val()));
    }
    out
}

/// Every weight of the toy: (inp, frozen, head).
pub fn all<B: Backend>(toy: &Toy<B>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (flat(&toy.inp), flat(&toy.frozen), flat(&toy.head))
}
