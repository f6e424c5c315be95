//! Patchify, the SigLIP NaViT encoder and the MLP connector, against hand values and
//! `tools/vision_reference.py` (`tests/data/vision_vit.safetensors`).

use crate::fixture;

use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};
use fixture::{CoreFixture, Fixture};
use uno_core::bagel::vit_tokens_to_llm;
use uno_core::embed::PositionEmbeddingConfig;
use uno_core::patch::{PixelLayout, VisionError, patchify, unpatchify};
use uno_core::vision::{MlpConnectorConfig, SiglipVisionConfig, SiglipVisionModel};
use uno_testing::{assert_tensor_close, to_vec};

const TOL: f32 = 1e-4;

/// Image value `c * 100 + y * 10 + x`: patch row `r * cols + q`, element
/// `(py * p + px) * C + c` must be `c * 100 + (r p + py) * 10 + (q p + px)`.
fn patchify_order_by_hand<B: Backend>() {
    let device = Default::default();
    let (c, h, w, p) = (2usize, 4usize, 6usize, 2usize);
    let chw: Vec<f32> = (0..c)
        .flat_map(|ch| {
            (0..h).flat_map(move |y| (0..w).map(move |x| (ch * 100 + y * 10 + x) as f32))
        })
        .collect();
    let image = Tensor::<B, 3>::from_data(TensorData::new(chw, [c, h, w]), &device);
    let (rows, grid) = patchify(image.clone(), p, PixelLayout::Chw).unwrap();
    assert_eq!(grid, [2, 3]);
    assert_eq!(rows.dims(), [6, 8]);
    let v = to_vec(rows.clone());
    for r in 0..2 {
        for q in 0..3 {
            for py in 0..p {
                for px in 0..p {
                    for ch in 0..c {
                        let got = v[(r * 3 + q) * 8 + (py * p + px) * c + ch];
                        let want = (ch * 100 + (r * p + py) * 10 + q * p + px) as f32;
                        assert_eq!(got, want, "patch ({r},{q}) py {py} px {px} c {ch}");
                    }
                }
            }
        }
    }
    // [H, W, C] input gives the same rows.
    let hwc = image.permute([1, 2, 0]);
    let (rows2, grid2) = patchify(hwc, p, PixelLayout::Hwc).unwrap();
    assert_eq!(grid2, grid);
    assert_eq!(to_vec(rows2), v);
}

fn patchify_roundtrip<B: Backend>() {
    let device = Default::default();
    let image = Tensor::<B, 3>::random([3, 6, 8], Distribution::Normal(0.0, 1.0), &device);
    let expected = to_vec(image.clone());
    let (rows, grid) = patchify(image.clone(), 2, PixelLayout::Chw).unwrap();
    assert_eq!(
        to_vec(unpatchify(rows, grid, 2, PixelLayout::Chw).unwrap()),
        expected
    );
    let hwc = image.clone().permute([1, 2, 0]);
    let hwc_vals = to_vec(hwc.clone());
    let (rows, grid) = patchify(hwc, 2, PixelLayout::Hwc).unwrap();
    assert_eq!(
        to_vec(unpatchify(rows, grid, 2, PixelLayout::Hwc).unwrap()),
        hwc_vals
    );

    let err = patchify(image.clone(), 4, PixelLayout::Chw).unwrap_err();
    assert_eq!(
        err,
        VisionError::NotDivisible {
            what: "patchify",
            height: 6,
            width: 8,
            patch: 4
        }
    );
    assert!(err.to_string().contains("6x8"), "{err}");
    assert!(patchify(image, 0, PixelLayout::Chw).is_err());
    let rows = Tensor::<B, 2>::zeros([5, 12], &device);
    assert!(matches!(
        unpatchify(rows.clone(), [2, 3], 2, PixelLayout::Chw),
        Err(VisionError::ShapeMismatch { .. })
    ));
    assert!(
        unpatchify(
            rows.narrow(1, 0, 10).narrow(0, 0, 4),
            [2, 2],
            2,
            PixelLayout::Chw
        )
        .is_err()
    );
}

fn tiny_vit<B: Backend>(f: &Fixture, device: &B::Device) -> SiglipVisionModel<B> {
    let vit = SiglipVisionConfig::tiny().init::<B>(device).unwrap();
    f.load_into(vit, "vit_model.", device)
}

fn vit_matches_reference<B: Backend>() {
    let device = Default::default();
    let f = Fixture::load("vision_vit.safetensors");
    let vit = tiny_vit::<B>(&f, &device);
    assert_eq!(vit.vision_model.encoder.layers.len(), 2);
    let patches = f.tensor::<B, 2>("input.patches", &device);
    let ids = f.usizes("input.position_ids");
    let lens = f.usizes("input.seq_lens");
    let (expected, shape) = f.f32("expected.vit_out");
    let out = vit.forward(patches.clone(), &ids, &lens).unwrap();
    assert_tensor_close(out, [shape[0], shape[1]], &expected, TOL, TOL);

    // The same from raw images: our patchify and position ids agree with the reference's.
    let images = [
        f.tensor::<B, 3>("input.image0", &device),
        f.tensor::<B, 3>("input.image1", &device),
    ];
    let (out, grids) = vit.forward_images(&images).unwrap();
    assert_eq!(grids, vec![[3, 4], [2, 2]]);
    assert_tensor_close(out, [shape[0], shape[1]], &expected, TOL, TOL);

    // Images are isolated: image 1 alone gives its rows of the joint output.
    let (alone, _) = vit.forward_images(&images[1..]).unwrap();
    assert_tensor_close(alone, [4, 32], &expected[12 * 32..], TOL, TOL);
    // ... and one joint attention over both would differ (the test can see a leak).
    let joint = to_vec(vit.forward(patches, &ids, &[16]).unwrap());
    let max_diff = joint
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        max_diff > 1e-2,
        "attention across images should change the output"
    );
}

