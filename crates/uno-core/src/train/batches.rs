//! Micro-batches from a data set: items in a seeded per-epoch order, CFG dropout of the
//! conditions, filled up to a sample count or a token budget, packed into one sequence,
//! images uploaded to the device.

use std::collections::VecDeque;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, EpochOrder, RgbImage, TrainItem};
use crate::objectives::ConditionDropoutConfig;
use crate::packing::{PackError, PackedSequence, PackingConfig, Sample, SplitSpec};
use crate::trainer::{BoxError, DataSource, TrainRng};

/// One packed micro-batch and its pixels.
#[derive(Debug, Clone)]
pub struct TrainBatch<B: Backend> {
    /// The micro-batch's samples packed into one sequence.
    pub pack: PackedSequence,
    /// One RGB image `[3, H, W]` in `[0, 1]` per entry of `pack.images`, in order
    /// (CFG-dropped images have no entry in either).
    pub images: Vec<Tensor<B, 3>>,
    /// One ViT-side clean target `[3, H, W]` in `[0, 1]` per entry of
    /// `pack.metaquery_groups`, in order.
    pub vit_targets: Vec<Tensor<B, 3>>,
    /// Samples skipped while filling this micro-batch because they are longer than the
    /// per-sample maximum (`packing.max_sample_tokens`) or the budget's `max`: they are
    /// counted, never truncated.
    pub skipped: u64,
}

/// How a micro-batch is filled. In TOML: `batch = { samples = 8 }` or
/// `batch = { tokens = { expected = 32768, max = 36864 } }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchFill {
    /// A fixed number of samples per micro-batch, whatever their length.
    Samples(usize),
    /// BAGEL's `PackedDataset`: add samples until the pack holds at least `expected`
    /// tokens; never exceed `max` (a sample that would is left for the next micro-batch).
    Tokens {
        /// A pack is closed once it holds this many tokens (BAGEL: 32768).
        expected: usize,
        /// A pack never holds more (BAGEL: 36864).
        max: usize,
    },
}

impl BatchFill {
    /// Check the values: at least one sample, `0 < expected <= max`.
    pub fn is_valid(&self) -> bool {
        match *self {
            Self::Samples(n) => n > 0,
            Self::Tokens { expected, max } => expected > 0 && expected <= max,
        }
    }
}

/// Micro-batches of a data set, read as an endless stream of epochs in a seeded
/// per-epoch order ([`EpochOrder`]).
///
/// The trainer asks for positions 0, 1, 2, ... in order; how many items a micro-batch
/// holds depends on their lengths (under [`BatchFill::Tokens`]) and on skipped samples, so
/// the source keeps a cursor into the stream, which is its checkpointed state
/// ([`DataSource::state`]). CFG dropout is drawn from the trainer's RNG as each item is
/// added, so a resumed run draws exactly what the interrupted one would have.
pub struct PackedBatches<D, B: Backend> {
    dataset: D,
    fill: BatchFill,
    packing: PackingConfig,
    dropout: ConditionDropoutConfig,
    device: B::Device,
    order: EpochOrder,
    /// This source's shard of the stream (data parallel): items `rank`, `rank + peers`,
    /// `rank + 2 peers`, ... after `start`; `(0, 1)`: the whole stream.
    shard: (u64, u64),
    /// Stream index where the current sharding begins: 0, or where a run resumed with
    /// another number of peers continued ([`DataSource::reshard`]).
    start: u64,
    /// Position in this source's shard of the next item to consider.
    cursor: u64,
    /// The item at `cursor`, read but not yet added (it did not fit the last pack).
    pending: Option<TrainItem>,
    /// Data set indexes of the items of the latest micro-batches, by position, for
    /// [`DataSource::sample_ids`] (which item a position holds depends on the lengths
    /// packed before it, so it is remembered, not computed).
    recent: VecDeque<(u64, Vec<usize>)>,
}

/// Micro-batches whose items [`PackedBatches`] remembers: more than any step's
/// `grad_accumulation`.
const RECENT_POSITIONS: usize = 1024;

