//! Micro-batches as BAGEL's `PackedDataset` fills them: up to an expected token count,
//! never past the maximum, over-long samples skipped and counted (never truncated), and the
//! token composition of each step in the metrics.

use burn::backend::{Autodiff, Flex};
use uno_core::bagel::BagelConfig;
use uno_core::data::{Dataset, SyntheticConfig, SyntheticScenes};
use uno_core::objectives::ConditionDropoutConfig;
use uno_core::packing::PackingConfig;
use uno_core::train::{BatchFill, PackedBatches, RunConfig, UnoTrainee};
use uno_core::trainer::{DataSource, TrainRng, Trainer};

fn scenes() -> SyntheticScenes {
    SyntheticScenes::new(SyntheticConfig {
        len: 40,
        image_size: 16,
        max_shapes: 3,
        seed: 4,
    })
    .unwrap()
}

fn no_dropout() -> ConditionDropoutConfig {
    ConditionDropoutConfig::new()
        .with_text(0.0)
        .with_vit(0.0)
        .with_vae(0.0)
}

/// The packs the rule gives for sample lengths `lens` read in order: `(pack length, samples,
/// skipped)` of the first `n` packs.
fn expected_packs(
    lens: &[usize],
    longest: usize,
    expected: usize,
    max: usize,
    n: usize,
) -> Vec<(usize, usize, u64)> {
    let mut packs = Vec::new();
    let mut next = 0;
    while packs.len() < n {
        let (mut len, mut samples, mut skipped) = (0, 0, 0);
        while len < expected {
            let l = lens[next % lens.len()];
            if l > longest || l > max {
                skipped += 1;
                next += 1;
                continue;
            }
            if len > 0 && len + l > max {
                break;
            }
            len += l;
            samples += 1;
            next += 1;
        }
        packs.push((len, samples, skipped));
    }
    packs
}

#[test]
fn token_budget_fills_never_overflows_and_skips_long_samples() {
    let set = scenes();
    let model = BagelConfig::tiny(set.tokenizer().vocab_size(), set.special_tokens());
    let full = model.packing();
    let lens: Vec<usize> = (0..set.len())
        .map(|i| set.get(i).unwrap().sample.token_count(&full).unwrap())
        .collect();
    // About half the samples are longer than the per-sample maximum.
    let mut sorted = lens.clone();
    sorted.sort_unstable();
    let longest = sorted[lens.len() / 2];
    assert!(sorted[0] < longest && longest < sorted[lens.len() - 1]);
    let packing = PackingConfig {
        max_sample_tokens: longest,
        ..full
    };
    let (expected, max) = (150, 190);
    let mut source = PackedBatches::<_, Flex>::new(
        set,
        BatchFill::Tokens { expected, max },
        packing,
        no_dropout(),
        Default::default(),
    );
    let want = expected_packs(&lens, longest, expected, max, 8);
    let mut rng = TrainRng::new(0);
    let mut skipped_total = 0;
    for (p, &(len, samples, skipped)) in want.iter().enumerate() {
        let batch = source.batch(p as u64, &mut rng).unwrap();
        assert_eq!(
            (batch.pack.len, batch.pack.num_samples(), batch.skipped),
            (len, samples, skipped),
            "pack {p}"
        );
        assert!(batch.pack.len <= max);
        assert!(batch.pack.samples.iter().all(|s| s.len <= longest));
        assert_eq!(batch.images.len(), samples);
        assert_eq!(batch.vit_targets.len(), samples);
        skipped_total += skipped;
    }
    assert!(skipped_total > 0, "no sample was long enough to be skipped");
}

#[test]
fn every_sample_too_long_is_an_error_not_a_hang() {
    let set = scenes();
    let model = BagelConfig::tiny(set.tokenizer().vocab_size(), set.special_tokens());
    let packing = PackingConfig {
        max_sample_tokens: 5,
        ..model.packing()
    };
    let mut source = PackedBatches::<_, Flex>::new(
        set,
        BatchFill::Samples(2),
        packing,
        no_dropout(),
        Default::default(),
    );
    let err = source.batch(0, &mut TrainRng::new(0)).unwrap_err();
    assert!(err.to_string().contains("longer than the maximum"), "{err}");
}

