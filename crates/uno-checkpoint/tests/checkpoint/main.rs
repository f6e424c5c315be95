//! Checkpoint I/O: readers, writers, conversions and every documented error.
//!
//! Each test writes its own small safetensors files (with the `safetensors` crate directly,
//! independently of the code under test) into a fresh directory under the system temp dir,
//! removed when the test ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::Param;
use burn::nn::{EmbeddingConfig, LayerNormConfig, LinearConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use uno_checkpoint::{
    CheckpointError, Layout, SaveDtype, UnexpectedKeys, WeightReader, WeightWriter,
    read_json_config,
};
use uno_testing::to_vec;

mod fuzz;

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "uno-ckpt-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// File names in the directory, sorted.
    fn list(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Write `(name, dtype, shape, raw little-endian bytes)` with the safetensors crate.
fn write_raw(
    path: &Path,
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    meta: Option<HashMap<String, String>>,
) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                *name,
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

/// Write f32 tensors.
fn write_f32(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let raw: Vec<_> = tensors
        .iter()
        .map(|(n, s, v)| (*n, Dtype::F32, s.clone(), f32_bytes(v)))
        .collect();
    write_raw(path, &raw, None);
}

fn err_of<T: std::fmt::Debug>(r: Result<T, CheckpointError>) -> (CheckpointError, String) {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    (e, msg)
}

// ---------------------------------------------------------------------------------------
// Round trips and conversions (every backend)
// ---------------------------------------------------------------------------------------

/// f32 written by `WeightWriter` and read by `WeightReader` is bit-identical; metadata and
/// key set survive.
fn f32_round_trip_is_bit_identical<B: Backend>() {
    let dir = TempDir::new("f32rt");
    let device = B::Device::default();
    let a: Vec<f32> = vec![1.0, -0.0, 1e-40, -3.0e38, 0.1, std::f32::consts::PI];
    let b: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
    let ta = Tensor::<B, 1>::from_data(TensorData::new(a.clone(), [6]), &device);
    let tb = Tensor::<B, 3>::from_data(TensorData::new(b.clone(), [2, 3, 4]), &device);
    let mut w = WeightWriter::new(SaveDtype::F32).with_metadata("format", "pt");
    w.add_tensor("x.a", ta).unwrap();
    w.add_tensor("x.b", tb).unwrap();
    let path = dir.path("m.safetensors");
    w.write(&path).unwrap();

    let r = WeightReader::open(&path).unwrap();
    assert_eq!(r.keys().collect::<Vec<_>>(), ["x.a", "x.b"]);
    assert_eq!(r.shape("x.b"), Some(&[2, 3, 4][..]));
    assert_eq!(r.dtype("x.a"), Some(Dtype::F32));
    assert_eq!(r.metadata().get("format").map(String::as_str), Some("pt"));
    let ra = to_vec(r.read_tensor::<B, 1>("x.a", [6], &device).unwrap());
    let rb = to_vec(r.read_tensor::<B, 3>("x.b", [2, 3, 4], &device).unwrap());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&ra), bits(&a));
    assert_eq!(bits(&rb), bits(&b));
    // The file holds exactly the bytes of the values.
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("x.b").unwrap().data(), f32_bytes(&b).as_slice());
}

/// A bf16 file loads as exactly the f32 values its bit patterns encode.
fn bf16_file_loads_exact_values<B: Backend>() {
    let dir = TempDir::new("bf16");
    let device = B::Device::default();
    // bf16 bit patterns (computed independently: f32 bits rounded to nearest even, >> 16)
    // of 1.0, -2.5, 3.140625, 1e-3, -1234.5678, 65504.0.
    let bits = [0x3f80u16, 0xc020, 0x4049, 0x3a83, 0xc49a, 0x4780];
    let expected = [
        1.0f32,
        -2.5,
        3.140625,
        131.0 / 131_072.0, // (1 + 3/128) * 2^-10 = 0.00099945068359375
        -1232.0,
        65536.0,
    ];
    let path = dir.path("bf16.safetensors");
    write_raw(
        &path,
        &[("w", Dtype::BF16, vec![2, 3], u16_bytes(&bits))],
        None,
    );
    let r = WeightReader::open(&path).unwrap();
    let got = to_vec(r.read_tensor::<B, 2>("w", [2, 3], &device).unwrap());
    assert_eq!(got, expected);
}

