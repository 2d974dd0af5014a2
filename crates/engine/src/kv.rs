//! The paged key/value cache: fixed-size blocks charged to a per-model memory budget.
//!
//! A sequence's cache is a table of blocks, each holding [`BLOCK_TOKENS`] positions of every
//! layer's keys and values. Blocks are reference-counted so that sequences whose prompts
//! start with the same tokens can hold the same full blocks (the prefix cache hands them
//! out); a block is written only while its one owner is still filling it, and a full block
//! never changes again.
//!
//! Every block is charged to the shared [`KvBudget`] when it is allocated and returned when
//! its last holder lets go, so "memory returns to idle after the clients go away" is a
//! property that can be checked (`KvBudget::used_bytes`). A sequence that cannot grow gets
//! an error, never an abort.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use half::f16;

/// Positions per block: the unit of allocation and of prefix sharing.
pub const BLOCK_TOKENS: usize = 16;

#[derive(Debug)]
pub struct KvBudget {
    limit: usize,
    used: AtomicUsize,
}

impl KvBudget {
    pub fn new(limit_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit_bytes,
            used: AtomicUsize::new(0),
        })
    }

    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit
    }

    fn try_charge(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    /// `n_kv_heads * head_dim`.
    pub kv_dim: usize,
}

impl KvShape {
    pub fn bytes_per_token(&self) -> usize {
        self.layers * self.kv_dim * 2 * std::mem::size_of::<f16>()
    }

    pub fn bytes_per_block(&self) -> usize {
        self.bytes_per_token() * BLOCK_TOKENS
    }

    /// f16 values of one layer's keys (or values) in a block.
    fn plane(&self) -> usize {
        BLOCK_TOKENS * self.kv_dim
    }
}

/// [`BLOCK_TOKENS`] positions of every layer's keys and values, laid out layer by layer,
/// keys then values, position by position: `[layer][k | v][position][kv_dim]`.
#[derive(Debug)]
pub struct KvBlock {
    data: Vec<f16>,
    budget: Arc<KvBudget>,
    bytes: usize,
}

