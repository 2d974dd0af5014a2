//! Gemma 2 and Gemma 3: like LLaMA, plus a scaled embedding, norms after attention and after
//! the feed-forward, a GELU-gated feed-forward, NeoX rotation, and attention that alternates
//! between sliding-window layers and global layers.
//!
//! - `gemma2`: every other layer slides (the first does); attention scores and the output
//!   logits are soft-capped (`c * tanh(x / c)`).
//! - `gemma3`: five sliding layers to one global, with their own rope base; RMS-normalised
//!   query and key heads instead of soft-capping.

use basalt_gguf::GgufFile;

use super::layers::{add_in_place, Activations, AttentionShape, Segments, TensorSource};
use super::{hparam, hparam_f32, BatchSeq, Transformer};
use crate::kernels::{gated_in_place, gelu_f16_table, rms_norm, ActScratch, QMatrix, Rope};
use crate::kv::KvShape;
use crate::EngineError;

/// What sets one Gemma generation apart.
#[derive(Clone, Copy)]
struct Generation {
    arch: &'static str,
    /// Layer `i` slides when `i % pattern < pattern - 1`.
    sliding_pattern: usize,
    /// The sliding window when the file does not say.
    default_window: Option<usize>,
    /// Rope base of the sliding layers (not stored in GGUF files); the global base if `None`.
    local_rope_base: Option<f32>,
    default_rope_base: f32,
    qk_norm: bool,
    soft_caps: bool,
}

const GEMMA2: Generation = Generation {
    arch: "gemma2",
    sliding_pattern: 2,
    default_window: Some(4096),
    local_rope_base: None,
    default_rope_base: 10_000.0,
    qk_norm: false,
    soft_caps: true,
};
const GEMMA3: Generation = Generation {
    arch: "gemma3",
    sliding_pattern: 6,
    default_window: None,
    local_rope_base: Some(10_000.0),
    default_rope_base: 1_000_000.0,
    qk_norm: true,
    soft_caps: false,
};

struct Block {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    /// Per-head query and key norms (Gemma 3).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    wo: QMatrix,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
    post_ffn_norm: Vec<f32>,
    sliding: bool,
}

pub struct Gemma {
    embed: QMatrix,
    blocks: Vec<Block>,
    output_norm: Vec<f32>,
    output: QMatrix,
    dim: usize,
    ffn_dim: usize,
    attn_global: AttentionShape,
    attn_local: AttentionShape,
    rope_global: Rope,
    rope_local: Rope,
    eps: f32,
    context_length: usize,
    /// Gemma 2's cap on the output logits.
    final_soft_cap: Option<f32>,
}

impl Gemma {
    pub fn load_gemma2(file: &GgufFile) -> Result<Self, EngineError> {
        Self::load_generation(file, GEMMA2)
    }

    pub fn load_gemma3(file: &GgufFile) -> Result<Self, EngineError> {
        Self::load_generation(file, GEMMA3)
    }

