//! The 32-element formats whose quants unpack to signed bytes (Q4_0, Q5_0, Q8_0, IQ4_NL):
//! their one-row, four-row and tile products at the 256-bit levels.

use super::*;

/// A 32-element weight block whose quants unpack to signed bytes (Q4_0, Q5_0, Q8_0).
pub(super) trait SignedBlock: Sized {
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

impl SignedBlock for BlockIQ4NL {
    /// Each nibble looked up in the sixteen levels, sixteen lookups per instruction.
    #[inline(always)]
    fn unpack(&self) -> (__m256i, __m256) {
        // SAFETY: AVX2 available (module contract); reads the 16 bytes of the table.
        let q = unsafe {
            let levels = _mm_loadu_si128(IQ4_NL_LEVELS.as_ptr().cast());
            _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(levels), nibbles(&self.qs))
        };
        (q, half8(self.d))
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
pub(super) fn nibbles4(qs: [&[u8; 16]; 4]) -> (__m512i, __m512i) {
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
pub(super) fn signed_blocks<const VNNI: bool, W: SignedBlock>(w: &[W], a: &[ActQ8_0]) -> f32 {
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
pub(super) fn signed_blocks4<const VNNI: bool, W: SignedBlock>(
    w: [&[W]; 4],
    a: &[ActQ8_0],
) -> [f32; 4] {
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
pub(super) fn signed_tile<const VNNI: bool, W: SignedBlock>(
    w: [&[W]; 4],
    a: [&[ActQ8_0]; 4],
) -> [[f32; 4]; 4] {
    let (w, a, n) = tile_blocks(w, a);
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
pub(super) fn dot_q4_0_body<const VNNI: bool>(w: &[BlockQ4_0], a: &[ActQ8_0]) -> f32 {
    signed_blocks::<VNNI, _>(w, a)
}

#[inline(always)]
pub(super) fn dot_iq4_nl_body<const VNNI: bool>(w: &[BlockIQ4NL], a: &[ActQ8_0]) -> f32 {
    signed_blocks::<VNNI, _>(w, a)
}

#[inline(always)]
pub(super) fn dot4_iq4_nl_body<const VNNI: bool>(
    w: &[&[BlockIQ4NL]; 4],
    a: &[ActQ8_0],
) -> [f32; 4] {
    signed_blocks4::<VNNI, _>(*w, a)
}

#[inline(always)]
pub(super) fn tile_iq4_nl_body<const VNNI: bool>(
    w: &[&[BlockIQ4NL]; 4],
    a: &[&[ActQ8_0]; 4],
) -> [[f32; 4]; 4] {
    signed_tile::<VNNI, _>(*w, *a)
}

#[inline(always)]
pub(super) fn dot_q5_0_body<const VNNI: bool>(w: &[BlockQ5_0], a: &[ActQ8_0]) -> f32 {
    signed_blocks::<VNNI, _>(w, a)
}

#[inline(always)]
pub(super) fn dot_q8_0_body<const VNNI: bool>(w: &[BlockQ8_0], a: &[ActQ8_0]) -> f32 {
    signed_blocks::<VNNI, _>(w, a)
}

#[inline(always)]
pub(super) fn dot4_q4_0_body<const VNNI: bool>(w: &[&[BlockQ4_0]; 4], a: &[ActQ8_0]) -> [f32; 4] {
    signed_blocks4::<VNNI, _>(*w, a)
}

#[inline(always)]
pub(super) fn dot4_q5_0_body<const VNNI: bool>(w: &[&[BlockQ5_0]; 4], a: &[ActQ8_0]) -> [f32; 4] {
    signed_blocks4::<VNNI, _>(*w, a)
}

#[inline(always)]
pub(super) fn dot4_q8_0_body<const VNNI: bool>(w: &[&[BlockQ8_0]; 4], a: &[ActQ8_0]) -> [f32; 4] {
    signed_blocks4::<VNNI, _>(*w, a)
}

#[inline(always)]
pub(super) fn tile_q4_0_body<const VNNI: bool>(
    w: &[&[BlockQ4_0]; 4],
    a: &[&[ActQ8_0]; 4],
) -> [[f32; 4]; 4] {
    signed_tile::<VNNI, _>(*w, *a)
}

#[inline(always)]
pub(super) fn tile_q5_0_body<const VNNI: bool>(
    w: &[&[BlockQ5_0]; 4],
    a: &[&[ActQ8_0]; 4],
) -> [[f32; 4]; 4] {
    signed_tile::<VNNI, _>(*w, *a)
}

#[inline(always)]
pub(super) fn tile_q8_0_body<const VNNI: bool>(
    w: &[&[BlockQ8_0]; 4],
    a: &[&[ActQ8_0]; 4],
) -> [[f32; 4]; 4] {
    signed_tile::<VNNI, _>(*w, *a)
}
