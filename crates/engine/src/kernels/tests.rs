//! Every quantised dot product is checked against the straightforward reference: dequantise
//! both sides to f32 and multiply.

use half::f16;

use super::blocks::*;
use super::matmul::*;
use super::pool::*;
use super::quant::*;
use super::*;

/// A small deterministic generator so the tests need no dependency.
struct Lcg(u64);
impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn byte(&mut self) -> u8 {
        self.next_u32() as u8
    }
    fn f32(&mut self) -> f32 {
        (self.next_u32() as f32 / u32::MAX as f32) * 2.0 - 1.0
    }
    fn scale(&mut self) -> f16 {
        f16::from_f32(0.001 + 0.05 * (self.f32().abs()))
    }
}

fn random_bytes<B: Pod>(rng: &mut Lcg, blocks: usize, fix: impl Fn(&mut B, &mut Lcg)) -> Vec<B> {
    let size = std::mem::size_of::<B>();
    let bytes: Vec<u8> = (0..blocks * size).map(|_| rng.byte()).collect();
    let mut out: Vec<B> = Vec::with_capacity(blocks);
    for chunk in bytes.chunks_exact(size) {
        // Copy through an aligned buffer: `bytes` itself may not be aligned for `B`.
        let mut aligned = vec![0u32; size.div_ceil(4)];
        // SAFETY: `aligned` has at least `size` bytes and u32 alignment >= B's (<= 4).
        let dst =
            unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), size) };
        dst.copy_from_slice(chunk);
        let mut b = cast_blocks::<B>(dst)
            .map(|s| s[0])
            .unwrap_or_else(|| unreachable_block());
        fix(&mut b, rng);
        out.push(b);
    }
    out
}

fn unreachable_block<B>() -> B {
    unreachable!("aligned buffer of the right size always casts")
}

/// Activation blocks back to floats: `d * q`.
fn dequantize_acts<'a>(blocks: impl Iterator<Item = (f32, &'a [i8; 32])>, out: &mut [f32]) {
    for ((d, qs), out) in blocks.zip(out.chunks_exact_mut(32)) {
        for (o, &q) in out.iter_mut().zip(qs) {
            *o = d * q as f32;
        }
    }
}

fn reference(w: &[f32], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// Each row of `xs` quantised with `quantize`.
fn quantized<B>(xs: &[Vec<f32>], quantize: fn(&[f32], &mut Vec<B>)) -> Vec<Vec<B>> {
    xs.iter()
        .map(|x| {
            let mut a = Vec::new();
            quantize(x, &mut a);
            a
        })
        .collect()
}

fn check(name: &str, got: f32, want: f32) {
    let tol = 1e-3 * want.abs().max(1.0);
    assert!(
        (got - want).abs() <= tol,
        "{name}: kernel {got} vs reference {want}"
    );
}

const N: usize = 512;

fn activations(rng: &mut Lcg) -> Vec<f32> {
    (0..N).map(|_| rng.f32() * 3.0).collect()
}

#[test]
fn q4_0_q4_1_q5_0_q5_1_q8_0_match_reference() {
    let mut rng = Lcg(7);
    for _ in 0..20 {
        let x = activations(&mut rng);
        let (mut a0, mut a1) = (Vec::new(), Vec::new());
        quantize_q8_0(&x, &mut a0);
        quantize_q8_1(&x, &mut a1);
        let mut xq0 = vec![0f32; N];
        dequantize_acts(a0.iter().map(|b| (b.d, &b.qs)), &mut xq0);
        let mut xq1 = vec![0f32; N];
        // Q8_1 dequantises like Q8_0 (its `s` is only a cached sum).
        dequantize_acts(a1.iter().map(|b| (b.d, &b.qs)), &mut xq1);
        let mut wf = vec![0f32; N];

        let w: Vec<BlockQ4_0> =
            random_bytes(&mut rng, N / 32, |b: &mut BlockQ4_0, r| b.d = r.scale());
        dequantize_q4_0(&w, &mut wf);
        check("q4_0", dot_q4_0(&w, &a0), reference(&wf, &xq0));

        let w: Vec<BlockQ4_1> = random_bytes(&mut rng, N / 32, |b: &mut BlockQ4_1, r| {
            b.d = r.scale();
            b.m = f16::from_f32(-r.f32().abs() * 0.1);
        });
        dequantize_q4_1(&w, &mut wf);
        check("q4_1", dot_q4_1(&w, &a1), reference(&wf, &xq1));

        let w: Vec<BlockQ5_0> =
            random_bytes(&mut rng, N / 32, |b: &mut BlockQ5_0, r| b.d = r.scale());
        dequantize_q5_0(&w, &mut wf);
        check("q5_0", dot_q5_0(&w, &a0), reference(&wf, &xq0));

        let w: Vec<BlockQ5_1> = random_bytes(&mut rng, N / 32, |b: &mut BlockQ5_1, r| {
            b.d = r.scale();
            b.m = f16::from_f32(-r.f32().abs() * 0.1);
        });
        dequantize_q5_1(&w, &mut wf);
        check("q5_1", dot_q5_1(&w, &a1), reference(&wf, &xq1));

        let w: Vec<BlockQ8_0> =
            random_bytes(&mut rng, N / 32, |b: &mut BlockQ8_0, r| b.d = r.scale());
        dequantize_q8_0(&w, &mut wf);
        check("q8_0", dot_q8_0(&w, &a0), reference(&wf, &xq0));
        let w: Vec<BlockIQ4NL> =
            random_bytes(&mut rng, N / 32, |b: &mut BlockIQ4NL, r| b.d = r.scale());
        dequantize_iq4_nl(&w, &mut wf);
        check("iq4_nl", dot_iq4_nl(&w, &a0), reference(&wf, &xq0));
    }
}

fn dequantize_q8_k(a: &[BlockQ8K], out: &mut [f32]) {
    for (b, out) in a.iter().zip(out.chunks_exact_mut(QK_K)) {
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = q as f32 * b.d;
        }
    }
}

