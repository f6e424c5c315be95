//! Data parallel through `train::run_parallel` (issue #15): two CPU peers train the tiny
//! BAGEL, each on its shard of the synthetic data; peer 0 writes the run folder and the
//! checkpoints, which hold both peers' data cursors; two peers resume exactly, and one
//! device, then two peers again, continue the stream where the slowest peer stood; the
//! optimizer state sharded over the peers changes no bit.

use std::path::Path;

use serde_json::json;
use uno_core::train::{ModelSource, RunSpec, devices, run, run_parallel};
use uno_core::trainer::checkpoint::{TrainerState, latest_checkpoint, read_verified_state};

use super::run_safety::spec;
use super::{B, model_folder, run_dir};

#[test]
fn two_peers_train_resume_exactly_and_another_count_continues() {
    let (source, _) = model_folder("parallel-source", 15);
    // A constant learning rate, so that a 2-step run resumed to 4 steps with
    // `allow_config_change` follows the schedule of a 4-step run.
    let spec = |dir: &Path, iterations: u64, resume: bool| RunSpec {
        model: ModelSource::Folder(source.clone()),
        resume,
        allow_config_change: resume,
        ..spec(dir, iterations, &["schedule.kind=\"constant\""])
    };
    let peers = devices::<B>(2);
    let (straight, split) = (run_dir("parallel-straight"), run_dir("parallel-split"));
    let report = run_parallel::<B>(spec(&straight, 4, false), &peers).unwrap();
    assert_eq!(report.summary.end_step, 4);
    assert!(straight.join("model.safetensors").exists());

    run_parallel::<B>(spec(&split, 2, false), &peers).unwrap();
    let state = latest_state(&split);
    assert_eq!(state.data_state, None);
    // Two samples per micro-batch, one micro-batch per peer and step: each peer's cursor
    // is 4 into its own shard, and the step read 2 positions (one per peer).
    let cursors: Vec<u64> = state
        .peer_data_states
        .iter()
        .map(|s| s["cursor"].as_u64().unwrap())
        .collect();
    assert_eq!(cursors, [4, 4]);
    assert_eq!(state.data_position, 4);

    // Resumed with the optimizer state sharded (ZeRO-1): the same updates bit for bit.
    let sharded = |dir: &Path, iterations: u64| RunSpec {
        config: spec(dir, iterations, true)
            .config
            .with_overrides(&["optimizer.shard_state=true"])
            .unwrap(),
        ..spec(dir, iterations, true)
    };
    let report = run_parallel::<B>(sharded(&split, 4), &peers).unwrap();
    assert_eq!((report.summary.start_step, report.summary.end_step), (2, 4));
    let state = latest_state(&split);
    assert_eq!(state.optimizer_shards.len(), 2);
    assert!(state.optimizer_param_paths.is_empty());
    for file in ["model.safetensors", "ema.safetensors"] {
        let (a, b) = (
            std::fs::read(straight.join(file)).unwrap(),
            std::fs::read(split.join(file)).unwrap(),
        );
        assert!(
            a == b,
            "{file}: the resumed run differs from a straight one"
        );
    }

    // One device resumes the two peers' checkpoint (cursors 8 and 8): the stream continues
    // at item 16 (peer 0's next; peer 1's is 17), and its two steps read 2 samples each.
    let report = run::<B>(spec(&split, 6, true), &Default::default()).unwrap();
    assert_eq!((report.summary.start_step, report.summary.end_step), (4, 6));
    let state = latest_state(&split);
    assert!(state.peer_data_states.is_empty());
    assert_eq!(state.data_state, Some(json!({ "cursor": 4, "start": 16 })));
    assert_eq!(state.data_position, 10);
    // Two peers resume one device's checkpoint: from item 16 + 4 = 20, 4 samples each.
    let report = run_parallel::<B>(spec(&split, 8, true), &peers).unwrap();
    assert_eq!((report.summary.start_step, report.summary.end_step), (6, 8));
    let state = latest_state(&split);
    assert_eq!(state.data_state, None);
    assert_eq!(
        state.peer_data_states,
        [
            json!({ "cursor": 4, "start": 20 }),
            json!({ "cursor": 4, "start": 20 })
        ]
    );
    assert_eq!(state.data_position, 14);
    for dir in [straight, split, source] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

fn latest_state(dir: &Path) -> TrainerState {
    let (_, checkpoint) = latest_checkpoint(dir).unwrap().unwrap();
    read_verified_state(&checkpoint).unwrap()
}