/// Same for f16.
fn f16_file_loads_exact_values<B: Backend>() {
    let dir = TempDir::new("f16");
    let device = B::Device::default();
    // f16 bit patterns of 1.0, -2.5, 3.140625, 1e-3, -1234.5678, 65504.0.
    let bits = [0x3c00u16, 0xc100, 0x4248, 0x1419, 0xe4d3, 0x7bff];
    let expected = [
        1.0f32,
        -2.5,
        3.140625,
        1049.0 / 1_048_576.0, // (1 + 25/1024) * 2^-10 = 0.00100040435791015625
        -1235.0,
        65504.0,
    ];
    let path = dir.path("f16.safetensors");
    write_raw(&path, &[("w", Dtype::F16, vec![6], u16_bytes(&bits))], None);
    let r = WeightReader::open(&path).unwrap();
    let got = to_vec(r.read_tensor::<B, 1>("w", [6], &device).unwrap());
    assert_eq!(got, expected);
}

/// F64 is accepted (rounded to f32).
fn f64_file_loads<B: Backend>() {
    let dir = TempDir::new("f64");
    let device = B::Device::default();
    let v = [0.5f64, -1.25, 1e10];
    let path = dir.path("f64.safetensors");
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_raw(&path, &[("w", Dtype::F64, vec![3], bytes)], None);
    let r = WeightReader::open(&path).unwrap();
    assert_eq!(
        to_vec(r.read_tensor::<B, 1>("w", [3], &device).unwrap()),
        [0.5, -1.25, 1e10]
    );
}

/// The bf16 writer rounds to nearest even and stores BF16 bit patterns.
fn bf16_writer_rounds_to_nearest<B: Backend>() {
    let dir = TempDir::new("bf16w");
    let device = B::Device::default();
    // The last three are 1 + 2^-8 + 2^-10 (above half an ulp: rounds up), 1 + 2^-8 and
    // 1 + 3 * 2^-8 (exact ties: to even), which truncation would get wrong.
    let v = vec![
        1.0f32,
        std::f32::consts::PI,
        -1234.5678,
        1e-3,
        1.004_882_8,
        1.003_906_2,
        1.011_718_8,
    ];
    let mut w = WeightWriter::new(SaveDtype::BF16);
    w.add_tensor(
        "w",
        Tensor::<B, 1>::from_data(TensorData::new(v, [7]), &device),
    )
    .unwrap();
    let path = dir.path("w.safetensors");
    w.write(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("w").unwrap();
    assert_eq!(t.dtype(), Dtype::BF16);
    assert_eq!(
        t.data(),
        u16_bytes(&[0x3f80, 0x4049, 0xc49a, 0x3a83, 0x3f81, 0x3f80, 0x3f82]).as_slice()
    );
}

/// PyTorch `[out, in]` -> Burn `[in, out]` on read, back on write; a loaded Linear computes
/// `x W^T + b` with the PyTorch weight.
fn linear_transpose_round_trip<B: Backend>() {
    let dir = TempDir::new("linear");
    let device = B::Device::default();
    // PyTorch Linear(in=2, out=3): weight [[1, 2], [3, 4], [5, 6]], bias [0.5, -1, 2].
    let w_torch = vec![1.0f32, 2., 3., 4., 5., 6.];
    let bias = vec![0.5f32, -1.0, 2.0];
    let path = dir.path("lin.safetensors");
    write_f32(
        &path,
        &[
            ("fc.weight", vec![3, 2], w_torch.clone()),
            ("fc.bias", vec![3], bias.clone()),
        ],
    );

    let r = WeightReader::open(&path).unwrap();
    let w = r
        .read_linear_weight::<B>("fc.weight", [2, 3], &device)
        .unwrap();
    assert_eq!(w.dims(), [2, 3]);
    assert_eq!(to_vec(w), [1., 3., 5., 2., 4., 6.]);

    let lin = LinearConfig::new(2, 3).init::<B>(&device);
    let lin = r.load_linear(lin, "fc").unwrap();
    // x = [1, -1]: W x = [1-2, 3-4, 5-6] = [-1, -1, -1]; + b = [-0.5, -2, 1].
    let x = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, -1.0], [1, 2]), &device);
    assert_eq!(to_vec(lin.forward(x)), [-0.5, -2.0, 1.0]);
    assert!(r.finish(UnexpectedKeys::Error).is_ok());

    // Write back: the file holds PyTorch's [out, in] again, bit for bit.
    let mut wr = WeightWriter::new(SaveDtype::F32);
    wr.add_linear("fc", &lin).unwrap();
    let out = dir.path("lin2.safetensors");
    wr.write(&out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let wt = st.tensor("fc.weight").unwrap();
    assert_eq!(wt.shape(), [3, 2]);
    assert_eq!(wt.data(), f32_bytes(&w_torch).as_slice());
    assert_eq!(
        st.tensor("fc.bias").unwrap().data(),
        f32_bytes(&bias).as_slice()
    );
}

