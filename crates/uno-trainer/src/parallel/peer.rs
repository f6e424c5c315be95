//! [`Peer`]: one data-parallel replica's handle on burn-collective, and the few collective
//! operations the loop needs, each returning the crate's error type.
//!
//! Every peer must call the same operations in the same order (burn-collective pairs calls
//! by order, not by name). So an error on one peer is not returned at once: it is carried
//! to the next [`Peer::agree`], which all peers call at the same point, and then every
//! peer stops, the failing one with its own error and the others with
//! [`TrainError::PeerFailed`]. Returning early would leave the others blocked forever in
//! the next all-reduce (burn-collective has no time-out).

use std::marker::PhantomData;

use burn::tensor::{Tensor, TensorData, TensorPrimitive, backend::AutodiffBackend};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

use crate::error::{Result, TrainError};

/// Bits per limb of [`Peer::sum_exact`]: a sum of `peers` limbs below `2^16` stays below
/// `2^24`, the largest range in which f32 holds every integer, for up to 256 peers.
const LIMB_BITS: u32 = 16;
/// Limbs per `u64`.
const LIMBS: usize = 4;
/// Most peers a run may have: counts are summed exactly through f32 as 16-bit limbs, whose
/// sum over 256 peers still fits f32's 24-bit mantissa.
pub const MAX_PEERS: usize = 256;

/// One replica of a data-parallel run: its rank among `peers`, registered with
/// burn-collective on its device.
///
/// [`run_data_parallel`](super::run_data_parallel) registers one per device thread and
/// hands it to its closure, which gives it to [`Trainer::join`](crate::Trainer::join).
#[derive(Debug)]
pub struct Peer<B: AutodiffBackend> {
    rank: usize,
    peers: usize,
    device: B::Device,
    _backend: PhantomData<B>,
}

impl<B: AutodiffBackend> Peer<B> {
    /// Register rank `rank` of `peers` on `device`; returns once all peers registered.
    /// Collective operations run on the inner (non-autodiff) backend, as burn-collective
    /// asks. [`run_data_parallel`](super::run_data_parallel) registers, and unregisters,
    /// its peers itself.
    pub(super) fn register(rank: usize, peers: usize, device: &B::Device) -> Result<Self> {
        if peers == 0 || peers > MAX_PEERS || rank >= peers {
            return Err(TrainError::InvalidConfig {
                key: "devices",
                value: format!("rank {rank} of {peers} peers"),
                reason: "between 1 and 256 peers, rank below the peer count",
            });
        }
        let config = CollectiveConfig::default().with_num_devices(peers);
        burn_collective::register::<B::InnerBackend>(PeerId::from(rank), device.clone(), config)
            .map_err(|e| collective_error("register", rank, e))?;
        Ok(Self {
            rank,
            peers,
            device: device.clone(),
            _backend: PhantomData,
        })
    }

    /// This peer's rank (0 writes checkpoints and metrics).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of peers.
    pub fn peers(&self) -> usize {
        self.peers
    }

    /// Whether this peer writes the run's files (checkpoints, metrics): rank 0.
    pub fn is_writer(&self) -> bool {
        self.rank == 0
    }

    /// The outcome of a phase that every peer went through: this peer's own error when it
    /// failed, [`TrainError::PeerFailed`] (naming the lowest failing rank) when another
    /// failed, else `local`. Every peer must call it at the same point.
    pub fn agree<T, E: From<TrainError>>(
        &self,
        step: u64,
        phase: &'static str,
        local: Result<T, E>,
    ) -> Result<T, E> {
        let mut failed = vec![0u64; self.peers];
        failed[self.rank] = u64::from(local.is_err());
        let failed = self.sum_exact("agreement", &failed)?;
        let local = local?;
        match failed.iter().position(|&f| f > 0) {
            Some(rank) => Err(TrainError::PeerFailed {
                failed: rank,
                peer: self.rank,
                step,
                phase,
            }
            .into()),
            None => Ok(local),
        }
    }

