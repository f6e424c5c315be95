//! The FLUX autoencoder (black-forest-labs `flux/modules/autoencoder.py`), as BAGEL uses it.
//!
//! Field names are the `ae.safetensors` keys, so a loader maps them 1:1:
//!
//! * `encoder.conv_in`, `encoder.down.{i}.block.{j}.{norm1,conv1,norm2,conv2,nin_shortcut}`,
//!   `encoder.down.{i}.downsample.conv`, `encoder.mid.{block_1,attn_1,block_2}`,
//!   `encoder.norm_out`, `encoder.conv_out`;
//! * `decoder.conv_in`, `decoder.mid.*`, `decoder.up.{i}.block.{j}.*`,
//!   `decoder.up.{i}.upsample.conv`, `decoder.norm_out`, `decoder.conv_out`;
//! * attention blocks: `{norm,q,k,v,proj_out}` (1x1 convs).
//!
//! Conv weights have PyTorch's layout (`[out, in, kh, kw]`, no transpose); GroupNorm's
//! `weight` / `bias` are `gamma` / `beta` (our [`GroupNorm`], precise over large groups).
//! `decoder.up.{i}` is indexed by resolution level like FLUX (`up.0` is the full-resolution
//! level, run last).

use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::silu;
use burn::tensor::module::{attention, interpolate};
use burn::tensor::ops::{AttentionModuleOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use super::norm::{GroupNorm, GroupNormConfig};
use super::{LatentCodec, LatentSampling, Posterior, VisionError};

fn default_resolution() -> usize {
    256
}
fn default_in_channels() -> usize {
    3
}
fn default_ch() -> usize {
    128
}
fn default_out_ch() -> usize {
    3
}
fn default_ch_mult() -> Vec<usize> {
    vec![1, 2, 4, 4]
}
fn default_num_res_blocks() -> usize {
    2
}
fn default_z_channels() -> usize {
    16
}
fn default_scale_factor() -> f64 {
    0.3611
}
fn default_shift_factor() -> f64 {
    0.1159
}
fn default_norm_groups() -> usize {
    32
}
fn default_norm_eps() -> f64 {
    1e-6
}

/// FLUX `AutoEncoderParams` (missing JSON fields take FLUX-dev's values). `norm_groups`
/// and `norm_eps` are fixed at 32 and 1e-6 in FLUX; they are fields here so tiny test
/// models can have fewer channels. `resolution` is unused by the computation (kept for
/// parity with FLUX's params).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FluxAeConfig {
    /// Training resolution of the release (256); unused by the computation.
    #[serde(default = "default_resolution")]
    pub resolution: usize,
    /// Image channels in (3, RGB).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Base channel width (release: 128); level `i` has `ch * ch_mult[i]` channels.
    #[serde(default = "default_ch")]
    pub ch: usize,
    /// Image channels out of the decoder (3).
    #[serde(default = "default_out_ch")]
    pub out_ch: usize,
    /// Channel multiplier per resolution level (release: `[1, 2, 4, 4]`); each level after the first halves the resolution.
    #[serde(default = "default_ch_mult")]
    pub ch_mult: Vec<usize>,
    /// ResNet blocks per encoder level (the decoder has one more per level).
    #[serde(default = "default_num_res_blocks")]
    pub num_res_blocks: usize,
    /// Latent channels (16); the encoder outputs `2 * z` moments (mean, log-variance).
    #[serde(default = "default_z_channels")]
    pub z_channels: usize,
    /// Latent scale: `z = scale * (posterior - shift)` (0.3611).
    #[serde(default = "default_scale_factor")]
    pub scale_factor: f64,
    /// Latent shift (0.1159).
    #[serde(default = "default_shift_factor")]
    pub shift_factor: f64,
    /// GroupNorm groups (32); must divide every level's channels.
    #[serde(default = "default_norm_groups")]
    pub norm_groups: usize,
    /// GroupNorm epsilon (1e-6).
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
}

