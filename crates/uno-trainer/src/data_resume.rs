//! Which data-source state a resumed trainer hands its data source, for the number of
//! peers that resume a checkpoint (one device counts as one peer).

use crate::error::{Result, TrainError};
use crate::model::DataSource;

/// A checkpoint's data states, seen from one resuming peer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DataResume {
    /// Nothing to restore: the source is position-addressed (it keeps no state).
    Nothing,
    /// As many peers resume as wrote the checkpoint: this peer's own saved state.
    Restore(serde_json::Value),
    /// Another number of peers: every saved state, for [`DataSource::reshard`].
    Reshard(Vec<serde_json::Value>),
}

impl DataResume {
    /// `data_state` (written by one device) or `peer_data_states` (one per peer, by rank),
    /// as resumed by peer `rank` of `peers`.
    pub(crate) fn new(
        data_state: Option<serde_json::Value>,
        peer_data_states: Vec<serde_json::Value>,
        rank: usize,
        peers: usize,
    ) -> Self {
        let mut saved = match peer_data_states.is_empty() {
            true => data_state.into_iter().collect(),
            false => peer_data_states,
        };
        match saved.len() {
            0 => Self::Nothing,
            n if n == peers => match saved.swap_remove(rank) {
                // A peer without a state in a run whose other peers had one.
                serde_json::Value::Null => Self::Nothing,
                own => Self::Restore(own),
            },
            _ => Self::Reshard(saved),
        }
    }

    /// Put the state into `data` before it reads `position`, this peer's first.
    pub(crate) fn apply<D: DataSource>(
        self,
        data: &mut D,
        rank: usize,
        peers: usize,
        position: u64,
    ) -> Result<()> {
        let state = match self {
            Self::Nothing => return Ok(()),
            Self::Restore(state) => state,
            Self::Reshard(saved) => {
                data.reshard(&saved, rank, peers)
                    .map_err(|e| TrainError::PeerCountChanged {
                        saved: saved.len(),
                        now: peers,
                        reason: e.to_string(),
                    })?
            }
        };
        data.restore(&state)
            .map_err(|source| TrainError::Data { position, source })
    }
}

#[cfg(test)]
mod tests {
    use super::DataResume;
    use serde_json::json;

    #[test]
    fn own_state_when_the_count_matches_else_all_of_them() {
        let peers = vec![json!({"cursor": 4}), json!({"cursor": 5})];
        assert_eq!(
            DataResume::new(None, peers.clone(), 1, 2),
            DataResume::Restore(json!({"cursor": 5}))
        );
        assert_eq!(
            DataResume::new(None, peers.clone(), 0, 3),
            DataResume::Reshard(peers.clone())
        );
        assert_eq!(
            DataResume::new(None, peers.clone(), 0, 1),
            DataResume::Reshard(peers)
        );
        let single = json!({"cursor": 9});
        assert_eq!(
            DataResume::new(Some(single.clone()), Vec::new(), 0, 1),
            DataResume::Restore(single.clone())
        );
        assert_eq!(
            DataResume::new(Some(single.clone()), Vec::new(), 1, 2),
            DataResume::Reshard(vec![single])
        );
        assert_eq!(DataResume::new(None, Vec::new(), 0, 2), DataResume::Nothing);
        assert_eq!(
            DataResume::new(None, vec![json!(null), json!({"cursor": 1})], 0, 2),
            DataResume::Nothing
        );
    }
}
