//! Data parallel on burn-collective: two peers with a global batch end where one device
//! with the same global batch ends, a failing peer stops them all, and a data source's
//! state is resumed by the same number of peers or re-divided for another.

use std::path::Path;
use std::sync::Mutex;

use burn::tensor::backend::AutodiffBackend;
use uno_trainer::checkpoint::{list_checkpoints, read_verified_state};
use uno_trainer::{
    BoxError, DataSource, TrainConfig, TrainError, TrainRng, Trainer, run_data_parallel,
};

use crate::test_config;
use crate::toy::{self, ToyBatch};

/// burn-collective keeps one server per backend type and process: data-parallel tests of
/// one backend must not overlap.
static COLLECTIVE: Mutex<()> = Mutex::new(());

/// The micro-batch at `position`: 1 to 3 rows (so peers hold different token counts),
/// token-weighted or not, no noise (a peer draws its data randomness from its own stream,
/// so only noise-free data is the same on one device and on two).
fn batch_at(position: u64, weighted: bool) -> ToyBatch {
    let rows = 1 + (position % 3) as usize;
    let mut batch = toy::batch(position * 3, rows, 0.0, &mut TrainRng::new(0));
    batch.weighted = weighted;
    batch
}

/// `test_config` with `k` micro-batches per peer, clipping that bites, `iterations` steps.
fn config(dir: &Path, k: u32, iterations: u64) -> TrainConfig {
    test_config(dir)
        .with_overrides(&[
            format!("grad_accumulation={k}"),
            format!("iterations={iterations}"),
            "optimizer.grad_clip=0.05".into(),
            "checkpoint.every=2".into(),
        ])
        .unwrap()
}

/// A bad micro-batch in the data.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// None.
    Clean,
    /// The source cannot read this position.
    Unreadable(u64),
    /// The micro-batch at this position has a NaN loss.
    Nan(u64),
}

/// (inp, head, ema inp, ema head) after `iterations` steps of a global batch of 4
/// micro-batches: on one device (`peers == 1`: accumulation 4) or on `peers` peers
/// (resuming from `dir`'s checkpoints), with `fault` in the data.
fn train<B: AutodiffBackend>(
    dir: &Path,
    peers: usize,
    weighted: bool,
    fault: Fault,
) -> Result<Vec<[Vec<f32>; 4]>, TrainError> {
    let iterations = 5;
    let weights = |t: &Trainer<B, toy::Toy<B>>| {
        let (inp, _, head) = toy::all(t.model());
        let (ema_inp, _, ema_head) = toy::all(t.ema());
        [inp, head, ema_inp, ema_head]
    };
    let k = 4 / peers as u32;
    let device = B::Device::default();
    let mut data = move |p: u64, _: &mut TrainRng| -> Result<ToyBatch, BoxError> {
        let mut batch = batch_at(p, weighted);
        match fault {
            Fault::Unreadable(bad) if p == bad => return Err(format!("bad sample {p}").into()),
            Fault::Nan(bad) => batch.poison = p == bad,
            _ => {}
        }
        Ok(batch)
    };
    if peers == 1 {
        let model = toy::toy::<B>(3, &device);
        let mut trainer = Trainer::resume_or_new(config(dir, k, iterations), model, device)?;
        trainer.fit(&mut data, None)?;
        return Ok(vec![weights(&trainer)]);
    }
    let devices = vec![device; peers];
    run_data_parallel::<B, _, TrainError, _>(&devices, |peer| {
        // Each peer builds its own model; peer 1's differs, and the broadcast fixes it.
        let model = toy::toy::<B>(3 + peer.rank() as u64, &B::Device::default());
        let mut trainer =
            Trainer::resume_or_new(config(dir, k, iterations), model, B::Device::default())?
                .join(peer)?;
        let mut data = data;
        trainer.fit(&mut data, None)?;
        Ok(weights(&trainer))
    })
}

fn two_peers_match_one_device<B: AutodiffBackend>() {
    let _serial = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    for weighted in [true, false] {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let single = train::<B>(one.path(), 1, weighted, Fault::Clean).unwrap();
        let peers = train::<B>(two.path(), 2, weighted, Fault::Clean).unwrap();
        assert_eq!(peers[0], peers[1], "the replicas are bit-identical");
        for (got, want) in peers[0].iter().zip(&single[0]) {
            uno_testing::assert_close(got, want, 1e-7, 1e-6);
        }
        // Peer 0 wrote the checkpoints; the data position counts both peers' reads.
        let written = list_checkpoints(two.path()).unwrap();
        let steps: Vec<u64> = written.iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [2, 4, 5]);
        let state = read_verified_state(&written[2].1).unwrap();
        assert_eq!(state.data_position, 5 * 4);
    }
}

/// Two peers stopped by a bad sample in step 4 (position 17, peer 0's) resume from their
/// step-4 checkpoint: on two peers, the same weights as a straight run; on one device
/// (the data continues from the global position), the same up to summation order.
fn two_peers_resume_exactly<B: AutodiffBackend>() {
    let _serial = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let straight = tempfile::tempdir().unwrap();
    let want = train::<B>(straight.path(), 2, true, Fault::Clean).unwrap();
    for peers in [2, 1] {
        let dir = tempfile::tempdir().unwrap();
        let err = train::<B>(dir.path(), 2, true, Fault::Unreadable(17)).unwrap_err();
        assert!(
            matches!(err, TrainError::Data { position: 17, .. }),
            "{err}"
        );
        let got = train::<B>(dir.path(), peers, true, Fault::Clean).unwrap();
        if peers == 2 {
            assert_eq!(got[0], want[0]);
        }
        for (got, want) in got[0].iter().zip(&want[0]) {
            uno_testing::assert_close(got, want, 1e-7, 1e-6);
        }
    }
}

