//! Compute kernels: quantised matrix products over weights that stay in their GGUF encoding
//! (never expanded to f32), plus the small dense helpers a transformer layer needs.
//!
//! Nothing here allocates per call except the activation quantisation buffers in
//! [`ActScratch`], which are reused across calls.

pub mod blocks;
pub mod isa;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rayon::prelude::*;

use basalt_gguf::{TensorBytes, TensorInfo, TensorType};
use half::f16;

use crate::EngineError;
use blocks::*;
use quant::*;

pub use isa::{missing_cpu_features, Isa};

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
}

fn bad_layout(name: &str, ty: TensorType) -> EngineError {
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
            TensorType::Q4_0 => cast_blocks::<BlockQ4_0>(&m.bytes).is_some(),
            TensorType::Q4_1 => cast_blocks::<BlockQ4_1>(&m.bytes).is_some(),
            TensorType::Q5_0 => cast_blocks::<BlockQ5_0>(&m.bytes).is_some(),
            TensorType::Q5_1 => cast_blocks::<BlockQ5_1>(&m.bytes).is_some(),
            TensorType::Q8_0 => cast_blocks::<BlockQ8_0>(&m.bytes).is_some(),
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

    /// `out[t][r] = dot(row r, x[t])` for `t` rows of activations `x` (each `cols` long).
    pub fn matmul(&self, x: &[f32], out: &mut [f32], scratch: &mut ActScratch) {
        self.matmul_with(x, out, scratch, true);
    }

    /// The activation format this matrix's kernels read (`None`: float weights).
    fn activation_format(&self) -> Option<TensorType> {
        match self.ty {
            TensorType::Q4_0 | TensorType::Q5_0 | TensorType::Q8_0 => Some(TensorType::Q8_0),
            TensorType::Q4_1 | TensorType::Q5_1 => Some(TensorType::Q8_1),
            TensorType::Q4K | TensorType::Q5K | TensorType::Q6K => Some(TensorType::Q8K),
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
            TensorType::Q5K => with_acts!(BlockQ5K, q8_k, quantize_q8_k, dot_q5_k),
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
            TensorType::Q4_0 | TensorType::Q5_0 | TensorType::Q8_0 => {
                quantize_q8_0(x, first(&mut scratch.q8_0))
            }
            TensorType::Q4_1 | TensorType::Q5_1 => quantize_q8_1(x, first(&mut scratch.q8_1)),
            TensorType::Q4K | TensorType::Q5K | TensorType::Q6K => {
                quantize_q8_k(x, first(&mut scratch.q8_k))
            }
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
            TensorType::Q4K => rows!(BlockQ4K, q8_k, dot_q4_k, dot4_q4_k),
            TensorType::Q5K => rows!(BlockQ5K, q8_k, dot_q5_k),
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
            TensorType::Q4_0 => dequantize_q4_0(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q4_1 => dequantize_q4_1(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q5_0 => dequantize_q5_0(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q5_1 => dequantize_q5_1(cast_blocks(bytes).unwrap_or(&[]), out),
            TensorType::Q8_0 => dequantize_q8_0(cast_blocks(bytes).unwrap_or(&[]), out),
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

/// Products smaller than this many multiply-adds run on the calling thread: handing them to
/// the pool costs more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 16;

static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

/// Sizes the persistent compute pool that large matrix products are split across (the
/// `--threads` setting). Takes effect once, before the first product; `1` keeps everything
/// on the calling thread.
pub fn set_compute_threads(n: usize) {
    POOL.get_or_init(|| {
        (n > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("basalt-compute-{i}"))
                    .build()
                    .ok()
            })
            .flatten()
    });
}

fn pool() -> Option<&'static rayon::ThreadPool> {
    POOL.get().and_then(Option::as_ref)
}

/// The number of threads products are split over (1 without a pool).
pub fn compute_threads() -> usize {
    pool().map_or(1, |p| p.current_num_threads())
}

/// Runs `f` on a thread of the compute pool, when there is one. A forward pass run this way
/// gives each of its products to the pool from inside it: the pool thread running the pass
/// works on the product too and the others steal from it, instead of every product being
/// injected from outside while the caller blocks and is woken again (per product, that
/// hand-off cost as much as a small product itself).
///
/// While the pass runs, the pool's other threads poll for its work instead of going to
/// sleep between products: a pass hands out a few hundred small pieces of work per token,
/// and a thread that slept between them had to be woken through the kernel for the next
/// one (context switches were 14% of decode's samples in `perf`).
///
/// All models share the pool, so a thread polling for one model's pass may pick up another
/// model's whole pass and run it; the first pass then finishes after that one (the two
/// take turns instead of interleaving their products).
pub fn in_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let Some(pool) = pool() else {
        return f();
    };
    pool.install(|| {
        let done = AtomicBool::new(false);
        rayon::scope(|s| {
            for _ in 1..rayon::current_num_threads() {
                s.spawn(|_| poll_until(&done));
            }
            // Set however `f` ends, so the pollers always stop.
            let _finished = SetOnDrop(&done);
            let _busy = Busy::enter();
            f()
        })
    })
}

thread_local! {
    /// Passes and pollers on this thread's stack.
    static BUSY: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as running a pass or a poller while alive.
struct Busy;

impl Busy {
    fn enter() -> Self {
        BUSY.with(|b| b.set(b.get() + 1));
        Busy
    }

    fn is_set() -> bool {
        BUSY.with(|b| b.get() > 0)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(b.get().saturating_sub(1)));
    }
}

/// Runs whatever work the pool has until `done`. Returns at once on a thread that already
/// runs a pass or a poller further down its stack (the pass's own thread, when it picks up
/// its own poller while waiting): polling there would hold up what it is part of.
fn poll_until(done: &AtomicBool) {
    if Busy::is_set() {
        return;
    }
    let _busy = Busy::enter();
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `f` on every chunk of `out` (`chunk` elements each, with its index): on the compute
/// pool when `work` (multiply-adds, roughly) is worth the hand-off, else on this thread.
/// Each chunk is computed by the same code either way, so results never depend on it.
pub fn for_each_chunk<F>(out: &mut [f32], chunk: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    match pool().filter(|_| work >= PARALLEL_MIN_WORK) {
        Some(pool) => pool.install(|| {
            out.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, c)| f(i, c))
        }),
        None => out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c)),
    }
}

