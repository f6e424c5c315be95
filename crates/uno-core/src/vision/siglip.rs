//! SigLIP vision encoder, NaViT style, as BAGEL runs it (`modeling/bagel/siglip_navit.py`).
//!
//! Field names follow the checkpoint: with the model stored under `vit_model`, every Burn
//! parameter path maps 1:1 to a key of BAGEL's `ema.safetensors`:
//!
//! | Burn path (under `vit_model`) | BAGEL key |
//! |---|---|
//! | `vision_model.embeddings.patch_embedding.{weight,bias}` | `vit_model.vision_model.embeddings.patch_embedding.{weight,bias}` (Linear `[1152, 588]`) |
//! | `vision_model.embeddings.position_embedding.weight` | same (`[4900, 1152]`, not transposed) |
//! | `vision_model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj.{weight,bias}` | same |
//! | `vision_model.encoder.layers.{i}.{layer_norm1,layer_norm2}.{gamma,beta}` | `...{layer_norm1,layer_norm2}.{weight,bias}` |
//! | `vision_model.encoder.layers.{i}.mlp.{fc1,fc2}.{weight,bias}` | same |
//! | `vision_model.post_layernorm.{gamma,beta}` | `vit_model.vision_model.post_layernorm.{weight,bias}` |
//!
//! Burn's `Linear` stores its weight `[in, out]` (PyTorch: `[out, in]`, so a loader
//! transposes) and norms call their affine parameters `gamma` / `beta`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu_approximate;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::patch::{PixelLayout, patchify};
use crate::patch::{VisionError, check_ids, ids_tensor};

fn default_hidden_size() -> usize {
    768
}
fn default_intermediate_size() -> usize {
    3072
}
fn default_num_hidden_layers() -> usize {
    12
}
fn default_num_attention_heads() -> usize {
    12
}
fn default_num_channels() -> usize {
    3
}
fn default_image_size() -> usize {
    224
}
fn default_patch_size() -> usize {
    16
}
fn default_layer_norm_eps() -> f64 {
    1e-6
}

/// SigLIP vision configuration, mirroring the fields of BAGEL's `vit_config.json` (Hugging
/// Face `SiglipVisionConfig`). Missing fields take Hugging Face's defaults; unknown fields
/// (`model_type`, `hidden_act`, dropout, ...) are ignored: the activation is always
/// `gelu_pytorch_tanh` and there is no dropout at this level.
///
/// `layers_used` is ours (not in the JSON): how many encoder layers are built and run.
/// `None` means all `num_hidden_layers`; BAGEL drops the last layer (`vit_select_layer =
/// -2`), which [`SiglipVisionConfig::for_bagel`] applies, and its checkpoint holds only
/// those layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiglipVisionConfig {
    /// Token width (so400m: 1152; Hugging Face default 768).
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    /// MLP inner width (so400m: 4304; default 3072).
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    /// Attention heads; must divide `hidden_size` (so400m: 16; default 12).
    #[serde(default = "default_num_attention_heads")]
    pub num_attention_heads: usize,
    /// Encoder layers in the JSON, including any not used (so400m: 27; default 12).
    #[serde(default = "default_num_hidden_layers")]
    pub num_hidden_layers: usize,
    /// Patch side in pixels (BAGEL: 14; default 16).
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    /// Largest image side: the position table has `(image_size / patch_size)^2` rows.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Epsilon of every LayerNorm (1e-6).
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Image channels (3, RGB).
    #[serde(default = "default_num_channels")]
    pub num_channels: usize,
    /// Encoder layers built and run (`None`: all `num_hidden_layers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers_used: Option<usize>,
}

impl Config for SiglipVisionConfig {}

impl SiglipVisionConfig {
    /// SigLIP so400m at BAGEL's settings: patch 14, image 980 (70x70 table), hidden 1152,
    /// MLP 4304, 16 heads, 27 layers of which the first 26 are used.
    pub fn so400m_bagel() -> Self {
        Self {
            hidden_size: 1152,
            intermediate_size: 4304,
            num_attention_heads: 16,
            num_hidden_layers: 27,
            patch_size: 14,
            image_size: 980,
            layer_norm_eps: 1e-6,
            num_channels: 3,
            layers_used: Some(26),
        }
    }

    /// A tiny ViT for tests: hidden 32, MLP 48, 4 heads, 3 layers of which 2 are used,
    /// patch 2, image 8 (4x4 position table), 3 channels.
    pub fn tiny() -> Self {
        Self {
            hidden_size: 32,
            intermediate_size: 48,
            num_attention_heads: 4,
            num_hidden_layers: 3,
            patch_size: 2,
            image_size: 8,
            layer_norm_eps: 1e-6,
            num_channels: 3,
            layers_used: Some(2),
        }
    }

