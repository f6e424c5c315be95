//! Fuzz target: the safetensors reader on arbitrary bytes and on mangled headers (wrong
//! lengths, offsets, dtypes, shapes), single files and shard indexes. Opening, and
//! reading every tensor the header lists, must return `Ok` or a `CheckpointError`, never
//! panic. CI runs a seeded pass; `UNO_FUZZ_SECONDS=600` runs longer (see
//! `uno_testing::fuzz`).

use std::sync::atomic::{AtomicU64, Ordering};

use burn::backend::Flex;
use proptest::prelude::*;
use uno_checkpoint::WeightReader;

use super::TempDir;

/// A header entry: key, dtype name (valid or not), shape, data offsets.
fn entry() -> impl Strategy<Value = (String, String, Vec<usize>, (u64, u64))> {
    (
        "[a-z.]{0,6}",
        prop::sample::select(vec!["F32", "BF16", "F16", "F64", "I64", "U8", "BOOL", "X"])
            .prop_map(str::to_string),
        prop::collection::vec(0usize..6, 0..5),
        (0u64..200, 0u64..200),
    )
}

/// A file: either raw bytes, or a JSON header built from entries with a declared length
/// that may lie, followed by arbitrary data.
fn file() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop::collection::vec(any::<u8>(), 0..300);
    let structured = (
        prop::collection::vec(entry(), 0..4),
        -3i64..3,
        prop::collection::vec(any::<u8>(), 0..400),
        any::<bool>(),
    )
        .prop_map(|(entries, lie, data, metadata)| {
            let mut header = serde_json::Map::new();
            for (key, dtype, shape, (a, b)) in entries {
                header.insert(
                    key,
                    serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [a, b]}),
                );
            }
            if metadata {
                header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
            }
            let json = serde_json::to_vec(&header).unwrap();
            let len = (json.len() as i64 + lie).max(0) as u64;
            let mut bytes = len.to_le_bytes().to_vec();
            bytes.extend(json);
            bytes.extend(data);
            bytes
        });
    prop_oneof![raw, structured]
}

/// A shard index: arbitrary JSON-ish text, or a weight map naming (possibly missing)
/// shards.
fn index() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop::collection::vec(any::<u8>(), 0..200);
    let map = prop::collection::btree_map(
        "[a-z.]{0,6}",
        prop::sample::select(vec!["a.safetensors", "missing.safetensors", "../x", ""]),
        0..4,
    )
    .prop_map(|m| serde_json::to_vec(&serde_json::json!({ "weight_map": m })).unwrap());
    prop_oneof![raw, map]
}

fn read_everything(reader: &WeightReader) {
    let device = Default::default();
    let keys: Vec<String> = reader.keys().map(str::to_string).collect();
    for key in keys {
        let shape = reader
            .shape(&key)
            .map(<[usize]>::to_vec)
            .unwrap_or_default();
        // Only `Ok` or `Err` matter here; each rank the reader supports.
        match shape.as_slice() {
            [a] => drop(reader.read_tensor::<Flex, 1>(&key, [*a], &device)),
            [a, b] => drop(reader.read_tensor::<Flex, 2>(&key, [*a, *b], &device)),
            [a, b, c] => drop(reader.read_tensor::<Flex, 3>(&key, [*a, *b, *c], &device)),
            [a, b, c, d] => drop(reader.read_tensor::<Flex, 4>(&key, [*a, *b, *c, *d], &device)),
            _ => drop(reader.read_tensor::<Flex, 1>(&key, [1], &device)),
        }
    }
}

#[test]
fn fuzz_safetensors_reader() {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = TempDir::new("fuzz");
    uno_testing::fuzz(
        "safetensors reader",
        (file(), file(), index()),
        |(single, shard, index)| {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = dir.path(&format!("{n}.safetensors"));
            std::fs::write(&path, &single).unwrap();
            if let Ok(reader) = WeightReader::open(&path) {
                read_everything(&reader);
            }
            std::fs::remove_file(&path).unwrap();
            // A shard index next to one shard (`a.safetensors`).
            std::fs::write(dir.path("a.safetensors"), &shard).unwrap();
            let index_path = dir.path(&format!("{n}.safetensors.index.json"));
            std::fs::write(&index_path, &index).unwrap();
            if let Ok(reader) = WeightReader::open(&index_path) {
                read_everything(&reader);
            }
            std::fs::remove_file(&index_path).unwrap();
            Ok(())
        },
    );
}