impl Config for FluxAeConfig {}

impl Default for FluxAeConfig {
    /// FLUX-dev's autoencoder (BAGEL's VAE): ch 128, mult `[1, 2, 4, 4]`, z 16.
    fn default() -> Self {
        Self::flux()
    }
}

impl FluxAeConfig {
    /// FLUX-dev's autoencoder: downsample 8, z 16, ch 128, mult `[1, 2, 4, 4]`, 2 res blocks
    /// per encoder level (3 per decoder level), GroupNorm(32, eps 1e-6), scale 0.3611,
    /// shift 0.1159.
    pub fn flux() -> Self {
        Self {
            resolution: default_resolution(),
            in_channels: default_in_channels(),
            ch: default_ch(),
            out_ch: default_out_ch(),
            ch_mult: default_ch_mult(),
            num_res_blocks: default_num_res_blocks(),
            z_channels: default_z_channels(),
            scale_factor: default_scale_factor(),
            shift_factor: default_shift_factor(),
            norm_groups: default_norm_groups(),
            norm_eps: default_norm_eps(),
        }
    }

    /// A tiny autoencoder for tests: ch 8, mult `[1, 2]` (downsample 2), z 16, 4 norm
    /// groups, FLUX's scale and shift.
    pub fn tiny() -> Self {
        Self {
            resolution: 16,
            ch: 8,
            ch_mult: vec![1, 2],
            norm_groups: 4,
            ..Self::flux()
        }
    }

    /// Pixels per latent cell side: `2^(len(ch_mult) - 1)`.
    pub fn downsample(&self) -> usize {
        1 << self.ch_mult.len().saturating_sub(1)
    }

    /// Check every GroupNorm divides its channels and the sizes are positive.
    pub fn validate(&self) -> Result<(), VisionError> {
        let bad = |m: String| Err(VisionError::InvalidConfig(m));
        if self.ch_mult.is_empty() || self.ch_mult.contains(&0) {
            return bad(format!(
                "ch_mult {:?} must be non-empty and positive",
                self.ch_mult
            ));
        }
        if self.ch == 0 || self.z_channels == 0 || self.in_channels == 0 || self.out_ch == 0 {
            return bad("ch, z_channels, in_channels and out_ch must be positive".into());
        }
        if self.norm_groups == 0 {
            return bad("norm_groups must be positive".into());
        }
        for m in &self.ch_mult {
            let c = self.ch * m;
            if !c.is_multiple_of(self.norm_groups) {
                return bad(format!(
                    "GroupNorm: {c} channels (ch {} * mult {m}) not divisible by {} groups",
                    self.ch, self.norm_groups
                ));
            }
        }
        if self.scale_factor == 0.0 {
            return bad("scale_factor must be non-zero".into());
        }
        Ok(())
    }

    fn norm<B: Backend>(&self, c: usize, device: &B::Device) -> Result<GroupNorm<B>, VisionError> {
        GroupNormConfig::new(self.norm_groups, c)
            .with_epsilon(self.norm_eps)
            .init(device)
    }

    fn conv<B: Backend>(&self, cin: usize, cout: usize, k: usize, device: &B::Device) -> Conv2d<B> {
        let pad = k / 2;
        Conv2dConfig::new([cin, cout], [k, k])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init(device)
    }

    fn resnet<B: Backend>(
        &self,
        cin: usize,
        cout: usize,
        device: &B::Device,
    ) -> Result<ResnetBlock<B>, VisionError> {
        Ok(ResnetBlock {
            norm1: self.norm(cin, device)?,
            conv1: self.conv(cin, cout, 3, device),
            norm2: self.norm(cout, device)?,
            conv2: self.conv(cout, cout, 3, device),
            nin_shortcut: (cin != cout).then(|| self.conv(cin, cout, 1, device)),
        })
    }

