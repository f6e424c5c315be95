//! Rectified-flow matching exactly as BAGEL trains it (paper eq. 3's `L_fm`).
//!
//! Per noised image a logit `n ~ N(0, 1)` is drawn, `t = sigmoid(n)` and shifted
//! `t' = s t / (1 + (s - 1) t)` ([`shift_timestep`]; `s = 4` for UNO, `s = 1` is the
//! identity). Every VAE token of that image is noised `x_t = (1 - t') x0 + t' eps` and the
//! model regresses the velocity `v = eps - x0` (so `t = 1` is pure noise, `t = 0` the data).
//! Clean conditioning images get `t = 0` (so `x_t = x0`) and no loss. The loss
//! ([`flow_matching_loss`]) is the squared error averaged over channels, then over all noised
//! tokens of the pack.
//!
//! # Randomness
//! Timesteps and noise are drawn on the HOST from `StdRng::seed_from_u64(seed)` and uploaded
//! ([`FlowNoise`]). Backends' own RNGs differ between backends (and some are global state
//! shared with other threads), so a seed would not give the same noise on flex, ndarray and
//! wgpu; host sampling makes a training step reproducible and identical on every backend.
//! The cost is one host-to-device copy of `N x C` floats per pack (a 32k-token pack of
//! 64-channel latents is 8 MiB), small next to the forward pass. `StdRng`'s stream is stable
//! for the pinned `rand` 0.9; a `rand` upgrade may change the numbers for a given seed.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

use crate::error::ObjectiveError;

// Not `Result`: the `Config` derive expands to code naming `Result<T, E>`.
type Res<T> = crate::error::Result<T>;
use crate::term::{LossTerm, check_same_shape, ensure_finite};

/// UNO's timestep shift (paper, appendix A). BAGEL's training code defaults to 1.0.
pub const UNO_TIMESTEP_SHIFT: f64 = 4.0;

/// What a VAE token of the pack is for flow matching: one entry per VAE token, in the order
/// of the `x0` rows given to [`FlowNoise::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowSlot {
    /// A token of a clean conditioning image: timestep 0, no noise, no loss.
    Clean,
    /// A token of noised image `image` (`0..`): it shares that image's timestep and carries
    /// the loss.
    Noised {
        /// Index of the noised image among the pack's noised images.
        image: usize,
    },
}

/// Shift a timestep: `t' = s t / (1 + (s - 1) t)`.
///
/// Maps `[0, 1]` onto itself with `0 -> 0`, `1 -> 1`; `s > 1` pushes mass towards 1 (more
/// noise), `s = 1` is the identity. E.g. `s = 4`, `t = 0.5` gives `0.8`.
pub fn shift_timestep(t: f64, shift: f64) -> f64 {
    shift * t / (1.0 + (shift - 1.0) * t)
}

/// The inverse of [`shift_timestep`]: `t = t' / (s - (s - 1) t')`.
pub fn unshift_timestep(t_shifted: f64, shift: f64) -> f64 {
    t_shifted / (shift - (shift - 1.0) * t_shifted)
}

/// Standard logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// CDF of the shifted timestep `t' = shift(sigmoid(n))`, `n ~ N(0, 1)`.
///
/// `shift` and `sigmoid` are increasing, so `P(t' <= x) = P(n <= logit(unshift(x)))
/// = Phi(logit(x / (s - (s - 1) x)))` for `x` in `(0, 1)` (0 below, 1 above).
pub fn shifted_timestep_cdf(x: f64, shift: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let t = unshift_timestep(x, shift);
    normal_cdf((t / (1.0 - t)).ln())
}

/// Standard normal CDF `Phi(z) = erfc(-z / sqrt 2) / 2`.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// Complementary error function, Chebyshev fit of Numerical Recipes (`erfcc`, section 6.2),
/// relative error below 1.2e-7 everywhere: ample for a Kolmogorov-Smirnov check.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

fn check_shift(shift: f64) -> Res<()> {
    if !(shift.is_finite() && shift > 0.0) {
        return Err(ObjectiveError::InvalidValue {
            name: "timestep_shift",
            value: shift.to_string(),
            expected: "a finite number > 0 (1.0 = no shift, UNO uses 4.0)",
        });
    }
    Ok(())
}

