//! Per-sequence key/value cache with a global memory budget.
//!
//! Every byte of KV memory is charged to a shared [`KvBudget`] when a sequence grows and
//! returned when the sequence is dropped, so "memory returns to idle after the clients go
//! away" is a property that can be checked (`KvBudget::used_bytes`). A sequence that cannot
//! grow gets an error, never an abort. The paged, prefix-sharing allocator of the engine
//! speed work replaces the storage here; the budget contract stays.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use half::f16;

/// Tokens of capacity added at a time, so growth does not reallocate every step.
const GROWTH_TOKENS: usize = 64;

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

#[derive(Debug, Clone, Copy)]
pub struct KvShape {
    pub layers: usize,
    /// `n_kv_heads * head_dim`.
    pub kv_dim: usize,
}

impl KvShape {
    pub fn bytes_per_token(&self) -> usize {
        self.layers * self.kv_dim * 2 * std::mem::size_of::<f16>()
    }
}

#[derive(Debug)]
pub struct LayerKv {
    pub k: Vec<f16>,
    pub v: Vec<f16>,
}

/// The cache of one sequence: `len` positions filled in every layer.
#[derive(Debug)]
pub struct SeqKv {
    shape: KvShape,
    pub layers: Vec<LayerKv>,
    len: usize,
    capacity: usize,
    charged: usize,
    budget: Arc<KvBudget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvExhausted;

impl SeqKv {
    pub fn new(shape: KvShape, budget: Arc<KvBudget>) -> Self {
        let layers = (0..shape.layers)
            .map(|_| LayerKv {
                k: Vec::new(),
                v: Vec::new(),
            })
            .collect();
        Self {
            shape,
            layers,
            len: 0,
            capacity: 0,
            charged: 0,
            budget,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes room for `extra` more positions, charging the budget.
    pub fn reserve(&mut self, extra: usize) -> Result<(), KvExhausted> {
        let needed = self.len + extra;
        if needed <= self.capacity {
            return Ok(());
        }
        let new_capacity = needed.div_ceil(GROWTH_TOKENS) * GROWTH_TOKENS;
        let bytes = (new_capacity - self.capacity) * self.shape.bytes_per_token();
        if !self.budget.try_charge(bytes) {
            return Err(KvExhausted);
        }
        self.charged += bytes;
        self.capacity = new_capacity;
        let elems = new_capacity * self.shape.kv_dim;
        for l in &mut self.layers {
            l.k.resize(elems, f16::ZERO);
            l.v.resize(elems, f16::ZERO);
        }
        Ok(())
    }

    /// Marks `n` more positions as filled (after every layer has written them).
    pub fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.capacity);
    }

    pub fn kv_dim(&self) -> usize {
        self.shape.kv_dim
    }

    /// Bytes of the model's KV budget this cache holds.
    pub fn charged_bytes(&self) -> usize {
        self.charged
    }

    /// Fills this empty cache with the first `n` positions of `other` (same model).
    pub fn copy_prefix(&mut self, other: &SeqKv, n: usize) -> Result<(), KvExhausted> {
        let n = n.min(other.len);
        self.reserve(n)?;
        let elems = n * self.shape.kv_dim;
        for (dst, src) in self.layers.iter_mut().zip(&other.layers) {
            dst.k[..elems].copy_from_slice(&src.k[..elems]);
            dst.v[..elems].copy_from_slice(&src.v[..elems]);
        }
        self.len = n;
        Ok(())
    }
}

impl Drop for SeqKv {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_charged_and_returned() {
        let shape = KvShape {
            layers: 2,
            kv_dim: 8,
        };
        let budget = KvBudget::new(shape.bytes_per_token() * 128);
        let mut a = SeqKv::new(shape, budget.clone());
        a.reserve(10).unwrap();
        assert_eq!(budget.used_bytes(), 64 * shape.bytes_per_token());
        let mut b = SeqKv::new(shape, budget.clone());
        b.reserve(64).unwrap();
        let mut c = SeqKv::new(shape, budget.clone());
        assert_eq!(c.reserve(1), Err(KvExhausted));
        drop(a);
        c.reserve(1).unwrap();
        drop(b);
        drop(c);
        assert_eq!(budget.used_bytes(), 0);
    }
}
