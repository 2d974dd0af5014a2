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
    fn dot_iq4_nl(w: &[BlockIQ4NL], a: &[ActQ8_0]) -> f32 = dot_iq4_nl_body;
    avx2 only:
    fn dot4_q4_1(w: &[&[BlockQ4_1]; 4], a: &[ActQ8_1]) -> [f32; 4] = dot4_q4_1_body;
    fn tile_q4_1(w: &[&[BlockQ4_1]; 4], a: &[&[ActQ8_1]; 4]) -> [[f32; 4]; 4] = tile_q4_1_body;
    fn dot4_q4_0(w: &[&[BlockQ4_0]; 4], a: &[ActQ8_0]) -> [f32; 4] = dot4_q4_0_body;
    fn dot4_q5_0(w: &[&[BlockQ5_0]; 4], a: &[ActQ8_0]) -> [f32; 4] = dot4_q5_0_body;
    fn dot4_q8_0(w: &[&[BlockQ8_0]; 4], a: &[ActQ8_0]) -> [f32; 4] = dot4_q8_0_body;
    fn tile_q4_0(w: &[&[BlockQ4_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = tile_q4_0_body;
    fn tile_q5_0(w: &[&[BlockQ5_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = tile_q5_0_body;
    fn tile_q8_0(w: &[&[BlockQ8_0]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = tile_q8_0_body;
    fn dot4_iq4_nl(w: &[&[BlockIQ4NL]; 4], a: &[ActQ8_0]) -> [f32; 4] = dot4_iq4_nl_body;
    fn tile_iq4_nl(w: &[&[BlockIQ4NL]; 4], a: &[&[ActQ8_0]; 4]) -> [[f32; 4]; 4] = tile_iq4_nl_body;
}

mod activations;
pub mod avx512;
mod half_floats;
mod k_quants;
mod q4_1;
mod signed;
mod simd;

use half_floats::*;
use k_quants::*;
use q4_1::*;
use signed::*;
use simd::*;

/// The kernels with nothing for VNNI to do (K-quant products multiply by per-sub-block
/// scales with `madd` anyway; quantisation and the f16 helpers have no byte products):
/// one version, which the VNNI level calls too.
mod avx2_only {
    pub use super::activations::{quantize_block, quantize_block_k};
    pub use super::half_floats::{
        axpy_f16_heads_lanes, dot_f16_queries_lanes, dot_rows_bf16_lanes, dot_rows_f16_lanes,
    };
    pub use super::k_quants::{
        dot_q2_k, dot_q3_k, dot_q4_k, dot_q5_k, dot_q6_k, tile_q2_k, tile_q3_k, tile_q4_k,
        tile_q5_k, tile_q6_k,
    };
}