    fn attn<B: Backend>(&self, c: usize, device: &B::Device) -> Result<AttnBlock<B>, VisionError> {
        Ok(AttnBlock {
            norm: self.norm(c, device)?,
            q: self.conv(c, c, 1, device),
            k: self.conv(c, c, 1, device),
            v: self.conv(c, c, 1, device),
            proj_out: self.conv(c, c, 1, device),
        })
    }

    fn mid<B: Backend>(&self, c: usize, device: &B::Device) -> Result<FluxMid<B>, VisionError> {
        Ok(FluxMid {
            block_1: self.resnet(c, c, device)?,
            attn_1: self.attn(c, device)?,
            block_2: self.resnet(c, c, device)?,
        })
    }

    /// Build the encoder and decoder with Burn's default initialisers (weights are meant to
    /// be loaded from `ae.safetensors`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<FluxAutoEncoder<B>, VisionError> {
        self.validate()?;
        let levels = self.ch_mult.len();
        let ch = self.ch;

        // Encoder.
        let mut down = Vec::with_capacity(levels);
        let mut block_in = ch;
        for (i, m) in self.ch_mult.iter().enumerate() {
            let block_out = ch * m;
            let mut block = Vec::with_capacity(self.num_res_blocks);
            for _ in 0..self.num_res_blocks {
                block.push(self.resnet(block_in, block_out, device)?);
                block_in = block_out;
            }
            let downsample = (i + 1 != levels).then(|| Downsample {
                conv: Conv2dConfig::new([block_in, block_in], [3, 3])
                    .with_stride([2, 2])
                    // (top, left, bottom, right): FLUX pads (0, 1, 0, 1) right and bottom.
                    .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
                    .init(device),
            });
            down.push(DownLevel { block, downsample });
        }
        let encoder = FluxEncoder {
            conv_in: self.conv(self.in_channels, ch, 3, device),
            down,
            mid: self.mid(block_in, device)?,
            norm_out: self.norm(block_in, device)?,
            conv_out: self.conv(block_in, 2 * self.z_channels, 3, device),
        };

        // Decoder: built from the deepest level up, stored by level index.
        let mut block_in = ch * self.ch_mult[levels - 1];
        let conv_in = self.conv(self.z_channels, block_in, 3, device);
        let mid = self.mid(block_in, device)?;
        let mut up: Vec<UpLevel<B>> = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let block_out = ch * self.ch_mult[i];
            let mut block = Vec::with_capacity(self.num_res_blocks + 1);
            for _ in 0..=self.num_res_blocks {
                block.push(self.resnet(block_in, block_out, device)?);
                block_in = block_out;
            }
            let upsample = (i != 0).then(|| Upsample {
                conv: self.conv(block_in, block_in, 3, device),
            });
            up.push(UpLevel { block, upsample });
        }
        up.reverse();
        let decoder = FluxDecoder {
            conv_in,
            mid,
            up,
            norm_out: self.norm(block_in, device)?,
            conv_out: self.conv(block_in, self.out_ch, 3, device),
        };
        Ok(FluxAutoEncoder {
            encoder,
            decoder,
            in_channels: self.in_channels,
            z_channels: self.z_channels,
            scale_factor: self.scale_factor,
            shift_factor: self.shift_factor,
        })
    }
}

/// `x * sigmoid(x)`.
fn swish<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    silu(x)
}

/// `x' = shortcut(x) + conv2(swish(norm2(conv1(swish(norm1(x))))))`; the shortcut is a 1x1
/// conv `nin_shortcut` when the channel count changes, else the identity.
#[derive(Module, Debug)]
pub struct ResnetBlock<B: Backend> {
    /// Norm before the first conv.
    pub norm1: GroupNorm<B>,
    /// First 3x3 conv (to the block's output channels).
    pub conv1: Conv2d<B>,
    /// Norm before the second conv.
    pub norm2: GroupNorm<B>,
    /// Second 3x3 conv.
    pub conv2: Conv2d<B>,
    /// 1x1 conv on the shortcut when the channel count changes (`None`: identity).
    pub nin_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> ResnetBlock<B> {
    /// Apply the block.
    ///
    /// # Shapes
    /// - input and output: `[N, C, H, W]` (resolution and channels as the block sets them)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv1.forward(swish(self.norm1.forward(x.clone())));
        let h = self.conv2.forward(swish(self.norm2.forward(h)));
        let x = match &self.nin_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        x + h
    }
}

