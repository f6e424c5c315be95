//! Host-side tiling of a pack's attention into (query block, key block) tiles.
//!
//! Built once per forward from the samples' segments and shared by every layer (and by the
//! backward passes, through an `Arc`). A tile is skipped when no query row of it sees any
//! of its keys (other samples, the causal upper triangle, noised splits hidden from later
//! splits, supervision splits), computed without a mask when every pair is visible, and
//! with a `[rows, cols]` mask otherwise (tiles crossing a segment boundary or the diagonal).

use std::ops::Range;

use super::SampleAttention;

/// One computed tile of a query block: a key block and how it is masked.
#[derive(Debug)]
pub(crate) struct Tile {
    /// Index of the key block.
    pub(crate) k_block: usize,
    /// `None` when every pair is visible; otherwise row-major `[q rows, k cols]` of the
    /// tile, `true` = masked.
    pub(crate) mask: Option<Vec<bool>>,
}

/// The tiles of one pack, per query block.
#[derive(Debug)]
pub(crate) struct TilePlan {
    len: usize,
    block_q: usize,
    block_k: usize,
    /// Per query block, the key tiles that are not entirely masked, in key order.
    rows: Vec<Vec<Tile>>,
}

impl TilePlan {
    /// Plan a pack of `len` tokens made of `samples` (validated to tile `0..len`).
    /// `block_q`, `block_k` > 0.
    pub(crate) fn new(
        samples: &[SampleAttention],
        len: usize,
        block_q: usize,
        block_k: usize,
    ) -> Self {
        // Visible key ranges of every row, in pack coordinates (flat, with row offsets).
        let mut offsets = Vec::with_capacity(len + 1);
        let mut ranges: Vec<Range<usize>> = Vec::new();
        offsets.push(0);
        for sample in samples {
            let base = sample.start();
            sample.for_each_row(|_, row_ranges| {
                ranges.extend(row_ranges.iter().map(|r| base + r.start..base + r.end));
                offsets.push(ranges.len());
            });
        }
        debug_assert_eq!(offsets.len(), len + 1);
        let row_ranges = |row: usize| &ranges[offsets[row]..offsets[row + 1]];

        let num_k = len.div_ceil(block_k);
        let mut visible = vec![0usize; num_k];
        let rows = (0..len.div_ceil(block_q))
            .map(|qb| {
                let q_rows = block_range(qb, block_q, len);
                visible.fill(0);
                for row in q_rows.clone() {
                    for r in row_ranges(row) {
                        for (kb, count) in visible
                            .iter_mut()
                            .enumerate()
                            .take(r.end.div_ceil(block_k))
                            .skip(r.start / block_k)
                        {
                            *count += overlap(r, &block_range(kb, block_k, len));
                        }
                    }
                }
                visible
                    .iter()
                    .enumerate()
                    .filter(|&(_, &count)| count > 0)
                    .map(|(kb, &count)| {
                        let k_cols = block_range(kb, block_k, len);
                        let full = count == q_rows.len() * k_cols.len();
                        Tile {
                            k_block: kb,
                            mask: (!full)
                                .then(|| tile_mask(q_rows.clone(), k_cols, |row| row_ranges(row))),
                        }
                    })
                    .collect()
            })
            .collect();
        Self {
            len,
            block_q,
            block_k,
            rows,
        }
    }

    /// Number of query blocks.
    pub(crate) fn num_q_blocks(&self) -> usize {
        self.rows.len()
    }

    /// Number of key blocks.
    pub(crate) fn num_k_blocks(&self) -> usize {
        self.len.div_ceil(self.block_k)
    }

    /// Rows of query block `qb` (the last block may be shorter).
    pub(crate) fn q_rows(&self, qb: usize) -> Range<usize> {
        block_range(qb, self.block_q, self.len)
    }

    /// Columns of key block `kb` (the last block may be shorter).
    pub(crate) fn k_cols(&self, kb: usize) -> Range<usize> {
        block_range(kb, self.block_k, self.len)
    }

    /// The computed tiles of query block `qb`, in key order.
    pub(crate) fn tiles(&self, qb: usize) -> &[Tile] {
        &self.rows[qb]
    }
}

fn block_range(block: usize, size: usize, len: usize) -> Range<usize> {
    block * size..((block + 1) * size).min(len)
}

fn overlap(a: &Range<usize>, b: &Range<usize>) -> usize {
    a.end.min(b.end).saturating_sub(a.start.max(b.start))
}

fn tile_mask<'a>(
    q_rows: Range<usize>,
    k_cols: Range<usize>,
    row_ranges: impl Fn(usize) -> &'a [Range<usize>],
) -> Vec<bool> {
    let width = k_cols.len();
    let mut masked = vec![true; q_rows.len() * width];
    for (i, row) in q_rows.enumerate() {
        for r in row_ranges(row) {
            let (a, b) = (r.start.max(k_cols.start), r.end.min(k_cols.end));
            if a < b {
                masked[i * width + a - k_cols.start..i * width + b - k_cols.start].fill(false);
            }
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::AttnSegment;

    fn count(plan: &TilePlan) -> (usize, usize) {
        let tiles = (0..plan.num_q_blocks()).flat_map(|qb| plan.tiles(qb));
        let (mut full, mut partial) = (0, 0);
        for t in tiles {
            match t.mask {
                None => full += 1,
                Some(_) => partial += 1,
            }
        }
        (full, partial)
    }

    /// A causal sample of 10 tokens in blocks of 3 (not dividing 10): the 6 upper tiles are
    /// skipped, the 3 diagonal 3x3 tiles are masked, the 6 lower ones and the last 1x1
    /// diagonal tile are full.
    #[test]
    fn causal_skips_upper_triangle() {
        let plan = TilePlan::new(&[SampleAttention::causal(0, 10)], 10, 3, 3);
        assert_eq!((plan.num_q_blocks(), plan.num_k_blocks()), (4, 4));
        assert_eq!(count(&plan), (7, 3));
        assert_eq!(plan.q_rows(3), 9..10);
    }

    /// Two samples never see each other: the off-diagonal sample blocks are skipped, and a
    /// hidden (noised) segment's columns are skipped for the later segment's rows.
    #[test]
    fn hidden_blocks_are_skipped() {
        let plan = TilePlan::new(
            &[SampleAttention::full(0, 4), SampleAttention::full(4, 4)],
            8,
            4,
            4,
        );
        assert_eq!(count(&plan), (2, 0));
        let segments = vec![
            AttnSegment {
                start: 0,
                len: 4,
                causal_inside: false,
                sees: vec![],
            },
            AttnSegment {
                start: 4,
                len: 4,
                causal_inside: false,
                sees: vec![],
            },
        ];
        let sample = SampleAttention::new(0, segments).unwrap();
        let plan = TilePlan::new(&[sample], 8, 2, 2);
        let tiles: Vec<usize> = plan.tiles(2).iter().map(|t| t.k_block).collect();
        assert_eq!(tiles, [2, 3]);
    }
}
