//! Activation quantisation, quantised dot products and dequantisation.
//!
//! These are portable scalar kernels written so that LLVM vectorises their inner integer
//! loops. They reproduce ggml's arithmetic (activation rounding, scale unpacking, the order
//! of the integer and float parts) so that logits match llama.cpp's closely enough for greedy
//! decoding to agree token for token. Explicit SIMD with run-time dispatch is the job of the
//! engine-speed work; any such kernel must keep agreeing with these, which stay as the
//! reference.

use half::f16;

use super::blocks::*;

/// Rounds half to even, as ggml's vectorised quantisers (and its `nearest_int`) do.
#[inline]
fn round_even(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// One 32-value block quantised as ggml's Q8_0/Q8_1 do: the scale `amax / 127`, each value
/// `round_ties_even(v * 127 / amax)`; also the sum of the quants (Q8_1's `s`).
#[inline]
fn quantize_block(chunk: &[f32]) -> (f32, [i8; QK], i32) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if let Ok(chunk) = <&[f32; QK]>::try_from(chunk) {
        // Finite inputs only: the vector conversion turns NaN and infinities into
        // `i32::MIN` where the scalar one gives 0 or saturates.
        if let Some(block) = avx2::quantize_block(chunk) {
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

pub fn quantize_q8_0(x: &[f32], out: &mut Vec<BlockQ8_0>) {
    out.clear();
    for chunk in x.chunks_exact(QK) {
        let (amax, qs, _) = quantize_block(chunk);
        out.push(BlockQ8_0 {
            d: f16::from_f32(amax / 127.0),
            qs,
        });
    }
}

pub fn quantize_q8_1(x: &[f32], out: &mut Vec<BlockQ8_1>) {
    out.clear();
    for chunk in x.chunks_exact(QK) {
        let (amax, qs, sum) = quantize_block(chunk);
        let d = amax / 127.0;
        out.push(BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(d * sum as f32),
            qs,
        });
    }
}

pub fn quantize_q8_k(x: &[f32], out: &mut Vec<BlockQ8K>) {
    out.clear();
    for chunk in x.chunks_exact(QK_K) {
        // The scale comes from the signed value of largest magnitude, so that it maps to
        // exactly -127 (ggml's choice, kept for fidelity).
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in chunk {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut block = BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        if amax != 0.0 {
            let iscale = -127.0 / max;
            for (q, v) in block.qs.iter_mut().zip(chunk) {
                *q = round_even(iscale * v).min(127) as i8;
            }
            for (s, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
                *s = group.iter().map(|&q| q as i16).sum();
            }
            block.d = 1.0 / iscale;
        }
        out.push(block);
    }
}

/// The blocks a four-by-four tile can multiply: the shortest of its rows and tokens.
#[inline(always)]
#[allow(dead_code)] // used by the SIMD tiles only
fn tile_blocks<W, A>(w: &[&[W]; 4], a: &[&[A]; 4]) -> usize {
    w.iter()
        .map(|r| r.len())
        .chain(a.iter().map(|t| t.len()))
        .min()
        .unwrap_or(0)
}

/// The integer core of every 32-element block product.
#[inline]
fn dot_i8(a: &[i8; QK], b: &[i8; QK]) -> i32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        avx2::dot_i8_32(a, b)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    {
        a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
mod avx2 {
    //! AVX2 versions of the 32-element block products, in ggml's arrangement: integer
    //! products per block, scaled and accumulated in a vector register, one horizontal sum
    //! per row. They must agree with the portable versions (the kernel tests check both
    //! against the same reference).

    use std::arch::x86_64::*;

    use super::super::blocks::*;

    /// [`super::quantize_block`] eight lanes at a time: the same maximum of magnitudes, the
    /// same scale, the same products rounded to nearest-even, so the same quants and sum.
    /// `None` if the block holds a NaN or an infinity (the caller takes the scalar path).
    #[inline]
    pub fn quantize_block(chunk: &[f32; 32]) -> Option<(f32, [i8; 32], i32)> {
        // SAFETY: AVX2 is enabled for this build; the loads read the 32 floats of `chunk`
        // and the store writes the 32 bytes of `qs`.
        unsafe {
            let magnitude = |v: __m256| _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
            let v = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(chunk.as_ptr().add(i)));
            let m = _mm256_max_ps(
                _mm256_max_ps(magnitude(v[0]), magnitude(v[1])),
                _mm256_max_ps(magnitude(v[2]), magnitude(v[3])),
            );
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
            // A NaN anywhere makes some lane unordered with itself.
            let nan = v.iter().fold(0, |bits, &v| {
                bits | _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))
            });
            if nan != 0 || !amax.is_finite() {
                return None;
            }
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            // `cvtps` rounds to nearest-even (the default rounding mode), as `round_even`.
            let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, id)));
            let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            // Pack to bytes (packs work within 128-bit lanes), then restore the order.
            let bytes = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let bytes =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            let mut qs = [0i8; 32];
            _mm256_storeu_si256(qs.as_mut_ptr().cast(), bytes);
            Some((amax, qs, hsum_i32(sum)))
        }
    }

    /// 32 signed bytes times 32 signed bytes, summed: `maddubs` multiplies unsigned by
    /// signed, so move `a`'s sign onto `b` first (as ggml does).
    #[inline]
    pub fn dot_i8_32(a: &[i8; 32], b: &[i8; 32]) -> i32 {
        // SAFETY: AVX2 is enabled for this build (cfg above); the loads are unaligned loads
        // of exactly 32 bytes from 32-byte arrays.
        unsafe {
            let va = _mm256_loadu_si256(a.as_ptr().cast());
            let vb = _mm256_loadu_si256(b.as_ptr().cast());
            let quads = _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va)),
                _mm256_set1_epi16(1),
            );
            let sum128 = _mm_add_epi32(
                _mm256_castsi256_si128(quads),
                _mm256_extracti128_si256(quads, 1),
            );
            let sum64 = _mm_add_epi32(sum128, _mm_unpackhi_epi64(sum128, sum128));
            let sum32 = _mm_add_epi32(sum64, _mm_shuffle_epi32(sum64, 1));
            _mm_cvtsi128_si32(sum32)
        }
    }

    /// Unsigned bytes times signed bytes over 32 elements: the sums of each 16-element half.
    #[inline]
    pub fn dot_u8_i8_halves(u: &[u8], y: &[i8]) -> (i32, i32) {
        assert!(u.len() >= 32 && y.len() >= 32);
        // SAFETY: AVX2 is enabled for this build; both slices hold at least 32 bytes (checked).
        unsafe {
            let p = _mm256_madd_epi16(
                _mm256_maddubs_epi16(
                    _mm256_loadu_si256(u.as_ptr().cast()),
                    _mm256_loadu_si256(y.as_ptr().cast()),
                ),
                _mm256_set1_epi16(1),
            );
            let hsum = |v: __m128i| {
                let v = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
                _mm_cvtsi128_si32(_mm_add_epi32(v, _mm_shuffle_epi32(v, 1)))
            };
            (
                hsum(_mm256_castsi256_si128(p)),
                hsum(_mm256_extracti128_si256(p, 1)),
            )
        }
    }

    #[inline]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        // SAFETY (caller): AVX2 available.
        unsafe {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)))
        }
    }

    /// A Q4_K super-block unpacked once (nibbles split, 6-bit scales and mins decoded), so
    /// that a tile can multiply it with several tokens.
    struct Q4kUnpacked {
        q: [__m256i; 8],
        scales: [i16; 8],
        mins: [i32; 8],
        d: f32,
        dmin: f32,
    }

    #[inline(always)]
    fn unpack_q4k(w: &BlockQ4K) -> Q4kUnpacked {
        // SAFETY: AVX2 is enabled for this build; every load reads 32 bytes inside the
        // block's 128 quant bytes.
        unsafe {
            let mask = _mm256_set1_epi8(0x0F);
            let mut q = [_mm256_setzero_si256(); 8];
            for c in 0..QK_K / 64 {
                let bytes = _mm256_loadu_si256(w.qs.as_ptr().add(c * 32).cast());
                q[2 * c] = _mm256_and_si256(bytes, mask);
                q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
            }
            let mut scales = [0i16; 8];
            let mut mins = [0i32; 8];
            for j in 0..QK_K / 32 {
                let (s, m) = scale_min_k4(j, &w.scales);
                scales[j] = s as i16;
                mins[j] = m as i32;
            }
            Q4kUnpacked {
                q,
                scales,
                mins,
                d: w.d.to_f32(),
                dmin: w.dmin.to_f32(),
            }
        }
    }

    /// One unpacked Q4_K super-block against one activation super-block: the sub-block
    /// products weighted by their 6-bit scales are summed as exact integers in vector lanes
    /// (one horizontal sum per super-block instead of two per sub-block), then combined by
    /// the portable version's float expression in its order, so the result is bit-for-bit
    /// the portable one's.
    #[inline(always)]
    fn dot_q4k_unpacked(u: &Q4kUnpacked, a: &BlockQ8K) -> f32 {
        // SAFETY: AVX2 is enabled for this build; loads read 32 bytes inside the
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
        let summin: i32 = (0..QK_K / 32)
            .map(|j| u.mins[j] * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32))
            .sum();
        u.d * a.d * sumi as f32 - u.dmin * a.d * summin as f32
    }

    pub fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
        k_row(w, a, unpack_q4k, dot_q4k_unpacked)
    }

    /// One K-quant row against one token: each super-block unpacked and multiplied, the
    /// results summed in order from zero (as [`k_tile`] sums each of its pairs).
    #[inline(always)]
    fn k_row<W, U>(
        w: &[W],
        a: &[BlockQ8K],
        unpack: impl Fn(&W) -> U,
        dot: impl Fn(&U, &BlockQ8K) -> f32,
    ) -> f32 {
        let mut sum = 0f32;
        for (w, a) in w.iter().zip(a) {
            sum += dot(&unpack(w), a);
        }
        sum
    }

    /// Four rows of Q4_K against four tokens: each super-block unpacked once; per (row,
    /// token) the same operations in the same order as [`dot_q4_k`].
    pub fn tile_q4_k(w: [&[BlockQ4K]; 4], a: [&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
        k_tile(w, a, unpack_q4k, dot_q4k_unpacked)
    }

    /// The K-quant tile loop: every weight super-block unpacked once, then multiplied with
    /// the four tokens, each (row, token) summed over super-blocks in order from zero.
    #[inline(always)]
    fn k_tile<W, U>(
        w: [&[W]; 4],
        a: [&[BlockQ8K]; 4],
        unpack: impl Fn(&W) -> U,
        dot: impl Fn(&U, &BlockQ8K) -> f32,
    ) -> [[f32; 4]; 4] {
        let n = super::tile_blocks(&w, &a);
        let mut sums = [[0f32; 4]; 4];
        for b in 0..n {
            for (row, sums) in w.iter().zip(sums.iter_mut()) {
                let u = unpack(&row[b]);
                for (tok, sum) in a.iter().zip(sums.iter_mut()) {
                    *sum += dot(&u, &tok[b]);
                }
            }
        }
        sums
    }

    /// A Q6_K super-block unpacked once: the 6-bit quants (0..63) in element order, 32 per
    /// register.
    struct Q6kUnpacked {
        q: [__m256i; 8],
        scales: [i8; QK_K / 16],
        d: f32,
    }

    #[inline(always)]
    fn unpack_q6k_avx2(w: &BlockQ6K) -> Q6kUnpacked {
        // SAFETY: AVX2 is enabled for this build; loads read 32 bytes inside `ql` (128
        // bytes) and `qh` (64).
        unsafe {
            let low4 = _mm256_set1_epi8(0x0F);
            let low2 = _mm256_set1_epi8(0x03);
            let mut q = [_mm256_setzero_si256(); 8];
            for half in 0..2 {
                let ql0 = _mm256_loadu_si256(w.ql.as_ptr().add(half * 64).cast());
                let ql1 = _mm256_loadu_si256(w.ql.as_ptr().add(half * 64 + 32).cast());
                let qh = _mm256_loadu_si256(w.qh.as_ptr().add(half * 32).cast());
                let high = |bits: __m256i| _mm256_slli_epi16(_mm256_and_si256(bits, low2), 4);
                q[half * 4] = _mm256_or_si256(_mm256_and_si256(ql0, low4), high(qh));
                q[half * 4 + 1] =
                    _mm256_or_si256(_mm256_and_si256(ql1, low4), high(_mm256_srli_epi16(qh, 2)));
                q[half * 4 + 2] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                    high(_mm256_srli_epi16(qh, 4)),
                );
                q[half * 4 + 3] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                    high(_mm256_srli_epi16(qh, 6)),
                );
            }
            Q6kUnpacked {
                q,
                scales: w.scales,
                d: w.d.to_f32(),
            }
        }
    }

    /// One unpacked Q6_K super-block against one activation super-block: products weighted
    /// by the signed 16-element scales summed as exact integers; bit-for-bit the portable
    /// result.
    #[inline(always)]
    fn dot_q6k_unpacked(u: &Q6kUnpacked, a: &BlockQ8K) -> f32 {
        // SAFETY: AVX2 is enabled for this build; loads read 32 bytes inside the
        // activation's 256 quants.
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
            hsum_i32(acc)
        };
        // (q - 32) . y = q . y - 32 * sum(y); the sums per 16 are the block's bsums.
        let offset: i32 = (0..QK_K / 16)
            .map(|g| u.scales[g] as i32 * a.bsums[g] as i32)
            .sum();
        u.d * a.d * (dot - 32 * offset) as f32
    }

    /// Q6_K: see [`dot_q6k_unpacked`].
    pub fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
        k_row(w, a, unpack_q6k_avx2, dot_q6k_unpacked)
    }

    /// Four rows of Q6_K against four tokens; per (row, token) the same operations in the
    /// same order as [`dot_q6_k`].
    pub fn tile_q6_k(w: [&[BlockQ6K]; 4], a: [&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
        k_tile(w, a, unpack_q6k_avx2, dot_q6k_unpacked)
    }

    #[cfg(target_feature = "fma")]
    mod fma_kernels {
        use super::*;

        /// Unsigned bytes times signed bytes, summed in 8 lanes, as floats. Lane `i` is the
        /// exact integer sum of products `4i..4i + 4` either way: activation quants lie in
        /// -127..=127 and weight magnitudes are at most 128, so no pair reaches `maddubs`'s
        /// i16 saturation, and the VNNI form (one instruction instead of two) gives the
        /// same bits.
        #[inline]
        unsafe fn mul_sum_us8(x: __m256i, y: __m256i) -> __m256 {
            #[cfg(all(target_feature = "avx512vnni", target_feature = "avx512vl"))]
            // SAFETY (caller): AVX2 available; AVX-512 VNNI and VL are enabled for this build.
            unsafe {
                _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y))
            }
            #[cfg(not(all(target_feature = "avx512vnni", target_feature = "avx512vl")))]
            // SAFETY (caller): AVX2 available.
            unsafe {
                _mm256_cvtepi32_ps(_mm256_madd_epi16(
                    _mm256_maddubs_epi16(x, y),
                    _mm256_set1_epi16(1),
                ))
            }
        }

        /// Signed bytes times signed bytes, summed in 8 lanes, as floats.
        #[inline]
        unsafe fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256 {
            // SAFETY (caller): AVX2 available.
            unsafe { mul_sum_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)) }
        }

        #[inline]
        unsafe fn hsum(v: __m256) -> f32 {
            // SAFETY (caller): AVX available.
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
            }
        }

        /// 16 bytes of nibbles -> 32 bytes: low nibbles first, then high nibbles.
        #[inline]
        unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
            // SAFETY (caller): AVX2 available; reads exactly 16 bytes.
            unsafe {
                let lo = _mm_loadu_si128(qs.as_ptr().cast());
                let both =
                    _mm256_insertf128_si256(_mm256_castsi128_si256(lo), _mm_srli_epi16(lo, 4), 1);
                _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
            }
        }

        /// Byte j is 0xFF where bit j of `bits` is set, else 0.
        #[inline]
        unsafe fn bytes_from_bits(bits: u32) -> __m256i {
            // SAFETY (caller): AVX2 available.
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

        #[inline]
        fn scale(a: f32, b: f32) -> __m256 {
            // SAFETY: AVX is implied by AVX2.
            unsafe { _mm256_set1_ps(a * b) }
        }

        /// The loop of the formats whose unpacked quants are signed: per block, unpack,
        /// multiply with the activation quants, scale, accumulate in a vector; one
        /// horizontal sum per row.
        #[inline(always)]
        fn signed_blocks<W>(
            w: &[W],
            a: &[BlockQ8_0],
            unpack: impl Fn(&W) -> (__m256i, f32),
        ) -> f32 {
            // SAFETY: AVX2+FMA enabled for this build; loads read whole 32-byte arrays.
            unsafe {
                let mut acc = _mm256_setzero_ps();
                for (x, y) in w.iter().zip(a) {
                    let (qx, d) = unpack(x);
                    let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
                    acc = _mm256_fmadd_ps(scale(d, y.d.to_f32()), mul_sum_i8(qx, qy), acc);
                }
                hsum(acc)
            }
        }

        /// Four rows against one activation row: the activation block is loaded and its
        /// scale converted once for all four, and the four accumulations are independent
        /// chains the core overlaps. Each row's arithmetic, and its order, is exactly that
        /// of [`signed_blocks`], so the results are bit-for-bit the same.
        #[inline(always)]
        fn signed_blocks4<W>(
            w: [&[W]; 4],
            a: &[BlockQ8_0],
            unpack: impl Fn(&W) -> (__m256i, f32),
        ) -> [f32; 4] {
            let n = w.iter().map(|r| r.len()).min().unwrap_or(0).min(a.len());
            // SAFETY: AVX2+FMA enabled for this build; loads read whole 32-byte arrays.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                for (b, y) in a[..n].iter().enumerate() {
                    let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
                    let dy = y.d.to_f32();
                    for (acc, row) in acc.iter_mut().zip(w) {
                        let (qx, d) = unpack(&row[b]);
                        *acc = _mm256_fmadd_ps(scale(d, dy), mul_sum_i8(qx, qy), *acc);
                    }
                }
                acc.map(|v| hsum(v))
            }
        }

        /// Block `b` of each of four rows, unpacked. Spelled out: `w.map` was not inlined
        /// (a call per block in `perf`).
        #[inline(always)]
        fn column<W, U>(w: &[&[W]; 4], b: usize, unpack: &impl Fn(&W) -> U) -> [U; 4] {
            [
                unpack(&w[0][b]),
                unpack(&w[1][b]),
                unpack(&w[2][b]),
                unpack(&w[3][b]),
            ]
        }

        /// Four rows against four activation rows (a register tile): each weight block is
        /// unpacked once for the four tokens and each activation block loaded once for the
        /// four rows. Every (row, token) pair accumulates exactly as [`signed_blocks`] does,
        /// block by block in the same order, so the results are the same to the bit.
        #[inline(always)]
        fn signed_tile<W>(
            w: [&[W]; 4],
            a: [&[BlockQ8_0]; 4],
            unpack: impl Fn(&W) -> (__m256i, f32),
        ) -> [[f32; 4]; 4] {
            let n = super::super::tile_blocks(&w, &a);
            // SAFETY: AVX2+FMA enabled for this build; loads read whole 32-byte arrays.
            unsafe {
                let mut acc = [[_mm256_setzero_ps(); 4]; 4];
                for b in 0..n {
                    let xs = column(&w, b, &unpack);
                    for (t, tok) in a.iter().enumerate() {
                        let y = &tok[b];
                        let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
                        let dy = y.d.to_f32();
                        for (acc, &(qx, d)) in acc.iter_mut().zip(&xs) {
                            acc[t] = _mm256_fmadd_ps(scale(d, dy), mul_sum_i8(qx, qy), acc[t]);
                        }
                    }
                }
                acc.map(|row| row.map(|v| hsum(v)))
            }
        }

        #[inline(always)]
        fn unpack_q8_0(x: &BlockQ8_0) -> (__m256i, f32) {
            // SAFETY: AVX2 enabled for this build; reads the block's 32 quants.
            (
                unsafe { _mm256_loadu_si256(x.qs.as_ptr().cast()) },
                x.d.to_f32(),
            )
        }

        #[inline(always)]
        fn unpack_q4_0(x: &BlockQ4_0) -> (__m256i, f32) {
            // SAFETY: AVX2 enabled for this build.
            (
                unsafe { _mm256_sub_epi8(nibbles(&x.qs), _mm256_set1_epi8(8)) },
                x.d.to_f32(),
            )
        }

        #[inline(always)]
        fn unpack_q5_0(x: &BlockQ5_0) -> (__m256i, f32) {
            // (q | high << 4) - 16: where the high bit is clear, that is q | 0xF0.
            // SAFETY: AVX2 enabled for this build.
            let qx = unsafe {
                let high = _mm256_andnot_si256(
                    bytes_from_bits(u32::from_le_bytes(x.qh)),
                    _mm256_set1_epi8(0xF0u8 as i8),
                );
                _mm256_or_si256(nibbles(&x.qs), high)
            };
            (qx, x.d.to_f32())
        }

        pub fn dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
            signed_blocks(w, a, unpack_q8_0)
        }

        pub fn dot4_q8_0(w: [&[BlockQ8_0]; 4], a: &[BlockQ8_0]) -> [f32; 4] {
            signed_blocks4(w, a, unpack_q8_0)
        }

        pub fn tile_q8_0(w: [&[BlockQ8_0]; 4], a: [&[BlockQ8_0]; 4]) -> [[f32; 4]; 4] {
            signed_tile(w, a, unpack_q8_0)
        }

        pub fn tile_q4_0(w: [&[BlockQ4_0]; 4], a: [&[BlockQ8_0]; 4]) -> [[f32; 4]; 4] {
            signed_tile(w, a, unpack_q4_0)
        }

        pub fn tile_q5_0(w: [&[BlockQ5_0]; 4], a: [&[BlockQ8_0]; 4]) -> [[f32; 4]; 4] {
            signed_tile(w, a, unpack_q5_0)
        }

        /// Four rows of Q4_1 against four activation rows; per (row, token) the same
        /// operations in the same order as [`dot_q4_1`].
        pub fn tile_q4_1(w: [&[BlockQ4_1]; 4], a: [&[BlockQ8_1]; 4]) -> [[f32; 4]; 4] {
            let n = super::super::tile_blocks(&w, &a);
            // SAFETY: as in `dot_q4_1`.
            unsafe {
                let mut acc = [[_mm256_setzero_ps(); 4]; 4];
                let mut mins = [[0f32; 4]; 4];
                for b in 0..n {
                    let unpack = |x: &BlockQ4_1| (nibbles(&x.qs), x.d.to_f32(), x.m.to_f32());
                    let xs = column(&w, b, &unpack);
                    for (t, tok) in a.iter().enumerate() {
                        let y = &tok[b];
                        let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
                        let (dy, sy) = (y.d.to_f32(), y.s.to_f32());
                        for r in 0..4 {
                            let (qx, d, m) = xs[r];
                            mins[r][t] += m * sy;
                            acc[r][t] =
                                _mm256_fmadd_ps(scale(d, dy), mul_sum_us8(qx, qy), acc[r][t]);
                        }
                    }
                }
                let mut out = [[0f32; 4]; 4];
                for r in 0..4 {
                    for t in 0..4 {
                        out[r][t] = hsum(acc[r][t]) + mins[r][t];
                    }
                }
                out
            }
        }

        pub fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
            signed_blocks(w, a, unpack_q4_0)
        }

        pub fn dot4_q4_0(w: [&[BlockQ4_0]; 4], a: &[BlockQ8_0]) -> [f32; 4] {
            signed_blocks4(w, a, unpack_q4_0)
        }

        pub fn dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
            signed_blocks(w, a, unpack_q5_0)
        }

        pub fn dot4_q5_0(w: [&[BlockQ5_0]; 4], a: &[BlockQ8_0]) -> [f32; 4] {
            signed_blocks4(w, a, unpack_q5_0)
        }

        /// Four rows of Q4_1; per row the same operations in the same order as
        /// [`dot_q4_1`].
        pub fn dot4_q4_1(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1]) -> [f32; 4] {
            let n = w.iter().map(|r| r.len()).min().unwrap_or(0).min(a.len());
            // SAFETY: as in `dot_q4_1`.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut mins = [0f32; 4];
                for (b, y) in a[..n].iter().enumerate() {
                    let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
                    let (dy, sy) = (y.d.to_f32(), y.s.to_f32());
                    for r in 0..4 {
                        let x = &w[r][b];
                        mins[r] += x.m.to_f32() * sy;
                        acc[r] = _mm256_fmadd_ps(
                            scale(x.d.to_f32(), dy),
                            mul_sum_us8(nibbles(&x.qs), qy),
                            acc[r],
                        );
                    }
                }
                [
                    hsum(acc[0]) + mins[0],
                    hsum(acc[1]) + mins[1],
                    hsum(acc[2]) + mins[2],
                    hsum(acc[3]) + mins[3],
                ]
            }
        }

        pub fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
            // SAFETY: as above.
            unsafe {
                let mut acc = _mm256_setzero_ps();
                let mut mins = 0f32;
                for (x, y) in w.iter().zip(a) {
                    mins += x.m.to_f32() * y.s.to_f32();
                    let qy = _mm256_loadu_si256(y.qs.as_ptr().cast());
                    acc = _mm256_fmadd_ps(
                        scale(x.d.to_f32(), y.d.to_f32()),
                        mul_sum_us8(nibbles(&x.qs), qy),
                        acc,
                    );
                }
                hsum(acc) + mins
            }
        }
    }

    #[cfg(target_feature = "fma")]
    pub use fma_kernels::*;
}

