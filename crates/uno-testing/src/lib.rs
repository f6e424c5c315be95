//! Test support shared by the uno-rs crates (never published).
//!
//! * [`backend_tests!`] instantiates generic test functions once per Burn backend: always on
//!   `Flex` (the default CPU backend), and on `NdArray`, `Wgpu` and `Cuda` when the *calling*
//!   crate enables its `ndarray`, `wgpu` or `cuda` feature. The `cfg`s are expanded in the
//!   caller, which is why this is a macro and not a function. Gradient tests wrap the
//!   backend in `burn::backend::Autodiff` inside the test function.
//! * [`assert_close`] / [`assert_tensor_close`] compare floats with an absolute + relative
//!   tolerance and name the first offending index.
//! * [`Fixture`] reads the safetensors files the reference scripts under `tools/` write.
//! * [`bf16_child`] runs a test again in a child process with bf16 as the default float.
//! * [`fuzz`] runs a fuzz target on proptest-generated inputs: a seeded pass in CI, a timed
//!   random run with `UNO_FUZZ_SECONDS`.

mod alloc;
mod fixture;
mod fuzz;
mod grads;

pub use alloc::{PeakAlloc, peak_heap_of};
pub use fixture::Fixture;
pub use fuzz::{CI_CASES, CI_SEED, SECONDS_VAR, fuzz};
pub use grads::{assert_same_grads, trained_grads};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

/// Instantiate generic test functions for every enabled backend.
///
/// ```ignore
/// fn rmsnorm_matches_reference<B: burn::tensor::backend::Backend>() { /* ... */ }
/// // Gradient tests wrap the backend themselves:
/// fn grads_match_fd<B: burn::tensor::backend::Backend>() {
///     grads_impl::<burn::backend::Autodiff<B>>()
/// }
/// uno_testing::backend_tests!(rmsnorm_matches_reference, grads_match_fd);
/// ```
///
/// Each function becomes `flex::name`, `ndarray::name`, ... so `cargo test flex::` runs one
/// backend. Call it once per test file (it defines the modules `flex`, `ndarray`, ...).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $crate::backend_tests!(@one flex, burn::backend::Flex, all(), $($name),+);
        $crate::backend_tests!(@one ndarray, burn::backend::NdArray, feature = "ndarray", $($name),+);
        $crate::backend_tests!(@one wgpu, burn::backend::Wgpu, feature = "wgpu", $($name),+);
        $crate::backend_tests!(@one cuda, burn::backend::Cuda, feature = "cuda", $($name),+);
    };
    (@one $module:ident, $backend:ty, $cfg:meta, $($name:ident),+) => {
        #[cfg($cfg)]
        mod $module {
            $(
                #[test]
                fn $name() {
                    super::$name::<$backend>();
                }
            )+
        }
    };
}

/// Assert `actual` and `expected` agree element-wise within `atol + rtol * |expected|`.
///
/// Panics with the first offending index, both values and the tolerance, so a failing
/// numerical test says where it failed.
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "length mismatch: actual {} vs expected {}",
        actual.len(),
        expected.len()
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let tol = atol + rtol * e.abs();
        assert!(
            a.is_finite() && (a - e).abs() <= tol,
            "index {i}: actual {a} vs expected {e} (|diff| {} > tol {tol})",
            (a - e).abs()
        );
    }
}

/// Draw every lazily initialised parameter of `module` now. Burn draws a parameter's
/// initial values at its first use, and a clone of a parameter not used yet draws its own:
/// a test that clones a freshly initialised model and compares the copies calls this first.
pub fn materialise<B: Backend, M: Module<B>>(module: &M) {
    struct Materialise;
    impl<B: Backend> ModuleVisitor<B> for Materialise {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Materialise);
}

/// Read a float tensor back to the host as `f32`, whatever the backend's float element.
pub fn to_vec<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("tensor data converts to f32")
}

/// [`assert_close`] on a tensor, also checking its shape.
#[track_caller]
pub fn assert_tensor_close<B: Backend, const D: usize>(
    actual: Tensor<B, D>,
    expected_shape: [usize; D],
    expected: &[f32],
    atol: f32,
    rtol: f32,
) {
    assert_eq!(actual.dims(), expected_shape, "shape mismatch");
    assert_close(&to_vec(actual), expected, atol, rtol);
}

/// Run a bf16 test: Burn fixes a device's default float dtype once per process, before its
/// first tensor (`set_default_dtypes`), so the test re-runs itself (`test`, its full path in
/// the test binary) in a child process that selects bf16 first.
///
/// Returns `None` in the parent, after asserting that the child ran exactly that test and
/// passed; returns the device, with bf16 as its default float type, in the child, which
/// then runs the test's body.
#[track_caller]
pub fn bf16_child<B: Backend>(test: &str) -> Option<B::Device> {
    const CHILD: &str = "UNO_TESTING_BF16_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("the test binary runs");
        let log = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "bf16 child failed:\n{log}");
        assert!(log.contains("1 passed"), "the child ran no test:\n{log}");
        return None;
    }
    let device = B::Device::default();
    burn::tensor::set_default_dtypes::<B>(
        &device,
        burn::tensor::FloatDType::BF16,
        burn::tensor::IntDType::I32,
    )
    .expect("bf16 is selected before the first tensor");
    Some(device)
}
