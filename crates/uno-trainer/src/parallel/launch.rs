//! [`run_data_parallel`]: one thread per device, each a registered [`Peer`].

use burn::tensor::backend::AutodiffBackend;

use super::peer::{Peer, finish, panic_message};
use crate::error::TrainError;

/// Stack of a peer thread. std gives spawned threads 2 MiB, and a training step of the tiny
/// BAGEL in an unoptimised build overflows it (the main thread that a single-device run
/// uses has 8 MiB); the reservation is virtual, only the pages used are committed.
const PEER_STACK_BYTES: usize = 64 << 20;

/// The error a peer's training ends with: the trainer's own, or a caller's type that
/// wraps it (uno-core's run error), so that [`run_data_parallel`] can tell the cause of a
/// stop from the peers it stopped.
pub trait PeerError: From<TrainError> + Send {
    /// Whether this is another peer's failure relayed ([`TrainError::PeerFailed`]), not a
    /// cause.
    fn is_relayed(&self) -> bool;
}

impl PeerError for TrainError {
    fn is_relayed(&self) -> bool {
        matches!(self, TrainError::PeerFailed { .. })
    }
}

/// Run `train` once per device, each on its own thread with its own [`Peer`] (rank = the
/// device's index), and return the peers' results in rank order.
///
/// `train` builds its model and data source on the peer's device, hands the peer to
/// [`Trainer::join`](crate::Trainer::join) and trains. When peers fail, the error returned
/// is the one that caused the stop (the lowest rank's own error), not the
/// [`TrainError::PeerFailed`] of the peers it stopped ([`PeerError::is_relayed`]).
///
/// burn-collective keeps one server per backend type and process: two data-parallel runs
/// on the same backend must not overlap in one process (this function resets the server
/// before registering).
pub fn run_data_parallel<B, T, E, F>(devices: &[B::Device], train: F) -> Result<Vec<T>, E>
where
    B: AutodiffBackend,
    T: Send,
    E: PeerError,
    F: Fn(Peer<B>) -> Result<T, E> + Sync,
{
    let peers = devices.len();
    if peers == 0 {
        return Err(TrainError::InvalidConfig {
            key: "devices",
            value: "none".to_string(),
            reason: "at least one device",
        }
        .into());
    }
    burn_collective::reset_collective::<B::InnerBackend>();
    let train = &train;
    let results: Vec<Result<T, E>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(rank, device)| {
                std::thread::Builder::new()
                    .name(format!("uno-peer-{rank}"))
                    .stack_size(PEER_STACK_BYTES)
                    .spawn_scoped(scope, move || {
                        let result = Peer::register(rank, peers, device)
                            .map_err(E::from)
                            .and_then(train);
                        let finished = finish::<B>(rank).map_err(E::from);
                        result.and_then(|value| finished.map(|()| value))
                    })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, handle)| match handle {
                Ok(handle) => handle.join().unwrap_or_else(|panic| {
                    Err(TrainError::PeerPanicked {
                        peer: rank,
                        phase: "training",
                        message: panic_message(panic.as_ref()),
                    }
                    .into())
                }),
                Err(e) => {
                    Err(TrainError::io("spawn a thread for", format!("peer {rank}"), e).into())
                }
            })
            .collect()
    });
    if results.iter().all(Result::is_ok) {
        return results.into_iter().collect();
    }
    let mut errors: Vec<E> = results.into_iter().filter_map(Result::err).collect();
    let cause = errors.iter().position(|e| !e.is_relayed()).unwrap_or(0);
    Err(errors.swap_remove(cause))
}
