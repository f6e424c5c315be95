//! What a run folder records about its run, and the check that a resume continues the same
//! run.
//!
//! * `run.toml`: the whole resolved [`RunConfig`] (loadable again with
//!   `RunConfig::load(Some("run.toml"))` or `train_bagel --config`);
//! * `run_inputs.json`: the model and data the run trains, and the backend it computes
//!   with ([`RunInputs`]).
//!
//! On resume, [`config_changes`] lists every setting that differs from the record and
//! would make the resumed run differ from an uninterrupted one; [`super::run`] refuses them
//! unless `RunSpec::allow_config_change`. Settings that never change the update (where
//! output goes, logging, evaluation and checkpoint cadence, the guards) may change freely,
//! and so may `iterations` under a constant schedule (a cosine schedule spans
//! `iterations`, so there it changes every later learning rate).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ModelSource, RunConfig, RunError, TrainData};
use crate::checkpoint::write_bytes_atomically;
use crate::trainer::ScheduleKind;

/// File of the resolved run configuration in a run folder.
pub const RUN_CONFIG_FILE: &str = "run.toml";
/// File of the run's model and data in a run folder.
pub const RUN_INPUTS_FILE: &str = "run_inputs.json";

/// Keys (or key prefixes ending in `.`) that may differ on resume: they never change an
/// update.
const FREE_KEYS: [&str; 9] = [
    "output_dir",
    // Sharded optimizer state gives the same updates bit for bit.
    "optimizer.shard_state",
    // The latent cache changes what is recomputed, never a value (bit-identical).
    "data.latent_cache_mib",
    "metrics.",
    "checkpoint.",
    "guards.",
    "diagnostics.",
    "inputs.eval",
    "iterations",
];

/// The model and data of a run, as recorded in [`RUN_INPUTS_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInputs {
    /// `tiny`, or the BAGEL folder trained.
    pub model: String,
    /// `synthetic`, the ShapesBench data and its settings, or the training manifest.
    pub data: String,
    /// The manifest's tokenizer.
    pub tokenizer: Option<PathBuf>,
    /// The held-out manifest.
    pub eval: Option<PathBuf>,
    /// The backend and float type (`autodiff<flex> f32`): another backend or precision
    /// computes other floats, so it breaks exact resume too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

impl RunInputs {
    /// The inputs of a run of `model` on `data`.
    pub fn of(model: &ModelSource, data: &TrainData) -> Self {
        let model = match model {
            ModelSource::Tiny => "tiny".to_string(),
            ModelSource::Folder(dir) => dir.display().to_string(),
        };
        match data {
            TrainData::Synthetic => Self {
                model,
                data: "synthetic".into(),
                tokenizer: None,
                eval: None,
                backend: None,
            },
            TrainData::ShapesBench(bench) => Self {
                model,
                data: format!(
                    "shapes_bench seed {} understanding {} caption {}",
                    bench.bench_seed,
                    bench.understanding_fraction,
                    if bench.caption_is_prompt {
                        "prompt"
                    } else {
                        "recaption"
                    }
                ),
                tokenizer: None,
                eval: None,
                backend: None,
            },
            TrainData::Manifest {
                manifest,
                tokenizer,
                eval,
            } => Self {
                model,
                data: manifest.display().to_string(),
                tokenizer: Some(tokenizer.clone()),
                eval: eval.clone(),
                backend: None,
            },
        }
    }

    /// The same inputs, trained on `backend` (e.g. `autodiff<flex> f32`).
    pub fn with_backend(self, backend: impl Into<String>) -> Self {
        Self {
            backend: Some(backend.into()),
            ..self
        }
    }
}

/// Write [`RUN_CONFIG_FILE`] and [`RUN_INPUTS_FILE`] into `dir`, each atomically.
pub fn save_record(dir: &Path, config: &RunConfig, inputs: &RunInputs) -> Result<(), RunError> {
    write_bytes_atomically(dir.join(RUN_CONFIG_FILE), config.to_toml().as_bytes())?;
    let json = serde_json::to_string_pretty(inputs).map_err(|e| RunError::Record {
        path: dir.join(RUN_INPUTS_FILE),
        reason: e.to_string(),
    })?;
    write_bytes_atomically(dir.join(RUN_INPUTS_FILE), json.as_bytes())?;
    Ok(())
}

