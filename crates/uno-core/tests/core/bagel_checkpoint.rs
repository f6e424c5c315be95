//! BAGEL checkpoints: the saved key set is BAGEL's naming scheme exactly, a save/load
//! round trip gives bit-identical outputs, bf16 files load as their exact f32 values, a
//! checkpoint without the generation expert initialises it from the understanding expert,
//! and bad files give named errors.

use std::collections::BTreeSet;
use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use uno_core::bagel::{Bagel, BagelConfig, BagelError, UnoBatch};
use uno_core::checkpoint::{CheckpointError, SaveDtype, UnexpectedKeys, WeightReader};
use uno_core::data::{Dataset, SyntheticConfig, SyntheticScenes};
use uno_core::packing::PackedSequence;
use uno_core::vae::PixelCodec;

fn config() -> BagelConfig {
    let set = data();
    BagelConfig::tiny(set.tokenizer().vocab_size(), set.special_tokens())
}

fn data() -> SyntheticScenes {
    SyntheticScenes::new(SyntheticConfig {
        len: 4,
        image_size: 16,
        max_shapes: 2,
        seed: 1,
    })
    .unwrap()
}

/// A fresh folder per call: each test runs once per backend, concurrently, in one process.
fn temp(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("uno-bagel-ckpt-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// BAGEL's key scheme (ARCHITECTURE.md "Checkpoint names"), generated per layer.
fn expected_keys(config: &BagelConfig) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let lm = "language_model.model";
    for i in 0..config.llm.num_hidden_layers {
        for sfx in ["", "_moe_gen"] {
            for p in ["q", "k", "v"] {
                for t in ["weight", "bias"] {
                    keys.insert(format!("{lm}.layers.{i}.self_attn.{p}_proj{sfx}.{t}"));
                }
            }
            keys.insert(format!("{lm}.layers.{i}.self_attn.o_proj{sfx}.weight"));
            for n in ["q_norm", "k_norm"] {
                keys.insert(format!("{lm}.layers.{i}.self_attn.{n}{sfx}.weight"));
            }
            for p in ["gate", "up", "down"] {
                keys.insert(format!("{lm}.layers.{i}.mlp{sfx}.{p}_proj.weight"));
            }
            for n in ["input_layernorm", "post_attention_layernorm"] {
                keys.insert(format!("{lm}.layers.{i}.{n}{sfx}.weight"));
            }
        }
    }
    for k in ["embed_tokens", "norm", "norm_moe_gen"] {
        keys.insert(format!("{lm}.{k}.weight"));
    }
    keys.insert("language_model.lm_head.weight".into());
    let vm = "vit_model.vision_model";
    for t in ["weight", "bias"] {
        keys.insert(format!("{vm}.embeddings.patch_embedding.{t}"));
        keys.insert(format!("{vm}.post_layernorm.{t}"));
        for i in 0..config.vit.num_layers() {
            for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                keys.insert(format!("{vm}.encoder.layers.{i}.self_attn.{p}.{t}"));
            }
            for p in ["layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2"] {
                keys.insert(format!("{vm}.encoder.layers.{i}.{p}.{t}"));
            }
        }
        for p in [
            "connector.fc1",
            "connector.fc2",
            "vae2llm",
            "llm2vae",
            "time_embedder.mlp.0",
            "time_embedder.mlp.2",
        ] {
            keys.insert(format!("{p}.{t}"));
        }
    }
    keys.insert(format!("{vm}.embeddings.position_embedding.weight"));
    keys.insert("latent_pos_embed.pos_embed".into());
    keys.insert("vit_pos_embed.pos_embed".into());
    keys.insert("uno.metaqueries".into());
    keys
}

/// Copy a safetensors file, leaving out the keys `drop` selects.
fn copy_without(src: &std::path::Path, dst: &std::path::Path, drop: impl Fn(&str) -> bool) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter(|(k, _)| !drop(k)).collect();
    safetensors::serialize_to_file(kept, None, dst).unwrap();
}

