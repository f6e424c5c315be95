//! Reading and writing BAGEL checkpoints: `ema.safetensors` (or a sharded index) with
//! BAGEL's exact key names, and a BAGEL release folder (`llm_config.json`,
//! `vit_config.json`, weights).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use super::keys::{bagel_key, load_module, module_key_shapes, module_keys, save_module, torch_key};
use super::{Bagel, BagelConfig, BagelError, CodecConfig};
use crate::checkpoint::{
    LoadReport, SaveDtype, UnexpectedKeys, WeightReader, WeightWriter, read_json_config,
    write_bytes_atomically,
};
use crate::mot::MotConfig;
use crate::vae::Codec;
use crate::vision::SiglipVisionConfig;

/// The fixed sin-cos tables BAGEL saves with the weights: accepted, not loaded (the model
/// recomputes them for its own sizes).
const FIXED_TABLES: [&str; 2] = ["latent_pos_embed.pos_embed", "vit_pos_embed.pos_embed"];
/// UNO's metaqueries: absent from BAGEL releases, kept at their initialisation then.
pub const METAQUERY_KEY: &str = "uno.metaqueries";

impl<B: Backend> Bagel<B> {
    /// Every checkpoint key of this model, in module order.
    pub fn checkpoint_keys(&self) -> Vec<String> {
        module_keys::<B, _>(self, bagel_key)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// What disagrees between this model (typically built lazily from a folder's configs,
    /// so nothing is allocated) and the weights `reader` holds, from the headers only:
    /// missing keys (except [`METAQUERY_KEY`], which releases lack) and shapes that differ
    /// (except the fixed position tables, which the model recomputes for its own sizes).
    /// One line per problem; empty when they agree. Keys the model does not read are not
    /// problems here (loading warns about them, as releases carry some).
    pub fn weight_mismatches(&self, reader: &WeightReader) -> Vec<String> {
        let expected = module_key_shapes::<B, _>(self, bagel_key);
        let mut problems = Vec::new();
        for (key, shape) in &expected {
            match reader.shape(key) {
                None if key != METAQUERY_KEY && !FIXED_TABLES.contains(&key.as_str()) => {
                    problems.push(format!("missing {key} (expected shape {shape:?})"));
                }
                Some(found)
                    if found != shape.as_slice() && !FIXED_TABLES.contains(&key.as_str()) =>
                {
                    problems.push(format!(
                        "{key}: shape {found:?} in the file, {shape:?} in the config"
                    ));
                }
                _ => {}
            }
        }
        problems
    }

    /// Write all weights under BAGEL's names (PyTorch layouts), atomically, in `dtype`.
    /// The metaqueries are saved under [`METAQUERY_KEY`]; PyTorch BAGEL loads the rest
    /// with `strict=False`.
    pub fn save_safetensors(&self, path: &Path, dtype: SaveDtype) -> Result<(), BagelError> {
        let mut writer = WeightWriter::new(dtype).with_metadata("format", "pt");
        save_module::<B, _>(self, &mut writer, bagel_key)?;
        writer.write(path)?;
        Ok(())
    }

    /// Load BAGEL weights into this model (shapes must match its config). Missing keys are
    /// an error naming the first few, except: without any `_moe_gen` key the generation
    /// expert is initialised from the understanding expert (BAGEL's `init_moe`), and
    /// without [`METAQUERY_KEY`] the metaqueries keep their initialisation. Checkpoint keys
    /// this model does not use are handled by `unexpected`.
    pub fn load_safetensors(
        self,
        reader: &WeightReader,
        unexpected: UnexpectedKeys,
    ) -> Result<(Self, LoadReport), BagelError> {
        let has_gen = reader.keys().any(|k| k.contains("_moe_gen"));
        let required: Vec<String> = self
            .checkpoint_keys()
            .into_iter()
            .filter(|k| {
                !FIXED_TABLES.contains(&k.as_str())
                    && k != METAQUERY_KEY
                    && (has_gen || !k.contains("_moe_gen"))
            })
            .collect();
        reader.check_keys(&required)?;
        for table in FIXED_TABLES {
            reader.mark_consumed(table);
        }
        let loaded = load_module::<B, _>(self, reader, bagel_key, |key| {
            !FIXED_TABLES.contains(&key) && reader.contains(key)
        })?;
        let loaded = if has_gen {
            loaded
        } else {
            Self {
                language_model: loaded.language_model.init_gen_from_und(),
                ..loaded
            }
        };
        let report = reader.finish(unexpected)?;
        Ok((loaded, report))
    }

    /// Load a BAGEL folder ([`BagelConfig::from_folder`] for the configuration) with its
    /// weights: `ema.safetensors` or `*.safetensors.index.json` (+ shards).
    pub fn load_folder(
        dir: &Path,
        device: &B::Device,
        unexpected: UnexpectedKeys,
    ) -> Result<(BagelConfig, Self, LoadReport), BagelError> {
        let config = BagelConfig::from_folder(dir)?;
        let model = config.init::<B>(device)?;
        let reader = WeightReader::open(weights_file(dir)?)?;
        let (model, report) = model.load_safetensors(&reader, unexpected)?;
        Ok((config, model, report))
    }
}

/// UNO's settings saved next to BAGEL's configs (codec, generation grid, metaqueries,
/// special tokens, loss weights): every [`BagelConfig`] field but `llm` and `vit`, which
/// live in `llm_config.json` and `vit_config.json`. Fields left out take BAGEL-7B's and the
/// paper's values, so a file may set only what differs.
pub const UNO_CONFIG: &str = "uno_config.json";

/// `BagelConfig` fields that have their own file in a folder.
const OWN_FILES: [(&str, &str); 2] = [("llm", "llm_config.json"), ("vit", "vit_config.json")];

impl BagelConfig {
    /// The configuration of a BAGEL folder, read the same way by every loader (training,
    /// generation, inspection):
    ///
    /// 1. the language model from `llm_config.json`;
    /// 2. the ViT from `vit_config.json`; a release's file (no `layers_used`) gets BAGEL's
    ///    layer selection (the last layer dropped), a file uno-rs wrote states its layers;
    /// 3. everything else: BAGEL-7B's and the paper's values, overridden field by field
    ///    (nested tables too) by [`UNO_CONFIG`] when present. An unknown key, or `llm` /
    ///    `vit` in it, is an error naming the key.
    pub fn from_folder(dir: &Path) -> Result<Self, BagelError> {
        let llm: MotConfig = read_json_config(dir.join("llm_config.json"))?;
        let vit: SiglipVisionConfig = read_json_config(dir.join("vit_config.json"))?;
        let vit = if vit.layers_used.is_some() {
            vit
        } else {
            vit.for_bagel()
        };
        let base = Self {
            llm,
            vit,
            ..Self::bagel_7b()
        };
        let path = dir.join(UNO_CONFIG);
        if !path.is_file() {
            return Ok(base);
        }
        let overlay: serde_json::Value = read_json_config(&path)?;
        let bad = |reason: String| BagelError::ConfigFile {
            path: path.clone(),
            reason,
        };
        let mut merged = serde_json::to_value(&base).map_err(|source| BagelError::Serialize {
            name: UNO_CONFIG,
            source,
        })?;
        let serde_json::Value::Object(fields) = overlay else {
            return Err(bad("expected a JSON object".into()));
        };
        for (key, value) in fields {
            if let Some((_, file)) = OWN_FILES.iter().find(|(field, _)| *field == key) {
                return Err(bad(format!("`{key}` belongs in {file}, not here")));
            }
            overlay_field(&mut merged, &key, value)
                .map_err(|path| bad(format!("unknown key `{path}`")))?;
        }
        serde_json::from_value(merged).map_err(|e| bad(e.to_string()))
    }

