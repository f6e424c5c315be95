//! [`sample_grid`]: prompts in, a PNG grid out (one row per prompt, one column per seed),
//! from a BAGEL folder: the library entry point behind `examples/generate.rs`.

use std::path::{Path, PathBuf};

use burn::tensor::ElementConversion;
use burn::tensor::backend::Backend;

use super::{
    CaptionConfig, EditSource, GenerateError, Generator, ImageRequest, SamplerConfig, grid,
    save_png,
};
use crate::bagel::Bagel;
use crate::checkpoint::UnexpectedKeys;
use crate::data::{ImageTransforms, RgbImage, SyntheticConfig, SyntheticScenes, TextTokenizer};
use crate::packing::ImageSize;
use crate::train::{HELD_OUT_SEED, RUN_CONFIG_FILE, RunConfig, TOKENIZER_FILE};

/// Number of held-out synthetic prompts used when none are given.
const DEFAULT_PROMPTS: usize = 4;

/// What to sample and where to write it.
#[derive(Debug, Clone)]
pub struct GridSpec {
    /// A BAGEL folder (configs, weights, `ae.safetensors` for a FLUX codec).
    pub model_dir: PathBuf,
    /// A Hugging Face `tokenizer.json`; `None`: the folder's own `tokenizer.json` (a run
    /// folder keeps the one it trained with; releases ship one), else the synthetic set's
    /// vocabulary, which must be the model's.
    pub tokenizer: Option<PathBuf>,
    /// One grid row each; empty: four synthetic scenes the default run never trains on.
    pub prompts: Vec<String>,
    /// Noise seeds, one grid column each.
    pub seeds: Vec<u64>,
    /// Image side in pixels (text-to-image).
    pub size: usize,
    /// For editing: the image every prompt edits (each prompt is then an instruction). It
    /// goes through the folder's training transforms (`run.toml`'s `[data] vae_image` and
    /// `vit_image`; BAGEL's for a folder no run wrote), and the edits come out at the size
    /// of its codec copy, as BAGEL edits (`size` is unused).
    pub source: Option<PathBuf>,
    /// Timesteps, shift and guidance.
    pub sampler: SamplerConfig,
    /// Also caption every image through the understanding path.
    pub caption: Option<CaptionConfig>,
    /// The PNG to write; `None`: `samples.png` in the model folder.
    pub out: Option<PathBuf>,
}

/// What [`sample_grid`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct GridReport {
    /// The PNG written.
    pub path: PathBuf,
    /// The prompts, one per row.
    pub prompts: Vec<String>,
    /// With [`GridSpec::caption`]: per row, the caption of each column's image.
    pub captions: Vec<Vec<String>>,
}

