//! Sentence embeddings in-process.
//!
//! An [`EmbeddingModel`] is a sentence-transformers model directory (BERT-family
//! safetensors, `config.json`, `tokenizer.json`, and the pooling and length settings of
//! `sentence_bert_config.json` / `pooling.json` when present): WordPiece tokenisation,
//! a packed batched forward pass, mean (or CLS) pooling and L2 normalisation, as
//! sentence-transformers computes them. An [`Embedder`] owns one on a dedicated thread and
//! batches the texts of all concurrent requests into one forward pass.
//!
//! Texts longer than the model's limit are truncated, and the result says so; callers that
//! asked for no truncation get an error instead.

#![deny(clippy::undocumented_unsafe_blocks)]

mod bert;
mod safetensors;
mod wordpiece;

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use basalt_types::{BasaltError, ErrorKind};
use tokio::sync::oneshot;

use bert::Bert;
pub use bert::BertConfig;
use safetensors::SafeTensors;
use wordpiece::WordPiece;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding model: {0}")]
    Model(String),
    #[error("{0}")]
    Input(String),
    #[error("the embedding worker has stopped")]
    Stopped,
}

impl From<EmbedError> for BasaltError {
    fn from(e: EmbedError) -> Self {
        match e {
            EmbedError::Input(m) => BasaltError::invalid("input", m),
            other => BasaltError::new(ErrorKind::Internal, other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

/// One text's embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub vector: Vec<f32>,
    /// Tokens the model read, including `[CLS]` and `[SEP]`.
    pub tokens: u32,
    /// The text was longer than the model reads and was cut.
    pub truncated: bool,
    /// The pooled vector's length before normalisation (1 when the model does not
    /// normalise): `vector * norm` is the raw pooled embedding.
    pub norm: f32,
}

pub struct EmbeddingModel {
    bert: Bert,
    tokenizer: WordPiece,
    /// Most tokens per text, including `[CLS]` and `[SEP]`.
    pub max_tokens: usize,
    pooling: Pooling,
    normalize: bool,
}

fn read_json(path: &Path) -> Result<serde_json::Value, EmbedError> {
    let bytes =
        std::fs::read(path).map_err(|e| EmbedError::Model(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| EmbedError::Model(format!("{}: not JSON: {e}", path.display())))
}

impl EmbeddingModel {
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let config = BertConfig::from_json(&read_json(&dir.join("config.json"))?)?;
        let tokenizer = WordPiece::from_tokenizer_json(&read_json(&dir.join("tokenizer.json"))?)?;
        let st = SafeTensors::open(&dir.join("model.safetensors"))?;
        let sbert = read_json(&dir.join("sentence_bert_config.json")).ok();
        let max_tokens = sbert
            .as_ref()
            .and_then(|v| v.get("max_seq_length"))
            .and_then(|v| v.as_u64())
            .map_or(config.max_positions, |n| n as usize)
            .min(config.max_positions);
        let pooling_cfg = read_json(&dir.join("pooling.json")).ok();
        let pooling = match pooling_cfg
            .as_ref()
            .and_then(|p| p.get("pooling_mode_cls_token"))
            .and_then(|v| v.as_bool())
        {
            Some(true) => Pooling::Cls,
            _ => Pooling::Mean,
        };
        let normalize = match read_json(&dir.join("modules.json")) {
            Ok(m) => m.as_array().is_some_and(|mods| {
                mods.iter().any(|x| {
                    x.get("type")
                        .and_then(|t| t.as_str())
                        .is_some_and(|t| t.ends_with("Normalize"))
                })
            }),
            // Without modules.json, do what sentence-transformers models usually do.
            Err(_) => true,
        };
        Ok(Self {
            bert: Bert::load(&st, config)?,
            tokenizer,
            max_tokens: max_tokens.max(2),
            pooling,
            normalize,
        })
    }

    pub fn dimensions(&self) -> usize {
        self.bert.config.hidden
    }

    /// Tokens the model would read for `text`, and whether it would be truncated.
    pub fn count_tokens(&self, text: &str) -> (u32, bool) {
        let e = self.tokenizer.encode(text, self.max_tokens);
        (e.ids.len() as u32, e.truncated)
    }

    /// Tokens of `text` itself, without the `[CLS]` and `[SEP]` every input is framed with
    /// and without truncation: what a piece of a longer text adds to it (for chunking).
    pub fn content_tokens(&self, text: &str) -> usize {
        self.tokenizer
            .encode(text, usize::MAX)
            .ids
            .len()
            .saturating_sub(2)
    }

    /// Embeds texts in one forward pass. With `allow_truncation` false, a text longer than
    /// the model reads is an error naming it.
    pub fn embed(
        &self,
        texts: &[String],
        allow_truncation: bool,
    ) -> Result<Vec<Embedding>, EmbedError> {
        let encoded: Vec<wordpiece::Encoded> = texts
            .iter()
            .map(|t| self.tokenizer.encode(t, self.max_tokens))
            .collect();
        if !allow_truncation {
            if let Some(i) = encoded.iter().position(|e| e.truncated) {
                return Err(EmbedError::Input(format!(
                    "input {i} is longer than the model's {} tokens and truncation is off",
                    self.max_tokens
                )));
            }
        }
        let sequences: Vec<Vec<u32>> = encoded.iter().map(|e| e.ids.clone()).collect();
        let hidden = self.bert.forward(&sequences)?;
        let h = self.dimensions();
        let mut out = Vec::with_capacity(texts.len());
        let mut row = 0;
        for e in &encoded {
            let n = e.ids.len();
            let rows = &hidden[row * h..(row + n) * h];
            let mut v: Vec<f32> = match self.pooling {
                Pooling::Cls => rows[..h].to_vec(),
                Pooling::Mean => {
                    let mut acc = vec![0f64; h];
                    for t in rows.chunks_exact(h) {
                        for (a, x) in acc.iter_mut().zip(t) {
                            *a += *x as f64;
                        }
                    }
                    acc.iter().map(|a| (*a / n as f64) as f32).collect()
                }
            };
            let mut scale = 1.0f64;
            if self.normalize {
                let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
                    scale = norm;
                }
            }
            out.push(Embedding {
                vector: v,
                tokens: n as u32,
                truncated: e.truncated,
                norm: scale as f32,
            });
            row += n;
        }
        Ok(out)
    }
}

/// The threads an embedding model computes on (its own, so it does not compete with a
/// text model's pool for the same cores unknowingly).
pub struct ComputePool(rayon::ThreadPool);

impl ComputePool {
    pub fn new(threads: usize) -> Result<Self, EmbedError> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("basalt-embed-{i}"))
            .build()
            .map(Self)
            .map_err(|e| EmbedError::Model(format!("cannot start compute threads: {e}")))
    }

    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.0.install(f)
    }
}

