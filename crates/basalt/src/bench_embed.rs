//! `basalt bench-embed`: embedding throughput in sentences per second, at given batch
//! sizes, in-process, so `scripts/bench-embeddings` can put it next to
//! sentence-transformers on the same sentences and threads.

use std::path::PathBuf;
use std::time::Instant;

use basalt_embed::{ComputePool, EmbeddingModel};

use crate::CliResult;

#[derive(clap::Args)]
pub struct BenchEmbedArgs {
    /// Model directory (e.g. <models dir>/all-minilm-l6-v2)
    model: PathBuf,
    /// JSON file with a list of sentences
    #[arg(long)]
    texts: PathBuf,
    /// Batch sizes to measure (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batch: Vec<usize>,
    /// Compute threads
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

pub fn run(args: BenchEmbedArgs) -> CliResult {
    let texts: Vec<String> = serde_json::from_slice(&std::fs::read(&args.texts)?)?;
    if texts.is_empty() {
        return Err("no sentences to embed".into());
    }
    let model = EmbeddingModel::load(&args.model)?;
    let pool = ComputePool::new(args.threads)?;
    // Warm up caches and the pool once.
    pool.install(|| model.embed(&texts[..texts.len().min(8)], true))?;
    for &batch in &args.batch {
        let batch = batch.max(1);
        let start = Instant::now();
        for chunk in texts.chunks(batch) {
            pool.install(|| model.embed(chunk, true))?;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({"batch": batch, "sentences": texts.len(), "seconds": secs,
                               "sentences_per_sec": texts.len() as f64 / secs})
        );
    }
    Ok(())
}