    fn load_generation(file: &GgufFile, generation: Generation) -> Result<Self, EngineError> {
        let a = generation.arch;
        let dim = hparam(file, a, "embedding_length")?;
        let n_layers = super::layer_count(file, a)?;
        let n_heads = hparam(file, a, "attention.head_count")?;
        let n_kv_heads = hparam(file, a, "attention.head_count_kv").unwrap_or(n_heads);
        let head_dim = hparam(file, a, "attention.key_length").unwrap_or(dim / n_heads.max(1));
        let ffn_dim = hparam(file, a, "feed_forward_length")?;
        let context_length = hparam(file, a, "context_length")?;
        let window = hparam(file, a, "attention.sliding_window")
            .ok()
            .or(generation.default_window);
        if n_heads == 0
            || n_kv_heads == 0
            || head_dim == 0
            || head_dim > super::layers::MAX_HEAD_DIM
            || n_heads % n_kv_heads != 0
        {
            return Err(EngineError::Model(format!(
                "bad head counts {n_heads}/{n_kv_heads}"
            )));
        }
        let (q_dim, kv_dim) = (n_heads * head_dim, n_kv_heads * head_dim);
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
                wq: src.checked(&t("attn_q"), dim, q_dim)?,
                wk: src.checked(&t("attn_k"), dim, kv_dim)?,
                wv: src.checked(&t("attn_v"), dim, kv_dim)?,
                qk_norm: match generation.qk_norm {
                    true => Some((
                        src.vector(&t("attn_q_norm"), head_dim)?,
                        src.vector(&t("attn_k_norm"), head_dim)?,
                    )),
                    false => None,
                },
                wo: src.checked(&t("attn_output"), q_dim, dim)?,
                post_attn_norm: src.vector(&t("post_attention_norm"), dim)?,
                ffn_norm: src.vector(&t("ffn_norm"), dim)?,
                gate: src.checked(&t("ffn_gate"), dim, ffn_dim)?,
                up: src.checked(&t("ffn_up"), dim, ffn_dim)?,
                down: src.checked(&t("ffn_down"), ffn_dim, dim)?,
                post_ffn_norm: src.vector(&t("post_ffw_norm"), dim)?,
                sliding: window.is_some()
                    && i % generation.sliding_pattern < generation.sliding_pattern - 1,
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
        let soft_cap = |key: &str| {
            let cap = hparam_f32(file, a, key, 0.0);
            (generation.soft_caps && cap > 0.0).then_some(cap)
        };
        let attn_global = AttentionShape {
            n_heads,
            n_kv_heads,
            head_dim,
            // Queries are scaled by 1/sqrt(query_pre_attn_scalar) = 1/sqrt(head_dim) for every
            // size but Gemma 2 27B's, whose scalar (width / heads) GGUF files do not carry.
            scale: 1.0 / (head_dim as f32).sqrt(),
            window: None,
            soft_cap: soft_cap("attn_logit_softcapping"),
        };
        let global_base = hparam_f32(file, a, "rope.freq_base", generation.default_rope_base);
        Ok(Self {
            blocks,
            output_norm: src.vector("output_norm.weight", dim)?,
            output,
            embed,
            dim,
            ffn_dim,
            attn_global,
            attn_local: AttentionShape {
                window,
                ..attn_global
            },
            rope_global: Rope::new(head_dim, global_base, true),
            rope_local: Rope::new(
                head_dim,
                generation.local_rope_base.unwrap_or(global_base),
                true,
            ),
            eps: hparam_f32(file, a, "attention.layer_norm_rms_epsilon", 1e-6),
            context_length,
            final_soft_cap: soft_cap("final_logit_softcapping"),
        })
    }
}

impl Transformer for Gemma {
    fn vocab_size(&self) -> usize {
        self.output.rows
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn kv_shape(&self) -> KvShape {
        KvShape {
            layers: self.blocks.len(),
            kv_dim: self.attn_global.n_kv_heads * self.attn_global.head_dim,
        }
    }

    fn run_batch(&self, batch: &mut [BatchSeq<'_>], scratch: &mut ActScratch, logits: &mut [f32]) {
        let Some((tokens, segments)) = Segments::of_batch(batch) else {
            return;
        };
        let hd = self.attn_global.head_dim;
        let q_dim = self.attn_global.n_heads * hd;
        let kv_dim = self.attn_global.n_kv_heads * hd;
        let scale = (self.dim as f32).sqrt();
        let mut a = Activations::embed(&self.embed, &tokens, scale, q_dim, kv_dim, self.ffn_dim);
        for (layer, b) in self.blocks.iter().enumerate() {
            let (rope, shape) = if b.sliding {
                (&self.rope_local, self.attn_local)
            } else {
                (&self.rope_global, self.attn_global)
            };
            a.normed_input(&b.attn_norm, self.eps);
            a.project_qkv([&b.wq, &b.wk, &b.wv], scratch);
            if let Some((q_norm, k_norm)) = &b.qk_norm {
                rms_norm(&mut a.q, q_norm, self.eps);
                rms_norm(&mut a.k, k_norm, self.eps);
            }
            a.rope(rope, hd, &segments);
            a.attend(batch, &segments, layer, shape);
            b.wo.matmul(&a.att, &mut a.proj, scratch);
            rms_norm(&mut a.proj, &b.post_attn_norm, self.eps);
            add_in_place(&mut a.x, &a.proj);

            a.normed_input(&b.ffn_norm, self.eps);
            a.project_gate_up([&b.gate, &b.up], scratch);
            gated_in_place(&mut a.gate, &a.up, gelu_f16_table);
            b.down.matmul(&a.gate, &mut a.proj, scratch);
            rms_norm(&mut a.proj, &b.post_ffn_norm, self.eps);
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
        if let Some(cap) = self.final_soft_cap {
            let rows = batch.len() * self.output.rows;
            for logit in &mut logits[..rows] {
                *logit = cap * (*logit / cap).tanh();
            }
        }
    }
}