/// The block products one matrix format offers, from the smallest to the largest unit of
/// work. `dot4`, `tile` and `tile8` must give every (row, token) exactly what `dot` gives
/// it.
struct RowKernels<D, D4, T, T8> {
    /// One row against one token.
    dot: D,
    /// Four rows against one token (the activation block loaded once).
    dot4: D4,
    /// Four rows against four tokens, `[row][token]` (each weight block unpacked once for
    /// four tokens, each activation block loaded once for four rows).
    tile: T,
    /// Four rows against eight tokens (the unpacking shared by twice the tokens; two
    /// four-token tiles where a format or level has nothing better).
    tile8: T8,
}

/// Rows `r0..r1` (at most four) of `w` against every token of `acts`: whole groups of
/// four rows through the tiles, eight tokens at a time, then four, the remaining tokens
/// through the four-row product; a partial group row by row. `emit(row, token, value)`.
#[inline(always)]
fn row_group<W, A, D, D4, T, T8>(
    w: &[W],
    per_row: usize,
    (r0, r1): (usize, usize),
    acts: &[Vec<A>],
    k: &RowKernels<D, D4, T, T8>,
    mut emit: impl FnMut(usize, usize, f32),
) where
    D: Fn(&[W], &[A]) -> f32,
    D4: Fn(&[&[W]; 4], &[A]) -> [f32; 4],
    T: Fn(&[&[W]; 4], &[&[A]; 4]) -> [[f32; 4]; 4],
    T8: Fn(&[&[W]; 4], &[&[A]; 8]) -> [[f32; 8]; 4],
{
    let row = |r: usize| &w[r * per_row..(r + 1) * per_row];
    if r1 - r0 < 4 {
        for (t, a) in acts.iter().enumerate() {
            for r in r0..r1 {
                emit(r, t, (k.dot)(row(r), a));
            }
        }
        return;
    }
    let rows = [row(r0), row(r0 + 1), row(r0 + 2), row(r0 + 3)];
    // A few tokens (a decode batch) do little arithmetic per weight byte too: ask for the
    // rows ahead while these are multiplied, as a single token's product does.
    if acts.len() < 16 {
        let ahead = r0 + 4 * PREFETCH_AHEAD_BYTES.div_ceil(4 * per_row * std::mem::size_of::<W>());
        if let Some(next) = w.get(ahead * per_row..(ahead + 4) * per_row) {
            prefetch(next);
        }
    }
    let mut octets = acts.chunks_exact(8);
    for (o, e) in octets.by_ref().enumerate() {
        let values = (k.tile8)(
            &rows,
            &[&e[0], &e[1], &e[2], &e[3], &e[4], &e[5], &e[6], &e[7]],
        );
        for (i, by_token) in values.iter().enumerate() {
            for (j, &v) in by_token.iter().enumerate() {
                emit(r0 + i, o * 8 + j, v);
            }
        }
    }
    let first_quad = acts.len() - octets.remainder().len();
    let mut quads = octets.remainder().chunks_exact(4);
    for (q, four) in quads.by_ref().enumerate() {
        let values = (k.tile)(&rows, &[&four[0], &four[1], &four[2], &four[3]]);
        for (i, by_token) in values.iter().enumerate() {
            for (j, &v) in by_token.iter().enumerate() {
                emit(r0 + i, first_quad + q * 4 + j, v);
            }
        }
    }
    let done = acts.len() - quads.remainder().len();
    for (j, a) in quads.remainder().iter().enumerate() {
        for (i, v) in (k.dot4)(&rows, a).into_iter().enumerate() {
            emit(r0 + i, done + j, v);
        }
    }
}

