//! Shared helpers: a seeded host RNG (so tests do not depend on Burn's global RNG, which
//! parallel tests share), deterministic model weights, and a small structured pack.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use uno_mot::{AttnSegment, MotConfig, MotModel, Routing, SampleAttention};

/// SplitMix64 + Box-Muller.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    pub fn normals(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * std).collect()
    }
}

pub fn randn<B: Backend, const D: usize>(
    shape: [usize; D],
    seed: u64,
    device: &B::Device,
) -> Tensor<B, D> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(Rng::new(seed).normals(n, 1.0), shape),
        device,
    )
}

pub fn ints<B: Backend>(v: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

pub fn bools<B: Backend>(
    v: Vec<bool>,
    rows: usize,
    cols: usize,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    Tensor::from_data(TensorData::new(v, [rows, cols]), device)
}

/// Re-draw every float parameter from a seeded RNG: norm weights `1 + 0.2 n`, biases
/// `0.1 n`, Linear weights `n / sqrt(fan_in)` (Burn layout `[in, out]`).
struct Randomize {
    rng: Rng,
    path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Randomize {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, mapper) = param.consume();
        let shape = t.dims();
        let n: usize = shape.iter().product();
        let last = self.path.last().map(String::as_str).unwrap_or("");
        let values: Vec<f32> = match last {
            "gamma" => self
                .rng
                .normals(n, 0.2)
                .into_iter()
                .map(|x| 1.0 + x)
                .collect(),
            "bias" => self.rng.normals(n, 0.1),
            _ => self.rng.normals(n, 1.0 / (shape[0] as f32).sqrt()),
        };
        let rg = t.is_require_grad();
        let new =
            Tensor::from_data(TensorData::new(values, shape), &t.device()).set_require_grad(rg);
        Param::from_mapped_value(id, new, mapper)
    }
}

pub fn randomize<B: Backend, M: Module<B>>(module: M, seed: u64) -> M {
    module.map(&mut Randomize {
        rng: Rng::new(seed),
        path: Vec::new(),
    })
}

/// A tiny model with deterministic weights.
pub fn tiny<B: Backend>(layers: usize, seed: u64, device: &B::Device) -> MotModel<B> {
    let model = MotConfig::tiny()
        .with_layers(layers)
        .init::<B>(device)
        .expect("tiny config is valid");
    randomize(model, seed)
}

/// BAGEL's split kinds plus UNO's supervision splits (uno-packing's `AttnMode`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Kind {
    Causal,
    Full,
    Noise,
    Caption,
    MetaqueryCausal,
    MetaqueryFull,
}

impl Kind {
    fn causal_inside(self) -> bool {
        matches!(self, Kind::Causal | Kind::Caption | Kind::MetaqueryCausal)
    }
    fn supervision(self) -> bool {
        matches!(
            self,
            Kind::Caption | Kind::MetaqueryCausal | Kind::MetaqueryFull
        )
    }
}

/// Whether split `a` sees the earlier split `b` (uno-packing's rules, default visibility):
/// supervision splits are hidden from everyone and see only their noised target (the
/// latest noise split before them); noise splits are hidden from every other split.
fn split_sees(splits: &[(Kind, usize)], a: usize, b: usize) -> bool {
    let (query, key) = (splits[a].0, splits[b].0);
    if key.supervision() {
        false
    } else if query.supervision() {
        splits[..a].iter().rposition(|s| s.0 == Kind::Noise) == Some(b)
    } else {
        key != Kind::Noise
    }
}

/// The dense mask of one sample, built element by element (true = masked): the
/// independent reference for [`sample_attention`]'s segments.
pub fn split_mask(splits: &[(Kind, usize)]) -> (Vec<bool>, usize) {
    let n: usize = splits.iter().map(|s| s.1).sum();
    let mut masked = vec![true; n * n];
    let mut offs = vec![0];
    for s in splits {
        offs.push(offs.last().unwrap() + s.1);
    }
    for (a, &(kind, _)) in splits.iter().enumerate() {
        for i in offs[a]..offs[a + 1] {
            for b in 0..=a {
                for j in offs[b]..offs[b + 1] {
                    let visible = if b == a {
                        !kind.causal_inside() || j <= i
                    } else {
                        split_sees(splits, a, b)
                    };
                    masked[i * n + j] = !visible;
                }
            }
        }
    }
    (masked, n)
}

/// The segments of one sample starting at pack row `start`.
pub fn sample_attention(start: usize, splits: &[(Kind, usize)]) -> SampleAttention {
    let mut offset = 0;
    let segments = splits
        .iter()
        .enumerate()
        .map(|(a, &(kind, len))| {
            let segment = AttnSegment {
                start: offset,
                len,
                causal_inside: kind.causal_inside(),
                sees: (0..a).filter(|&b| split_sees(splits, a, b)).collect(),
            };
            offset += len;
            segment
        })
        .collect();
    SampleAttention::new(start, segments).unwrap()
}

/// A packed input: 2 samples, interleaved routing, shared position ids.
pub struct Pack<B: Backend> {
    pub hidden: Tensor<B, 2>,
    pub position_ids: Tensor<B, 1, Int>,
    pub samples: Vec<SampleAttention>,
    pub und: Vec<usize>,
    pub gen_idx: Vec<usize>,
}

impl<B: Backend> Pack<B> {
    pub fn len(&self) -> usize {
        self.und.len() + self.gen_idx.len()
    }
    pub fn routing(&self, device: &B::Device) -> Routing<B> {
        Routing::from_indices(&self.und, &self.gen_idx, self.len(), device).unwrap()
    }
}

/// sample 0: text causal 4 (und), noised image 3 (gen), text causal 2 (und);
/// sample 1: clean image full 3 (gen), text causal 3 (und).  L = 15.
pub fn pack<B: Backend>(hidden_size: usize, seed: u64, device: &B::Device) -> Pack<B> {
    let s0 = [(Kind::Causal, 4), (Kind::Noise, 3), (Kind::Causal, 2)];
    let s1 = [(Kind::Full, 3), (Kind::Causal, 3)];
    let gen_flags = [
        0, 0, 0, 0, 1, 1, 1, 0, 0, //
        1, 1, 1, 0, 0, 0,
    ];
    let pos = [0, 1, 2, 3, 4, 4, 4, 4, 5, 0, 0, 0, 1, 2, 3];
    let mut samples = Vec::new();
    let mut start = 0;
    for s in [&s0[..], &s1[..]] {
        let sample = sample_attention(start, s);
        start += sample.len();
        samples.push(sample);
    }
    let und = (0..start).filter(|&i| gen_flags[i] == 0).collect();
    let gen_idx = (0..start).filter(|&i| gen_flags[i] == 1).collect();
    Pack {
        hidden: randn([start, hidden_size], seed, device),
        position_ids: ints(&pos, device),
        samples,
        und,
        gen_idx,
    }
}