/// Single-head self-attention over all cells: `x + proj_out(attn(q, k, v))` with `q, k, v`
/// 1x1 convs of `norm(x)` and scale `C^-0.5`.
#[derive(Module, Debug)]
pub struct AttnBlock<B: Backend> {
    /// Norm of the input before the projections.
    pub norm: GroupNorm<B>,
    /// 1x1 query projection.
    pub q: Conv2d<B>,
    /// 1x1 key projection.
    pub k: Conv2d<B>,
    /// 1x1 value projection.
    pub v: Conv2d<B>,
    /// 1x1 output projection (added to the input).
    pub proj_out: Conv2d<B>,
}

impl<B: Backend> AttnBlock<B> {
    /// Apply the block.
    ///
    /// # Shapes
    /// - input and output: `[N, C, H, W]` (resolution and channels as the block sets them)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let n = self.norm.forward(x.clone());
        // [b, c, h, w] -> [b, 1, h*w, c]
        let seq = |t: Tensor<B, 4>| {
            t.reshape([b, c, h * w])
                .swap_dims(1, 2)
                .reshape([b, 1, h * w, c])
        };
        let q = seq(self.q.forward(n.clone()));
        let k = seq(self.k.forward(n.clone()));
        let v = seq(self.v.forward(n));
        let o = attention(q, k, v, None, None, AttentionModuleOptions::default());
        let o = o
            .reshape([b, h * w, c])
            .swap_dims(1, 2)
            .reshape([b, c, h, w]);
        x + self.proj_out.forward(o)
    }
}

/// Stride-2 3x3 conv after zero padding one row at the bottom and one column at the right.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// The 3x3 conv.
    pub conv: Conv2d<B>,
}

/// Nearest-neighbour x2 upsampling, then a 3x3 conv.
#[derive(Module, Debug)]
pub struct Upsample<B: Backend> {
    /// The 3x3 conv.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample<B> {
    /// Apply the block.
    ///
    /// # Shapes
    /// - input and output: `[N, C, H, W]` (resolution and channels as the block sets them)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let x = interpolate(
            x,
            [2 * h, 2 * w],
            InterpolateOptions::new(InterpolateMode::Nearest),
        );
        self.conv.forward(x)
    }
}

/// One encoder level: its res blocks, then (except the last level) a downsample.
#[derive(Module, Debug)]
pub struct DownLevel<B: Backend> {
    /// The level's ResNet blocks.
    pub block: Vec<ResnetBlock<B>>,
    /// Halves the resolution (`None` on the last level).
    pub downsample: Option<Downsample<B>>,
}

/// One decoder level: its res blocks, then (except level 0) an upsample.
#[derive(Module, Debug)]
pub struct UpLevel<B: Backend> {
    /// The level's ResNet blocks.
    pub block: Vec<ResnetBlock<B>>,
    /// Doubles the resolution (`None` on the last decoder level).
    pub upsample: Option<Upsample<B>>,
}

/// `block_2(attn_1(block_1(x)))`.
#[derive(Module, Debug)]
pub struct FluxMid<B: Backend> {
    /// ResNet block before the attention.
    pub block_1: ResnetBlock<B>,
    /// Single-head self-attention over all positions.
    pub attn_1: AttnBlock<B>,
    /// ResNet block after the attention.
    pub block_2: ResnetBlock<B>,
}

impl<B: Backend> FluxMid<B> {
    /// Apply the block.
    ///
    /// # Shapes
    /// - input and output: `[N, C, H, W]` (resolution and channels as the block sets them)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.block_2
            .forward(self.attn_1.forward(self.block_1.forward(x)))
    }
}