impl<D: Dataset, B: Backend> PackedBatches<D, B> {
    /// Micro-batches of `dataset` in file order. `packing` must match the model
    /// ([`crate::bagel::BagelConfig::packing`], with the run's mask settings); `dropout` is
    /// drawn per item: the text (BAGEL: 0.1) and, for edits, the source's ViT and clean VAE
    /// splits (BAGEL: 0.3 each).
    pub fn new(
        dataset: D,
        fill: BatchFill,
        packing: PackingConfig,
        dropout: ConditionDropoutConfig,
        device: B::Device,
    ) -> Self {
        let order = EpochOrder::sequential(dataset.len());
        Self {
            dataset,
            fill,
            packing,
            dropout,
            device,
            order,
            shard: (0, 1),
            start: 0,
            cursor: 0,
            pending: None,
            recent: VecDeque::new(),
        }
    }

    /// Read every epoch in a new order drawn from `(seed, epoch)`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.order = EpochOrder::shuffled(self.dataset.len(), seed);
        self
    }

    /// Read only shard `rank` of `peers` of the stream: every `peers`-th item from item
    /// `rank`, so that data-parallel peers read disjoint parts of the same shuffled order
    /// (each packing its own token budget from its part).
    pub fn sharded(mut self, rank: usize, peers: usize) -> Self {
        self.shard = (rank as u64, peers.max(1) as u64);
        self
    }

    /// Position in this source's shard of the next item to consider (items skipped or
    /// packed so far; the stream position on one device).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The stream index of the item at the cursor.
    fn stream_index(&self) -> u64 {
        let (rank, peers) = self.shard;
        self.start + self.cursor * peers + rank
    }

    /// The data set index of the item at the cursor.
    fn index_at_cursor(&mut self) -> Option<usize> {
        self.order.item(self.stream_index())
    }

    /// The item at the cursor (read once, kept until it is added or skipped).
    fn peek(&mut self) -> Result<&TrainItem, BoxError> {
        if self.pending.is_none() {
            let index = self.index_at_cursor().ok_or("the data set is empty")?;
            self.pending = Some(self.dataset.get(index)?);
        }
        Ok(self.pending.as_ref().expect("just read"))
    }

    fn consume(&mut self) -> TrainItem {
        self.cursor += 1;
        self.pending.take().expect("peeked before consuming")
    }
}

impl<D: Dataset, B: Backend> DataSource for PackedBatches<D, B> {
    type Batch = TrainBatch<B>;

    fn batch(&mut self, position: u64, rng: &mut TrainRng) -> Result<TrainBatch<B>, BoxError> {
        if !self.fill.is_valid() {
            return Err(format!("invalid batch fill {:?}", self.fill).into());
        }
        let max_budget = match self.fill {
            BatchFill::Samples(_) => usize::MAX,
            BatchFill::Tokens { max, .. } => max,
        };
        let (mut samples, mut images, mut vit_targets) = (Vec::new(), Vec::new(), Vec::new());
        let (mut tokens, mut skipped) = (0usize, 0u64);
        let mut indexes = Vec::new();
        loop {
            let full = match self.fill {
                BatchFill::Samples(n) => samples.len() >= n,
                BatchFill::Tokens { expected, .. } => tokens >= expected,
            };
            if full {
                break;
            }
            let packing = self.packing.clone();
            // Undropped length: dropout is drawn only once the item is added, so the
            // decision never depends on a draw that a resumed run would redo.
            let len = match self.peek()?.sample.token_count(&packing) {
                Ok(len) if len <= max_budget => Some(len),
                Ok(_) | Err(PackError::SampleTooLong { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let Some(len) = len else {
                self.consume();
                skipped += 1;
                if skipped > self.dataset.len() as u64 {
                    return Err(format!(
                        "every sample is longer than the maximum ({} tokens per sample, {max_budget} per pack)",
                        packing.max_sample_tokens
                    )
                    .into());
                }
                continue;
            };
            if tokens > 0 && tokens + len > max_budget {
                break;
            }
            indexes.extend(self.index_at_cursor());
            let mut item = self.consume();
            let drop = self.dropout.decide(rng)?;
            match &mut item.sample {
                Sample::TextToImage { drop_prompt, .. } => *drop_prompt = drop.text,
                Sample::Edit { dropout, .. } => {
                    dropout.instruction = drop.text;
                    dropout.source_vit = drop.vit;
                    dropout.source_vae = drop.vae;
                }
                Sample::Understanding { .. } | Sample::Custom(_) => {}
            }
            tokens += item.sample.token_count(&packing)?;
            images.extend(
                item_images(&item)
                    .into_iter()
                    .map(|image| upload(image, &self.device)),
            );
            vit_targets.extend(
                item_vit_target(&item)
                    .into_iter()
                    .map(|image| upload(image, &self.device)),
            );
            samples.push(item.sample);
        }
        let pack = PackedSequence::pack(&samples, &self.packing)?;
        if self.recent.len() == RECENT_POSITIONS {
            self.recent.pop_front();
        }
        self.recent.push_back((position, indexes));
        Ok(TrainBatch {
            pack,
            images,
            vit_targets,
            skipped,
        })
    }

    fn state(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "cursor": self.cursor, "start": self.start }))
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), BoxError> {
        let (start, cursor) = stream_state(state)?;
        self.start = start;
        self.cursor = cursor;
        self.pending = None;
        Ok(())
    }

