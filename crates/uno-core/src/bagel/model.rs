//! The BAGEL module tree. Field names follow BAGEL's `ema.safetensors` keys
//! (`language_model.model.*`, `vit_model.*`, `connector.*`, `vae2llm`, ...), so the
//! checkpoint mapping is mechanical.

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use super::{BagelConfig, BagelError};
use crate::embed::{
    GenerationEmbeddings, GenerationEmbeddingsConfig, PositionEmbedding, PositionEmbeddingConfig,
};
use crate::mot::MotModel;
use crate::vision::{MlpConnector, MlpConnectorConfig, SiglipVisionModel};

/// BAGEL with UNO's metaqueries.
#[derive(Module, Debug)]
pub struct Bagel<B: Backend> {
    /// `language_model.model.embed_tokens.weight`, `[vocab, hidden]`.
    pub embed_tokens: Param<Tensor<B, 2>>,
    /// `language_model.lm_head`, untied, no bias.
    pub lm_head: Linear<B>,
    /// `language_model.model.{layers, norm, norm_moe_gen}`.
    pub language_model: MotModel<B>,
    /// `vit_model.vision_model.*`.
    pub vit_model: SiglipVisionModel<B>,
    /// `connector.fc{1,2}`.
    pub connector: MlpConnector<B>,
    /// `vit_pos_embed.pos_embed`: fixed 2-D sin-cos table added after the connector.
    pub vit_pos_embed: PositionEmbedding<B>,
    /// `vae2llm`, `llm2vae`, `time_embedder`, `latent_pos_embed`.
    pub generation: GenerationEmbeddings<B>,
    /// UNO's learnable metaqueries, `[num_metaqueries, hidden]` (not in BAGEL; saved under
    /// the key `uno.metaqueries`).
    pub metaqueries: Param<Tensor<B, 2>>,
}

impl BagelConfig {
    /// A randomly initialised model (weights are normally loaded from a checkpoint). The
    /// generation expert starts as a copy of the understanding expert, as BAGEL's
    /// `init_moe` does.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Bagel<B>, BagelError> {
        self.validate()?;
        let hidden = self.llm.hidden_size;
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Ok(Bagel {
            embed_tokens: normal.init([self.llm.vocab_size, hidden], device),
            lm_head: LinearConfig::new(hidden, self.llm.vocab_size)
                .with_bias(false)
                .with_initializer(normal.clone())
                .init(device),
            language_model: self.llm.init(device)?.init_gen_from_und(),
            vit_model: self.vit.init(device)?,
            connector: MlpConnectorConfig::new(self.vit.hidden_size, hidden).init(device),
            vit_pos_embed: PositionEmbeddingConfig::new(self.vit.max_patches_per_side(), hidden)
                .init(device)?,
            generation: GenerationEmbeddingsConfig::new(hidden)
                .with_latent_token_dim(self.latent_token_dim)
                .with_max_latent_size(self.max_latent_size)
                .init(device)?,
            metaqueries: normal.init([self.num_metaqueries, hidden], device),
        })
    }
}

impl<B: Backend> Bagel<B> {
    /// UNO's trainable set: freeze the understanding expert, the embeddings, `lm_head`,
    /// the ViT and connector (and the fixed tables). The generation expert, the generation
    /// embeddings and the metaqueries stay trainable. Activations are NOT detached:
    /// gradients of the caption and visual losses flow through the frozen understanding
    /// expert into the generation expert, which is the point of UNO.
    pub fn freeze_for_uno(self) -> Self {
        Self {
            embed_tokens: self.embed_tokens.set_require_grad(false),
            lm_head: self.lm_head.no_grad(),
            language_model: self.language_model.freeze_und(),
            vit_model: self.vit_model.no_grad(),
            connector: self.connector.no_grad(),
            vit_pos_embed: self.vit_pos_embed.no_grad(),
            generation: GenerationEmbeddings {
                latent_pos_embed: self.generation.latent_pos_embed.no_grad(),
                ..self.generation
            },
            metaqueries: self.metaqueries,
        }
    }

    /// Pretraining's trainable set: every weight trains (both experts, the embeddings,
    /// `lm_head`, the ViT, the connector, the generation embeddings, the metaqueries),
    /// whatever was frozen before, except the fixed sin-cos position tables
    /// (`vit_pos_embed`, `latent_pos_embed`), which BAGEL never trains either.
    pub fn train_all(self) -> Self {
        let model = self.map(&mut RequireGrad);
        Self {
            vit_pos_embed: model.vit_pos_embed.no_grad(),
            generation: GenerationEmbeddings {
                latent_pos_embed: model.generation.latent_pos_embed.no_grad(),
                ..model.generation
            },
            ..model
        }
    }

    /// The language model's hidden size (3584 for BAGEL-7B).
    pub fn hidden_size(&self) -> usize {
        self.embed_tokens.dims()[1]
    }

    /// Rows of `embed_tokens` (152064 for BAGEL-7B).
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.dims()[0]
    }

    /// Rows of `metaqueries`: the metaquery split length the model was built for.
    pub fn num_metaqueries(&self) -> usize {
        self.metaqueries.dims()[0]
    }
}

/// Makes every float parameter require a gradient (undoes `no_grad`), keeping its value
/// and id.
struct RequireGrad;

impl<B: Backend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}