/// Draw `num_images` shifted timesteps `shift(sigmoid(n))`, `n ~ N(0, 1)`, from `rng`.
pub fn sample_timesteps<R: Rng + ?Sized>(
    num_images: usize,
    shift: f64,
    rng: &mut R,
) -> Res<Vec<f64>> {
    check_shift(shift)?;
    Ok((0..num_images)
        .map(|_| {
            let n: f64 = rng.sample(StandardNormal);
            shift_timestep(sigmoid(n), shift)
        })
        .collect())
}

/// Host-side timesteps and noise for one pack, reproducible from a seed.
///
/// Draw order from `StdRng::seed_from_u64(seed)`: first one logit per timestep slot
/// `0..num_images` (`num_images` = largest slot + 1; a slot no token uses still consumes its
/// draw), then `channels` standard normals per NOISED token in row order. Clean tokens draw
/// nothing and get zero noise.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowNoise {
    /// Shifted timestep of each noised image slot.
    pub image_timesteps: Vec<f64>,
    /// Timestep of each VAE token (`0` for clean tokens), length `N_vae`.
    pub token_timesteps: Vec<f32>,
    /// Row-major `[N_vae, channels]` noise; rows of clean tokens are zero.
    pub noise: Vec<f32>,
    /// Rows (VAE-token indices) that are noised and carry a loss, ascending.
    pub noised_rows: Vec<usize>,
    /// Channels per VAE token.
    pub channels: usize,
}

impl FlowNoise {
    /// Sample timesteps and noise for `slots.len()` VAE tokens of `channels` channels.
    pub fn sample(slots: &[FlowSlot], channels: usize, shift: f64, seed: u64) -> Res<Self> {
        check_shift(shift)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let num_images = slots
            .iter()
            .filter_map(|slot| match slot {
                FlowSlot::Noised { image } => Some(image + 1),
                FlowSlot::Clean => None,
            })
            .max()
            .unwrap_or(0);
        let image_timesteps = sample_timesteps(num_images, shift, &mut rng)?;
        let mut token_timesteps = Vec::with_capacity(slots.len());
        let mut noise = vec![0.0f32; slots.len() * channels];
        let mut noised_rows = Vec::new();
        for (row, slot) in slots.iter().enumerate() {
            match *slot {
                FlowSlot::Noised { image } => {
                    token_timesteps.push(image_timesteps[image] as f32);
                    noised_rows.push(row);
                    for v in &mut noise[row * channels..(row + 1) * channels] {
                        *v = rng.sample(StandardNormal);
                    }
                }
                FlowSlot::Clean => token_timesteps.push(0.0),
            }
        }
        Ok(Self {
            image_timesteps,
            token_timesteps,
            noise,
            noised_rows,
            channels,
        })
    }

    /// Noise the clean latents `x0` (`[N_vae, channels]`, one row per slot given to
    /// [`FlowNoise::sample`]) on `x0`'s device.
    pub fn apply<B: Backend>(&self, x0: Tensor<B, 2>) -> Res<NoisedLatents<B>> {
        let n = self.token_timesteps.len();
        let [rows, channels] = x0.dims();
        if rows != n || channels != self.channels {
            return Err(ObjectiveError::Shape {
                tensor: "flow.x0",
                expected: format!("[N_vae, C] = [{n}, {}]", self.channels),
                found: vec![rows, channels],
            });
        }
        // The fields are public (a caller may bring its own draw): check they agree.
        if self.noise.len() != n * channels {
            return Err(ObjectiveError::Shape {
                tensor: "flow.noise",
                expected: format!("[N_vae * C] = [{}]", n * channels),
                found: vec![self.noise.len()],
            });
        }
        if let Some(&row) = self.noised_rows.iter().find(|&&r| r >= n) {
            return Err(ObjectiveError::Shape {
                tensor: "flow.noised_rows",
                expected: format!("row indexes below N_vae = {n}"),
                found: vec![row],
            });
        }
        let device = x0.device();
        let t =
            Tensor::<B, 1>::from_data(TensorData::new(self.token_timesteps.clone(), [n]), &device);
        let eps =
            Tensor::<B, 2>::from_data(TensorData::new(self.noise.clone(), [n, channels]), &device);
        let t_col = t.clone().unsqueeze_dim::<2>(1);
        let x_t = x0.clone() * t_col.clone().neg().add_scalar(1.0) + eps.clone() * t_col;
        let velocity_target = if self.noised_rows.is_empty() {
            None
        } else {
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(
                    self.noised_rows
                        .iter()
                        .map(|&r| r as i64)
                        .collect::<Vec<_>>(),
                    [self.noised_rows.len()],
                ),
                &device,
            );
            Some((eps - x0).select(0, idx))
        };
        Ok(NoisedLatents {
            x_t,
            token_timesteps: t,
            velocity_target,
            noised_rows: self.noised_rows.clone(),
        })
    }
}

