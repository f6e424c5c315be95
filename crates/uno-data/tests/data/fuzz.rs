//! Fuzz target: the manifest reader on arbitrary bytes and on mangled records (unknown
//! fields, wrong types, empty or odd texts, image paths that are missing, escape the
//! folder, are directories, or hold garbage instead of an image), with arbitrary
//! resize settings. Opening, then reading every item, must return `Ok` or a
//! `DataError`, never panic. CI runs a seeded pass; `UNO_FUZZ_SECONDS=600` runs longer
//! (see `uno_testing::fuzz`).

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use uno_data::{
    Dataset, ImageTransformConfig, ImageTransforms, ManifestDataset, SyntheticConfig,
    SyntheticScenes,
};

/// Image files the test writes (a valid PNG, garbage behind a PNG signature, an empty
/// file): records naming only these get past the up-front existence check to decoding.
const PRESENT: [&str; 3] = ["ok.png", "garbage.png", "empty.png"];
/// Paths that are not image files: missing, a folder, outside the folder, empty.
const ABSENT: [&str; 4] = ["missing.png", "sub", "../outside.png", ""];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["a red circle", "a blue square on green", "", " "])
            .prop_map(str::to_string),
        ".{0,12}",
    ]
}

fn path() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        12 => prop::sample::select(PRESENT.to_vec()).prop_map(serde_json::Value::from),
        2 => prop::sample::select(ABSENT.to_vec()).prop_map(serde_json::Value::from),
        1 => any::<i64>().prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::Null),
    ]
}

/// One line: a text-to-image or edit record (fields possibly dropped or extra), or raw
/// bytes.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let t2i = (path(), text(), text(), any::<bool>(), any::<bool>()).prop_map(
        |(image, prompt, recaption, drop, extra)| {
            let mut r =
                serde_json::json!({"image": image, "prompt": prompt, "recaption": recaption});
            if drop {
                r.as_object_mut().unwrap().remove("recaption");
            }
            if extra {
                r["extra"] = serde_json::json!(1);
            }
            serde_json::to_vec(&r).unwrap()
        },
    );
    let edit =
        (path(), text(), path(), text()).prop_map(|(source, instruction, target, caption)| {
            serde_json::to_vec(&serde_json::json!({
                "source": source, "instruction": instruction,
                "target": target, "target_caption": caption,
            }))
            .unwrap()
        });
    let raw = prop::collection::vec(any::<u8>(), 0..40);
    prop_oneof![3 => t2i, 2 => edit, 1 => raw]
}

fn manifest() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(line(), 0..5).prop_map(|lines| lines.join(&b'\n'))
}

/// Arbitrary resize settings, valid or not (zero strides, `min > max`, tiny pixel caps).
fn transforms() -> impl Strategy<Value = ImageTransforms> {
    let side = || {
        (0usize..40, 0usize..40, 0usize..20, 0usize..2000).prop_map(
            |(min, max, stride, max_pixels)| ImageTransformConfig {
                min,
                max,
                stride,
                max_pixels,
            },
        )
    };
    (side(), side()).prop_map(|(vae, vit)| ImageTransforms { vae, vit })
}

#[test]
fn fuzz_manifest_reader() {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("uno-data-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    image::RgbImage::from_pixel(12, 8, image::Rgb([200, 10, 10]))
        .save(dir.join("ok.png"))
        .unwrap();
    std::fs::write(dir.join("garbage.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    let tokenizer = SyntheticScenes::new(SyntheticConfig::default())
        .unwrap()
        .tokenizer()
        .clone();
    let opened = AtomicU64::new(0);
    let cases = uno_testing::fuzz(
        "manifest reader",
        (manifest(), transforms()),
        |(bytes, transforms)| {
            let path = dir.join(format!("{}.jsonl", N.fetch_add(1, Ordering::Relaxed)));
            std::fs::write(&path, &bytes).unwrap();
            if let Ok(data) = ManifestDataset::open(&path, tokenizer.clone(), transforms) {
                opened.fetch_add(u64::from(!data.is_empty()), Ordering::Relaxed);
                for i in 0..data.len() {
                    let _ = data.get(i);
                }
            }
            std::fs::remove_file(&path).unwrap();
            Ok(())
        },
    );
    let opened = opened.load(Ordering::Relaxed);
    eprintln!("manifest reader: {opened} of {cases} cases opened a non-empty manifest");
    assert!(opened > 0, "the generator never produced a valid manifest");
    std::fs::remove_dir_all(&dir).unwrap();
}
