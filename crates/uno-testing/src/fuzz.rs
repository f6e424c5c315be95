//! [`fuzz`]: property-based fuzzing with `proptest` (no nightly toolchain needed, unlike
//! cargo-fuzz): a target function is run on generated inputs and must not panic (a panic
//! is a failure, shrunk to a small input by proptest).
//!
//! Two modes, chosen by the environment:
//! * default (CI): one pass of [`CI_CASES`] cases from a fixed seed, so the run is the same
//!   every time and a failure is reproducible;
//! * `UNO_FUZZ_SECONDS=600 cargo test ... fuzz -- --nocapture`: random seeds, pass after
//!   pass, until the time is up; prints the number of cases and passes.

use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// Cases of the seeded pass that CI runs.
pub const CI_CASES: u32 = 256;
/// The seed of the CI pass.
pub const CI_SEED: u64 = 0x0f0f_2026;
/// Environment variable holding the time budget, in seconds, of a long run.
pub const SECONDS_VAR: &str = "UNO_FUZZ_SECONDS";

/// Run `target` on inputs from `strategy` (see the module docs for the two modes); panics
/// with proptest's report (the shrunk input) on the first failure. Returns the number of
/// cases run.
pub fn fuzz<S, F>(name: &str, strategy: S, target: F) -> u64
where
    S: Strategy,
    S::Value: std::fmt::Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError>,
{
    let budget = std::env::var(SECONDS_VAR)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let config = |seed: RngSeed, cases: u32| Config {
        cases,
        rng_seed: seed,
        failure_persistence: None,
        ..Config::default()
    };
    let Some(budget) = budget else {
        let mut runner = TestRunner::new(config(RngSeed::Fixed(CI_SEED), CI_CASES));
        if let Err(e) = runner.run(&strategy, &target) {
            panic!("fuzz target {name} (seeded pass, seed {CI_SEED}): {e}");
        }
        return u64::from(CI_CASES);
    };
    let started = Instant::now();
    let (mut cases, mut passes) = (0u64, 0u64);
    let per_pass = 1000;
    while started.elapsed() < budget {
        let seed = started.elapsed().as_nanos() as u64 ^ (passes << 32);
        let mut runner = TestRunner::new(config(RngSeed::Fixed(seed), per_pass));
        if let Err(e) = runner.run(&strategy, &target) {
            panic!("fuzz target {name} (seed {seed}, after {cases} cases): {e}");
        }
        cases += u64::from(per_pass);
        passes += 1;
    }
    eprintln!(
        "fuzz target {name}: {cases} cases in {passes} passes, {:.0} s, no failure",
        started.elapsed().as_secs_f64()
    );
    cases
}