/// Defines `pub fn $name(args) -> ret`: the AVX2 kernel `avx2::$name` when the build has
/// AVX2 and FMA, else the portable `$fallback` (an expression over the same arguments).
macro_rules! avx2_or {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, $fallback:expr) => {
        #[inline]
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma"
            ))]
            {
                avx2::$name($($arg),*)
            }
            #[cfg(not(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma"
            )))]
            {
                $fallback
            }
        }
    };
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

avx2_or!(tile_q4_k(w: [&[BlockQ4K]; 4], a: [&[BlockQ8K]; 4]) -> [[f32; 4]; 4], tile_by_rows(w, a, dot4_q4_k));
avx2_or!(tile_q6_k(w: [&[BlockQ6K]; 4], a: [&[BlockQ8K]; 4]) -> [[f32; 4]; 4], tile_by_rows(w, a, dot4_q6_k));
avx2_or!(tile_q4_0(w: [&[BlockQ4_0]; 4], a: [&[BlockQ8_0]; 4]) -> [[f32; 4]; 4], tile_by_rows(w, a, dot4_q4_0));
avx2_or!(tile_q4_1(w: [&[BlockQ4_1]; 4], a: [&[BlockQ8_1]; 4]) -> [[f32; 4]; 4], tile_by_rows(w, a, dot4_q4_1));
avx2_or!(tile_q5_0(w: [&[BlockQ5_0]; 4], a: [&[BlockQ8_0]; 4]) -> [[f32; 4]; 4], tile_by_rows(w, a, dot4_q5_0));
avx2_or!(tile_q8_0(w: [&[BlockQ8_0]; 4], a: [&[BlockQ8_0]; 4]) -> [[f32; 4]; 4], tile_by_rows(w, a, dot4_q8_0));

