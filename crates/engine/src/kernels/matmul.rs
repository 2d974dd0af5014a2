//! Row drivers for matrix products: which block product (one row, four rows, a tile) runs
//! on which rows and tokens, in what order, with what prefetching, over the compute pool.
//! A format plugs in its block products ([`RowKernels`]); every (row, token) gets the same
//! bits whichever product computed it.

use rayon::prelude::*;

use super::pool::*;

/// The block products one matrix format offers, from the smallest to the largest unit of
/// work. `dot4`, `tile` and `tile8` must give every (row, token) exactly what `dot` gives
/// it.
pub(super) struct RowKernels<D, D4, T, T8> {
    /// One row against one token.
    pub(super) dot: D,
    /// Four rows against one token (the activation block loaded once).
    pub(super) dot4: D4,
    /// Four rows against four tokens, `[row][token]` (each weight block unpacked once for
    /// four tokens, each activation block loaded once for four rows).
    pub(super) tile: T,
    /// Four rows against eight tokens (the unpacking shared by twice the tokens; two
    /// four-token tiles where a format or level has nothing better).
    pub(super) tile8: T8,
}

/// Rows `r0..r1` (at most four) of `w` against every token of `acts`: whole groups of
/// four rows through the tiles, eight tokens at a time, then four, the remaining tokens
/// through the four-row product; a partial group row by row. `emit(row, token, value)`.
#[inline(always)]
pub(super) fn row_group<W, A, D, D4, T, T8>(
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
pub(super) const PREFETCH_AHEAD_BYTES: usize = 4096;

/// `out[i] = dot(row first + i of w, a)`, four rows at a time through `dot4`, asking the
/// memory system for the rows [`PREFETCH_AHEAD_BYTES`] ahead as it goes.
#[inline(always)]
pub(super) fn one_token_rows<W, A>(
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
pub(super) fn prefetch<T>(data: &[T]) {
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
pub(super) fn matmul_rows<W: Sync, A: Sync, D, D4, T, T8>(
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
