//! x86-64 SIMD versions of the block products, activation quantisation and half-precision
//! helpers, at two levels: [`avx2`] (AVX2, FMA, F16C) and [`vnni`] (the same plus AVX-512
//! VNNI's one-instruction byte dot product on 256-bit registers), with [`avx512`] holding
//! the VNNI level's products of four rows at once in 512-bit registers.
//!
//! The integer arithmetic follows ggml's arrangement: integer products per block, scaled
//! and accumulated in a vector register, one horizontal sum per row. Every kernel must
//! agree with the portable version in `quant` (bit for bit for the K-quants, the f16
//! helpers and quantisation; within float reassociation for the rest), and the two levels
//! give identical bits (the kernel tests run every level the CPU has). Within a level,
//! every kernel of a format gives a (row, token) pair the same bits, whichever kernel (one
//! row, four rows, a tile) computes it: each format defines the lanes its block products
//! accumulate in (for Q4_0, Q5_0 and Q8_0, [`signed_lanes`]), and every kernel of that
//! format accumulates exactly those lanes, in block order, and sums them the same way. A
//! token's result therefore does not depend on what it was batched with.
//!
//! Every function here assumes the CPU has AVX2, FMA and F16C. The only ways in are the
//! `unsafe` `#[target_feature]` entry points in [`avx2`] and [`vnni`], which `quant` calls
//! only with an [`super::isa::Isa`] proving the CPU has their level. The private helpers
//! are `#[inline(always)]` so that they are compiled inside those entry points, with their
//! features; nothing here may be made public except through them.
//!
//! In a build for a baseline CPU (`target-cpu=x86-64-v2`), an intrinsic is inlined only
//! into a function compiled with its feature. So no intrinsic may sit in a closure, a
//! function passed as a value (`impl Fn`) or an `array::map` callback here: those become
//! separate functions without the entry point's features, and every intrinsic in them a
//! call. Formats plug into the shared loops through the
//! `SignedBlock` and `KQuantBlock` traits instead, whose `#[inline(always)]` methods are
//! inlined like the helpers.

use std::arch::x86_64::*;

use half::f16;

use super::blocks::*;

/// Declares each kernel of the first list at both levels: `avx2::$name` and `vnni::$name`
/// call the generic `$body::<false>` / `$body::<true>` (`true`: byte products with
/// `vpdpbusd`). The second list is declared at the AVX2 level only: at the VNNI level
/// those products go through [`avx512`].
macro_rules! at_both_levels {
    (
        $(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:ident;)*
        avx2 only:
        $(fn $name2:ident($($arg2:ident: $ty2:ty),*) -> $ret2:ty = $body2:ident;)*
    ) => {
        /// The kernels for AVX2, FMA and F16C.
        pub mod avx2 {
            use super::*;
            $(
                /// # Safety
                /// The CPU must support AVX2, FMA and F16C.
                #[target_feature(enable = "avx2,fma,f16c")]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    $body::<false>($($arg),*)
                }
            )*
            $(
                /// # Safety
                /// The CPU must support AVX2, FMA and F16C.
                #[target_feature(enable = "avx2,fma,f16c")]
                pub unsafe fn $name2($($arg2: $ty2),*) -> $ret2 {
                    $body2::<false>($($arg2),*)
                }
            )*
            pub use super::avx2_only::*;
        }

        /// The kernels for AVX2, FMA, F16C, AVX-512 VNNI and AVX-512 VL.
        pub mod vnni {
            use super::*;
            $(
                /// # Safety
                /// The CPU must support AVX2, FMA, F16C, AVX-512 VNNI and AVX-512 VL.
                #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    $body::<true>($($arg),*)
                }
            )*
        }
    };
}

