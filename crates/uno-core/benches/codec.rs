//! Encode and decode one image with the release-size FLUX autoencoder (FLUX-dev's shape,
//! Burn's random init) on the CPU, f32; `tools/flux_ae_bench.py` times PyTorch on the
//! same shapes.
//!
//! * `flex/…`: the codec on plain `Flex`;
//! * `ndarray/…`: the same on `NdArray` (with `--features ndarray`), the other CPU backend;
//! * `frozen/…`: the frozen codec called from `Autodiff<Flex>` as the training forward calls
//!   it, through [`FrozenCodec`] (so it runs on `Flex`);
//! * `autodiff/…`: the same frozen (`no_grad`) codec run on `Autodiff<Flex>` itself, the path
//!   `FrozenCodec` replaces.
//!
//! The two autodiff cases and ndarray run at the first side only: a 512^2 decode takes over a
//! minute.
//!
//! Sides default to 256 and 512; `UNO_BENCH_SIDES=256` picks others. One call takes
//! seconds, so each case runs criterion's minimum of 10 samples.
//!
//! Run: `cargo bench --workspace --features ndarray --bench codec` (`RAYON_NUM_THREADS=1`
//! for the single-threaded kernels).

use std::time::Duration;

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use uno_core::vae::{FluxAeConfig, FluxAutoEncoder, FrozenCodec, LatentCodec};

fn sides() -> Vec<usize> {
    std::env::var("UNO_BENCH_SIDES")
        .unwrap_or_else(|_| "256,512".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("UNO_BENCH_SIDES: comma-separated sides")
        })
        .collect()
}

fn bench_codec<B: Backend>(
    c: &mut Criterion,
    name: &str,
    codec: &impl LatentCodec<B>,
    sides: &[usize],
) {
    let device = B::Device::default();
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    for &side in sides {
        let image = Tensor::<B, 4>::random([1, 3, side, side], Distribution::Default, &device);
        let latent_side = side / codec.downsample();
        let latent = Tensor::<B, 4>::random(
            [1, codec.latent_channels(), latent_side, latent_side],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        group.bench_function(format!("encode/{side}"), |b| {
            b.iter(|| codec.encode(image.clone()).unwrap().into_data())
        });
        group.bench_function(format!("decode/{side}"), |b| {
            b.iter(|| codec.decode(latent.clone()).unwrap().into_data())
        });
    }
    group.finish();
}

fn codec(c: &mut Criterion) {
    let device = Default::default();
    Flex::seed(&device, 0);
    let ae: FluxAutoEncoder<Flex> = FluxAeConfig::flux().init(&device).unwrap();
    let sides = sides();
    bench_codec::<Flex>(c, "flex", &ae, &sides);
    #[cfg(feature = "ndarray")]
    {
        use burn::backend::NdArray;
        let ae: FluxAutoEncoder<NdArray> = FluxAeConfig::flux().init(&Default::default()).unwrap();
        bench_codec::<NdArray>(c, "ndarray", &ae, &sides[..1]);
    }
    // As the trainee holds it: on the autodiff backend, frozen.
    let ae: FluxAutoEncoder<Autodiff<Flex>> = ae.train::<Autodiff<Flex>>().no_grad();
    bench_codec::<Autodiff<Flex>>(c, "frozen", &FrozenCodec(ae.valid()), &sides[..1]);
    bench_codec::<Autodiff<Flex>>(c, "autodiff", &ae, &sides[..1]);
}

criterion_group!(benches, codec);
criterion_main!(benches);
