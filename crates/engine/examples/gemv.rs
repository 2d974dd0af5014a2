//! Where single-token decode time goes, product by product: times one-token products
//! (matrix-vector) on a GGUF file's own tensors, and reports nanoseconds per 32-element
//! block and the bytes-per-second the weights stream at. With `GEMV_STREAM=1` it runs every
//! matrix of the file once per round instead, as a decode step reads them, so the weights
//! come from memory rather than from a warm cache. The file is loaded as serving loads it
//! (`GEMV_MMAP=1`: as `--mmap-weights` does); `GEMV_THREADS=N` sets the compute threads
//! (default 1; products are handed to the pool from outside it, so small ones pay a
//! wake-up that a forward pass does not).
//! `cargo run --release -p basalt-engine --example gemv -- MODEL.gguf [TENSOR ...]`

use std::path::PathBuf;
use std::time::Instant;

use basalt_engine::kernels::{ActScratch, QMatrix};
use basalt_gguf::GgufFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = PathBuf::from(args.get(1).ok_or("usage: gemv MODEL [TENSOR ...]")?);
    let file = basalt_engine::open_weights(&path, std::env::var_os("GEMV_MMAP").is_some())?;
    let threads = std::env::var("GEMV_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    basalt_engine::set_compute_threads(threads);
    let wanted: Vec<&str> = args[2..].iter().map(String::as_str).collect();
    let defaults = [
        "blk.0.attn_q.weight",
        "blk.0.attn_v.weight",
        "blk.0.attn_output.weight",
        "blk.0.ffn_gate.weight",
        "blk.0.ffn_down.weight",
        "token_embd.weight",
    ];
    let names: Vec<&str> = if wanted.is_empty() {
        defaults.to_vec()
    } else {
        wanted
    };
    // `GEMV_TOKENS=N`: N tokens per product (a prefill chunk or a batch) instead of one;
    // the time per block is then per block and token.
    let tokens: usize = std::env::var("GEMV_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let mut scratch = ActScratch::default();
    if std::env::var_os("GEMV_STREAM").is_some() {
        stream(&file, &mut scratch)?;
        return Ok(());
    }
    for name in names {
        let Some(info) = file.header().tensor(name) else {
            eprintln!("{name}: not in the file");
            continue;
        };
        let m = QMatrix::new(info, file.tensor_bytes(info)?)?;
        let x: Vec<f32> = (0..m.cols * tokens)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let mut out = vec![0f32; m.rows * tokens];
        // Enough repetitions for ~0.3 s, at least 3.
        let t0 = Instant::now();
        m.matmul(&x, &mut out, &mut scratch);
        let once = t0.elapsed().as_secs_f64().max(1e-6);
        let reps = ((0.3 / once) as usize).max(3);
        let t0 = Instant::now();
        for _ in 0..reps {
            m.matmul(&x, &mut out, &mut scratch);
        }
        let per = t0.elapsed().as_secs_f64() / reps as f64;
        let blocks = (m.rows * m.cols / 32 * tokens) as f64;
        println!(
            "{name:28} {:5} {:6}x{:<6} {:9.1} us  {:6.2} ns/block  {:6.1} GB/s (weights)",
            m.ty.name(),
            m.cols,
            m.rows,
            per * 1e6,
            per * 1e9 / blocks,
            m.bytes_len() as f64 / per / 1e9,
        );
    }
    Ok(())
}

/// Every matrix of the file once, in file order, as a decode step reads them: the weights
/// come from memory, not from a warm cache.
fn stream(file: &GgufFile, scratch: &mut ActScratch) -> Result<(), Box<dyn std::error::Error>> {
    let mut mats = Vec::new();
    for info in &file.header().tensors {
        if info.dims.len() == 2 && info.dims[1] > 1 {
            mats.push(QMatrix::new(info, file.tensor_bytes(info)?)?);
        }
    }
    let bytes: usize = mats.iter().map(|m| m.bytes_len()).sum();
    let blocks: usize = mats.iter().map(|m| m.rows * m.cols / 32).sum();
    let xs: Vec<Vec<f32>> = mats
        .iter()
        .map(|m| {
            (0..m.cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect()
        })
        .collect();
    let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0f32; m.rows]).collect();
    for round in 0..6 {
        let t0 = Instant::now();
        for ((m, x), out) in mats.iter().zip(&xs).zip(&mut outs) {
            m.matmul(x, out, scratch);
        }
        let per = t0.elapsed().as_secs_f64();
        if round > 0 {
            println!(
                "all {} matrices: {:8.1} us  {:6.2} ns/block  {:6.1} GB/s",
                mats.len(),
                per * 1e6,
                per * 1e9 / blocks as f64,
                bytes as f64 / per / 1e9
            );
        }
    }
    Ok(())
}
