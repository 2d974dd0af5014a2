//! GGML block layouts, byte for byte as they sit in GGUF files.
//!
//! Weight blocks are read in place from the loaded file (no copy); activation blocks
//! ([`ActQ8_0`], [`ActQ8_1`], `Q8K`) are what activations are quantised to before an
//! integer dot product, as llama.cpp does: matching its activation quantisation is what
//! keeps greedy decoding token-for-token identical to it. The activation blocks hold
//! ggml's values (scales rounded to f16 included) in the form the kernels read fastest.

use half::f16;

pub const QK: usize = 32;
pub const QK_K: usize = 256;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

/// A token's 32 activations quantised for the Q4_0/Q5_0/Q8_0 products: ggml's Q8_0
/// activation block, its f16 scale held as the f32 it converts to (exactly), and per lane
/// of the kernels' block products (lane j: quants 4j..4j+4 and 16+4j..16+4j+4) -128 times
/// the sum of its quants. The 512-bit kernels offset the weights by 128 to make them
/// unsigned for `vpdpbusd`, and a lane starting from that value ends at the exact product.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQ8_0 {
    pub qs: [i8; QK],
    pub d: f32,
    pub offset_lanes: [i32; 4],
}

impl ActQ8_0 {
    /// The block of quants `qs` with scale `d` (already rounded to f16).
    pub fn new(qs: [i8; QK], d: f16) -> Self {
        let mut offset_lanes = [0i32; 4];
        for (j, lane) in offset_lanes.iter_mut().enumerate() {
            let sum: i32 = qs[4 * j..4 * j + 4]
                .iter()
                .chain(&qs[16 + 4 * j..16 + 4 * j + 4])
                .map(|&q| q as i32)
                .sum();
            *lane = -128 * sum;
        }
        Self {
            qs,
            d: d.to_f32(),
            offset_lanes,
        }
    }
}

/// A token's 32 activations quantised for the Q4_1/Q5_1 products: ggml's Q8_1 activation
/// block with its two f16 values held as the f32s they convert to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQ8_1 {
    pub qs: [i8; QK],
    pub d: f32,
    /// `d * sum(qs)` (rounded to f16), so that the min term of Q4_1/Q5_1 dot products
    /// costs one multiply.
    pub s: f32,
}

/// IQ4_NL: Q4_0's layout (a scale, then 32 nibbles: element `j` low, `j + 16` high), each
/// nibble an index into [`IQ4_NL_LEVELS`] rather than a value.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockIQ4NL {
    pub d: f16,
    pub qs: [u8; 16],
}

/// The sixteen levels of IQ4_NL's nibbles, denser near zero as trained weights are.
pub const IQ4_NL_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Q2_K: 256 weights as 2-bit quants, each group of 16 with a 4-bit scale (low nibble of
/// `scales`) and a 4-bit min (high nibble), and f16 multipliers for both.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}

/// Q3_K: 256 weights as 3-bit quants (the low two bits in `qs`, the third in `hmask`),
/// sixteen 6-bit signed scales packed in 12 bytes, one f16 scale.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: f16,
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    /// Sums of each group of 16 quants, for the min term of K-quant dot products.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockIQ4NL>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

/// Marker for plain-old-data blocks: every bit pattern is a valid value and there is no
/// padding, so a byte slice of the right length and alignment can be viewed as blocks.
///
/// # Safety
/// Implement only for `repr(C)` structs made of integer, `f16` and `f32` fields with no
/// padding (the size assertions above check that).
pub unsafe trait Pod: Copy + 'static {}

// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockQ4_0 {}
// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockQ4_1 {}
// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockQ5_0 {}
// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockQ5_1 {}
// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockQ8_0 {}
// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockIQ4NL {}
// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockQ2K {}
// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockQ3K {}
// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockQ4K {}
// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockQ5K {}
// SAFETY: repr(C) of u8/i8/i16/f16 fields, its size asserted above (no padding).
unsafe impl Pod for BlockQ6K {}
// SAFETY: f16 is a plain number: every bit pattern is a value, no padding.
unsafe impl Pod for f16 {}
// SAFETY: bf16 is a plain number: every bit pattern is a value, no padding.
unsafe impl Pod for half::bf16 {}
// SAFETY: f32 is a plain number: every bit pattern is a value, no padding.
unsafe impl Pod for f32 {}

/// Views `bytes` as a slice of blocks, or `None` if the length or alignment does not fit.
pub fn cast_blocks<B: Pod>(bytes: &[u8]) -> Option<&[B]> {
    let size = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>())
    {
        return None;
    }
    // SAFETY: length and alignment checked above; `B: Pod` means any bytes are a valid `B`;
    // the returned slice borrows `bytes`, so it cannot outlive the memory.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) })
}

/// The sixteen signed scales of a Q3_K block: each a low nibble (bytes 0-7, low then high
/// halves) and two high bits (bytes 8-11, two bits per group of four), less 32.
#[inline]
pub fn q3k_scales(packed: &[u8; 12]) -> [i8; QK_K / 16] {
    std::array::from_fn(|j| {
        let low = if j < 8 {
            packed[j] & 0xF
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | high << 4) as i8 - 32
    })
}

/// Unpacks the 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// A tile's four rows and its tokens cut to the blocks they all have, and that count. The
/// kernels index the cut slices, which lets the compiler drop the per-block bounds checks.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by the SIMD tiles
pub fn tile_blocks<'w, 'a, W, A, const T: usize>(
    w: [&'w [W]; 4],
    a: [&'a [A]; T],
) -> ([&'w [W]; 4], [&'a [A]; T], usize) {
    let n = w
        .iter()
        .map(|r| r.len())
        .chain(a.iter().map(|t| t.len()))
        .min()
        .unwrap_or(0);
    // `from_fn` rather than `map`, which LLVM leaves out of line in the kernels.
    (
        std::array::from_fn(|r| &w[r][..n]),
        std::array::from_fn(|t| &a[t][..n]),
        n,
    )
}