/// FLUX encoder: images in `[-1, 1]` to `[N, 2z, H/f, W/f]` (mean then log-variance).
#[derive(Module, Debug)]
pub struct FluxEncoder<B: Backend> {
    /// 3x3 conv into the first level's width.
    pub conv_in: Conv2d<B>,
    /// Resolution levels, highest resolution first.
    pub down: Vec<DownLevel<B>>,
    /// ResNet, attention, ResNet at the lowest resolution.
    pub mid: FluxMid<B>,
    /// Final norm (then swish).
    pub norm_out: GroupNorm<B>,
    /// 3x3 conv to the output channels (encoder: `2 * z` moments; decoder: RGB).
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> FluxEncoder<B> {
    /// Apply the block.
    ///
    /// # Shapes
    /// - input and output: `[N, C, H, W]` (resolution and channels as the block sets them)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.conv_in.forward(x);
        for level in &self.down {
            for block in &level.block {
                h = block.forward(h);
            }
            if let Some(d) = &level.downsample {
                h = d.conv.forward(h);
            }
        }
        let h = self.mid.forward(h);
        self.conv_out.forward(swish(self.norm_out.forward(h)))
    }
}

/// FLUX decoder: unscaled latents `[N, z, h, w]` to images `[N, 3, h f, w f]` (about
/// `[-1, 1]`).
#[derive(Module, Debug)]
pub struct FluxDecoder<B: Backend> {
    /// 3x3 conv into the first level's width.
    pub conv_in: Conv2d<B>,
    /// ResNet, attention, ResNet at the lowest resolution.
    pub mid: FluxMid<B>,
    /// Resolution levels in FLUX's order (index 0 is the highest resolution; run last to first).
    pub up: Vec<UpLevel<B>>,
    /// Final norm (then swish).
    pub norm_out: GroupNorm<B>,
    /// 3x3 conv to the output channels (encoder: `2 * z` moments; decoder: RGB).
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> FluxDecoder<B> {
    /// Apply the block.
    ///
    /// # Shapes
    /// - input and output: `[N, C, H, W]` (resolution and channels as the block sets them)
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.mid.forward(self.conv_in.forward(z));
        for level in self.up.iter().rev() {
            for block in &level.block {
                h = block.forward(h);
            }
            if let Some(u) = &level.upsample {
                h = u.forward(h);
            }
        }
        self.conv_out.forward(swish(self.norm_out.forward(h)))
    }
}

/// The FLUX autoencoder; parameter paths are `ae.safetensors` keys (see the module docs).
/// Encoding takes the posterior mean, or a seeded draw from the posterior
/// ([`LatentCodec::encode_with`], [`LatentSampling`]) as BAGEL's training does.
#[derive(Module, Debug)]
pub struct FluxAutoEncoder<B: Backend> {
    /// Image to posterior moments.
    pub encoder: FluxEncoder<B>,
    /// Latent to image.
    pub decoder: FluxDecoder<B>,
    /// Image channels in (3, RGB).
    pub in_channels: usize,
    /// Latent channels (16); the encoder outputs `2 * z` moments (mean, log-variance).
    pub z_channels: usize,
    /// Latent scale: `z = scale * (posterior - shift)` (0.3611).
    pub scale_factor: f64,
    /// Latent shift (0.1159).
    pub shift_factor: f64,
}

impl<B: Backend> FluxAutoEncoder<B> {
    /// Pixels per latent cell side: `2^(number of downsamples)`.
    pub fn downsample_factor(&self) -> usize {
        1 << self
            .encoder
            .down
            .iter()
            .filter(|l| l.downsample.is_some())
            .count()
    }

    /// FLUX's `AutoEncoder.encode` with the posterior mean: images `[N, C, H, W]` in
    /// `[-1, 1]` to `scale * (mean - shift)`, `[N, z, H/f, W/f]`.
    ///
    /// # Errors
    /// Those of [`Self::posterior`].
    pub fn encode_raw(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        self.encode_raw_with(x, LatentSampling::Mean, 0)
    }

