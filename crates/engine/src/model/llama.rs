//! The LLaMA graph and the families that are it with one change: pre-norm blocks of
//! grouped-query attention with rotary positions and a SwiGLU feed-forward.
//!
//! - `llama`: LLaMA 1-3, SmolLM2, Mistral 7B and Nemo (their files say `llama`); Llama 3.1's
//!   long-context rope scaling as a `rope_freqs` tensor of frequency divisors.
//! - `qwen2`: biases on the query, key and value projections; NeoX-style rotation.
//! - `qwen3`: no biases, an RMS norm on each query and key head before rotation, heads whose
//!   width is set by the file (`attention.key_length`) rather than width / heads.
//! - `phi3`: Phi-3 and Phi-4-mini: the gate and up projections stored as one tensor, NeoX
//!   rotation (of part of each head in Phi-4-mini), and "long rope": one set of frequency
//!   divisors for contexts within the trained length, another beyond it, and a magnitude
//!   correction of the rotation.
//!
//! - `granite`: IBM Granite 3: LLaMA with four scalars from the file: the embedding scaled,
//!   each sub-layer's output scaled before it joins the residual stream, the attention's
//!   own score scale, and the logits divided.
//!
//! Any family's query, key and value projections may come fused as one `attn_qkv` tensor.
//!
//! Mistral's sliding window is not applied to `llama` files, as llama.cpp does not: the
//! numbers must be llama.cpp's.

use basalt_gguf::GgufFile;

use super::layers::{add_in_place, Activations, AttentionShape, Segments, TensorSource};
use super::{hparam, hparam_f32, BatchSeq, Transformer};
use crate::kernels::{gated_in_place, rms_norm, silu, ActScratch, QMatrix, Rope};
use crate::kv::KvShape;
use crate::EngineError;

/// What one family adds to the LLaMA graph.
#[derive(Clone, Copy)]
struct Family {
    /// The metadata prefix and architecture name.
    arch: &'static str,
    qkv_bias: bool,
    qk_norm: bool,
    /// NeoX-style rotation (halves) instead of LLaMA's interleaved pairs.
    neox: bool,
    default_rope_base: f32,
    /// Gate and up projections as one `ffn_up` tensor of twice the rows, gate first.
    fused_gate_up: bool,
    /// Phi 3's `rope_factors_short` / `rope_factors_long` tensors.
    long_rope: bool,
    /// Granite's embedding, residual, attention and logit scales.
    scales: bool,
}

const LLAMA: Family = Family {
    arch: "llama",
    qkv_bias: false,
    qk_norm: false,
    neox: false,
    default_rope_base: 10_000.0,
    fused_gate_up: false,
    long_rope: false,
    scales: false,
};
const QWEN2: Family = Family {
    arch: "qwen2",
    qkv_bias: true,
    neox: true,
    default_rope_base: 1_000_000.0,
    ..LLAMA
};
const QWEN3: Family = Family {
    arch: "qwen3",
    qk_norm: true,
    neox: true,
    default_rope_base: 1_000_000.0,
    ..LLAMA
};
const GRANITE: Family = Family {
    arch: "granite",
    scales: true,
    ..LLAMA
};
const PHI3: Family = Family {
    arch: "phi3",
    neox: true,
    fused_gate_up: true,
    long_rope: true,
    ..LLAMA
};

/// Biases added to the query, key and value projections (Qwen 2).
struct QkvBias {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Per-head RMS norm weights for queries and keys (Qwen 3).
struct QkNorm {
    q: Vec<f32>,
    k: Vec<f32>,
}

struct Block {
    attn_norm: Vec<f32>,
    bias: Option<QkvBias>,
    qk_norm: Option<QkNorm>,
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
    ffn_dim: usize,
    attn: AttentionShape,
    rope: Rope,
    eps: f32,
    context_length: usize,
    scales: Scales,
}

/// Granite's multipliers; all 1 for the other families.
#[derive(Clone, Copy)]
struct Scales {
    embedding: f32,
    /// Multiplies each sub-layer's output before it is added to the residual stream.
    residual: f32,
    /// Divides the logits.
    logits: f32,
}

impl Llama {
    pub fn load(file: &GgufFile) -> Result<Self, EngineError> {
        Self::load_family(file, LLAMA)
    }

    pub fn load_qwen2(file: &GgufFile) -> Result<Self, EngineError> {
        Self::load_family(file, QWEN2)
    }

    pub fn load_qwen3(file: &GgufFile) -> Result<Self, EngineError> {
        Self::load_family(file, QWEN3)
    }

    pub fn load_phi3(file: &GgufFile) -> Result<Self, EngineError> {
        Self::load_family(file, PHI3)
    }

    pub fn load_granite(file: &GgufFile) -> Result<Self, EngineError> {
        Self::load_family(file, GRANITE)
    }