at_both_levels! {
    fn dot_q4_0(w: &[BlockQ4_0], a: &[ActQ8_0]) -> f32 = dot_q4_0_body;
    fn dot_q5_0(w: &[BlockQ5_0], a: &[ActQ8_0]) -> f32 = dot_q5_0_body;
    fn dot_q8_0(w: &[BlockQ8_0], a: &[ActQ8_0]) -> f32 = dot_q8_0_body;
    fn dot_q4_1(w: &[BlockQ4_1], a: &[ActQ8_1]) -> f32 = dot_q4_1_body;
    avx2 only:
    fn dot4_q4_1(w: &[&[BlockQ4_1]; 4], a: &[ActQ8_1]) -> [f32; 4] = dot4_q4_1_body;
    fn tile_q4_1(w: &[&[BlockQ4_1]; 4], a: &[&[ActQ8_1]; 4]) -> [[f32; 4]; 4] = tile_q4_1_body;
    fn dot4_q4_0(w: &[&[BlockQ4_0]; 4], a: &[ActQ8_0]) -> [f32; 4] = dot4_q4_0_body;
    fn dot4_q5_0(w: &[&[BlockQ5_0]; 4], a: &[ActQ8_0]) -> [f32; 4] = dot4_q5_0_body;
    fn dot4_q8_0(w: &[&[BlockQ8_0]; 4], a: &[ActQ8_0]) -> [f32; 4] = dot4_q8_0_body;
    fn tile_q4_0(w: &[&[BlockQ4_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = tile_q4_0_body;
    fn tile_q5_0(w: &[&[BlockQ5_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = tile_q5_0_body;
    fn tile_q8_0(w: &[&[BlockQ8_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = tile_q8_0_body;
}

/// The kernels with nothing for VNNI to do (K-quant products multiply by per-sub-block
/// scales with `madd` anyway; quantisation and the f16 helpers have no byte products):
/// one version, which the VNNI level calls too.
mod avx2_only {
    use super::*;

    /// [`super::super::quant`]'s scalar block quantisation eight lanes at a time: the same
    /// maximum of magnitudes, the same scale, the same products rounded to nearest-even,
    /// so the same quants and sum. `None` if the block holds a NaN or an infinity (the
    /// caller takes the scalar path: the vector conversion turns those into `i32::MIN`).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_block(chunk: &[f32; 32]) -> Option<(f32, [i8; 32], i32)> {
        // Written without closures: see the module docs.
        let mut v = [_mm256_setzero_ps(); 4];
        let mut magnitudes = [_mm256_setzero_ps(); 4];
        for i in 0..4 {
            // SAFETY: the loads read the 32 floats of `chunk`.
            v[i] = unsafe { _mm256_loadu_ps(chunk.as_ptr().add(8 * i)) };
            magnitudes[i] = _mm256_andnot_ps(_mm256_set1_ps(-0.0), v[i]);
        }
        let m = _mm256_max_ps(
            _mm256_max_ps(magnitudes[0], magnitudes[1]),
            _mm256_max_ps(magnitudes[2], magnitudes[3]),
        );
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        // A NaN anywhere makes some lane unordered with itself.
        let mut nan = 0;
        for &v in &v {
            nan |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        }
        if nan != 0 || !amax.is_finite() {
            return None;
        }
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        // `cvtps` rounds to nearest-even (the default rounding mode), as the scalar path.
        let mut q = [_mm256_setzero_si256(); 4];
        for i in 0..4 {
            q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], id));
        }
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        // Pack to bytes (packs work within 128-bit lanes), then restore the order.
        let bytes = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let mut qs = [0i8; 32];
        // SAFETY: writes the 32 bytes of `qs`.
        unsafe { _mm256_storeu_si256(qs.as_mut_ptr().cast(), bytes) };
        Some((amax, qs, hsum_i32(sum)))
    }

    /// `quant::quantize_q8_k`'s block eight lanes at a time: the same scale (from the
    /// first value of largest magnitude, which maps to -127), the same products rounded to
    /// nearest-even and capped at 127, so the same quants. Leaves `bsums` to the caller.
    /// `None` if the block holds a NaN or an infinity (the scalar path handles those).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_block_k(chunk: &[f32; QK_K], qs: &mut [i8; QK_K]) -> Option<f32> {
        const VECTORS: usize = QK_K / 8;
        let sign = _mm256_set1_ps(-0.0);
        let mut v = [_mm256_setzero_ps(); VECTORS];
        let mut amax = _mm256_setzero_ps();
        let mut unordered = 0;
        for (i, v) in v.iter_mut().enumerate() {
            // SAFETY: reads floats `8i..8i + 8` of `chunk`.
            *v = unsafe { _mm256_loadu_ps(chunk.as_ptr().add(8 * i)) };
            unordered |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(*v, *v));
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, *v));
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        if unordered != 0 || !amax.is_finite() {
            return None;
        }
        if amax == 0.0 {
            *qs = [0; QK_K];
            return Some(0.0);
        }
        // The first value whose magnitude is the maximum, as the scalar scan (`>`) keeps.
        let target = _mm256_set1_ps(amax);
        let mut max = amax;
        for (i, &v) in v.iter().enumerate() {
            let hits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(
                _mm256_andnot_ps(sign, v),
                target,
            ));
            if hits != 0 {
                max = chunk[8 * i + hits.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        let scale = _mm256_set1_ps(iscale);
        let cap = _mm256_set1_epi32(127);
        for (j, four) in v.chunks_exact(4).enumerate() {
            let mut q = [_mm256_setzero_si256(); 4];
            for (q, &v) in q.iter_mut().zip(four) {
                // `cvtps` rounds to nearest-even (the default rounding mode).
                *q = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v, scale)), cap);
            }
            let bytes = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let bytes =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            // SAFETY: writes bytes `32j..32j + 32` of `qs`.
            unsafe { _mm256_storeu_si256(qs.as_mut_ptr().add(32 * j).cast(), bytes) };
        }
        Some(1.0 / iscale)
    }

    /// Q4_K, one row: see [`Q4kUnpacked`].
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        k_row(w, a)
    }

    /// Four rows of Q4_K against four tokens: each super-block unpacked once; per (row,
    /// token) the same operations in the same order as [`dot_q4_k`].
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile_q4_k(w: &[&[BlockQ4K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
        k_tile(*w, *a)
    }

    /// Q6_K, one row: see [`Q6kUnpacked`].
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        k_row(w, a)
    }

    /// Four rows of Q6_K against four tokens; per (row, token) the same operations in the
    /// same order as [`dot_q6_k`].
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile_q6_k(w: &[&[BlockQ6K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
        k_tile(*w, *a)
    }

    /// `quant::dot_f16_queries` over the first `chunks` groups of 16 elements (the caller
    /// checked every slice holds them): per (key, query) 16 lanes of fused multiply-adds,
    /// folded as the portable version folds them, so the same bits.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; every key and query holds at least
    /// `16 * chunks` elements.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16_queries_lanes<const K: usize, const G: usize>(
        keys: [&[f16]; K],
        queries: [&[f32]; G],
        chunks: usize,
    ) -> [[f32; G]; K] {
        let mut acc = [[[_mm256_setzero_ps(); 2]; G]; K];
        for i in 0..chunks {
            // SAFETY: the caller's contract: 16 * chunks elements in every slice.
            unsafe {
                let mut kf = [[_mm256_setzero_ps(); 2]; K];
                for (kf, key) in kf.iter_mut().zip(&keys) {
                    let at = key.as_ptr().add(16 * i);
                    kf[0] = _mm256_cvtph_ps(_mm_loadu_si128(at.cast()));
                    kf[1] = _mm256_cvtph_ps(_mm_loadu_si128(at.add(8).cast()));
                }
                for (g, query) in queries.iter().enumerate() {
                    let at = query.as_ptr().add(16 * i);
                    let (q0, q1) = (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)));
                    for (acc, kf) in acc.iter_mut().zip(&kf) {
                        acc[g][0] = _mm256_fmadd_ps(kf[0], q0, acc[g][0]);
                        acc[g][1] = _mm256_fmadd_ps(kf[1], q1, acc[g][1]);
                    }
                }
            }
        }
        let mut out = [[0f32; G]; K];
        for (out, acc) in out.iter_mut().zip(&acc) {
            for (out, lanes) in out.iter_mut().zip(acc) {
                *out = fold16(lanes[0], lanes[1]);
            }
        }
        out
    }

    /// `quant::axpy_f16_heads` on the first `n` elements of each head (a multiple of 8 the
    /// caller checked every slice holds): each element gets the same fused multiply-adds
    /// in the same order as the portable loop, so the same bits.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `out` holds `G` rows of `stride >= n`
    /// elements and every value row at least `n`; `n` is a multiple of 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16_heads_lanes<const K: usize, const G: usize>(
        out: &mut [f32],
        stride: usize,
        n: usize,
        weights: [[f32; K]; G],
        values: [&[f16]; K],
    ) {
        let mut w = [[_mm256_setzero_ps(); K]; G];
        for (w, weights) in w.iter_mut().zip(&weights) {
            for (w, &p) in w.iter_mut().zip(weights) {
                *w = _mm256_set1_ps(p);
            }
        }
        for at in (0..n).step_by(8) {
            // SAFETY: the caller's contract: `n` elements in every value row and in each of
            // the `G` rows of `out`.
            unsafe {
                let mut vf = [_mm256_setzero_ps(); K];
                for (vf, row) in vf.iter_mut().zip(&values) {
                    *vf = _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(at).cast()));
                }
                for (g, w) in w.iter().enumerate() {
                    let op = out.as_mut_ptr().add(g * stride + at);
                    let mut acc = _mm256_loadu_ps(op);
                    for (w, vf) in w.iter().zip(&vf) {
                        acc = _mm256_fmadd_ps(*w, *vf, acc);
                    }
                    _mm256_storeu_ps(op, acc);
                }
            }
        }
    }

    /// `quant::dot_rows_f16`'s eight lane sums over the first `chunks` groups of eight
    /// elements (fewer if a slice is shorter), eight lanes per instruction: each lane sums
    /// in the same order as the scalar definition, so the same bits.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows_f16_lanes<const N: usize>(
        w: [&[f16]; N],
        a: &[f32],
        chunks: usize,
    ) -> [[f32; 8]; N] {
        let shortest = w.iter().map(|r| r.len()).fold(a.len(), usize::min);
        let chunks = chunks.min(shortest / 8);
        let mut v = [_mm256_setzero_ps(); N];
        for i in 0..chunks {
            // SAFETY: every row and `a` hold at least `chunks * 8` elements (clamped above).
            let af = unsafe { _mm256_loadu_ps(a.as_ptr().add(i * 8)) };
            for (v, row) in v.iter_mut().zip(&w) {
                // SAFETY: as above; 8 halves are 16 bytes.
                let halves = unsafe { _mm_loadu_si128(row.as_ptr().add(i * 8).cast()) };
                // Multiply then add, each rounded, as the scalar loop (not a fused FMA).
                *v = _mm256_add_ps(*v, _mm256_mul_ps(_mm256_cvtph_ps(halves), af));
            }
        }
        let mut acc = [[0f32; 8]; N];
        for (acc, v) in acc.iter_mut().zip(v) {
            // SAFETY: writes the 8 floats of `acc`.
            unsafe { _mm256_storeu_ps(acc.as_mut_ptr(), v) };
        }
        acc
    }
}

/// An f16 scale as f32 with F16C (exact; `half` would check the CPU on every call when the
/// build does not enable F16C globally).
///
/// Where a loop converts scales, it uses [`half8`] or [`half_pair`] instead: a conversion
/// of one lane is compiled as an insert into whatever register is free, and LLVM picked the
/// loop's accumulator, which chained every block's scale behind the previous block's sum.
#[inline(always)]
fn half(h: f16) -> f32 {
    // SAFETY: F16C available (module contract).
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32))) }
}

/// An f16 scale broadcast to eight f32 lanes. Two of these multiplied lane by lane give
/// what multiplying the scalars and broadcasting gives, in one instruction fewer.
#[inline(always)]
fn half8(h: f16) -> __m256 {
    // SAFETY: F16C and AVX2 available (module contract).
    unsafe { _mm256_cvtph_ps(_mm_set1_epi16(h.to_bits() as i16)) }
}

/// Two f16 values (a block's scale and min, stored side by side) as f32, converted together.
#[inline(always)]
fn half_pair(a: f16, b: f16) -> (f32, f32) {
    let bits = a.to_bits() as u32 | (b.to_bits() as u32) << 16;
    // SAFETY: F16C and AVX available (module contract).
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }
}

#[inline(always)]
fn hsum_i32(v: __m256i) -> i32 {
    // SAFETY: AVX2 available (module contract).
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)))
    }
}

/// Unsigned bytes times signed bytes, summed in 8 lanes. Lane `i` is the exact integer sum
/// of products `4i..4i + 4` either way: activation quants lie in -127..=127 and weight
/// magnitudes are at most 128, so no pair reaches `maddubs`'s i16 saturation, and the VNNI
/// form (one instruction instead of two) gives the same integers.
#[inline(always)]
fn sum4_us8<const VNNI: bool>(x: __m256i, y: __m256i) -> __m256i {
    if VNNI {
        // SAFETY: only the VNNI entry points instantiate `VNNI = true`, and they enable
        // AVX-512 VNNI and VL.
        unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y) }
    } else {
        // SAFETY: AVX2 available (module contract).
        unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1)) }
    }
}

