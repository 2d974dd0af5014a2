//! [`QMatrix`]: a weight matrix kept in its GGUF encoding, and its products with a batch
//! of activations (quantised once per call into [`ActScratch`]), dispatched by format to
//! the block products in `quant` and driven over rows by `matmul`.

use basalt_gguf::{TensorBytes, TensorInfo, TensorType};
use half::{bf16, f16};
use rayon::prelude::*;

use super::blocks::*;
use super::matmul::*;
use super::pool::*;
use super::quant::*;
use crate::EngineError;

/// A weight matrix of `rows` rows of `cols` elements each, in its file encoding.
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub ty: TensorType,
    pub rows: usize,
    pub cols: usize,
    bytes: TensorBytes,
}

/// Reused buffers for quantised activations (one row per token).
#[derive(Default)]
pub struct ActScratch {
    q8_0: Vec<Vec<ActQ8_0>>,
    q8_1: Vec<Vec<ActQ8_1>>,
    q8_k: Vec<Vec<BlockQ8K>>,
    /// Activations rounded to bfloat16 (held as f32, exactly), for BF16 weights.
    bf16: Vec<Vec<f32>>,
}

pub(super) fn bad_layout(name: &str, ty: TensorType) -> EngineError {
    EngineError::Model(format!(
        "tensor `{name}` ({}) is misaligned or has a partial block",
        ty.name()
    ))
}

impl QMatrix {
    pub fn new(info: &TensorInfo, bytes: TensorBytes) -> Result<Self, EngineError> {
        let (cols, rows) = match info.dims.as_slice() {
            [c] => (*c, 1),
            [c, r] => (*c, *r),
            _ => {
                return Err(EngineError::Model(format!(
                    "tensor `{}` is not a matrix",
                    info.name
                )))
            }
        };
        let m = Self {
            ty: info.ty,
            rows,
            cols,
            bytes,
        };
        // Check the encoding once here so the hot path can rely on it.
        let ok = match m.ty {
            TensorType::F32 => cast_blocks::<f32>(&m.bytes).is_some(),
            TensorType::F16 => cast_blocks::<f16>(&m.bytes).is_some(),
            TensorType::BF16 => cast_blocks::<bf16>(&m.bytes).is_some(),
            TensorType::Q4_0 => cast_blocks::<BlockQ4_0>(&m.bytes).is_some(),
            TensorType::Q4_1 => cast_blocks::<BlockQ4_1>(&m.bytes).is_some(),
            TensorType::Q5_0 => cast_blocks::<BlockQ5_0>(&m.bytes).is_some(),
            TensorType::Q5_1 => cast_blocks::<BlockQ5_1>(&m.bytes).is_some(),
            TensorType::Q8_0 => cast_blocks::<BlockQ8_0>(&m.bytes).is_some(),
            TensorType::IQ4NL => cast_blocks::<BlockIQ4NL>(&m.bytes).is_some(),
            TensorType::Q2K => cast_blocks::<BlockQ2K>(&m.bytes).is_some(),
            TensorType::Q3K => cast_blocks::<BlockQ3K>(&m.bytes).is_some(),
            TensorType::Q4K => cast_blocks::<BlockQ4K>(&m.bytes).is_some(),
            TensorType::Q5K => cast_blocks::<BlockQ5K>(&m.bytes).is_some(),
            TensorType::Q6K => cast_blocks::<BlockQ6K>(&m.bytes).is_some(),
            other => {
                return Err(EngineError::Model(format!(
                    "tensor `{}` uses {}, which the engine cannot compute with yet",
                    info.name,
                    other.name()
                )))
            }
        };
        if !ok {
            return Err(bad_layout(&info.name, info.ty));
        }
        Ok(m)
    }

    pub fn bytes_len(&self) -> usize {
        self.bytes.len()
    }

