//! Data parallel on burn-collective: two peers with a global batch end where one device
//! with the same global batch ends, a failing peer stops them all, and a data source's
//! state is resumed by the same number of peers or re-divided for another.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use burn::tensor::backend::AutodiffBackend;
use uno_trainer::checkpoint::{
    OPTIMIZER_FILE, list_checkpoints, optimizer_shard_file, read_verified_state,
};
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
/// (resuming from `dir`'s checkpoints), with `fault` in the data, the optimizer state
/// sharded (`optimizer.shard_state`) or not.
fn train<B: AutodiffBackend>(
    dir: &Path,
    peers: usize,
    weighted: bool,
    fault: Fault,
    shard: bool,
) -> Result<Vec<[Vec<f32>; 4]>, TrainError> {
    let config = |k| {
        config(dir, k, 5)
            .with_overrides(&[format!("optimizer.shard_state={shard}")])
            .unwrap()
    };
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
        let mut trainer = Trainer::resume_or_new(config(k), model, device)?;
        trainer.fit(&mut data, None)?;
        return Ok(vec![weights(&trainer)]);
    }
    let devices = vec![device; peers];
    run_data_parallel::<B, _, TrainError, _>(&devices, |peer| {
        // Each peer builds its own model; peer 1's differs, and the broadcast fixes it.
        let model = toy::toy::<B>(3 + peer.rank() as u64, &B::Device::default());
        let mut trainer =
            Trainer::resume_or_new(config(k), model, B::Device::default())?.join(peer)?;
        let mut data = data;
        trainer.fit(&mut data, None)?;
        Ok(weights(&trainer))
    })
}

fn two_peers_match_one_device<B: AutodiffBackend>() {
    let _serial = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    for weighted in [true, false] {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let single = train::<B>(one.path(), 1, weighted, Fault::Clean, false).unwrap();
        let peers = train::<B>(two.path(), 2, weighted, Fault::Clean, false).unwrap();
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
    let want = train::<B>(straight.path(), 2, true, Fault::Clean, false).unwrap();
    for peers in [2, 1] {
        let dir = tempfile::tempdir().unwrap();
        let err = train::<B>(dir.path(), 2, true, Fault::Unreadable(17), false).unwrap_err();
        assert!(
            matches!(err, TrainError::Data { position: 17, .. }),
            "{err}"
        );
        let got = train::<B>(dir.path(), peers, true, Fault::Clean, false).unwrap();
        if peers == 2 {
            assert_eq!(got[0], want[0]);
        }
        for (got, want) in got[0].iter().zip(&want[0]) {
            uno_testing::assert_close(got, want, 1e-7, 1e-6);
        }
    }
}

/// Sharded optimizer state (ZeRO-1) gives the replicated run's weights and EMA bit for
/// bit; the checkpoint holds one file per peer, the shares disjoint and covering every
/// trainable parameter as the balancing assigns them (by hand: sizes inp.weight 12,
/// inp.bias 4, head.weight 8, head.bias 2 -> 12 to peer 0, 8 and 4 to peer 1, 2 to
/// peer 0).
fn sharded_optimizer_state_gives_the_same_updates<B: AutodiffBackend>() {
    let _serial = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let (plain, sharded) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let want = train::<B>(plain.path(), 2, true, Fault::Clean, false).unwrap();
    let got = train::<B>(sharded.path(), 2, true, Fault::Clean, true).unwrap();
    assert_eq!(got, want, "the same bits as the replicated optimizer");
    let (step, last) = list_checkpoints(sharded.path()).unwrap().pop().unwrap();
    assert_eq!(step, 5);
    let state = read_verified_state(&last).unwrap();
    assert!(state.optimizer_param_paths.is_empty());
    assert!(!last.join(OPTIMIZER_FILE).exists());
    let shares: Vec<BTreeSet<&str>> = state
        .optimizer_shards
        .iter()
        .map(|table| table.values().map(String::as_str).collect())
        .collect();
    let want: [BTreeSet<&str>; 2] = [
        ["inp.weight", "head.bias"].into(),
        ["inp.bias", "head.weight"].into(),
    ];
    assert_eq!(shares, want);
    for rank in 0..2 {
        let file = optimizer_shard_file(rank, 2);
        assert!(state.files.contains_key(&file), "{file} is checksummed");
    }
    // The replicated run's single file holds every share's entries.
    let (_, replicated) = list_checkpoints(plain.path()).unwrap().pop().unwrap();
    let whole = read_verified_state(&replicated).unwrap();
    assert_eq!(whole.optimizer_param_paths.len(), 4);
    assert!(whole.optimizer_shards.is_empty());
}

/// A sharded run stopped by a bad sample (position 17, step 4) resumes from its step-4
/// checkpoint sharded or replicated on two peers (the same bits as a straight sharded run)
/// and on one device (the same up to summation order); a replicated checkpoint resumes
/// sharded.
fn sharded_state_resumes_on_any_peers<B: AutodiffBackend>() {
    let _serial = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let straight = tempfile::tempdir().unwrap();
    let want = train::<B>(straight.path(), 2, true, Fault::Clean, true).unwrap();
    for (first, peers, then) in [
        (true, 2, true),
        (true, 2, false),
        (true, 1, false),
        (false, 2, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let err = train::<B>(dir.path(), 2, true, Fault::Unreadable(17), first).unwrap_err();
        assert!(
            matches!(err, TrainError::Data { position: 17, .. }),
            "{err}"
        );
        let got = train::<B>(dir.path(), peers, true, Fault::Clean, then).unwrap();
        match peers {
            2 => assert_eq!(got[0], want[0], "{first} -> {then}"),
            _ => {
                for (got, want) in got[0].iter().zip(&want[0]) {
                    uno_testing::assert_close(got, want, 1e-7, 1e-6);
                }
            }
        }
    }
}

/// A NaN loss in peer 0's part of step 1 (position 5) skips that step on both peers, as
/// one device skips it: the same weights, and one skipped step in the metrics.
fn a_nan_on_one_peer_skips_the_step_everywhere<B: AutodiffBackend>() {
    let _serial = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let single = train::<B>(one.path(), 1, true, Fault::Nan(5), false).unwrap();
    let peers = train::<B>(two.path(), 2, true, Fault::Nan(5), false).unwrap();
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
/// is peer 1's own, and only the complete checkpoints of the steps before are on disk
/// (with the optimizer state replicated, and sharded).
fn a_failing_peer_stops_every_peer<B: AutodiffBackend>() {
    let _serial = COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner());
    for shard in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let devices = vec![B::Device::default(); 2];
        let config = config(dir.path(), 2, 5)
            .with_overrides(&[
                "checkpoint.every=1".to_string(),
                format!("optimizer.shard_state={shard}"),
            ])
            .unwrap();
        let errors = Mutex::new(Vec::new());
        let result = run_data_parallel::<B, _, TrainError, _>(&devices, |peer| {
            let rank = peer.rank();
            let model = toy::toy::<B>(3, &B::Device::default());
            let mut trainer =
                Trainer::new(config.clone(), model, B::Device::default())?.join(peer)?;
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
        // The sharded checkpoints are whole: both shares, checksummed.
        for (_, checkpoint) in list_checkpoints(dir.path()).unwrap() {
            let state = read_verified_state(&checkpoint).unwrap();
            assert_eq!(state.optimizer_shards.len(), if shard { 2 } else { 0 });
        }
    }
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
    sharded_optimizer_state_gives_the_same_updates,
    sharded_state_resumes_on_any_peers,
);