    /// The stream continues at the first item that some saved peer had not yet consumed
    /// (peer `i` of `n` consumed its items below `start + cursor * n + i`), divided anew
    /// among `peers` from there. No item is skipped; the items that the peers ahead had
    /// consumed beyond that point (at most their lead, about one micro-batch each under a
    /// token budget) are read a second time.
    fn reshard(
        &self,
        saved: &[serde_json::Value],
        // Every new peer starts at the same point; its shard is the one it was built with.
        _rank: usize,
        _peers: usize,
    ) -> Result<serde_json::Value, BoxError> {
        let n = saved.len() as u64;
        let mut next = None::<u64>;
        for (i, state) in (0u64..).zip(saved) {
            let (start, cursor) = stream_state(state)?;
            let peer_next = start + cursor * n + i;
            next = Some(next.map_or(peer_next, |m| m.min(peer_next)));
        }
        let start = next.ok_or("no saved data state to re-divide")?;
        Ok(serde_json::json!({ "cursor": 0, "start": start }))
    }

    /// The data set indexes of the micro-batch's items (`item 17`), for the latest
    /// micro-batches read; none for a position not read recently.
    fn sample_ids(&self, position: u64) -> Vec<String> {
        self.recent
            .iter()
            .rev()
            .find(|(p, _)| *p == position)
            .map(|(_, indexes)| indexes.iter().map(|i| format!("item {i}")).collect())
            .unwrap_or_default()
    }
}

/// The pixels behind an item's image splits, in plan order: a ViT split takes the ViT-side
/// copy of the source (or of the item's only image), a clean VAE split its VAE-side copy,
/// a noised split the target's VAE-side copy.
pub fn item_images(item: &TrainItem) -> Vec<&RgbImage> {
    let condition = item.source.as_ref().unwrap_or(&item.target);
    item.sample
        .plan()
        .iter()
        .filter_map(|spec| match spec {
            SplitSpec::VitImage(_) => Some(&condition.vit),
            SplitSpec::VaeImage(_) => Some(&condition.vae),
            SplitSpec::NoisedImage(_) => Some(&item.target.vae),
            _ => None,
        })
        .collect()
}

/// The ViT-side copy of the item's target when it has a metaquery split: the visual
/// loss's target.
pub fn item_vit_target(item: &TrainItem) -> Option<&RgbImage> {
    item.sample
        .plan()
        .iter()
        .any(|spec| matches!(spec, SplitSpec::Metaqueries))
        .then_some(&item.target.vit)
}

fn upload<B: Backend>(image: &RgbImage, device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(
        TensorData::new(image.data.clone(), [3, image.height, image.width]),
        device,
    )
}

/// `(start, cursor)` of a [`PackedBatches`] state (`start` is absent, 0, in states written
/// before resharding existed).
fn stream_state(state: &serde_json::Value) -> Result<(u64, u64), BoxError> {
    let field = |key: &str| state.get(key).map(serde_json::Value::as_u64);
    let cursor = field("cursor")
        .flatten()
        .ok_or_else(|| format!("data state {state} has no `cursor`"))?;
    let start = match field("start") {
        None => 0,
        Some(start) => {
            start.ok_or_else(|| format!("data state {state}: `start` is not a count"))?
        }
    };
    Ok((start, cursor))
}
