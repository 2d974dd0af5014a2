//! Model architectures, one file each, behind the [`Transformer`] trait.
//!
//! A model file knows its weights and its forward pass, nothing else: no tokenizer, no
//! sampling, no scheduling. Weights stay in their GGUF encoding inside the memory map.

mod gemma;
pub mod layers;
mod llama;

use basalt_gguf::GgufFile;

use crate::kernels::ActScratch;
use crate::kv::{KvShape, SeqKv};
use crate::EngineError;

/// One sequence's part of a batched forward pass: its next tokens and its cache.
pub struct BatchSeq<'a> {
    pub tokens: &'a [u32],
    pub kv: &'a mut SeqKv,
}

/// A decoder-only language model.
pub trait Transformer: Send + Sync {
    fn vocab_size(&self) -> usize;
    fn context_length(&self) -> usize;
    fn kv_shape(&self) -> KvShape;

    /// Runs every sequence's tokens (at positions `kv.len()..`) through the model in one
    /// pass: the weight products see all tokens of all sequences at once, attention stays
    /// within each sequence. Appends keys and values to each cache and writes the logits of
    /// each sequence's last token into consecutive rows of `logits` (`batch.len() x vocab`).
    /// The caller has reserved KV room for the tokens.
    ///
    /// Runs on a compute-pool thread (see `kernels::in_compute_pool`); architectures
    /// implement [`Transformer::run_batch`].
    fn forward_batch(
        &self,
        batch: &mut [BatchSeq<'_>],
        scratch: &mut ActScratch,
        logits: &mut [f32],
    ) {
        crate::kernels::in_compute_pool(|| self.run_batch(batch, scratch, logits));
    }

    /// The forward pass of [`Transformer::forward_batch`], on whichever thread calls it.
    fn run_batch(&self, batch: &mut [BatchSeq<'_>], scratch: &mut ActScratch, logits: &mut [f32]);

    /// One sequence: the logits of its last token into `logits` (`vocab` long).
    fn forward(
        &self,
        tokens: &[u32],
        kv: &mut SeqKv,
        scratch: &mut ActScratch,
        logits: &mut [f32],
    ) {
        self.forward_batch(&mut [BatchSeq { tokens, kv }], scratch, logits);
    }
}

/// Reads a hyper-parameter `{arch}.{key}`.
fn hparam(file: &GgufFile, arch: &str, key: &str) -> Result<usize, EngineError> {
    file.header()
        .usize(&format!("{arch}.{key}"))
        .map_err(|e| EngineError::Model(e.to_string()))
}

/// Reads `{arch}.block_count` and checks it against the tensors the file actually holds, so
/// that nothing is sized from a number the file merely claims: layer `n - 1` must exist and
/// layer `n` must not.
fn layer_count(file: &GgufFile, arch: &str) -> Result<usize, EngineError> {
    let n = hparam(file, arch, "block_count")?;
    let has_layer = |i: usize| {
        file.header()
            .tensor(&format!("blk.{i}.attn_norm.weight"))
            .is_some()
    };
    let plausible = n > 0 && n <= file.header().tensors.len();
    if !plausible || !has_layer(n - 1) || has_layer(n) {
        return Err(EngineError::Model(format!(
            "{arch}.block_count says {n} layers, which the file's tensors do not match"
        )));
    }
    Ok(n)
}

fn hparam_f32(file: &GgufFile, arch: &str, key: &str, default: f32) -> f32 {
    file.header()
        .f64(&format!("{arch}.{key}"))
        .map(|v| v as f32)
        .unwrap_or(default)
}

/// Builds the architecture named in the file's metadata.
pub fn load(file: &GgufFile) -> Result<Box<dyn Transformer>, EngineError> {
    let arch = file
        .header()
        .architecture()
        .map_err(|e| EngineError::Model(e.to_string()))?;
    match arch {
        "llama" => Ok(Box::new(llama::Llama::load(file)?)),
        "qwen2" => Ok(Box::new(llama::Llama::load_qwen2(file)?)),
        "qwen3" => Ok(Box::new(llama::Llama::load_qwen3(file)?)),
        "phi3" => Ok(Box::new(llama::Llama::load_phi3(file)?)),
        "granite" => Ok(Box::new(llama::Llama::load_granite(file)?)),
        "gemma2" => Ok(Box::new(gemma::Gemma::load_gemma2(file)?)),
        "gemma3" => Ok(Box::new(gemma::Gemma::load_gemma3(file)?)),
        other => Err(EngineError::Model(format!(
            "architecture `{other}` is not supported (supported: llama, qwen2, qwen3, phi3, granite, gemma2, gemma3)"
        ))),
    }
}