/// LayerNorm (`weight`/`bias` <-> `gamma`/`beta`) and Embedding round trip.
fn layer_norm_and_embedding_round_trip<B: Backend>() {
    let dir = TempDir::new("ln");
    let device = B::Device::default();
    let path = dir.path("ln.safetensors");
    write_f32(
        &path,
        &[
            ("ln.weight", vec![3], vec![1.0, 2.0, 3.0]),
            ("ln.bias", vec![3], vec![-1.0, 0.0, 1.0]),
            ("emb.weight", vec![2, 3], vec![1., 2., 3., 4., 5., 6.]),
        ],
    );
    let r = WeightReader::open(&path).unwrap();
    let ln = r
        .load_layer_norm(LayerNormConfig::new(3).init::<B>(&device), "ln")
        .unwrap();
    let emb = r
        .load_embedding(EmbeddingConfig::new(2, 3).init::<B>(&device), "emb")
        .unwrap();
    assert_eq!(to_vec(ln.gamma.val()), [1.0, 2.0, 3.0]);
    assert_eq!(to_vec(ln.beta.as_ref().unwrap().val()), [-1.0, 0.0, 1.0]);
    assert_eq!(to_vec(emb.weight.val()), [1., 2., 3., 4., 5., 6.]);
    assert_eq!(r.finish(UnexpectedKeys::Error).unwrap().consumed, 3);

    let mut w = WeightWriter::new(SaveDtype::F32);
    w.add_layer_norm("ln", &ln).unwrap();
    w.add_embedding("emb", &emb).unwrap();
    let out = dir.path("ln2.safetensors");
    w.write(&out).unwrap();
    let r2 = WeightReader::open(&out).unwrap();
    assert_eq!(
        r2.keys().collect::<Vec<_>>(),
        ["emb.weight", "ln.bias", "ln.weight"]
    );
    assert_eq!(
        r2.read_data("ln.bias").unwrap().to_vec::<f32>().unwrap(),
        [-1.0, 0.0, 1.0]
    );
}

/// Two shards behind an index read as one checkpoint.
fn sharded_index_two_shards<B: Backend>() {
    let dir = TempDir::new("sharded");
    let device = B::Device::default();
    write_f32(
        &dir.path("model-00001-of-00002.safetensors"),
        &[("a", vec![2], vec![1.0, 2.0]), ("b", vec![1], vec![3.0])],
    );
    write_f32(
        &dir.path("model-00002-of-00002.safetensors"),
        &[("c", vec![2, 2], vec![4., 5., 6., 7.])],
    );
    let index = r#"{
        "metadata": {"total_size": 28},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors",
            "c": "model-00002-of-00002.safetensors"
        }
    }"#;
    let index_path = dir.path("model.safetensors.index.json");
    std::fs::write(&index_path, index).unwrap();

    let r = WeightReader::open(&index_path).unwrap();
    assert_eq!(r.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(r.files().len(), 2);
    assert_eq!(r.index_metadata().unwrap()["total_size"], 28);
    assert_eq!(
        to_vec(r.read_tensor::<B, 1>("a", [2], &device).unwrap()),
        [1.0, 2.0]
    );
    assert_eq!(
        to_vec(r.read_tensor::<B, 1>("b", [1], &device).unwrap()),
        [3.0]
    );
    assert_eq!(
        to_vec(r.read_tensor::<B, 2>("c", [2, 2], &device).unwrap()),
        [4., 5., 6., 7.]
    );
    assert_eq!(r.finish(UnexpectedKeys::Error).unwrap().consumed, 3);
}

