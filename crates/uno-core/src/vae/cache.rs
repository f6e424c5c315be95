//! Encoder posteriors kept per image, so that repeated epochs skip the encoder.
//!
//! # Why
//! The codec is frozen, so an image's posterior never changes during a run, and the FLUX
//! encoder is the most expensive part of a CPU step at real sizes (`docs/performance.md`,
//! "FLUX autoencoder"). What changes each step is the latent drawn from the posterior
//! (BAGEL samples it, [`LatentSampling::Sample`]): so the cache keeps the posterior and
//! every step still draws its own latent, through the same operations as without a cache.
//! A cached run is bit-identical to an uncached one (tested).
//!
//! # Key
//! An entry is keyed by a 128-bit XXH3 hash of the exact pixels the encoder would see
//! (shape, dtype and bytes). Those pixels are a function of the image file's bytes and of
//! the transform that made them, so the key covers "file hash and transform" without
//! trusting either: an edited file or a changed resize setting is a miss, never a stale
//! hit. Decoding and resizing still run each epoch; they cost milliseconds where the
//! encoder costs seconds.
//!
//! # Capacity
//! Entries live in host memory (not on the device) up to a byte budget, and are never
//! evicted: a training epoch visits every image once in turn, and under that cyclic access
//! an evicting (LRU) cache smaller than the data set never hits, while keeping the first
//! entries hits on `capacity / data set` of the images every later epoch.

use std::collections::HashMap;
use std::sync::Mutex;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use xxhash_rust::xxh3::Xxh3;

use super::{LatentCodec, LatentSampling, Posterior, VisionError};

/// A byte-bounded store of encoder posteriors, keyed by the pixels encoded. Shared by
/// reference ([`CachedCodec`]); safe to use from several threads.
#[derive(Debug)]
pub struct LatentCache {
    capacity_bytes: usize,
    state: Mutex<State>,
}

/// What a [`LatentCache`] holds and how it has been used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatentCacheStats {
    /// Encodes answered from the cache.
    pub hits: u64,
    /// Encodes that ran the encoder.
    pub misses: u64,
    /// Posteriors held.
    pub entries: usize,
    /// Bytes of posterior data held.
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<u128, Entry>,
    stats: LatentCacheStats,
}

#[derive(Debug, Clone)]
struct Entry {
    mean: TensorData,
    logvar: Option<TensorData>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.mean.as_bytes().len() + self.logvar.as_ref().map_or(0, |l| l.as_bytes().len())
    }
}

impl LatentCache {
    /// An empty cache that holds at most `capacity_bytes` of posterior data (0 disables it:
    /// every encode runs the encoder).
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            state: Mutex::default(),
        }
    }

    /// The byte budget.
    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// Hits, misses and what is held so far.
    pub fn stats(&self) -> LatentCacheStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves only complete entries behind (an entry is
        // inserted whole), so a poisoned cache is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached posterior of `key`, counting a hit or a miss.
    fn get(&self, key: u128) -> Option<Entry> {
        let mut state = self.lock();
        let entry = state.entries.get(&key).cloned();
        match entry {
            Some(_) => state.stats.hits += 1,
            None => state.stats.misses += 1,
        }
        entry
    }

    /// Keep `entry` under `key` if it fits the budget.
    fn insert(&self, key: u128, entry: Entry) {
        let mut state = self.lock();
        let bytes = entry.bytes();
        if state.stats.bytes + bytes > self.capacity_bytes || state.entries.contains_key(&key) {
            return;
        }
        state.entries.insert(key, entry);
        state.stats.bytes += bytes;
        state.stats.entries += 1;
    }
}

/// The cache key of `images`: XXH3-128 over shape, dtype and bytes.
fn key(images: &TensorData) -> u128 {
    let mut hasher = Xxh3::new();
    for &dim in images.shape.iter() {
        hasher.update(&(dim as u64).to_le_bytes());
    }
    hasher.update(format!("{:?}", images.dtype).as_bytes());
    hasher.update(images.as_bytes());
    hasher.digest128()
}

/// `codec` with its posteriors looked up in, and added to, `cache`; everything else
/// (sampling, decoding) is `codec`'s own.
///
/// One cache serves one codec: the key is the pixels, not the codec's weights.
#[derive(Debug, Clone, Copy)]
pub struct CachedCodec<'a, C> {
    /// The codec that encodes on a miss.
    pub codec: C,
    /// Where posteriors are kept.
    pub cache: &'a LatentCache,
}

impl<B: Backend, C: LatentCodec<B>> LatentCodec<B> for CachedCodec<'_, C> {
    fn latent_channels(&self) -> usize {
        self.codec.latent_channels()
    }

    fn downsample(&self) -> usize {
        self.codec.downsample()
    }

    fn encode_posterior(&self, images: Tensor<B, 4>) -> Result<Posterior<B>, VisionError> {
        if self.cache.capacity_bytes == 0 {
            return self.codec.encode_posterior(images);
        }
        let device = images.device();
        let key = key(&images.to_data());
        if let Some(entry) = self.cache.get(key) {
            return Ok(Posterior {
                mean: Tensor::from_data(entry.mean, &device),
                logvar: entry.logvar.map(|l| Tensor::from_data(l, &device)),
            });
        }
        let posterior = self.codec.encode_posterior(images)?;
        self.cache.insert(
            key,
            Entry {
                mean: posterior.mean.to_data(),
                logvar: posterior.logvar.as_ref().map(Tensor::to_data),
            },
        );
        Ok(posterior)
    }

    fn latent_from(
        &self,
        posterior: Posterior<B>,
        sampling: LatentSampling,
        seed: u64,
    ) -> Tensor<B, 4> {
        self.codec.latent_from(posterior, sampling, seed)
    }

    fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>, VisionError> {
        self.codec.decode(latents)
    }
}