#[test]
fn k_quants_match_reference() {
    let mut rng = Lcg(11);
    for _ in 0..20 {
        let x = activations(&mut rng);
        let mut a = Vec::new();
        quantize_q8_k(&x, &mut a);
        for b in &a {
            for (g, s) in b.qs.chunks_exact(16).zip(&b.bsums) {
                assert_eq!(g.iter().map(|&q| q as i16).sum::<i16>(), *s);
            }
        }
        let mut xq = vec![0f32; N];
        dequantize_q8_k(&a, &mut xq);
        let mut wf = vec![0f32; N];

        let w: Vec<BlockQ4K> = random_bytes(&mut rng, N / QK_K, |b: &mut BlockQ4K, r| {
            b.d = r.scale();
            b.dmin = r.scale();
        });
        dequantize_q4_k(&w, &mut wf);
        check("q4_k", dot_q4_k(&w, &a), reference(&wf, &xq));

        let w: Vec<BlockQ5K> = random_bytes(&mut rng, N / QK_K, |b: &mut BlockQ5K, r| {
            b.d = r.scale();
            b.dmin = r.scale();
        });
        dequantize_q5_k(&w, &mut wf);
        check("q5_k", dot_q5_k(&w, &a), reference(&wf, &xq));

        let w: Vec<BlockQ6K> =
            random_bytes(&mut rng, N / QK_K, |b: &mut BlockQ6K, r| b.d = r.scale());
        dequantize_q6_k(&w, &mut wf);
        check("q6_k", dot_q6_k(&w, &a), reference(&wf, &xq));

        let w: Vec<BlockQ3K> =
            random_bytes(&mut rng, N / QK_K, |b: &mut BlockQ3K, r| b.d = r.scale());
        dequantize_q3_k(&w, &mut wf);
        check("q3_k", dot_q3_k(&w, &a), reference(&wf, &xq));

        let w: Vec<BlockQ2K> = random_bytes(&mut rng, N / QK_K, |b: &mut BlockQ2K, r| {
            b.d = r.scale();
            b.dmin = r.scale();
        });
        dequantize_q2_k(&w, &mut wf);
        check("q2_k", dot_q2_k(&w, &a), reference(&wf, &xq));
    }
}

#[test]
fn activation_quantisation_is_close() {
    let mut rng = Lcg(3);
    let x = activations(&mut rng);
    let mut a = Vec::new();
    quantize_q8_0(&x, &mut a);
    let mut back = vec![0f32; N];
    dequantize_acts(a.iter().map(|b| (b.d, &b.qs)), &mut back);
    for (v, b) in x.iter().zip(&back) {
        assert!((v - b).abs() <= 3.0 / 127.0 * 0.51 + 1e-3, "{v} vs {b}");
    }
    // All-zero input must not divide by zero.
    quantize_q8_k(&[0.0; QK_K], &mut Vec::new());
}

#[test]
fn rope_rotates_pairs_and_keeps_norm() {
    let rope = Rope::new(8, 10000.0, false);
    let mut head = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    let norm: f32 = head.iter().map(|v| v * v).sum();
    rope.apply(&mut head, 8, 3);
    let after: f32 = head.iter().map(|v| v * v).sum();
    assert!((norm - after).abs() < 1e-5);
    assert!((head[0] - 3f32.cos()).abs() < 1e-6 && (head[1] - 3f32.sin()).abs() < 1e-6);
    let mut at_zero = [0.5; 8];
    rope.apply(&mut at_zero, 8, 0);
    assert_eq!(at_zero, [0.5; 8]);

    // Frequency factors divide each pair's own angle: pair 0 turns by 3/4, and pair 1 by
    // its unscaled angle over 2 (the division is not carried to the next frequency).
    let scaled = Rope::new(8, 10000.0, false).with_factors(vec![4.0, 2.0, 1.0, 1.0]);
    let mut head = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    scaled.apply(&mut head, 8, 3);
    let second = 3.0 * 10000f32.powf(-2.0 / 8.0);
    assert!((head[0] - 0.75f32.cos()).abs() < 1e-6, "{head:?}");
    assert!((head[2] - (second / 2.0).cos()).abs() < 1e-6, "{head:?}");
    assert!((head[3] - (second / 2.0).sin()).abs() < 1e-6, "{head:?}");
}

