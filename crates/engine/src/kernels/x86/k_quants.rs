//! K-quants: 256-element super-blocks (Q2_K to Q6_K) against Q8_K activations,
//! unpacked once per super-block and multiplied with any number of tokens.

use super::*;

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

/// Q6_K, one row: see [`Scaled16Unpacked`].
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

/// Q3_K, one row: see [`Scaled16Unpacked`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    k_row(w, a)
}

/// Four rows of Q3_K against four tokens; per (row, token) the same operations in the
/// same order as [`dot_q3_k`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_q3_k(w: &[&[BlockQ3K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
    k_tile(*w, *a)
}

/// Q5_K, one row: Q4_K's product with each quant's fifth bit (see [`Q4kUnpacked`]).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    k_row(w, a)
}

/// Four rows of Q5_K against four tokens; per (row, token) the same operations in the
/// same order as [`dot_q5_k`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_q5_k(w: &[&[BlockQ5K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
    k_tile(*w, *a)
}

/// Q2_K, one row: see [`Q2kUnpacked`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    k_row(w, a)
}

/// Four rows of Q2_K against four tokens; per (row, token) the same operations in the
/// same order as [`dot_q2_k`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_q2_k(w: &[&[BlockQ2K]; 4], a: &[&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
    k_tile(*w, *a)
}

/// A K-quant super-block format: unpacked once, then multiplied with any number of
/// activation super-blocks.
pub(super) trait KQuantBlock {
    type Unpacked;
    fn unpack(&self) -> Self::Unpacked;
    fn dot(u: &Self::Unpacked, a: &BlockQ8K) -> f32;
}

/// One K-quant row against one token: each super-block unpacked and multiplied, the results
/// summed in order from zero (as [`k_tile`] sums each of its pairs).
#[inline(always)]
pub(super) fn k_row<W: KQuantBlock>(w: &[W], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        sum += W::dot(&w.unpack(), a);
    }
    sum
}

