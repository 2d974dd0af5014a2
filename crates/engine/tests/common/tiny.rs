//! Tiny random-weight models with real models' graphs and real vocabularies, written the
//! same way by `scripts/oracle/tiny_models.py` (which records llama.cpp's answers for them):
//! the same shapes, metadata and weights, the weights from a counter-based hash so both
//! languages compute them identically.

use basalt_gguf::write::Writer;
use basalt_gguf::{Array, GgufFile};

/// splitmix64's finaliser over `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` weights of tensor number `seed`: uniform in [-scale, scale), exactly representable
/// steps of 2^-23 before scaling, then `offset` added.
fn weights(seed: u64, n: usize, scale: f32, offset: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let z = mix(seed.wrapping_mul(0x1_0000_0000).wrapping_add(i));
            let unit = (z >> 40) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            unit * scale + offset
        })
        .collect()
}

/// `n` bytes of tensor number `seed`: the counter hash's words, little-endian.
fn hash_bytes(seed: u64, n: usize) -> Vec<u8> {
    (0..n.div_ceil(8) as u64)
        .flat_map(|i| mix(seed.wrapping_mul(0x1_0000_0000).wrapping_add(i)).to_le_bytes())
        .take(n)
        .collect()
}

/// `blocks` K-quant blocks of type `ty`: random quants, scales (and mins), and the f16
/// multipliers (first or last, as the type lays them out), chosen so the weights spread
/// about as a uniform `[-scale, scale)` does and, with mins, centre on zero (`dmin` balances
/// the mean quant times the mean scale against the mean min).
fn random_blocks(ty: u32, seed: u64, blocks: usize, scale: f32) -> Vec<u8> {
    let f16 = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes().to_vec();
    let (head, random, tail): (Vec<u8>, usize, Vec<u8>) = match ty {
        GGUF_Q3K => (Vec::new(), 108, f16(scale * 0.018)),
        GGUF_Q2K => {
            let d = scale * 0.02;
            (Vec::new(), 80, [f16(d), f16(d * 1.5)].concat())
        }
        GGUF_Q5K => {
            let d = scale * 0.0011;
            ([f16(d), f16(d * 15.5)].concat(), 172, Vec::new())
        }
        GGUF_IQ4NL => (f16(scale * 0.004), 16, Vec::new()),
        other => panic!("no random blocks of type {other}"),
    };
    hash_bytes(seed, blocks * random)
        .chunks_exact(random)
        .flat_map(|b| [&head[..], b, &tail[..]].concat())
        .collect()
}

pub const LLAMA3_DIM: usize = 64;
const LLAMA3_HEADS: usize = 4;
const LLAMA3_KV_HEADS: usize = 2;
const LLAMA3_LAYERS: usize = 2;
const LLAMA3_FFN: usize = 128;
/// Llama 3.1-style frequency divisors: high frequencies kept, low ones slowed.
pub const LLAMA3_ROPE_FACTORS: [f32; 8] = [1.0, 1.0, 1.0, 1.5, 2.5, 4.0, 8.0, 8.0];

/// What one tiny family adds to the LLaMA graph.
#[derive(Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub arch: &'static str,
    rope_base: f32,
    rope_freqs: bool,
    qkv_bias: bool,
    qk_norm: bool,
    /// Head width when not width / heads.
    head_dim: Option<usize>,
    /// Rotated dimensions of each head when not all of them.
    rotary_dims: Option<usize>,
    /// `attn_qkv` and a double-height `ffn_up` instead of separate tensors.
    fused: bool,
    /// Phi 3's short and long rope factors, trained context and magnitude.
    long_rope: bool,
    /// Gemma 2's post-norms, soft caps and sliding window.
    gemma2: bool,
    /// Granite's embedding, residual, attention and logit scales.
    granite: bool,
    /// Every matrix stored as BF16 (rounded to nearest, ties to even).
    bf16: bool,
    /// The model's width and feed-forward width.
    width: usize,
    ffn: usize,
    /// Every matrix but the embedding as random blocks of this K-quant (its GGUF type id).
    blocks: Option<u32>,
}