    /// Parse a `vit_config.json` text.
    pub fn from_json(text: &str) -> Result<Self, VisionError> {
        serde_json::from_str(text)
            .map_err(|e| VisionError::InvalidConfig(format!("vit config JSON: {e}")))
    }

    /// BAGEL's layer selection: use all layers but the last (`num_hidden_layers - 1`).
    pub fn for_bagel(mut self) -> Self {
        self.layers_used = Some(self.num_hidden_layers.saturating_sub(1));
        self
    }

    /// Encoder layers built and run.
    pub fn num_layers(&self) -> usize {
        self.layers_used.unwrap_or(self.num_hidden_layers)
    }

    /// Patches per side of the position table (`image_size / patch_size`, 70 for BAGEL).
    pub fn max_patches_per_side(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Length of one patch row: `patch_size^2 * num_channels` (588 for BAGEL).
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.num_channels
    }

    /// Check the configuration describes a buildable model.
    pub fn validate(&self) -> Result<(), VisionError> {
        let bad = |m: String| Err(VisionError::InvalidConfig(m));
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return bad(format!(
                "hidden_size {} and num_attention_heads {} must be positive",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.patch_size == 0 || self.num_channels == 0 || self.intermediate_size == 0 {
            return bad(format!(
                "patch_size {}, num_channels {} and intermediate_size {} must be positive",
                self.patch_size, self.num_channels, self.intermediate_size
            ));
        }
        if self.image_size < self.patch_size {
            return bad(format!(
                "image_size {} is smaller than patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.num_layers() > self.num_hidden_layers {
            return bad(format!(
                "layers_used {} exceeds num_hidden_layers {}",
                self.num_layers(),
                self.num_hidden_layers
            ));
        }
        Ok(())
    }

    /// Build the model with Burn's default initialisers (weights are meant to be loaded).
    pub fn init<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<SiglipVisionModel<B>, VisionError> {
        self.validate()?;
        let d = self.hidden_size;
        let side = self.max_patches_per_side();
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let layers = (0..self.num_layers())
            .map(|_| SiglipEncoderLayer {
                self_attn: SiglipAttention {
                    q_proj: LinearConfig::new(d, d).init(device),
                    k_proj: LinearConfig::new(d, d).init(device),
                    v_proj: LinearConfig::new(d, d).init(device),
                    out_proj: LinearConfig::new(d, d).init(device),
                    num_heads: self.num_attention_heads,
                },
                layer_norm1: norm(),
                mlp: SiglipMlp {
                    fc1: LinearConfig::new(d, self.intermediate_size).init(device),
                    fc2: LinearConfig::new(self.intermediate_size, d).init(device),
                },
                layer_norm2: norm(),
            })
            .collect();
        Ok(SiglipVisionModel {
            vision_model: SiglipVisionTransformer {
                embeddings: SiglipVisionEmbeddings {
                    patch_embedding: LinearConfig::new(self.patch_dim(), d).init(device),
                    position_embedding: EmbeddingConfig::new(side * side, d).init(device),
                    patch_size: self.patch_size,
                    num_channels: self.num_channels,
                    max_patches_per_side: side,
                },
                encoder: SiglipEncoder { layers },
                post_layernorm: norm(),
            },
        })
    }
}

/// Patch embedding (a Linear on `(py, px, c)` patch rows) plus the learned position table.
#[derive(Module, Debug)]
pub struct SiglipVisionEmbeddings<B: Backend> {
    /// `patch^2 * C -> hidden` (BAGEL's `convert_conv2d_to_linear`).
    pub patch_embedding: Linear<B>,
    /// `max_patches_per_side^2` rows, row `row * max_patches_per_side + col`.
    pub position_embedding: Embedding<B>,
    /// Patch side in pixels (a constant, not a parameter).
    pub patch_size: usize,
    /// Image channels (a constant).
    pub num_channels: usize,
    /// Side of the position table (a constant; BAGEL: 70).
    pub max_patches_per_side: usize,
}

/// Multi-head self-attention with biased q/k/v/out projections, scale `head_dim^-0.5`.
#[derive(Module, Debug)]
pub struct SiglipAttention<B: Backend> {
    /// Query projection, `hidden -> hidden`.
    pub q_proj: Linear<B>,
    /// Key projection, `hidden -> hidden`.
    pub k_proj: Linear<B>,
    /// Value projection, `hidden -> hidden`.
    pub v_proj: Linear<B>,
    /// Output projection, `hidden -> hidden`.
    pub out_proj: Linear<B>,
    /// Attention heads (a constant); `head_dim = hidden / num_heads`.
    pub num_heads: usize,
}

impl<B: Backend> SiglipAttention<B> {
    /// Bidirectional attention inside each image: `x` is `[sum(seq_lens), hidden]`, rows of
    /// image `i` are the `seq_lens[i]` consecutive rows after those of images `0..i`.
    /// Images never see each other (BAGEL's `flash_attn_varlen_func` with `cu_seqlens`).
    ///
    /// # Shapes
    /// - `x`: `[sum(seq_lens), hidden]`
    /// - output: `[sum(seq_lens), hidden]`
    pub fn forward(&self, x: Tensor<B, 2>, seq_lens: &[usize]) -> Tensor<B, 2> {
        let [_, d] = x.dims();
        let h = self.num_heads;
        let hd = d / h;
        let heads = |t: Tensor<B, 2>, n: usize| t.reshape([1, n, h, hd]).swap_dims(1, 2);
        let q = self.q_proj.forward(x.clone());
        let k = self.k_proj.forward(x.clone());
        let v = self.v_proj.forward(x);
        let mut outs = Vec::with_capacity(seq_lens.len());
        let mut start = 0;
        for &n in seq_lens {
            let qi = heads(q.clone().narrow(0, start, n), n);
            let ki = heads(k.clone().narrow(0, start, n), n);
            let vi = heads(v.clone().narrow(0, start, n), n);
            let o = attention(qi, ki, vi, None, None, AttentionModuleOptions::default());
            outs.push(o.swap_dims(1, 2).reshape([n, d]));
            start += n;
        }
        self.out_proj.forward(Tensor::cat(outs, 0))
    }
}

/// `fc2(gelu_tanh(fc1(x)))`.
#[derive(Module, Debug)]
pub struct SiglipMlp<B: Backend> {
    /// `hidden -> intermediate`.
    pub fc1: Linear<B>,
    /// `intermediate -> hidden`.
    pub fc2: Linear<B>,
}

impl<B: Backend> SiglipMlp<B> {
    /// Apply the MLP to every row.
    ///
    /// # Shapes
    /// - `x`: `[N, hidden]`
    /// - output: `[N, hidden]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc2.forward(gelu_approximate(self.fc1.forward(x)))
    }
}

/// Pre-norm encoder layer: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Module, Debug)]
pub struct SiglipEncoderLayer<B: Backend> {
    /// Per-image self-attention.
    pub self_attn: SiglipAttention<B>,
    /// Norm before the attention.
    pub layer_norm1: LayerNorm<B>,
    /// The feed-forward block.
    pub mlp: SiglipMlp<B>,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> SiglipEncoderLayer<B> {
    /// One layer over packed images; `seq_lens` as in [`SiglipAttention::forward`].
    ///
    /// # Shapes
    /// - `x`: `[sum(seq_lens), hidden]`
    /// - output: `[sum(seq_lens), hidden]`
    pub fn forward(&self, x: Tensor<B, 2>, seq_lens: &[usize]) -> Tensor<B, 2> {
        let x = x.clone()
            + self
                .self_attn
                .forward(self.layer_norm1.forward(x), seq_lens);
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// The stack of encoder layers actually used.
#[derive(Module, Debug)]
pub struct SiglipEncoder<B: Backend> {
    /// `layers_used` layers (BAGEL: 26 of 27), run in order.
    pub layers: Vec<SiglipEncoderLayer<B>>,
}

/// Embeddings, encoder and post-layernorm (Hugging Face's `vision_model`).
#[derive(Module, Debug)]
pub struct SiglipVisionTransformer<B: Backend> {
    /// Patch embedding and position table.
    pub embeddings: SiglipVisionEmbeddings<B>,
    /// The encoder layers.
    pub encoder: SiglipEncoder<B>,
    /// Final LayerNorm, applied to the output (BAGEL keeps it).
    pub post_layernorm: LayerNorm<B>,
}

/// The SigLIP NaViT encoder; its single field makes parameter paths read like BAGEL's keys
/// (`vit_model.vision_model....`).
#[derive(Module, Debug)]
pub struct SiglipVisionModel<B: Backend> {
    /// The whole encoder.
    pub vision_model: SiglipVisionTransformer<B>,
}

impl<B: Backend> SiglipVisionModel<B> {
    /// Length of one patch row (`patch^2 * C`, 588 for BAGEL).
    pub fn patch_dim(&self) -> usize {
        let e = &self.vision_model.embeddings;
        e.patch_size * e.patch_size * e.num_channels
    }

    /// Rows of the learned position table (`max_patches_per_side^2`).
    pub fn position_table_rows(&self) -> usize {
        let s = self.vision_model.embeddings.max_patches_per_side;
        s * s
    }

    /// Encode packed patch rows (BAGEL's `packed_pixel_values`).
    ///
    /// * `patches`: `[N, patch^2 * C]`, the rows of all images back to back, each image's
    ///   rows from [`patchify`];
    /// * `position_ids`: `N` ids into the position table, `row * max_patches_per_side + col`
    ///   (uno-packing's `vit_position_ids`);
    /// * `seq_lens`: patches per image, summing to `N`; attention is confined to each image.
    ///
    /// Returns the tokens after the post-layernorm.
    ///
    /// # Shapes
    /// - `patches`: `[N, patch^2 * C]`
    /// - output: `[N, hidden]`
    ///
    /// # Errors
    /// [`VisionError::ShapeMismatch`] for a wrong row length, id count or `seq_lens` sum (or
    /// an empty image), [`VisionError::PositionIdOutOfRange`] for an id past the table.
    pub fn forward(
        &self,
        patches: Tensor<B, 2>,
        position_ids: &[usize],
        seq_lens: &[usize],
    ) -> Result<Tensor<B, 2>, VisionError> {
        let [n, d] = patches.dims();
        if d != self.patch_dim() {
            return Err(VisionError::shape(
                "ViT patch row length (patch^2 * channels)",
                self.patch_dim(),
                d,
            ));
        }
        if position_ids.len() != n {
            return Err(VisionError::shape(
                "ViT position ids (one per patch row)",
                n,
                position_ids.len(),
            ));
        }
        let total: usize = seq_lens.iter().sum();
        if total != n {
            return Err(VisionError::shape(
                "ViT seq_lens sum (number of patch rows)",
                n,
                total,
            ));
        }
        if let Some(i) = seq_lens.iter().position(|&l| l == 0) {
            return Err(VisionError::shape(
                "ViT seq_lens (every image has at least one patch)",
                "> 0",
                format!("seq_lens[{i}] = 0"),
            ));
        }
        check_ids(
            "ViT position_embedding",
            position_ids,
            self.position_table_rows(),
        )?;
        let vm = &self.vision_model;
        let ids = ids_tensor::<B>(position_ids, &patches.device());
        let pos = vm.embeddings.position_embedding.weight.val().select(0, ids);
        let mut x = vm.embeddings.patch_embedding.forward(patches) + pos;
        for layer in &vm.encoder.layers {
            x = layer.forward(x, seq_lens);
        }
        Ok(vm.post_layernorm.forward(x))
    }

    /// Patchify `images` (`[C, H, W]` each, any sizes, values as the ViT expects them:
    /// BAGEL normalises to `[-1, 1]`), compute their position ids and run [`Self::forward`].
    ///
    /// Returns the packed output and each image's grid `[rows, cols]`.
    ///
    /// # Shapes
    /// - `images`: each `[C, H, W]`
    /// - output: `[sum of rows * cols, hidden]`
    ///
    /// # Errors
    /// [`VisionError::NotDivisible`] for a side not a multiple of the patch,
    /// [`VisionError::GridTooLarge`] for more than `max_patches_per_side` patches on a side,
    /// plus those of [`Self::forward`].
    pub fn forward_images(
        &self,
        images: &[Tensor<B, 3>],
    ) -> Result<(Tensor<B, 2>, Vec<[usize; 2]>), VisionError> {
        let e = &self.vision_model.embeddings;
        let side = e.max_patches_per_side;
        if images.is_empty() {
            return Err(VisionError::shape("ViT images", "at least one", 0));
        }
        let mut rows_all = Vec::with_capacity(images.len());
        let mut ids = Vec::new();
        let mut lens = Vec::with_capacity(images.len());
        let mut grids = Vec::with_capacity(images.len());
        for image in images {
            let [c, _, _] = image.dims();
            if c != e.num_channels {
                return Err(VisionError::shape("ViT image channels", e.num_channels, c));
            }
            let (rows, [r, cc]) = patchify(image.clone(), e.patch_size, PixelLayout::Chw)?;
            if r > side || cc > side {
                return Err(VisionError::GridTooLarge {
                    what: "ViT image",
                    rows: r,
                    cols: cc,
                    max: side,
                });
            }
            ids.extend((0..r).flat_map(|y| (0..cc).map(move |x| y * side + x)));
            lens.push(r * cc);
            grids.push([r, cc]);
            rows_all.push(rows);
        }
        let out = self.forward(Tensor::cat(rows_all, 0), &ids, &lens)?;
        Ok((out, grids))
    }
}