/// The four lanes of a signed-format block product (Q4_0, Q5_0, Q8_0), as floats: lane `j`
/// is the exact integer sum of products `4j..4j + 4` and `16 + 4j..16 + 4j + 4`. Every
/// kernel of these formats, at every width, scales and accumulates these same four lanes
/// and sums them with [`hsum4`]: the 512-bit kernels hold four rows' lanes in one register
/// (elements 0..16 and 16..32 of each row in separate registers, one `vpdpbusd` each), and
/// so every product gives the same bits whichever kernel computes it. `maddubs` multiplies
/// unsigned by signed, so `x`'s sign moves onto `y` first (as ggml does).
#[inline(always)]
fn signed_lanes<const VNNI: bool>(x: __m256i, y: __m256i) -> __m128 {
    // SAFETY: AVX2 available (module contract).
    unsafe {
        let sums = sum4_us8::<VNNI>(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        let folded = _mm_add_epi32(
            _mm256_castsi256_si128(sums),
            _mm256_extracti128_si256::<1>(sums),
        );
        _mm_cvtepi32_ps(folded)
    }
}

/// The four lanes of a Q4_1 block product (unsigned nibbles times signed activation
/// quants), as floats: the lanes of [`signed_lanes`], and like them the same in every Q4_1
/// kernel.
#[inline(always)]
fn unsigned_lanes<const VNNI: bool>(x: __m256i, y: __m256i) -> __m128 {
    // SAFETY: AVX2 available (module contract).
    unsafe {
        let sums = sum4_us8::<VNNI>(x, y);
        let folded = _mm_add_epi32(
            _mm256_castsi256_si128(sums),
            _mm256_extracti128_si256::<1>(sums),
        );
        _mm_cvtepi32_ps(folded)
    }
}

/// The sum of four lanes, in the order every kernel of the 32-element formats uses:
/// `(v0 + v2) + (v1 + v3)`.
#[inline(always)]
fn hsum4(v: __m128) -> f32 {
    // SAFETY: SSE3 available (module contract: AVX2 implies it).
    unsafe {
        let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// The sum of 16 lanes held as lanes 0..8 and 8..16, folded as attention's scores define
/// it: lanes k and k + 8, then k and k + 4, then [`hsum4`].
#[inline(always)]
fn fold16(low: __m256, high: __m256) -> f32 {
    // SAFETY: AVX available (module contract).
    let s4 = unsafe {
        let s8 = _mm256_add_ps(low, high);
        _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8))
    };
    hsum4(s4)
}

/// The low four lanes of a broadcast scale.
#[inline(always)]
fn low4(v: __m256) -> __m128 {
    // SAFETY: AVX available (module contract).
    unsafe { _mm256_castps256_ps128(v) }
}

#[inline(always)]
fn set4(v: f32) -> __m128 {
    // SAFETY: SSE available (module contract).
    unsafe { _mm_set1_ps(v) }
}

#[inline(always)]
fn fmadd4(a: __m128, b: __m128, c: __m128) -> __m128 {
    // SAFETY: FMA available (module contract).
    unsafe { _mm_fmadd_ps(a, b, c) }
}

#[inline(always)]
fn mul4(a: __m128, b: __m128) -> __m128 {
    // SAFETY: AVX available (module contract).
    unsafe { _mm_mul_ps(a, b) }
}

/// 16 bytes of nibbles -> 32 bytes: low nibbles first, then high nibbles.
#[inline(always)]
fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: AVX2 available (module contract); reads exactly 16 bytes.
    unsafe {
        let lo = _mm_loadu_si128(qs.as_ptr().cast());
        let both = _mm256_insertf128_si256(_mm256_castsi128_si256(lo), _mm_srli_epi16(lo, 4), 1);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }
}

/// Byte j is 0xFF where bit j of `bits` is set, else 0.
#[inline(always)]
fn bytes_from_bits(bits: u32) -> __m256i {
    // SAFETY: AVX2 available (module contract).
    unsafe {
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0,
            ),
        );
        let marked = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        _mm256_cmpeq_epi8(marked, _mm256_set1_epi64x(-1))
    }
}

#[inline(always)]
fn scale(a: f32, b: f32) -> __m256 {
    // SAFETY: AVX available (module contract).
    unsafe { _mm256_set1_ps(a * b) }
}

#[inline(always)]
fn load32(qs: &[i8; 32]) -> __m256i {
    // SAFETY: AVX available (module contract); reads exactly the 32 bytes.
    unsafe { _mm256_loadu_si256(qs.as_ptr().cast()) }
}

#[inline(always)]
fn zeros_i() -> __m256i {
    // SAFETY: AVX available (module contract).
    unsafe { _mm256_setzero_si256() }
}

// --- The 32-element formats whose unpacked quants are signed (Q4_0, Q5_0, Q8_0) ---

/// A 32-element weight block whose quants unpack to signed bytes (Q4_0, Q5_0, Q8_0).
trait SignedBlock: Sized {
    /// The 32 quants as signed bytes, and the block's scale in every lane.
    fn unpack(&self) -> (__m256i, __m256);

    /// The block's scale.
    fn scale(&self) -> f16;

    /// Four rows' blocks for the 512-bit kernels, offset by 128 to unsigned bytes (what
    /// `vpdpbusd` takes): elements 0..16 of row `r` in 128-bit lane `r` of the first
    /// register, elements 16..32 in the second.
    ///
    /// Only for callers compiled with AVX-512 F and BW.
    #[inline(always)]
    fn unpack4_offset(rows: [&Self; 4]) -> (__m512i, __m512i) {
        let (x0, _) = rows[0].unpack();
        let (x1, _) = rows[1].unpack();
        let (x2, _) = rows[2].unpack();
        let (x3, _) = rows[3].unpack();
        // SAFETY: AVX-512 F available (this method's contract).
        unsafe {
            let x01 = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(x0), x1);
            let x23 = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(x2), x3);
            let offset = _mm512_set1_epi8(-128);
            (
                _mm512_xor_si512(_mm512_shuffle_i64x2::<0b10_00_10_00>(x01, x23), offset),
                _mm512_xor_si512(_mm512_shuffle_i64x2::<0b11_01_11_01>(x01, x23), offset),
            )
        }
    }
}

impl SignedBlock for BlockQ8_0 {
    #[inline(always)]
    fn unpack(&self) -> (__m256i, __m256) {
        (load32(&self.qs), half8(self.d))
    }

    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }
}

impl SignedBlock for BlockQ4_0 {
    #[inline(always)]
    fn unpack(&self) -> (__m256i, __m256) {
        // SAFETY: AVX2 available (module contract).
        let q = unsafe { _mm256_sub_epi8(nibbles(&self.qs), _mm256_set1_epi8(8)) };
        (q, half8(self.d))
    }

    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }

    #[inline(always)]
    fn unpack4_offset(rows: [&Self; 4]) -> (__m512i, __m512i) {
        // SAFETY: AVX-512 F and BW available (the method's contract).
        unsafe {
            let (low, high) = nibbles4([&rows[0].qs, &rows[1].qs, &rows[2].qs, &rows[3].qs]);
            // q - 8 + 128
            let offset = _mm512_set1_epi8(120);
            (_mm512_add_epi8(low, offset), _mm512_add_epi8(high, offset))
        }
    }
}

impl SignedBlock for BlockQ5_0 {
    #[inline(always)]
    fn unpack(&self) -> (__m256i, __m256) {
        // (q | high << 4) - 16: where the high bit is clear, that is q | 0xF0.
        // SAFETY: AVX2 available (module contract).
        let q = unsafe {
            let high = _mm256_andnot_si256(
                bytes_from_bits(u32::from_le_bytes(self.qh)),
                _mm256_set1_epi8(0xF0u8 as i8),
            );
            _mm256_or_si256(nibbles(&self.qs), high)
        };
        (q, half8(self.d))
    }

    #[inline(always)]
    fn scale(&self) -> f16 {
        self.d
    }