/// Four Q4_K rows against one token, row by row: a batch's K-quant products go through the
/// tiles, so there is no separate four-row kernel.
#[inline]
pub fn dot4_q4_k(w: [&[BlockQ4K]; 4], a: &[BlockQ8K]) -> [f32; 4] {
    w.map(|row| dot_q4_k(row, a))
}

/// Four Q6_K rows against one token, row by row (see [`dot4_q4_k`]).
#[inline]
pub fn dot4_q6_k(w: [&[BlockQ6K]; 4], a: &[BlockQ8K]) -> [f32; 4] {
    w.map(|row| dot_q6_k(row, a))
}

avx2_or!(dot4_q4_0(w: [&[BlockQ4_0]; 4], a: &[BlockQ8_0]) -> [f32; 4], w.map(|row| dot_q4_0(row, a)));
avx2_or!(dot4_q4_1(w: [&[BlockQ4_1]; 4], a: &[BlockQ8_1]) -> [f32; 4], w.map(|row| dot_q4_1(row, a)));
avx2_or!(dot4_q5_0(w: [&[BlockQ5_0]; 4], a: &[BlockQ8_0]) -> [f32; 4], w.map(|row| dot_q5_0(row, a)));
avx2_or!(dot4_q8_0(w: [&[BlockQ8_0]; 4], a: &[BlockQ8_0]) -> [f32; 4], w.map(|row| dot_q8_0(row, a)));