/// How far ahead of the row being computed a one-token product asks for weights, in bytes.
/// A single token does little arithmetic per weight byte, so decode waits on memory unless
/// the next rows are already on their way: streaming every matrix of SmolLM2 once, one
/// thread, took 4.6 ns per block without the prefetch, against 2.0 for a matrix already in
/// cache, and 3.4-3.6 with it (`examples/gemv.rs`, `GEMV_STREAM=1`; 2-4 KiB ahead measured
/// best, 0.5-1 KiB worse).
const PREFETCH_AHEAD_BYTES: usize = 4096;

/// `out[i] = dot(row first + i of w, a)`, four rows at a time through `dot4`, asking the
/// memory system for the rows [`PREFETCH_AHEAD_BYTES`] ahead as it goes.
#[inline(always)]
fn one_token_rows<W, A>(
    w: &[W],
    per_row: usize,
    first: usize,
    out: &mut [f32],
    a: &[A],
    dot: &impl Fn(&[W], &[A]) -> f32,
    dot4: &impl Fn(&[&[W]; 4], &[A]) -> [f32; 4],
) {
    let row_bytes = per_row * std::mem::size_of::<W>();
    let ahead_rows = PREFETCH_AHEAD_BYTES.div_ceil(row_bytes.max(1));
    let row = |r: usize| &w[r * per_row..(r + 1) * per_row];
    let (quads, rest) = out.split_at_mut(out.len() / 4 * 4);
    for (q, o) in quads.chunks_exact_mut(4).enumerate() {
        let r = first + 4 * q;
        if let Some(next) = w.get((r + ahead_rows) * per_row..(r + ahead_rows + 4) * per_row) {
            prefetch(next);
        }
        o.copy_from_slice(&dot4(&[row(r), row(r + 1), row(r + 2), row(r + 3)], a));
    }
    let done = first + quads.len();
    for (i, o) in rest.iter_mut().enumerate() {
        *o = dot(row(done + i), a);
    }
}

/// Hints that `data` will be read soon (a no-op where the target has no prefetch hint).
#[inline(always)]
fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(data);
        let base = data.as_ptr().cast::<i8>();
        let mut offset = 0;
        while offset < bytes {
            // SAFETY: a prefetch hint never faults and reads nothing architecturally; the
            // address is inside `data`.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    base.add(offset),
                )
            };
            offset += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// `out[t * rows + r] = dot(row r of w, acts[t])`. The kernels are generic parameters so
/// that they inline and vectorise for the CPU the engine is compiled for. When several
/// tokens share the product, rows go in groups of four through the register tile (four
/// rows by four tokens); for a single token, through the four-row product, prefetching
/// ahead. Large products are split by rows across the compute pool; every output is
/// computed by the same code either way, so results do not depend on the thread count.
fn matmul_rows<W: Sync, A: Sync, D, D4, T, T8>(
    w: &[W],
    acts: &[Vec<A>],
    rows: usize,
    cols: usize,
    out: &mut [f32],
    k: &RowKernels<D, D4, T, T8>,
) where
    D: Fn(&[W], &[A]) -> f32 + Sync,
    D4: Fn(&[&[W]; 4], &[A]) -> [f32; 4] + Sync,
    T: Fn(&[&[W]; 4], &[&[A]; 4]) -> [[f32; 4]; 4] + Sync,
    T8: Fn(&[&[W]; 4], &[&[A]; 8]) -> [[f32; 8]; 4] + Sync,
{
    let per_row = (w.len() / rows.max(1)).max(1);
    let rows = rows.min(w.len() / per_row);
    let tokens = acts.len();
    let pool = pool().filter(|_| rows * cols * tokens >= PARALLEL_MIN_WORK);
    let Some(pool) = pool else {
        if tokens == 1 {
            one_token_rows(w, per_row, 0, &mut out[..rows], &acts[0], &k.dot, &k.dot4);
            return;
        }
        for g in (0..rows).step_by(4) {
            row_group(w, per_row, (g, (g + 4).min(rows)), acts, k, |r, t, v| {
                out[t * rows + r] = v
            });
        }
        return;
    };
    // Chunks of rows small enough to balance, large enough to amortise scheduling; a
    // multiple of four so the four-row kernels cover them.
    let chunk_rows = rows
        .div_ceil(pool.current_num_threads() * 4)
        .max(16)
        .next_multiple_of(4);
    if tokens == 1 {
        pool.install(|| {
            out[..rows]
                .par_chunks_mut(chunk_rows)
                .enumerate()
                .for_each(|(c, out_chunk)| {
                    one_token_rows(
                        w,
                        per_row,
                        c * chunk_rows,
                        out_chunk,
                        &acts[0],
                        &k.dot,
                        &k.dot4,
                    )
                });
        });
        return;
    }
    // Several tokens: each chunk writes its rows of every token's output row, through
    // disjoint slices cut up front (no temporary buffer, no copy afterwards: for a large
    // vocabulary's logits over a decode batch those were megabytes per step).
    let chunks = rows.div_ceil(chunk_rows);
    let mut pieces: Vec<Vec<&mut [f32]>> =
        (0..chunks).map(|_| Vec::with_capacity(tokens)).collect();
    for token_out in out[..tokens * rows].chunks_exact_mut(rows) {
        for (piece, chunk) in token_out.chunks_mut(chunk_rows).zip(pieces.iter_mut()) {
            chunk.push(piece);
        }
    }
    pool.install(|| {
        pieces
            .into_par_iter()
            .enumerate()
            .for_each(|(c, mut outs)| {
                let (r0, r1) = (c * chunk_rows, ((c + 1) * chunk_rows).min(rows));
                for g in (r0..r1).step_by(4) {
                    row_group(w, per_row, (g, (g + 4).min(r1)), acts, k, |r, t, v| {
                        outs[t][r - r0] = v
                    });
                }
            });
    });
}

