//! Compute kernels: quantised matrix products over weights that stay in their GGUF encoding
//! (never expanded to f32), plus the small dense helpers a transformer layer needs.
//!
//! Nothing here allocates per call except the activation quantisation buffers in
//! [`ActScratch`], which are reused across calls.
//!
//! # Numerics
//!
//! Activations are quantised to Q8_0 / Q8_1 / Q8_K exactly as ggml does (f16-rounded scales
//! included; `blocks::ActQ8_0` and `ActQ8_1` hold them as f32, with the offset sums the
//! 512-bit kernels need computed once per token), then integer products run per block
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K; F32 and F16 in float). Matching ggml's
//! activation rounding is what keeps greedy decoding token for token with llama.cpp.
//!
//! A faster kernel must give every (row, token) exactly what the one-row kernel gives it,
//! to the bit: each 32-element format defines the four lanes its block products accumulate
//! in (lane j: products 4j..4j+4 and 16+4j..16+4j+4), and every kernel of it, at every
//! width and level, accumulates exactly those lanes in block order and sums them the same
//! way; the K-quants sum exact integers per super-block. So the fidelity fixtures hold
//! whatever path runs, and a sequence's logits never depend on what shares its batch.
//!
//! # Levels
//!
//! The products the default models use (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K), activation
//! quantisation and attention's f16 helpers exist at three levels, detected once from the
//! CPU ([`Isa`]; `BASALT_KERNELS=portable|avx2|avx512vnni` lowers it): the portable Rust in
//! [`quant`], AVX2 with FMA and F16C, and the same with AVX-512 VNNI's `vpdpbusd` in place of
//! `maddubs` + `madd` (the same integer lanes, so the same bits). Q5_1 and Q5_K are portable
//! only. The SIMD versions (`x86/`) are `#[target_feature]` functions, and an `Isa` value is
//! the proof their dispatch relies on. The VNNI level also has 512-bit kernels of four rows
//! at once for one, four and eight tokens: for the 32-element formats one register per token
//! holds the four rows' lanes, for the K-quants 64 quants of a row per register.
//!
//! Apart from the kernels the build targets the build machine's CPU (`target-cpu=native`,
//! like llama.cpp's `GGML_NATIVE`); a baseline build (`target-cpu=x86-64-v2`) runs anywhere
//! with the same kernels, and [`missing_cpu_features`] lets a binary refuse to start, naming
//! what it lacks, rather than die of an illegal instruction.
//!
//! # Sizes of kernel, and the drivers
//!
//! Each format has four: one row against one token, four rows against one token (decode),
//! and register tiles of four rows by four and by eight tokens (prefill and batched decode:
//! each weight block unpacked once for the tile's tokens, each activation block loaded once
//! for four rows). Four-row products and tiles take their rows and tokens by reference:
//! passed by value, the slice arrays were copied on every call with wide loads of what the
//! caller had just written with narrow stores, a store-forwarding stall per call.
//! `matmul` picks the kernel per group of rows and prefetches weight rows 4 KiB ahead for
//! one token and small batches (decode waits on memory otherwise). A forward pass runs on a
//! thread of the persistent compute pool (`pool`): each product is split from inside it,
//! the other threads polling for work while the pass runs rather than sleeping between
//! products; large products split by rows, and results never depend on the thread count.
//!
//! # Layout
//!
//! As ggml-cpu separates `quants.c`, `arch/x86/quants.c`, `repack.cpp` and `ops.cpp`:
//! `blocks` (layouts), `quant` (portable reference and dispatch), `x86` (SIMD by concern),
//! `matrix` ([`QMatrix`]), `matmul` (row drivers), `pool`, `ops` (dense helpers), `isa`.
//! `x86` depends on `blocks` only; every kernel is tested against a dequantise-and-multiply
//! reference at every level the CPU has (`tests.rs`).

pub mod blocks;
pub mod isa;
mod matmul;
mod matrix;
mod ops;
mod pool;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use isa::{missing_cpu_features, Isa};
pub use matrix::{ActScratch, QMatrix};
pub use ops::*;
pub use pool::{compute_threads, for_each_chunk, in_compute_pool, set_compute_threads};

#[cfg(test)]
mod tests;