/// Load `spec.model_dir`, generate every prompt under every seed with BAGEL's sampler and
/// classifier-free guidance, optionally caption each image, and write the grid.
pub fn sample_grid<B: Backend>(
    spec: &GridSpec,
    device: &B::Device,
) -> Result<GridReport, GenerateError> {
    let dir = &spec.model_dir;
    if !dir.is_dir() {
        return Err(GenerateError::NotAFolder { path: dir.clone() });
    }
    if spec.seeds.is_empty() {
        return Err(GenerateError::setting("seeds", "[]", "at least one seed"));
    }
    let (config, model, _) = Bagel::<B>::load_folder(dir, device, UnexpectedKeys::Warn)?;
    let codec = config.load_codec::<B>(dir, device)?;
    let (tokenizer, prompts) = tokenizer_and_prompts(spec, config.llm.vocab_size)?;
    let generator = Generator {
        model: &model,
        codec: &codec,
        packing: config.packing(),
    };
    let source = match &spec.source {
        Some(path) => Some(edit_source::<B>(dir, path, device)?),
        None => None,
    };
    let size = match &source {
        Some(source) => {
            let [_, height, width] = source.vae.dims();
            ImageSize::new(height, width)
        }
        None => ImageSize::new(spec.size, spec.size),
    };
    let mut requests = Vec::new();
    for prompt in &prompts {
        let tokens = tokenizer.encode(prompt)?;
        for &seed in &spec.seeds {
            requests.push(ImageRequest {
                prompt: tokens.clone(),
                size,
                source: source.clone(),
                seed,
            });
        }
    }
    let images = generator.generate(&requests, &spec.sampler)?;
    // A PNG clamps NaN to a colour: refuse instead of writing noise that looks like an image.
    for (i, image) in images.iter().enumerate() {
        let count = image
            .clone()
            .is_finite()
            .bool_not()
            .int()
            .sum()
            .into_scalar()
            .elem::<i64>() as usize;
        if count > 0 {
            return Err(GenerateError::NonFinite {
                model_dir: dir.clone(),
                prompt: prompts[i / spec.seeds.len()].clone(),
                seed: spec.seeds[i % spec.seeds.len()],
                count,
            });
        }
    }
    let mut captions = Vec::new();
    if let Some(caption) = &spec.caption {
        for row in images.chunks(spec.seeds.len()) {
            let texts = row
                .iter()
                .map(|image| {
                    let tokens = generator.caption(image.clone(), None, caption)?;
                    Ok(tokenizer.decode(&tokens)?)
                })
                .collect::<Result<Vec<_>, GenerateError>>()?;
            captions.push(texts);
        }
    }
    let canvas = grid(images, spec.seeds.len())?;
    let path = spec.out.clone().unwrap_or_else(|| dir.join("samples.png"));
    save_png(&canvas, &path)?;
    Ok(GridReport {
        path,
        prompts,
        captions,
    })
}

/// The tokenizer (the given file, else the folder's `tokenizer.json`, else the synthetic
/// vocabulary, which must match the model's) and the prompts (given, else held-out
/// synthetic scenes).
fn tokenizer_and_prompts(
    spec: &GridSpec,
    vocab_size: usize,
) -> Result<(TextTokenizer, Vec<String>), GenerateError> {
    let synthetic = SyntheticScenes::new(SyntheticConfig {
        image_size: spec.size,
        seed: HELD_OUT_SEED,
        ..SyntheticConfig::default()
    })?;
    let in_folder = spec.model_dir.join(TOKENIZER_FILE);
    let tokenizer = match &spec.tokenizer {
        Some(path) => TextTokenizer::from_file(Path::new(path))?,
        None if in_folder.is_file() => TextTokenizer::from_file(&in_folder)?,
        None if synthetic.tokenizer().vocab_size() == vocab_size => synthetic.tokenizer().clone(),
        None => {
            return Err(GenerateError::Vocabulary {
                model: vocab_size,
                synthetic: synthetic.tokenizer().vocab_size(),
            });
        }
    };
    let prompts = if spec.prompts.is_empty() {
        (0..DEFAULT_PROMPTS)
            .map(|i| synthetic.scene(i).prompt())
            .collect()
    } else {
        spec.prompts.clone()
    };
    Ok((tokenizer, prompts))
}

/// The edit source at `path` in its two copies, through the transforms the folder's run
/// trained with (BAGEL's when no run wrote the folder).
fn edit_source<B: Backend>(
    dir: &Path,
    path: &Path,
    device: &B::Device,
) -> Result<EditSource<B>, GenerateError> {
    let record = dir.join(RUN_CONFIG_FILE);
    let transforms = if record.is_file() {
        let data = RunConfig::load(Some(&record), &[])
            .map_err(|e| GenerateError::RunRecord {
                path: record.clone(),
                source: Box::new(e),
            })?
            .data;
        ImageTransforms {
            vae: data.vae_image,
            vit: data.vit_image,
        }
    } else {
        ImageTransforms::bagel()
    };
    let image = RgbImage::from_dynamic(&RgbImage::load(path)?);
    EditSource::from_image(&image, &transforms, device)
}