/// Loading into a `Param` keeps its id and device; `try_read_tensor` is `None` when absent.
fn load_param_keeps_id<B: Backend>() {
    let dir = TempDir::new("param");
    let device = B::Device::default();
    let path = dir.path("p.safetensors");
    write_f32(&path, &[("p", vec![2, 2], vec![1., 2., 3., 4.])]);
    let r = WeightReader::open(&path).unwrap();
    let param = Param::from_tensor(Tensor::<B, 2>::zeros([2, 2], &device));
    let id = param.id;
    let param = r.load_param(param, "p", Layout::AsStored).unwrap();
    assert_eq!(param.id, id);
    assert_eq!(to_vec(param.val()), [1., 2., 3., 4.]);
    // A parameter of the wrong shape is refused, naming both shapes.
    let wrong = Param::from_tensor(Tensor::<B, 2>::zeros([4, 1], &device));
    let (_, msg) = err_of(r.load_param(wrong, "p", Layout::AsStored));
    assert!(msg.contains("[4, 1]") && msg.contains("[2, 2]"), "{msg}");
    assert!(
        r.try_read_tensor::<B, 1>("absent", [1], Layout::AsStored, &device)
            .unwrap()
            .is_none()
    );
}

/// Under autodiff, a loaded trainable parameter stays trainable.
fn load_param_keeps_require_grad<B: Backend>() {
    load_param_keeps_require_grad_impl::<burn::backend::Autodiff<B>>();
}

fn load_param_keeps_require_grad_impl<B: AutodiffBackend>() {
    let dir = TempDir::new("grad");
    let device = B::Device::default();
    let path = dir.path("p.safetensors");
    write_f32(&path, &[("p", vec![3], vec![1., 2., 3.])]);
    let r = WeightReader::open(&path).unwrap();
    let param = Param::from_tensor(Tensor::<B, 1>::zeros([3], &device));
    assert!(param.val().is_require_grad());
    let param = r.load_param(param, "p", Layout::AsStored).unwrap();
    assert!(param.val().is_require_grad());
    let grads = (param.val() * param.val()).sum().backward();
    let g = param.val().grad(&grads).unwrap();
    assert_eq!(
        g.into_data().convert::<f32>().to_vec::<f32>().unwrap(),
        [2., 4., 6.]
    );
}

/// Shape mismatch errors name the key and both shapes (rank and Linear layouts included).
fn shape_mismatch_names_both_shapes<B: Backend>() {
    let dir = TempDir::new("shape");
    let device = B::Device::default();
    let path = dir.path("s.safetensors");
    write_f32(&path, &[("layer.w", vec![2, 3], vec![0.0; 6])]);
    let r = WeightReader::open(&path).unwrap();

    let (e, msg) = err_of(r.read_tensor::<B, 2>("layer.w", [3, 2], &device));
    assert!(matches!(e, CheckpointError::ShapeMismatch { .. }), "{e:?}");
    assert!(
        msg.contains("layer.w") && msg.contains("expected [3, 2]") && msg.contains("found [2, 3]"),
        "{msg}"
    );

    let (_, msg) = err_of(r.read_tensor::<B, 1>("layer.w", [6], &device));
    assert!(
        msg.contains("expected [6]") && msg.contains("found [2, 3]"),
        "{msg}"
    );

    // As a Linear weight, Burn [2, 3] means PyTorch [3, 2]: the message says so.
    let (_, msg) = err_of(r.read_linear_weight::<B>("layer.w", [2, 3], &device));
    assert!(
        msg.contains("expected [3, 2]")
            && msg.contains("[out, in]")
            && msg.contains("found [2, 3]"),
        "{msg}"
    );

    // TorchLinear on a 1-D tensor is refused.
    let (e, _) = err_of(r.read_tensor_as::<B, 1>("layer.w", [6], Layout::TorchLinear, &device));
    assert!(
        matches!(e, CheckpointError::UnsupportedLayout { rank: 1, .. }),
        "{e:?}"
    );
    // Nothing was consumed by failed reads.
    assert!(r.consumed_keys().is_empty());
}

