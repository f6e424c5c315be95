//! [`TrainConfig`]: one TOML file describes a run (paper appendix A, BAGEL defaults where the
//! paper is silent), with `key=value` overrides from the command line.
//!
//! Loading order: defaults, then the file (unknown keys are errors, so a typo such as
//! `optimizer.lrr` never silently trains with the default), then the overrides, then
//! [`TrainConfig::validate`]. Only what the generic loop reads lives here: a model's own
//! settings (loss weights, model shape) belong to the model side, which embeds this config
//! in its run config (e.g. `uno_core::train::RunConfig`) and reuses [`apply_overrides`].

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Everything a training run needs (paper appendix A, Table 11).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps to train (paper: 5K).
    pub iterations: u64,
    /// Seed of the trainer RNG (data order, noise seeds).
    pub seed: u64,
    /// Micro-batches whose gradients are averaged into one optimizer step.
    pub grad_accumulation: u32,
    /// Run directory: checkpoints and `metrics.jsonl` go here.
    pub output_dir: PathBuf,
    /// AdamW and clipping.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// EMA of the trainable weights.
    pub ema: EmaConfig,
    /// Checkpoint cadence and retention.
    pub checkpoint: CheckpointConfig,
    /// Non-finite guards.
    pub guards: GuardConfig,
    /// Logging, progress bar and evaluation cadence.
    pub metrics: MetricsConfig,
}

/// AdamW hyper-parameters (BAGEL: betas 0.9/0.95, eps 1e-15) and the global clip norm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate (paper: 1e-4).
    pub lr: f64,
    /// Adam first-moment decay.
    pub beta1: f64,
    /// Adam second-moment decay.
    pub beta2: f64,
    /// Adam epsilon (BAGEL: 1e-15).
    pub eps: f64,
    /// Decoupled weight decay (paper: 0).
    pub weight_decay: f64,
    /// Global L2 gradient-norm clip (paper: 1.0).
    pub grad_clip: f64,
    /// ZeRO-1 in a data-parallel run: each peer keeps the AdamW moments of its share of the
    /// trainable parameters only, updates that share, and the updated weights are shared
    /// with every peer (`parallel::shard`). The same updates bit for bit; no effect on one
    /// device. Off by default: it adds one exchange of the trainable weights per step.
    pub shard_state: bool,
}

/// Shape of the learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Half-cosine from `lr` down to `min_lr` (paper: generation).
    Cosine,
    /// Stay at `lr` (paper: editing).
    Constant,
}

/// Linear warmup, then cosine or constant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `cosine` or `constant`.
    pub kind: ScheduleKind,
    /// Linear warmup steps (the paper is silent; 0 disables warmup).
    pub warmup_steps: u64,
    /// Floor of the cosine schedule (BAGEL's `min_lr`: 1e-7).
    pub min_lr: f64,
}

/// EMA of the trainable weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmaConfig {
    /// `ema = decay * ema + (1 - decay) * param` after each step (paper: 0.9999).
    pub decay: f64,
}

/// Checkpoint cadence and retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Save every this many optimizer steps (0: only at the end and on abort).
    pub every: u64,
    /// Keep this many most recent complete checkpoints (older ones are deleted).
    pub keep_last: usize,
}

/// Guards against non-finite losses and gradients, and against divergence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Abort (after saving a checkpoint) when this many steps in a row were skipped.
    pub max_consecutive_skips: u32,
    /// Abort when the running loss level exceeds this many times its best level
    /// ([`crate::divergence`]; default 100); 0 disables the check.
    pub divergence_factor: f64,
    /// Span, in applied steps, of the running loss level the divergence check uses.
    pub divergence_window: u64,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Draw a progress bar (only when stdout is a terminal) and print the summary.
    pub progress: bool,
    /// Run the evaluation hook every this many steps (0: never).
    pub eval_every: u64,
    /// Number of steps in the first/last loss windows of the summary.
    pub summary_window: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            iterations: 5000,
            seed: 0,
            grad_accumulation: 1,
            output_dir: PathBuf::from("runs/uno"),
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            ema: EmaConfig::default(),
            checkpoint: CheckpointConfig::default(),
            guards: GuardConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-15,
            weight_decay: 0.0,
            grad_clip: 1.0,
            shard_state: false,
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Cosine,
            warmup_steps: 0,
            min_lr: 1e-7,
        }
    }
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self { decay: 0.9999 }
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: 500,
            keep_last: 3,
        }
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            max_consecutive_skips: 5,
            divergence_factor: 100.0,
            divergence_window: 20,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            progress: true,
            eval_every: 0,
            summary_window: 50,
        }
    }
}

