//! Bad configs and bad inputs are errors (with useful messages), never panics.

use burn::tensor::backend::Backend;
use uno_mot::{CacheWrite, MotConfig, MotError, Routing, SampleAttention};

use crate::common::{bools, ints, pack, randn, tiny};

#[test]
fn config_validation_names_fields() {
    assert!(MotConfig::tiny().validate().is_ok());
    assert!(MotConfig::small().validate().is_ok());
    assert!(MotConfig::bagel_7b().validate().is_ok());
    assert_eq!(MotConfig::bagel_7b().head_dim(), 128);

    let mut c = MotConfig::tiny();
    c.num_key_value_heads = 3;
    let e = c.validate().unwrap_err();
    assert!(matches!(e, MotError::HeadsNotDivisibleByKvHeads { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("num_attention_heads") && msg.contains("(4)") && msg.contains("(3)"),
        "{msg}"
    );

    let mut c = MotConfig::tiny();
    c.hidden_size = 30;
    let msg = c.validate().unwrap_err().to_string();
    assert!(msg.contains("hidden_size") && msg.contains("30"), "{msg}");

    let mut c = MotConfig::tiny();
    c.hidden_size = 12; // head_dim 3
    assert!(matches!(
        c.validate(),
        Err(MotError::OddHeadDim { head_dim: 3 })
    ));

    let mut c = MotConfig::tiny();
    c.num_hidden_layers = 0;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("num_hidden_layers")
    );

    let mut c = MotConfig::tiny();
    c.rms_norm_eps = 0.0;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("rms_norm_eps")
    );

    let mut c = MotConfig::tiny();
    c.rope_theta = f64::NAN;
    assert!(c.init::<burn::backend::Flex>(&Default::default()).is_err());
}

/// BAGEL's llm_config.json (Qwen2 fields, plus ones we ignore) deserializes.
#[test]
fn config_reads_bagel_llm_config_json() {
    let json = r#"{
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
        "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944,
        "max_position_embeddings": 32768, "num_attention_heads": 28,
        "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "tie_word_embeddings": false, "vocab_size": 152064
    }"#;
    let c: MotConfig = serde_json::from_str(json).unwrap();
    assert_eq!(c, MotConfig::bagel_7b());
    let back: MotConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

fn bad_inputs_are_errors<B: Backend>() {
    let device = B::Device::default();
    let p = pack::<B>(32, 1, &device);
    let l = p.len();
    let model = tiny::<B>(1, 2, &device);

    // Routing that is not a partition of 0..L.
    let mut und = p.und.clone();
    und[0] = p.gen_idx[0];
    assert!(matches!(
        Routing::<B>::from_indices(&und, &p.gen_idx, l, &device),
        Err(MotError::RoutingDuplicate { .. })
    ));
    assert!(matches!(
        Routing::<B>::from_indices(&p.und[1..], &p.gen_idx, l, &device),
        Err(MotError::RoutingCount { .. })
    ));
    let e = Routing::<B>::new(ints(&[0, 1, -1], &device), ints(&[2], &device), 4).unwrap_err();
    assert!(
        matches!(e, MotError::RoutingOutOfRange { index: -1, .. }),
        "{e}"
    );
    let e = Routing::<B>::new(ints(&[0, 1, 7], &device), ints(&[2], &device), 4).unwrap_err();
    assert!(
        e.to_string().contains("und") && e.to_string().contains('7'),
        "{e}"
    );
    let ok = Routing::<B>::new(ints(&[3, 0], &device), ints(&[2, 1], &device), 4).unwrap();
    assert_eq!((ok.num_und(), ok.num_gen()), (2, 2));

    let routing = p.routing(&device);
    let fwd = |hidden, routing: &Routing<B>, pos, samples: &[SampleAttention]| {
        model.forward(hidden, routing, pos, samples)
    };
    // Routing for another length.
    let short = Routing::all_und(l - 1, &device);
    assert!(matches!(
        fwd(p.hidden.clone(), &short, p.position_ids.clone(), &p.samples),
        Err(MotError::RoutingCount { .. })
    ));
    // Wrong hidden width.
    let e = fwd(
        randn([l, 31], 0, &device),
        &routing,
        p.position_ids.clone(),
        &p.samples,
    )
    .unwrap_err();
    assert!(e.to_string().contains("hidden"), "{e}");
    // Wrong position ids length.
    let e = fwd(
        p.hidden.clone(),
        &routing,
        ints(&[0, 1], &device),
        &p.samples,
    )
    .unwrap_err();
    assert!(e.to_string().contains("position_ids"), "{e}");
    // Samples not covering L.
    let e = fwd(
        p.hidden.clone(),
        &routing,
        p.position_ids.clone(),
        &p.samples[..1],
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            MotError::SampleCoverage {
                covered: 9,
                len: 15
            }
        ),
        "{e}"
    );
    // Samples with a gap / out of order.
    let mut s = p.samples.clone();
    s.swap(0, 1);
    assert!(matches!(
        fwd(p.hidden.clone(), &routing, p.position_ids.clone(), &s),
        Err(MotError::SampleGap { .. })
    ));
    // A sample longer than its place in the pack.
    let mut s = p.samples.clone();
    s[1] = SampleAttention::causal(9, 7);
    assert!(matches!(
        fwd(p.hidden.clone(), &routing, p.position_ids.clone(), &s),
        Err(MotError::SampleCoverage {
            covered: 16,
            len: 15
        })
    ));
    // Empty sample.
    let mut s = p.samples.clone();
    s.insert(1, SampleAttention::causal(9, 0));
    assert!(matches!(
        fwd(p.hidden.clone(), &routing, p.position_ids.clone(), &s),
        Err(MotError::EmptySample { sample: 1 })
    ));
    // KV-cache mask of the wrong width.
    let e = model
        .forward_cached(
            p.hidden.clone(),
            &routing,
            p.position_ids.clone(),
            bools(vec![false; l * l], l, l, &device),
            &mut model.kv_cache(l, &device),
            CacheWrite::Keep,
        )
        .map(|_| ());
    assert!(e.is_ok());
    let e = model
        .forward_cached(
            p.hidden.clone(),
            &routing,
            p.position_ids.clone(),
            bools(vec![false; l * (l + 1)], l, l + 1, &device),
            &mut model.kv_cache(l + 1, &device),
            CacheWrite::Keep,
        )
        .unwrap_err();
    assert!(e.to_string().contains("mask"), "{e}");
}

uno_testing::backend_tests!(bad_inputs_are_errors);
