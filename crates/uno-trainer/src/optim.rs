//! AdamW with BAGEL's defaults, and its state on disk.
//!
//! burn-optim's `OptimizerAdaptor` creates state only for parameters it receives a gradient
//! for (`SimpleOptimizerMapper::map_float` returns a parameter without a gradient untouched
//! and records nothing); frozen (`no_grad`) parameters never get a gradient, so the frozen
//! expert has no Adam moments. The state is keyed by `ParamId`, which differs between
//! processes, so it is saved next to an id -> path table and re-keyed on load. With
//! `optimizer.shard_state` each peer saves its own share in its own file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::ParamId;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;

use crate::checkpoint::{OPTIMIZER_FILE, TrainerState, optimizer_shard_file};
use crate::config::OptimizerConfig;
use crate::error::{Result, TrainError};
use crate::model::TrainStep;

/// The optimizer type the trainer uses.
pub type TrainOptimizer<M, B> = OptimizerAdaptor<AdamW, M, B>;

/// Its state record (`ParamId` -> Adam moments and step count).
pub type OptimizerRecord<M, B> = <TrainOptimizer<M, B> as Optimizer<M, B>>::Record;

/// AdamW from the config. No burn-side clipping: the trainer clips globally itself.
pub fn adamw<B: AutodiffBackend, M: TrainStep<B>>(
    config: &OptimizerConfig,
) -> TrainOptimizer<M, B> {
    AdamWConfig::new()
        .with_beta_1(config.beta1 as f32)
        .with_beta_2(config.beta2 as f32)
        .with_epsilon(config.eps as f32)
        .with_weight_decay(config.weight_decay as f32)
        .init::<B, M>()
}

/// Serialise the optimizer state (full precision named msgpack) and the id -> path table of
/// its keys. `paths` maps every trainable id to its path.
pub fn optimizer_to_bytes<B: AutodiffBackend, M: TrainStep<B>>(
    optim: &TrainOptimizer<M, B>,
    paths: &HashMap<ParamId, String>,
    file: &Path,
) -> Result<(Vec<u8>, BTreeMap<u64, String>)> {
    let record = optim.to_record();
    let mut table = BTreeMap::new();
    for id in record.keys() {
        let path = paths.get(id).ok_or_else(|| TrainError::Record {
            path: file.to_path_buf(),
            message: format!("optimizer state for parameter {id} which is not trainable"),
        })?;
        table.insert(id.val(), path.clone());
    }
    let bytes = <NamedMpkBytesRecorder<FullPrecisionSettings> as Recorder<B>>::record(
        &NamedMpkBytesRecorder::new(),
        record,
        (),
    )
    .map_err(|e| TrainError::Record {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok((bytes, table))
}

/// Optimizer state written by [`optimizer_to_bytes`] (one file, or one peer's share under
/// `optimizer.shard_state`), each entry re-keyed from its saved id to the id that
/// `ids_by_path` gives its path now.
pub fn optimizer_record_from_bytes<B: AutodiffBackend, M: TrainStep<B>>(
    bytes: Vec<u8>,
    saved_paths: &BTreeMap<u64, String>,
    ids_by_path: &HashMap<String, ParamId>,
    device: &B::Device,
    file: &Path,
) -> Result<OptimizerRecord<M, B>> {
    let err = |message: String| TrainError::Record {
        path: file.to_path_buf(),
        message,
    };
    let record: OptimizerRecord<M, B> =
        <NamedMpkBytesRecorder<FullPrecisionSettings> as Recorder<B>>::load(
            &NamedMpkBytesRecorder::new(),
            bytes,
            device,
        )
        .map_err(|e| err(e.to_string()))?;
    let mut rekeyed = OptimizerRecord::<M, B>::default();
    for (old_id, state) in record {
        let path = saved_paths
            .get(&old_id.val())
            .ok_or_else(|| err(format!("no path recorded for saved parameter id {old_id}")))?;
        let new_id = ids_by_path.get(path).ok_or_else(|| {
            err(format!(
                "saved state for `{path}`, which the model has not as a trainable parameter"
            ))
        })?;
        rekeyed.insert(*new_id, state);
    }
    Ok(rekeyed)
}

/// The optimizer state of checkpoint `dir`: its [`OPTIMIZER_FILE`], or, for a run with
/// sharded state, every peer's file merged (the shares are disjoint), re-keyed to the ids
/// of `ids_by_path`. Another number of peers, or one device, resumes it alike; a sharded
/// run then keeps its own share ([`crate::Trainer::join`]).
pub fn read_optimizer_state<B: AutodiffBackend, M: TrainStep<B>>(
    dir: &Path,
    state: &TrainerState,
    ids_by_path: &HashMap<String, ParamId>,
    device: &B::Device,
) -> Result<OptimizerRecord<M, B>> {
    let files: Vec<(String, &BTreeMap<u64, String>)> = match state.optimizer_shards.len() {
        0 => vec![(OPTIMIZER_FILE.to_string(), &state.optimizer_param_paths)],
        peers => (state.optimizer_shards.iter().enumerate())
            .map(|(rank, table)| (optimizer_shard_file(rank, peers), table))
            .collect(),
    };
    let mut merged = OptimizerRecord::<M, B>::default();
    for (name, table) in files {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io("read", &path, e))?;
        merged.extend(optimizer_record_from_bytes::<B, M>(
            bytes,
            table,
            ids_by_path,
            device,
            &path,
        )?);
    }
    Ok(merged)
}
