//! BAGEL's `MLPconnector` from ViT tokens to the language model's hidden size.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::gelu_approximate;
use burn::tensor::{Tensor, backend::Backend};

/// Configuration of [`MlpConnector`] (BAGEL: `in_dim` 1152, `out_dim` 3584).
#[derive(Config, Debug)]
pub struct MlpConnectorConfig {
    /// ViT hidden size.
    pub in_dim: usize,
    /// Language model hidden size.
    pub out_dim: usize,
}

impl MlpConnectorConfig {
    /// Build the connector with Burn's default initialisers (weights are meant to be
    /// loaded).
    pub fn init<B: Backend>(&self, device: &B::Device) -> MlpConnector<B> {
        MlpConnector {
            fc1: LinearConfig::new(self.in_dim, self.out_dim).init(device),
            fc2: LinearConfig::new(self.out_dim, self.out_dim).init(device),
        }
    }
}

/// `fc2(gelu_tanh(fc1(x)))`; checkpoint keys `connector.fc{1,2}.{weight,bias}` (weights
/// transposed: Burn's Linear is `[in, out]`).
#[derive(Module, Debug)]
pub struct MlpConnector<B: Backend> {
    /// `in_dim -> out_dim`.
    pub fc1: Linear<B>,
    /// `out_dim -> out_dim`.
    pub fc2: Linear<B>,
}

impl<B: Backend> MlpConnector<B> {
    /// Map ViT tokens to language-model tokens.
    ///
    /// # Shapes
    /// - `x`: `[N, in_dim]`
    /// - output: `[N, out_dim]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc2.forward(gelu_approximate(self.fc1.forward(x)))
    }
}
