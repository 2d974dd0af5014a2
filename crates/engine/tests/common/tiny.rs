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

pub const LLAMA3_DIM: usize = 64;
const LLAMA3_HEADS: usize = 4;
const LLAMA3_KV_HEADS: usize = 2;
const LLAMA3_LAYERS: usize = 2;
const LLAMA3_FFN: usize = 128;
/// Llama 3.1-style frequency divisors: high frequencies kept, low ones slowed.
pub const LLAMA3_ROPE_FACTORS: [f32; 8] = [1.0, 1.0, 1.0, 1.5, 2.5, 4.0, 8.0, 8.0];

/// A two-layer Llama 3 graph (grouped-query attention, `rope_freqs`, base 500,000) over the
/// vocabulary and merges of `source` (a byte-level BPE file), declared with pre-tokenizer
/// `pre` (`llama-bpe` as Llama 3's files are; `qwen2` to check Qwen's).
pub fn llama3(source: &GgufFile, pre: &str) -> Vec<u8> {
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
    let (d, kv) = (LLAMA3_DIM, LLAMA3_DIM / LLAMA3_HEADS * LLAMA3_KV_HEADS);
    let vocab = tokens.len();
    let mut w = Writer::new()
        .string("general.architecture", "llama")
        .string("general.name", "tiny-llama3")
        .u32("llama.context_length", 512)
        .u32("llama.embedding_length", d as u32)
        .u32("llama.block_count", LLAMA3_LAYERS as u32)
        .u32("llama.feed_forward_length", LLAMA3_FFN as u32)
        .u32("llama.attention.head_count", LLAMA3_HEADS as u32)
        .u32("llama.attention.head_count_kv", LLAMA3_KV_HEADS as u32)
        .u32("llama.rope.dimension_count", (d / LLAMA3_HEADS) as u32)
        .f32("llama.rope.freq_base", 500_000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
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
        w.tensor_f32(name, &dims, &weights(seed, n, scale, offset))
    };
    w = tensor(w, "token_embd.weight", &[d, vocab], 1.0, 0.0);
    w = w.tensor_f32(
        "rope_freqs.weight",
        &[LLAMA3_ROPE_FACTORS.len() as u64],
        &LLAMA3_ROPE_FACTORS,
    );
    for l in 0..LLAMA3_LAYERS {
        let b = |t: &str| format!("blk.{l}.{t}.weight");
        w = tensor(w, &b("attn_norm"), &[d], 0.1, 1.0);
        w = tensor(w, &b("attn_q"), &[d, d], 0.3, 0.0);
        w = tensor(w, &b("attn_k"), &[d, kv], 0.3, 0.0);
        w = tensor(w, &b("attn_v"), &[d, kv], 0.3, 0.0);
        w = tensor(w, &b("attn_output"), &[d, d], 0.3, 0.0);
        w = tensor(w, &b("ffn_norm"), &[d], 0.1, 1.0);
        w = tensor(w, &b("ffn_gate"), &[d, LLAMA3_FFN], 0.3, 0.0);
        w = tensor(w, &b("ffn_up"), &[d, LLAMA3_FFN], 0.3, 0.0);
        w = tensor(w, &b("ffn_down"), &[LLAMA3_FFN, d], 0.2, 0.0);
    }
    w = tensor(w, "output_norm.weight", &[d], 0.1, 1.0);
    w.to_bytes()
}
