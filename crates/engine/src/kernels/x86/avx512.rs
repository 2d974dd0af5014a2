//! The AVX-512 kernels (the VNNI level): products of four rows at once, for the
//! 32-element formats the four rows' lanes in one register per token, for the K-quants 64
//! quants of a row per register.

use super::*;

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

signed_rows4_kernels!(
    (BlockQ4_0, dot4_q4_0, tile_q4_0, tile8_q4_0),
    (BlockQ5_0, dot4_q5_0, tile_q5_0, tile8_q5_0),
    (BlockQ8_0, dot4_q8_0, tile_q8_0, tile8_q8_0),
    (BlockIQ4NL, dot4_iq4_nl, tile_iq4_nl, tile8_iq4_nl)
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
pub(super) fn signed_rows4<W: SignedBlock, const T: usize>(
    w: [&[W]; 4],
    a: [&[ActQ8_0]; T],
) -> [[f32; T]; 4] {
    let (w, a, n) = tile_blocks(w, a);
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
pub(super) fn lane_sums8(v: [__m256i; 8]) -> __m256i {
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
pub(super) fn k_token_scales<const T: usize>(a: &[&[BlockQ8K]; T], b: usize) -> __m256 {
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
pub(super) fn k_token_sums(
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
pub(super) fn k_rows_by_token<const T: usize>(sums: [__m256; 4]) -> [[f32; T]; 4] {
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
pub(super) fn q4_k_rows4<const T: usize>(
    w: [&[BlockQ4K]; 4],
    a: [&[BlockQ8K]; T],
) -> [[f32; T]; 4] {
    let (w, a, n) = tile_blocks(w, a);
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
pub(super) fn q6_k_rows4<const T: usize>(
    w: [&[BlockQ6K]; 4],
    a: [&[BlockQ8K]; T],
) -> [[f32; T]; 4] {
    let (w, a, n) = tile_blocks(w, a);
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