    /// Splits the matrix into consecutive bands of `rows[i]` rows each, sharing its bytes:
    /// the parts of a fused tensor (Phi 3's query-key-value and gate-up projections). The
    /// bands must cover every row.
    pub fn split_rows(&self, name: &str, rows: &[usize]) -> Result<Vec<QMatrix>, EngineError> {
        let wrong = || {
            EngineError::Model(format!(
                "tensor `{name}` has {} rows, which do not split as {rows:?}",
                self.rows
            ))
        };
        if rows.iter().sum::<usize>() != self.rows || self.rows == 0 {
            return Err(wrong());
        }
        // Every row holds whole blocks (checked at load), so bands keep the alignment.
        let row_bytes = self.bytes.len() / self.rows;
        let mut offset = 0;
        let mut parts = Vec::with_capacity(rows.len());
        for &n in rows {
            let bytes = self
                .bytes
                .slice(offset * row_bytes, n * row_bytes)
                .ok_or_else(wrong)?;
            parts.push(QMatrix {
                ty: self.ty,
                rows: n,
                cols: self.cols,
                bytes,
            });
            offset += n;
        }
        Ok(parts)
    }

    /// `out[t][r] = dot(row r, x[t])` for `t` rows of activations `x` (each `cols` long).
    pub fn matmul(&self, x: &[f32], out: &mut [f32], scratch: &mut ActScratch) {
        self.matmul_with(x, out, scratch, true);
    }

    /// The activation format this matrix's kernels read (`None`: float weights).
    fn activation_format(&self) -> Option<TensorType> {
        match self.ty {
            TensorType::Q4_0 | TensorType::Q5_0 | TensorType::Q8_0 | TensorType::IQ4NL => {
                Some(TensorType::Q8_0)
            }
            TensorType::Q4_1 | TensorType::Q5_1 => Some(TensorType::Q8_1),
            TensorType::Q2K
            | TensorType::Q3K
            | TensorType::Q4K
            | TensorType::Q5K
            | TensorType::Q6K => Some(TensorType::Q8K),
            TensorType::BF16 => Some(TensorType::BF16),
            _ => None,
        }
    }

