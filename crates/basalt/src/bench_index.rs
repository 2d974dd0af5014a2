//! `basalt bench-index`: a knowledge base index's query latency, with and without a
//! metadata filter, in-process, on seeded random unit vectors or on vectors read from a
//! file: exact search and, with `--graph`, the approximate graph (its build time, and its
//! recall against exact search). It writes its top results (and random vectors) to files,
//! so `scripts/bench-knowledge` can run FAISS on the very same data and compare.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use basalt_knowledge::{Document, Filter, Hit, Index, Passage};
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
    /// Candidates a graph search keeps (the index's default if not given)
    #[arg(long)]
    ef: Option<usize>,
    /// Also build the approximate graph and time searches through it
    #[arg(long)]
    graph: bool,
    /// Passages' vectors (little-endian f32 rows of `dims`) instead of random ones
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// Queries' vectors, as `--vectors`
    #[arg(long)]
    query_vectors: Option<PathBuf>,
    /// Directory to write results.json to (and vectors.f32 and queries.f32 when random)
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

/// Each query's latency and the passages it found.
struct Timed {
    latencies: Vec<f64>,
    ids: Vec<Vec<usize>>,
}

type Search = for<'a> fn(&'a Index, &[f32], usize, usize, Option<&Filter>) -> Vec<Hit<'a>>;

fn time_queries(
    index: &Index,
    queries: &[Vec<f32>],
    k: usize,
    filter: Option<&Filter>,
    search: Search,
) -> Timed {
    // Once untimed, so the first query does not pay for cold caches.
    if let Some(q) = queries.first() {
        let _ = search(index, q, k, 0, filter);
    }
    let mut timed = Timed {
        latencies: Vec::with_capacity(queries.len()),
        ids: Vec::with_capacity(queries.len()),
    };
    for q in queries {
        let start = Instant::now();
        let hits = search(index, q, k, 0, filter);
        timed.latencies.push(start.elapsed().as_secs_f64() * 1e3);
        timed.ids.push(
            hits.iter()
                .filter_map(|h| h.document.passages.get(h.passage)?.text.parse().ok())
                .collect(),
        );
    }
    timed
}

/// The share of the true top results that were found, over all queries.
fn recall(found: &[Vec<usize>], truth: &[Vec<usize>]) -> f64 {
    let (mut hit, mut total) = (0usize, 0usize);
    for (f, t) in found.iter().zip(truth) {
        hit += t.iter().filter(|id| f.contains(id)).count();
        total += t.len();
    }
    hit as f64 / total.max(1) as f64
}

fn read_f32(path: &std::path::Path, dims: usize) -> Result<Vec<Vec<f32>>, std::io::Error> {
    let bytes = std::fs::read(path)?;
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(floats
        .chunks_exact(dims.max(1))
        .map(<[f32]>::to_vec)
        .collect())
}

pub fn run(args: BenchIndexArgs) -> CliResult {
    let per_doc = args.per_document.max(1);
    let mut rng = Rng(args.seed.max(1));
    let given = args.vectors.is_some();
    let vectors = match &args.vectors {
        Some(path) => read_f32(path, args.dims)?,
        None => (0..args.passages).map(|_| rng.unit(args.dims)).collect(),
    };
    let queries: Vec<Vec<f32>> = match &args.query_vectors {
        Some(path) => read_f32(path, args.dims)?,
        None => (0..args.queries).map(|_| rng.unit(args.dims)).collect(),
    };
    let mut index = Index::default();
    for (d, rows) in vectors.chunks(per_doc).enumerate() {
        let passages: Vec<Passage> = rows
            .iter()
            .enumerate()
            .map(|(p, vector)| Passage {
                text: format!("{}", d * per_doc + p),
                vector: vector.clone(),
                parent: None,
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
    // One group in ten: few enough passages that even with a graph they are scanned.
    let one_in_ten = Filter::parse(&json!({"equals": {"key": "group", "value": 3}}), "filter")?;
    // Half the groups: the graph walks with the filter applied.
    let half = Filter::parse(&json!({"lessThan": {"key": "group", "value": 5}}), "filter")?;
    let mut timed = vec![
        (
            "unfiltered",
            time_queries(&index, &queries, args.k, None, Index::search_exact),
            None,
        ),
        (
            "filtered",
            time_queries(
                &index,
                &queries,
                args.k,
                Some(&one_in_ten),
                Index::search_exact,
            ),
            None,
        ),
    ];
    let mut build_s = None;
    if args.graph {
        let start = Instant::now();
        index.build_graph();
        build_s = Some(start.elapsed().as_secs_f64());
        if let Some(ef) = args.ef {
            index.set_ef_search(ef);
        }
        let exact_half = time_queries(&index, &queries, args.k, Some(&half), Index::search_exact);
        let graph = time_queries(&index, &queries, args.k, None, Index::search);
        let graph_half = time_queries(&index, &queries, args.k, Some(&half), Index::search);
        timed.push(("graph", graph, Some(0)));
        timed.push(("half-filtered", exact_half, None));
        timed.push(("graph-half-filtered", graph_half, Some(3)));
    }
    let mut results = Vec::new();
    let mut report = serde_json::Map::new();
    for (name, t, truth) in &timed {
        let mut latencies = t.latencies.clone();
        let mut entry = json!({"p50_ms": percentile(&mut latencies, 0.5),
                               "p99_ms": percentile(&mut latencies, 0.99)});
        if let Some(truth) = truth.and_then(|at| timed.get(at)) {
            entry["recall"] = json!(recall(&t.ids, &truth.1.ids));
        }
        report.insert((*name).into(), entry);
        results.push(json!({"search": name, "ids": t.ids}));
    }
    std::fs::create_dir_all(&args.out)?;
    if !given {
        write_f32(&args.out.join("vectors.f32"), &vectors)?;
        write_f32(&args.out.join("queries.f32"), &queries)?;
    }
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec(&json!({"per_document": per_doc, "results": results}))?,
    )?;
    println!(
        "{}",
        json!({"passages": vectors.len(), "dims": args.dims, "queries": queries.len(),
               "k": args.k, "graph": index.approximate(), "graph_build_s": build_s,
               "latency": report})
    );
    Ok(())
}