    #[inline(always)]
    fn unpack4_offset(rows: [&Self; 4]) -> (__m512i, __m512i) {
        // The fifth bits of elements 0..16 (16..32) of the four rows, row r at bit 16r: a
        // byte mask in the registers' layout.
        let bits = [
            u32::from_le_bytes(rows[0].qh) as u64,
            u32::from_le_bytes(rows[1].qh) as u64,
            u32::from_le_bytes(rows[2].qh) as u64,
            u32::from_le_bytes(rows[3].qh) as u64,
        ];
        let low_bits = (bits[0] & 0xFFFF)
            | (bits[1] & 0xFFFF) << 16
            | (bits[2] & 0xFFFF) << 32
            | (bits[3] & 0xFFFF) << 48;
        let high_bits =
            bits[0] >> 16 | (bits[1] >> 16) << 16 | (bits[2] >> 16) << 32 | (bits[3] >> 16) << 48;
        // SAFETY: AVX-512 F and BW available (the method's contract).
        unsafe {
            let (low, high) = nibbles4([&rows[0].qs, &rows[1].qs, &rows[2].qs, &rows[3].qs]);
            // (q | bit << 4) - 16 + 128 is q + 128 (q | 0x80) where the bit is set, q + 112
            // (q | 0x70) where it is clear.
            let (clear, set) = (_mm512_set1_epi8(0x70), _mm512_set1_epi8(-128));
            (
                _mm512_or_si512(low, _mm512_mask_blend_epi8(low_bits, clear, set)),
                _mm512_or_si512(high, _mm512_mask_blend_epi8(high_bits, clear, set)),
            )
        }
    }
}

/// Four rows' 16 bytes of nibbles as [`SignedBlock::unpack4`] lays elements out: the low
/// nibbles (elements 0..16) of row r in 128-bit lane r of the first register, the high
/// nibbles (elements 16..32) in the second. Only for callers compiled with AVX-512 F.
#[inline(always)]
fn nibbles4(qs: [&[u8; 16]; 4]) -> (__m512i, __m512i) {
    // SAFETY: AVX-512 F available (the function's contract); reads exactly 16 bytes of each.
    unsafe {
        let packed = _mm512_castsi128_si512(_mm_loadu_si128(qs[0].as_ptr().cast()));
        let packed = _mm512_inserti32x4::<1>(packed, _mm_loadu_si128(qs[1].as_ptr().cast()));
        let packed = _mm512_inserti32x4::<2>(packed, _mm_loadu_si128(qs[2].as_ptr().cast()));
        let packed = _mm512_inserti32x4::<3>(packed, _mm_loadu_si128(qs[3].as_ptr().cast()));
        let mask = _mm512_set1_epi8(0x0F);
        (
            _mm512_and_si512(packed, mask),
            _mm512_and_si512(_mm512_srli_epi16::<4>(packed), mask),
        )
    }
}

/// The loop of the signed formats: per block, unpack, multiply with the activation quants
/// into [`signed_lanes`], scale, accumulate in four lanes; one [`hsum4`] per row.
#[inline(always)]
fn signed_blocks<const VNNI: bool, W: SignedBlock>(w: &[W], a: &[ActQ8_0]) -> f32 {
    // SAFETY: AVX available (module contract).
    let mut acc = unsafe { _mm_setzero_ps() };
    for (x, y) in w.iter().zip(a) {
        let (qx, d) = x.unpack();
        acc = fmadd4(
            mul4(low4(d), set4(y.d)),
            signed_lanes::<VNNI>(qx, load32(&y.qs)),
            acc,
        );
    }
    hsum4(acc)
}

/// Four rows against one activation row: the activation block is loaded and its scale
/// converted once for all four, and the four accumulations are independent chains the core
/// overlaps. Each row's arithmetic, and its order, is exactly that of [`signed_blocks`], so
/// the results are bit-for-bit the same.
#[inline(always)]
fn signed_blocks4<const VNNI: bool, W: SignedBlock>(w: [&[W]; 4], a: &[ActQ8_0]) -> [f32; 4] {
    let n = w.iter().map(|r| r.len()).min().unwrap_or(0).min(a.len());
    // SAFETY: AVX available (module contract).
    let mut acc = [unsafe { _mm_setzero_ps() }; 4];
    for (b, y) in a[..n].iter().enumerate() {
        let (qy, dy) = (load32(&y.qs), set4(y.d));
        for (acc, row) in acc.iter_mut().zip(w) {
            let (qx, d) = row[b].unpack();
            *acc = fmadd4(mul4(low4(d), dy), signed_lanes::<VNNI>(qx, qy), *acc);
        }
    }
    let mut out = [0f32; 4];
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = hsum4(acc);
    }
    out
}

/// Four rows against four activation rows (a register tile): each weight block is unpacked
/// once for the four tokens and each activation block loaded once for the four rows. Every
/// (row, token) pair accumulates exactly as [`signed_blocks`] does, block by block in the
/// same order, so the results are the same to the bit.
#[inline(always)]
fn signed_tile<const VNNI: bool, W: SignedBlock>(
    w: [&[W]; 4],
    a: [&[ActQ8_0]; 4],
) -> [[f32; 4]; 4] {
    let (w, a, n) = super::quant::tile_blocks(w, a);
    // SAFETY: AVX available (module contract).
    let mut acc = [[unsafe { _mm_setzero_ps() }; 4]; 4];
    for b in 0..n {
        // Spelled out rather than `w.map(..)`, which was not inlined (a call per block).
        let xs = [
            w[0][b].unpack(),
            w[1][b].unpack(),
            w[2][b].unpack(),
            w[3][b].unpack(),
        ];
        for (t, tok) in a.iter().enumerate() {
            let y = &tok[b];
            let (qy, dy) = (load32(&y.qs), set4(y.d));
            for (acc, &(qx, d)) in acc.iter_mut().zip(&xs) {
                acc[t] = fmadd4(mul4(low4(d), dy), signed_lanes::<VNNI>(qx, qy), acc[t]);
            }
        }
    }
    let mut out = [[0f32; 4]; 4];
    for r in 0..4 {
        for t in 0..4 {
            out[r][t] = hsum4(acc[r][t]);
        }
    }
    out
}

#[inline(always)]
fn dot_q4_0_body<const VNNI: bool>(w: &[BlockQ4_0], a: &[ActQ8_0]) -> f32 {
    signed_blocks::<VNNI, _>(w, a)
}

#[inline(always)]
fn dot_q5_0_body<const VNNI: bool>(w: &[BlockQ5_0], a: &[ActQ8_0]) -> f32 {
    signed_blocks::<VNNI, _>(w, a)
}

#[inline(always)]
fn dot_q8_0_body<const VNNI: bool>(w: &[BlockQ8_0], a: &[ActQ8_0]) -> f32 {
    signed_blocks::<VNNI, _>(w, a)
}

#[inline(always)]
fn dot4_q4_0_body<const VNNI: bool>(w: &[&[BlockQ4_0]; 4], a: &[ActQ8_0]) -> [f32; 4] {
    signed_blocks4::<VNNI, _>(*w, a)
}

#[inline(always)]
fn dot4_q5_0_body<const VNNI: bool>(w: &[&[BlockQ5_0]; 4], a: &[ActQ8_0]) -> [f32; 4] {
    signed_blocks4::<VNNI, _>(*w, a)
}

#[inline(always)]
fn dot4_q8_0_body<const VNNI: bool>(w: &[&[BlockQ8_0]; 4], a: &[ActQ8_0]) -> [f32; 4] {
    signed_blocks4::<VNNI, _>(*w, a)
}

