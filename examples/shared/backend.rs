//! The `--backend` choice shared by the examples.

/// A Burn backend to run on; all but `flex` need their cargo feature.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackendChoice {
    Flex,
    Ndarray,
    Wgpu,
    Cuda,
}

impl BackendChoice {
    /// The error for a backend this build does not include.
    pub fn not_compiled(self) -> Box<dyn std::error::Error + Send + Sync> {
        let name = format!("{self:?}").to_lowercase();
        format!("backend {name} is not compiled in: rebuild with `--features {name}`").into()
    }
}
