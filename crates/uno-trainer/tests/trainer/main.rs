//! Trainer tests on a toy model (see `toy.rs`): one test binary, one concern per module.

/// `uno_testing::backend_tests!(autodiff: ...)` does not compile as of this commit (its
/// `$wrap:path` fragment cannot be followed by `<Backend>`), so the same expansion here:
/// each generic test on `Autodiff<Flex>`, and on `Autodiff<NdArray>` with `--features
/// ndarray`.
macro_rules! autodiff_tests {
    ($($name:ident),+ $(,)?) => {
        mod flex {
            $(#[test] fn $name() { super::$name::<burn::backend::Autodiff<burn::backend::Flex>>(); })+
        }
        #[cfg(feature = "ndarray")]
        mod ndarray {
            $(#[test] fn $name() { super::$name::<burn::backend::Autodiff<burn::backend::NdArray>>(); })+
        }
    };
}

mod toy;

mod checkpoints;
mod parallel;
mod safety;
mod step;

use std::path::Path;

use uno_trainer::TrainConfig;

/// A small config writing into `dir`, quiet, with visible EMA/LR effects.
pub fn test_config(dir: &Path) -> TrainConfig {
    TrainConfig::default()
        .with_overrides(&[
            "iterations=8",
            "seed=7",
            "optimizer.lr=0.05",
            "ema.decay=0.9",
            "schedule.warmup_steps=2",
            "schedule.min_lr=0.001",
            "checkpoint.every=0",
            "checkpoint.keep_last=10",
            "metrics.progress=false",
            "metrics.summary_window=2",
        ])
        .expect("valid overrides")
        .with_output_dir(dir)
}

/// A builder-style setter for [`TrainConfig::output_dir`] (a plain field in the library), so
/// [`test_config`] can end its chain with the test's temporary directory.
pub trait WithDir {
    /// The config with its checkpoints and metrics written under `dir`.
    fn with_output_dir(self, dir: &Path) -> Self;
}

impl WithDir for TrainConfig {
    fn with_output_dir(mut self, dir: &Path) -> Self {
        self.output_dir = dir.to_path_buf();
        self
    }
}
