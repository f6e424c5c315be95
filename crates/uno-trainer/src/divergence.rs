//! [`DivergenceGuard`]: a finite loss that explodes (too high a learning rate) must stop the
//! run with a clear message, not finish with exit 0.
//!
//! The running level is an exponential moving average of the applied steps' losses with
//! span `guards.divergence_window` (decay `1 - 1/window`), bias-corrected as Adam's moments
//! are, so that it is a mean from the first step on. Its lowest value so far (from the
//! first step: a run that explodes at step 3, as `lr = 1e3` does on the tiny model, has no
//! later good level to compare with) is the reference. The run has diverged when the
//! running level exceeds `guards.divergence_factor` times that reference, checked once
//! the average has settled (`window / 2` applied steps). A smoothed level, not single
//! losses, is compared, so one unlucky batch never trips it; a sustained climb, or a jump
//! that stays, does within a few steps. Fine-tuning losses go down, but a small model's
//! loss is noisy, and its first batches may be lucky: the toy model of the trainer tests
//! has a healthy running level 15 times its lowest, which is why the default factor is
//! 100, not 10. Exploding runs pass it by orders of magnitude (`lr = 1e3` on the tiny
//! BAGEL: 1e10 times).

/// Tracks the running loss level of a run; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct DivergenceGuard {
    factor: f64,
    decay: f64,
    settle: u64,
    ema: f64,
    weight: f64,
    steps: u64,
    best: f64,
}

/// A detected divergence: the running level and the reference it is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergence {
    /// The running (smoothed) loss level now.
    pub level: f64,
    /// The lowest running level of the run so far.
    pub best: f64,
    /// The configured factor that `level / best` exceeded.
    pub factor: f64,
}

impl DivergenceGuard {
    /// A guard with `factor` (0 disables it) over a running window of `window` steps
    /// (at least 1).
    pub fn new(factor: f64, window: u64) -> Self {
        let window = window.max(1);
        Self {
            factor,
            decay: 1.0 - 1.0 / window as f64,
            settle: window.div_ceil(2),
            ema: 0.0,
            weight: 0.0,
            steps: 0,
            best: f64::INFINITY,
        }
    }

    /// The running level (bias-corrected EMA) after the steps observed so far.
    pub fn level(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.ema / self.weight)
    }

    /// Record the loss of an applied step; `Some` when the run has diverged.
    pub fn observe(&mut self, loss: f64) -> Option<Divergence> {
        if self.factor <= 0.0 || !loss.is_finite() {
            return None;
        }
        self.ema = self.decay * self.ema + (1.0 - self.decay) * loss;
        self.weight = self.decay * self.weight + (1.0 - self.decay);
        self.steps += 1;
        let level = self.ema / self.weight;
        if self.steps >= self.settle && level > self.factor * self.best {
            return Some(Divergence {
                level,
                best: self.best,
                factor: self.factor,
            });
        }
        self.best = self.best.min(level);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noisy_falling_loss_never_trips_it() {
        let mut g = DivergenceGuard::new(100.0, 20);
        for i in 0..2000 {
            // Falling from 2 to ~0.2, with single batches 8x above or 10x below the trend.
            // (Factor 100: see the module docs.)
            let trend = 0.2 + 1.8 * (-(i as f64) / 300.0).exp();
            let noise = match i % 7 {
                0 => 8.0,
                3 => 0.1,
                _ => 1.0,
            };
            assert_eq!(g.observe(trend * noise), None, "step {i}");
        }
    }

    #[test]
    fn an_explosion_before_the_average_settles_is_caught_when_it_settles() {
        // The tiny model at lr = 1e3 (warmup 20): 2.2, 2.2, then 1e4 to 1e11.
        let mut g = DivergenceGuard::new(100.0, 20);
        let losses = [
            2.2, 2.2, 3.9e4, 1.6e10, 3.2e10, 5.7e11, 3.3e11, 6e10, 5.9e11, 8.7e10,
        ];
        let hit = losses.iter().position(|l| g.observe(*l).is_some());
        assert_eq!(hit, Some(9), "step 10, the first settled one");
    }

    #[test]
    fn an_exploding_loss_trips_it_within_a_few_steps() {
        let mut g = DivergenceGuard::new(100.0, 20);
        for i in 0..30 {
            assert_eq!(g.observe(2.0 - i as f64 * 0.01), None);
        }
        // A jump to 1e6 that stays: the running level passes 10x its best at once.
        let hit = (0..5).find_map(|_| g.observe(1e6)).expect("diverged");
        assert!(hit.level > 100.0 * hit.best && hit.best < 2.0, "{hit:?}");
        // Disabled: never.
        let mut off = DivergenceGuard::new(0.0, 20);
        assert!((0..100).all(|i| off.observe(10f64.powi(i)).is_none()));
    }
}
