//! Building blocks shared by the architecture files: tensor lookup and causal attention over
//! the KV cache.

use basalt_gguf::GgufFile;
use half::f16;

use super::BatchSeq;
use crate::kernels::quant::{axpy_f16_heads, dot_f16_queries};
use crate::kernels::{rms_norm, ActScratch, QMatrix, Rope};
use crate::kv::LayerView;
use crate::EngineError;

/// Looks tensors up by name in an open GGUF file.
pub struct TensorSource<'a> {
    pub file: &'a GgufFile,
}

impl TensorSource<'_> {
    pub fn matrix(&self, name: &str) -> Result<QMatrix, EngineError> {
        let info = self
            .file
            .header()
            .tensor(name)
            .ok_or_else(|| EngineError::Model(format!("tensor `{name}` is missing")))?;
        let bytes = self
            .file
            .tensor_bytes(info)
            .map_err(|e| EngineError::Model(e.to_string()))?;
        QMatrix::new(info, bytes)
    }

    pub fn optional_matrix(&self, name: &str) -> Result<Option<QMatrix>, EngineError> {
        if self.file.header().tensor(name).is_some() {
            self.matrix(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A vector (norm weights), decoded to f32 once at load.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, EngineError> {
        let v = self.matrix(name)?.to_f32_vec();
        if v.len() != len {
            return Err(EngineError::Model(format!(
                "tensor `{name}` has {} elements, expected {len}",
                v.len()
            )));
        }
        Ok(v)
    }

    /// Checks a matrix's shape against what the architecture's hyper-parameters imply, so a
    /// malformed file is a load error instead of an out-of-bounds slice later.
    pub fn checked(&self, name: &str, cols: usize, rows: usize) -> Result<QMatrix, EngineError> {
        let m = self.matrix(name)?;
        if m.cols != cols || m.rows != rows {
            return Err(EngineError::Model(format!(
                "tensor `{name}` is {}x{}, expected {cols}x{rows}",
                m.cols, m.rows
            )));
        }
        Ok(m)
    }
}

/// The attention geometry of one layer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplier applied to `q . k`.
    pub scale: f32,
    /// Sliding-window size: a query at position p sees keys at positions > p - window.
    pub window: Option<usize>,
    /// Gemma 2's soft cap on scaled scores: `cap * tanh(score / cap)`.
    pub soft_cap: Option<f32>,
}

/// Causal attention at position `pos` over the cache, for the `G` query heads that share
/// KV head `kv_head`: `q` and `out` hold their `G` rows of `head_dim`. Each key and value
/// is converted from f16 once for the `G` heads; every head's scores and output are what
/// it would get alone (see [`dot_f16_queries`]), so grouping changes no result.
fn attend_group<const G: usize>(
    layer: LayerView<'_>,
    shape: AttentionShape,
    pos: usize,
    kv_head: usize,
    q: &[f32],
    out: &mut [f32],
) {
    let AttentionShape {
        n_kv_heads,
        head_dim,
        scale,
        window,
        soft_cap,
        ..
    } = shape;
    let kv_dim = n_kv_heads * head_dim;
    let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
    // llama.cpp multiplies an f16 cache by f16 operands: the query is rounded to f16 before
    // q.k, and the attention weights before weights.v. Doing the same keeps logits within
    // float-summation noise of it.
    let mut q16 = [[0f32; MAX_HEAD_DIM]; G];
    for (q16, q) in q16.iter_mut().zip(q.chunks_exact(head_dim)) {
        for (d, s) in q16.iter_mut().zip(q) {
            *d = round_f16(*s);
        }
    }
    let queries: [&[f32]; G] = std::array::from_fn(|g| &q16[g][..head_dim]);
    let n = pos + 1 - first;
    // Head g's scores at g * n.
    let mut scores = vec![0f32; G * n];
    let offset = kv_head * head_dim;
    let mut j = 0;
    layer.for_each_run(false, first, pos, |_, keys| {
        // Two keys at a time: independent chains for the core to overlap.
        let mut pairs = keys.chunks_exact(2 * kv_dim);
        for pair in pairs.by_ref() {
            let k = |i: usize| &pair[i * kv_dim + offset..][..head_dim];
            for (i, s) in dot_f16_queries([k(0), k(1)], queries).iter().enumerate() {
                for (g, s) in s.iter().enumerate() {
                    scores[g * n + j + i] = s * scale;
                }
            }
            j += 2;
        }
        for key in pairs.remainder().chunks_exact(kv_dim) {
            let [s] = dot_f16_queries([&key[offset..][..head_dim]], queries);
            for (g, s) in s.iter().enumerate() {
                scores[g * n + j] = s * scale;
            }
            j += 1;
        }
    });
    if let Some(cap) = soft_cap {
        for s in scores.iter_mut() {
            *s = cap * (*s / cap).tanh();
        }
    }
    for head in scores.chunks_exact_mut(n) {
        crate::kernels::softmax(head);
    }
    out.fill(0.0);
    let mut j = 0;
    layer.for_each_run(true, first, pos, |_, values| {
        // Four positions at a time, added in order as one at a time would add them.
        let mut quads = values.chunks_exact(4 * kv_dim);
        for quad in quads.by_ref() {
            let v = |i: usize| &quad[i * kv_dim + offset..][..head_dim];
            let weights: [[f32; 4]; G] =
                std::array::from_fn(|g| std::array::from_fn(|i| round_f16(scores[g * n + j + i])));
            axpy_f16_heads(out, head_dim, weights, [v(0), v(1), v(2), v(3)]);
            j += 4;
        }
        for value in quads.remainder().chunks_exact(kv_dim) {
            let weights: [[f32; 1]; G] = std::array::from_fn(|g| [round_f16(scores[g * n + j])]);
            axpy_f16_heads(out, head_dim, weights, [&value[offset..][..head_dim]]);
            j += 1;
        }
    });
}

/// Longest head the attention supports (the models we load use 64 to 256).
pub const MAX_HEAD_DIM: usize = 512;

/// Attention for a batch of sequences at once: `parts[s] = (first row, rows, pos0)` of
/// sequence `s`, whose cache is `caches[s]`. Every (token, head) pair is an independent
/// task, spread over the compute pool when the batch is large enough (prefill, many
/// sequences decoding together).
pub fn attention_batch(
    caches: &[LayerView<'_>],
    parts: &[(usize, usize, usize)],
    shape: AttentionShape,
    q: &[f32],
    out: &mut [f32],
) {
    let (n_heads, head_dim) = (shape.n_heads, shape.head_dim);
    if head_dim == 0 || head_dim > MAX_HEAD_DIM || n_heads == 0 {
        out.fill(0.0);
        return;
    }
    // Row r belongs to sequence `owner[r]`, at position pos0 + (r - first).
    let mut owner = Vec::with_capacity(q.len() / (n_heads * head_dim));
    let mut work = 0;
    for (s, &(first, rows, pos0)) in parts.iter().enumerate() {
        for t in 0..rows {
            owner.push((s, pos0 + t));
            let span = shape.window.map_or(pos0 + t + 1, |w| w.min(pos0 + t + 1));
            work += span * n_heads * head_dim * 2;
        }
        debug_assert_eq!(owner.len(), first + rows);
    }
    // One task per (token, KV head): the query heads sharing a KV head go together, so
    // each cached key and value is converted once for all of them. With too few such
    // tasks to keep the pool busy (one sequence decoding, a model with one KV head), and
    // for group sizes without a specialisation, one task per head instead: the results
    // are the same either way (see `attend_group`).
    let group = (n_heads / shape.n_kv_heads.max(1)).max(1);
    let grouped_tasks = owner.len() * shape.n_kv_heads;
    let heads_per_task = if grouped_tasks >= 4 * crate::kernels::compute_threads() {
        group
    } else {
        1
    };
    macro_rules! by_group {
        ($g:literal) => {
            crate::kernels::for_each_chunk(out, $g * head_dim, work, |i, o| {
                let (row, first_head) = (i / (n_heads / $g), i % (n_heads / $g) * $g);
                let q_rows = q.get(i * $g * head_dim..(i + 1) * $g * head_dim);
                if let (Some(&(s, pos)), Some(q_rows)) = (owner.get(row), q_rows) {
                    attend_group::<$g>(caches[s], shape, pos, first_head / group, q_rows, o);
                }
            })
        };
    }
    match heads_per_task {
        4 if n_heads % 4 == 0 => by_group!(4),
        3 if n_heads % 3 == 0 => by_group!(3),
        2 if n_heads % 2 == 0 => by_group!(2),
        _ => by_group!(1),
    }
}

#[inline]
fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Where each sequence's tokens sit in a batch's flattened token rows.
pub struct Segments {
    /// (first row, row count, position of the first row) per sequence.
    parts: Vec<(usize, usize, usize)>,
}

impl Segments {
    fn of(batch: &[BatchSeq<'_>]) -> Self {
        let mut row = 0;
        let parts = batch
            .iter()
            .map(|b| {
                let part = (row, b.tokens.len(), b.kv.len());
                row += b.tokens.len();
                part
            })
            .collect();
        Self { parts }
    }

    /// The batch's tokens, flattened, and where each sequence's sit; `None` when there is
    /// nothing to run (an empty batch, or a sequence with no new tokens).
    pub fn of_batch(batch: &[BatchSeq<'_>]) -> Option<(Vec<u32>, Self)> {
        if batch.is_empty() || batch.iter().any(|b| b.tokens.is_empty()) {
            return None;
        }
        Some((Self::tokens(batch), Self::of(batch)))
    }

    fn tokens(batch: &[BatchSeq<'_>]) -> Vec<u32> {
        batch
            .iter()
            .flat_map(|b| b.tokens.iter().copied())
            .collect()
    }
}

/// The per-forward working buffers of a decoder layer, for `tokens` tokens.
pub struct Activations {
    pub tokens: usize,
    pub dim: usize,
    /// The residual stream, `tokens x dim`.
    pub x: Vec<f32>,
    pub h: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub att: Vec<f32>,
    pub proj: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
}

impl Activations {
    /// Looks the tokens up in the embedding table (times `scale`) and sizes the buffers.
    pub fn embed(
        table: &QMatrix,
        tokens: &[u32],
        scale: f32,
        q_dim: usize,
        kv_dim: usize,
        ffn_dim: usize,
    ) -> Self {
        let (n, dim) = (tokens.len(), table.cols);
        let mut x = vec![0f32; n * dim];
        for (row, &tok) in x.chunks_exact_mut(dim).zip(tokens) {
            table.dequantize_row(tok as usize, row);
            if scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Self {
            tokens: n,
            dim,
            x,
            h: vec![0f32; n * dim],
            q: vec![0f32; n * q_dim],
            k: vec![0f32; n * kv_dim],
            v: vec![0f32; n * kv_dim],
            att: vec![0f32; n * q_dim],
            proj: vec![0f32; n * dim],
            gate: vec![0f32; n * ffn_dim],
            up: vec![0f32; n * ffn_dim],
        }
    }

    /// `h = rms_norm(x) * weight`: the input of a sub-layer.
    pub fn normed_input(&mut self, weight: &[f32], eps: f32) {
        self.h.copy_from_slice(&self.x);
        rms_norm(&mut self.h, weight, eps);
    }

    /// `q`, `k`, `v` = `h` times the three projections, as one fused product.
    pub fn project_qkv(&mut self, [wq, wk, wv]: [&QMatrix; 3], scratch: &mut ActScratch) {
        let outs: &mut [&mut [f32]] = &mut [&mut self.q, &mut self.k, &mut self.v];
        QMatrix::matmul_shared_input(&[wq, wk, wv], &self.h, outs, scratch);
    }

    /// `gate`, `up` = `h` times the two feed-forward input projections, as one fused product.
    pub fn project_gate_up(&mut self, [gate, up]: [&QMatrix; 2], scratch: &mut ActScratch) {
        let outs: &mut [&mut [f32]] = &mut [&mut self.gate, &mut self.up];
        QMatrix::matmul_shared_input(&[gate, up], &self.h, outs, scratch);
    }

    /// Rotates this step's queries and keys, each row at its sequence position.
    pub fn rope(&mut self, rope: &Rope, head_dim: usize, segments: &Segments) {
        let (q_dim, kv_dim) = (self.q.len() / self.tokens, self.k.len() / self.tokens);
        for &(first, count, pos0) in &segments.parts {
            for i in 0..count {
                let t = first + i;
                rope.apply(&mut self.q[t * q_dim..(t + 1) * q_dim], head_dim, pos0 + i);
                rope.apply(
                    &mut self.k[t * kv_dim..(t + 1) * kv_dim],
                    head_dim,
                    pos0 + i,
                );
            }
        }
    }

    /// Stores each sequence's new keys and values in its cache for `layer`, then attends
    /// within each sequence; the result lands in `att`.
    pub fn attend(
        &mut self,
        batch: &mut [BatchSeq<'_>],
        segments: &Segments,
        layer: usize,
        shape: AttentionShape,
    ) {
        let kv_dim = self.k.len() / self.tokens;
        for (seq, &(first, count, pos0)) in batch.iter_mut().zip(&segments.parts) {
            let (r0, r1) = (first, first + count);
            seq.kv.store(
                layer,
                pos0,
                &self.k[r0 * kv_dim..r1 * kv_dim],
                &self.v[r0 * kv_dim..r1 * kv_dim],
            );
        }
        let caches: Vec<LayerView<'_>> = batch.iter().map(|s| s.kv.layer(layer)).collect();
        attention_batch(&caches, &segments.parts, shape, &self.q, &mut self.att);
    }

    /// Marks the batch's tokens as cached, then applies the final norm and output
    /// projection to each sequence's last token.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &mut self,
        batch: &mut [BatchSeq<'_>],
        segments: &Segments,
        norm: &[f32],
        eps: f32,
        output: &QMatrix,
        scratch: &mut ActScratch,
        logits: &mut [f32],
    ) {
        for seq in batch.iter_mut() {
            seq.kv.advance(seq.tokens.len());
        }
        let dim = self.dim;
        let mut last = Vec::with_capacity(segments.parts.len() * dim);
        for &(first, count, _) in &segments.parts {
            last.extend_from_slice(&self.x[(first + count - 1) * dim..(first + count) * dim]);
        }
        rms_norm(&mut last, norm, eps);
        output.matmul(
            &last,
            &mut logits[..segments.parts.len() * output.rows],
            scratch,
        );
    }
}
