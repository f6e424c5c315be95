//! Decoder configuration, mirroring BAGEL's `llm_config.json` (Qwen2 field names).

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::model::MotModel;
use crate::{AttentionImpl, MotError};

fn default_true() -> bool {
    true
}

/// The MoT decoder's hyper-parameters.
///
/// Field names are those of BAGEL's `llm_config.json` (a Qwen2 config), so that file
/// deserializes directly (`serde_json::from_str`); unknown fields are ignored.
/// `vocab_size` is only recorded here: the embeddings and `lm_head` belong to `uno-core`.
/// `head_dim` is `hidden_size / num_attention_heads` as in Qwen2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MotConfig {
    /// Model width (3584 for BAGEL-7B).
    pub hidden_size: usize,
    /// Number of decoder layers (28).
    pub num_hidden_layers: usize,
    /// Number of query heads (28).
    pub num_attention_heads: usize,
    /// Number of key/value heads for grouped-query attention (4).
    pub num_key_value_heads: usize,
    /// SwiGLU inner width (18944).
    pub intermediate_size: usize,
    /// RMSNorm epsilon (1e-6).
    pub rms_norm_eps: f64,
    /// RoPE base (1e6).
    pub rope_theta: f64,
    /// Vocabulary size (152064); recorded only, the embeddings live in `uno-core`.
    pub vocab_size: usize,
    /// RMSNorm of q and k over head_dim before RoPE (BAGEL sets it; default true).
    #[serde(default = "default_true")]
    pub qk_norm: bool,
    /// How the training forward computes the joint attention (not a BAGEL field; default
    /// blockwise, see [`crate::attention`]).
    #[serde(default)]
    pub attention: AttentionImpl,
}

impl MotConfig {
    /// BAGEL-7B's language model (Qwen2.5-7B shape).
    pub fn bagel_7b() -> Self {
        Self {
            hidden_size: 3584,
            num_hidden_layers: 28,
            num_attention_heads: 28,
            num_key_value_heads: 4,
            intermediate_size: 18944,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            vocab_size: 152064,
            qk_norm: true,
            attention: AttentionImpl::default(),
        }
    }

    /// A tiny decoder for tests: hidden 32, 2 layers, 4 heads over 2 KV heads (head_dim 8).
    pub fn tiny() -> Self {
        Self {
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            intermediate_size: 48,
            rms_norm_eps: 1e-6,
            rope_theta: 1e4,
            vocab_size: 64,
            qk_norm: true,
            attention: AttentionImpl::default(),
        }
    }

    /// A small decoder for benches: hidden 256, 4 layers, 4 heads over 2 KV heads
    /// (head_dim 64), intermediate 1024.
    pub fn small() -> Self {
        Self {
            hidden_size: 256,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            intermediate_size: 1024,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            vocab_size: 1024,
            qk_norm: true,
            attention: AttentionImpl::default(),
        }
    }

    /// Same config with another number of layers.
    pub fn with_layers(mut self, num_hidden_layers: usize) -> Self {
        self.num_hidden_layers = num_hidden_layers;
        self
    }

    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Query heads per KV head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads.max(1)
    }

    /// Same config with another attention implementation.
    pub fn with_attention(mut self, attention: AttentionImpl) -> Self {
        self.attention = attention;
        self
    }

    /// Check every invariant the decoder relies on.
    pub fn validate(&self) -> Result<(), MotError> {
        self.attention.validate()?;
        for (field, value) in [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("intermediate_size", self.intermediate_size),
        ] {
            if value == 0 {
                return Err(MotError::ZeroField { field });
            }
        }
        for (field, value) in [
            ("rms_norm_eps", self.rms_norm_eps),
            ("rope_theta", self.rope_theta),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(MotError::NonPositive { field, value });
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(MotError::HiddenNotDivisibleByHeads {
                hidden_size: self.hidden_size,
                num_attention_heads: self.num_attention_heads,
            });
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(MotError::HeadsNotDivisibleByKvHeads {
                num_attention_heads: self.num_attention_heads,
                num_key_value_heads: self.num_key_value_heads,
            });
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(MotError::OddHeadDim {
                head_dim: self.head_dim(),
            });
        }
        Ok(())
    }

    /// Validate, then build a randomly initialised decoder (both experts drawn
    /// independently; call [`MotModel::init_gen_from_und`] for BAGEL's copy init).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<MotModel<B>, MotError> {
        self.validate()?;
        Ok(MotModel::new(self, device))
    }
}