    /// [`QMatrix::matmul`]; with `quantize` false, `scratch` already holds `x` quantised in
    /// this matrix's activation format (a product sharing its input with the previous one).
    fn matmul_with(&self, x: &[f32], out: &mut [f32], scratch: &mut ActScratch, quantize: bool) {
        let tokens = x.len() / self.cols;
        debug_assert_eq!(out.len(), tokens * self.rows);
        let bytes: &[u8] = &self.bytes;
        // `new` validated that these casts succeed; an empty slice can only result from a
        // bug, and then yields zeros rather than a panic.
        macro_rules! with_acts {
            ($block:ty, $acts:ident, $quantize:ident, $dot:ident) => {
                with_acts!(
                    $block,
                    $acts,
                    $quantize,
                    $dot,
                    |w: &[&[$block]; 4], a: &[_]| std::array::from_fn(|r| $dot(w[r], a)),
                    |w: &[&[$block]; 4], a: &[&[_]; 4]| {
                        tile_by_rows(*w, *a, |w: [&[$block]; 4], a: &[_]| {
                            w.map(|row| $dot(row, a))
                        })
                    }
                )
            };
            ($block:ty, $acts:ident, $quantize:ident, $dot:ident, $dot4:expr, $tile:expr) => {
                with_acts!(
                    $block,
                    $acts,
                    $quantize,
                    $dot,
                    $dot4,
                    $tile,
                    |w: &[&[$block]; 4], a: &[&[_]; 8]| tile8_by_quads(*w, *a, $tile)
                )
            };
            ($block:ty, $acts:ident, $quantize:ident, $dot:ident, $dot4:expr, $tile:expr, $tile8:expr) => {{
                let w = cast_blocks::<$block>(bytes).unwrap_or(&[]);
                let acts = &mut scratch.$acts;
                acts.resize_with(tokens, Vec::new);
                let rows = x.chunks_exact(self.cols);
                match pool().filter(|_| tokens > 1 && x.len() >= PARALLEL_MIN_WORK) {
                    _ if !quantize => {}
                    Some(pool) => pool.install(|| {
                        acts[..tokens]
                            .par_iter_mut()
                            .zip(x.par_chunks_exact(self.cols))
                            .for_each(|(a, row)| $quantize(row, a))
                    }),
                    None => acts
                        .iter_mut()
                        .zip(rows)
                        .for_each(|(a, row)| $quantize(row, a)),
                }
                let kernels = RowKernels {
                    dot: $dot,
                    dot4: $dot4,
                    tile: $tile,
                    tile8: $tile8,
                };
                matmul_rows(w, &acts[..tokens], self.rows, self.cols, out, &kernels);
            }};
        }
        match self.ty {
            TensorType::Q4_0 => {
                with_acts!(
                    BlockQ4_0,
                    q8_0,
                    quantize_q8_0,
                    dot_q4_0,
                    dot4_q4_0,
                    tile_q4_0,
                    tile8_q4_0
                )
            }
            TensorType::Q4_1 => {
                with_acts!(
                    BlockQ4_1,
                    q8_1,
                    quantize_q8_1,
                    dot_q4_1,
                    dot4_q4_1,
                    tile_q4_1,
                    tile8_q4_1
                )
            }
            TensorType::Q5_0 => {
                with_acts!(
                    BlockQ5_0,
                    q8_0,
                    quantize_q8_0,
                    dot_q5_0,
                    dot4_q5_0,
                    tile_q5_0,
                    tile8_q5_0
                )
            }
            TensorType::Q5_1 => with_acts!(BlockQ5_1, q8_1, quantize_q8_1, dot_q5_1),
            TensorType::Q8_0 => {
                with_acts!(
                    BlockQ8_0,
                    q8_0,
                    quantize_q8_0,
                    dot_q8_0,
                    dot4_q8_0,
                    tile_q8_0,
                    tile8_q8_0
                )
            }
            TensorType::IQ4NL => {
                with_acts!(
                    BlockIQ4NL,
                    q8_0,
                    quantize_q8_0,
                    dot_iq4_nl,
                    dot4_iq4_nl,
                    tile_iq4_nl,
                    tile8_iq4_nl
                )
            }
            TensorType::Q2K => with_acts!(
                BlockQ2K,
                q8_k,
                quantize_q8_k,
                dot_q2_k,
                dot4_q2_k,
                tile_q2_k
            ),
            TensorType::Q3K => with_acts!(
                BlockQ3K,
                q8_k,
                quantize_q8_k,
                dot_q3_k,
                dot4_q3_k,
                tile_q3_k
            ),
            TensorType::Q4K => {
                with_acts!(
                    BlockQ4K,
                    q8_k,
                    quantize_q8_k,
                    dot_q4_k,
                    dot4_q4_k,
                    tile_q4_k,
                    tile8_q4_k
                )
            }
            TensorType::Q5K => with_acts!(
                BlockQ5K,
                q8_k,
                quantize_q8_k,
                dot_q5_k,
                dot4_q5_k,
                tile_q5_k
            ),
            TensorType::Q6K => {
                with_acts!(
                    BlockQ6K,
                    q8_k,
                    quantize_q8_k,
                    dot_q6_k,
                    dot4_q6_k,
                    tile_q6_k,
                    tile8_q6_k
                )
            }
            TensorType::F32 => {
                let w = cast_blocks::<f32>(bytes).unwrap_or(&[]);
                for (r, wrow) in w.chunks_exact(self.cols).enumerate() {
                    for (t, xrow) in x.chunks_exact(self.cols).enumerate() {
                        out[t * self.rows + r] = dot_f32(wrow, xrow);
                    }
                }
            }
            TensorType::F16 => {
                let w = cast_blocks::<f16>(bytes).unwrap_or(&[]);
                for (r, wrow) in w.chunks_exact(self.cols).enumerate() {
                    for (t, xrow) in x.chunks_exact(self.cols).enumerate() {
                        out[t * self.rows + r] = dot_f16(wrow, xrow);
                    }
                }
            }
            // BF16 rows multiply activations rounded to bfloat16 (as llama.cpp does): each
            // product is exact, and the rows are split across the pool like a quant's.
            TensorType::BF16 => with_acts!(
                bf16,
                bf16,
                round_to_bf16,
                dot_bf16,
                |w: &[&[bf16]; 4], a: &[f32]| dot_rows_bf16(*w, a),
                |w: &[&[bf16]; 4], a: &[&[f32]; 4]| {
                    tile_by_rows(*w, *a, |w: [&[bf16]; 4], a: &[f32]| dot_rows_bf16(w, a))
                }
            ),
            // Rejected in `new`.
            _ => out.fill(0.0),
        }
    }