#[inline(always)]
fn tile_q4_0_body<const VNNI: bool>(w: &[&[BlockQ4_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] {
    signed_tile::<VNNI, _>(*w, *a)
}

#[inline(always)]
fn tile_q5_0_body<const VNNI: bool>(w: &[&[BlockQ5_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] {
    signed_tile::<VNNI, _>(*w, *a)
}

#[inline(always)]
fn tile_q8_0_body<const VNNI: bool>(w: &[&[BlockQ8_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] {
    signed_tile::<VNNI, _>(*w, *a)
}

// --- Four rows at once in 512-bit registers (the VNNI level) ---

/// Declares the signed formats' 512-bit kernels: four rows against one token (`dot4_*`),
/// four (`tile_*`) and eight (`tile8_*`), all [`signed_rows4`].
macro_rules! signed_rows4_kernels {
    ($(($block:ty, $dot4:ident, $tile:ident, $tile8:ident)),*) => {$(
        /// # Safety
        /// The CPU must support AVX2, FMA, F16C, AVX-512 F, BW, VL and VNNI.
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $dot4(w: &[&[$block]; 4], a: &[ActQ8_0]) -> [f32; 4] {
            let [[r0], [r1], [r2], [r3]] = signed_rows4(*w, [a]);
            [r0, r1, r2, r3]
        }

        /// # Safety
        /// As the four-row product above.
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $tile(w: &[&[$block]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] {
            signed_rows4(*w, *a)
        }

        /// # Safety
        /// As the four-row product above.
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        pub unsafe fn $tile8(w: &[&[$block]; 4], a: &[&[ActQ8_0]; 8]) -> [[f32; 8]; 4] {
            signed_rows4(*w, *a)
        }
    )*};
}

/// The AVX-512 kernels: products of four rows at once, for the 32-element formats the four
/// rows' lanes in one register per token, for the K-quants 64 quants of a row per register.
pub mod avx512 {
    use super::*;

    signed_rows4_kernels!(
        (BlockQ4_0, dot4_q4_0, tile_q4_0, tile8_q4_0),
        (BlockQ5_0, dot4_q5_0, tile_q5_0, tile8_q5_0),
        (BlockQ8_0, dot4_q8_0, tile_q8_0, tile8_q8_0)
    );

    /// # Safety
    /// The CPU must support AVX2, FMA, F16C, AVX-512 F, BW, VL and VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile_q4_k(w: &[&[BlockQ4K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
        q4_k_rows4(*w, *a)
    }

    /// # Safety
    /// As [`tile_q4_k`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile_q6_k(w: &[&[BlockQ6K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
        q6_k_rows4(*w, *a)
    }

    /// # Safety
    /// As [`tile_q4_k`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile8_q6_k(w: &[&[BlockQ6K]; 4], a: &[&[BlockQ8K]; 8]) -> [[f32; 8]; 4] {
        q6_k_rows4(*w, *a)
    }

    /// # Safety
    /// As [`tile_q4_k`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile8_q4_k(w: &[&[BlockQ4K]; 4], a: &[&[BlockQ8K]; 8]) -> [[f32; 8]; 4] {
        q4_k_rows4(*w, *a)
    }

    /// `quant::dot_f16_queries` over the first `chunks` groups of 16 elements, one 512-bit
    /// register per (key, query): the AVX2 version's 16 lanes and fold, so the same bits.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F; every key and query holds at
    /// least `16 * chunks` elements.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot_f16_queries_lanes<const K: usize, const G: usize>(
        keys: [&[f16]; K],
        queries: [&[f32]; G],
        chunks: usize,
    ) -> [[f32; G]; K] {
        let mut acc = [[_mm512_setzero_ps(); G]; K];
        for i in 0..chunks {
            // SAFETY: the caller's contract: 16 * chunks elements in every slice.
            unsafe {
                let mut kf = [_mm512_setzero_ps(); K];
                for (kf, key) in kf.iter_mut().zip(&keys) {
                    *kf = _mm512_cvtph_ps(_mm256_loadu_si256(key.as_ptr().add(16 * i).cast()));
                }
                for (g, query) in queries.iter().enumerate() {
                    let q = _mm512_loadu_ps(query.as_ptr().add(16 * i));
                    for (acc, kf) in acc.iter_mut().zip(&kf) {
                        acc[g] = _mm512_fmadd_ps(*kf, q, acc[g]);
                    }
                }
            }
        }
        let mut out = [[0f32; G]; K];
        for (out, acc) in out.iter_mut().zip(&acc) {
            for (out, lanes) in out.iter_mut().zip(acc) {
                // Lanes 0..8 and 8..16 are the register's two 256-bit halves.
                let high = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*lanes));
                *out = fold16(_mm512_castps512_ps256(*lanes), _mm256_castpd_ps(high));
            }
        }
        out
    }

    /// `quant::axpy_f16_heads` on the first `n` elements of each head, 16 per instruction:
    /// each element gets the same fused multiply-adds in the same order as the portable
    /// loop, so the same bits.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F; `out` holds `G` rows of
    /// `stride >= n` elements and every value row at least `n`; `n` is a multiple of 16.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn axpy_f16_heads_lanes<const K: usize, const G: usize>(
        out: &mut [f32],
        stride: usize,
        n: usize,
        weights: [[f32; K]; G],
        values: [&[f16]; K],
    ) {
        let mut w = [[_mm512_setzero_ps(); K]; G];
        for (w, weights) in w.iter_mut().zip(&weights) {
            for (w, &p) in w.iter_mut().zip(weights) {
                *w = _mm512_set1_ps(p);
            }
        }
        for at in (0..n).step_by(16) {
            // SAFETY: the caller's contract: `n` elements in every value row and in each of
            // the `G` rows of `out`.
            unsafe {
                let mut vf = [_mm512_setzero_ps(); K];
                for (vf, row) in vf.iter_mut().zip(&values) {
                    *vf = _mm512_cvtph_ps(_mm256_loadu_si256(row.as_ptr().add(at).cast()));
                }
                for (g, w) in w.iter().enumerate() {
                    let op = out.as_mut_ptr().add(g * stride + at);
                    let mut acc = _mm512_loadu_ps(op);
                    for (w, vf) in w.iter().zip(&vf) {
                        acc = _mm512_fmadd_ps(*w, *vf, acc);
                    }
                    _mm512_storeu_ps(op, acc);
                }
            }
        }
    }

    /// # Safety
    /// The CPU must support AVX2, FMA, F16C, AVX-512 F, BW, VL and VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot4_q4_1(w: &[&[BlockQ4_1]; 4], a: &[ActQ8_1]) -> [f32; 4] {
        let [[r0], [r1], [r2], [r3]] = q4_1_rows4(*w, [a]);
        [r0, r1, r2, r3]
    }

    /// # Safety
    /// As [`dot4_q4_1`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile_q4_1(w: &[&[BlockQ4_1]; 4], a: &[&[ActQ8_1]; 4]) -> [[f32; 4]; 4] {
        q4_1_rows4(*w, *a)
    }

    /// # Safety
    /// As [`dot4_q4_1`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn tile8_q4_1(w: &[&[BlockQ4_1]; 4], a: &[&[ActQ8_1]; 8]) -> [[f32; 8]; 4] {
        q4_1_rows4(*w, *a)
    }
}

/// Four rows against `T` tokens in 512-bit registers: one register per token holds the four
/// rows' [`signed_lanes`], row r in 128-bit lane r, so each (row, token) gets exactly the
/// lanes, scale products, FMAs and [`hsum4`] of [`signed_blocks`], and the same bits.
///
/// `vpdpbusd` multiplies unsigned by signed bytes: the weights are offset by 128 to make
/// them unsigned, and each lane's sum starts from the activation block's
/// [`ActQ8_0::offset_lanes`], which takes the offset back out; per token and block that
/// leaves two loads, two `vpdpbusd` and the scaling. Only for callers compiled with
/// AVX-512 F, BW and VNNI.
#[inline(always)]
fn signed_rows4<W: SignedBlock, const T: usize>(w: [&[W]; 4], a: [&[ActQ8_0]; T]) -> [[f32; T]; 4] {
    let (w, a, n) = super::quant::tile_blocks(w, a);
    // SAFETY: AVX-512 F, BW, VL and VNNI available (the function's contract); loads read
    // 16 of the 32 activation quants each.
    unsafe {
        let spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..n {
            let (xa, xb) = W::unpack4_offset([&w[0][b], &w[1][b], &w[2][b], &w[3][b]]);
            let packed = w[0][b].scale().to_bits() as u64
                | (w[1][b].scale().to_bits() as u64) << 16
                | (w[2][b].scale().to_bits() as u64) << 32
                | (w[3][b].scale().to_bits() as u64) << 48;
            let d4 = _mm_cvtph_ps(_mm_cvtsi64_si128(packed as i64));
            let dw = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(d4));
            for (acc, tok) in acc.iter_mut().zip(&a) {
                let y = &tok[b];
                let ya = _mm512_broadcast_i32x4(_mm_loadu_si128(y.qs.as_ptr().cast()));
                let yb = _mm512_broadcast_i32x4(_mm_loadu_si128(y.qs.as_ptr().add(16).cast()));
                let start = _mm512_broadcast_i32x4(_mm_loadu_si128(y.offset_lanes.as_ptr().cast()));
                let sums = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, xa, ya), xb, yb);
                let dd = _mm512_mul_ps(dw, _mm512_set1_ps(y.d));
                *acc = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(sums), *acc);
            }
        }
        let mut out = [[0f32; T]; 4];
        for (t, acc) in acc.iter().enumerate() {
            out[0][t] = hsum4(_mm512_extractf32x4_ps::<0>(*acc));
            out[1][t] = hsum4(_mm512_extractf32x4_ps::<1>(*acc));
            out[2][t] = hsum4(_mm512_extractf32x4_ps::<2>(*acc));
            out[3][t] = hsum4(_mm512_extractf32x4_ps::<3>(*acc));
        }
        out
    }
}

