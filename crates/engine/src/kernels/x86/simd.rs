//! Register helpers every block product shares: horizontal sums, the per-format lane
//! products (with or without VNNI's byte dot product), nibble unpacking, loads.

use super::*;

#[inline(always)]
pub(super) fn hsum_i32(v: __m256i) -> i32 {
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
pub(super) fn sum4_us8<const VNNI: bool>(x: __m256i, y: __m256i) -> __m256i {
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
pub(super) fn signed_lanes<const VNNI: bool>(x: __m256i, y: __m256i) -> __m128 {
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
pub(super) fn unsigned_lanes<const VNNI: bool>(x: __m256i, y: __m256i) -> __m128 {
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
pub(super) fn hsum4(v: __m128) -> f32 {
    // SAFETY: SSE3 available (module contract: AVX2 implies it).
    unsafe {
        let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// The sum of 16 lanes held as lanes 0..8 and 8..16, folded as attention's scores define
/// it: lanes k and k + 8, then k and k + 4, then [`hsum4`].
#[inline(always)]
pub(super) fn fold16(low: __m256, high: __m256) -> f32 {
    // SAFETY: AVX available (module contract).
    let s4 = unsafe {
        let s8 = _mm256_add_ps(low, high);
        _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8))
    };
    hsum4(s4)
}

/// The low four lanes of a broadcast scale.
#[inline(always)]
pub(super) fn low4(v: __m256) -> __m128 {
    // SAFETY: AVX available (module contract).
    unsafe { _mm256_castps256_ps128(v) }
}

#[inline(always)]
pub(super) fn set4(v: f32) -> __m128 {
    // SAFETY: SSE available (module contract).
    unsafe { _mm_set1_ps(v) }
}

#[inline(always)]
pub(super) fn fmadd4(a: __m128, b: __m128, c: __m128) -> __m128 {
    // SAFETY: FMA available (module contract).
    unsafe { _mm_fmadd_ps(a, b, c) }
}

#[inline(always)]
pub(super) fn mul4(a: __m128, b: __m128) -> __m128 {
    // SAFETY: AVX available (module contract).
    unsafe { _mm_mul_ps(a, b) }
}

/// 16 bytes of nibbles -> 32 bytes: low nibbles first, then high nibbles.
#[inline(always)]
pub(super) fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: AVX2 available (module contract); reads exactly 16 bytes.
    unsafe {
        let lo = _mm_loadu_si128(qs.as_ptr().cast());
        let both = _mm256_insertf128_si256(_mm256_castsi128_si256(lo), _mm_srli_epi16(lo, 4), 1);
        _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
    }
}

/// Byte j is 0xFF where bit j of `bits` is set, else 0.
#[inline(always)]
pub(super) fn bytes_from_bits(bits: u32) -> __m256i {
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
pub(super) fn scale(a: f32, b: f32) -> __m256 {
    // SAFETY: AVX available (module contract).
    unsafe { _mm256_set1_ps(a * b) }
}

#[inline(always)]
pub(super) fn load32(qs: &[i8; 32]) -> __m256i {
    // SAFETY: AVX available (module contract); reads exactly the 32 bytes.
    unsafe { _mm256_loadu_si256(qs.as_ptr().cast()) }
}

#[inline(always)]
pub(super) fn zeros_i() -> __m256i {
    // SAFETY: AVX available (module contract).
    unsafe { _mm256_setzero_si256() }
}