#[test]
fn threaded_products_equal_single_threaded_ones() {
    let mut rng = Lcg(5);
    // Not a multiple of four: the four-row kernel's remainder is covered too.
    // Six tokens: one four-token tile and a remainder of two.
    let (rows, cols, tokens) = (1002, 256, 6);
    let w: Vec<BlockQ8_0> = random_bytes(&mut rng, rows * cols / 32, |b: &mut BlockQ8_0, r| {
        b.d = r.scale()
    });
    let acts: Vec<Vec<ActQ8_0>> = (0..tokens)
        .map(|_| {
            let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
            let mut a = Vec::new();
            quantize_q8_0(&x, &mut a);
            a
        })
        .collect();
    let mut expected = vec![0f32; rows * tokens];
    for (r, wrow) in w.chunks_exact(cols / 32).enumerate() {
        for (t, a) in acts.iter().enumerate() {
            expected[t * rows + r] = dot_q8_0(wrow, a);
        }
    }
    set_compute_threads(2);
    assert!(
        rows * cols * tokens >= PARALLEL_MIN_WORK,
        "the product must be large enough to use the pool"
    );
    for t in [1, tokens] {
        let mut out = vec![0f32; rows * t];
        let kernels = RowKernels {
            dot: dot_q8_0,
            dot4: dot4_q8_0,
            tile: tile_q8_0,
            tile8: tile8_q8_0,
        };
        matmul_rows(&w, &acts[..t], rows, cols, &mut out, &kernels);
        assert_eq!(out, expected[..rows * t], "tokens = {t}");
    }
}

#[test]
fn every_kernel_level_agrees_with_the_portable_kernels() {
    // Every level this CPU runs, not only the one `Isa::current` picks: a CPU without
    // AVX-512 VNNI takes the AVX2 kernels, which are checked here too.
    for isa in Isa::available() {
        block_products_agree_with_portable(isa);
    }
}

fn block_products_agree_with_portable(isa: Isa) {
    let mut rng = Lcg(17);
    for _ in 0..20 {
        let x = activations(&mut rng);
        let (mut a0, mut a1) = (Vec::new(), Vec::new());
        quantize_q8_0(&x, &mut a0);
        quantize_q8_1(&x, &mut a1);
        let w: Vec<BlockQ4_0> =
            random_bytes(&mut rng, N / 32, |b: &mut BlockQ4_0, r| b.d = r.scale());
        check(
            &format!("q4_0 {}", isa.name()),
            at::dot_q4_0(isa, &w, &a0),
            quant::dot_q4_0_portable(&w, &a0),
        );
        let w: Vec<BlockQ4_1> = random_bytes(&mut rng, N / 32, |b: &mut BlockQ4_1, r| {
            b.d = r.scale();
            b.m = f16::from_f32(-r.f32().abs() * 0.1);
        });
        check(
            &format!("q4_1 {}", isa.name()),
            at::dot_q4_1(isa, &w, &a1),
            quant::dot_q4_1_portable(&w, &a1),
        );
        let w: Vec<BlockQ5_0> =
            random_bytes(&mut rng, N / 32, |b: &mut BlockQ5_0, r| b.d = r.scale());
        check(
            &format!("q5_0 {}", isa.name()),
            at::dot_q5_0(isa, &w, &a0),
            quant::dot_q5_0_portable(&w, &a0),
        );
        let w: Vec<BlockQ8_0> =
            random_bytes(&mut rng, N / 32, |b: &mut BlockQ8_0, r| b.d = r.scale());
        check(
            &format!("q8_0 {}", isa.name()),
            at::dot_q8_0(isa, &w, &a0),
            quant::dot_q8_0_portable(&w, &a0),
        );
        let w: Vec<BlockIQ4NL> =
            random_bytes(&mut rng, N / 32, |b: &mut BlockIQ4NL, r| b.d = r.scale());
        check(
            &format!("iq4_nl {}", isa.name()),
            at::dot_iq4_nl(isa, &w, &a0),
            quant::dot_iq4_nl_portable(&w, &a0),
        );
        // The K-quant kernels sum integers exactly and keep the float expression: equal
        // to the bit.
        let mut ak = Vec::new();
        quantize_q8_k(&x, &mut ak);
        let w: Vec<BlockQ4K> = random_bytes(&mut rng, N / QK_K, |b: &mut BlockQ4K, r| {
            b.d = r.scale();
            b.dmin = r.scale();
        });
        assert_eq!(
            at::dot_q4_k(isa, &w, &ak).to_bits(),
            quant::dot_q4_k_portable(&w, &ak).to_bits()
        );
        let w: Vec<BlockQ6K> =
            random_bytes(&mut rng, N / QK_K, |b: &mut BlockQ6K, r| b.d = r.scale());
        assert_eq!(
            at::dot_q6_k(isa, &w, &ak).to_bits(),
            quant::dot_q6_k_portable(&w, &ak).to_bits()
        );
        let w: Vec<BlockQ3K> =
            random_bytes(&mut rng, N / QK_K, |b: &mut BlockQ3K, r| b.d = r.scale());
        assert_eq!(
            at::dot_q3_k(isa, &w, &ak).to_bits(),
            quant::dot_q3_k_portable(&w, &ak).to_bits()
        );
        let w: Vec<BlockQ2K> = random_bytes(&mut rng, N / QK_K, |b: &mut BlockQ2K, r| {
            b.d = r.scale();
            b.dmin = r.scale();
        });
        assert_eq!(
            at::dot_q2_k(isa, &w, &ak).to_bits(),
            quant::dot_q2_k_portable(&w, &ak).to_bits()
        );
        let w: Vec<BlockQ5K> = random_bytes(&mut rng, N / QK_K, |b: &mut BlockQ5K, r| {
            b.d = r.scale();
            b.dmin = r.scale();
        });
        assert_eq!(
            at::dot_q5_k(isa, &w, &ak).to_bits(),
            quant::dot_q5_k_portable(&w, &ak).to_bits()
        );
    }
}

