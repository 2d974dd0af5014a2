//! Q4_1: unsigned nibbles and a min, against Q8_1 activations (which carry d * sum).

use super::*;

#[inline(always)]
pub(super) fn dot_q4_1_body<const VNNI: bool>(w: &[BlockQ4_1], a: &[ActQ8_1]) -> f32 {
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
pub(super) fn dot4_q4_1_body<const VNNI: bool>(w: &[&[BlockQ4_1]; 4], a: &[ActQ8_1]) -> [f32; 4] {
    let [[r0], [r1], [r2], [r3]] = q4_1_tile::<VNNI, 1>(*w, [a]);
    [r0, r1, r2, r3]
}

#[inline(always)]
pub(super) fn tile_q4_1_body<const VNNI: bool>(
    w: &[&[BlockQ4_1]; 4],
    a: &[&[ActQ8_1]; 4],
) -> [[f32; 4]; 4] {
    q4_1_tile::<VNNI, 4>(*w, *a)
}

/// Four rows of Q4_1 against `T` activation rows; per (row, token) the same operations in
/// the same order as [`dot_q4_1_body`].
#[inline(always)]
pub(super) fn q4_1_tile<const VNNI: bool, const T: usize>(
    w: [&[BlockQ4_1]; 4],
    a: [&[ActQ8_1]; T],
) -> [[f32; T]; 4] {
    let (w, a, n) = tile_blocks(w, a);
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
pub(super) fn q4_1_rows4<const T: usize>(
    w: [&[BlockQ4_1]; 4],
    a: [&[ActQ8_1]; T],
) -> [[f32; T]; 4] {
    let (w, a, n) = tile_blocks(w, a);
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