impl KvBlock {
    fn allocate(shape: KvShape, budget: &Arc<KvBudget>) -> Result<Self, KvExhausted> {
        let bytes = shape.bytes_per_block();
        if !budget.try_charge(bytes) {
            return Err(KvExhausted);
        }
        Ok(Self {
            data: vec![f16::ZERO; shape.layers * 2 * shape.plane()],
            budget: Arc::clone(budget),
            bytes,
        })
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for KvBlock {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvExhausted;

/// The cache of one sequence: `len` positions filled in every layer, held in `blocks`.
#[derive(Debug)]
pub struct SeqKv {
    shape: KvShape,
    blocks: Vec<Arc<KvBlock>>,
    len: usize,
    budget: Arc<KvBudget>,
}

impl SeqKv {
    pub fn new(shape: KvShape, budget: Arc<KvBudget>) -> Self {
        Self {
            shape,
            blocks: Vec::new(),
            len: 0,
            budget,
        }
    }

    /// A cache whose first positions are the given full blocks (a cached prefix), shared.
    pub fn from_prefix(shape: KvShape, budget: Arc<KvBudget>, blocks: Vec<Arc<KvBlock>>) -> Self {
        let len = blocks.len() * BLOCK_TOKENS;
        Self {
            shape,
            blocks,
            len,
            budget,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn kv_dim(&self) -> usize {
        self.shape.kv_dim
    }

    /// The blocks, in position order; block `i` holds positions `i * BLOCK_TOKENS..`.
    pub fn blocks(&self) -> &[Arc<KvBlock>] {
        &self.blocks
    }

    /// Replaces full block `index` by `block`: the prefix cache's block for the same tokens
    /// after the same prefix, which holds the same keys and values (every kernel computes a
    /// position exactly as it would in any other batch or chunk), so that sequences that
    /// computed the same prefix at the same time end up sharing one copy.
    pub fn share_block(&mut self, index: usize, block: Arc<KvBlock>) {
        if (index + 1) * BLOCK_TOKENS <= self.len {
            if let Some(slot) = self.blocks.get_mut(index) {
                *slot = block;
            }
        }
    }

    /// Makes room for `extra` more positions, allocating (and charging) blocks.
    pub fn reserve(&mut self, extra: usize) -> Result<(), KvExhausted> {
        let needed = (self.len + extra).div_ceil(BLOCK_TOKENS);
        while self.blocks.len() < needed {
            let block = KvBlock::allocate(self.shape, &self.budget)?;
            self.blocks.push(Arc::new(block));
        }
        Ok(())
    }

    /// Marks `n` more positions as filled (after every layer has written them).
    pub fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.blocks.len() * BLOCK_TOKENS);
    }

    /// Writes `rows` positions of keys and values (`k`, `v`: `rows x kv_dim`) for `layer`,
    /// starting at position `pos0`. The room must have been reserved; rows beyond it are
    /// ignored.
    pub fn store(&mut self, layer: usize, pos0: usize, k: &[f32], v: &[f32]) {
        let (kv_dim, plane) = (self.shape.kv_dim, self.shape.plane());
        if kv_dim == 0 {
            return;
        }
        for (row, (k_row, v_row)) in k.chunks_exact(kv_dim).zip(v.chunks(kv_dim)).enumerate() {
            let pos = pos0 + row;
            let Some(block) = self.writable_block(pos / BLOCK_TOKENS) else {
                return;
            };
            let at = layer * 2 * plane + (pos % BLOCK_TOKENS) * kv_dim;
            for (dst, src) in block.data[at..at + kv_dim].iter_mut().zip(k_row) {
                *dst = f16::from_f32(*src);
            }
            let at = at + plane;
            for (dst, src) in block.data[at..at + kv_dim].iter_mut().zip(v_row) {
                *dst = f16::from_f32(*src);
            }
        }
    }

    /// Block `index`, which this sequence is about to write. Shared blocks are full and the
    /// scheduler never writes behind `len`, so the block is always this sequence's alone;
    /// should it not be, it is copied first (copy on write) rather than changed under
    /// another holder.
    fn writable_block(&mut self, index: usize) -> Option<&mut KvBlock> {
        let slot = self.blocks.get_mut(index)?;
        if Arc::get_mut(slot).is_none() {
            let copy = KvBlock {
                data: slot.data.clone(),
                budget: Arc::clone(&slot.budget),
                bytes: slot.bytes,
            };
            // The copy replaces a block already charged; charging it may overshoot the limit
            // by one block, which is better than failing a write the plan promised.
            self.budget
                .used
                .fetch_add(copy.bytes, std::sync::atomic::Ordering::AcqRel);
            *slot = Arc::new(copy);
        }
        Arc::get_mut(slot)
    }

    /// Read access to one layer, for attention.
    pub fn layer(&self, layer: usize) -> LayerView<'_> {
        LayerView {
            blocks: &self.blocks,
            kv_dim: self.shape.kv_dim,
            offset: layer * 2 * self.shape.plane(),
            plane: self.shape.plane(),
        }
    }
}

/// One layer of one sequence's cache, position by position.
#[derive(Clone, Copy)]
pub struct LayerView<'a> {
    blocks: &'a [Arc<KvBlock>],
    kv_dim: usize,
    /// Where this layer's keys start in every block.
    offset: usize,
    plane: usize,
}

impl<'a> LayerView<'a> {
    /// Keys (or values, `values = true`) of positions `first..=last`, block by block: calls
    /// `f(position, rows)` with the `kv_dim`-wide rows of each block's part of the range.
    pub fn for_each_run(
        &self,
        values: bool,
        first: usize,
        last: usize,
        mut f: impl FnMut(usize, &'a [f16]),
    ) {
        let offset = self.offset + if values { self.plane } else { 0 };
        let mut pos = first;
        while pos <= last {
            let in_block = pos % BLOCK_TOKENS;
            let rows = (BLOCK_TOKENS - in_block).min(last + 1 - pos);
            let Some(block) = self.blocks.get(pos / BLOCK_TOKENS) else {
                return;
            };
            let start = offset + in_block * self.kv_dim;
            if let Some(run) = block.data.get(start..start + rows * self.kv_dim) {
                f(pos, run);
            }
            pos += rows;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: KvShape = KvShape {
        layers: 2,
        kv_dim: 8,
    };

    #[test]
    fn budget_is_charged_per_block_and_returned() {
        let block = SHAPE.bytes_per_block();
        let budget = KvBudget::new(block * 4);
        let mut a = SeqKv::new(SHAPE, budget.clone());
        a.reserve(10).unwrap();
        assert_eq!(budget.used_bytes(), block);
        a.advance(10);
        a.reserve(BLOCK_TOKENS).unwrap();
        assert_eq!(budget.used_bytes(), 2 * block);
        let mut b = SeqKv::new(SHAPE, budget.clone());
        b.reserve(2 * BLOCK_TOKENS).unwrap();
        let mut c = SeqKv::new(SHAPE, budget.clone());
        assert_eq!(c.reserve(1), Err(KvExhausted));
        drop(a);
        c.reserve(1).unwrap();
        drop(b);
        drop(c);
        assert_eq!(budget.used_bytes(), 0);
    }

    /// What was stored at a position reads back from it, across block boundaries, in every
    /// layer, keys and values apart.
    #[test]
    fn positions_read_back_across_blocks() {
        let budget = KvBudget::new(1 << 20);
        let mut kv = SeqKv::new(SHAPE, budget);
        let n = 2 * BLOCK_TOKENS + 5;
        kv.reserve(n).unwrap();
        // Distinct for every (layer, position, dimension, k or v), and exact in f16.
        let value = |layer: usize, pos: usize, d: usize, v: bool| {
            let x = (layer * 64 + pos) as f32 + d as f32 / 8.0;
            if v {
                -x
            } else {
                x
            }
        };
        for layer in 0..SHAPE.layers {
            // Written in two uneven chunks, like a chunked prefill.
            for (start, end) in [(0, 7), (7, n)] {
                let k: Vec<f32> = (start..end)
                    .flat_map(|p| (0..8).map(move |d| value(layer, p, d, false)))
                    .collect();
                let v: Vec<f32> = (start..end)
                    .flat_map(|p| (0..8).map(move |d| value(layer, p, d, true)))
                    .collect();
                kv.store(layer, start, &k, &v);
            }
        }
        kv.advance(n);
        for layer in 0..SHAPE.layers {
            for values in [false, true] {
                let mut seen = Vec::new();
                kv.layer(layer).for_each_run(values, 3, n - 1, |pos, rows| {
                    for (i, row) in rows.chunks(8).enumerate() {
                        for (d, x) in row.iter().enumerate() {
                            assert_eq!(x.to_f32(), value(layer, pos + i, d, values));
                        }
                        seen.push(pos + i);
                    }
                });
                assert_eq!(seen, (3..n).collect::<Vec<_>>());
            }
        }
    }

    /// A shared block is copied before it is written, so the other holder never sees the
    /// write.
    #[test]
    fn writing_a_shared_block_copies_it() {
        let budget = KvBudget::new(1 << 20);
        let mut a = SeqKv::new(SHAPE, budget.clone());
        a.reserve(BLOCK_TOKENS).unwrap();
        a.store(0, 0, &[1.0; 8], &[1.0; 8]);
        a.advance(BLOCK_TOKENS);
        let mut b = SeqKv::from_prefix(SHAPE, budget.clone(), a.blocks().to_vec());
        assert_eq!(budget.used_bytes(), SHAPE.bytes_per_block());
        b.store(0, 0, &[2.0; 8], &[2.0; 8]);
        let first = |kv: &SeqKv| {
            let mut x = 0.0;
            kv.layer(0)
                .for_each_run(false, 0, 0, |_, r| x = r[0].to_f32());
            x
        };
        assert_eq!((first(&a), first(&b)), (1.0, 2.0));
        drop((a, b));
        assert_eq!(budget.used_bytes(), 0);
    }
}