/// The SIMD levels differ only in how a byte product is computed (VNNI's one instruction
/// or AVX2's two), which gives the same integers, so every kernel gives the same bits at
/// every SIMD level: a model answers the same on any x86 CPU with AVX2.
#[test]
fn simd_levels_give_the_same_bits() {
    let levels: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|i| *i > Isa::PORTABLE)
        .collect();
    let mut rng = Lcg(41);
    let xs: Vec<Vec<f32>> = (0..4).map(|_| activations(&mut rng)).collect();
    let a0: Vec<Vec<ActQ8_0>> = quantized(&xs, quantize_q8_0);
    let a1: Vec<Vec<ActQ8_1>> = quantized(&xs, quantize_q8_1);
    macro_rules! same_bits {
        ($block:ty, $acts:expr, $dot:ident, $tile:ident, $fix:expr) => {{
            let per_row = N / 32;
            let w: Vec<$block> = random_bytes(&mut rng, 4 * per_row, $fix);
            let rows: Vec<&[$block]> = w.chunks_exact(per_row).collect();
            let rows4 = [rows[0], rows[1], rows[2], rows[3]];
            let acts4 = [&$acts[0][..], &$acts[1], &$acts[2], &$acts[3]];
            let results: Vec<(u32, Vec<u32>)> = levels
                .iter()
                .map(|&isa| {
                    let one = at::$dot(isa, rows[0], &$acts[0]).to_bits();
                    let tile = at::$tile(isa, &rows4, &acts4);
                    (one, tile.iter().flatten().map(|v| v.to_bits()).collect())
                })
                .collect();
            assert!(
                results.windows(2).all(|w| w[0] == w[1]),
                "{}: levels differ",
                stringify!($tile)
            );
        }};
    }
    same_bits!(
        BlockQ4_0,
        a0,
        dot_q4_0,
        tile_q4_0,
        |b: &mut BlockQ4_0, r| b.d = r.scale()
    );
    same_bits!(
        BlockQ5_0,
        a0,
        dot_q5_0,
        tile_q5_0,
        |b: &mut BlockQ5_0, r| b.d = r.scale()
    );
    same_bits!(
        BlockQ8_0,
        a0,
        dot_q8_0,
        tile_q8_0,
        |b: &mut BlockQ8_0, r| b.d = r.scale()
    );
    same_bits!(
        BlockIQ4NL,
        a0,
        dot_iq4_nl,
        tile_iq4_nl,
        |b: &mut BlockIQ4NL, r| b.d = r.scale()
    );
    same_bits!(
        BlockQ4_1,
        a1,
        dot_q4_1,
        tile_q4_1,
        |b: &mut BlockQ4_1, r| {
            b.d = r.scale();
            b.m = f16::from_f32(-r.f32().abs() * 0.1);
        }
    );
}

#[test]
fn half_precision_helpers_equal_their_scalar_definitions_bit_for_bit() {
    // The f16 dot product (F16 weight matrices) is vectorised with F16C where the build has
    // it; it must round exactly as the scalar loop it replaces.
    let mut rng = Lcg(7);
    for n in [1, 7, 8, 9, 64, 100, 256] {
        let w: Vec<f16> = (0..n).map(|_| f16::from_f32(rng.f32() * 3.0)).collect();
        let a: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
        let mut lanes = [0f32; 8];
        for i in 0..n / 8 {
            for k in 0..8 {
                lanes[k] += w[i * 8 + k].to_f32() * a[i * 8 + k];
            }
        }
        let mut want: f32 = lanes.iter().sum();
        for i in n / 8 * 8..n {
            want += w[i].to_f32() * a[i];
        }
        assert_eq!(
            quant::dot_f16(&w, &a).to_bits(),
            want.to_bits(),
            "dot, n = {n}"
        );
        let others: Vec<Vec<f16>> = (0..3)
            .map(|_| (0..n).map(|_| f16::from_f32(rng.f32() * 3.0)).collect())
            .collect();
        let rows = [&w[..], &others[0], &others[1], &others[2]];
        for (r, got) in quant::dot_rows_f16(rows, &a).iter().enumerate() {
            assert_eq!(
                got.to_bits(),
                quant::dot_f16(rows[r], &a).to_bits(),
                "dot4 row {r}, n = {n}"
            );
        }
    }
}

