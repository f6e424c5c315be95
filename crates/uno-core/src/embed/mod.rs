//! Embeddings around BAGEL's generation path and the fixed position tables.
//!
//! * [`sincos_2d_table`]: the fixed 2-D sin-cos table (MAE's `get_2d_sincos_pos_embed`),
//!   shared by `latent_pos_embed` (64x64 latents) and `vit_pos_embed` (70x70 patches);
//! * [`PositionEmbedding`]: that table as a frozen parameter, looked up by position ids;
//! * [`timestep_sinusoid`] / [`TimestepEmbedder`]: BAGEL's `TimestepEmbedder`;
//! * [`GenerationEmbeddings`]: `vae2llm`, `llm2vae` (zero init), `time_embedder` and
//!   `latent_pos_embed`, with the generation-input sum
//!   `vae2llm(x_t) + time_embedder(t) + latent_pos_embed[ids]`.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Tensor, TensorData, backend::Backend};

pub use crate::patch::VisionError;
use crate::patch::{check_ids, ids_tensor};

/// The fixed 2-D sin-cos position table, `[grid * grid, dim]` row-major `f32`.
///
/// Row `i = r * grid + c` is the cell at row `r`, column `c`. With `q = dim / 4` and
/// `omega_k = 1 / 10000^(k / q)` for `k = 0..q` (computed in `f64`, then the entries are
/// cast to `f32`), the row is the concatenation
///
/// ```text
/// [ sin(c * omega_0..q) | cos(c * omega_0..q) | sin(r * omega_0..q) | cos(r * omega_0..q) ]
/// ```
///
/// i.e. the first half of the dims encodes the column, the second half the row, each half
/// `[sin, cos]`. This is BAGEL's (and MAE's) `get_2d_sincos_pos_embed(dim, grid)`: its
/// `np.meshgrid(grid_w, grid_h)` puts the column first, and
/// `get_1d_sincos_pos_embed_from_grid(dim / 2, pos)` uses `omega = 1 / 10000^(k / (dim / 4))`
/// and concatenates `[sin, cos]`.
///
/// # Errors
/// [`VisionError::InvalidConfig`] when `dim` is not a positive multiple of 4.
pub fn sincos_2d_table(dim: usize, grid: usize) -> Result<Vec<f32>, VisionError> {
    if dim == 0 || !dim.is_multiple_of(4) {
        return Err(VisionError::InvalidConfig(format!(
            "2-D sin-cos table width {dim} must be a positive multiple of 4"
        )));
    }
    let q = dim / 4;
    let omega: Vec<f64> = (0..q)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / q as f64))
        .collect();
    let mut out = Vec::with_capacity(grid * grid * dim);
    for r in 0..grid {
        for c in 0..grid {
            for pos in [c as f64, r as f64] {
                out.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                out.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    Ok(out)
}

/// Configuration of a fixed [`PositionEmbedding`] (`latent_pos_embed`: side 64, BAGEL's
/// release `max_latent_size`; `vit_pos_embed`: side 70).
#[derive(Config, Debug)]
pub struct PositionEmbeddingConfig {
    /// Cells per side; the table has `max_num_patch_per_side^2` rows.
    pub max_num_patch_per_side: usize,
    /// Table width (the language model's hidden size).
    pub hidden_size: usize,
}

impl PositionEmbeddingConfig {
    /// Build the table from [`sincos_2d_table`] as a parameter that requires no gradient.
    ///
    /// # Errors
    /// [`VisionError::InvalidConfig`] when `hidden_size` is not a positive multiple of 4.
    pub fn init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<PositionEmbedding<B>, VisionError> {
        let s = self.max_num_patch_per_side;
        let table = sincos_2d_table(self.hidden_size, s)?;
        let t =
            Tensor::<B, 2>::from_data(TensorData::new(table, [s * s, self.hidden_size]), device);
        Ok(PositionEmbedding {
            pos_embed: Param::from_tensor(t).set_require_grad(false),
        })
    }
}

/// A fixed 2-D sin-cos table (BAGEL's `PositionEmbedding`); checkpoint key
/// `{latent,vit}_pos_embed.pos_embed` (`[side^2, hidden]`, same layout).
#[derive(Module, Debug)]
pub struct PositionEmbedding<B: Backend> {
    /// `[side^2, hidden]`, row `row * side + col`; frozen.
    pub pos_embed: Param<Tensor<B, 2>>,
}

impl<B: Backend> PositionEmbedding<B> {
    /// Number of rows of the table.
    pub fn rows(&self) -> usize {
        self.pos_embed.dims()[0]
    }

    /// Rows `ids` of the table.
    ///
    /// # Shapes
    /// - output: `[ids.len(), hidden]`
    ///
    /// # Errors
    /// [`VisionError::PositionIdOutOfRange`] for an id past the table.
    pub fn forward(&self, ids: &[usize]) -> Result<Tensor<B, 2>, VisionError> {
        check_ids("pos_embed", ids, self.rows())?;
        let table = self.pos_embed.val();
        let idx = ids_tensor::<B>(ids, &table.device());
        Ok(table.select(0, idx))
    }
}

/// The sinusoidal timestep features `[N, dim]` of BAGEL's
/// `TimestepEmbedder.timestep_embedding(t, dim, max_period)`.
///
/// With `half = dim / 2` and `f_k = exp(-ln(max_period) * k / half)` for `k = 0..half`, row
/// `n` is `[cos(t_n * f_0..half) | sin(t_n * f_0..half)]` (cos first), plus one zero
/// column when `dim` is odd. `t` is used as is: BAGEL feeds `t` in `[0, 1]` (after the
/// sigmoid and the shift), not `1000 * t`.
///
/// # Shapes
/// - `t`: `[N]`
/// - output: `[N, dim]`
pub fn timestep_sinusoid<B: Backend>(t: Tensor<B, 1>, dim: usize, max_period: f64) -> Tensor<B, 2> {
    let device = t.device();
    let [n] = t.dims();
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(max_period.ln()) * k as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), &device);
    let args = t.reshape([n, 1]) * freqs.reshape([1, half]);
    let mut parts = vec![args.clone().cos(), args.sin()];
    if dim % 2 == 1 {
        parts.push(Tensor::zeros([n, 1], &device));
    }
    Tensor::cat(parts, 1)
}