    fn load_family(file: &GgufFile, family: Family) -> Result<Self, EngineError> {
        let a = family.arch;
        let dim = hparam(file, a, "embedding_length")?;
        let n_layers = super::layer_count(file, a)?;
        let n_heads = hparam(file, a, "attention.head_count")?;
        let n_kv_heads = hparam(file, a, "attention.head_count_kv").unwrap_or(n_heads);
        let ffn_dim = hparam(file, a, "feed_forward_length")?;
        let context_length = hparam(file, a, "context_length")?;
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(EngineError::Model(format!(
                "bad head counts {n_heads}/{n_kv_heads} for width {dim}"
            )));
        }
        let head_dim = match hparam(file, a, "attention.key_length") {
            Ok(width) => width,
            Err(_) if dim % n_heads == 0 => dim / n_heads,
            Err(_) => {
                return Err(EngineError::Model(format!(
                    "{n_heads} heads do not divide width {dim}"
                )))
            }
        };
        if head_dim == 0 || head_dim > super::layers::MAX_HEAD_DIM {
            return Err(EngineError::Model(format!(
                "heads of {head_dim} dimensions are outside what the engine supports"
            )));
        }
        if hparam(file, a, "attention.value_length").is_ok_and(|v| v != head_dim) {
            return Err(EngineError::Model(
                "keys and values of different widths are not supported".into(),
            ));
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
            let [wq, wk, wv] = qkv_projections(&src, i, dim, q_dim, kv_dim)?;
            let [gate, up] = if family.fused_gate_up {
                let parts = src
                    .checked(&t("ffn_up"), dim, 2 * ffn_dim)?
                    .split_rows(&t("ffn_up"), &[ffn_dim, ffn_dim])?;
                <[QMatrix; 2]>::try_from(parts)
                    .map_err(|_| EngineError::Model(format!("{} split badly", t("ffn_up"))))?
            } else {
                [
                    src.checked(&t("ffn_gate"), dim, ffn_dim)?,
                    src.checked(&t("ffn_up"), dim, ffn_dim)?,
                ]
            };
            blocks.push(Block {
                attn_norm: src.vector(&t("attn_norm"), dim)?,
                bias: match family.qkv_bias {
                    true => Some(qkv_biases(&src, i, q_dim, kv_dim)?),
                    false => None,
                },
                qk_norm: match family.qk_norm {
                    true => Some(QkNorm {
                        q: src.vector(&t("attn_q_norm"), head_dim)?,
                        k: src.vector(&t("attn_k_norm"), head_dim)?,
                    }),
                    false => None,
                },
                wq,
                wk,
                wv,
                wo: src.checked(&t("attn_output"), q_dim, dim)?,
                ffn_norm: src.vector(&t("ffn_norm"), dim)?,
                gate,
                up,
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
        if rope_dim > head_dim || !rope_dim.is_multiple_of(2) || rope_dim == 0 {
            return Err(EngineError::Model(format!(
                "rotary embeddings over {rope_dim} of {head_dim} dimensions are not supported"
            )));
        }
        let rope = Rope::new(
            rope_dim,
            hparam_f32(file, a, "rope.freq_base", family.default_rope_base),
            family.neox,
        )
        .with_magnitude(hparam_f32(file, a, "rope.scaling.attn_factor", 1.0));
        let rope = match rope_factors(&src, family, context_length, rope_dim)? {
            Some(factors) => rope.with_factors(factors),
            None => rope,
        };
        let scale = |key: &str| match family.scales {
            true => hparam_f32(file, a, key, 0.0),
            false => 0.0,
        };
        // As llama.cpp reads them: an absent or zero scale is no scaling.
        let or_one = |v: f32| if v == 0.0 { 1.0 } else { v };
        let scales = Scales {
            embedding: or_one(scale("embedding_scale")),
            residual: or_one(scale("residual_scale")),
            logits: or_one(scale("logit_scale")),
        };
        let attention_scale = match scale("attention.scale") {
            0.0 => 1.0 / (head_dim as f32).sqrt(),
            s => s,
        };
        if family.scales {
            // Granite's optional biases would be silently dropped: refuse such a file.
            for i in 0..n_layers {
                for t in ["attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
                    let name = format!("blk.{i}.{t}.bias");
                    if file.header().tensor(&name).is_some() {
                        return Err(EngineError::Model(format!(
                            "tensor `{name}`: biases on Granite's projections are not supported"
                        )));
                    }
                }
            }
        }
        Ok(Self {
            blocks,
            output_norm: src.vector("output_norm.weight", dim)?,
            output,
            embed,
            ffn_dim,
            attn: AttentionShape {
                n_heads,
                n_kv_heads,
                head_dim,
                scale: attention_scale,
                window: None,
                soft_cap: None,
            },
            rope,
            eps: hparam_f32(file, a, "attention.layer_norm_rms_epsilon", 1e-5),
            context_length,
            scales,
        })
    }
}

/// The query, key and value projections of layer `i`: three tensors, or one fused
/// `attn_qkv` tensor split in that order.
fn qkv_projections(
    src: &TensorSource<'_>,
    i: usize,
    dim: usize,
    q_dim: usize,
    kv_dim: usize,
) -> Result<[QMatrix; 3], EngineError> {
    let t = |n: &str| format!("blk.{i}.{n}.weight");
    if src.file.header().tensor(&t("attn_qkv")).is_none() {
        return Ok([
            src.checked(&t("attn_q"), dim, q_dim)?,
            src.checked(&t("attn_k"), dim, kv_dim)?,
            src.checked(&t("attn_v"), dim, kv_dim)?,
        ]);
    }
    let name = t("attn_qkv");
    let parts = src
        .checked(&name, dim, q_dim + 2 * kv_dim)?
        .split_rows(&name, &[q_dim, kv_dim, kv_dim])?;
    <[QMatrix; 3]>::try_from(parts).map_err(|_| EngineError::Model(format!("{name} split badly")))
}

/// Layer `i`'s query, key and value biases: three vectors, or one fused `attn_qkv.bias`.
fn qkv_biases(
    src: &TensorSource<'_>,
    i: usize,
    q_dim: usize,
    kv_dim: usize,
) -> Result<QkvBias, EngineError> {
    let name = |n: &str| format!("blk.{i}.{n}.bias");
    if src.file.header().tensor(&name("attn_qkv")).is_none() {
        return Ok(QkvBias {
            q: src.vector(&name("attn_q"), q_dim)?,
            k: src.vector(&name("attn_k"), kv_dim)?,
            v: src.vector(&name("attn_v"), kv_dim)?,
        });
    }
    let mut q = src.vector(&name("attn_qkv"), q_dim + 2 * kv_dim)?;
    let v = q.split_off(q_dim + kv_dim);
    let k = q.split_off(q_dim);
    Ok(QkvBias { q, k, v })
}

/// The frequency divisors the rotation uses, if the file has any: Llama 3.1's
/// `rope_freqs`; or Phi 3's long set when a sequence may outgrow the length the model was
/// trained at (`rope.scaling.original_context_length`), else its short set, chosen as
/// llama.cpp chooses them, by the context a sequence may reach.
fn rope_factors(
    src: &TensorSource<'_>,
    family: Family,
    context_length: usize,
    rope_dim: usize,
) -> Result<Option<Vec<f32>>, EngineError> {
    let has = |name: &str| src.file.header().tensor(name).is_some();
    if has("rope_freqs.weight") {
        return src.vector("rope_freqs.weight", rope_dim / 2).map(Some);
    }
    if !family.long_rope {
        return Ok(None);
    }
    let trained = hparam(
        src.file,
        family.arch,
        "rope.scaling.original_context_length",
    )
    .unwrap_or(context_length);
    let name = if context_length > trained {
        "rope_factors_long.weight"
    } else {
        "rope_factors_short.weight"
    };
    match has(name) {
        true => src.vector(name, rope_dim / 2).map(Some),
        false => Ok(None),
    }
}

/// Adds `bias` to every row of `x`.
fn add_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_in_place(row, bias);
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
        let Some((tokens, segments)) = Segments::of_batch(batch) else {
            return;
        };
        let hd = self.attn.head_dim;
        let (q_dim, kv_dim) = (self.attn.n_heads * hd, self.attn.n_kv_heads * hd);
        let residual = self.scales.residual;
        let mut a = Activations::embed(
            &self.embed,
            &tokens,
            self.scales.embedding,
            q_dim,
            kv_dim,
            self.ffn_dim,
        );
        for (layer, b) in self.blocks.iter().enumerate() {
            a.normed_input(&b.attn_norm, self.eps);
            a.project_qkv([&b.wq, &b.wk, &b.wv], scratch);
            if let Some(bias) = &b.bias {
                add_rows(&mut a.q, &bias.q);
                add_rows(&mut a.k, &bias.k);
                add_rows(&mut a.v, &bias.v);
            }
            if let Some(norm) = &b.qk_norm {
                rms_norm(&mut a.q, &norm.q, self.eps);
                rms_norm(&mut a.k, &norm.k, self.eps);
            }
            a.rope(&self.rope, hd, &segments);
            a.attend(batch, &segments, layer, self.attn);
            b.wo.matmul(&a.att, &mut a.proj, scratch);
            scale_in_place(&mut a.proj, residual);
            add_in_place(&mut a.x, &a.proj);

            a.normed_input(&b.ffn_norm, self.eps);
            a.project_gate_up([&b.gate, &b.up], scratch);
            gated_in_place(&mut a.gate, &a.up, silu);
            b.down.matmul(&a.gate, &mut a.proj, scratch);
            scale_in_place(&mut a.proj, residual);
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
        if self.scales.logits != 1.0 {
            // As llama.cpp scales them: by the reciprocal.
            let rows = batch.len() * self.output.rows;
            scale_in_place(&mut logits[..rows], 1.0 / self.scales.logits);
        }
    }
}

fn scale_in_place(x: &mut [f32], by: f32) {
    if by != 1.0 {
        x.iter_mut().for_each(|v| *v *= by);
    }
}