/// The sums of the lanes of each of eight vectors, in one vector (lane t: vector t's sum).
/// Integer sums are exact, so the order of the additions does not matter.
#[inline(always)]
fn lane_sums8(v: [__m256i; 8]) -> __m256i {
    // SAFETY: AVX2 available (module contract).
    unsafe {
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        let h45 = _mm256_hadd_epi32(v[4], v[5]);
        let h67 = _mm256_hadd_epi32(v[6], v[7]);
        // Per 128-bit half: the sums of vectors 0..4 (4..8) over that half's lanes.
        let low = _mm256_hadd_epi32(h01, h23);
        let high = _mm256_hadd_epi32(h45, h67);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(low, high),
            _mm256_permute2x128_si256::<0x31>(low, high),
        )
    }
}

/// Super-block `b`'s activation scale of each of the `T <= 8` tokens, lane t for token t.
#[inline(always)]
fn k_token_scales<const T: usize>(a: &[&[BlockQ8K]; T], b: usize) -> __m256 {
    let mut dy = [0f32; 8];
    for (dy, tok) in dy.iter_mut().zip(a) {
        *dy = tok[b].d;
    }
    // SAFETY: AVX available (module contract); reads the 8 floats of `dy`.
    unsafe { _mm256_loadu_ps(dy.as_ptr()) }
}

/// One unpacked K-quant super-block (`q`: 64 quants per register, `sc`: their scales as
/// i16 lanes) against one activation super-block: the scaled products in eight i32 lanes,
/// and `per16` (one i16 per 16 quants) times the activation's sums of 16 in eight more.
/// Only for callers compiled with AVX-512 F, BW and VNNI.
#[inline(always)]
fn k_token_sums(
    q: &[__m512i; 4],
    sc: &[__m512i; 4],
    per16: __m256i,
    y: &BlockQ8K,
) -> (__m256i, __m256i) {
    // SAFETY: AVX-512 F, BW and VNNI available (the function's contract); loads read the
    // activation's 256 quants and its 16 sums.
    unsafe {
        let mut acc = _mm512_setzero_si512();
        for c in 0..4 {
            let yc = _mm512_loadu_si512(y.qs.as_ptr().add(64 * c).cast());
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(q[c], yc), sc[c]);
        }
        let products = _mm256_add_epi32(
            _mm512_castsi512_si256(acc),
            _mm512_extracti64x4_epi64::<1>(acc),
        );
        let sums = _mm256_madd_epi16(per16, _mm256_loadu_si256(y.bsums.as_ptr().cast()));
        (products, sums)
    }
}

/// `[row][token]` from four rows' sums held one token per lane.
#[inline(always)]
fn k_rows_by_token<const T: usize>(sums: [__m256; 4]) -> [[f32; T]; 4] {
    let mut out = [[0f32; T]; 4];
    for (out, sums) in out.iter_mut().zip(sums) {
        let mut lanes = [0f32; 8];
        // SAFETY: AVX available (module contract); writes the 8 floats of `lanes`.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums) };
        out.copy_from_slice(&lanes[..T]);
    }
    out
}

/// Four Q4_K rows against `T <= 8` tokens at the VNNI level: per row, each 64 quants (two
/// sub-blocks) sit in one 512-bit register (`vpmaddubsw` against the activation, then
/// `vpdpwssd` by the two sub-blocks' scales), and the eight tokens' integer sums are
/// reduced together. The integers are exact, and the float expression and the order of
/// the super-block sums are [`KQuantBlock::dot`]'s and [`k_tile`]'s, so every (row, token)
/// gets the portable product's bits. Only for callers compiled with AVX-512 F, BW and VNNI.
#[inline(always)]
fn q4_k_rows4<const T: usize>(w: [&[BlockQ4K]; 4], a: [&[BlockQ8K]; T]) -> [[f32; T]; 4] {
    let (w, a, n) = super::quant::tile_blocks(w, a);
    // SAFETY: AVX-512 F, BW, VL and VNNI available (the function's contract); loads read
    // inside each block's 128 quant bytes, the activation's 256 quants and 16 sums, and
    // the local arrays.
    unsafe {
        let nibble = _mm512_set1_epi8(0x0F);
        // The upper 256 bits hold the high nibbles: shift them down by 4.
        let shift = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(4));
        let mut sums = [_mm256_setzero_ps(); 4];
        for b in 0..n {
            let dy = k_token_scales(&a, b);
            for (r, row) in w.iter().enumerate() {
                let x = &row[b];
                let mut q = [_mm512_setzero_si512(); 4];
                for (c, q) in q.iter_mut().enumerate() {
                    let bytes = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        x.qs.as_ptr().add(32 * c).cast(),
                    ));
                    *q = _mm512_and_si512(_mm512_srlv_epi16(bytes, shift), nibble);
                }
                let (scales, mins) = q4k_scales_and_mins(&x.scales);
                let scales = _mm512_castsi128_si512(_mm_loadu_si128(scales.as_ptr().cast()));
                let mut sc = [_mm512_setzero_si512(); 4];
                for (c, sc) in sc.iter_mut().enumerate() {
                    let (lo, hi) = (2 * c as i16, 2 * c as i16 + 1);
                    let pick = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(_mm256_set1_epi16(lo)),
                        _mm256_set1_epi16(hi),
                    );
                    *sc = _mm512_permutexvar_epi16(pick, scales);
                }
                let mins = _mm256_loadu_si256(mins.as_ptr().cast());
                let mut sumi = [_mm256_setzero_si256(); 8];
                let mut summin = [_mm256_setzero_si256(); 8];
                for (t, tok) in a.iter().enumerate() {
                    (sumi[t], summin[t]) = k_token_sums(&q, &sc, mins, &tok[b]);
                }
                let sumi = _mm256_cvtepi32_ps(lane_sums8(sumi));
                let summin = _mm256_cvtepi32_ps(lane_sums8(summin));
                // d * dy * sumi - dmin * dy * summin, lane by lane as the scalar expression.
                let (d, dmin) = half_pair(x.d, x.dmin);
                let plus = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(d), dy), sumi);
                let minus = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(dmin), dy), summin);
                sums[r] = _mm256_add_ps(sums[r], _mm256_sub_ps(plus, minus));
            }
        }
        k_rows_by_token(sums)
    }
}

/// Four Q6_K rows against `T <= 8` tokens at the VNNI level, as [`q4_k_rows4`]: each 64
/// unpacked quants in one 512-bit register, `vpmaddubsw` then `vpdpwssd` by their four
/// 16-element scales, the `- 32` offset taken out through the activation's sums, the eight
/// tokens' integers reduced together; the portable product's bits. Only for callers
/// compiled with AVX-512 F, BW and VNNI.
#[inline(always)]
fn q6_k_rows4<const T: usize>(w: [&[BlockQ6K]; 4], a: [&[BlockQ8K]; T]) -> [[f32; T]; 4] {
    let (w, a, n) = super::quant::tile_blocks(w, a);
    // SAFETY: AVX-512 F, BW, VL and VNNI available (the function's contract); loads read
    // the activation's 256 quants and 16 sums, and the local arrays.
    unsafe {
        let mut sums = [_mm256_setzero_ps(); 4];
        for b in 0..n {
            let dy = k_token_scales(&a, b);
            for (r, row) in w.iter().enumerate() {
                let u = row[b].unpack();
                let mut q = [_mm512_setzero_si512(); 4];
                let mut sc = [_mm512_setzero_si512(); 4];
                let scales = _mm512_castsi256_si512(u.scales16);
                for c in 0..4 {
                    q[c] =
                        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(u.q[2 * c]), u.q[2 * c + 1]);
                    // i16 lanes 8k..8k + 8 (quants 16k..16k + 16) take scale 4c + k.
                    let first = 4 * c as i16;
                    let pick = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(_mm256_setr_m128i(
                            _mm_set1_epi16(first),
                            _mm_set1_epi16(first + 1),
                        )),
                        _mm256_setr_m128i(_mm_set1_epi16(first + 2), _mm_set1_epi16(first + 3)),
                    );
                    sc[c] = _mm512_permutexvar_epi16(pick, scales);
                }
                let mut dots = [_mm256_setzero_si256(); 8];
                let mut offsets = [_mm256_setzero_si256(); 8];
                for (t, tok) in a.iter().enumerate() {
                    (dots[t], offsets[t]) = k_token_sums(&q, &sc, u.scales16, &tok[b]);
                }
                // (q - 32) . y = q . y - 32 * sum(y), per 16-element scale: exact integers.
                let sumi = _mm256_sub_epi32(
                    lane_sums8(dots),
                    _mm256_slli_epi32::<5>(lane_sums8(offsets)),
                );
                let dd = _mm256_mul_ps(_mm256_set1_ps(u.d), dy);
                let value = _mm256_mul_ps(dd, _mm256_cvtepi32_ps(sumi));
                sums[r] = _mm256_add_ps(sums[r], value);
            }
        }
        k_rows_by_token(sums)
    }
}