/// An integer tensor read as float is an unsupported-dtype error naming the key and dtype.
fn unsupported_dtype_names_key<B: Backend>() {
    let dir = TempDir::new("dtype");
    let device = B::Device::default();
    let path = dir.path("i.safetensors");
    let ints: Vec<u8> = [1i32, 2, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
    write_raw(&path, &[("ids", Dtype::I32, vec![3], ints)], None);
    let r = WeightReader::open(&path).unwrap();
    let (e, msg) = err_of(r.read_tensor::<B, 1>("ids", [3], &device));
    assert!(
        matches!(e, CheckpointError::UnsupportedDtype { .. }),
        "{e:?}"
    );
    assert!(msg.contains("`ids`") && msg.contains("I32"), "{msg}");
}

uno_testing::backend_tests!(
    f32_round_trip_is_bit_identical,
    bf16_file_loads_exact_values,
    f16_file_loads_exact_values,
    f64_file_loads,
    bf16_writer_rounds_to_nearest,
    linear_transpose_round_trip,
    layer_norm_and_embedding_round_trip,
    sharded_index_two_shards,
    load_param_keeps_id,
    shape_mismatch_names_both_shapes,
    unsupported_dtype_names_key,
    load_param_keeps_require_grad,
);

// ---------------------------------------------------------------------------------------
// Errors on files and keys (no tensors involved)
// ---------------------------------------------------------------------------------------

#[test]
fn missing_key_lists_first_few() {
    let dir = TempDir::new("missing");
    let path = dir.path("m.safetensors");
    write_f32(&path, &[("present", vec![1], vec![1.0])]);
    let r = WeightReader::open(&path).unwrap();

    let (e, msg) = err_of(r.read_data("absent.weight"));
    assert!(
        matches!(e, CheckpointError::MissingKeys { total: 1, .. }),
        "{e:?}"
    );
    assert!(
        msg.contains("`absent.weight`") && msg.contains("m.safetensors"),
        "{msg}"
    );

    let expected: Vec<String> = std::iter::once("present".to_string())
        .chain((0..7).map(|i| format!("k{i}")))
        .collect();
    let (e, msg) = err_of(r.check_keys(&expected));
    match &e {
        CheckpointError::MissingKeys { keys, total, .. } => {
            assert_eq!(*total, 7);
            assert_eq!(keys, &["k0", "k1", "k2", "k3", "k4"]);
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(
        msg.contains("7 expected key(s) missing")
            && msg.contains("and 2 more")
            && !msg.contains("k5"),
        "{msg}"
    );
    assert!(r.check_keys(["present"]).is_ok());
}

#[test]
fn truncated_file_is_corrupt_with_path() {
    let dir = TempDir::new("trunc");
    let good = dir.path("good.safetensors");
    write_f32(
        &good,
        &[
            ("a", vec![64], vec![1.0; 64]),
            ("b", vec![64], vec![2.0; 64]),
        ],
    );
    let bytes = std::fs::read(&good).unwrap();

    for (name, len) in [
        ("half.safetensors", bytes.len() / 2),
        ("short.safetensors", 4),
        ("empty.safetensors", 0),
    ] {
        let path = dir.path(name);
        std::fs::write(&path, &bytes[..len]).unwrap();
        let (e, msg) = err_of(WeightReader::open(&path));
        assert!(
            matches!(e, CheckpointError::Corrupt { .. }),
            "{name}: {e:?}"
        );
        assert!(
            msg.contains(name) && msg.contains("truncated or corrupt"),
            "{msg}"
        );
    }
    // One byte missing from the data: the header no longer matches the size.
    let path = dir.path("minus1.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(
        WeightReader::open(&path),
        Err(CheckpointError::Corrupt { .. })
    ));
}

#[test]
fn corrupt_header_is_corrupt_with_path() {
    let dir = TempDir::new("garbage");
    // Random bytes: the header length is absurd.
    let path = dir.path("garbage.safetensors");
    std::fs::write(&path, b"\xde\xad\xbe\xef\xde\xad\xbe\xef garbage garbage").unwrap();
    let (e, msg) = err_of(WeightReader::open(&path));
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e:?}");
    assert!(msg.contains("garbage.safetensors"), "{msg}");

    // A plausible length, but the header is not JSON.
    let path = dir.path("notjson.safetensors");
    let mut bytes = 8u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{not json");
    std::fs::write(&path, &bytes[..16]).unwrap();
    let (e, msg) = err_of(WeightReader::open(&path));
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e:?}");
    assert!(
        msg.contains("notjson.safetensors") && msg.contains("JSON"),
        "{msg}"
    );

    // A missing file is an io error naming it.
    let (e, msg) = err_of(WeightReader::open(dir.path("nope.safetensors")));
    assert!(matches!(e, CheckpointError::Io { .. }), "{e:?}");
    assert!(msg.contains("nope.safetensors"), "{msg}");
}

#[test]
fn index_errors_name_the_culprit() {
    let dir = TempDir::new("index");
    write_f32(&dir.path("s1.safetensors"), &[("a", vec![1], vec![1.0])]);

    // A shard that does not exist.
    let idx = dir.path("missing.safetensors.index.json");
    std::fs::write(
        &idx,
        r#"{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}"#,
    )
    .unwrap();
    let (e, msg) = err_of(WeightReader::open(&idx));
    assert!(matches!(e, CheckpointError::MissingShard { .. }), "{e:?}");
    assert!(
        msg.contains("s2.safetensors")
            && msg.contains("`b`")
            && msg.contains("missing.safetensors.index.json"),
        "{msg}"
    );

    // A key its shard lacks.
    let idx = dir.path("wrong.safetensors.index.json");
    std::fs::write(
        &idx,
        r#"{"weight_map": {"a": "s1.safetensors", "z": "s1.safetensors"}}"#,
    )
    .unwrap();
    let (e, msg) = err_of(WeightReader::open(&idx));
    assert!(matches!(e, CheckpointError::KeyNotInShard { .. }), "{e:?}");
    assert!(
        msg.contains("`z`") && msg.contains("s1.safetensors"),
        "{msg}"
    );

    // Not an index at all.
    let idx = dir.path("bad.safetensors.index.json");
    std::fs::write(&idx, r#"{"metadata": {}}"#).unwrap();
    let (e, msg) = err_of(WeightReader::open(&idx));
    assert!(matches!(e, CheckpointError::InvalidIndex { .. }), "{e:?}");
    assert!(
        msg.contains("weight_map") && msg.contains("bad.safetensors.index.json"),
        "{msg}"
    );
}

#[test]
fn unexpected_keys_per_policy() {
    let dir = TempDir::new("unexpected");
    let path = dir.path("u.safetensors");
    write_f32(
        &path,
        &[
            ("used", vec![1], vec![1.0]),
            ("extra.a", vec![1], vec![2.0]),
            ("extra.b", vec![1], vec![3.0]),
            ("pos_embed", vec![1], vec![4.0]),
        ],
    );
    let r = WeightReader::open(&path).unwrap();
    r.read_data("used").unwrap();

    let (e, msg) = err_of(r.finish(UnexpectedKeys::Error));
    assert!(
        matches!(e, CheckpointError::UnexpectedKeys { total: 3, .. }),
        "{e:?}"
    );
    assert!(
        msg.contains("`extra.a`") && msg.contains("`extra.b`") && msg.contains("`pos_embed`"),
        "{msg}"
    );
    assert!(!msg.contains("`used`"), "{msg}");

    let report = r.finish(UnexpectedKeys::Warn).unwrap();
    assert_eq!(report.consumed, 1);
    assert_eq!(report.unexpected, ["extra.a", "extra.b", "pos_embed"]);
    assert_eq!(
        r.finish(UnexpectedKeys::Ignore).unwrap().unexpected.len(),
        3
    );

    // Keys deliberately skipped (e.g. recomputed tables) are not unexpected.
    r.mark_consumed("pos_embed");
    assert_eq!(r.mark_consumed_where(|k| k.starts_with("extra.")), 2);
    let report = r.finish(UnexpectedKeys::Error).unwrap();
    assert_eq!(report.consumed, 4);
    assert!(report.unexpected.is_empty());
}

#[test]
fn atomic_write_replaces_only_on_success() {
    let dir = TempDir::new("atomic");
    let target = dir.path("model.safetensors");

    // v1, then v2 over it: replaced, no temporary file left.
    let mut v1 = WeightWriter::new(SaveDtype::F32);
    v1.add_data(
        "w",
        TensorData::new(vec![1.0f32, 2.0], [2]),
        Layout::AsStored,
    )
    .unwrap();
    v1.write(&target).unwrap();
    let v1_bytes = std::fs::read(&target).unwrap();
    let mut v2 = WeightWriter::new(SaveDtype::F32);
    v2.add_data(
        "w",
        TensorData::new(vec![3.0f32, 4.0], [2]),
        Layout::AsStored,
    )
    .unwrap();
    v2.write(&target).unwrap();
    assert_eq!(dir.list(), ["model.safetensors"]);
    let r = WeightReader::open(&target).unwrap();
    assert_eq!(
        r.read_data("w").unwrap().to_vec::<f32>().unwrap(),
        [3.0, 4.0]
    );
    drop(r);
    // Put v1 back for the failure cases.
    v1.write(&target).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), v1_bytes);

    // A tensor source failing in the middle of the write: old file intact, no temp file.
    let mut bad = WeightWriter::new(SaveDtype::F32);
    bad.add_data(
        "a",
        TensorData::new(vec![9.0f32; 1000], [1000]),
        Layout::AsStored,
    )
    .unwrap();
    bad.add_deferred("b", vec![2], Layout::AsStored, || {
        Err(CheckpointError::InvalidTensor {
            key: "b".into(),
            reason: "simulated failure".into(),
        })
    })
    .unwrap();
    let (_, msg) = err_of(bad.write(&target));
    assert!(msg.contains("simulated failure"), "{msg}");
    assert_eq!(std::fs::read(&target).unwrap(), v1_bytes);
    assert_eq!(dir.list(), ["model.safetensors"]);

    // A source returning data of the wrong shape: same.
    let mut bad = WeightWriter::new(SaveDtype::BF16);
    bad.add_deferred("w", vec![3], Layout::AsStored, || {
        Ok(TensorData::new(vec![1.0f32, 2.0], [2]))
    })
    .unwrap();
    let (e, _) = err_of(bad.write(&target));
    assert!(matches!(e, CheckpointError::InvalidTensor { .. }), "{e:?}");
    assert_eq!(std::fs::read(&target).unwrap(), v1_bytes);
    assert_eq!(dir.list(), ["model.safetensors"]);

    // The rename fails (the target is a non-empty directory): the temporary file is removed.
    let as_dir = dir.path("occupied");
    std::fs::create_dir(&as_dir).unwrap();
    std::fs::write(as_dir.join("keep"), b"x").unwrap();
    let (e, msg) = err_of(v1.write(&as_dir));
    assert!(matches!(e, CheckpointError::Io { .. }), "{e:?}");
    assert!(msg.contains("occupied"), "{msg}");
    assert_eq!(dir.list(), ["model.safetensors", "occupied"]);
    assert!(as_dir.join("keep").is_file());

    // A directory that does not exist: an io error naming the path, nothing created.
    let nowhere = dir.path("no/such/dir/model.safetensors");
    let (e, msg) = err_of(v1.write(&nowhere));
    assert!(matches!(e, CheckpointError::Io { .. }), "{e:?}");
    assert!(msg.contains("no/such/dir"), "{msg}");
    assert_eq!(dir.list(), ["model.safetensors", "occupied"]);
}