avx2_or!(dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32, dot_q4_0_portable(w, a));

#[inline]
#[allow(dead_code)] // the kernel without AVX2; with it, the tests' cross-check
pub(super) fn dot_q4_0_portable(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let mut q = [0i8; QK];
        for j in 0..QK / 2 {
            q[j] = (w.qs[j] & 0xF) as i8 - 8;
            q[j + QK / 2] = (w.qs[j] >> 4) as i8 - 8;
        }
        sum += dot_i8(&q, &a.qs) as f32 * (w.d.to_f32() * a.d.to_f32());
    }
    sum
}

avx2_or!(dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32, dot_q4_1_portable(w, a));

#[inline]
#[allow(dead_code)] // the kernel without AVX2; with it, the tests' cross-check
pub(super) fn dot_q4_1_portable(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let mut q = [0i8; QK];
        for j in 0..QK / 2 {
            q[j] = (w.qs[j] & 0xF) as i8;
            q[j + QK / 2] = (w.qs[j] >> 4) as i8;
        }
        sum +=
            dot_i8(&q, &a.qs) as f32 * (w.d.to_f32() * a.d.to_f32()) + w.m.to_f32() * a.s.to_f32();
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

avx2_or!(dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32, dot_q5_0_portable(w, a));

#[inline]
#[allow(dead_code)] // the kernel without AVX2; with it, the tests' cross-check
pub(super) fn dot_q5_0_portable(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let q = unpack_q5(&w.qs, w.qh, 16);
        sum += dot_i8(&q, &a.qs) as f32 * (w.d.to_f32() * a.d.to_f32());
    }
    sum
}