/// The K-quant tile loop: every weight super-block unpacked once, then multiplied with the
/// four tokens, each (row, token) summed over super-blocks in order from zero.
#[inline(always)]
pub(super) fn k_tile<W: KQuantBlock>(w: [&[W]; 4], a: [&[BlockQ8K]; 4]) -> [[f32; 4]; 4] {
    let (w, a, n) = tile_blocks(w, a);
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
pub(super) struct Q4kUnpacked {
    pub(super) q: [__m256i; 8],
    pub(super) scales: [i16; 8],
    /// The eight sub-block mins as 16 i16 lanes, each twice: lane `i` pairs with the
    /// activation's `bsums[i]` (sums of 16 quants; a sub-block is 32).
    pub(super) mins: __m256i,
    pub(super) d: f32,
    pub(super) dmin: f32,
}

/// A Q4_K super-block's eight 6-bit sub-block scales, and its eight mins each twice (lane
/// `i` pairs with the activation's `bsums[i]`, a sum of 16 quants; a sub-block is 32).
#[inline(always)]
pub(super) fn q4k_scales_and_mins(packed: &[u8; 12]) -> ([i16; 8], [i16; 16]) {
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

/// A Q4_K-layout super-block unpacked: nibbles split (chunk `c`'s low nibbles, then its
/// high ones), scales and mins decoded. Q5_K adds its fifth bits to this.
#[inline(always)]
fn k4_unpack(qs: &[u8; QK_K / 2], packed: &[u8; 12], d: f16, dmin: f16) -> Q4kUnpacked {
    // SAFETY: AVX2 available (module contract); every load reads 32 bytes inside the
    // block's 128 quant bytes.
    let q = unsafe {
        let mask = _mm256_set1_epi8(0x0F);
        let mut q = [_mm256_setzero_si256(); 8];
        for c in 0..QK_K / 64 {
            let bytes = _mm256_loadu_si256(qs.as_ptr().add(c * 32).cast());
            q[2 * c] = _mm256_and_si256(bytes, mask);
            q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask);
        }
        q
    };
    let (scales, mins) = q4k_scales_and_mins(packed);
    // SAFETY: AVX available (module contract); reads the 32 bytes of `mins`.
    let mins = unsafe { _mm256_loadu_si256(mins.as_ptr().cast()) };
    let (d, dmin) = half_pair(d, dmin);
    Q4kUnpacked {
        q,
        scales,
        mins,
        d,
        dmin,
    }
}

impl KQuantBlock for BlockQ4K {
    type Unpacked = Q4kUnpacked;

    #[inline(always)]
    fn unpack(&self) -> Q4kUnpacked {
        k4_unpack(&self.qs, &self.scales, self.d, self.dmin)
    }

    #[inline(always)]
    fn dot(u: &Q4kUnpacked, a: &BlockQ8K) -> f32 {
        k4_dot(u, a)
    }
}

impl KQuantBlock for BlockQ5K {
    type Unpacked = Q4kUnpacked;

    /// Q4_K's unpacking with each quant's fifth bit from `qh` (bit `2 c` for the low
    /// nibbles of chunk `c`, `2 c + 1` for its high ones): quants 0..31, which `maddubs`
    /// multiplies as it does 0..15.
    #[inline(always)]
    fn unpack(&self) -> Q4kUnpacked {
        let mut u = k4_unpack(&self.qs, &self.scales, self.d, self.dmin);
        // SAFETY: AVX2 available (module contract); reads the 32 bytes of `qh`.
        unsafe {
            let qh = _mm256_loadu_si256(self.qh.as_ptr().cast());
            for (k, q) in u.q.iter_mut().enumerate() {
                *q = _mm256_or_si256(*q, q5_bit(qh, k));
            }
        }
        u
    }

    #[inline(always)]
    fn dot(u: &Q4kUnpacked, a: &BlockQ8K) -> f32 {
        k4_dot(u, a)
    }
}

/// One unpacked Q4_K super-block against one activation super-block: the sub-block
/// products weighted by their 6-bit scales are summed as exact integers in vector lanes
/// (one horizontal sum per super-block instead of two per sub-block), then combined by the
/// portable version's float expression in its order, so the result is bit-for-bit the
/// portable one's.
#[inline(always)]
fn k4_dot(u: &Q4kUnpacked, a: &BlockQ8K) -> f32 {
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
    let summin =
        hsum_i32(unsafe { _mm256_madd_epi16(u.mins, _mm256_loadu_si256(a.bsums.as_ptr().cast())) });
    u.d * a.d * sumi as f32 - u.dmin * a.d * summin as f32
}

/// A super-block of unsigned quants with sixteen signed scales, one per 16 elements, and
/// values `quant - 2^OFFSET_LOG2`, unpacked once: Q6_K (0..63, less 32) and Q3_K (0..7,
/// less 4). The quants in element order, 32 per register.
pub(super) struct Scaled16Unpacked<const OFFSET_LOG2: i32> {
    pub(super) q: [__m256i; 8],
    pub(super) scales: [i8; QK_K / 16],
    /// The 16 scales widened to i16 lanes, for the offset term.
    pub(super) scales16: __m256i,
    pub(super) d: f32,
}

impl KQuantBlock for BlockQ6K {
    type Unpacked = Scaled16Unpacked<5>;

    #[inline(always)]
    fn unpack(&self) -> Scaled16Unpacked<5> {
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
        Scaled16Unpacked {
            q,
            scales: self.scales,
            scales16,
            d: half(self.d),
        }
    }

    #[inline(always)]
    fn dot(u: &Scaled16Unpacked<5>, a: &BlockQ8K) -> f32 {
        scaled16_dot(u, a)
    }
}

impl KQuantBlock for BlockQ3K {
    type Unpacked = Scaled16Unpacked<2>;

    #[inline(always)]
    fn unpack(&self) -> Scaled16Unpacked<2> {
        // SAFETY: AVX2 available (module contract); loads read the 32 bytes of `hmask` and
        // 32 bytes inside `qs` (64).
        let q = unsafe {
            let two_bits = _mm256_set1_epi8(0x03);
            let one_bit = _mm256_set1_epi8(0x01);
            let hmask = _mm256_loadu_si256(self.hmask.as_ptr().cast());
            let mut q = [_mm256_setzero_si256(); 8];
            for h in 0..2 {
                let qs = _mm256_loadu_si256(self.qs.as_ptr().add(32 * h).cast());
                for j in 0..4 {
                    // Shifting 16-bit lanes lets the next byte's bits in at the top of
                    // each byte; the masks keep only the bits wanted.
                    let shift = _mm_cvtsi32_si128(2 * j as i32);
                    let low = _mm256_and_si256(_mm256_srl_epi16(qs, shift), two_bits);
                    let bit = _mm_cvtsi32_si128((4 * h + j) as i32);
                    let high = _mm256_and_si256(_mm256_srl_epi16(hmask, bit), one_bit);
                    q[4 * h + j] = _mm256_or_si256(low, _mm256_slli_epi16(high, 2));
                }
            }
            q
        };
        let scales = q3k_scales(&self.scales);
        // SAFETY: AVX2 available (module contract); reads the 16 bytes of `scales`.
        let scales16 = unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(scales.as_ptr().cast())) };
        Scaled16Unpacked {
            q,
            scales,
            scales16,
            d: half(self.d),
        }
    }

    #[inline(always)]
    fn dot(u: &Scaled16Unpacked<2>, a: &BlockQ8K) -> f32 {
        scaled16_dot(u, a)
    }
}