/// Noised latents of a pack, ready for the model.
#[derive(Debug, Clone)]
pub struct NoisedLatents<B: Backend> {
    /// `(1 - t) x0 + t eps` per VAE token, `[N_vae, C]` (clean tokens: exactly `x0`).
    pub x_t: Tensor<B, 2>,
    /// Timestep per VAE token, `[N_vae]`, for the time embedder (clean tokens: 0).
    pub token_timesteps: Tensor<B, 1>,
    /// Velocity target `eps - x0` of the noised tokens, `[N_noised, C]`, rows in the order
    /// of `noised_rows`; `None` when the pack has no noised token.
    pub velocity_target: Option<Tensor<B, 2>>,
    /// VAE-token rows carrying a flow loss, ascending.
    pub noised_rows: Vec<usize>,
}

/// Flow-matching settings.
#[derive(burn::config::Config, Debug, PartialEq)]
pub struct FlowMatchingConfig {
    /// Timestep shift `s` (1.0 = none; UNO 4.0, BAGEL's code default 1.0).
    #[config(default = 4.0)]
    pub timestep_shift: f64,
}

impl FlowMatchingConfig {
    /// Sample the noise of one pack: see [`FlowNoise::sample`].
    pub fn sample_noise(&self, slots: &[FlowSlot], channels: usize, seed: u64) -> Res<FlowNoise> {
        FlowNoise::sample(slots, channels, self.timestep_shift, seed)
    }
}

/// Flow-matching loss: `mean_tokens(mean_channels((pred - target)^2))`.
///
/// `pred` are the predicted velocities of the noised tokens (`llm2vae(h)` gathered at the
/// noised VAE positions), `target` the velocity targets, both `[N, C]`. `N == 0` gives a zero
/// loss with `count == 0`. Checks finiteness with one scalar read-back (a NaN or inf in either
/// input makes the squared error non-finite, so the loss sum itself is the probe).
pub fn flow_matching_loss<B: Backend>(
    pred: Tensor<B, 2>,
    target: Tensor<B, 2>,
) -> Res<LossTerm<B>> {
    flow_term(pred, target, true)
}

pub(crate) fn flow_term<B: Backend>(
    pred: Tensor<B, 2>,
    target: Tensor<B, 2>,
    check: bool,
) -> Res<LossTerm<B>> {
    check_same_shape("flow.pred", pred.dims(), "flow.target", target.dims())?;
    let [n, c] = pred.dims();
    if n == 0 {
        return Ok(LossTerm::zero(&pred.device()));
    }
    if c == 0 {
        return Err(ObjectiveError::Shape {
            tensor: "flow.pred",
            expected: "[N, C] with C >= 1".into(),
            found: vec![n, c],
        });
    }
    let diff = pred.clone() - target.clone();
    let sum = (diff.clone() * diff).mean_dim(1).sum();
    if check {
        ensure_finite(
            sum.clone().detach(),
            "flow",
            &[("flow.pred", pred), ("flow.target", target)],
        )?;
    }
    Ok(LossTerm::from_sum(sum, n))
}
