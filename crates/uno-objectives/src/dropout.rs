//! Conditioning dropout for classifier-free guidance.
//!
//! BAGEL drops, per training sample, the condition text with `p = 0.1` and (for editing) the
//! ViT and clean-VAE condition images with `p = 0.3` each (its `text_cond_dropout_prob`,
//! `vit_cond_dropout_prob`, `vae_cond_dropout_prob` defaults). This module only DECIDES,
//! reproducibly from a seed; the packer then leaves the dropped split out (a dropped image
//! still advances the position counter, see ARCHITECTURE.md).

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::error::ObjectiveError;

// Not `Result`: the `Config` derive expands to code naming `Result<T, E>`.
type Res<T> = crate::error::Result<T>;

/// Dropout probabilities of the conditions.
#[derive(burn::config::Config, Debug, PartialEq)]
pub struct ConditionDropoutConfig {
    /// Probability of dropping the condition text (BAGEL and UNO: 0.1).
    #[config(default = 0.1)]
    pub text: f64,
    /// Probability of dropping a ViT condition image (BAGEL: 0.3).
    #[config(default = 0.3)]
    pub vit: f64,
    /// Probability of dropping a clean-VAE condition image (BAGEL: 0.3).
    #[config(default = 0.3)]
    pub vae: f64,
}

/// Which conditions of one sample are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConditionDrop {
    /// Drop the condition text.
    pub text: bool,
    /// Drop the ViT condition image(s).
    pub vit: bool,
    /// Drop the clean-VAE condition image(s).
    pub vae: bool,
}

fn check_probability(name: &'static str, p: f64) -> Res<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(ObjectiveError::InvalidValue {
            name,
            value: p.to_string(),
            expected: "a probability in [0, 1]",
        });
    }
    Ok(())
}

/// Decide one drop with probability `p` from `rng`: `u < p` for `u` uniform in `[0, 1)`, so
/// `p = 0` never drops and `p = 1` always does. Always consumes exactly one draw.
pub fn drop_condition<R: Rng + ?Sized>(p: f64, rng: &mut R) -> Res<bool> {
    check_probability("dropout probability", p)?;
    let u: f64 = rng.random();
    Ok(u < p)
}

/// SplitMix64 finaliser, to derive independent per-sample seeds.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl ConditionDropoutConfig {
    /// Check every probability is in `[0, 1]`.
    pub fn validate(&self) -> Res<()> {
        check_probability("condition_dropout.text", self.text)?;
        check_probability("condition_dropout.vit", self.vit)?;
        check_probability("condition_dropout.vae", self.vae)
    }

    /// Decide the drops of one sample from `rng`: three draws, in the order text, ViT, VAE,
    /// whatever the probabilities (so changing one `p` does not shift the others' stream).
    pub fn decide<R: Rng + ?Sized>(&self, rng: &mut R) -> Res<ConditionDrop> {
        self.validate()?;
        Ok(ConditionDrop {
            text: drop_condition(self.text, rng)?,
            vit: drop_condition(self.vit, rng)?,
            vae: drop_condition(self.vae, rng)?,
        })
    }

    /// Decide the drops of sample `sample_id` under run seed `seed`, independently of the
    /// order in which samples are visited (data-parallel workers agree on every sample).
    pub fn decide_for_sample(&self, seed: u64, sample_id: u64) -> Res<ConditionDrop> {
        let mut rng = StdRng::seed_from_u64(splitmix64(seed ^ splitmix64(sample_id)));
        self.decide(&mut rng)
    }
}