pub const LLAMA3: Family = Family {
    name: "llama3",
    arch: "llama",
    rope_base: 500_000.0,
    rope_freqs: true,
    qkv_bias: false,
    qk_norm: false,
    head_dim: None,
    rotary_dims: None,
    fused: false,
    long_rope: false,
    gemma2: false,
    granite: false,
    bf16: false,
    width: LLAMA3_DIM,
    ffn: LLAMA3_FFN,
    blocks: None,
};
pub const QWEN2: Family = Family {
    name: "qwen2",
    arch: "qwen2",
    rope_base: 1_000_000.0,
    rope_freqs: false,
    qkv_bias: true,
    ..LLAMA3
};
/// Heads twice as wide as width / heads, as Qwen3's are.
pub const QWEN3: Family = Family {
    name: "qwen3",
    arch: "qwen3",
    rope_base: 1_000_000.0,
    rope_freqs: false,
    qk_norm: true,
    head_dim: Some(32),
    ..LLAMA3
};
/// Phi-4-mini's shape of graph: fused q/k/v and gate/up tensors, rotation of 3/4 of each
/// head, long-rope factors chosen by context (trained at 256, so the 512 the file allows
/// takes the long set, as llama.cpp's 1024 does) and a magnitude correction.
pub const PHI3: Family = Family {
    name: "phi3",
    arch: "phi3",
    rope_base: 10_000.0,
    rope_freqs: false,
    rotary_dims: Some(12),
    fused: true,
    long_rope: true,
    ..LLAMA3
};
const PHI3_ROPE_SHORT: [f32; 6] = [1.0, 1.0, 1.25, 1.5, 2.0, 3.0];
const PHI3_ROPE_LONG: [f32; 6] = [1.0, 1.5, 3.0, 6.0, 12.0, 24.0];
const PHI3_ATTN_FACTOR: f32 = 1.1875;
const PHI3_TRAINED_CONTEXT: u32 = 256;
/// Gemma 2's graph: norms after attention and feed-forward (GELU), a scaled embedding,
/// soft-capped scores and logits, every other layer sliding (over a window short enough for
/// the prompts to cross).
pub const GEMMA2: Family = Family {
    name: "gemma2",
    arch: "gemma2",
    rope_base: 10_000.0,
    rope_freqs: false,
    gemma2: true,
    ..LLAMA3
};
/// Llama 3's graph with every matrix in BF16, as original-precision GGUF files are.
pub const LLAMA3_BF16: Family = Family {
    name: "llama3-bf16",
    bf16: true,
    ..LLAMA3
};
/// Llama 3's graph four times as wide (Q3_K rows are 256 long), every matrix but the
/// embedding as random Q3_K blocks (no frequency factors: the heads are wider).
pub const LLAMA3_Q3K: Family = Family {
    name: "llama3-q3k",
    rope_freqs: false,
    width: 256,
    ffn: 512,
    blocks: Some(GGUF_Q3K),
    ..LLAMA3
};
/// As [`LLAMA3_Q3K`], with Q2_K blocks.
pub const LLAMA3_Q2K: Family = Family {
    name: "llama3-q2k",
    blocks: Some(GGUF_Q2K),
    ..LLAMA3_Q3K
};
/// Llama 3's tiny graph with every matrix but the embedding as random IQ4_NL blocks (32
/// long: the model keeps its width).
pub const LLAMA3_IQ4NL: Family = Family {
    name: "llama3-iq4nl",
    blocks: Some(GGUF_IQ4NL),
    ..LLAMA3
};
/// As [`LLAMA3_Q3K`], with Q5_K blocks.
pub const LLAMA3_Q5K: Family = Family {
    name: "llama3-q5k",
    blocks: Some(GGUF_Q5K),
    ..LLAMA3_Q3K
};
/// Granite 3's graph: embedding, residual, attention and logit scales from the file.
pub const GRANITE: Family = Family {
    name: "granite",
    arch: "granite",
    rope_base: 10_000.0,
    rope_freqs: false,
    granite: true,
    ..LLAMA3
};
/// Embedding and residual multipliers, a score scale other than 1/sqrt(head width), and the
/// logit divisor; all exactly representable.
const GRANITE_SCALES: [(&str, f32); 4] = [
    ("embedding_scale", 12.0),
    ("residual_scale", 0.25),
    ("attention.scale", 0.125),
    ("logit_scale", 8.0),
];
/// BF16's and the K-quants' type ids in GGUF files.
const GGUF_BF16: u32 = 30;
const GGUF_Q2K: u32 = 10;
const GGUF_Q3K: u32 = 11;
const GGUF_Q5K: u32 = 13;
const GGUF_IQ4NL: u32 = 20;
const GEMMA2_WINDOW: u32 = 32;
const GEMMA2_ATTN_CAP: f32 = 8.0;
const GEMMA2_FINAL_CAP: f32 = 4.0;

