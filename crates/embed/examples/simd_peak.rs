//! How fast this CPU multiplies in f32 and in bf16: the ceiling any embedding kernel works
//! under. Sixteen independent accumulator chains of AVX-512 FMAs (f32) against the same of
//! `vdpbf16ps` (bf16 pairs into f32), same thread, printed as GFLOP/s and as a ratio.
//!
//! `cargo run --release -p basalt-embed --example simd_peak`
//!
//! On the 2-core Xeon this project is measured on, bf16 came out at about half the f32 rate
//! (`vdpbf16ps` issues at half the FMA rate there), which is why the embedding kernels stay
//! in f32: bf16 would cost precision and buy no speed.

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;
    use std::time::Instant;

    const CHAINS: usize = 16;

    #[target_feature(enable = "avx512f")]
    unsafe fn f32_fma(iterations: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        let (x, y) = (_mm512_set1_ps(1.000_1), _mm512_set1_ps(0.999_9));
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(x, y, *a);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn bf16_dot(iterations: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        // 1.0 in bf16 in every lane.
        let one: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi16(0x3f80)) };
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = _mm512_dpbf16_ps(*a, one, one);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    pub fn run() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            println!("no AVX-512 on this CPU");
            return;
        }
        let iterations = 20_000_000;
        let time = |f: &dyn Fn() -> f32, flops: f64| {
            let start = Instant::now();
            let sink = f();
            let gflops = flops / start.elapsed().as_secs_f64() / 1e9;
            std::hint::black_box(sink);
            gflops
        };
        let per_iter = (CHAINS * 16 * 2) as f64;
        // SAFETY: AVX-512F is present (checked above).
        let f32_rate = time(
            &|| unsafe { f32_fma(iterations) },
            per_iter * iterations as f64,
        );
        println!("f32 FMA:    {f32_rate:.1} GFLOP/s per thread");
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            // SAFETY: AVX-512 BF16 is present (checked).
            let bf16_rate = time(
                &|| unsafe { bf16_dot(iterations) },
                2.0 * per_iter * iterations as f64,
            );
            println!("bf16 dot:   {bf16_rate:.1} GFLOP/s per thread");
            println!("bf16 / f32: {:.2}x", bf16_rate / f32_rate);
        } else {
            println!("no AVX-512 BF16 on this CPU");
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    peak::run();
}