impl TrainConfig {
    /// Parse TOML text (missing keys take their defaults, unknown keys are errors), without
    /// validating. `source_name` is used in error messages.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| TrainError::ConfigParse {
            source_name: source_name.to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Load a run: defaults, then `path` (if any), then the `key=value` `overrides`, then
    /// [`validate`](Self::validate).
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let config = match path {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| TrainError::io("read", path, e))?;
                Self::from_toml_str(&text, &path.display().to_string())?
            }
            None => Self::default(),
        };
        let config = config.with_overrides(overrides)?;
        config.validate()?;
        Ok(config)
    }

    /// Apply dotted `key=value` overrides (`optimizer.lr=2e-4`, `schedule.kind=constant`);
    /// see [`apply_overrides`]. Does not validate ranges.
    pub fn with_overrides<S: AsRef<str>>(self, overrides: &[S]) -> Result<Self> {
        apply_overrides(self, overrides)
    }

    /// Check every value is in range; the error names the key.
    pub fn validate(&self) -> Result<()> {
        fn bad(key: &'static str, value: impl ToString, reason: &'static str) -> Result<()> {
            Err(TrainError::InvalidConfig {
                key,
                value: value.to_string(),
                reason,
            })
        }
        let o = &self.optimizer;
        let finite_pos = |x: f64| x.is_finite() && x > 0.0;
        let unit = |x: f64| x.is_finite() && (0.0..1.0).contains(&x);
        if self.iterations == 0 {
            return bad("iterations", self.iterations, "must be at least 1");
        }
        if self.grad_accumulation == 0 {
            return bad("grad_accumulation", 0, "must be at least 1");
        }
        if !finite_pos(o.lr) {
            return bad("optimizer.lr", o.lr, "must be finite and > 0");
        }
        if !unit(o.beta1) {
            return bad("optimizer.beta1", o.beta1, "must be in [0, 1)");
        }
        if !unit(o.beta2) {
            return bad("optimizer.beta2", o.beta2, "must be in [0, 1)");
        }
        if !finite_pos(o.eps) {
            return bad("optimizer.eps", o.eps, "must be finite and > 0");
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return bad(
                "optimizer.weight_decay",
                o.weight_decay,
                "must be finite and >= 0",
            );
        }
        if !finite_pos(o.grad_clip) {
            return bad("optimizer.grad_clip", o.grad_clip, "must be finite and > 0");
        }
        let s = &self.schedule;
        if s.warmup_steps > self.iterations {
            return bad(
                "schedule.warmup_steps",
                s.warmup_steps,
                "must not exceed iterations",
            );
        }
        if !(s.min_lr.is_finite() && s.min_lr >= 0.0 && s.min_lr <= o.lr) {
            return bad("schedule.min_lr", s.min_lr, "must be in [0, optimizer.lr]");
        }
        if !unit(self.ema.decay) {
            return bad("ema.decay", self.ema.decay, "must be in [0, 1)");
        }
        if self.checkpoint.keep_last == 0 {
            return bad("checkpoint.keep_last", 0, "must be at least 1");
        }
        if self.guards.max_consecutive_skips == 0 {
            return bad("guards.max_consecutive_skips", 0, "must be at least 1");
        }
        let g = &self.guards;
        if !(g.divergence_factor == 0.0
            || (g.divergence_factor.is_finite() && g.divergence_factor > 1.0))
        {
            return bad(
                "guards.divergence_factor",
                g.divergence_factor,
                "must be 0 (off) or finite and > 1",
            );
        }
        if g.divergence_window == 0 {
            return bad("guards.divergence_window", 0, "must be at least 1");
        }
        if self.metrics.summary_window == 0 {
            return bad("metrics.summary_window", 0, "must be at least 1");
        }
        if self.output_dir.as_os_str().is_empty() {
            return bad("output_dir", "\"\"", "must not be empty");
        }
        Ok(())
    }
}

