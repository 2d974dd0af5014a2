//! Activation quantisation, eight lanes at a time: the row of a matrix product's input
//! turned into Q8_0 / Q8_K blocks with exactly the scalar version's quants.

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
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: writes bytes `32j..32j + 32` of `qs`.
        unsafe { _mm256_storeu_si256(qs.as_mut_ptr().add(32 * j).cast(), bytes) };
    }
    Some(1.0 / iscale)
}