/// Q3_K's sixteen scales, unpacked per element of the packing, agree with the packing read
/// as ggml describes it: three little-endian words rearranged into four, each byte a scale.
#[test]
fn q3_k_scales_are_unpacked_as_packed() {
    let mut rng = Lcg(13);
    for _ in 0..100 {
        let packed: [u8; 12] = std::array::from_fn(|_| (rng.f32().abs() * 256.0) as u8);
        let word = |i: usize| u32::from_le_bytes(packed[4 * i..4 * i + 4].try_into().unwrap());
        let (a0, a1, tmp) = (word(0), word(1), word(2));
        let (m1, m2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
        let words = [
            (a0 & m2) | ((tmp & m1) << 4),
            (a1 & m2) | (((tmp >> 2) & m1) << 4),
            ((a0 >> 4) & m2) | (((tmp >> 4) & m1) << 4),
            ((a1 >> 4) & m2) | (((tmp >> 6) & m1) << 4),
        ];
        let want: Vec<i8> = words
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .map(|b| b as i8 - 32)
            .collect();
        assert_eq!(q3k_scales(&packed).to_vec(), want);
    }
}

/// BF16 rows: eight lanes of products added in order, folded, then the tail, as f16's;
/// four rows at once give each row's bits alone; and through a matrix (activations rounded
/// to bfloat16 first) one token or many give the same bits as the scalar definition.
#[test]
fn bf16_products_are_their_scalar_definition() {
    use half::bf16;
    let mut rng = Lcg(11);
    for n in [1, 7, 8, 9, 64, 100, 256] {
        let w: Vec<bf16> = (0..n).map(|_| bf16::from_f32(rng.f32() * 3.0)).collect();
        let a: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
        let mut lanes = [0f32; 8];
        for i in 0..n / 8 {
            for k in 0..8 {
                lanes[k] += w[i * 8 + k].to_f32() * a[i * 8 + k];
            }
        }
        let mut want: f32 = lanes.iter().sum();
        for i in n / 8 * 8..n {
            want += w[i].to_f32() * a[i];
        }
        assert_eq!(
            quant::dot_bf16(&w, &a).to_bits(),
            want.to_bits(),
            "dot, n = {n}"
        );
        let others: Vec<Vec<bf16>> = (0..3)
            .map(|_| (0..n).map(|_| bf16::from_f32(rng.f32() * 3.0)).collect())
            .collect();
        let rows = [&w[..], &others[0], &others[1], &others[2]];
        for (r, got) in quant::dot_rows_bf16(rows, &a).iter().enumerate() {
            assert_eq!(
                got.to_bits(),
                quant::dot_bf16(rows[r], &a).to_bits(),
                "dot4 row {r}, n = {n}"
            );
        }
    }
}

/// A matrix of GGUF type `ty` (its id in the file) from raw bytes, through a GGUF file as
/// the engine reads them.
fn matrix_of(ty: u32, rows: usize, cols: usize, bytes: &[u8]) -> QMatrix {
    let file = basalt_gguf::write::Writer::new()
        .string("general.architecture", "test")
        .tensor("m", &[cols as u64, rows as u64], ty, bytes.to_vec())
        .to_bytes();
    let path = std::env::temp_dir().join(format!(
        "basalt-matrix-{}-{ty}-{rows}x{cols}.gguf",
        std::process::id()
    ));
    std::fs::write(&path, file).unwrap();
    let gguf = basalt_gguf::GgufFile::open(&path).unwrap();
    let info = gguf.header().tensor("m").unwrap().clone();
    let m = QMatrix::new(&info, gguf.tensor_bytes(&info).unwrap()).unwrap();
    let _ = std::fs::remove_file(&path);
    m
}

#[test]
fn bf16_matrices_round_activations_and_batch_alike() {
    use half::bf16;
    let (rows, cols, tokens) = (37, 96, 5);
    let mut rng = Lcg(12);
    let w: Vec<bf16> = (0..rows * cols)
        .map(|_| bf16::from_f32(rng.f32()))
        .collect();
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
    let m = matrix_of(30, rows, cols, &bytes);
    let x: Vec<f32> = (0..tokens * cols).map(|_| rng.f32() * 2.0).collect();
    let mut out = vec![0f32; tokens * rows];
    m.matmul(&x, &mut out, &mut Default::default());
    for t in 0..tokens {
        let xr: Vec<f32> = x[t * cols..(t + 1) * cols]
            .iter()
            .map(|v| bf16::from_f32(*v).to_f32())
            .collect();
        let mut one = vec![0f32; rows];
        m.matmul(
            &x[t * cols..(t + 1) * cols],
            &mut one,
            &mut Default::default(),
        );
        for r in 0..rows {
            let want = quant::dot_bf16(&w[r * cols..(r + 1) * cols], &xr);
            assert_eq!(
                out[t * rows + r].to_bits(),
                want.to_bits(),
                "token {t} row {r}"
            );
            assert_eq!(one[r].to_bits(), want.to_bits(), "alone: token {t} row {r}");
        }
    }
    let mut row = vec![0f32; cols];
    m.dequantize_row(3, &mut row);
    assert_eq!(row[5], w[3 * cols + 5].to_f32());
}

/// Attention's grouped kernels give exactly their scalar definitions: a (key, query) score
/// is 16 lanes of fused multiply-adds folded in halves, then the tail; an output element
/// gets each weighted value fused on in order. So grouping the heads that share a KV head
/// (or pairing keys) changes no result.
#[test]
fn attention_kernels_equal_their_scalar_definitions_bit_for_bit() {
    for isa in Isa::available() {
        attention_kernels_equal_definitions(isa);
    }
}

fn attention_kernels_equal_definitions(isa: Isa) {
    let mut rng = Lcg(11);
    for n in [1, 7, 8, 15, 16, 17, 64, 100, 256] {
        let halves = |rng: &mut Lcg| -> Vec<f16> {
            (0..n).map(|_| f16::from_f32(rng.f32() * 3.0)).collect()
        };
        let keys = [halves(&mut rng), halves(&mut rng)];
        let queries: Vec<Vec<f32>> = (0..4)
            .map(|_| (0..n).map(|_| rng.f32()).collect())
            .collect();
        let score = |key: &[f16], query: &[f32]| {
            let mut lanes = [0f32; 16];
            for i in 0..n / 16 {
                for (l, lane) in lanes.iter_mut().enumerate() {
                    *lane = key[16 * i + l].to_f32().mul_add(query[16 * i + l], *lane);
                }
            }
            for width in [8, 4, 2, 1] {
                for l in 0..width {
                    lanes[l] += lanes[l + width];
                }
            }
            let mut sum = lanes[0];
            for i in n / 16 * 16..n {
                sum = key[i].to_f32().mul_add(query[i], sum);
            }
            sum
        };
        let q4 = [&queries[0][..], &queries[1], &queries[2], &queries[3]];
        let got = quant::dot_f16_queries_at(isa, [&keys[0][..], &keys[1]], q4);
        for (k, key) in keys.iter().enumerate() {
            for (g, query) in queries.iter().enumerate() {
                let want = score(key, query);
                assert_eq!(got[k][g].to_bits(), want.to_bits(), "score, n = {n}");
                let [[alone]] = quant::dot_f16_queries_at(isa, [&key[..]], [&query[..]]);
                assert_eq!(alone.to_bits(), want.to_bits(), "score alone, n = {n}");
            }
        }

        // Three heads, rows `stride` apart, four value rows.
        let stride = n + 3;
        let values = [
            halves(&mut rng),
            halves(&mut rng),
            halves(&mut rng),
            halves(&mut rng),
        ];
        let weights: [[f32; 4]; 3] = std::array::from_fn(|_| std::array::from_fn(|_| rng.f32()));
        let start: Vec<f32> = (0..3 * stride).map(|_| rng.f32()).collect();
        let mut got = start.clone();
        let rows = [&values[0][..], &values[1], &values[2], &values[3]];
        quant::axpy_f16_heads_at(isa, &mut got, stride, weights, rows);
        let mut want = start.clone();
        for (g, weights) in weights.iter().enumerate() {
            for i in 0..n {
                for (w, value) in weights.iter().zip(&values) {
                    want[g * stride + i] = w.mul_add(value[i].to_f32(), want[g * stride + i]);
                }
            }
        }
        assert!(
            got.iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "weighted values, n = {n}"
        );
    }
}

#[test]
fn four_row_products_equal_one_row_products_bit_for_bit() {
    for isa in Isa::available() {
        four_rows_equal_one_row(isa);
    }
}

fn four_rows_equal_one_row(isa: Isa) {
    let mut rng = Lcg(23);
    let x = activations(&mut rng);
    let (mut a0, mut a1) = (Vec::new(), Vec::new());
    quantize_q8_0(&x, &mut a0);
    quantize_q8_1(&x, &mut a1);
    let per_row = N / 32;
    macro_rules! check4 {
        ($block:ty, $acts:expr, $dot:ident, $dot4:ident, $fix:expr) => {{
            let w: Vec<$block> = random_bytes(&mut rng, 4 * per_row, $fix);
            let rows: Vec<&[$block]> = w.chunks_exact(per_row).collect();
            let four = at::$dot4(isa, &[rows[0], rows[1], rows[2], rows[3]], &$acts);
            for (r, got) in four.iter().enumerate() {
                assert_eq!(
                    got.to_bits(),
                    at::$dot(isa, rows[r], &$acts).to_bits(),
                    "{} {} row {r}",
                    stringify!($dot4),
                    isa.name()
                );
            }
        }};
    }
    check4!(
        BlockQ4_0,
        a0,
        dot_q4_0,
        dot4_q4_0,
        |b: &mut BlockQ4_0, r| b.d = r.scale()
    );
    check4!(
        BlockQ5_0,
        a0,
        dot_q5_0,
        dot4_q5_0,
        |b: &mut BlockQ5_0, r| b.d = r.scale()
    );
    check4!(
        BlockQ8_0,
        a0,
        dot_q8_0,
        dot4_q8_0,
        |b: &mut BlockQ8_0, r| b.d = r.scale()
    );
    check4!(
        BlockQ4_1,
        a1,
        dot_q4_1,
        dot4_q4_1,
        |b: &mut BlockQ4_1, r| {
            b.d = r.scale();
            b.m = f16::from_f32(-r.f32().abs() * 0.1);
        }
    );
}

/// Asserts that `tile[r][t]` has the bits of `dot(rows[r], acts[t])`.
fn assert_tile_is_one_row_products<W, A, const T: usize>(
    name: &str,
    isa: Isa,
    tile: &[[f32; T]; 4],
    rows: &[&[W]],
    acts: [&[A]; T],
    dot: impl Fn(&[W], &[A]) -> f32,
) {
    for (r, by_token) in tile.iter().enumerate() {
        for (t, got) in by_token.iter().enumerate() {
            assert_eq!(
                got.to_bits(),
                dot(rows[r], acts[t]).to_bits(),
                "{name} {} row {r} token {t}",
                isa.name()
            );
        }
    }
}

/// The register tiles, four rows by four and by eight tokens (four rows per 512-bit
/// register at the VNNI level), give every (row, token) exactly what the one-row product
/// gives it, at every level.
#[test]
fn tiles_equal_one_row_products_bit_for_bit() {
    let mut rng = Lcg(47);
    let xs: Vec<Vec<f32>> = (0..8).map(|_| activations(&mut rng)).collect();
    let (a0, a1, ak) = (
        quantized(&xs, quantize_q8_0),
        quantized(&xs, quantize_q8_1),
        quantized(&xs, quantize_q8_k),
    );
    let a8: [&[ActQ8_0]; 8] = std::array::from_fn(|t| &a0[t][..]);
    let a18: [&[ActQ8_1]; 8] = std::array::from_fn(|t| &a1[t][..]);
    let ak8: [&[BlockQ8K]; 8] = std::array::from_fn(|t| &ak[t][..]);
    macro_rules! check_tiles {
        ($block:ty, $elements:expr, $acts:expr, $dot:ident, $tile:ident, $tile8_at:ident, $fix:expr) => {{
            let per_row = N / $elements;
            let w: Vec<$block> = random_bytes(&mut rng, 4 * per_row, $fix);
            let rows: Vec<&[$block]> = w.chunks_exact(per_row).collect();
            let four = [rows[0], rows[1], rows[2], rows[3]];
            let acts4 = [$acts[0], $acts[1], $acts[2], $acts[3]];
            for isa in Isa::available() {
                let dot = |w: &[$block], a: &_| at::$dot(isa, w, a);
                let tile = at::$tile(isa, &four, &acts4);
                assert_tile_is_one_row_products(stringify!($tile), isa, &tile, &rows, acts4, dot);
                let tile = $tile8_at(isa, &four, &$acts);
                let name = stringify!($tile8_at);
                assert_tile_is_one_row_products(name, isa, &tile, &rows, $acts, dot);
            }
        }};
    }
    check_tiles!(
        BlockQ4_0,
        QK,
        a8,
        dot_q4_0,
        tile_q4_0,
        tile8_q4_0_at,
        |b: &mut BlockQ4_0, r| { b.d = r.scale() }
    );
    check_tiles!(
        BlockQ5_0,
        QK,
        a8,
        dot_q5_0,
        tile_q5_0,
        tile8_q5_0_at,
        |b: &mut BlockQ5_0, r| { b.d = r.scale() }
    );
    check_tiles!(
        BlockQ8_0,
        QK,
        a8,
        dot_q8_0,
        tile_q8_0,
        tile8_q8_0_at,
        |b: &mut BlockQ8_0, r| { b.d = r.scale() }
    );
    check_tiles!(
        BlockIQ4NL,
        QK,
        a8,
        dot_iq4_nl,
        tile_iq4_nl,
        tile8_iq4_nl_at,
        |b: &mut BlockIQ4NL, r| { b.d = r.scale() }
    );
    // Q8_0 weights of -128 (a file may hold them) and 127.
    check_tiles!(
        BlockQ8_0,
        QK,
        a8,
        dot_q8_0,
        tile_q8_0,
        tile8_q8_0_at,
        |b: &mut BlockQ8_0, r| {
            b.d = r.scale();
            b.qs[0] = -128;
            b.qs[1] = 127;
        }
    );
    check_tiles!(
        BlockQ4_1,
        QK,
        a18,
        dot_q4_1,
        tile_q4_1,
        tile8_q4_1_at,
        |b: &mut BlockQ4_1, r| {
            b.d = r.scale();
            b.m = f16::from_f32(-r.f32().abs() * 0.1);
        }
    );
    // The K-quants, whose one-row products equal the portable ones (checked above).
    check_tiles!(
        BlockQ4K,
        QK_K,
        ak8,
        dot_q4_k,
        tile_q4_k,
        tile8_q4_k_at,
        |b: &mut BlockQ4K, r| {
            b.d = r.scale();
            b.dmin = r.scale();
        }
    );
    check_tiles!(
        BlockQ6K,
        QK_K,
        ak8,
        dot_q6_k,
        tile_q6_k,
        tile8_q6_k_at,
        |b: &mut BlockQ6K, r| { b.d = r.scale() }
    );
    check_tiles!(
        BlockQ3K,
        QK_K,
        ak8,
        dot_q3_k,
        tile_q3_k,
        tile8_q3_k_at,
        |b: &mut BlockQ3K, r| { b.d = r.scale() }
    );
    check_tiles!(
        BlockQ5K,
        QK_K,
        ak8,
        dot_q5_k,
        tile_q5_k,
        tile8_q5_k_at,
        |b: &mut BlockQ5K, r| {
            b.d = r.scale();
            b.dmin = r.scale();
        }
    );
    check_tiles!(
        BlockQ2K,
        QK_K,
        ak8,
        dot_q2_k,
        tile_q2_k,
        tile8_q2_k_at,
        |b: &mut BlockQ2K, r| {
            b.d = r.scale();
            b.dmin = r.scale();
        }
    );
}

/// The GELU table holds, for every f16 input, what rounding, `gelu_tanh` and rounding again
/// give.
#[test]
fn gelu_table_equals_its_definition() {
    for bits in (0..=u16::MAX).step_by(7) {
        let x = f16::from_bits(bits).to_f32();
        if !x.is_finite() {
            continue;
        }
        let want = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x
        } else {
            f16::from_f32(gelu_tanh(x)).to_f32()
        };
        assert_eq!(gelu_f16_table(x).to_bits(), want.to_bits(), "x = {x}");
    }
    // Between f16 values: the input is rounded first.
    let x = 0.123_456_7f32;
    let rounded = f16::from_f32(x).to_f32();
    assert_eq!(gelu_f16_table(x), gelu_f16_table(rounded));
}