/// Apply dotted `key=value` overrides to any serde config (this one, or a run config that
/// embeds it).
///
/// The value is read as a TOML value (a bare word is taken as a string); the key must exist
/// in the config and the value must have its type (an integer is accepted where a float is
/// expected). Each override is checked as it is applied, so an error names its key. Does not
/// validate ranges.
pub fn apply_overrides<T, S>(config: T, overrides: &[S]) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    S: AsRef<str>,
{
    if overrides.is_empty() {
        return Ok(config);
    }
    let mut tree = toml::Value::try_from(&config).map_err(|e| TrainError::ConfigParse {
        source_name: "<overrides>".into(),
        message: e.to_string(),
    })?;
    let mut config = config;
    for raw in overrides {
        let key = apply_override(&mut tree, raw.as_ref())?;
        config = tree
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Override {
                key,
                reason: e.to_string().trim_end().to_string(),
            })?;
    }
    Ok(config)
}

/// Set one dotted key of `tree` from `raw` = `key=value`; returns the key.
fn apply_override(tree: &mut toml::Value, raw: &str) -> Result<String> {
    let Some((key, value)) = raw.split_once('=') else {
        return Err(TrainError::Override {
            key: raw.to_string(),
            reason: "expected `key=value`".into(),
        });
    };
    let key = key.trim();
    let err = |reason: String| TrainError::Override {
        key: key.to_string(),
        reason,
    };
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(err("empty key segment".into()));
    }
    let value = parse_override_value(value.trim());
    let mut node = tree;
    for segment in key.split('.') {
        let table = node
            .as_table_mut()
            .ok_or_else(|| err(format!("`{segment}` is under a value, not a table")))?;
        node = table
            .get_mut(segment)
            .ok_or_else(|| err(format!("unknown key `{segment}`")))?;
    }
    let value = match (&*node, value) {
        (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
        (toml::Value::Table(_), _) => {
            return Err(err("is a table; set one of its keys".into()));
        }
        (old, new) if old.type_str() != new.type_str() => {
            return Err(err(format!(
                "expected a {}, got a {} ({new})",
                old.type_str(),
                new.type_str()
            )));
        }
        (_, new) => new,
    };
    *node = value;
    Ok(key.to_string())
}