/// `gate[i] = activation(gate[i]) * up[i]`, the gated unit of a feed-forward block, split
/// across the compute pool when large (a prefill chunk); each element computed the same
/// way either way.
pub fn gated_in_place(gate: &mut [f32], up: &[f32], activation: impl Fn(f32) -> f32 + Sync) {
    const CHUNK: usize = 4096;
    let n = gate.len().min(up.len());
    // A lookup or an exponential per element: about eight multiply-adds' worth.
    for_each_chunk(&mut gate[..n], CHUNK, n * 8, |i, g| {
        for (g, u) in g.iter_mut().zip(&up[i * CHUNK..]) {
            *g = activation(*g) * u;
        }
    });
}

/// RMS normalisation in place: `x * w / sqrt(mean(x^2) + eps)`, row by row.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        // Summed in f64 as ggml does: long rows of large activations lose bits in f32.
        let mean = (row.iter().map(|&v| (v * v) as f64).sum::<f64>() / w.len() as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (the form Gemma uses).
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

/// GELU as llama.cpp computes it on CPUs: through an f16 lookup table (input and output
/// rounded to f16) inside (-10, 10), exact outside. Matching it matters for fidelity: the
/// rounding is visible in Gemma's logits.
///
/// Every f16 input has its answer precomputed once (65,536 entries, 128 KiB), so the
/// activation costs a lookup instead of a `tanh` (which was 6% of Gemma's prefill).
pub fn gelu_f16_table(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let table = GELU_F16.get_or_init(|| {
            (0..=u16::MAX)
                .map(|bits| f16::from_f32(gelu_tanh(f16::from_bits(bits).to_f32())))
                .collect()
        });
        table
            .get(f16::from_f32(x).to_bits() as usize)
            .map_or(0.0, |v| v.to_f32())
    }
}

static GELU_F16: OnceLock<Vec<f16>> = OnceLock::new();

/// Rotary position embedding tables for one head dimension and frequency base.
#[derive(Debug, Clone)]
pub struct Rope {
    theta_scale: f32,
    /// `true`: rotate the two halves of the head (GPT-NeoX style, Gemma); `false`: rotate
    /// adjacent pairs (the original LLaMA layout, which GGUF llama weights are permuted for).
    neox: bool,
}

impl Rope {
    pub fn new(head_dim: usize, base: f32, neox: bool) -> Self {
        Self {
            theta_scale: base.powf(-2.0 / head_dim as f32),
            neox,
        }
    }

    /// Rotates every head in `heads` (each `head_dim` long) for position `pos`.
    pub fn apply(&self, heads: &mut [f32], head_dim: usize, pos: usize) {
        let half = head_dim / 2;
        // The angle is advanced by repeated multiplication, as ggml does, rather than by
        // `powf` per frequency: the rounding then matches llama.cpp's.
        let mut theta = pos as f32;
        let mut cos_sin = [(0f32, 0f32); 256];
        let cos_sin = &mut cos_sin[..half.min(256)];
        for cs in cos_sin.iter_mut() {
            *cs = (theta.cos(), theta.sin());
            theta *= self.theta_scale;
        }
        for head in heads.chunks_exact_mut(head_dim) {
            for (i, &(cos, sin)) in cos_sin.iter().enumerate() {
                let (a, b) = if self.neox {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x0 * sin + x1 * cos;
            }
        }
    }
}

#[cfg(test)]
mod tests;