    /// Write `llm_config.json`, `vit_config.json` (with its `layers_used` stated, so it
    /// reloads as is) and [`UNO_CONFIG`] (everything else) into `dir`, each atomically.
    pub fn save_folder(&self, dir: &Path) -> Result<(), BagelError> {
        // Atomically: a crash never leaves a half-written config that no loader can read.
        let write = |name: &'static str, json: Result<String, serde_json::Error>| {
            let text = json.map_err(|source| BagelError::Serialize { name, source })?;
            Ok::<_, BagelError>(write_bytes_atomically(dir.join(name), text.as_bytes())?)
        };
        let vit = SiglipVisionConfig {
            layers_used: Some(self.vit.num_layers()),
            ..self.vit.clone()
        };
        let mut uno = serde_json::to_value(self).map_err(|source| BagelError::Serialize {
            name: UNO_CONFIG,
            source,
        })?;
        if let Some(fields) = uno.as_object_mut() {
            for (field, _) in OWN_FILES {
                fields.remove(field);
            }
        }
        write("llm_config.json", serde_json::to_string_pretty(&self.llm))?;
        write("vit_config.json", serde_json::to_string_pretty(&vit))?;
        write(UNO_CONFIG, serde_json::to_string_pretty(&uno))
    }
}

/// The FLUX autoencoder's file in a BAGEL folder.
pub const AE_FILE: &str = "ae.safetensors";

