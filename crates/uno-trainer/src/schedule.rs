//! Learning-rate schedule: linear warmup, then cosine down to a floor, or constant.
//!
//! A pure function of the optimizer step so that resume needs only the step count. It
//! follows the HuggingFace / BAGEL schedulers: `step` is the number of optimizer steps
//! already applied, warmup is `lr * step / warmup` (so the very first step uses lr 0 when
//! warmup is on, as `get_cosine_with_min_lr_schedule_with_warmup` does), and the cosine runs
//! from `lr` at the end of warmup to `min_lr` at `total` steps. burn-optim's schedulers are
//! stateful iterators (their state would have to be checkpointed), hence this one.

use crate::config::{ScheduleConfig, ScheduleKind};

/// Learning rate as a function of the optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Cosine floor.
    pub min_lr: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// Total optimizer steps of the run.
    pub total_steps: u64,
    /// Cosine or constant after warmup.
    pub kind: ScheduleKind,
}

impl LrSchedule {
    /// Build from the config section, the peak lr and the run length.
    pub fn new(config: &ScheduleConfig, lr: f64, total_steps: u64) -> Self {
        Self {
            lr,
            min_lr: config.min_lr,
            warmup_steps: config.warmup_steps,
            total_steps,
            kind: config.kind,
        }
    }

    /// Learning rate for the optimizer step that follows `step` applied steps.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * step as f64 / self.warmup_steps as f64;
        }
        match self.kind {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                self.min_lr + (self.lr - self.min_lr) * cosine
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: ScheduleKind) -> LrSchedule {
        LrSchedule {
            lr: 1e-4,
            min_lr: 1e-6,
            warmup_steps: 100,
            total_steps: 1100,
            kind,
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-15 + 1e-12 * b.abs(), "{a} vs {b}");
    }

    #[test]
    fn warmup_is_linear_from_zero() {
        let s = schedule(ScheduleKind::Cosine);
        close(s.lr_at(0), 0.0);
        close(s.lr_at(50), 0.5e-4);
        close(s.lr_at(99), 0.99e-4);
        // End of warmup: the peak.
        close(s.lr_at(100), 1e-4);
    }

    #[test]
    fn cosine_midpoint_and_end() {
        let s = schedule(ScheduleKind::Cosine);
        // Midpoint of the 1000 cosine steps: halfway between peak and floor.
        close(s.lr_at(600), (1e-4 + 1e-6) / 2.0);
        // A quarter in: min + (max-min) * (1 + cos(pi/4)) / 2.
        let quarter = 1e-6 + (1e-4 - 1e-6) * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        close(s.lr_at(350), quarter);
        close(s.lr_at(1100), 1e-6);
        // Past the end it stays at the floor.
        close(s.lr_at(5000), 1e-6);
        // Monotone non-increasing after warmup.
        for step in 100..1100 {
            assert!(s.lr_at(step + 1) <= s.lr_at(step));
        }
    }

    #[test]
    fn constant_after_warmup() {
        let s = schedule(ScheduleKind::Constant);
        close(s.lr_at(10), 1e-5);
        close(s.lr_at(100), 1e-4);
        close(s.lr_at(1099), 1e-4);
    }

    #[test]
    fn no_warmup_starts_at_peak() {
        let s = LrSchedule {
            warmup_steps: 0,
            ..schedule(ScheduleKind::Cosine)
        };
        close(s.lr_at(0), 1e-4);
        close(s.lr_at(550), (1e-4 + 1e-6) / 2.0);
    }
}
