//! The order a data set is read in: a seeded permutation per epoch (or file order).
//!
//! Position `g` of the endless stream is item `perm_e[g % len]` of epoch `e = g / len`,
//! where `perm_e` is a Fisher-Yates shuffle drawn from a generator seeded by
//! `(seed, e)` alone. So the stream is a pure function of the seed and the position: a
//! checkpoint only keeps the position, and resume reads exactly what the interrupted run
//! would have read.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Multiplier mixing the epoch into the seed (the 64-bit golden ratio, as SplitMix64).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Item order over endless epochs of a data set of `len` items.
#[derive(Debug, Clone)]
pub struct EpochOrder {
    len: usize,
    /// `None`: file order every epoch.
    seed: Option<u64>,
    /// The epoch whose permutation is cached, and the permutation.
    cached: Option<(u64, Vec<usize>)>,
}

impl EpochOrder {
    /// File order, every epoch.
    pub fn sequential(len: usize) -> Self {
        Self {
            len,
            seed: None,
            cached: None,
        }
    }

    /// A new permutation every epoch, drawn from `(seed, epoch)`.
    pub fn shuffled(len: usize, seed: u64) -> Self {
        Self {
            len,
            seed: Some(seed),
            cached: None,
        }
    }

    /// Items per epoch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the data set is empty (then [`Self::item`] has nothing to return).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item at stream position `position`; `None` for an empty data set. Positions are
    /// cheap to read in order (one permutation is cached per epoch).
    pub fn item(&mut self, position: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let len = self.len as u64;
        let (epoch, offset) = (position / len, (position % len) as usize);
        let Some(seed) = self.seed else {
            return Some(offset);
        };
        match &self.cached {
            Some((e, perm)) if *e == epoch => Some(perm[offset]),
            _ => {
                let perm = self.permutation(seed, epoch);
                let item = perm[offset];
                self.cached = Some((epoch, perm));
                Some(item)
            }
        }
    }

    fn permutation(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut perm: Vec<usize> = (0..self.len).collect();
        let mixed = seed ^ epoch.wrapping_add(1).wrapping_mul(GOLDEN);
        perm.shuffle(&mut StdRng::seed_from_u64(mixed));
        perm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(order: &mut EpochOrder, e: u64) -> Vec<usize> {
        let n = order.len() as u64;
        (e * n..(e + 1) * n)
            .map(|g| order.item(g).unwrap())
            .collect()
    }

    #[test]
    fn every_epoch_is_a_new_permutation_fixed_by_the_seed() {
        let mut order = EpochOrder::shuffled(50, 7);
        let (e0, e1) = (epoch(&mut order, 0), epoch(&mut order, 1));
        for perm in [&e0, &e1] {
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        }
        assert_ne!(e0, e1);
        assert_ne!(e0, (0..50).collect::<Vec<_>>());
        // A fresh order (a resumed run) reads the same items at the same positions, in any
        // order of access.
        let mut again = EpochOrder::shuffled(50, 7);
        assert_eq!(again.item(73), Some(e1[23]));
        assert_eq!(epoch(&mut again, 0), e0);
        assert_ne!(epoch(&mut EpochOrder::shuffled(50, 8), 0), e0);
    }

    #[test]
    fn sequential_order_and_empty_sets() {
        let mut order = EpochOrder::sequential(3);
        let items: Vec<_> = (0..7).map(|g| order.item(g).unwrap()).collect();
        assert_eq!(items, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(EpochOrder::shuffled(0, 1).item(0), None);
    }
}