impl BagelConfig {
    /// The codec this configuration names ([`BagelConfig::codec`]): the FLUX autoencoder
    /// read from `dir`'s [`AE_FILE`], or the [`crate::vae::PixelCodec`].
    pub fn load_codec<B: Backend>(
        &self,
        dir: &Path,
        device: &B::Device,
    ) -> Result<Codec<B>, BagelError> {
        let CodecConfig::Flux(ae) = &self.codec else {
            return Ok(Codec::pixel());
        };
        let path = dir.join(AE_FILE);
        if !path.is_file() {
            return Err(BagelError::MissingFile {
                path,
                why: "the model's configuration names a FLUX autoencoder (BAGEL releases ship it next to ema.safetensors)",
            });
        }
        Ok(Codec::flux(load_flux_ae(&path, ae, device)?))
    }
}

/// Write `codec`'s weights into `dir` ([`AE_FILE`], FLUX's key names, f32); nothing for the
/// weightless [`crate::vae::PixelCodec`].
pub fn save_codec<B: Backend>(codec: &Codec<B>, dir: &Path) -> Result<(), BagelError> {
    if let Codec::Flux(ae) = codec {
        let mut writer = WeightWriter::new(SaveDtype::F32).with_metadata("format", "pt");
        save_module::<B, _>(ae, &mut writer, torch_key)?;
        writer.write(dir.join(AE_FILE))?;
    }
    Ok(())
}

/// Load a FLUX autoencoder (`ae.safetensors`, FLUX's own key names; BAGEL ships
/// `FluxAeConfig::default()`'s).
pub fn load_flux_ae<B: Backend>(
    path: &Path,
    config: &crate::vae::FluxAeConfig,
    device: &B::Device,
) -> Result<crate::vae::FluxAutoEncoder<B>, BagelError> {
    let reader = WeightReader::open(path)?;
    let ae = config.init::<B>(device)?;
    let keys: Vec<String> = module_keys::<B, _>(&ae, torch_key)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    reader.check_keys(&keys)?;
    let ae = load_module::<B, _>(ae, &reader, torch_key, |_| true)?;
    reader.finish(UnexpectedKeys::Warn)?;
    Ok(ae)
}

/// The weights of a BAGEL folder: `ema.safetensors`, else the single
/// `*.safetensors.index.json`, else the single `*.safetensors`.
pub fn weights_file(dir: &Path) -> Result<PathBuf, BagelError> {
    let ema = dir.join("ema.safetensors");
    if ema.is_file() {
        return Ok(ema);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| BagelError::Io {
        action: "list the model folder",
        path: dir.to_path_buf(),
        source,
    })?;
    let names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    let pick = |suffix: &str| -> Vec<&PathBuf> {
        names
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(suffix) && !p.ends_with(AE_FILE))
            .collect()
    };
    for suffix in [".safetensors.index.json", ".safetensors"] {
        match pick(suffix).as_slice() {
            [one] => return Ok((*one).clone()),
            [] => continue,
            many => {
                return Err(BagelError::WeightsFile {
                    dir: dir.to_path_buf(),
                    reason: format!(
                        "holds several weight files ({many:?}); keep one, or name it ema.safetensors"
                    ),
                });
            }
        }
    }
    Err(BagelError::WeightsFile {
        dir: dir.to_path_buf(),
        reason: "holds no ema.safetensors, *.safetensors.index.json or *.safetensors".into(),
    })
}

/// Set `key` of the object `base` to `value`, merging objects field by field (so
/// `{"loss": {"caption": 0.3}}` keeps the visual weight). The error is the dotted path of
/// a key `base` does not have.
fn overlay_field(
    base: &mut serde_json::Value,
    key: &str,
    value: serde_json::Value,
) -> Result<(), String> {
    let slot = base
        .as_object_mut()
        .and_then(|fields| fields.get_mut(key))
        .ok_or_else(|| key.to_string())?;
    match value {
        serde_json::Value::Object(fields) if slot.is_object() => {
            for (inner, value) in fields {
                overlay_field(slot, &inner, value).map_err(|e| format!("{key}.{e}"))?;
            }
            Ok(())
        }
        value => {
            *slot = value;
            Ok(())
        }
    }
}
