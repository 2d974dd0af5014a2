//! Half-precision arithmetic: f16 scales to f32, the f16 products attention runs over its
//! key-value cache (keys against queries, weights times values), and products of f16 and
//! bfloat16 weight rows with f32 activations.

use half::bf16;

use super::*;

/// An f16 scale as f32 with F16C (exact; `half` would check the CPU on every call when the
/// build does not enable F16C globally).
///
/// Where a loop converts scales, it uses [`half8`] or [`half_pair`] instead: a conversion
/// of one lane is compiled as an insert into whatever register is free, and LLVM picked the
/// loop's accumulator, which chained every block's scale behind the previous block's sum.
#[inline(always)]
pub(super) fn half(h: f16) -> f32 {
    // SAFETY: F16C available (module contract).
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32))) }
}

/// An f16 scale broadcast to eight f32 lanes. Two of these multiplied lane by lane give
/// what multiplying the scalars and broadcasting gives, in one instruction fewer.
#[inline(always)]
pub(super) fn half8(h: f16) -> __m256 {
    // SAFETY: F16C and AVX2 available (module contract).
    unsafe { _mm256_cvtph_ps(_mm_set1_epi16(h.to_bits() as i16)) }
}

/// Two f16 values (a block's scale and min, stored side by side) as f32, converted together.
#[inline(always)]
pub(super) fn half_pair(a: f16, b: f16) -> (f32, f32) {
    let bits = a.to_bits() as u32 | (b.to_bits() as u32) << 16;
    // SAFETY: F16C and AVX available (module contract).
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }
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
    half_rows_lanes(w, a, chunks)
}

/// `quant::dot_rows_bf16`'s lanes: as [`dot_rows_f16_lanes`], each bfloat16 widened to f32
/// by shifting its bits into the high half (exact).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_bf16_lanes<const N: usize>(
    w: [&[bf16]; N],
    a: &[f32],
    chunks: usize,
) -> [[f32; 8]; N] {
    half_rows_lanes(w, a, chunks)
}

/// A 16-bit float weight type whose eight values widen to eight f32 lanes.
pub(super) trait HalfLanes: Copy {
    /// Eight values from `at` as f32.
    ///
    /// # Safety
    /// `at` must point at eight readable values.
    unsafe fn widen8(at: *const Self) -> __m256;
}

impl HalfLanes for f16 {
    #[inline(always)]
    unsafe fn widen8(at: *const Self) -> __m256 {
        // SAFETY: F16C available (module contract); the caller's 16 readable bytes.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(at.cast())) }
    }
}

impl HalfLanes for bf16 {
    #[inline(always)]
    unsafe fn widen8(at: *const Self) -> __m256 {
        // SAFETY: AVX2 available (module contract); the caller's 16 readable bytes.
        unsafe {
            let raw = _mm_loadu_si128(at.cast());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
        }
    }
}

/// The lanes of both: per row, eight lanes of products each rounded then added (not a
/// fused multiply-add), as the scalar loop.
#[inline(always)]
fn half_rows_lanes<H: HalfLanes, const N: usize>(
    w: [&[H]; N],
    a: &[f32],
    chunks: usize,
) -> [[f32; 8]; N] {
    let shortest = w.iter().map(|r| r.len()).fold(a.len(), usize::min);
    let chunks = chunks.min(shortest / 8);
    // SAFETY: AVX available (module contract).
    let mut v = [unsafe { _mm256_setzero_ps() }; N];
    for i in 0..chunks {
        // SAFETY: every row and `a` hold at least `chunks * 8` elements (clamped above).
        let af = unsafe { _mm256_loadu_ps(a.as_ptr().add(i * 8)) };
        for (v, row) in v.iter_mut().zip(&w) {
            // SAFETY: as above: eight values from element `8 i`; AVX available.
            unsafe {
                let wide = H::widen8(row.as_ptr().add(i * 8));
                *v = _mm256_add_ps(*v, _mm256_mul_ps(wide, af));
            }
        }
    }
    let mut acc = [[0f32; 8]; N];
    for (acc, v) in acc.iter_mut().zip(v) {
        // SAFETY: writes the 8 floats of `acc`.
        unsafe { _mm256_storeu_ps(acc.as_mut_ptr(), v) };
    }
    acc
}
