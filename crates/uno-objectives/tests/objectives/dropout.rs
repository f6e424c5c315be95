//! Conditioning dropout (host only: decisions, no tensors).

use rand::{SeedableRng, rngs::StdRng};
use uno_objectives::{ConditionDrop, ConditionDropoutConfig, ObjectiveError, drop_condition};

#[test]
fn defaults_are_bagel_values() {
    let c = ConditionDropoutConfig::new();
    assert_eq!((c.text, c.vit, c.vae), (0.1, 0.3, 0.3));
}

#[test]
fn probability_extremes_and_rate() {
    let mut rng = StdRng::seed_from_u64(1);
    assert!((0..1000).all(|_| !drop_condition(0.0, &mut rng).unwrap()));
    assert!((0..1000).all(|_| drop_condition(1.0, &mut rng).unwrap()));
    // p = 0.1 over 100k draws: sd = sqrt(0.09 / 1e5) = 0.00095; allow 5 sd.
    let n = 100_000;
    let drops = (0..n)
        .filter(|_| drop_condition(0.1, &mut rng).unwrap())
        .count();
    let rate = drops as f64 / n as f64;
    assert!((rate - 0.1).abs() < 0.0048, "rate {rate}");
    // Per-condition rates of the config over many samples.
    let c = ConditionDropoutConfig::new();
    let (mut t, mut v, mut a) = (0, 0, 0);
    for id in 0..n as u64 {
        let d = c.decide_for_sample(42, id).unwrap();
        t += d.text as usize;
        v += d.vit as usize;
        a += d.vae as usize;
    }
    // sd for p = 0.3: sqrt(0.21 / 1e5) = 0.00145; allow 5 sd.
    assert!((t as f64 / n as f64 - 0.1).abs() < 0.0048, "text {t}");
    assert!((v as f64 / n as f64 - 0.3).abs() < 0.0073, "vit {v}");
    assert!((a as f64 / n as f64 - 0.3).abs() < 0.0073, "vae {a}");
}

#[test]
fn seeded_and_order_independent() {
    let c = ConditionDropoutConfig::new()
        .with_text(0.5)
        .with_vit(0.5)
        .with_vae(0.5);
    let a: Vec<ConditionDrop> = (0..200)
        .map(|i| c.decide_for_sample(7, i).unwrap())
        .collect();
    let b: Vec<ConditionDrop> = (0..200)
        .rev()
        .map(|i| c.decide_for_sample(7, i).unwrap())
        .collect();
    let b: Vec<ConditionDrop> = b.into_iter().rev().collect();
    assert_eq!(a, b, "decisions depend only on (seed, sample id)");
    let other: Vec<ConditionDrop> = (0..200)
        .map(|i| c.decide_for_sample(8, i).unwrap())
        .collect();
    assert_ne!(a, other, "another seed gives other decisions");
    let mut r1 = StdRng::seed_from_u64(3);
    let mut r2 = StdRng::seed_from_u64(3);
    for _ in 0..50 {
        assert_eq!(c.decide(&mut r1).unwrap(), c.decide(&mut r2).unwrap());
    }
}

#[test]
fn invalid_probabilities_are_errors() {
    let mut rng = StdRng::seed_from_u64(0);
    for p in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            drop_condition(p, &mut rng),
            Err(ObjectiveError::InvalidValue { .. })
        ));
    }
    let err = ConditionDropoutConfig::new()
        .with_vit(2.0)
        .decide(&mut rng)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ObjectiveError::InvalidValue {
                name: "condition_dropout.vit",
                ..
            }
        ),
        "{err}"
    );
}