/// The settings of this run that differ from what `dir` records and would break exact
/// resume, as `key: recorded -> now` lines. A folder without a record (written before
/// records existed) gives none.
pub fn config_changes(
    dir: &Path,
    config: &RunConfig,
    inputs: &RunInputs,
) -> Result<Vec<String>, RunError> {
    let config_path = dir.join(RUN_CONFIG_FILE);
    let inputs_path = dir.join(RUN_INPUTS_FILE);
    let read = |path: &Path| match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RunError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    };
    let mut before = BTreeMap::new();
    let mut now = BTreeMap::new();
    if let Some(text) = read(&config_path)? {
        let recorded = RunConfig::from_toml_str(&text, &config_path.display().to_string())?;
        flatten("", &to_value(&recorded, &config_path)?, &mut before);
        flatten("", &to_value(config, &config_path)?, &mut now);
    }
    if let Some(text) = read(&inputs_path)? {
        let recorded: RunInputs = serde_json::from_str(&text).map_err(|e| RunError::Record {
            path: inputs_path.clone(),
            reason: e.to_string(),
        })?;
        flatten("inputs.", &to_value(&recorded, &inputs_path)?, &mut before);
        flatten("inputs.", &to_value(inputs, &inputs_path)?, &mut now);
    }
    let constant = config.trainer.schedule.kind == ScheduleKind::Constant;
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        let (old, new) = (before.get(key), now.get(key));
        if old == new {
            continue;
        }
        let free = FREE_KEYS.iter().any(|free| match free.strip_suffix('.') {
            Some(prefix) => key.starts_with(prefix) && key[prefix.len()..].starts_with('.'),
            None => key == free,
        });
        let free = free && (key != "iterations" || constant);
        if !free {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(none)".into());
            changes.push(format!("{key}: {} -> {}", show(old), show(new)));
        }
    }
    Ok(changes)
}

fn to_value<T: Serialize>(value: &T, path: &Path) -> Result<toml::Value, RunError> {
    toml::Value::try_from(value).map_err(|e| RunError::Record {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `table.key = value` leaves as `"prefix" + "table.key"` -> the value as TOML text.
fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table {
                flatten(&format!("{prefix}{key}."), v, out);
            }
        }
        leaf => {
            out.insert(prefix.trim_end_matches('.').to_string(), leaf.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_that_break_exactness_are_listed_and_free_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let config = RunConfig::tiny();
        let inputs = RunInputs::of(&ModelSource::Tiny, &TrainData::Synthetic);
        save_record(dir.path(), &config, &inputs).unwrap();
        let same = config_changes(dir.path(), &config, &inputs).unwrap();
        assert!(same.is_empty(), "{same:?}");
        let free = config
            .clone()
            .with_overrides(&[
                "metrics.eval_every=7",
                "checkpoint.every=3",
                "output_dir=\"elsewhere\"",
                "guards.divergence_factor=0",
                "optimizer.shard_state=true",
                "diagnostics.alignment=true",
            ])
            .unwrap();
        assert!(
            config_changes(dir.path(), &free, &inputs)
                .unwrap()
                .is_empty()
        );
        let changed = config
            .clone()
            .with_overrides(&[
                "seed=1",
                "data.batch.samples=3",
                "data.latent_cache_mib=0",
                "loss.caption=0",
                "iterations=9",
            ])
            .unwrap();
        let other_data = RunInputs::of(
            &ModelSource::Tiny,
            &TrainData::Manifest {
                manifest: "m.jsonl".into(),
                tokenizer: "t.json".into(),
                eval: None,
            },
        );
        let changes = config_changes(dir.path(), &changed, &other_data).unwrap();
        assert_eq!(
            changes,
            [
                "data.batch.samples: 8 -> 3",
                "inputs.data: \"synthetic\" -> \"m.jsonl\"",
                "inputs.tokenizer: (none) -> \"t.json\"",
                "iterations: 600 -> 9",
                "loss.caption: 0.1 -> 0.0",
                "seed: 0 -> 1",
            ]
        );
        // Another backend or float type computes other floats.
        let flex = inputs.clone().with_backend("autodiff<flex> f32");
        save_record(dir.path(), &config, &flex).unwrap();
        let ndarray = inputs.clone().with_backend("autodiff<ndarray> f32");
        assert_eq!(
            config_changes(dir.path(), &config, &ndarray).unwrap(),
            ["inputs.backend: \"autodiff<flex> f32\" -> \"autodiff<ndarray> f32\""]
        );
        // Under a constant schedule, more iterations only extend the run.
        let constant = config.with_overrides(&["schedule.kind=constant"]).unwrap();
        save_record(dir.path(), &constant, &inputs).unwrap();
        let longer = constant.with_overrides(&["iterations=900"]).unwrap();
        assert!(
            config_changes(dir.path(), &longer, &inputs)
                .unwrap()
                .is_empty()
        );
    }
}