/// Each step's metrics line counts its tokens by kind (text, image, caption, metaquery), the
/// samples and the skipped samples, summed over the step's micro-batches.
#[test]
fn step_metrics_report_the_token_composition() {
    type B = Autodiff<Flex>;
    let set = scenes();
    let model_config = BagelConfig::tiny(set.tokenizer().vocab_size(), set.special_tokens());
    let device = Default::default();
    let model = model_config.init::<B>(&device).unwrap();
    let dir = std::env::temp_dir().join(format!("uno-core-composition-{}", std::process::id()));
    let config = RunConfig::tiny()
        .with_overrides(&[
            "grad_accumulation=2".to_string(),
            "metrics.progress=false".into(),
            format!("output_dir=\"{}\"", dir.display()),
        ])
        .unwrap();
    let trainee = UnoTrainee::new(model, model_config.objective().unwrap());
    let mut trainer = Trainer::new(config.trainer, trainee, device).unwrap();
    let batches = |set| {
        PackedBatches::<_, B>::new(
            set,
            BatchFill::Samples(3),
            model_config.packing(),
            no_dropout(),
            Default::default(),
        )
    };
    let metrics = trainer.train_step(&mut batches(scenes())).unwrap();
    // The same two micro-batches, counted independently.
    let mut source = batches(set);
    let mut rng = TrainRng::new(0);
    let packs: Vec<_> = (0..2)
        .map(|p| source.batch(p, &mut rng).unwrap().pack)
        .collect();
    let sum = |f: &dyn Fn(&uno_core::packing::TokenComposition) -> usize| -> u64 {
        packs.iter().map(|p| f(&p.composition()) as u64).sum()
    };
    let c = &metrics.counts;
    assert_eq!(c["text_tokens"], sum(&|t| t.text));
    assert_eq!(c["image_tokens"], sum(&|t| t.image));
    assert_eq!(c["caption_tokens"], sum(&|t| t.caption));
    assert_eq!(c["metaquery_tokens"], sum(&|t| t.metaqueries));
    assert_eq!((c["samples"], c["skipped_samples"]), (6, 0));
    // 6 samples of 16 latent tokens + 2 markers each.
    assert_eq!(c["image_tokens"], 6 * 18);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The data set indexes each source consumed, in order (`sample_ids` of every position it
/// read; nothing is skipped here).
fn consumed(source: &PackedBatches<SyntheticScenes, Flex>, positions: u64) -> Vec<usize> {
    (0..positions)
        .flat_map(|p| source.sample_ids(p))
        .map(|id| id.strip_prefix("item ").unwrap().parse().unwrap())
        .collect()
}

/// A checkpoint of `n` token-budget peers resumed by `m`: the stream continues at the
/// first item some peer had not consumed (computed here from what the peers read), so no
/// item is skipped; the new peers read disjoint, gap-free parts of the rest; the only
/// repeats are items a peer ahead had already consumed.
#[test]
fn resharding_continues_the_stream_without_gaps() {
    let set = SyntheticScenes::new(SyntheticConfig {
        len: 400,
        image_size: 16,
        max_shapes: 3,
        seed: 5,
    })
    .unwrap();
    let packing = BagelConfig::tiny(set.tokenizer().vocab_size(), set.special_tokens()).packing();
    let source = |rank: usize, peers: usize, budget: usize| {
        PackedBatches::<_, Flex>::new(
            set.clone(),
            BatchFill::Tokens {
                expected: budget,
                max: budget + budget / 3,
            },
            packing.clone(),
            no_dropout(),
            Default::default(),
        )
        .sharded(rank, peers)
    };
    let mut rng = TrainRng::new(1);
    for (case, (n, m)) in [(2, 1), (1, 2), (2, 3), (3, 2), (4, 4)]
        .into_iter()
        .enumerate()
    {
        let budget = 120 + 40 * case;
        let reads = 3u64;
        let mut before = Vec::new();
        let mut states = Vec::new();
        for rank in 0..n {
            // Uneven lengths make the peers' cursors differ.
            let mut peer = source(rank, n, budget + 30 * rank);
            for p in 0..reads {
                peer.batch(p, &mut rng).unwrap();
            }
            before.push(consumed(&peer, reads));
            states.push(peer.state().unwrap());
        }
        let mut all_before: Vec<usize> = before.concat();
        all_before.sort_unstable();
        assert!(
            all_before.windows(2).all(|w| w[0] < w[1]),
            "{n} peers read an item twice"
        );
        let first_unread = (0..)
            .find(|i| all_before.binary_search(i).is_err())
            .unwrap();

        let mut after = Vec::new();
        for rank in 0..m {
            let mut peer = source(rank, m, budget);
            let state = peer.reshard(&states, rank, m).unwrap();
            assert_eq!(state["start"], first_unread as u64, "{n} -> {m}");
            peer.restore(&state).unwrap();
            for p in 0..reads {
                peer.batch(p, &mut rng).unwrap();
            }
            after.push(consumed(&peer, reads));
        }
        // Each new peer reads its own residue class from the resume point, in order.
        for (rank, items) in after.iter().enumerate() {
            let want: Vec<usize> = (0..items.len())
                .map(|k| first_unread + rank + k * m)
                .collect();
            assert_eq!(items, &want, "{n} -> {m}: new peer {rank}");
        }
        let repeats: Vec<usize> = after
            .concat()
            .into_iter()
            .filter(|i| all_before.binary_search(i).is_ok())
            .collect();
        assert!(repeats.iter().all(|&i| i > first_unread), "{repeats:?}");
        // With several peers, some peer was ahead of the slowest one (the case tests what it
        // should): its lead is read again.
        let lead = all_before.iter().filter(|&&i| i > first_unread).count();
        assert!(
            n == 1 || lead > 0,
            "{n} -> {m}: the peers' cursors did not differ"
        );
    }
}