/// A two-layer decoder (grouped-query attention) of `family` over the vocabulary
/// and merges of `source` (a byte-level BPE file), declared with pre-tokenizer `pre`
/// (`llama-bpe` as Llama 3's files are; `qwen2` as Qwen's). What each family adds is on
/// its constant above.
pub fn decoder(source: &GgufFile, pre: &str, family: Family) -> Vec<u8> {
    let h = source.header();
    let strings = |key: &str| match h.array(key) {
        Ok(Array::Strings(v)) => v.clone(),
        other => panic!("{key}: {other:?}"),
    };
    let tokens = strings("tokenizer.ggml.tokens");
    let merges = strings("tokenizer.ggml.merges");
    let types: Vec<i32> = match h.array("tokenizer.ggml.token_type") {
        Ok(Array::Ints(v)) => v.iter().map(|&t| t as i32).collect(),
        other => panic!("token_type: {other:?}"),
    };
    let id = |key: &str| h.u64(key).unwrap() as u32;
    let head_dim = family.head_dim.unwrap_or(family.width / LLAMA3_HEADS);
    let (d, q, kv) = (
        family.width,
        head_dim * LLAMA3_HEADS,
        head_dim * LLAMA3_KV_HEADS,
    );
    let vocab = tokens.len();
    let a = family.arch;
    let mut w = Writer::new()
        .string("general.architecture", a)
        // One name for every family: llama.cpp keys vocabulary quirks on model names (Phi
        // 3's special tokens), and these models borrow another model's vocabulary.
        .string("general.name", "basalt tiny decoder")
        .u32(&format!("{a}.context_length"), 512)
        .u32(&format!("{a}.embedding_length"), d as u32)
        .u32(&format!("{a}.block_count"), LLAMA3_LAYERS as u32)
        .u32(&format!("{a}.feed_forward_length"), family.ffn as u32)
        .u32(&format!("{a}.attention.head_count"), LLAMA3_HEADS as u32)
        .u32(
            &format!("{a}.attention.head_count_kv"),
            LLAMA3_KV_HEADS as u32,
        )
        .u32(
            &format!("{a}.rope.dimension_count"),
            family.rotary_dims.unwrap_or(head_dim) as u32,
        );
    if family.long_rope {
        w = w
            .u32(
                &format!("{a}.rope.scaling.original_context_length"),
                PHI3_TRAINED_CONTEXT,
            )
            .f32(&format!("{a}.rope.scaling.attn_factor"), PHI3_ATTN_FACTOR);
    }
    if family.gemma2 {
        w = w
            .u32(&format!("{a}.attention.sliding_window"), GEMMA2_WINDOW)
            .f32(&format!("{a}.attn_logit_softcapping"), GEMMA2_ATTN_CAP)
            .f32(&format!("{a}.final_logit_softcapping"), GEMMA2_FINAL_CAP);
    }
    if family.granite {
        for (key, value) in GRANITE_SCALES {
            w = w.f32(&format!("{a}.{key}"), value);
        }
    }
    if family.head_dim.is_some() {
        w = w
            .u32(&format!("{a}.attention.key_length"), head_dim as u32)
            .u32(&format!("{a}.attention.value_length"), head_dim as u32);
    }
    w = w
        .f32(&format!("{a}.rope.freq_base"), family.rope_base)
        .f32(&format!("{a}.attention.layer_norm_rms_epsilon"), 1e-5)
        .string("tokenizer.ggml.model", "gpt2")
        .string("tokenizer.ggml.pre", pre)
        .strings("tokenizer.ggml.tokens", &tokens)
        .i32s("tokenizer.ggml.token_type", &types)
        .strings("tokenizer.ggml.merges", &merges)
        .u32(
            "tokenizer.ggml.bos_token_id",
            id("tokenizer.ggml.bos_token_id"),
        )
        .u32(
            "tokenizer.ggml.eos_token_id",
            id("tokenizer.ggml.eos_token_id"),
        )
        .bool("tokenizer.ggml.add_bos_token", true);
    let mut seed = 0;
    let mut tensor = |w: Writer, name: &str, dims: &[usize], scale: f32, offset: f32| {
        seed += 1;
        let n = dims.iter().product();
        let dims: Vec<u64> = dims.iter().map(|&x| x as u64).collect();
        let quantised = family
            .blocks
            .filter(|_| dims.len() == 2 && name != "token_embd.weight");
        if let Some(ty) = quantised {
            let per_block = if ty == GGUF_IQ4NL { 32 } else { 256 };
            return w.tensor(
                name,
                &dims,
                ty,
                random_blocks(ty, seed, n / per_block, scale),
            );
        }
        let values = weights(seed, n, scale, offset);
        if family.bf16 && dims.len() == 2 {
            let bytes = values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
                .collect();
            w.tensor(name, &dims, GGUF_BF16, bytes)
        } else {
            w.tensor_f32(name, &dims, &values)
        }
    };
    w = tensor(w, "token_embd.weight", &[d, vocab], 1.0, 0.0);
    if family.rope_freqs {
        w = w.tensor_f32(
            "rope_freqs.weight",
            &[LLAMA3_ROPE_FACTORS.len() as u64],
            &LLAMA3_ROPE_FACTORS,
        );
    }
    if family.long_rope {
        w = w
            .tensor_f32("rope_factors_short.weight", &[6], &PHI3_ROPE_SHORT)
            .tensor_f32("rope_factors_long.weight", &[6], &PHI3_ROPE_LONG);
    }
    let ffn = family.ffn;
    for l in 0..LLAMA3_LAYERS {
        let b = |t: &str| format!("blk.{l}.{t}");
        w = tensor(w, &b("attn_norm.weight"), &[d], 0.1, 1.0);
        if family.fused {
            w = tensor(w, &b("attn_qkv.weight"), &[d, q + 2 * kv], 0.3, 0.0);
        } else {
            w = tensor(w, &b("attn_q.weight"), &[d, q], 0.3, 0.0);
            w = tensor(w, &b("attn_k.weight"), &[d, kv], 0.3, 0.0);
            w = tensor(w, &b("attn_v.weight"), &[d, kv], 0.3, 0.0);
        }
        w = tensor(w, &b("attn_output.weight"), &[q, d], 0.3, 0.0);
        w = tensor(w, &b("ffn_norm.weight"), &[d], 0.1, 1.0);
        if family.fused {
            w = tensor(w, &b("ffn_up.weight"), &[d, 2 * ffn], 0.3, 0.0);
        } else {
            w = tensor(w, &b("ffn_gate.weight"), &[d, ffn], 0.3, 0.0);
            w = tensor(w, &b("ffn_up.weight"), &[d, ffn], 0.3, 0.0);
        }
        w = tensor(w, &b("ffn_down.weight"), &[ffn, d], 0.2, 0.0);
        if family.qkv_bias {
            w = tensor(w, &b("attn_q.bias"), &[q], 0.5, 0.0);
            w = tensor(w, &b("attn_k.bias"), &[kv], 0.5, 0.0);
            w = tensor(w, &b("attn_v.bias"), &[kv], 0.5, 0.0);
        }
        if family.qk_norm {
            w = tensor(w, &b("attn_q_norm.weight"), &[head_dim], 0.2, 1.0);
            w = tensor(w, &b("attn_k_norm.weight"), &[head_dim], 0.2, 1.0);
        }
        if family.gemma2 {
            w = tensor(w, &b("post_attention_norm.weight"), &[d], 0.1, 1.0);
            w = tensor(w, &b("post_ffw_norm.weight"), &[d], 0.1, 1.0);
        }
    }
    w = tensor(w, "output_norm.weight", &[d], 0.1, 1.0);
    w.to_bytes()
}
