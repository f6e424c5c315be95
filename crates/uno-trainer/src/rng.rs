//! [`TrainRng`]: the trainer's random stream, whose whole state is one `u64` so that it
//! goes into `trainer_state.json` and resume continues the exact same stream.
//!
//! rand's `StdRng` cannot be serialised without extra features, and Burn's backend RNG
//! (`Backend::seed`) is process-global state shared by every thread, so neither can be
//! checkpointed. SplitMix64 (Steele, Lea & Flood 2014) is tiny, passes BigCrush, and is
//! plenty for data order and per-step noise seeds.

use serde::{Deserialize, Serialize};

/// SplitMix64 generator; implements [`rand::RngCore`] so `rand`/`rand_distr` work with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainRng {
    state: u64,
}

impl TrainRng {
    /// A generator seeded with `seed` (any value, zero included, is fine).
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The full state, to checkpoint.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// Restore a checkpointed state.
    pub fn from_state(state: u64) -> Self {
        Self { state }
    }

    /// An independent stream number `stream` derived from the current state, without
    /// advancing it: the data-parallel peers' data randomness (each peer reads other
    /// positions, so each needs its own stream, while the shared one stays the same on all).
    pub fn split(&self, stream: u64) -> Self {
        let mut mixer = Self::new(self.state ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self::new(rand::RngCore::next_u64(&mut mixer))
    }
}

impl rand::RngCore for TrainRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn matches_reference_splitmix64() {
        // Reference values of SplitMix64 seeded with 0 (as in the public C reference).
        let mut rng = TrainRng::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn state_round_trip_continues_stream() {
        let mut a = TrainRng::new(42);
        a.next_u64();
        let mut b = TrainRng::from_state(a.state());
        assert_eq!(a.next_u64(), b.next_u64());
    }
}