    /// Several products of the same input at once (`q`, `k`, `v`; `gate`, `up`):
    /// `outs[i] = x * mats[i]`. For one token the input is quantised once per activation
    /// format and all the matrices' rows are split across the compute pool as one piece of
    /// work, so the pool synchronises once instead of once per matrix (decode runs a few
    /// hundred products per token, and each hand-off between threads costs about as much as
    /// a small product). Every output is computed by the same one-row kernel as in
    /// [`QMatrix::matmul`], so the results are identical.
    pub fn matmul_shared_input(
        mats: &[&QMatrix],
        x: &[f32],
        outs: &mut [&mut [f32]],
        scratch: &mut ActScratch,
    ) {
        let cols = mats.first().map_or(0, |m| m.cols);
        let fusable = cols > 0
            && x.len() == cols
            && mats.len() == outs.len()
            && mats
                .iter()
                .zip(outs.iter())
                .all(|(m, out)| m.cols == cols && out.len() == m.rows && m.ty.block_layout().0 > 1);
        // Each activation format is quantised once, by the first product that reads it.
        let first_reader = |i: usize| {
            let format = mats[i].activation_format();
            format.is_none() || mats[..i].iter().all(|m| m.activation_format() != format)
        };
        if !fusable {
            let same_cols = mats.iter().all(|m| m.cols == cols);
            for (i, (m, out)) in mats.iter().zip(outs.iter_mut()).enumerate() {
                m.matmul_with(x, out, scratch, !same_cols || first_reader(i));
            }
            return;
        }
        for (i, m) in mats.iter().enumerate() {
            if first_reader(i) {
                m.quantize_activation(x, scratch);
            }
        }
        let total_rows: usize = mats.iter().map(|m| m.rows).sum();
        let acts: &ActScratch = scratch;
        let Some(pool) = pool().filter(|_| total_rows * cols >= PARALLEL_MIN_WORK) else {
            for (m, out) in mats.iter().zip(outs.iter_mut()) {
                m.one_token_rows(0, out, acts);
            }
            return;
        };
        let chunk_rows = total_rows
            .div_ceil(pool.current_num_threads() * 4)
            .max(16)
            .next_multiple_of(4);
        let mut tasks: Vec<(&QMatrix, usize, &mut [f32])> = Vec::new();
        for (m, out) in mats.iter().zip(outs.iter_mut()) {
            for (c, chunk) in out.chunks_mut(chunk_rows).enumerate() {
                tasks.push((m, c * chunk_rows, chunk));
            }
        }
        pool.install(|| {
            tasks
                .par_iter_mut()
                .for_each(|(m, first, out)| m.one_token_rows(*first, out, acts))
        });
    }

    /// Quantises one token's activation `x` into the format this matrix's kernel reads.
    fn quantize_activation(&self, x: &[f32], scratch: &mut ActScratch) {
        fn first<B>(rows: &mut Vec<Vec<B>>) -> &mut Vec<B> {
            if rows.is_empty() {
                rows.push(Vec::new());
            }
            &mut rows[0]
        }
        match self.ty {
            TensorType::Q4_0 | TensorType::Q5_0 | TensorType::Q8_0 | TensorType::IQ4NL => {
                quantize_q8_0(x, first(&mut scratch.q8_0))
            }
            TensorType::Q4_1 | TensorType::Q5_1 => quantize_q8_1(x, first(&mut scratch.q8_1)),
            TensorType::Q2K
            | TensorType::Q3K
            | TensorType::Q4K
            | TensorType::Q5K
            | TensorType::Q6K => quantize_q8_k(x, first(&mut scratch.q8_k)),
            TensorType::BF16 => round_to_bf16(x, first(&mut scratch.bf16)),
            _ => {}
        }
    }