    /// [`Self::encode_raw`] with the latent chosen by `sampling`: the mean, or (FLUX's
    /// `DiagonalGaussian(sample=True)`) `mean + exp(logvar / 2) * eps` with `eps ~ N(0, 1)`
    /// drawn on the host from `seed`, then scaled and shifted.
    ///
    /// # Errors
    /// Those of [`Self::posterior`].
    pub fn encode_raw_with(
        &self,
        x: Tensor<B, 4>,
        sampling: LatentSampling,
        seed: u64,
    ) -> Result<Tensor<B, 4>, VisionError> {
        let (mean, logvar) = self.posterior(x)?;
        Ok(self.scale_latent(sampling.latent(mean, logvar, seed)))
    }

    /// FLUX's latent scaling: `scale * (z - shift)`.
    fn scale_latent(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        (z - self.shift_factor) * self.scale_factor
    }

    /// The encoder's posterior `N(mean, exp(logvar))` of images `[N, C, H, W]` in
    /// `[-1, 1]`: `(mean, logvar)`, each `[N, z, H/f, W/f]`, unscaled.
    ///
    /// # Errors
    /// [`VisionError::ShapeMismatch`] for a wrong channel count,
    /// [`VisionError::NotDivisible`] for sides not multiples of `f`.
    pub fn posterior(&self, x: Tensor<B, 4>) -> Result<(Tensor<B, 4>, Tensor<B, 4>), VisionError> {
        let [_, c, h, w] = x.dims();
        if c != self.in_channels {
            return Err(VisionError::shape(
                "FLUX encoder image channels",
                self.in_channels,
                c,
            ));
        }
        let f = self.downsample_factor();
        VisionError::check_divisible("FLUX encode", h, w, f)?;
        let moments = self.encoder.forward(x);
        let z = self.z_channels;
        Ok((moments.clone().narrow(1, 0, z), moments.narrow(1, z, z)))
    }

    /// FLUX's `AutoEncoder.decode`: latents `[N, z, h, w]` (scaled, as [`Self::encode_raw`]
    /// gives them) to the decoder's raw output (about `[-1, 1]`, not clamped):
    /// `decoder(z / scale + shift)`.
    ///
    /// # Errors
    /// [`VisionError::ShapeMismatch`] for a wrong channel count.
    pub fn decode_raw(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        let [_, c, _, _] = z.dims();
        if c != self.z_channels {
            return Err(VisionError::shape(
                "FLUX decoder latent channels",
                self.z_channels,
                c,
            ));
        }
        Ok(self
            .decoder
            .forward(z / self.scale_factor + self.shift_factor))
    }
}

impl<B: Backend> LatentCodec<B> for FluxAutoEncoder<B> {
    fn latent_channels(&self) -> usize {
        self.z_channels
    }

    fn downsample(&self) -> usize {
        self.downsample_factor()
    }

    /// [`Self::posterior`] of `2x - 1`, unscaled.
    fn encode_posterior(&self, images: Tensor<B, 4>) -> Result<Posterior<B>, VisionError> {
        let (mean, logvar) = self.posterior(images * 2.0 - 1.0)?;
        Ok(Posterior {
            mean,
            logvar: Some(logvar),
        })
    }

    /// `scale * (z - shift)` for the `z` that `sampling` takes (as [`Self::encode_raw_with`]).
    fn latent_from(
        &self,
        posterior: Posterior<B>,
        sampling: LatentSampling,
        seed: u64,
    ) -> Tensor<B, 4> {
        self.scale_latent(posterior.latent(sampling, seed))
    }

    /// `clamp(decode_raw(z) * 0.5 + 0.5, 0, 1)` (BAGEL's `decode_image`).
    fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        Ok((self.decode_raw(latents)? * 0.5 + 0.5).clamp(0.0, 1.0))
    }
}