    /// [`Self::agree`] on the outcome of `phase` (run here), with a panic inside it (Burn
    /// panics on a shape error) turned into this peer's error: a peer that unwound past the
    /// next agreement would leave the others waiting in it forever.
    ///
    /// A caller that prepares per peer what a [`Trainer`](crate::Trainer) needs (a model on
    /// its device, its data shard, a run folder on peer 0) wraps that preparation in it,
    /// so that a peer that cannot start stops the others before they wait for it in
    /// [`Trainer::join`](crate::Trainer::join).
    pub fn agree_on<T, E: From<TrainError>>(
        &self,
        step: u64,
        phase: &'static str,
        run: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let local =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
                Err(TrainError::PeerPanicked {
                    peer: self.rank,
                    phase,
                    message: panic_message(panic.as_ref()),
                }
                .into())
            });
        self.agree(step, phase, local)
    }

    /// Fails unless every peer stands at `step` and `data_position` (all peers learn it:
    /// each sends its pair in its own slots of one sum).
    pub(crate) fn check_same_position(&self, step: u64, data_position: u64) -> Result<()> {
        let mut slots = vec![0u64; 2 * self.peers];
        slots[2 * self.rank] = step;
        slots[2 * self.rank + 1] = data_position;
        let all = self.sum_exact("agreement on the step", &slots)?;
        match all.chunks(2).all(|p| p == [step, data_position]) {
            true => Ok(()),
            false => Err(TrainError::PeersDisagree {
                peer: self.rank,
                step,
                data_position,
            }),
        }
    }

    /// Every peer's data-source state, by rank (`null` for none), or nothing when no
    /// peer has one (a position-addressed source).
    pub(crate) fn gather_data_states(
        &self,
        state: Option<&serde_json::Value>,
    ) -> Result<Vec<serde_json::Value>> {
        let states = self.gather_json(state)?;
        Ok(match states.iter().all(Option::is_none) {
            true => Vec::new(),
            false => states.into_iter().map(Option::unwrap_or_default).collect(),
        })
    }

    /// Every peer's `value`, by rank, on every peer (an all-gather built from one
    /// all-reduce: each peer fills its own slot of a zero vector with its JSON bytes, which
    /// f32 holds exactly).
    pub(crate) fn gather_json(
        &self,
        value: Option<&serde_json::Value>,
    ) -> Result<Vec<Option<serde_json::Value>>> {
        const OP: &str = "all-gather of the data states";
        let bytes = serde_json::to_vec(&value).map_err(|e| collective_error(OP, self.rank, e))?;
        let mut lengths = vec![0u64; self.peers];
        lengths[self.rank] = bytes.len() as u64;
        let lengths = self.sum_exact(OP, &lengths)?;
        let offsets: Vec<usize> = lengths
            .iter()
            .scan(0usize, |end, &len| {
                let start = *end;
                *end += len as usize;
                Some(start)
            })
            .collect();
        let total = lengths.iter().sum::<u64>() as usize;
        let mut slots = vec![0f32; total];
        for (slot, byte) in slots[offsets[self.rank]..].iter_mut().zip(&bytes) {
            *slot = f32::from(*byte);
        }
        let gathered = self.sum_f32(OP, slots)?;
        offsets
            .iter()
            .zip(&lengths)
            .map(|(&start, &len)| {
                let bytes: Vec<u8> = gathered[start..start + len as usize]
                    .iter()
                    .map(|b| *b as u8)
                    .collect();
                serde_json::from_slice(&bytes).map_err(|e| collective_error(OP, self.rank, e))
            })
            .collect()
    }

    /// Whether `flag` is set on any peer.
    pub(crate) fn any(&self, flag: bool) -> Result<bool> {
        Ok(self.sum_exact("flag", &[u64::from(flag)])?[0] > 0)
    }

    /// The element-wise sum over all peers of `values`, exactly (counts do not fit f32's
    /// 24-bit mantissa: each value travels as four 16-bit limbs, see [`LIMB_BITS`]).
    pub(crate) fn sum_exact(&self, op: &'static str, values: &[u64]) -> Result<Vec<u64>> {
        let mask = (1u64 << LIMB_BITS) - 1;
        let limbs: Vec<f32> = values
            .iter()
            .flat_map(|v| (0..LIMBS).map(move |i| ((v >> (LIMB_BITS * i as u32)) & mask) as f32))
            .collect();
        let summed = self.sum_f32(op, limbs)?;
        Ok(summed
            .chunks(LIMBS)
            .map(|limbs| {
                limbs.iter().enumerate().fold(0u64, |total, (i, l)| {
                    total.wrapping_add((*l as u64) << (LIMB_BITS * i as u32))
                })
            })
            .collect())
    }

    /// The element-wise sum over all peers of `values` (f32 on the wire: for metrics).
    pub(crate) fn sum_f32(&self, op: &'static str, values: Vec<f32>) -> Result<Vec<f32>> {
        let n = values.len();
        let tensor =
            Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values, [n]), &self.device);
        self.all_reduce_sum(op, tensor)?
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| collective_error(op, self.rank, format!("reading the sum back: {e:?}")))
    }

    /// The element-wise sum of `tensor` over all peers (every peer gets the same result).
    pub(crate) fn all_reduce_sum(
        &self,
        op: &'static str,
        tensor: Tensor<B::InnerBackend, 1>,
    ) -> Result<Tensor<B::InnerBackend, 1>> {
        let summed = burn_collective::all_reduce::<B::InnerBackend>(
            PeerId::from(self.rank),
            tensor.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| collective_error(op, self.rank, e))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)))
    }

    /// Peer 0's `tensor` on every peer (`tensor` is ignored on the other peers).
    pub(crate) fn broadcast<const D: usize>(
        &self,
        op: &'static str,
        tensor: Tensor<B::InnerBackend, D>,
    ) -> Result<Tensor<B::InnerBackend, D>> {
        let sent = self.is_writer().then(|| tensor.into_primitive().tensor());
        let received = burn_collective::broadcast::<B::InnerBackend>(PeerId::from(self.rank), sent)
            .map_err(|e| collective_error(op, self.rank, e))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(received)))
    }
}

/// `run`'s outcome, agreed with the other peers ([`Peer::agree_on`]) when there are any.
pub(crate) fn agreed<B: AutodiffBackend, T>(
    peer: Option<&Peer<B>>,
    step: u64,
    phase: &'static str,
    run: impl FnOnce() -> Result<T>,
) -> Result<T> {
    match peer {
        Some(peer) => peer.agree_on(step, phase, run),
        None => run(),
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// Unregister peer `rank` from burn-collective.
pub(super) fn finish<B: AutodiffBackend>(rank: usize) -> Result<()> {
    burn_collective::finish_collective::<B::InnerBackend>(PeerId::from(rank))
        .map_err(|e| collective_error("finish", rank, e))
}

/// [`TrainError::Collective`] from burn-collective's error (which implements `Debug` only).
pub(super) fn collective_error(
    op: &'static str,
    peer: usize,
    e: impl std::fmt::Debug,
) -> TrainError {
    TrainError::Collective {
        op,
        peer,
        message: format!("{e:?}"),
    }
}
