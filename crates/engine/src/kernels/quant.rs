//! Activation quantisation, quantised dot products and dequantisation: the portable
//! kernels, and the functions the engine calls, which run each product at the level
//! [`Isa::current`] chose (the x86 SIMD versions are in `x86`).
//!
//! The portable kernels are plain Rust written so that LLVM vectorises their inner integer
//! loops. They reproduce ggml's arithmetic (activation rounding, scale unpacking, the order
//! of the integer and float parts) so that logits match llama.cpp's closely enough for
//! greedy decoding to agree token for token. They stay as the reference every SIMD kernel
//! is tested against.
//!
//! Each dispatched kernel `name` also exists as `at::name(isa, ...)`, for the tests (and
//! benchmarks) to run a given level.

use half::{bf16, f16};

use super::blocks::*;
use super::isa::Isa;

/// Rounds half to even, as ggml's vectorised quantisers (and its `nearest_int`) do.
#[inline]
fn round_even(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// One 32-value block quantised as ggml's Q8_0/Q8_1 do: the scale `amax / 127`, each value
/// `round_ties_even(v * 127 / amax)`; also the sum of the quants (Q8_1's `s`).
#[inline]
fn quantize_block(chunk: &[f32]) -> (f32, [i8; QK], i32) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Ok(chunk)) = (Isa::current().has_avx2(), <&[f32; QK]>::try_from(chunk)) {
        // SAFETY: `Isa::current` reports AVX2 only where the CPU has AVX2, FMA and F16C.
        // Finite inputs only: the vector conversion turns NaN and infinities into
        // `i32::MIN` where the scalar one gives 0 or saturates.
        if let Some(block) = unsafe { super::x86::avx2::quantize_block(chunk) } {
            return block;
        }
    }
    let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(chunk) {
        let r = round_even(v * id);
        sum += r;
        *q = r as i8;
    }
    (amax, qs, sum)
}

pub fn quantize_q8_0(x: &[f32], out: &mut Vec<ActQ8_0>) {
    out.clear();
    for chunk in x.chunks_exact(QK) {
        let (amax, qs, _) = quantize_block(chunk);
        out.push(ActQ8_0::new(qs, f16::from_f32(amax / 127.0)));
    }
}

pub fn quantize_q8_1(x: &[f32], out: &mut Vec<ActQ8_1>) {
    out.clear();
    for chunk in x.chunks_exact(QK) {
        let (amax, qs, sum) = quantize_block(chunk);
        let d = amax / 127.0;
        out.push(ActQ8_1 {
            d: f16::from_f32(d).to_f32(),
            s: f16::from_f32(d * sum as f32).to_f32(),
            qs,
        });
    }
}

pub fn quantize_q8_k(x: &[f32], out: &mut Vec<BlockQ8K>) {
    out.clear();
    for chunk in x.chunks_exact(QK_K) {
        let mut block = BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        block.d = quantize_block_k(chunk, &mut block.qs);
        for (s, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *s = group.iter().map(|&q| q as i16).sum();
        }
        out.push(block);
    }
}

/// One Q8_K super-block's quants (into `qs`, which holds zeros) and its scale `d`.
fn quantize_block_k(chunk: &[f32], qs: &mut [i8; QK_K]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if let (true, Ok(values)) = (Isa::current().has_avx2(), <&[f32; QK_K]>::try_from(chunk)) {
        // SAFETY: `Isa::current` reports AVX2 only where the CPU has AVX2, FMA and F16C.
        if let Some(d) = unsafe { super::x86::avx2::quantize_block_k(values, qs) } {
            return d;
        }
    }
    // The scale comes from the signed value of largest magnitude, so that it maps to
    // exactly -127 (ggml's choice, kept for fidelity).
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in chunk {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, v) in qs.iter_mut().zip(chunk) {
        *q = round_even(iscale * v).min(127) as i8;
    }
    1.0 / iscale
}

/// The integer core of every 32-element block product.
#[inline]
fn dot_i8(a: &[i8; QK], b: &[i8; QK]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// A four-by-four tile from a four-row product, token by token (`[row][token]`).
#[inline(always)]
pub fn tile_by_rows<W, A>(
    w: [&[W]; 4],
    a: [&[A]; 4],
    four: impl Fn([&[W]; 4], &[A]) -> [f32; 4],
) -> [[f32; 4]; 4] {
    let by_token = a.map(|t| four(w, t));
    let mut out = [[0f32; 4]; 4];
    for (t, rows) in by_token.iter().enumerate() {
        for (r, v) in rows.iter().enumerate() {
            out[r][t] = *v;
        }
    }
    out
}

/// Defines, for each kernel listed, `pub fn $name(args)` at the level [`Isa::current`] chose
/// and `at::$name(isa, args)` at a given level: the `x86` kernel of the first listed level
/// the CPU has (`vnni`, then `avx2`), else the portable expression.
macro_rules! dispatched {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = [$($level:ident),*] else $portable:expr;)*) => {
        $(
            #[inline]
            pub fn $name($($arg: $ty),*) -> $ret {
                at::$name(Isa::current(), $($arg),*)
            }
        )*

        /// The kernels at a given level.
        pub mod at {
            use super::*;
            $(
                #[inline]
                pub fn $name(isa: Isa, $($arg: $ty),*) -> $ret {
                    #[cfg(target_arch = "x86_64")]
                    first_level!(isa, $name, ($($arg),*), [$($level),*]);
                    let _ = isa;
                    $portable
                }
            )*
        }
    };
}