/// Read an override value as TOML (`1e-4`, `true`, `"x"`); a bare word is a string.
fn parse_override_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_paper_table() {
        // Paper appendix A, Table 11 (BAGEL's defaults where the paper is silent).
        let c = TrainConfig::default();
        c.validate().unwrap();
        assert_eq!(c.iterations, 5000);
        let o = &c.optimizer;
        assert_eq!((o.lr, o.beta1, o.beta2, o.eps), (1e-4, 0.9, 0.95, 1e-15));
        assert_eq!((o.weight_decay, o.grad_clip), (0.0, 1.0));
        assert_eq!(c.schedule.kind, ScheduleKind::Cosine);
        assert_eq!(c.schedule.min_lr, 1e-7);
        assert_eq!(c.ema.decay, 0.9999);
        // A file restating some defaults parses to the defaults; editing is constant-lr.
        let text = "iterations = 5000\n[optimizer]\nlr = 1e-4\n[schedule]\nkind = \"constant\"\n";
        let edit = TrainConfig::from_toml_str(text, "editing").unwrap();
        let expected = TrainConfig {
            schedule: ScheduleConfig {
                kind: ScheduleKind::Constant,
                ..ScheduleConfig::default()
            },
            ..TrainConfig::default()
        };
        assert_eq!(edit, expected);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = TrainConfig::from_toml_str("[optimizer]\nlrr = 1e-4\n", "x.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("lrr") && msg.contains("x.toml"), "{msg}");
        let err = TrainConfig::from_toml_str("iteration = 10\n", "x.toml").unwrap_err();
        assert!(err.to_string().contains("iteration"), "{err}");
        let err = TrainConfig::from_toml_str("[schedule]\nkind = \"linear\"\n", "x").unwrap_err();
        assert!(err.to_string().contains("linear"), "{err}");
        // Model-side sections belong to the model's run config, not to the generic trainer.
        let err = TrainConfig::from_toml_str("[loss]\ncaption = 0.1\n", "x").unwrap_err();
        assert!(err.to_string().contains("loss"), "{err}");
    }

    #[test]
    fn overrides_edit_dotted_keys() {
        let cfg = TrainConfig::default()
            .with_overrides(&[
                "optimizer.lr=2e-4",
                "schedule.kind=constant",
                "schedule.warmup_steps = 10",
                "output_dir=\"/tmp/run\"",
                "ema.decay=1", // integer accepted for a float (then rejected by validate)
                "metrics.progress=false",
            ])
            .unwrap();
        assert_eq!(cfg.optimizer.lr, 2e-4);
        assert_eq!(cfg.schedule.kind, ScheduleKind::Constant);
        assert_eq!(cfg.schedule.warmup_steps, 10);
        assert_eq!(cfg.output_dir, PathBuf::from("/tmp/run"));
        assert_eq!(cfg.ema.decay, 1.0);
        assert!(!cfg.metrics.progress);
        let err = cfg.validate().unwrap_err();
        assert!(err.to_string().contains("ema.decay"), "{err}");
    }

    #[test]
    fn bad_overrides_name_the_key() {
        let cases = [
            ("optimizer.lrr=1", "optimizer.lrr"),
            ("optimizer.lr", "optimizer.lr"),
            ("iterations=many", "iterations"),
            ("optimizer=1", "optimizer"),
            ("iterations.x=1", "iterations.x"),
            ("schedule.kind=linear", "schedule.kind"),
            ("a..b=1", "a..b"),
        ];
        for (raw, key) in cases {
            let err = TrainConfig::default().with_overrides(&[raw]).unwrap_err();
            assert!(err.to_string().contains(key), "{raw}: {err}");
        }
    }

    #[test]
    fn validation_rejects_bad_values() {
        let cases: [(&str, &str); 10] = [
            ("optimizer.lr=0.0", "optimizer.lr"),
            ("optimizer.lr=-1e-4", "optimizer.lr"),
            ("optimizer.grad_clip=0.0", "optimizer.grad_clip"),
            ("optimizer.beta2=1.0", "optimizer.beta2"),
            ("ema.decay=-0.1", "ema.decay"),
            ("iterations=0", "iterations"),
            ("grad_accumulation=0", "grad_accumulation"),
            ("schedule.warmup_steps=6000", "schedule.warmup_steps"),
            ("schedule.min_lr=1.0", "schedule.min_lr"),
            ("checkpoint.keep_last=0", "checkpoint.keep_last"),
        ];
        for (raw, key) in cases {
            let cfg = TrainConfig::default().with_overrides(&[raw]).unwrap();
            let err = cfg.validate().unwrap_err();
            assert!(
                matches!(&err, TrainError::InvalidConfig { key: k, .. } if *k == key),
                "{raw}: {err}"
            );
        }
        TrainConfig::default().validate().unwrap();
    }

    #[test]
    fn load_reads_file_then_overrides() {
        let dir = std::env::temp_dir().join(format!("uno-trainer-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.toml");
        std::fs::write(&path, "iterations = 10\n[optimizer]\nlr = 3e-4\n").unwrap();
        let cfg = TrainConfig::load(Some(&path), &["iterations=20".to_string()]).unwrap();
        assert_eq!((cfg.iterations, cfg.optimizer.lr), (20, 3e-4));
        let missing = TrainConfig::load(Some(&dir.join("nope.toml")), &[]).unwrap_err();
        assert!(missing.to_string().contains("nope.toml"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