fn connector_matches_reference<B: Backend>() {
    let device = Default::default();
    let f = Fixture::load("vision_vit.safetensors");
    let connector = MlpConnectorConfig::new(32, 24).init::<B>(&device);
    let connector = f.load_into(connector, "connector.", &device);
    let table = PositionEmbeddingConfig::new(4, 24)
        .init::<B>(&device)
        .unwrap();
    // The recomputed table equals the reference's (as a loader may check).
    let (stored, _) = f.f32("vit_pos_embed.pos_embed");
    assert_tensor_close(table.pos_embed.val(), [16, 24], &stored, 1e-6, 0.0);

    let vit_out = f.tensor::<B, 2>("expected.vit_out", &device);
    let ids = f.usizes("input.position_ids");
    let (expected, _) = f.f32("expected.connector_out");
    let out = vit_tokens_to_llm(&connector, &table, vit_out.clone(), &ids).unwrap();
    assert_tensor_close(out, [16, 24], &expected, TOL, TOL);

    let err = vit_tokens_to_llm(&connector, &table, vit_out.clone(), &ids[1..]).unwrap_err();
    assert!(err.to_string().contains("expected 16, found 15"), "{err}");
    let mut bad = ids.clone();
    bad[2] = 16;
    assert!(matches!(
        vit_tokens_to_llm(&connector, &table, vit_out, &bad),
        Err(VisionError::PositionIdOutOfRange {
            id: 16,
            index: 2,
            ..
        })
    ));
}

fn vit_rejects_bad_input<B: Backend>() {
    let device = Default::default();
    let vit = SiglipVisionConfig::tiny().init::<B>(&device).unwrap();
    let patches = Tensor::<B, 2>::zeros([6, 12], &device);
    let ids: Vec<usize> = (0..6).collect();
    assert!(vit.forward(patches.clone(), &ids, &[4, 2]).is_ok());

    let err = vit
        .forward(patches.clone().narrow(1, 0, 10), &ids, &[6])
        .unwrap_err();
    assert!(err.to_string().contains("expected 12, found 10"), "{err}");
    let err = vit.forward(patches.clone(), &ids[..5], &[6]).unwrap_err();
    assert!(err.to_string().contains("position ids"), "{err}");
    let err = vit.forward(patches.clone(), &ids, &[4, 3]).unwrap_err();
    assert!(err.to_string().contains("seq_lens"), "{err}");
    let err = vit.forward(patches.clone(), &ids, &[6, 0]).unwrap_err();
    assert!(err.to_string().contains("seq_lens[1] = 0"), "{err}");
    let err = vit
        .forward(patches, &[0, 1, 2, 3, 16, 5], &[6])
        .unwrap_err();
    assert_eq!(
        err,
        VisionError::PositionIdOutOfRange {
            what: "ViT position_embedding",
            id: 16,
            index: 4,
            rows: 16
        }
    );
    // 10x4 pixels = 5x2 patches: more rows than the 4x4 table.
    let big = Tensor::<B, 3>::zeros([3, 10, 4], &device);
    let err = vit.forward_images(&[big]).unwrap_err();
    assert!(
        matches!(
            err,
            VisionError::GridTooLarge {
                rows: 5,
                cols: 2,
                max: 4,
                ..
            }
        ),
        "{err}"
    );
    let odd = Tensor::<B, 3>::zeros([3, 5, 4], &device);
    assert!(matches!(
        vit.forward_images(&[odd]),
        Err(VisionError::NotDivisible { height: 5, .. })
    ));
    let gray = Tensor::<B, 3>::zeros([1, 4, 4], &device);
    assert!(matches!(
        vit.forward_images(&[gray]),
        Err(VisionError::ShapeMismatch { .. })
    ));
    assert!(vit.forward_images(&[]).is_err());
}

#[test]
fn vit_config_from_json() {
    // BAGEL's vit_config.json carries extra Hugging Face fields; they are ignored.
    let text = r#"{
        "hidden_size": 1152, "image_size": 980, "intermediate_size": 4304,
        "model_type": "siglip_vision_model", "num_attention_heads": 16,
        "num_hidden_layers": 27, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-06, "num_channels": 3, "attention_dropout": 0.0
    }"#;
    let cfg = SiglipVisionConfig::from_json(text).unwrap();
    assert_eq!(cfg.num_layers(), 27);
    let cfg = cfg.for_bagel();
    assert_eq!(cfg, SiglipVisionConfig::so400m_bagel());
    assert_eq!(cfg.num_layers(), 26);
    assert_eq!(cfg.max_patches_per_side(), 70);
    assert_eq!(cfg.patch_dim(), 588);
    // Missing fields take Hugging Face's defaults.
    let cfg = SiglipVisionConfig::from_json("{}").unwrap();
    assert_eq!(
        (cfg.hidden_size, cfg.patch_size, cfg.layer_norm_eps),
        (768, 16, 1e-6)
    );
    assert!(SiglipVisionConfig::from_json("{\"hidden_size\": \"x\"}").is_err());
    let mut bad = SiglipVisionConfig::tiny();
    bad.num_attention_heads = 5;
    assert!(
        matches!(bad.validate(), Err(VisionError::InvalidConfig(m)) if m.contains("32") && m.contains('5'))
    );
    let mut bad = SiglipVisionConfig::tiny();
    bad.layers_used = Some(4);
    assert!(bad.validate().is_err());
}

uno_testing::backend_tests!(
    patchify_order_by_hand,
    patchify_roundtrip,
    vit_matches_reference,
    connector_matches_reference,
    vit_rejects_bad_input
);