/// Hidden states and total loss of a fixed synthetic pack.
fn outputs<B: Backend>(model: &Bagel<B>, config: &BagelConfig) -> Vec<f32> {
    let set = data();
    let device = Default::default();
    let items: Vec<_> = (0..2).map(|i| set.get(i).unwrap()).collect();
    let samples: Vec<_> = items.iter().map(|i| i.sample.clone()).collect();
    let pack = PackedSequence::pack(&samples, &config.packing()).unwrap();
    let images: Vec<Tensor<B, 3>> = items
        .iter()
        .map(|i| {
            Tensor::from_data(
                TensorData::new(i.target.vae.data.clone(), [3, 16, 16]),
                &device,
            )
        })
        .collect();
    let out = model
        .uno_forward(
            UnoBatch {
                pack: &pack,
                images: &images,
                vit_targets: &images,
                noise_seed: 9,
                normalization: Default::default(),
            },
            &PixelCodec,
            &config.objective().unwrap(),
        )
        .unwrap();
    let mut v = uno_testing::to_vec(out.hidden);
    v.extend(uno_testing::to_vec(out.loss.total));
    v
}

fn key_set_and_bit_identical_round_trip<B: Backend>() {
    let config = config();
    let device = Default::default();
    let model = config.init::<B>(&device).unwrap();
    let dir = temp("roundtrip");
    let path = dir.join("ema.safetensors");
    model.save_safetensors(&path, SaveDtype::F32).unwrap();

    let reader = WeightReader::open(&path).unwrap();
    let saved: BTreeSet<String> = reader.keys().map(str::to_string).collect();
    assert_eq!(saved, expected_keys(&config));
    // PyTorch layouts: Linear weights [out, in].
    assert_eq!(
        reader.shape("language_model.lm_head.weight").unwrap(),
        [config.llm.vocab_size, config.llm.hidden_size]
    );
    assert_eq!(
        reader.shape("vae2llm.weight").unwrap(),
        [config.llm.hidden_size, 64]
    );

    let fresh = config.init::<B>(&device).unwrap();
    let (loaded, report) = fresh
        .load_safetensors(&reader, UnexpectedKeys::Error)
        .unwrap();
    assert!(report.unexpected.is_empty());
    assert_eq!(outputs(&loaded, &config), outputs(&model, &config));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bf16_file_loads_exactly<B: Backend>() {
    let config = config();
    let device = Default::default();
    let model = config.init::<B>(&device).unwrap();
    let dir = temp("bf16");
    let path = dir.join("ema.safetensors");
    model.save_safetensors(&path, SaveDtype::BF16).unwrap();
    let reader = WeightReader::open(&path).unwrap();
    let (loaded, _) = config
        .init::<B>(&device)
        .unwrap()
        .load_safetensors(&reader, UnexpectedKeys::Error)
        .unwrap();
    let original = uno_testing::to_vec(model.metaqueries.val());
    let got = uno_testing::to_vec(loaded.metaqueries.val());
    for (o, g) in original.iter().zip(&got) {
        assert_eq!(*g, half::bf16::from_f32(*o).to_f32());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn missing_generation_expert_is_copied_from_understanding<B: Backend>() {
    let config = config();
    let device = Default::default();
    let model = config.init::<B>(&device).unwrap();
    let dir = temp("nogen");
    let full = dir.join("full.safetensors");
    model.save_safetensors(&full, SaveDtype::F32).unwrap();
    // Rewrite without any _moe_gen key (a BAGEL checkpoint before init_moe).
    let und_only = dir.join("und.safetensors");
    copy_without(&full, &und_only, |k| k.contains("_moe_gen"));
    let reader = WeightReader::open(&und_only).unwrap();
    let (loaded, _) = config
        .init::<B>(&device)
        .unwrap()
        .load_safetensors(&reader, UnexpectedKeys::Error)
        .unwrap();
    let layer = &loaded.language_model.layers[1];
    assert_eq!(
        uno_testing::to_vec(layer.moe_gen.mlp.up_proj.weight.val()),
        uno_testing::to_vec(model.language_model.layers[1].und.mlp.up_proj.weight.val())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bad_checkpoints_are_named_errors<B: Backend>() {
    let config = config();
    let device = Default::default();
    let model = config.init::<B>(&device).unwrap();
    let dir = temp("bad");
    let full = dir.join("full.safetensors");
    model.save_safetensors(&full, SaveDtype::F32).unwrap();
    let missing = dir.join("missing.safetensors");
    copy_without(&full, &missing, |k| k == "connector.fc1.bias");
    let err = config
        .init::<B>(&device)
        .unwrap()
        .load_safetensors(
            &WeightReader::open(&missing).unwrap(),
            UnexpectedKeys::Error,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            BagelError::Checkpoint(CheckpointError::MissingKeys { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("connector.fc1.bias"), "{err}");

    // A model of another shape: the mismatch names the key and both shapes.
    let mut other = config.clone();
    other.llm.intermediate_size *= 2;
    let err = other
        .init::<B>(&device)
        .unwrap()
        .load_safetensors(&WeightReader::open(&full).unwrap(), UnexpectedKeys::Error)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("gate_proj") && msg.contains(&format!("{}", other.llm.intermediate_size)),
        "{msg}"
    );

    // A truncated file.
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(WeightReader::open(&cut).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A folder written with `save_folder` + `save_safetensors` reloads as the same model.
fn folder_round_trip<B: Backend>() {
    let config = config();
    let device = Default::default();
    let model = config.init::<B>(&device).unwrap();
    let dir = temp("folder");
    config.save_folder(&dir).unwrap();
    model
        .save_safetensors(&dir.join("ema.safetensors"), SaveDtype::F32)
        .unwrap();
    let (loaded_config, loaded, _) =
        Bagel::<B>::load_folder(&dir, &device, UnexpectedKeys::Error).unwrap();
    assert_eq!(loaded_config.num_metaqueries, config.num_metaqueries);
    assert_eq!(loaded_config.llm, config.llm);
    assert_eq!(outputs(&loaded, &config), outputs(&model, &config));
    // Without uno_config.json the folder reads as a BAGEL release (7B generation defaults),
    // with the ViT layers its vit_config.json states.
    std::fs::remove_file(dir.join(uno_core::bagel::UNO_CONFIG)).unwrap();
    let release = BagelConfig::from_folder(&dir).unwrap();
    assert_eq!(release.llm, config.llm);
    assert_eq!(release.vit, config.vit);
    assert_eq!(release.num_metaqueries, 256);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The FLUX autoencoder saved under FLUX's key names loads back exactly.
fn flux_ae_round_trip<B: Backend>() {
    use uno_core::bagel::keys::{module_keys, save_module, torch_key};
    use uno_core::checkpoint::WeightWriter;
    use uno_core::vae::{FluxAeConfig, LatentCodec};
    let device = Default::default();
    let cfg = FluxAeConfig::tiny();
    let ae = cfg.init::<B>(&device).unwrap();
    let keys: BTreeSet<String> = module_keys::<B, _>(&ae, torch_key)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for key in [
        "encoder.conv_in.weight",
        "encoder.down.0.block.0.norm1.weight",
        "decoder.mid.attn_1.q.bias",
        "decoder.up.1.upsample.conv.weight",
        "encoder.norm_out.bias",
    ] {
        assert!(keys.contains(key), "missing FLUX key {key}");
    }
    let dir = temp("ae");
    let mut writer = WeightWriter::new(SaveDtype::F32);
    save_module::<B, _>(&ae, &mut writer, torch_key).unwrap();
    writer.write(dir.join("ae.safetensors")).unwrap();
    let loaded =
        uno_core::bagel::load_flux_ae::<B>(&dir.join("ae.safetensors"), &cfg, &device).unwrap();
    let image = Tensor::<B, 4>::from_data(
        TensorData::new(
            (0..3 * 16 * 16)
                .map(|i| (i % 7) as f32 / 7.0)
                .collect::<Vec<_>>(),
            [1, 3, 16, 16],
        ),
        &device,
    );
    assert_eq!(
        uno_testing::to_vec(loaded.encode(image.clone()).unwrap()),
        uno_testing::to_vec(ae.encode(image).unwrap())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every loader reads a folder the same way: the language model and the ViT from their own
/// files (edits there are honoured), everything else from defaults overridden field by field
/// by `uno_config.json`; a release's `vit_config.json` (no `layers_used`) drops BAGEL's last
/// layer; unknown keys and misplaced sections are errors naming them.
#[test]
fn folder_configs_override_field_by_field() {
    use uno_core::bagel::{CodecConfig, UNO_CONFIG};
    let dir = temp("partial");
    let tiny = config();
    tiny.save_folder(&dir).unwrap();
    assert_eq!(
        BagelConfig::from_folder(&dir).unwrap().codec,
        CodecConfig::Pixel
    );
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();

    // Only the caption weight and the shift: the rest is BAGEL-7B's and the paper's.
    write(
        UNO_CONFIG,
        r#"{"loss": {"caption": 0.3}, "timestep_shift": 2.5}"#,
    );
    let c = BagelConfig::from_folder(&dir).unwrap();
    let paper = BagelConfig::bagel_7b();
    assert_eq!((c.loss.caption, c.loss.visual), (0.3, paper.loss.visual));
    assert_eq!(c.timestep_shift, 2.5);
    assert_eq!((c.num_metaqueries, c.codec), (256, paper.codec.clone()));
    assert_eq!((c.llm, c.vit), (tiny.llm.clone(), tiny.vit.clone()));

    // A FLUX width set alone keeps the other FLUX fields.
    write(UNO_CONFIG, r#"{"codec": {"flux": {"ch": 64}}}"#);
    let CodecConfig::Flux(ae) = BagelConfig::from_folder(&dir).unwrap().codec else {
        panic!("expected the FLUX codec");
    };
    let CodecConfig::Flux(release_ae) = paper.codec else {
        unreachable!()
    };
    assert_eq!(ae.ch, 64);
    assert_eq!(ae.ch_mult, release_ae.ch_mult);

    // An edit of llm_config.json is honoured, not shadowed by uno_config.json.
    let mut llm = tiny.llm.clone();
    llm.rms_norm_eps = 1e-3;
    write("llm_config.json", &serde_json::to_string(&llm).unwrap());
    assert_eq!(
        BagelConfig::from_folder(&dir).unwrap().llm.rms_norm_eps,
        1e-3
    );

    // A release's vit_config.json has no `layers_used`: BAGEL drops the last layer.
    let mut vit = serde_json::to_value(&tiny.vit).unwrap();
    vit.as_object_mut().unwrap().remove("layers_used");
    write("vit_config.json", &vit.to_string());
    let c = BagelConfig::from_folder(&dir).unwrap();
    assert_eq!(c.vit.num_layers(), tiny.vit.num_hidden_layers - 1);

    for (text, culprit) in [
        (r#"{"loss": {"captoin": 1}}"#, "loss.captoin"),
        (r#"{"metaqueries": 4}"#, "metaqueries"),
        (r#"{"llm": {}}"#, "llm_config.json"),
        (r#"[1, 2]"#, "object"),
    ] {
        write(UNO_CONFIG, text);
        let err = BagelConfig::from_folder(&dir).unwrap_err().to_string();
        assert!(
            err.contains(culprit) && err.contains(UNO_CONFIG),
            "{text}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

uno_testing::backend_tests!(
    folder_round_trip,
    flux_ae_round_trip,
    key_set_and_bit_identical_round_trip,
    bf16_file_loads_exactly,
    missing_generation_expert_is_copied_from_understanding,
    bad_checkpoints_are_named_errors
);
