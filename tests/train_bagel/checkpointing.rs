//! Per-layer activation checkpointing in a whole run (`[model] checkpoint_layers`): every
//! pack checkpointed (`checkpoint_above_tokens = 0`) trains the same weights, bit for bit on
//! flex, as no checkpointing. The recomputed layers are the same operations on the same
//! values, each parameter's gradient comes from one partial backward, and the trainer
//! takes the trainee's gradients as they are (`StepOutput::grads`).

use uno_core::train::{ModelSource, RunSpec, run};

use super::run_safety::spec;
use super::{B, model_folder, run_dir};

#[test]
fn checkpointed_layers_train_the_same_weights() {
    let (source, _) = model_folder("checkpointing-source", 16);
    let mut weights = Vec::new();
    for (name, setting) in [
        ("checkpointing-off", "model.checkpoint_layers=false"),
        ("checkpointing-all", "model.checkpoint_above_tokens=0"),
    ] {
        let dir = run_dir(name);
        let spec = RunSpec {
            model: ModelSource::Folder(source.clone()),
            ..spec(&dir, 3, &[setting])
        };
        let report = run::<B>(spec, &Default::default()).unwrap();
        assert_eq!(report.summary.end_step, 3);
        weights.push(std::fs::read(dir.join("step-000003/model.safetensors")).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
    assert!(
        weights[0] == weights[1],
        "checkpointing changed the trained weights"
    );
    std::fs::remove_dir_all(source).unwrap();
}