/// Activation quantisation (vectorised where the build allows) gives exactly ggml's scalar
/// definition: scale `amax / 127` (rounded to f16), quants `round_ties_even(v * 127 / amax)`,
/// and their sum; and the lane sums the 512-bit kernels start from.
#[test]
fn activation_quantisation_equals_the_scalar_definition() {
    let mut rng = Lcg(31);
    let mut x = activations(&mut rng);
    // A block of zeros, and one of ties (x.5 after scaling).
    x[..32].fill(0.0);
    for (i, v) in x[32..64].iter_mut().enumerate() {
        *v = (i as f32 - 16.0) + 0.5;
    }
    x[63] = 127.0;
    // Non-finite values take the scalar path: the same answer as the definition.
    x[70] = f32::NAN;
    x[100] = f32::INFINITY;
    let (mut a0, mut a1) = (Vec::new(), Vec::new());
    quantize_q8_0(&x, &mut a0);
    quantize_q8_1(&x, &mut a1);
    for (b, chunk) in x.chunks_exact(32).enumerate() {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let qs: Vec<i8> = chunk
            .iter()
            .map(|v| (v * id).round_ties_even() as i32 as i8)
            .collect();
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        let d = amax / 127.0;
        assert_eq!(a0[b].qs.to_vec(), qs, "block {b}");
        assert_eq!(a0[b].d.to_bits(), f16::from_f32(d).to_f32().to_bits());
        for (j, &lane) in a0[b].offset_lanes.iter().enumerate() {
            let sum: i32 = (0..4)
                .map(|i| qs[4 * j + i] as i32 + qs[16 + 4 * j + i] as i32)
                .sum();
            assert_eq!(lane, -128 * sum, "block {b} lane {j}");
        }
        assert_eq!(a1[b].qs.to_vec(), qs);
        assert_eq!(
            a1[b].s.to_bits(),
            f16::from_f32(d * sum as f32).to_f32().to_bits(),
            "block {b}"
        );
    }
}