// --- Q4_1: unsigned nibbles and a min, against Q8_1 activations (which carry d * sum) ---

#[inline(always)]
fn dot_q4_1_body<const VNNI: bool>(w: &[BlockQ4_1], a: &[ActQ8_1]) -> f32 {
    // SAFETY: AVX available (module contract).
    let mut acc = unsafe { _mm_setzero_ps() };
    let mut mins = 0f32;
    for (x, y) in w.iter().zip(a) {
        let ((dx, mx), (dy, sy)) = (half_pair(x.d, x.m), (y.d, y.s));
        mins += mx * sy;
        let p = unsigned_lanes::<VNNI>(nibbles(&x.qs), load32(&y.qs));
        acc = fmadd4(low4(scale(dx, dy)), p, acc);
    }
    hsum4(acc) + mins
}

/// Four rows of Q4_1; per row the same operations in the same order as [`dot_q4_1_body`].
#[inline(always)]
fn dot4_q4_1_body<const VNNI: bool>(w: &[&[BlockQ4_1]; 4], a: &[ActQ8_1]) -> [f32; 4] {
    let [[r0], [r1], [r2], [r3]] = q4_1_tile::<VNNI, 1>(*w, [a]);
    [r0, r1, r2, r3]
}

#[inline(always)]
fn tile_q4_1_body<const VNNI: bool>(w: &[&[BlockQ4_1]; 4], a: &[&[ActQ8_1]; 4]) -> [[f32; 4]; 4] {
    q4_1_tile::<VNNI, 4>(*w, *a)
}

/// Four rows of Q4_1 against `T` activation rows; per (row, token) the same operations in
/// the same order as [`dot_q4_1_body`].
#[inline(always)]
fn q4_1_tile<const VNNI: bool, const T: usize>(
    w: [&[BlockQ4_1]; 4],
    a: [&[ActQ8_1]; T],
) -> [[f32; T]; 4] {
    let (w, a, n) = super::quant::tile_blocks(w, a);
    // SAFETY: AVX available (module contract).
    let mut acc = [[unsafe { _mm_setzero_ps() }; T]; 4];
    let mut mins = [[0f32; T]; 4];
    for b in 0..n {
        let mut xs = [(zeros_i(), 0f32, 0f32); 4];
        for (x, row) in xs.iter_mut().zip(&w) {
            let x_b = &row[b];
            let (d, m) = half_pair(x_b.d, x_b.m);
            *x = (nibbles(&x_b.qs), d, m);
        }
        for (t, tok) in a.iter().enumerate() {
            let y = &tok[b];
            let (qy, (dy, sy)) = (load32(&y.qs), (y.d, y.s));
            for r in 0..4 {
                let (qx, d, m) = xs[r];
                mins[r][t] += m * sy;
                acc[r][t] = fmadd4(
                    low4(scale(d, dy)),
                    unsigned_lanes::<VNNI>(qx, qy),
                    acc[r][t],
                );
            }
        }
    }
    let mut out = [[0f32; T]; 4];
    for r in 0..4 {
        for t in 0..T {
            out[r][t] = hsum4(acc[r][t]) + mins[r][t];
        }
    }
    out
}

/// Four Q4_1 rows against `T` tokens in 512-bit registers, the rows laid out as in
/// [`signed_rows4`] (row r in 128-bit lane r of one register per token): per (row, token)
/// the lanes, scale products, FMAs and [`hsum4`] of [`dot_q4_1_body`], and its min terms
/// `m_row * s_token` summed over blocks in order (lane t of a row's eight-lane register
/// rounding as the scalar sum does). The nibbles are unsigned already, so `vpdpbusd` takes
/// them as they are. Only for callers compiled with AVX-512 F, BW and VNNI; `T <= 8`.
#[inline(always)]
fn q4_1_rows4<const T: usize>(w: [&[BlockQ4_1]; 4], a: [&[ActQ8_1]; T]) -> [[f32; T]; 4] {
    let (w, a, n) = super::quant::tile_blocks(w, a);
    // SAFETY: AVX-512 F, BW, VL and VNNI available (the function's contract); loads read
    // 16 of the 32 activation quants each, and the 8 floats of `s`.
    unsafe {
        let zero = _mm512_setzero_si512();
        let spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
        let mut acc = [_mm512_setzero_ps(); T];
        let mut mins = [_mm256_setzero_ps(); 4];
        let mut one_token_mins = [0f32; 4];
        for b in 0..n {
            let (x0, x1, x2, x3) = (&w[0][b], &w[1][b], &w[2][b], &w[3][b]);
            let (xa, xb) = nibbles4([&x0.qs, &x1.qs, &x2.qs, &x3.qs]);
            let packed = x0.d.to_bits() as u64
                | (x1.d.to_bits() as u64) << 16
                | (x2.d.to_bits() as u64) << 32
                | (x3.d.to_bits() as u64) << 48;
            let dw = _mm512_permutexvar_ps(
                spread,
                _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi64_si128(packed as i64))),
            );
            let mut s = [0f32; 8];
            for ((acc, tok), s) in acc.iter_mut().zip(&a).zip(s.iter_mut()) {
                let y = &tok[b];
                let (dy, sy) = (y.d, y.s);
                *s = sy;
                let ya = _mm512_broadcast_i32x4(_mm_loadu_si128(y.qs.as_ptr().cast()));
                let yb = _mm512_broadcast_i32x4(_mm_loadu_si128(y.qs.as_ptr().add(16).cast()));
                let sums = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, xa, ya), xb, yb);
                let dd = _mm512_mul_ps(dw, _mm512_set1_ps(dy));
                *acc = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(sums), *acc);
            }
            let (m01, m23) = (half_pair(x0.m, x1.m), half_pair(x2.m, x3.m));
            let m = [m01.0, m01.1, m23.0, m23.1];
            if T == 1 {
                // One token: scalar sums, without the detour through memory below.
                for (mins, m) in one_token_mins.iter_mut().zip(m) {
                    *mins += m * s[0];
                }
            } else {
                let s = _mm256_loadu_ps(s.as_ptr());
                for (mins, m) in mins.iter_mut().zip(m) {
                    *mins = _mm256_add_ps(*mins, _mm256_mul_ps(_mm256_set1_ps(m), s));
                }
            }
        }
        let mut min_sums = [[0f32; 8]; 4];
        for ((out, mins), one) in min_sums.iter_mut().zip(mins).zip(one_token_mins) {
            _mm256_storeu_ps(out.as_mut_ptr(), mins);
            if T == 1 {
                out[0] = one;
            }
        }
        let mut out = [[0f32; T]; 4];
        for (t, acc) in acc.iter().enumerate() {
            out[0][t] = hsum4(_mm512_extractf32x4_ps::<0>(*acc)) + min_sums[0][t];
            out[1][t] = hsum4(_mm512_extractf32x4_ps::<1>(*acc)) + min_sums[1][t];
            out[2][t] = hsum4(_mm512_extractf32x4_ps::<2>(*acc)) + min_sums[2][t];
            out[3][t] = hsum4(_mm512_extractf32x4_ps::<3>(*acc)) + min_sums[3][t];
        }
        out
    }
}

// --- K-quants (256-element super-blocks against Q8_K activations) ---

/// A K-quant super-block format: unpacked once, then multiplied with any number of
/// activation super-blocks.
trait KQuantBlock {
    type Unpacked;
    fn unpack(&self) -> Self::Unpacked;
    fn dot(u: &Self::Unpacked, a: &BlockQ8K) -> f32;
}