struct Job {
    texts: Vec<String>,
    allow_truncation: bool,
    reply: oneshot::Sender<Result<Vec<Embedding>, EmbedError>>,
}

/// One embedding model on its own thread, batching concurrent requests together.
pub struct Embedder {
    pub model: Arc<EmbeddingModel>,
    tx: std_mpsc::Sender<Job>,
}

/// Texts per forward pass: enough to amortise weight reads, small enough to keep latency.
const MAX_BATCH_TEXTS: usize = 64;

impl Embedder {
    /// Starts the batching worker, computing on `threads` threads.
    pub fn start(model: EmbeddingModel, threads: usize) -> Result<Self, EmbedError> {
        let model = Arc::new(model);
        let (tx, rx) = std_mpsc::channel::<Job>();
        let worker = Arc::clone(&model);
        let pool = ComputePool::new(threads)?;
        std::thread::Builder::new()
            .name("basalt-embed".into())
            .spawn(move || run(&worker, &pool, &rx))
            .map_err(|e| EmbedError::Model(format!("cannot start the embedding thread: {e}")))?;
        Ok(Self { model, tx })
    }

    /// Embeds `texts`; the result arrives when the batch they joined has run.
    pub fn submit(
        &self,
        texts: Vec<String>,
        allow_truncation: bool,
    ) -> Result<oneshot::Receiver<Result<Vec<Embedding>, EmbedError>>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                texts,
                allow_truncation,
                reply,
            })
            .map_err(|_| EmbedError::Stopped)?;
        Ok(rx)
    }
}

fn run(model: &EmbeddingModel, pool: &ComputePool, rx: &std_mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        // Everything already waiting joins this pass (up to the batch size).
        let mut jobs = vec![first];
        let mut count = jobs[0].texts.len();
        while count < MAX_BATCH_TEXTS {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.texts.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // Jobs that refuse truncation are checked on their own so one bad input fails only
        // its own request.
        let (strict, lenient): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| !j.allow_truncation);
        for job in strict {
            let result = pool.install(|| model.embed(&job.texts, false));
            let _ = job.reply.send(result);
        }
        if lenient.is_empty() {
            continue;
        }
        let texts: Vec<String> = lenient.iter().flat_map(|j| j.texts.clone()).collect();
        match pool.install(|| model.embed(&texts, true)) {
            Ok(mut all) => {
                for job in lenient.into_iter().rev() {
                    let rest = all.split_off(all.len() - job.texts.len());
                    let _ = job.reply.send(Ok(rest));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in lenient {
                    let _ = job.reply.send(Err(EmbedError::Model(msg.clone())));
                }
            }
        }
    }
}