/// Configuration of [`TimestepEmbedder`] (BAGEL: 256-d sinusoid, max period 1e4).
#[derive(Config, Debug)]
pub struct TimestepEmbedderConfig {
    /// Output width (the language model's hidden size).
    pub hidden_size: usize,
    /// Width of the sinusoidal features.
    #[config(default = 256)]
    pub frequency_embedding_size: usize,
    /// Longest period of the sinusoid.
    #[config(default = 10000.0)]
    pub max_period: f64,
}

impl TimestepEmbedderConfig {
    /// Build the embedder with Burn's default initialisers (weights are meant to be loaded).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TimestepEmbedder<B> {
        TimestepEmbedder {
            mlp_0: LinearConfig::new(self.frequency_embedding_size, self.hidden_size).init(device),
            mlp_2: LinearConfig::new(self.hidden_size, self.hidden_size).init(device),
            frequency_embedding_size: self.frequency_embedding_size,
            max_period: self.max_period,
        }
    }
}

/// BAGEL's `TimestepEmbedder`: `mlp_2(silu(mlp_0(timestep_sinusoid(t))))`.
///
/// Checkpoint keys: `time_embedder.mlp.0.{weight,bias}` = `mlp_0`,
/// `time_embedder.mlp.2.{weight,bias}` = `mlp_2` (the `nn.Sequential` index 1 is the SiLU);
/// weights transposed (Burn's Linear is `[in, out]`).
#[derive(Module, Debug)]
pub struct TimestepEmbedder<B: Backend> {
    /// `frequency_embedding_size -> hidden`, before the SiLU.
    pub mlp_0: Linear<B>,
    /// `hidden -> hidden`, after the SiLU.
    pub mlp_2: Linear<B>,
    /// Width of the sinusoidal features (a constant, BAGEL: 256).
    pub frequency_embedding_size: usize,
    /// Longest period of the sinusoid (a constant, BAGEL: 1e4).
    pub max_period: f64,
}

impl<B: Backend> TimestepEmbedder<B> {
    /// Embed timesteps in `[0, 1]` (0 = clean).
    ///
    /// # Shapes
    /// - `t`: `[N]`
    /// - output: `[N, hidden]`
    pub fn forward(&self, t: Tensor<B, 1>) -> Tensor<B, 2> {
        let f = timestep_sinusoid(t, self.frequency_embedding_size, self.max_period);
        self.mlp_2.forward(silu(self.mlp_0.forward(f)))
    }
}