/// One K-quant row against one token: each super-block unpacked and multiplied, the results
/// summed in order from zero (as [`k_tile`] sums each of its pairs).
#[inline(always)]
fn k_row<W: KQuantBlock>(w: &[W], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        sum += W::dot(&w.unpack(), a);
    }
    sum
}

/// The K-quant tile loop: every weight super-block unpacked once, then multiplied with the
/// four tokens, each (row, token) summed over super-blocks in order from zero.
#[inline(always)]
fn k_tile<W: KQuantBlock>(w: [&[W]; 4], a: [&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
    let (w, a, n) = super::quant::tile_blocks(w, a);
    let mut sums = [[0f32; 4]; 4];
    for b in 0..n {
        for (row, sums) in w.iter().zip(sums.iter_mut()) {
            let u = row[b].unpack();
            for (tok, sum) in a.iter().zip(sums.iter_mut()) {
                *sum += W::dot(&u, &tok[b]);
            }
        }
    }
    sums
}

/// A Q4_K super-block unpacked once (nibbles split, 6-bit scales and mins decoded), so that
/// a tile can multiply it with several tokens.
struct Q4kUnpacked {
    q: [__m256i; 8],
    scales: [i16; 8],
    /// The eight sub-block mins as 16 i16 lanes, each twice: lane `i` pairs with the
    /// activation's `bsums[i]` (sums of 16 quants; a sub-block is 32).
    mins: __m256i,
    d: f32,
    dmin: f32,
}

/// A Q4_K super-block's eight 6-bit sub-block scales, and its eight mins each twice (lane
/// `i` pairs with the activation's `bsums[i]`, a sum of 16 quants; a sub-block is 32).
#[inline(always)]
fn q4k_scales_and_mins(packed: &[u8; 12]) -> ([i16; 8], [i16; 16]) {
    let mut scales = [0i16; 8];
    let mut mins = [0i16; 16];
    for j in 0..QK_K / 32 {
        let (s, m) = scale_min_k4(j, packed);
        scales[j] = s as i16;
        mins[2 * j] = m as i16;
        mins[2 * j + 1] = m as i16;
    }
    (scales, mins)
}

impl KQuantBlock for BlockQ4K {
    type Unpacked = Q4kUnpacked;

    #[inline(always)]
    fn unpack(&self) -> Q4kUnpacked {
        // SAFETY: AVX2 available (module contract); every load reads 32 bytes inside the
        // block's 128 quant bytes.
        let q = unsafe {
            let mask = _mm256_set1_epi8(0x0F);
            let mut q = [_mm256_setzero_si256(); 8];
            for c in 0..QK_K / 64 {
                let bytes = _mm256_loadu_si256(self.qs.as_ptr().add(c * 32).cast());
                q[2 * c] = _mm256_and_si256(bytes, mask);
                q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
            }
            q
        };
        let (scales, mins) = q4k_scales_and_mins(&self.scales);
        // SAFETY: AVX available (module contract); reads the 32 bytes of `mins`.
        let mins = unsafe { _mm256_loadu_si256(mins.as_ptr().cast()) };
        let (d, dmin) = half_pair(self.d, self.dmin);
        Q4kUnpacked {
            q,
            scales,
            mins,
            d,
            dmin,
        }
    }

    /// One unpacked Q4_K super-block against one activation super-block: the sub-block
    /// products weighted by their 6-bit scales are summed as exact integers in vector lanes
    /// (one horizontal sum per super-block instead of two per sub-block), then combined by the
    /// portable version's float expression in its order, so the result is bit-for-bit the
    /// portable one's.
    #[inline(always)]
    fn dot(u: &Q4kUnpacked, a: &BlockQ8K) -> f32 {
        // SAFETY: AVX2 available (module contract); loads read 32 bytes inside the
        // activation's 256 quants.
        let sumi = unsafe {
            let mut acc = _mm256_setzero_si256();
            for c in 0..QK_K / 64 {
                let y0 = _mm256_loadu_si256(a.qs.as_ptr().add(c * 64).cast());
                let y1 = _mm256_loadu_si256(a.qs.as_ptr().add(c * 64 + 32).cast());
                let p0 = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(u.q[2 * c], y0),
                    _mm256_set1_epi16(u.scales[2 * c]),
                );
                let p1 = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(u.q[2 * c + 1], y1),
                    _mm256_set1_epi16(u.scales[2 * c + 1]),
                );
                acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
            }
            hsum_i32(acc)
        };
        // sum_j min_j * (bsums[2j] + bsums[2j + 1]) as one multiply-add of 16 lanes: the same
        // exact integer as the scalar loop.
        // SAFETY: AVX2 available (module contract); reads the 32 bytes of `bsums`.
        let summin = hsum_i32(unsafe {
            _mm256_madd_epi16(u.mins, _mm256_loadu_si256(a.bsums.as_ptr().cast()))
        });
        u.d * a.d * sumi as f32 - u.dmin * a.d * summin as f32
    }
}

/// A Q6_K super-block unpacked once: the 6-bit quants (0..63) in element order, 32 per
/// register.
struct Q6kUnpacked {
    q: [__m256i; 8],
    scales: [i8; QK_K / 16],
    /// The 16 scales widened to i16 lanes, for the offset term.
    scales16: __m256i,
    d: f32,
}

impl KQuantBlock for BlockQ6K {
    type Unpacked = Q6kUnpacked;

    #[inline(always)]
    fn unpack(&self) -> Q6kUnpacked {
        // SAFETY: AVX2 available (module contract); loads read 32 bytes inside `ql` (128
        // bytes) and `qh` (64).
        let q = unsafe {
            let low4 = _mm256_set1_epi8(0x0F);
            let mut q = [_mm256_setzero_si256(); 8];
            for half in 0..2 {
                let ql0 = _mm256_loadu_si256(self.ql.as_ptr().add(half * 64).cast());
                let ql1 = _mm256_loadu_si256(self.ql.as_ptr().add(half * 64 + 32).cast());
                let qh = _mm256_loadu_si256(self.qh.as_ptr().add(half * 32).cast());
                q[half * 4] = _mm256_or_si256(_mm256_and_si256(ql0, low4), q6_high(qh));
                q[half * 4 + 1] = _mm256_or_si256(
                    _mm256_and_si256(ql1, low4),
                    q6_high(_mm256_srli_epi16(qh, 2)),
                );
                q[half * 4 + 2] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                    q6_high(_mm256_srli_epi16(qh, 4)),
                );
                q[half * 4 + 3] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                    q6_high(_mm256_srli_epi16(qh, 6)),
                );
            }
            q
        };
        // SAFETY: AVX2 available (module contract); reads the 16 bytes of `scales`.
        let scales16 =
            unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(self.scales.as_ptr().cast())) };
        Q6kUnpacked {
            q,
            scales: self.scales,
            scales16,
            d: half(self.d),
        }
    }

    /// One unpacked Q6_K super-block against one activation super-block: products weighted by
    /// the signed 16-element scales summed as exact integers; bit-for-bit the portable result.
    #[inline(always)]
    fn dot(u: &Q6kUnpacked, a: &BlockQ8K) -> f32 {
        // SAFETY: AVX2 available (module contract); loads read 32 bytes inside the
        // activation's 256 quants, or its 32 bytes of `bsums`.
        let dot = unsafe {
            let mut acc = _mm256_setzero_si256();
            for (j, &q) in u.q.iter().enumerate() {
                let y = _mm256_loadu_si256(a.qs.as_ptr().add(j * 32).cast());
                let scales = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_set1_epi16(u.scales[2 * j] as i16)),
                    _mm_set1_epi16(u.scales[2 * j + 1] as i16),
                    1,
                );
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), scales));
            }
            // (q - 32) . y = q . y - 32 * sum(y), and the sums per 16 are the block's bsums:
            // subtract 32 * scale * bsum lane by lane before the one horizontal sum, the same
            // exact integer as subtracting the scalar sum afterwards.
            let offset = _mm256_madd_epi16(u.scales16, _mm256_loadu_si256(a.bsums.as_ptr().cast()));
            hsum_i32(_mm256_sub_epi32(acc, _mm256_slli_epi32(offset, 5)))
        };
        u.d * a.d * dot as f32
    }
}

/// The two high bits of each 6-bit quant, from `qh` shifted into bits 0-1, moved to bits
/// 4-5.
#[inline(always)]
fn q6_high(bits: __m256i) -> __m256i {
    // SAFETY: AVX2 available (module contract).
    unsafe { _mm256_slli_epi16(_mm256_and_si256(bits, _mm256_set1_epi8(0x03)), 4) }
}