#[inline]
pub fn dot_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let q = unpack_q5(&w.qs, w.qh, 0);
        sum +=
            dot_i8(&q, &a.qs) as f32 * (w.d.to_f32() * a.d.to_f32()) + w.m.to_f32() * a.s.to_f32();
    }
    sum
}

avx2_or!(dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32, dot_q8_0_portable(w, a));

#[inline]
#[allow(dead_code)] // the kernel without AVX2; with it, the tests' cross-check
pub(super) fn dot_q8_0_portable(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        sum += dot_i8(&w.qs, &a.qs) as f32 * (w.d.to_f32() * a.d.to_f32());
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
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        avx2::dot_u8_i8_halves(u, y)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    {
        let half =
            |r: std::ops::Range<usize>| -> i32 { r.map(|i| u[i] as i32 * y[i] as i32).sum() };
        (half(0..16), half(16..32))
    }
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

avx2_or!(dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32, dot_q4_k_portable(w, a));

#[inline]
#[allow(dead_code)] // the kernel without AVX2; with it, the tests' cross-check
pub(super) fn dot_q4_k_portable(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    w.iter()
        .zip(a)
        .map(|(w, a)| dot_k4_like(w.d, w.dmin, &w.scales, &unpack_k4(&w.qs, None), a))
        .sum()
}

#[inline]
pub fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
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

avx2_or!(dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32, dot_q6_k_portable(w, a));

#[inline]
#[allow(dead_code)] // the kernel without AVX2; with it, the tests' cross-check
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
    let n = w.iter().map(|r| r.len()).min().unwrap_or(0).min(a.len());
    let chunks = n / 8;
    let mut acc = [[0f32; 8]; N];
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "f16c",
        target_feature = "avx"
    ))]
    {
        use std::arch::x86_64::*;
        // SAFETY: F16C and AVX are enabled for this build; each iteration reads 8 halves
        // from every row and 8 floats from `a`, inside the first `chunks * 8 <= n` elements.
        unsafe {
            let mut v = [_mm256_setzero_ps(); N];
            for i in 0..chunks {
                let af = _mm256_loadu_ps(a.as_ptr().add(i * 8));
                for (v, row) in v.iter_mut().zip(&w) {
                    let wf = _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(i * 8).cast()));
                    *v = _mm256_add_ps(*v, _mm256_mul_ps(wf, af));
                }
            }
            for (acc, v) in acc.iter_mut().zip(v) {
                _mm256_storeu_ps(acc.as_mut_ptr(), v);
            }
        }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "f16c",
        target_feature = "avx"
    )))]
    for (acc, row) in acc.iter_mut().zip(&w) {
        for i in 0..chunks {
            for k in 0..8 {
                acc[k] += row[i * 8 + k].to_f32() * a[i * 8 + k];
            }
        }
    }
    let mut out = [0f32; N];
    for ((o, acc), row) in out.iter_mut().zip(&acc).zip(&w) {
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * 8..n {
            sum += row[i].to_f32() * a[i];
        }
        *o = sum;
    }
    out
}

