//! Inspect a BAGEL-format folder: `cargo run --release --example inspect_checkpoint -- DIR`.
//!
//! DIR holds `llm_config.json`, `vit_config.json` (or a uno-rs `uno_config.json`), the
//! weights (`ema.safetensors`, or `*.safetensors.index.json` + shards) and optionally the
//! FLUX VAE (`ae.safetensors`). Prints the configuration and the parameter count of each
//! component, read from the file headers (nothing is loaded), checks every weight's shape
//! against the model the configs describe (built lazily: nothing allocated), and exits 0;
//! on a bad folder, or weights that disagree with the configs, prints why and exits 1.
//!
//! `--forward` also loads the model (in f32: a 7B BAGEL needs ~60 GB of RAM) and runs one
//! UNO forward on a fixed synthetic input: one text-to-image sample with prompt ids 1..=8,
//! caption ids 9..=14, a square image (side = the smallest multiple of both the ViT patch
//! and the latent token size that gives the metaquery grid) filled with uniform noise from
//! `StdRng::seed_from_u64(0)`, flow noise seed 0. It prints the three losses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng, rngs::StdRng};
use uno_core::backend::Flex;
use uno_core::bagel::{Bagel, BagelConfig, UnoBatch, weights_file};
use uno_core::burn::tensor::{Tensor, TensorData};
use uno_core::checkpoint::{UnexpectedKeys, WeightReader};
use uno_core::packing::{ImageSize, PackedSequence, Sample};
use uno_core::vae::LatentCodec;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let forward = args.iter().any(|a| a == "--forward");
    args.retain(|a| a != "--forward");
    let [dir] = args.as_slice() else {
        eprintln!("usage: inspect_checkpoint DIR [--forward]");
        std::process::exit(2);
    };
    if let Err(e) = run(Path::new(dir), forward) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The component a checkpoint key belongs to.
fn component(key: &str) -> &'static str {
    if key.starts_with("language_model.model.layers.") {
        if key.contains("_moe_gen") {
            "generation expert"
        } else {
            "understanding expert"
        }
    } else if key == "language_model.model.norm_moe_gen.weight" {
        "generation expert"
    } else if key == "language_model.model.norm.weight" {
        "understanding expert"
    } else if key.starts_with("language_model.model.embed_tokens") {
        "token embeddings"
    } else if key.starts_with("language_model.lm_head") {
        "lm_head"
    } else if key.starts_with("vit_model.") {
        "ViT"
    } else if key.starts_with("connector.") || key.starts_with("vit_pos_embed.") {
        "connector"
    } else if key.starts_with("uno.") {
        "UNO metaqueries"
    } else if [
        "vae2llm.",
        "llm2vae.",
        "time_embedder.",
        "latent_pos_embed.",
    ]
    .iter()
    .any(|p| key.starts_with(p))
    {
        "generation embeddings"
    } else {
        "other"
    }
}

fn run(dir: &Path, forward: bool) -> Result<(), BoxError> {
    let config = BagelConfig::from_folder(dir)?;
    println!("BAGEL folder {}", dir.display());
    println!("llm: {}", serde_json::to_string(&config.llm)?);
    println!("vit: {}", serde_json::to_string(&config.vit)?);
    println!(
        "generation: latent token {}-d, {} px per token, latent table {}x{}; {} metaqueries",
        config.latent_token_dim,
        config.pixels_per_latent_token,
        config.max_latent_size,
        config.max_latent_size,
        config.num_metaqueries
    );
    let weights = weights_file(dir)?;
    let reader = WeightReader::open(&weights)?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for key in reader.keys() {
        let n: usize = reader.shape(key).unwrap_or(&[]).iter().product();
        *counts.entry(component(key)).or_default() += n;
    }
    let ae_path: PathBuf = dir.join("ae.safetensors");
    if ae_path.is_file() {
        let ae = WeightReader::open(&ae_path)?;
        let n: usize = ae
            .keys()
            .map(|k| ae.shape(k).unwrap_or(&[]).iter().product::<usize>())
            .sum();
        counts.insert("VAE (ae.safetensors)", n);
    }
    println!(
        "parameters ({}, {} tensors):",
        weights.display(),
        reader.len()
    );
    for (name, n) in &counts {
        println!("  {name:<24} {n:>15}");
    }
    println!("  {:<24} {:>15}", "total", counts.values().sum::<usize>());
    // Parameters are initialised lazily: building the model from the configs allocates
    // nothing until a weight is read, so this costs the same for 7B as for the toy.
    let described = config.init::<Flex>(&Default::default())?;
    let problems = described.weight_mismatches(&reader);
    if !problems.is_empty() {
        return Err(format!(
            "{} disagrees with the configs of {} in {} places:\n  {}",
            weights.display(),
            dir.display(),
            problems.len(),
            problems.join("\n  ")
        )
        .into());
    }
    println!("shapes: every weight matches the configs");

    if forward {
        let device = Default::default();
        let (config, model, report) =
            Bagel::<Flex>::load_folder(dir, &device, UnexpectedKeys::Warn)?;
        if !report.unexpected.is_empty() {
            println!("ignored {} unexpected keys", report.unexpected.len());
        }
        // The codec the folder's own configuration names (its `ae.safetensors` for FLUX).
        let codec = config.load_codec::<Flex>(dir, &device)?;
        let losses = synthetic_forward(&model, &config, &codec)?;
        println!(
            "UNO forward (synthetic input, seed 0): flow {:.6}  caption {:.6}  visual {:.6}  total {:.6}",
            losses[0], losses[1], losses[2], losses[3]
        );
    }
    Ok(())
}

fn synthetic_forward(
    model: &Bagel<Flex>,
    config: &BagelConfig,
    codec: &impl LatentCodec<Flex>,
) -> Result<[f32; 4], BoxError> {
    let device = Default::default();
    let (patch, token) = (config.vit.patch_size, config.pixels_per_latent_token);
    let lcm = patch / gcd(patch, token) * token;
    let grid = config.num_metaqueries.isqrt();
    let need = (grid * patch).max(2 * token);
    let side = need.div_ceil(lcm) * lcm;
    let sample = Sample::text_to_image(
        (1..=8).collect(),
        ImageSize::new(side, side),
        (9..=14).collect(),
    );
    let pack = PackedSequence::pack(&[sample], &config.packing())?;
    let mut rng = StdRng::seed_from_u64(0);
    let pixels: Vec<f32> = (0..3 * side * side).map(|_| rng.random::<f32>()).collect();
    let image = Tensor::<Flex, 3>::from_data(TensorData::new(pixels, [3, side, side]), &device);
    // One square image serves as the noised target and its ViT-side copy.
    let images = [image];
    let out = model.uno_forward(
        UnoBatch {
            pack: &pack,
            images: &images,
            vit_targets: &images,
            noise_seed: 0,
            normalization: Default::default(),
        },
        codec,
        &config.objective()?,
    )?;
    let value = |t: Tensor<Flex, 1>| -> Result<f32, BoxError> {
        Ok(t.into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?[0])
    };
    Ok([
        value(out.loss.flow)?,
        value(out.loss.caption)?,
        value(out.loss.visual)?,
        value(out.loss.total)?,
    ])
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