/// A NaN loss in peer 0's part of step 1 (position 5) skips that step on both peers, as
/// one device skips it: the same weights, and one skipped step in the metrics.
fn a_nan_on_one_peer_skips_the_step_everywhere<B: AutodiffBackend>() {
    let _serial = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let single = train::<B>(one.path(), 1, true, Fault::Nan(5)).unwrap();
    let peers = train::<B>(two.path(), 2, true, Fault::Nan(5)).unwrap();
    for (got, want) in peers[1].iter().zip(&single[0]) {
        uno_testing::assert_close(got, want, 1e-7, 1e-6);
    }
    let metrics = std::fs::read_to_string(two.path().join("metrics.jsonl")).unwrap();
    let skipped: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["skipped"] == true)
        .collect();
    assert_eq!(skipped.len(), 1, "{metrics}");
    assert_eq!(skipped[0]["data_position"], 4);
}

/// Peer 1 cannot read the micro-batch at position 10 (step 2): every peer stops, the error
/// is peer 1's own, and only the complete checkpoints of the steps before are on disk.
fn a_failing_peer_stops_every_peer<B: AutodiffBackend>() {
    let _serial = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let devices = vec![B::Device::default(); 2];
    let config = config(dir.path(), 2, 5)
        .with_overrides(&["checkpoint.every=1"])
        .unwrap();
    let errors = Mutex::new(Vec::new());
    let result = run_data_parallel::<B, _, TrainError, _>(&devices, |peer| {
        let rank = peer.rank();
        let model = toy::toy::<B>(3, &B::Device::default());
        let mut trainer = Trainer::new(config.clone(), model, B::Device::default())?.join(peer)?;
        let mut data = |p: u64, _: &mut TrainRng| -> Result<ToyBatch, BoxError> {
            match p {
                10 => Err("bad sample 10".into()),
                _ => Ok(batch_at(p, true)),
            }
        };
        let result = trainer.fit(&mut data, None);
        if let Err(e) = &result {
            errors.lock().unwrap().push((rank, e.to_string()));
        }
        result.map(|_| ())
    });
    let err = result.unwrap_err();
    assert!(
        matches!(err, TrainError::Data { position: 10, .. }),
        "the cause is returned: {err}"
    );
    let mut errors = errors.into_inner().unwrap();
    errors.sort();
    assert_eq!(errors.len(), 2, "every peer stopped: {errors:?}");
    assert_eq!(
        errors[0].1,
        "peer 1 failed while reading data at step 2 (its own error says why); peer 0 stopped \
         with it"
    );
    assert!(errors[1].1.contains("bad sample 10"), "{}", errors[1].1);
    let steps: Vec<u64> = list_checkpoints(dir.path())
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(steps, [1, 2]);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == "step-000001" || n == "step-000002"),
        "nothing half written: {names:?}"
    );
}

/// A source with a state (how many micro-batches it read) and no way to re-divide it.
struct Counting {
    read: u64,
}

impl DataSource for Counting {
    type Batch = ToyBatch;

    fn batch(&mut self, position: u64, _: &mut TrainRng) -> Result<ToyBatch, BoxError> {
        self.read += 1;
        Ok(batch_at(position, true))
    }

    fn state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "read": self.read }))
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), BoxError> {
        self.read = state["read"].as_u64().ok_or("no `read`")?;
        Ok(())
    }
}

/// Two peers' states: one device is refused them (the source cannot re-divide them) and
/// writes nothing; two peers restore their own (each counts on from 2).
fn a_state_that_cannot_be_redivided_needs_the_same_peers<B: AutodiffBackend>() {
    let _serial = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let run = |peers: usize, iterations: u64| {
        let devices = vec![B::Device::default(); peers];
        let config = config(dir.path(), 1, iterations);
        let fit = |peer| {
            let model = toy::toy::<B>(3, &B::Device::default());
            let mut trainer = Trainer::resume_or_new(config.clone(), model, B::Device::default())?;
            if let Some(peer) = peer {
                trainer = trainer.join(peer)?;
            }
            trainer.fit(&mut Counting { read: 0 }, None).map(|_| ())
        };
        match peers {
            1 => fit(None),
            _ => run_data_parallel::<B, _, TrainError, _>(&devices, |peer| fit(Some(peer)))
                .map(|_| ()),
        }
    };
    run(2, 2).unwrap();
    let err = run(1, 4).unwrap_err();
    match &err {
        TrainError::PeerCountChanged {
            saved: 2,
            now: 1,
            reason,
        } => {
            assert!(reason.contains("cannot re-divide"), "{reason}")
        }
        _ => panic!("{err}"),
    }
    let steps = || -> Vec<u64> {
        let written = list_checkpoints(dir.path()).unwrap();
        written.iter().map(|(s, _)| *s).collect()
    };
    assert_eq!(steps(), [2]);
    run(2, 4).unwrap();
    assert_eq!(steps(), [2, 4]);
    let written = list_checkpoints(dir.path()).unwrap();
    let state = read_verified_state(&written[1].1).unwrap();
    let reads: Vec<_> = state.peer_data_states.iter().map(|s| &s["read"]).collect();
    assert_eq!(reads, [4, 4]);
}

autodiff_tests!(
    a_state_that_cannot_be_redivided_needs_the_same_peers,
    two_peers_match_one_device,
    a_nan_on_one_peer_skips_the_step_everywhere,
    two_peers_resume_exactly,
    a_failing_peer_stops_every_peer,
);
