//! Fixed routing of a pack's tokens to the two experts (no router: BAGEL routes by token
//! kind, `uno-packing` produces the index lists).
//!
//! Inside the decoder the residual stream is kept in *expert order* (all und tokens, in the
//! order of the und list, then all gen tokens), so each expert works on a contiguous slice.
//! Only the joint attention needs *sequence order*; each layer does one differentiable
//! `select` into sequence order (for q/k/v) and one back (for the attention output).

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};

use crate::MotError;

/// A validated partition of `0..len` into und and gen tokens, plus the permutations between
/// sequence order and expert order.
#[derive(Debug, Clone)]
pub struct Routing<B: Backend> {
    len: usize,
    n_und: usize,
    /// Expert-order row `j` holds sequence row `to_expert[j]` (`cat(und, gen)`).
    to_expert: Tensor<B, 1, Int>,
    /// Sequence row `i` is expert-order row `to_seq[i]` (inverse permutation).
    to_seq: Tensor<B, 1, Int>,
    /// Both permutations are the identity (all und in order, or all gen in order).
    identity: bool,
}

impl<B: Backend> Routing<B> {
    /// Validate `und_idx` and `gen_idx` (`[n_und]`, `[n_gen]` token indexes) as a partition of
    /// `0..len`. Reads both lists back to the host once.
    pub fn new(
        und_idx: Tensor<B, 1, Int>,
        gen_idx: Tensor<B, 1, Int>,
        len: usize,
    ) -> Result<Self, MotError> {
        let device = und_idx.device();
        let und: Vec<i64> = und_idx.into_data().iter::<i64>().collect();
        let gen_list: Vec<i64> = gen_idx.into_data().iter::<i64>().collect();
        Self::build(&und, &gen_list, len, &device)
    }

    /// [`Routing::new`] from host index lists, on `device`.
    pub fn from_indices(
        und_idx: &[usize],
        gen_idx: &[usize],
        len: usize,
        device: &B::Device,
    ) -> Result<Self, MotError> {
        let und: Vec<i64> = und_idx.iter().map(|&i| i as i64).collect();
        let gen_list: Vec<i64> = gen_idx.iter().map(|&i| i as i64).collect();
        Self::build(&und, &gen_list, len, device)
    }

    /// Every token to the understanding expert (a plain single-expert decoder).
    pub fn all_und(len: usize, device: &B::Device) -> Self {
        let all: Vec<usize> = (0..len).collect();
        Self::from_indices(&all, &[], len, device).expect("0..len is a partition")
    }

    fn build(
        und: &[i64],
        gen_list: &[i64],
        len: usize,
        device: &B::Device,
    ) -> Result<Self, MotError> {
        if und.len() + gen_list.len() != len {
            return Err(MotError::RoutingCount {
                num_und: und.len(),
                num_gen: gen_list.len(),
                len,
            });
        }
        let mut to_seq = vec![-1i64; len];
        for (list, indexes, offset) in [("und", und, 0), ("gen", gen_list, und.len())] {
            for (j, &index) in indexes.iter().enumerate() {
                if index < 0 || index as usize >= len {
                    return Err(MotError::RoutingOutOfRange { list, index, len });
                }
                let slot = &mut to_seq[index as usize];
                if *slot >= 0 {
                    return Err(MotError::RoutingDuplicate {
                        index: index as usize,
                        len,
                    });
                }
                *slot = (offset + j) as i64;
            }
        }
        let to_expert: Vec<i64> = und.iter().chain(gen_list).copied().collect();
        let identity = to_expert.iter().enumerate().all(|(i, &j)| i as i64 == j);
        Ok(Self {
            len,
            n_und: und.len(),
            to_expert: Tensor::from_data(TensorData::new(to_expert, [len]), device),
            to_seq: Tensor::from_data(TensorData::new(to_seq, [len]), device),
            identity,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the pack is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of understanding tokens (the first rows in expert order).
    pub fn num_und(&self) -> usize {
        self.n_und
    }

    /// Number of generation tokens (the last rows in expert order).
    pub fn num_gen(&self) -> usize {
        self.len - self.n_und
    }

    /// Sequence-order rows -> expert-order rows.
    pub fn to_expert_order<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.identity {
            x
        } else {
            x.select(0, self.to_expert.clone())
        }
    }

    /// Expert-order rows -> sequence-order rows.
    pub fn to_seq_order<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.identity {
            x
        } else {
            x.select(0, self.to_seq.clone())
        }
    }

    /// Move the index tensors to `device`.
    pub fn to_device(self, device: &B::Device) -> Self {
        Self {
            to_expert: self.to_expert.to_device(device),
            to_seq: self.to_seq.to_device(device),
            ..self
        }
    }

    /// The same routing on the autodiff backend's inner backend (the index tensors carry
    /// no graph), for work done outside the graph ([`crate::DecoderTape`]).
    pub fn inner(&self) -> Routing<B::InnerBackend>
    where
        B: AutodiffBackend,
    {
        Routing {
            len: self.len,
            n_und: self.n_und,
            to_expert: self.to_expert.clone().inner(),
            to_seq: self.to_seq.clone().inner(),
            identity: self.identity,
        }
    }

    /// Split expert-order rows into the und part and the gen part (`None` when empty) and
    /// apply `f_und` / `f_gen`, then concatenate back in expert order.
    pub(crate) fn per_expert<const D: usize>(
        &self,
        x: Tensor<B, D>,
        f_und: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
        f_gen: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
    ) -> Tensor<B, D> {
        let n_gen = self.num_gen();
        match (self.n_und, n_gen) {
            (_, 0) => f_und(x),
            (0, _) => f_gen(x),
            (n_und, n_gen) => {
                let u = f_und(x.clone().narrow(0, 0, n_und));
                let g = f_gen(x.narrow(0, n_und, n_gen));
                Tensor::cat(vec![u, g], 0)
            }
        }
    }

    /// [`Routing::per_expert`] for two row-aligned inputs.
    pub(crate) fn per_expert2(
        &self,
        x: Tensor<B, 2>,
        y: Tensor<B, 2>,
        f_und: impl FnOnce(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
        f_gen: impl FnOnce(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let n_gen = self.num_gen();
        match (self.n_und, n_gen) {
            (_, 0) => f_und(x, y),
            (0, _) => f_gen(x, y),
            (n_und, n_gen) => {
                let u = f_und(x.clone().narrow(0, 0, n_und), y.clone().narrow(0, 0, n_und));
                let g = f_gen(x.narrow(0, n_und, n_gen), y.narrow(0, n_und, n_gen));
                Tensor::cat(vec![u, g], 0)
            }
        }
    }
}