#[test]
fn writer_refuses_duplicates_and_non_floats() {
    let mut w = WeightWriter::new(SaveDtype::F32);
    w.add_data("a", TensorData::new(vec![1.0f32], [1]), Layout::AsStored)
        .unwrap();
    let (e, msg) = err_of(w.add_data("a", TensorData::new(vec![2.0f32], [1]), Layout::AsStored));
    assert!(
        matches!(e, CheckpointError::DuplicateKey { .. }) && msg.contains("`a`"),
        "{msg}"
    );
    let (e, msg) = err_of(w.add_data("ids", TensorData::new(vec![1i32, 2], [2]), Layout::AsStored));
    assert!(
        matches!(e, CheckpointError::UnsupportedDtype { .. }) && msg.contains("`ids`"),
        "{msg}"
    );
    let (e, _) = err_of(w.add_data(
        "v",
        TensorData::new(vec![1.0f32, 2.0], [2]),
        Layout::TorchLinear,
    ));
    assert!(
        matches!(e, CheckpointError::UnsupportedLayout { .. }),
        "{e:?}"
    );
    assert_eq!(w.keys().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn streaming_copy_from_reader_to_writer() {
    // `add_deferred` + `read_data` re-save a checkpoint one tensor at a time, here as bf16.
    let dir = TempDir::new("copy");
    let src = dir.path("src.safetensors");
    write_f32(
        &src,
        &[
            ("x", vec![2], vec![1.0, std::f32::consts::PI]),
            ("y", vec![1], vec![-2.5]),
        ],
    );
    let r = WeightReader::open(&src).unwrap();
    let mut w = WeightWriter::new(SaveDtype::BF16).with_metadata("source", "test");
    for key in r.keys() {
        let shape = r.shape(key).unwrap().to_vec();
        w.add_deferred(key, shape, Layout::AsStored, || r.read_data(key))
            .unwrap();
    }
    let dst = dir.path("dst.safetensors");
    w.write(&dst).unwrap();
    assert!(
        r.finish(UnexpectedKeys::Error).is_ok(),
        "every key was streamed"
    );
    let r2 = WeightReader::open(&dst).unwrap();
    assert_eq!(r2.dtype("x"), Some(Dtype::BF16));
    assert_eq!(
        r2.metadata().get("source").map(String::as_str),
        Some("test")
    );
    assert_eq!(
        r2.read_data("x").unwrap().to_vec::<f32>().unwrap(),
        [1.0, 3.140625]
    );
    assert_eq!(r2.read_data("y").unwrap().to_vec::<f32>().unwrap(), [-2.5]);
}

#[test]
fn json_config_errors_name_the_file() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Cfg {
        hidden_size: usize,
        rope_theta: f64,
    }
    let dir = TempDir::new("config");
    let good = dir.path("llm_config.json");
    std::fs::write(
        &good,
        r#"{"hidden_size": 64, "rope_theta": 10000.0, "extra": true}"#,
    )
    .unwrap();
    let cfg: Cfg = read_json_config(&good).unwrap();
    assert_eq!(
        cfg,
        Cfg {
            hidden_size: 64,
            rope_theta: 1e4
        }
    );

    let bad = dir.path("vit_config.json");
    std::fs::write(
        &bad,
        "{\n  \"hidden_size\": \"sixty-four\",\n  \"rope_theta\": 1.0\n}",
    )
    .unwrap();
    let (e, msg) = err_of(read_json_config::<Cfg>(&bad));
    assert!(matches!(e, CheckpointError::Config { .. }), "{e:?}");
    assert!(
        msg.contains("vit_config.json") && msg.contains("line 2"),
        "{msg}"
    );

    let (e, msg) = err_of(read_json_config::<Cfg>(dir.path("absent.json")));
    assert!(
        matches!(e, CheckpointError::Io { .. }) && msg.contains("absent.json"),
        "{msg}"
    );
}

/// Weight files get the mode of any other file the process creates (0666 less the umask),
/// not the 0600 of the safetensors crate's temporary file.
#[cfg(unix)]
#[test]
fn weight_files_get_the_ordinary_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode");
    let device = Default::default();
    let mut w = WeightWriter::new(SaveDtype::F32);
    w.add_tensor(
        "x",
        Tensor::<burn::backend::Flex, 1>::from_data(TensorData::new(vec![1f32, 2.0], [2]), &device),
    )
    .unwrap();
    let path = dir.path("w.safetensors");
    w.write(&path).unwrap();
    std::fs::write(dir.path("plain.json"), b"{}").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), mode(&dir.path("plain.json")));
    assert_eq!(dir.list(), ["plain.json", "w.safetensors"]);
}