/// `o[i] += p * v[i]` for a row of halves (each element rounded exactly as the scalar loop
/// would: one multiply, one add).
#[inline]
pub fn axpy_f16(o: &mut [f32], p: f32, v: &[f16]) {
    axpy_rows_f16(o, [p], [v]);
}

/// `o[i] += p[0] * v[0][i]`, then `+= p[1] * v[1][i]`, and so on for `N` rows: exactly `N`
/// [`axpy_f16`] calls in order, with `o` kept in registers between rows instead of stored
/// and reloaded for every row.
#[inline]
pub fn axpy_rows_f16<const N: usize>(o: &mut [f32], p: [f32; N], v: [&[f16]; N]) {
    let n = v.iter().map(|r| r.len()).min().unwrap_or(0).min(o.len());
    let mut done = 0;
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "f16c",
        target_feature = "avx"
    ))]
    {
        use std::arch::x86_64::*;
        // SAFETY: F16C and AVX are enabled for this build; each iteration reads 8 halves of
        // every row and reads and writes 8 floats, inside the first `n` elements.
        unsafe {
            let pv = p.map(|x| _mm256_set1_ps(x));
            while done + 8 <= n {
                let op = o.as_mut_ptr().add(done);
                let mut acc = _mm256_loadu_ps(op);
                for (pv, row) in pv.iter().zip(&v) {
                    let vf = _mm256_cvtph_ps(_mm_loadu_si128(row.as_ptr().add(done).cast()));
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(*pv, vf));
                }
                _mm256_storeu_ps(op, acc);
                done += 8;
            }
        }
    }
    for i in done..n {
        for (p, row) in p.iter().zip(&v) {
            o[i] += p * row[i].to_f32();
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