/// Q8_K quantisation (vectorised where the CPU allows) gives exactly ggml's scalar
/// definition: the scale from the first value of largest magnitude (which maps to -127),
/// quants rounded to nearest-even and capped at 127, and the sums of each 16.
#[test]
fn q8_k_quantisation_equals_the_scalar_definition() {
    let mut rng = Lcg(37);
    let mut x: Vec<f32> = (0..6 * QK_K).map(|_| rng.f32() * 4.0).collect();
    // Block 1: all zeros. Block 2: the largest magnitude twice, negative first. Block 3: a
    // NaN (scalar path). Block 4: positive first. Block 5: values that round at .5.
    x[QK_K..2 * QK_K].fill(0.0);
    x[2 * QK_K + 3] = -9.0;
    x[2 * QK_K + 200] = 9.0;
    x[3 * QK_K + 7] = f32::NAN;
    x[4 * QK_K + 1] = 9.0;
    x[4 * QK_K + 2] = -9.0;
    for (i, v) in x[5 * QK_K..].iter_mut().enumerate() {
        *v = (i % 255) as f32 - 127.0 + 0.5;
    }
    let mut got = Vec::new();
    quantize_q8_k(&x, &mut got);
    for (b, chunk) in x.chunks_exact(QK_K).enumerate() {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in chunk {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let (mut qs, mut d) = ([0i8; QK_K], 0f32);
        if amax != 0.0 {
            let iscale = -127.0 / max;
            for (q, v) in qs.iter_mut().zip(chunk) {
                *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
            }
            d = 1.0 / iscale;
        }
        assert_eq!(got[b].qs.to_vec(), qs.to_vec(), "block {b}");
        assert_eq!(got[b].d.to_bits(), d.to_bits(), "block {b}");
        for (g, group) in qs.chunks_exact(16).enumerate() {
            let sum: i16 = group.iter().map(|&q| q as i16).sum();
            assert_eq!(got[b].bsums[g], sum, "block {b} group {g}");
        }
    }
    // d = -max / 127: the first of two equal magnitudes sets its sign.
    assert!(got[2].d > 0.0 && got[4].d < 0.0);
}

/// The gated unit gives each element what the plain loop gives it, whether it runs split
/// across the pool (a prefill-sized input) or not.
#[test]
fn gated_unit_equals_the_elementwise_loop() {
    set_compute_threads(2);
    let mut rng = Lcg(43);
    for n in [5, 4096, 4097, 3 * 4096 + 17, 64 * 1024] {
        let gate: Vec<f32> = (0..n).map(|_| rng.f32() * 8.0).collect();
        let up: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
        let want: Vec<f32> = gate.iter().zip(&up).map(|(g, u)| silu(*g) * u).collect();
        let mut got = gate.clone();
        gated_in_place(&mut got, &up, silu);
        assert_eq!(got, want, "n = {n}");
    }
}

/// Tests run where they were compiled, so nothing the build uses can be missing; and the
/// check names only extensions the build was compiled with.
#[test]
fn the_build_machine_has_every_extension_the_build_uses() {
    assert_eq!(missing_cpu_features(), Vec::<&str>::new());
}