/// One unpacked super-block against one activation super-block: products weighted by the
/// signed 16-element scales summed as exact integers; bit-for-bit the portable result.
#[inline(always)]
fn scaled16_dot<const OFFSET_LOG2: i32>(u: &Scaled16Unpacked<OFFSET_LOG2>, a: &BlockQ8K) -> f32 {
    let acc = scaled16_lanes(&u.q, &u.scales, a);
    // (q - 2^k) . y = q . y - 2^k * sum(y), and the sums per 16 are the block's bsums:
    // subtract 2^k * scale * bsum lane by lane before the one horizontal sum, the same exact
    // integer as subtracting the scalar sum afterwards.
    // SAFETY: AVX2 available (module contract); reads the 32 bytes of `bsums`.
    let dot = unsafe {
        let offset = _mm256_madd_epi16(u.scales16, _mm256_loadu_si256(a.bsums.as_ptr().cast()));
        hsum_i32(_mm256_sub_epi32(
            acc,
            _mm256_slli_epi32::<OFFSET_LOG2>(offset),
        ))
    };
    u.d * a.d * dot as f32
}

/// `scale_g * (q . y)_g` over the sixteen groups of 16, in eight i32 lanes (before the one
/// horizontal sum): register `j` holds groups `2 j` and `2 j + 1`, one per 128-bit half.
#[inline(always)]
fn scaled16_lanes(q: &[__m256i; 8], scales: &[i8; QK_K / 16], a: &BlockQ8K) -> __m256i {
    // SAFETY: AVX2 available (module contract); loads read 32 bytes inside the activation's
    // 256 quants.
    unsafe {
        let mut acc = _mm256_setzero_si256();
        for (j, &q) in q.iter().enumerate() {
            let y = _mm256_loadu_si256(a.qs.as_ptr().add(j * 32).cast());
            let scales = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_set1_epi16(scales[2 * j] as i16)),
                _mm_set1_epi16(scales[2 * j + 1] as i16),
                1,
            );
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), scales));
        }
        acc
    }
}

/// A Q2_K super-block unpacked once: the 2-bit quants (0..3) in element order, 32 per
/// register, the sixteen 4-bit scales, and the sixteen 4-bit mins as i16 lanes (lane `g`
/// pairs with the activation's `bsums[g]`).
pub(super) struct Q2kUnpacked {
    pub(super) q: [__m256i; 8],
    pub(super) scales: [i8; QK_K / 16],
    pub(super) mins: __m256i,
    pub(super) d: f32,
    pub(super) dmin: f32,
}

impl KQuantBlock for BlockQ2K {
    type Unpacked = Q2kUnpacked;

    #[inline(always)]
    fn unpack(&self) -> Q2kUnpacked {
        // SAFETY: AVX2 available (module contract); loads read 32 bytes inside `qs` (64) and
        // the 16 bytes of `scales`.
        let (q, mins) = unsafe {
            let two_bits = _mm256_set1_epi8(0x03);
            let mut q = [_mm256_setzero_si256(); 8];
            for h in 0..2 {
                let qs = _mm256_loadu_si256(self.qs.as_ptr().add(32 * h).cast());
                for j in 0..4 {
                    // As Q3_K's low bits: the masks drop what the 16-bit shift lets in.
                    let shift = _mm_cvtsi32_si128(2 * j as i32);
                    q[4 * h + j] = _mm256_and_si256(_mm256_srl_epi16(qs, shift), two_bits);
                }
            }
            let packed = _mm_loadu_si128(self.scales.as_ptr().cast());
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(
                _mm_srli_epi16(packed, 4),
                _mm_set1_epi8(0x0F),
            ));
            (q, mins)
        };
        let scales = self.scales.map(|s| (s & 0xF) as i8);
        let (d, dmin) = half_pair(self.d, self.dmin);
        Q2kUnpacked {
            q,
            scales,
            mins,
            d,
            dmin,
        }
    }

    /// The scaled products and the mins against the bsums as exact integers, then the
    /// portable version's float expression in its order.
    #[inline(always)]
    fn dot(u: &Q2kUnpacked, a: &BlockQ8K) -> f32 {
        let sumi = hsum_i32(scaled16_lanes(&u.q, &u.scales, a));
        // SAFETY: AVX2 available (module contract); reads the 32 bytes of `bsums`.
        let summin = hsum_i32(unsafe {
            _mm256_madd_epi16(u.mins, _mm256_loadu_si256(a.bsums.as_ptr().cast()))
        });
        u.d * a.d * sumi as f32 - u.dmin * a.d * summin as f32
    }
}

/// Bit `k` of each byte of Q5_K's `qh`, moved to bit 4 (each quant's fifth bit).
#[inline(always)]
fn q5_bit(qh: __m256i, k: usize) -> __m256i {
    // SAFETY: AVX2 available (module contract). Shifting 16-bit lanes lets the next byte's
    // bits in at the top of each byte; the mask keeps bit 0 only.
    unsafe {
        let shifted = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(k as i32));
        _mm256_slli_epi16(_mm256_and_si256(shifted, _mm256_set1_epi8(0x01)), 4)
    }
}

/// The two high bits of each 6-bit quant, from `qh` shifted into bits 0-1, moved to bits
/// 4-5.
#[inline(always)]
pub(super) fn q6_high(bits: __m256i) -> __m256i {
    // SAFETY: AVX2 available (module contract).
    unsafe { _mm256_slli_epi16(_mm256_and_si256(bits, _mm256_set1_epi8(0x03)), 4) }
}