/// `return x86::$level::$name(args)` for the first level in the list that `isa` has.
macro_rules! first_level {
    ($isa:ident, $name:ident, $args:tt, []) => {};
    ($isa:ident, $name:ident, ($($arg:ident),*), [$level:ident $(, $rest:ident)*]) => {
        if has_level!($isa, $level) {
            // SAFETY: an `Isa` reports a level only where the CPU has the extensions its
            // kernels are compiled with.
            return unsafe { super::super::x86::$level::$name($($arg),*) };
        }
        first_level!($isa, $name, ($($arg),*), [$($rest),*]);
    };
}

macro_rules! has_level {
    ($isa:ident, avx512) => {
        $isa.has_avx512_vnni()
    };
    ($isa:ident, vnni) => {
        $isa.has_avx512_vnni()
    };
    ($isa:ident, avx2) => {
        $isa.has_avx2()
    };
}

dispatched! {
    fn dot_q4_0(w: &[BlockQ4_0], a: &[ActQ8_0]) -> f32 = [vnni, avx2] else dot_q4_0_portable(w, a);
    fn dot_q4_1(w: &[BlockQ4_1], a: &[ActQ8_1]) -> f32 = [vnni, avx2] else dot_q4_1_portable(w, a);
    fn dot_q5_0(w: &[BlockQ5_0], a: &[ActQ8_0]) -> f32 = [vnni, avx2] else dot_q5_0_portable(w, a);
    fn dot_q8_0(w: &[BlockQ8_0], a: &[ActQ8_0]) -> f32 = [vnni, avx2] else dot_q8_0_portable(w, a);
    fn dot_iq4_nl(w: &[BlockIQ4NL], a: &[ActQ8_0]) -> f32 = [vnni, avx2]
        else dot_iq4_nl_portable(w, a);
    fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 = [avx2] else dot_q4_k_portable(w, a);
    fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 = [avx2] else dot_q6_k_portable(w, a);
    fn dot_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 = [avx2] else dot_q3_k_portable(w, a);
    fn dot_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 = [avx2] else dot_q2_k_portable(w, a);
    fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 = [avx2] else dot_q5_k_portable(w, a);

    fn dot4_q4_0(w: &[&[BlockQ4_0]; 4], a: &[ActQ8_0]) -> [f32; 4] = [avx512, avx2]
        else std::array::from_fn(|r| dot_q4_0_portable(w[r], a));
    fn dot4_q4_1(w: &[&[BlockQ4_1]; 4], a: &[ActQ8_1]) -> [f32; 4] = [avx512, avx2]
        else std::array::from_fn(|r| dot_q4_1_portable(w[r], a));
    fn dot4_q5_0(w: &[&[BlockQ5_0]; 4], a: &[ActQ8_0]) -> [f32; 4] = [avx512, avx2]
        else std::array::from_fn(|r| dot_q5_0_portable(w[r], a));
    fn dot4_q8_0(w: &[&[BlockQ8_0]; 4], a: &[ActQ8_0]) -> [f32; 4] = [avx512, avx2]
        else std::array::from_fn(|r| dot_q8_0_portable(w[r], a));
    fn dot4_iq4_nl(w: &[&[BlockIQ4NL]; 4], a: &[ActQ8_0]) -> [f32; 4] = [avx512, avx2]
        else std::array::from_fn(|r| dot_iq4_nl_portable(w[r], a));

    fn tile_q4_0(w: &[&[BlockQ4_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = [avx512, avx2]
        else tile_by_rows(*w, *a, |w, a| w.map(|row| dot_q4_0_portable(row, a)));
    fn tile_q4_1(w: &[&[BlockQ4_1]; 4], a: &[&[ActQ8_1]; 4]) -> [[f32; 4]; 4] = [avx512, avx2]
        else tile_by_rows(*w, *a, |w, a| w.map(|row| dot_q4_1_portable(row, a)));
    fn tile_q5_0(w: &[&[BlockQ5_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = [avx512, avx2]
        else tile_by_rows(*w, *a, |w, a| w.map(|row| dot_q5_0_portable(row, a)));
    fn tile_q8_0(w: &[&[BlockQ8_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = [avx512, avx2]
        else tile_by_rows(*w, *a, |w, a| w.map(|row| dot_q8_0_portable(row, a)));
    fn tile_iq4_nl(w: &[&[BlockIQ4NL]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = [avx512, avx2]
        else tile_by_rows(*w, *a, |w, a| w.map(|row| dot_iq4_nl_portable(row, a)));
    fn tile_q4_k(w: &[&[BlockQ4K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] = [avx512, avx2]
        else tile_by_rows(*w, *a, |w, a| w.map(|row| dot_q4_k_portable(row, a)));
    fn tile_q6_k(w: &[&[BlockQ6K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] = [avx512, avx2]
        else tile_by_rows(*w, *a, |w, a| w.map(|row| dot_q6_k_portable(row, a)));
    fn tile_q3_k(w: &[&[BlockQ3K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] = [avx2]
        else tile_by_rows(*w, *a, |w, a| w.map(|row| dot_q3_k_portable(row, a)));
    fn tile_q2_k(w: &[&[BlockQ2K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] = [avx2]
        else tile_by_rows(*w, *a, |w, a| w.map(|row| dot_q2_k_portable(row, a)));
    fn tile_q5_k(w: &[&[BlockQ5K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] = [avx2]
        else tile_by_rows(*w, *a, |w, a| w.map(|row| dot_q5_k_portable(row, a)));
}

/// Four rows against eight tokens through two four-by-four tiles (`[row][token]`).
#[inline(always)]
pub fn tile8_by_quads<W, A>(
    w: [&[W]; 4],
    a: [&[A]; 8],
    tile: impl Fn(&[&[W]; 4], &[&[A]; 4]) -> [[f32; 4]; 4],
) -> [[f32; 8]; 4] {
    let low = tile(&w, &[a[0], a[1], a[2], a[3]]);
    let high = tile(&w, &[a[4], a[5], a[6], a[7]]);
    let mut out = [[0f32; 8]; 4];
    for r in 0..4 {
        out[r][..4].copy_from_slice(&low[r]);
        out[r][4..].copy_from_slice(&high[r]);
    }
    out
}

/// Defines `$name(w, a)`, four rows against eight tokens at the level in use, and
/// `$name_at(isa, w, a)` at a given level: the AVX-512 kernel (two rows per 512-bit
/// register) at the VNNI level, else two four-by-four tiles of the same level. Every
/// (row, token) gets what the one-row product gives it.
macro_rules! tile8 {
    ($name:ident, $name_at:ident, $tile:ident, $block:ty, $act:ty) => {
        #[inline]
        pub fn $name(w: &[&[$block]; 4], a: &[&[$act]; 8]) -> [[f32; 8]; 4] {
            $name_at(Isa::current(), w, a)
        }

        #[inline]
        pub fn $name_at(isa: Isa, w: &[&[$block]; 4], a: &[&[$act]; 8]) -> [[f32; 8]; 4] {
            #[cfg(target_arch = "x86_64")]
            if isa.has_avx512_vnni() {
                // SAFETY: the VNNI level requires AVX-512 F, BW, VL and VNNI.
                return unsafe { super::x86::avx512::$name(w, a) };
            }
            tile8_by_quads(*w, *a, |w, a| at::$tile(isa, w, a))
        }
    };
}

tile8!(tile8_q4_0, tile8_q4_0_at, tile_q4_0, BlockQ4_0, ActQ8_0);
tile8!(tile8_q4_1, tile8_q4_1_at, tile_q4_1, BlockQ4_1, ActQ8_1);
tile8!(tile8_q5_0, tile8_q5_0_at, tile_q5_0, BlockQ5_0, ActQ8_0);
tile8!(tile8_q8_0, tile8_q8_0_at, tile_q8_0, BlockQ8_0, ActQ8_0);
tile8!(
    tile8_iq4_nl,
    tile8_iq4_nl_at,
    tile_iq4_nl,
    BlockIQ4NL,
    ActQ8_0
);
tile8!(tile8_q4_k, tile8_q4_k_at, tile_q4_k, BlockQ4K, BlockQ8K);
tile8!(tile8_q6_k, tile8_q6_k_at, tile_q6_k, BlockQ6K, BlockQ8K);

/// Four Q4_K rows against one token, row by row: a batch's K-quant products go through the
/// tiles, so there is no separate four-row kernel.
#[inline]
pub fn dot4_q4_k(w: &[&[BlockQ4K]; 4], a: &[BlockQ8K]) -> [f32; 4] {
    std::array::from_fn(|r| dot_q4_k(w[r], a))
}

/// Four Q5_K rows against eight tokens at `isa` (see [`tile8_q3_k_at`]).
#[inline]
pub fn tile8_q5_k_at(isa: Isa, w: &[&[BlockQ5K]; 4], a: &[&[BlockQ8K]; 8]) -> [[f32; 8]; 4] {
    tile8_by_quads(*w, *a, |w, a| at::tile_q5_k(isa, w, a))
}

/// Four Q5_K rows against one token, row by row (see [`dot4_q4_k`]).
#[inline]
pub fn dot4_q5_k(w: &[&[BlockQ5K]; 4], a: &[BlockQ8K]) -> [f32; 4] {
    std::array::from_fn(|r| dot_q5_k(w[r], a))
}

/// Four Q2_K rows against eight tokens at `isa` (see [`tile8_q3_k_at`]).
#[inline]
pub fn tile8_q2_k_at(isa: Isa, w: &[&[BlockQ2K]; 4], a: &[&[BlockQ8K]; 8]) -> [[f32; 8]; 4] {
    tile8_by_quads(*w, *a, |w, a| at::tile_q2_k(isa, w, a))
}

/// Four Q2_K rows against one token, row by row (see [`dot4_q4_k`]).
#[inline]
pub fn dot4_q2_k(w: &[&[BlockQ2K]; 4], a: &[BlockQ8K]) -> [f32; 4] {
    std::array::from_fn(|r| dot_q2_k(w[r], a))
}

/// Four Q3_K rows against eight tokens at `isa`: two four-by-four tiles (Q3_K has no
/// AVX-512 tile; each (row, token) gets what the one-row product gives it).
#[inline]
pub fn tile8_q3_k_at(isa: Isa, w: &[&[BlockQ3K]; 4], a: &[&[BlockQ8K]; 8]) -> [[f32; 8]; 4] {
    tile8_by_quads(*w, *a, |w, a| at::tile_q3_k(isa, w, a))
}

/// Four Q3_K rows against one token, row by row (see [`dot4_q4_k`]).
#[inline]
pub fn dot4_q3_k(w: &[&[BlockQ3K]; 4], a: &[BlockQ8K]) -> [f32; 4] {
    std::array::from_fn(|r| dot_q3_k(w[r], a))
}

/// Four Q6_K rows against one token, row by row (see [`dot4_q4_k`]).
#[inline]
pub fn dot4_q6_k(w: &[&[BlockQ6K]; 4], a: &[BlockQ8K]) -> [f32; 4] {
    std::array::from_fn(|r| dot_q6_k(w[r], a))
}

#[inline]
pub(super) fn dot_q4_0_portable(w: &[BlockQ4_0], a: &[ActQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let mut q = [0i8; QK];
        for j in 0..QK / 2 {
            q[j] = (w.qs[j] & 0xF) as i8 - 8;
            q[j + QK / 2] = (w.qs[j] >> 4) as i8 - 8;
        }
        sum += dot_i8(&q, &a.qs) as f32 * (w.d.to_f32() * a.d);
    }
    sum
}

/// IQ4_NL: Q4_0's product with each nibble looked up in [`IQ4_NL_LEVELS`].
#[inline]
pub(super) fn dot_iq4_nl_portable(w: &[BlockIQ4NL], a: &[ActQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let mut q = [0i8; QK];
        for j in 0..QK / 2 {
            q[j] = IQ4_NL_LEVELS[(w.qs[j] & 0xF) as usize];
            q[j + QK / 2] = IQ4_NL_LEVELS[(w.qs[j] >> 4) as usize];
        }
        sum += dot_i8(&q, &a.qs) as f32 * (w.d.to_f32() * a.d);
    }
    sum
}

#[inline]
pub(super) fn dot_q4_1_portable(w: &[BlockQ4_1], a: &[ActQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let mut q = [0i8; QK];
        for j in 0..QK / 2 {
            q[j] = (w.qs[j] & 0xF) as i8;
            q[j + QK / 2] = (w.qs[j] >> 4) as i8;
        }
        sum += dot_i8(&q, &a.qs) as f32 * (w.d.to_f32() * a.d) + w.m.to_f32() * a.s;
    }
    sum
}

#[inline]
fn unpack_q5(qs: &[u8; QK / 2], qh: [u8; 4], offset: i8) -> [i8; QK] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0i8; QK];
    for j in 0..QK / 2 {
        let h0 = (((qh >> j) & 1) << 4) as u8;
        let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
        q[j] = ((qs[j] & 0xF) | h0) as i8 - offset;
        q[j + QK / 2] = ((qs[j] >> 4) | h1) as i8 - offset;
    }
    q
}

#[inline]
pub(super) fn dot_q5_0_portable(w: &[BlockQ5_0], a: &[ActQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let q = unpack_q5(&w.qs, w.qh, 16);
        sum += dot_i8(&q, &a.qs) as f32 * (w.d.to_f32() * a.d);
    }
    sum
}

#[inline]
pub fn dot_q5_1(w: &[BlockQ5_1], a: &[ActQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let q = unpack_q5(&w.qs, w.qh, 0);
        sum += dot_i8(&q, &a.qs) as f32 * (w.d.to_f32() * a.d) + w.m.to_f32() * a.s;
    }
    sum
}

#[inline]
pub(super) fn dot_q8_0_portable(w: &[BlockQ8_0], a: &[ActQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        sum += dot_i8(&w.qs, &a.qs) as f32 * (w.d.to_f32() * a.d);
    }
    sum
}

/// Unpacks the 4-bit quants of a Q4_K/Q5_K block in element order (sub-block by sub-block).
#[inline]
fn unpack_k4(qs: &[u8; QK_K / 2], qh: Option<&[u8; QK_K / 8]>) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for chunk in 0..QK_K / 64 {
        let src = &qs[chunk * 32..chunk * 32 + 32];
        for l in 0..32 {
            let (mut lo, mut hi) = (src[l] & 0xF, src[l] >> 4);
            if let Some(qh) = qh {
                lo |= ((qh[l] >> (2 * chunk)) & 1) << 4;
                hi |= ((qh[l] >> (2 * chunk + 1)) & 1) << 4;
            }
            q[chunk * 64 + l] = lo;
            q[chunk * 64 + 32 + l] = hi;
        }
    }
    q
}

/// Unsigned weights (at most 63) times signed activations over 32 elements, returned as the
/// sums of the first and the last 16 (K-quant sub-blocks are 16 or 32 long).
#[inline]
fn dot_u8_i8_halves(u: &[u8], y: &[i8]) -> (i32, i32) {
    let half = |r: std::ops::Range<usize>| -> i32 { r.map(|i| u[i] as i32 * y[i] as i32).sum() };
    (half(0..16), half(16..32))
}

fn dot_k4_like(d: f16, dmin: f16, scales: &[u8; 12], q: &[u8; QK_K], a: &BlockQ8K) -> f32 {
    let mut sumi = 0i32;
    let mut summin = 0i32;
    for j in 0..QK_K / 32 {
        let (sc, m) = scale_min_k4(j, scales);
        let (lo, hi) = dot_u8_i8_halves(&q[j * 32..j * 32 + 32], &a.qs[j * 32..j * 32 + 32]);
        sumi += sc as i32 * (lo + hi);
        summin += m as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
    }
    d.to_f32() * a.d * sumi as f32 - dmin.to_f32() * a.d * summin as f32
}

#[inline]
pub(super) fn dot_q4_k_portable(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    w.iter()
        .zip(a)
        .map(|(w, a)| dot_k4_like(w.d, w.dmin, &w.scales, &unpack_k4(&w.qs, None), a))
        .sum()
}

#[inline]
pub(super) fn dot_q5_k_portable(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    w.iter()
        .zip(a)
        .map(|(w, a)| dot_k4_like(w.d, w.dmin, &w.scales, &unpack_k4(&w.qs, Some(&w.qh)), a))
        .sum()
}

/// Unpacks a Q6_K block's 6-bit quants (0..63; the value is the quant minus 32) in element
/// order.
#[inline]
fn unpack_q6k(w: &BlockQ6K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for half in 0..2 {
        let ql = &w.ql[half * 64..half * 64 + 64];
        let qh = &w.qh[half * 32..half * 32 + 32];
        let out = &mut q[half * 128..half * 128 + 128];
        for l in 0..32 {
            out[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            out[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            out[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            out[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    q
}

/// Unpacks a Q3_K block's quants as 0..7 in element order (the value is the quant less 4:
/// the two bits from `qs` plus 4 where the `hmask` bit is set). Element
/// `128 h + 32 j + l` takes bits `2 j` of `qs[32 h + l]` and bit `4 h + j` of `hmask[l]`.
#[inline]
pub(super) fn unpack_q3k(w: &BlockQ3K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for h in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                let low = (w.qs[32 * h + l] >> (2 * j)) & 3;
                let high = (w.hmask[l] >> (4 * h + j)) & 1;
                q[128 * h + 32 * j + l] = low | high << 2;
            }
        }
    }
    q
}

/// Unpacks a Q2_K block's quants (0..3) in element order: element `128 h + 32 j + l` is
/// bits `2 j` of `qs[32 h + l]`, as Q3_K's low bits are laid out.
#[inline]
pub(super) fn unpack_q2k(w: &BlockQ2K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for h in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                q[128 * h + 32 * j + l] = (w.qs[32 * h + l] >> (2 * j)) & 3;
            }
        }
    }
    q
}

/// Q2_K against Q8_K: per 16 elements the exact integers `scale * (q . y)` and
/// `min * bsum`, summed, then Q4_K's float expression.
#[inline]
pub(super) fn dot_q2_k_portable(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let q = unpack_q2k(w);
        let mut sumi = 0i32;
        for j in 0..QK_K / 32 {
            let (lo, hi) = dot_u8_i8_halves(&q[j * 32..j * 32 + 32], &a.qs[j * 32..j * 32 + 32]);
            sumi += (w.scales[2 * j] & 0xF) as i32 * lo + (w.scales[2 * j + 1] & 0xF) as i32 * hi;
        }
        let summin: i32 = (0..QK_K / 16)
            .map(|g| (w.scales[g] >> 4) as i32 * a.bsums[g] as i32)
            .sum();
        sum += w.d.to_f32() * a.d * sumi as f32 - w.dmin.to_f32() * a.d * summin as f32;
    }
    sum
}

/// Q3_K against Q8_K, as Q6_K's product with an offset of 4 instead of 32: per 16 elements
/// the exact integer `scale * (q . y - 4 * bsum)`, summed, then one float expression.
#[inline]
pub(super) fn dot_q3_k_portable(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let q = unpack_q3k(w);
        let scales = q3k_scales(&w.scales);
        let mut sumi = 0i32;
        for j in 0..QK_K / 32 {
            let (lo, hi) = dot_u8_i8_halves(&q[j * 32..j * 32 + 32], &a.qs[j * 32..j * 32 + 32]);
            let (b0, b1) = (a.bsums[2 * j] as i32, a.bsums[2 * j + 1] as i32);
            sumi += scales[2 * j] as i32 * (lo - 4 * b0) + scales[2 * j + 1] as i32 * (hi - 4 * b1);
        }
        sum += w.d.to_f32() * a.d * sumi as f32;
    }
    sum
}

#[inline]
pub(super) fn dot_q6_k_portable(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let q = unpack_q6k(w);
        let mut sumi = 0i32;
        for j in 0..QK_K / 32 {
            // (q - 32) . y = q . y - 32 * sum(y), and sum(y) per 16 is the block's bsums.
            let (lo, hi) = dot_u8_i8_halves(&q[j * 32..j * 32 + 32], &a.qs[j * 32..j * 32 + 32]);
            let (b0, b1) = (a.bsums[2 * j] as i32, a.bsums[2 * j + 1] as i32);
            sumi += w.scales[2 * j] as i32 * (lo - 32 * b0)
                + w.scales[2 * j + 1] as i32 * (hi - 32 * b1);
        }
        sum += w.d.to_f32() * a.d * sumi as f32;
    }
    sum
}

#[inline]
pub fn dot_f32(w: &[f32], a: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise without reassociating.
    let mut acc = [0f32; 8];
    let chunks = w.len() / 8;
    for i in 0..chunks {
        for k in 0..8 {
            acc[k] += w[i * 8 + k] * a[i * 8 + k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..w.len() {
        sum += w[i] * a[i];
    }
    sum
}

/// `sum(w[i] * a[i])` with eight lane accumulators (lane `k` takes elements `8i + k`), then
/// the lanes summed in order and the tail added: the F16C version computes exactly this, in
/// the same order, eight lanes per instruction.
#[inline]
pub fn dot_f16(w: &[f16], a: &[f32]) -> f32 {
    let [sum] = dot_rows_f16([w], a);
    sum
}

/// [`dot_f16`] for `N` rows of halves against one row of floats at once: `N` independent
/// accumulation chains (one chain is bound by the latency of its additions), each row
/// computed exactly as [`dot_f16`] computes it alone.
#[inline]
pub fn dot_rows_f16<const N: usize>(w: [&[f16]; N], a: &[f32]) -> [f32; N] {
    let chunks = half_rows_len(&w, a) / 8;
    let lanes = match Isa::current() {
        #[cfg(target_arch = "x86_64")]
        isa if isa.has_avx2() => {
            // SAFETY: `Isa` reports AVX2 only where the CPU has AVX2, FMA and F16C.
            Some(unsafe { super::x86::avx2::dot_rows_f16_lanes(w, a, chunks) })
        }
        _ => None,
    };
    fold_half_rows(w, a, lanes)
}

/// A 16-bit float weight (f16, bf16), widened to f32 exactly.
pub trait HalfWeight: Copy {
    fn widen(self) -> f32;
}

impl HalfWeight for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl HalfWeight for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// Elements every row and the activations hold.
fn half_rows_len<H, const N: usize>(w: &[&[H]; N], a: &[f32]) -> usize {
    w.iter().map(|r| r.len()).min().unwrap_or(0).min(a.len())
}

/// The 16-bit float rows' products, given the eight lane sums of their whole groups of
/// eight where a SIMD level computed them (else computed here the same way: lane `k` sums
/// elements `8 i + k` in order, each product rounded, then added): the lanes folded in
/// order, then the tail added.
#[inline]
fn fold_half_rows<H: HalfWeight, const N: usize>(
    w: [&[H]; N],
    a: &[f32],
    lanes: Option<[[f32; 8]; N]>,
) -> [f32; N] {
    let n = half_rows_len(&w, a);
    let chunks = n / 8;
    let acc = lanes.unwrap_or_else(|| {
        let mut acc = [[0f32; 8]; N];
        for (acc, row) in acc.iter_mut().zip(&w) {
            for i in 0..chunks {
                for k in 0..8 {
                    acc[k] += row[i * 8 + k].widen() * a[i * 8 + k];
                }
            }
        }
        acc
    });
    let mut out = [0f32; N];
    for ((o, acc), row) in out.iter_mut().zip(&acc).zip(&w) {
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * 8..n {
            sum += row[i].widen() * a[i];
        }
        *o = sum;
    }
    out
}

/// Activations rounded to bfloat16 (to nearest, ties to even), held as f32: what BF16
/// weights are multiplied with, as llama.cpp multiplies them, so every product is exact.
pub fn round_to_bf16(x: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.extend(x.iter().map(|v| bf16::from_f32(*v).to_f32()));
}

/// One row of bfloat16 weights (original-precision GGUF files) against f32 activations:
/// eight lanes of products added in order, then folded and the tail added, exactly as
/// [`dot_f16`] computes with halves.
pub fn dot_bf16(w: &[bf16], a: &[f32]) -> f32 {
    let [sum] = dot_rows_bf16([w], a);
    sum
}

/// [`dot_bf16`] for `N` rows at once, each computed exactly as alone.
#[inline]
pub fn dot_rows_bf16<const N: usize>(w: [&[bf16]; N], a: &[f32]) -> [f32; N] {
    let chunks = half_rows_len(&w, a) / 8;
    let lanes = match Isa::current() {
        #[cfg(target_arch = "x86_64")]
        isa if isa.has_avx2() => {
            // SAFETY: `Isa` reports AVX2 only where the CPU has AVX2, FMA and F16C.
            Some(unsafe { super::x86::avx2::dot_rows_bf16_lanes(w, a, chunks) })
        }
        _ => None,
    };
    fold_half_rows(w, a, lanes)
}

/// Attention scores: `K` keys (halves, from the cache) against the `G` queries that share
/// their KV head, each key converted once for all of them. Each (key, query) dot product is
/// defined as: 16 lanes (lane `l` takes elements `16i + l`), each a chain of fused
/// multiply-adds; lanes `l` and `l + 8` added, then `l` and `l + 4`, `l` and `l + 2`, then
/// lanes 0 and 1; the elements past the last whole 16 fused on in order. The F16C version
/// computes exactly that, so the result depends neither on the level nor on `K` and `G`.
#[inline]
pub fn dot_f16_queries<const K: usize, const G: usize>(
    keys: [&[f16]; K],
    queries: [&[f32]; G],
) -> [[f32; G]; K] {
    dot_f16_queries_at(Isa::current(), keys, queries)
}

/// [`dot_f16_queries`] at a given level.
#[inline]
pub fn dot_f16_queries_at<const K: usize, const G: usize>(
    isa: Isa,
    keys: [&[f16]; K],
    queries: [&[f32]; G],
) -> [[f32; G]; K] {
    let n = keys
        .iter()
        .map(|k| k.len())
        .chain(queries.iter().map(|q| q.len()))
        .min()
        .unwrap_or(0);
    let chunks = n / 16;
    let mut out = match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the VNNI level requires AVX-512 F, BW, VL and VNNI besides AVX2, FMA and
        // F16C; every slice holds at least `n >= 16 * chunks` elements.
        isa if isa.has_avx512_vnni() => unsafe {
            super::x86::avx512::dot_f16_queries_lanes(keys, queries, chunks)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa` reports AVX2 only where the CPU has AVX2, FMA and F16C; every slice
        // holds at least `n >= 16 * chunks` elements.
        isa if isa.has_avx2() => unsafe {
            super::x86::avx2::dot_f16_queries_lanes(keys, queries, chunks)
        },
        _ => {
            let mut out = [[0f32; G]; K];
            for (out, key) in out.iter_mut().zip(&keys) {
                for (out, query) in out.iter_mut().zip(&queries) {
                    let mut lanes = [0f32; 16];
                    for i in 0..chunks {
                        for (l, lane) in lanes.iter_mut().enumerate() {
                            *lane = key[16 * i + l].to_f32().mul_add(query[16 * i + l], *lane);
                        }
                    }
                    let mut width = 8;
                    while width > 0 {
                        for l in 0..width {
                            lanes[l] += lanes[l + width];
                        }
                        width /= 2;
                    }
                    *out = lanes[0];
                }
            }
            out
        }
    };
    for (out, key) in out.iter_mut().zip(&keys) {
        for (out, query) in out.iter_mut().zip(&queries) {
            for i in chunks * 16..n {
                *out = key[i].to_f32().mul_add(query[i], *out);
            }
        }
    }
    out
}

/// Attention's weighted sum of values for the `G` heads sharing a KV head: head `g`'s
/// output (row `g` of `out`, `stride` apart, `n` long) gets `weights[g][r] * values[r][i]`
/// fused onto each element, rows in order. Each value row is converted once for all the
/// heads; each element's arithmetic, and so its result, is that of the plain loop.
#[inline]
pub fn axpy_f16_heads<const K: usize, const G: usize>(
    out: &mut [f32],
    stride: usize,
    weights: [[f32; K]; G],
    values: [&[f16]; K],
) {
    axpy_f16_heads_at(Isa::current(), out, stride, weights, values)
}

/// [`axpy_f16_heads`] at a given level.
#[inline]
pub fn axpy_f16_heads_at<const K: usize, const G: usize>(
    isa: Isa,
    out: &mut [f32],
    stride: usize,
    weights: [[f32; K]; G],
    values: [&[f16]; K],
) {
    let n = values
        .iter()
        .map(|v| v.len())
        .min()
        .unwrap_or(0)
        .min(stride);
    if G == 0 || out.len() < (G - 1) * stride + n {
        return;
    }
    let mut done = 0;
    let _ = isa;
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx512_vnni() {
        done = n / 16 * 16;
        // SAFETY: the VNNI level requires AVX-512 F besides AVX2, FMA and F16C; `out` holds
        // `G` rows of `stride >= n` elements (checked above), every value row `n`.
        unsafe { super::x86::avx512::axpy_f16_heads_lanes(out, stride, done, weights, values) };
    } else if isa.has_avx2() {
        done = n / 8 * 8;
        // SAFETY: `Isa` reports AVX2 only where the CPU has AVX2, FMA and F16C; `out` holds
        // `G` rows of `stride >= n` elements (checked above), every value row `n`.
        unsafe { super::x86::avx2::axpy_f16_heads_lanes(out, stride, done, weights, values) };
    }
    for (g, weights) in weights.iter().enumerate() {
        let row = &mut out[g * stride..g * stride + n];
        for i in done..n {
            for (&w, value) in weights.iter().zip(&values) {
                row[i] = w.mul_add(value[i].to_f32(), row[i]);
            }
        }
    }
}

pub fn dequantize_q4_0(w: &[BlockQ4_0], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK)) {
        let d = w.d.to_f32();
        for j in 0..QK / 2 {
            out[j] = ((w.qs[j] & 0xF) as i32 - 8) as f32 * d;
            out[j + QK / 2] = ((w.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize_q4_1(w: &[BlockQ4_1], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (w.d.to_f32(), w.m.to_f32());
        for j in 0..QK / 2 {
            out[j] = (w.qs[j] & 0xF) as f32 * d + m;
            out[j + QK / 2] = (w.qs[j] >> 4) as f32 * d + m;
        }
    }
}

pub fn dequantize_q5_0(w: &[BlockQ5_0], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK)) {
        let d = w.d.to_f32();
        for (o, q) in out.iter_mut().zip(unpack_q5(&w.qs, w.qh, 16)) {
            *o = q as f32 * d;
        }
    }
}

pub fn dequantize_q5_1(w: &[BlockQ5_1], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (w.d.to_f32(), w.m.to_f32());
        for (o, q) in out.iter_mut().zip(unpack_q5(&w.qs, w.qh, 0)) {
            *o = q as f32 * d + m;
        }
    }
}

pub fn dequantize_q8_0(w: &[BlockQ8_0], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK)) {
        let d = w.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&w.qs) {
            *o = q as f32 * d;
        }
    }
}

fn dequantize_k4_like(d: f16, dmin: f16, scales: &[u8; 12], q: &[u8; QK_K], out: &mut [f32]) {
    let (d, dmin) = (d.to_f32(), dmin.to_f32());
    for j in 0..QK_K / 32 {
        let (sc, m) = scale_min_k4(j, scales);
        let (scale, min) = (d * sc as f32, dmin * m as f32);
        for l in 0..32 {
            out[j * 32 + l] = scale * q[j * 32 + l] as f32 - min;
        }
    }
}

pub fn dequantize_q4_k(w: &[BlockQ4K], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK_K)) {
        dequantize_k4_like(w.d, w.dmin, &w.scales, &unpack_k4(&w.qs, None), out);
    }
}

pub fn dequantize_q5_k(w: &[BlockQ5K], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK_K)) {
        dequantize_k4_like(w.d, w.dmin, &w.scales, &unpack_k4(&w.qs, Some(&w.qh)), out);
    }
}

pub fn dequantize_iq4_nl(w: &[BlockIQ4NL], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK)) {
        let d = w.d.to_f32();
        for j in 0..QK / 2 {
            out[j] = d * IQ4_NL_LEVELS[(w.qs[j] & 0xF) as usize] as f32;
            out[j + QK / 2] = d * IQ4_NL_LEVELS[(w.qs[j] >> 4) as usize] as f32;
        }
    }
}

pub fn dequantize_q2_k(w: &[BlockQ2K], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (w.d.to_f32(), w.dmin.to_f32());
        let q = unpack_q2k(w);
        for (g, &sc) in w.scales.iter().enumerate() {
            let (scale, min) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
            for l in 0..16 {
                out[g * 16 + l] = scale * q[g * 16 + l] as f32 - min;
            }
        }
    }
}

pub fn dequantize_q3_k(w: &[BlockQ3K], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = w.d.to_f32();
        let q = unpack_q3k(w);
        for (j, &sc) in q3k_scales(&w.scales).iter().enumerate() {
            for l in 0..16 {
                out[j * 16 + l] = d * sc as f32 * (q[j * 16 + l] as i32 - 4) as f32;
            }
        }
    }
}

pub fn dequantize_q6_k(w: &[BlockQ6K], out: &mut [f32]) {
    for (w, out) in w.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = w.d.to_f32();
        let q = unpack_q6k(w);
        for (j, &sc) in w.scales.iter().enumerate() {
            for l in 0..16 {
                out[j * 16 + l] = d * sc as f32 * (q[j * 16 + l] as i32 - 32) as f32;
            }
        }
    }
}