/// Configuration of [`GenerationEmbeddings`].
#[derive(Config, Debug)]
pub struct GenerationEmbeddingsConfig {
    /// Language model hidden size (3584 for BAGEL-7B).
    pub hidden_size: usize,
    /// Width of a latent token: `latent_channels * latent_patch^2` (16 * 2 * 2 = 64).
    #[config(default = 64)]
    pub latent_token_dim: usize,
    /// Latent cells per side of `latent_pos_embed` (BAGEL release: 64).
    #[config(default = 64)]
    pub max_latent_size: usize,
    /// Width of the timestep sinusoid.
    #[config(default = 256)]
    pub frequency_embedding_size: usize,
}

impl GenerationEmbeddingsConfig {
    /// `vae2llm` default-initialised, `llm2vae` all zeros (weight and bias, as BAGEL).
    ///
    /// # Errors
    /// [`VisionError::InvalidConfig`] when `hidden_size` is not a positive multiple of 4.
    pub fn init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<GenerationEmbeddings<B>, VisionError> {
        Ok(GenerationEmbeddings {
            vae2llm: LinearConfig::new(self.latent_token_dim, self.hidden_size).init(device),
            llm2vae: LinearConfig::new(self.hidden_size, self.latent_token_dim)
                .with_initializer(Initializer::Zeros)
                .init(device),
            time_embedder: TimestepEmbedderConfig::new(self.hidden_size)
                .with_frequency_embedding_size(self.frequency_embedding_size)
                .init(device),
            latent_pos_embed: PositionEmbeddingConfig::new(self.max_latent_size, self.hidden_size)
                .init(device)?,
        })
    }
}

/// The generation-side embeddings of BAGEL. Field names are the checkpoint's top-level
/// names: `vae2llm.*`, `llm2vae.*`, `time_embedder.mlp.{0,2}.*` (see [`TimestepEmbedder`]),
/// `latent_pos_embed.pos_embed`.
#[derive(Module, Debug)]
pub struct GenerationEmbeddings<B: Backend> {
    /// `latent_token_dim -> hidden`.
    pub vae2llm: Linear<B>,
    /// `hidden -> latent_token_dim`, zero-initialised.
    pub llm2vae: Linear<B>,
    /// Embeds each latent token's timestep (`time_embedder.mlp.{0,2}.*`).
    pub time_embedder: TimestepEmbedder<B>,
    /// Fixed `max_latent_size^2`-row sin-cos table, indexed `row * max_latent_size + col`.
    pub latent_pos_embed: PositionEmbedding<B>,
}

impl<B: Backend> GenerationEmbeddings<B> {
    /// Input tokens of VAE latents (noised or clean):
    /// `vae2llm(x_t) + time_embedder(t) + latent_pos_embed[position_ids]`.
    ///
    /// * `x_t`: `[N, latent_token_dim]` latent tokens;
    /// * `t`: `[N]` timestep of each token's image in `[0, 1]` (clean conditions: 0, whose
    ///   embedding is not zero and is added too);
    /// * `position_ids`: `N` ids `row * max_latent_size + col` (uno-packing's
    ///   `latent_position_ids`).
    ///
    /// # Shapes
    /// - `x_t`: `[N, latent_token_dim]`, `t`: `[N]`
    /// - output: `[N, hidden]`
    ///
    /// # Errors
    /// [`VisionError::ShapeMismatch`] when `x_t`, `t` and the ids disagree in length or
    /// `x_t`'s width is wrong; [`VisionError::PositionIdOutOfRange`] for an id past the
    /// table.
    pub fn input(
        &self,
        x_t: Tensor<B, 2>,
        t: Tensor<B, 1>,
        position_ids: &[usize],
    ) -> Result<Tensor<B, 2>, VisionError> {
        let [n, d] = x_t.dims();
        let [nt] = t.dims();
        let d_in = self.vae2llm.weight.dims()[0];
        if d != d_in {
            return Err(VisionError::shape("vae2llm input width", d_in, d));
        }
        if nt != n {
            return Err(VisionError::shape(
                "timesteps (one per latent token)",
                n,
                nt,
            ));
        }
        if position_ids.len() != n {
            return Err(VisionError::shape(
                "latent position ids (one per latent token)",
                n,
                position_ids.len(),
            ));
        }
        let pos = self.latent_pos_embed.forward(position_ids)?;
        Ok(self.vae2llm.forward(x_t) + self.time_embedder.forward(t) + pos)
    }

    /// Velocity prediction of hidden states: `llm2vae(h)`.
    ///
    /// # Shapes
    /// - `h`: `[N, hidden]`
    /// - output: `[N, latent_token_dim]`
    pub fn output(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        self.llm2vae.forward(h)
    }
}