    /// Rows `first..first + out.len()` against the one token whose activation
    /// [`QMatrix::quantize_activation`] left in `acts`; quantised formats only.
    fn one_token_rows(&self, first: usize, out: &mut [f32], acts: &ActScratch) {
        let bytes: &[u8] = &self.bytes;
        macro_rules! rows {
            ($block:ty, $acts:ident, $dot:ident) => {
                rows!($block, $acts, $dot, |w: &[&[$block]; 4], a: &[_]| {
                    std::array::from_fn(|r| $dot(w[r], a))
                })
            };
            ($block:ty, $acts:ident, $dot:ident, $dot4:expr) => {{
                let w = cast_blocks::<$block>(bytes).unwrap_or(&[]);
                let per_row = w.len() / self.rows.max(1);
                match acts.$acts.first() {
                    Some(a) if per_row > 0 && first + out.len() <= self.rows => {
                        one_token_rows(w, per_row, first, out, a, &$dot, &$dot4)
                    }
                    _ => out.fill(0.0),
                }
            }};
        }
        match self.ty {
            TensorType::Q4_0 => rows!(BlockQ4_0, q8_0, dot_q4_0, dot4_q4_0),
            TensorType::Q4_1 => rows!(BlockQ4_1, q8_1, dot_q4_1, dot4_q4_1),
            TensorType::Q5_0 => rows!(BlockQ5_0, q8_0, dot_q5_0, dot4_q5_0),
            TensorType::Q5_1 => rows!(BlockQ5_1, q8_1, dot_q5_1),
            TensorType::Q8_0 => rows!(BlockQ8_0, q8_0, dot_q8_0, dot4_q8_0),
            TensorType::IQ4NL => rows!(BlockIQ4NL, q8_0, dot_iq4_nl, dot4_iq4_nl),
            TensorType::Q2K => rows!(BlockQ2K, q8_k, dot_q2_k, dot4_q2_k),
            TensorType::Q3K => rows!(BlockQ3K, q8_k, dot_q3_k, dot4_q3_k),
            TensorType::Q4K => rows!(BlockQ4K, q8_k, dot_q4_k, dot4_q4_k),
            TensorType::Q5K => rows!(BlockQ5K, q8_k, dot_q5_k, dot4_q5_k),
            TensorType::Q6K => rows!(BlockQ6K, q8_k, dot_q6_k, dot4_q6_k),
            // Float weights are never fused (`matmul_shared_input` checks).
            _ => out.fill(0.0),
        }
    }

    /// Decodes row `r` into `out` (`cols` long): the embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (block_elems, block_bytes) = self.ty.block_layout();
        let row_bytes = self.cols / block_elems * block_bytes;
        let Some(bytes) = self.bytes.get(r * row_bytes..(r + 1) * row_bytes) else {
            out.fill(0.0);
            return;
        };
        match self.ty {
            TensorType::F32 => {
                for (o, v) in out.iter_mut().zip(cast_blocks::<f32>(bytes).unwrap_or(&[])) {
                    *o = *v;
                }
            }
            TensorType::F16 => {
                for (o, v) in out.iter_mut().zip(cast_blocks::<f16>(bytes).unwrap_or(&[])) {
                    *o = v.to_f32();
                }
            }
            TensorType::BF16 => {
                for (o, v) in out
                    .iter_mut()
                    .zip(cast_blocks::<bf16>(bytes).unwrap_or(&[]))
                {
                    *o = v.to_f32();
                }
            }
            TensorType::Q4_0 => dequantize_q4_0(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q4_1 => dequantize_q4_1(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q5_0 => dequantize_q5_0(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q5_1 => dequantize_q5_1(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q8_0 => dequantize_q8_0(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::IQ4NL => dequantize_iq4_nl(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q2K => dequantize_q2_k(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q3K => dequantize_q3_k(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q4K => dequantize_q4_k(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q5K => dequantize_q5_k(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q6K => dequantize_q6_k(cast_blocks(bytes).unwrap_or(&[]), out),
            _ => out.fill(0.0),
        }
    }

    /// The whole tensor as f32 (for small vectors such as norm weights).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }
}
