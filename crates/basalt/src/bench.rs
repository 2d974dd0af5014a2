//! `basalt bench`: in-process engine throughput, measured the way `llama-bench` measures
//! llama.cpp (a prompt of N tokens processed at once; N tokens generated one at a time from
//! an empty cache), so `scripts/bench` can put the two side by side in one run.

use std::path::PathBuf;
use std::time::Instant;

use basalt_engine::kernels::ActScratch;
use basalt_engine::kv::{KvBudget, SeqKv};
use basalt_engine::model::BatchSeq;
use basalt_engine::{argmax, model, Rng};

use crate::CliResult;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// GGUF file to benchmark
    model: PathBuf,
    /// Prompt lengths to measure prefill with (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    prompt: Vec<usize>,
    /// Tokens to generate for the decode measurement
    #[arg(long, default_value_t = 64)]
    generate: usize,
    /// Repetitions of each measurement
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// Compute threads
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also measure aggregate decode with this many sequences decoding in one batch
    #[arg(long, value_delimiter = ',')]
    batch: Vec<usize>,
    /// Read weights from the file's page-cache mapping, as `serve --mmap-weights` does
    #[arg(long)]
    mmap_weights: bool,
}

/// Tokens with ids spread over the vocabulary, as llama-bench uses random tokens.
fn synthetic_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect()
}

pub fn run(args: BenchArgs) -> CliResult {
    basalt_engine::set_compute_threads(args.threads);
    let file = basalt_engine::open_weights(&args.model, args.mmap_weights)?;
    let transformer = model::load(&file)?;
    let vocab = transformer.vocab_size();
    let budget = KvBudget::new(usize::MAX / 2);
    let mut scratch = ActScratch::default();
    let mut logits = vec![0f32; vocab];
    let name = args
        .model
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("model");
    let emit = |test: &str, tokens: usize, secs: &[f64]| {
        let rates: Vec<f64> = secs.iter().map(|s| tokens as f64 / s).collect();
        println!(
            "{}",
            serde_json::json!({"engine": "basalt", "model": name, "test": test, "threads": args.threads,
                "kernels": basalt_engine::kernels::Isa::current().name(),
                "tokens": tokens, "tokens_per_second": rates})
        );
    };
    for &n in &args.prompt {
        let mut secs = Vec::new();
        // One untimed warm-up run pages the weights in, as llama-bench's warm-up does.
        for rep in 0..=args.repetitions {
            let tokens = synthetic_tokens(n, vocab, rep as u64);
            let mut kv = SeqKv::new(transformer.kv_shape(), budget.clone());
            kv.reserve(n).map_err(|_| "KV budget")?;
            let t0 = Instant::now();
            transformer.forward(&tokens, &mut kv, &mut scratch, &mut logits);
            if rep > 0 {
                secs.push(t0.elapsed().as_secs_f64());
            }
        }
        emit(&format!("pp{n}"), n, &secs);
    }
    let mut secs = Vec::new();
    for rep in 0..=args.repetitions {
        let mut kv = SeqKv::new(transformer.kv_shape(), budget.clone());
        kv.reserve(args.generate + 1).map_err(|_| "KV budget")?;
        let mut token = synthetic_tokens(1, vocab, 1000 + rep as u64)[0];
        let t0 = Instant::now();
        for _ in 0..args.generate {
            transformer.forward(&[token], &mut kv, &mut scratch, &mut logits);
            token = argmax(&logits);
        }
        if rep > 0 {
            secs.push(t0.elapsed().as_secs_f64());
        }
    }
    emit(&format!("tg{}", args.generate), args.generate, &secs);

    // Aggregate decode: `b` sequences, each one token per step, in one batched pass per step.
    for &b in args.batch.iter().filter(|&&b| b > 0) {
        let mut secs = Vec::new();
        let mut batch_logits = vec![0f32; vocab * b];
        for rep in 0..=args.repetitions {
            let mut kvs: Vec<SeqKv> = (0..b)
                .map(|_| {
                    let mut kv = SeqKv::new(transformer.kv_shape(), budget.clone());
                    kv.reserve(args.generate + 1).map(|_| kv)
                })
                .collect::<Result<_, _>>()
                .map_err(|_| "KV budget")?;
            let mut next: Vec<[u32; 1]> = synthetic_tokens(b, vocab, 2000 + rep as u64)
                .into_iter()
                .map(|t| [t])
                .collect();
            let t0 = Instant::now();
            for _ in 0..args.generate {
                let mut batch: Vec<BatchSeq> = next
                    .iter()
                    .zip(kvs.iter_mut())
                    .map(|(t, kv)| BatchSeq { tokens: t, kv })
                    .collect();
                transformer.forward_batch(&mut batch, &mut scratch, &mut batch_logits);
                for (i, t) in next.iter_mut().enumerate() {
                    t[0] = argmax(&batch_logits[i * vocab..(i + 1) * vocab]);
                }
            }
            if rep > 0 {
                secs.push(t0.elapsed().as_secs_f64());
            }
        }
        emit(
            &format!("tg{}x{b}", args.generate),
            args.generate * b,
            &secs,
        );
    }
    Ok(())
}
