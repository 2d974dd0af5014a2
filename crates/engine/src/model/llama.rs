//! The LLaMA architecture (also SmolLM2 and other llama-layout GGUF files): pre-norm
//! blocks of grouped-query attention with rotary positions and a SwiGLU feed-forward.

use basalt_gguf::GgufFile;

use super::layers::{add_in_place, Activations, AttentionShape, Segments, TensorSource};
use super::{hparam, hparam_f32, BatchSeq, Transformer};
use crate::kernels::{gated_in_place, silu, ActScratch, QMatrix, Rope};
use crate::kv::KvShape;
use crate::EngineError;

struct Block {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
}

pub struct Llama {
    embed: QMatrix,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    /// The output projection; the embedding table when the model ties them.
    output: QMatrix,
    dim: usize,
    ffn_dim: usize,
    attn: AttentionShape,
    rope: Rope,
    eps: f32,
    context_length: usize,
}

impl Llama {
    pub fn load(file: &GgufFile) -> Result<Self, EngineError> {
        let a = "llama";
        let dim = hparam(file, a, "embedding_length")?;
        let n_layers = super::layer_count(file, a)?;
        let n_heads = hparam(file, a, "attention.head_count")?;
        let n_kv_heads = hparam(file, a, "attention.head_count_kv").unwrap_or(n_heads);
        let ffn_dim = hparam(file, a, "feed_forward_length")?;
        let context_length = hparam(file, a, "context_length")?;
        if n_heads == 0 || n_kv_heads == 0 || dim % n_heads != 0 || n_heads % n_kv_heads != 0 {
            return Err(EngineError::Model(format!(
                "bad head counts {n_heads}/{n_kv_heads} for width {dim}"
            )));
        }
        let head_dim = dim / n_heads;
        if head_dim > super::layers::MAX_HEAD_DIM {
            return Err(EngineError::Model(format!(
                "heads of {head_dim} dimensions are wider than the engine supports"
            )));
        }
        let kv_dim = n_kv_heads * head_dim;
        let src = TensorSource { file };
        let embed = src.matrix("token_embd.weight")?;
        if embed.cols != dim {
            return Err(EngineError::Model(
                "token_embd.weight width does not match the model".into(),
            ));
        }
        let vocab = embed.rows;
        let mut blocks = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let t = |n: &str| format!("blk.{i}.{n}.weight");
            blocks.push(Block {
                attn_norm: src.vector(&t("attn_norm"), dim)?,
                wq: src.checked(&t("attn_q"), dim, dim)?,
                wk: src.checked(&t("attn_k"), dim, kv_dim)?,
                wv: src.checked(&t("attn_v"), dim, kv_dim)?,
                wo: src.checked(&t("attn_output"), dim, dim)?,
                ffn_norm: src.vector(&t("ffn_norm"), dim)?,
                gate: src.checked(&t("ffn_gate"), dim, ffn_dim)?,
                up: src.checked(&t("ffn_up"), dim, ffn_dim)?,
                down: src.checked(&t("ffn_down"), ffn_dim, dim)?,
            });
        }
        let output = match src.optional_matrix("output.weight")? {
            Some(m) if m.cols == dim && m.rows == vocab => m,
            Some(_) => {
                return Err(EngineError::Model(
                    "output.weight has the wrong shape".into(),
                ))
            }
            None => embed.clone(),
        };
        let rope_dim = hparam(file, a, "rope.dimension_count").unwrap_or(head_dim);
        if rope_dim != head_dim {
            return Err(EngineError::Model(format!(
                "partial rotary embeddings ({rope_dim} of {head_dim} dimensions) are not supported"
            )));
        }
        let rope = Rope::new(
            rope_dim,
            hparam_f32(file, a, "rope.freq_base", 10_000.0),
            false,
        );
        // Llama 3.1's long-context scaling: a divisor per frequency.
        let rope = if file.header().tensor("rope_freqs.weight").is_some() {
            rope.with_factors(src.vector("rope_freqs.weight", rope_dim / 2)?)
        } else {
            rope
        };
        Ok(Self {
            blocks,
            output_norm: src.vector("output_norm.weight", dim)?,
            output,
            embed,
            dim,
            ffn_dim,
            attn: AttentionShape {
                n_heads,
                n_kv_heads,
                head_dim,
                scale: 1.0 / (head_dim as f32).sqrt(),
                window: None,
            },
            rope,
            eps: hparam_f32(file, a, "attention.layer_norm_rms_epsilon", 1e-5),
            context_length,
        })
    }
}

impl Transformer for Llama {
    fn vocab_size(&self) -> usize {
        self.output.rows
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn kv_shape(&self) -> KvShape {
        KvShape {
            layers: self.blocks.len(),
            kv_dim: self.attn.n_kv_heads * self.attn.head_dim,
        }
    }

    fn run_batch(&self, batch: &mut [BatchSeq<'_>], scratch: &mut ActScratch, logits: &mut [f32]) {
        let tokens = Segments::tokens(batch);
        if tokens.is_empty() || batch.iter().any(|b| b.tokens.is_empty()) {
            return;
        }
        let segments = Segments::of(batch);
        let hd = self.attn.head_dim;
        let kv_dim = self.attn.n_kv_heads * hd;
        let mut a = Activations::embed(&self.embed, &tokens, 1.0, self.dim, kv_dim, self.ffn_dim);
        for (layer, b) in self.blocks.iter().enumerate() {
            a.normed_input(&b.attn_norm, self.eps);
            a.project_qkv([&b.wq, &b.wk, &b.wv], scratch);
            a.rope(&self.rope, hd, &segments);
            a.attend(batch, &segments, layer, self.attn);
            b.wo.matmul(&a.att, &mut a.proj, scratch);
            add_in_place(&mut a.x, &a.proj);

            a.normed_input(&b.ffn_norm, self.eps);
            a.project_gate_up([&b.gate, &b.up], scratch);
            gated_in_place(&mut a.gate, &a.up, silu);
            b.down.matmul(&a.gate, &mut a.proj, scratch);
            add_in_place(&mut a.x, &a.proj);
        }
        a.finish(
            batch,
            &segments,
            &self.output_norm,
            self.eps,
            &self.output,
            scratch,
            logits,
        );
    }
}
