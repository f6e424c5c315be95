//! The sampler's timesteps: BAGEL's `linspace(1, 0, T)` under the timestep shift.

use super::GenerateError;
use crate::objectives::shift_timestep;

/// `T` timesteps from 1 (noise) to 0 (data): `t_i = shift(1 - i / (T - 1))` with
/// `shift(t) = s t / (1 + (s - 1) t)`. The sampler takes `T - 1` Euler steps, from `t_i`
/// to `t_{i+1}`, so `steps = 50` means 49 model evaluations per guidance branch (BAGEL's
/// `num_timesteps`).
///
/// # Errors
/// [`GenerateError::Setting`] for `steps < 2` or a shift that is not finite and positive.
pub fn sampling_timesteps(steps: usize, shift: f64) -> Result<Vec<f64>, GenerateError> {
    if steps < 2 {
        return Err(GenerateError::setting(
            "steps",
            steps,
            "at least 2 (the endpoints 1 and 0)",
        ));
    }
    if !(shift.is_finite() && shift > 0.0) {
        return Err(GenerateError::setting(
            "timestep_shift",
            shift,
            "a finite number > 0 (1 = no shift, BAGEL samples with 3)",
        ));
    }
    Ok((0..steps)
        .map(|i| shift_timestep(1.0 - i as f64 / (steps - 1) as f64, shift))
        .collect())
}
