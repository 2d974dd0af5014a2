//! `basalt bench-index`: a knowledge base index's query latency on seeded random unit
//! vectors, with and without a metadata filter, in-process. It writes the vectors, the
//! queries and its top results to files, so `scripts/bench-knowledge` can run FAISS on the
//! very same data and check that both return the same passages.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use basalt_knowledge::{Document, Filter, Index, Passage};
use serde_json::json;

use crate::CliResult;

#[derive(clap::Args)]
pub struct BenchIndexArgs {
    /// Passages in the index
    #[arg(long, default_value_t = 100_000)]
    passages: usize,
    /// Passages per document (a filter applies to whole documents)
    #[arg(long, default_value_t = 10)]
    per_document: usize,
    /// Vector dimensions (all-MiniLM-L6-v2's: 384)
    #[arg(long, default_value_t = 384)]
    dims: usize,
    /// Queries to time
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Results per query
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Directory to write vectors.f32, queries.f32 and results.json to
    #[arg(long)]
    out: PathBuf,
}

/// xorshift64*: the same numbers on every machine, no dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn unit(&mut self, dims: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dims).map(|_| self.next_f32()).collect();
        let n = v
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        v.into_iter().map(|x| x / n).collect()
    }
}

fn write_f32(path: &std::path::Path, rows: &[Vec<f32>]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for row in rows {
        for x in row {
            f.write_all(&x.to_le_bytes())?;
        }
    }
    f.flush()
}

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let at = ((samples.len().saturating_sub(1)) as f64 * q).round() as usize;
    samples.get(at).copied().unwrap_or(0.0)
}

pub fn run(args: BenchIndexArgs) -> CliResult {
    let per_doc = args.per_document.max(1);
    let documents = args.passages.div_ceil(per_doc);
    let mut rng = Rng(args.seed.max(1));
    let mut index = Index::default();
    let mut vectors = Vec::with_capacity(args.passages);
    for d in 0..documents {
        let passages: Vec<Passage> = (0..per_doc.min(args.passages - d * per_doc))
            .map(|p| {
                let vector = rng.unit(args.dims);
                vectors.push(vector.clone());
                Passage {
                    text: format!("{}", d * per_doc + p),
                    vector,
                    parent: None,
                }
            })
            .collect();
        let mut metadata = serde_json::Map::new();
        metadata.insert("group".into(), json!(d % 10));
        index.serve_unsaved(Document {
            data_source_id: "bench".into(),
            id: format!("doc-{d:07}"),
            from_bucket: false,
            content_hash: String::new(),
            metadata,
            passages,
            parents: Vec::new(),
            updated_at: 0,
        });
    }
    let queries: Vec<Vec<f32>> = (0..args.queries).map(|_| rng.unit(args.dims)).collect();
    let filter = Filter::parse(&json!({"equals": {"key": "group", "value": 3}}), "filter")?;
    let mut results = Vec::new();
    let mut report = serde_json::Map::new();
    for (name, filter) in [("unfiltered", None), ("filtered", Some(&filter))] {
        // Once untimed, so the first query does not pay for cold caches.
        let _ = index.search(&queries[0], args.k, 0, filter);
        let mut latencies = Vec::with_capacity(queries.len());
        let mut ids = Vec::with_capacity(queries.len());
        for q in &queries {
            let start = Instant::now();
            let hits = index.search(q, args.k, 0, filter);
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
            let found: Vec<usize> = hits
                .iter()
                .filter_map(|h| h.document.passages.get(h.passage)?.text.parse().ok())
                .collect();
            ids.push(found);
        }
        report.insert(
            name.into(),
            json!({"p50_ms": percentile(&mut latencies.clone(), 0.5),
                   "p99_ms": percentile(&mut latencies, 0.99)}),
        );
        results.push(json!({"search": name, "ids": ids}));
    }
    std::fs::create_dir_all(&args.out)?;
    write_f32(&args.out.join("vectors.f32"), &vectors)?;
    write_f32(&args.out.join("queries.f32"), &queries)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec(&json!({"per_document": per_doc, "results": results}))?,
    )?;
    println!(
        "{}",
        json!({"passages": args.passages, "dims": args.dims, "queries": args.queries,
               "k": args.k, "latency": report})
    );
    Ok(())
}
