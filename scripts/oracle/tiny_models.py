"""Tiny random-weight models with real models' graphs, for fidelity fixtures.

Each writer here has a twin in crates/engine/tests/common/tiny.rs that writes the same
model (shapes, metadata, weights) for the test: the weights come from a counter-based hash
(splitmix64's finaliser), computed the same way in both languages, so no model file is
committed.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

LLAMA3_DIM, LLAMA3_HEADS, LLAMA3_KV_HEADS, LLAMA3_LAYERS, LLAMA3_FFN = 64, 4, 2, 2, 128
LLAMA3_ROPE_FACTORS = [1.0, 1.0, 1.0, 1.5, 2.5, 4.0, 8.0, 8.0]
M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def weights(seed: int, n: int, scale: float, offset: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = np.uint64(seed) * np.uint64(1 << 32) + np.arange(n, dtype=np.uint64)
    unit = (_mix(x) >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24) * np.float32(2) - np.float32(1)
    return unit * np.float32(scale) + np.float32(offset)


def hash_bytes(seed: int, n: int) -> np.ndarray:
    """`n` bytes of tensor number `seed`: the counter hash's words, little-endian."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed) * np.uint64(1 << 32) + np.arange((n + 7) // 8, dtype=np.uint64)
    return _mix(x).astype("<u8").view(np.uint8)[:n]


def random_blocks(kind: str, seed: int, blocks: int, scale: float) -> np.ndarray:
    """`blocks` K-quant blocks: random quants, scales (and mins), and the f16 multipliers
    (first or last, as the type lays them out), spread about as the uniform weights are and,
    with mins, centred on zero (the Rust twin: `random_blocks` in tiny.rs)."""
    f16 = lambda v: np.frombuffer(np.float16(v).tobytes(), dtype=np.uint8)
    empty = np.zeros(0, dtype=np.uint8)
    if kind == "Q3_K":
        head, random, tail = empty, 108, f16(np.float32(scale) * np.float32(0.018))
    elif kind == "Q2_K":
        d = np.float32(scale) * np.float32(0.02)
        head, random, tail = empty, 80, np.concatenate([f16(d), f16(d * np.float32(1.5))])
    elif kind == "Q5_K":
        d = np.float32(scale) * np.float32(0.0011)
        head, random, tail = np.concatenate([f16(d), f16(d * np.float32(15.5))]), 172, empty
    elif kind == "IQ4_NL":
        head, random, tail = f16(np.float32(scale) * np.float32(0.004)), 16, empty
    else:
        raise ValueError(kind)
    body = hash_bytes(seed, blocks * random).reshape(blocks, random)
    return np.concatenate([np.tile(head, (blocks, 1)), body, np.tile(tail, (blocks, 1))], axis=1)


def _field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


# What each tiny family adds to the LLaMA graph (the Rust twin: `Family` in tiny.rs).
LLAMA3 = dict(arch="llama", rope_base=500_000.0, rope_freqs=True, qkv_bias=False, qk_norm=False,
              head_dim=None, rotary_dims=None, fused=False, long_rope=False, gemma2=False,
              granite=False, bf16=False, width=LLAMA3_DIM, ffn=LLAMA3_FFN, blocks=None)
FAMILIES = {
    "llama3": LLAMA3,
    "qwen2": {**LLAMA3, "arch": "qwen2", "rope_base": 1_000_000.0, "rope_freqs": False, "qkv_bias": True},
    # Heads twice as wide as width / heads, as Qwen3's are.
    "qwen3": {**LLAMA3, "arch": "qwen3", "rope_base": 1_000_000.0, "rope_freqs": False, "qk_norm": True,
              "head_dim": 32},
    # Phi-4-mini's shape of graph: fused q/k/v and gate/up tensors, rotation of 3/4 of each head,
    # long-rope factors chosen by context (trained at 256, so llama.cpp's 1024 takes the long set)
    # and a magnitude correction.
    "phi3": {**LLAMA3, "arch": "phi3", "rope_base": 10_000.0, "rope_freqs": False, "rotary_dims": 12,
             "fused": True, "long_rope": True},
    # Gemma 2's graph: norms after attention and feed-forward (GELU), a scaled embedding,
    # soft-capped scores and logits, every other layer sliding (over a window short enough
    # for the prompts to cross).
    "gemma2": {**LLAMA3, "arch": "gemma2", "rope_base": 10_000.0, "rope_freqs": False, "gemma2": True},
    # Llama 3's graph with every matrix in BF16 (as original-precision GGUF files are).
    "llama3-bf16": {**LLAMA3, "bf16": True},
    # Llama 3's graph four times as wide (Q3_K rows are 256 long), every matrix but the
    # embedding as random Q3_K blocks (no frequency factors: the heads are wider).
    "llama3-q3k": {**LLAMA3, "rope_freqs": False, "width": 256, "ffn": 512, "blocks": "Q3_K"},
    "llama3-q2k": {**LLAMA3, "rope_freqs": False, "width": 256, "ffn": 512, "blocks": "Q2_K"},
    "llama3-q5k": {**LLAMA3, "rope_freqs": False, "width": 256, "ffn": 512, "blocks": "Q5_K"},
    "llama3-iq4nl": {**LLAMA3, "blocks": "IQ4_NL"},
    # Granite 3's graph: embedding, residual, attention and logit scales from the file.
    "granite": {**LLAMA3, "arch": "granite", "rope_base": 10_000.0, "rope_freqs": False, "granite": True},
}
TINY_NAME = "basalt tiny decoder"
PHI3_ROPE_SHORT = [1.0, 1.0, 1.25, 1.5, 2.0, 3.0]
PHI3_ROPE_LONG = [1.0, 1.5, 3.0, 6.0, 12.0, 24.0]
PHI3_ATTN_FACTOR = 1.1875  # exactly representable, so both writers agree
PHI3_TRAINED_CONTEXT = 256
GEMMA2_WINDOW, GEMMA2_ATTN_CAP, GEMMA2_FINAL_CAP = 32, 8.0, 4.0
# Granite 3's embedding and residual multipliers and logit divisor; an attention scale
# other than 1/sqrt(head width). All exactly representable.
GRANITE_SCALES = {"embedding_scale": 12.0, "residual_scale": 0.25, "attention.scale": 0.125,
                  "logit_scale": 8.0}


def write_decoder(path: Path, source: Path, pre: str, family: str) -> None:
    """A two-layer decoder (grouped-query attention) of `family` over the
    vocabulary and merges of `source`, declared with pre-tokenizer `pre`; FAMILIES says what
    each family adds."""
    f = FAMILIES[family]
    arch = f["arch"]
    src = gguf.GGUFReader(str(source))
    tokens = _field(src, "tokenizer.ggml.tokens")
    head_dim = f["head_dim"] or f["width"] // LLAMA3_HEADS
    rotary = f["rotary_dims"] or head_dim
    d, q, kv = f["width"], head_dim * LLAMA3_HEADS, head_dim * LLAMA3_KV_HEADS
    w = gguf.GGUFWriter(str(path), arch)
    # One name for every family: llama.cpp keys vocabulary quirks on model names (Phi 3's
    # special tokens), and these models borrow another model's vocabulary.
    w.add_string("general.name", TINY_NAME)
    for key, value in [("context_length", 512), ("embedding_length", d), ("block_count", LLAMA3_LAYERS),
                       ("feed_forward_length", f["ffn"]), ("attention.head_count", LLAMA3_HEADS),
                       ("attention.head_count_kv", LLAMA3_KV_HEADS), ("rope.dimension_count", rotary)]:
        w.add_uint32(f"{arch}.{key}", value)
    if f["long_rope"]:
        w.add_uint32(f"{arch}.rope.scaling.original_context_length", PHI3_TRAINED_CONTEXT)
        w.add_float32(f"{arch}.rope.scaling.attn_factor", PHI3_ATTN_FACTOR)
    if f["gemma2"]:
        w.add_uint32(f"{arch}.attention.sliding_window", GEMMA2_WINDOW)
        w.add_float32(f"{arch}.attn_logit_softcapping", GEMMA2_ATTN_CAP)
        w.add_float32(f"{arch}.final_logit_softcapping", GEMMA2_FINAL_CAP)
    if f["granite"]:
        for key, value in GRANITE_SCALES.items():
            w.add_float32(f"{arch}.{key}", value)
    if head_dim != d // LLAMA3_HEADS:
        w.add_uint32(f"{arch}.attention.key_length", head_dim)
        w.add_uint32(f"{arch}.attention.value_length", head_dim)
    w.add_float32(f"{arch}.rope.freq_base", f["rope_base"])
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", pre)
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.token_type", [int(t) for t in _field(src, "tokenizer.ggml.token_type")])
    w.add_array("tokenizer.ggml.merges", _field(src, "tokenizer.ggml.merges"))
    w.add_uint32("tokenizer.ggml.bos_token_id", int(_field(src, "tokenizer.ggml.bos_token_id")))
    w.add_uint32("tokenizer.ggml.eos_token_id", int(_field(src, "tokenizer.ggml.eos_token_id")))
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    seed = 0

    def tensor(name: str, dims: list[int], scale: float, offset: float) -> None:
        nonlocal seed
        seed += 1
        if f["blocks"] and len(dims) == 2 and name != "token_embd.weight":
            qtype = gguf.GGMLQuantizationType[f["blocks"]]
            per_block = 32 if f["blocks"] == "IQ4_NL" else 256
            blocks = random_blocks(f["blocks"], seed, dims[0] * dims[1] // per_block, scale)
            w.add_tensor(name, blocks.reshape(dims[1], -1), raw_dtype=qtype)
            return
        values = weights(seed, int(np.prod(dims)), scale, offset)
        # GGUF lists dimensions innermost first; numpy's shape is the other way round.
        values = values.reshape(dims[::-1])
        if f["bf16"] and len(dims) == 2:
            # Rounded to nearest, ties to even (gguf's conversion; the test's is `half`'s).
            bf16 = gguf.quants.quantize(values, gguf.GGMLQuantizationType.BF16)
            w.add_tensor(name, bf16, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(name, values)

    tensor("token_embd.weight", [d, len(tokens)], 1.0, 0.0)
    if f["rope_freqs"]:
        w.add_tensor("rope_freqs.weight", np.array(LLAMA3_ROPE_FACTORS, dtype=np.float32))
    if f["long_rope"]:
        w.add_tensor("rope_factors_short.weight", np.array(PHI3_ROPE_SHORT, dtype=np.float32))
        w.add_tensor("rope_factors_long.weight", np.array(PHI3_ROPE_LONG, dtype=np.float32))
    for layer in range(LLAMA3_LAYERS):
        b = f"blk.{layer}."
        tensor(b + "attn_norm.weight", [d], 0.1, 1.0)
        if f["fused"]:
            tensor(b + "attn_qkv.weight", [d, q + 2 * kv], 0.3, 0.0)
        else:
            tensor(b + "attn_q.weight", [d, q], 0.3, 0.0)
            tensor(b + "attn_k.weight", [d, kv], 0.3, 0.0)
            tensor(b + "attn_v.weight", [d, kv], 0.3, 0.0)
        tensor(b + "attn_output.weight", [q, d], 0.3, 0.0)
        tensor(b + "ffn_norm.weight", [d], 0.1, 1.0)
        if f["fused"]:
            tensor(b + "ffn_up.weight", [d, 2 * f["ffn"]], 0.3, 0.0)
        else:
            tensor(b + "ffn_gate.weight", [d, f["ffn"]], 0.3, 0.0)
            tensor(b + "ffn_up.weight", [d, f["ffn"]], 0.3, 0.0)
        tensor(b + "ffn_down.weight", [f["ffn"], d], 0.2, 0.0)
        if f["qkv_bias"]:
            tensor(b + "attn_q.bias", [q], 0.5, 0.0)
            tensor(b + "attn_k.bias", [kv], 0.5, 0.0)
            tensor(b + "attn_v.bias", [kv], 0.5, 0.0)
        if f["qk_norm"]:
            tensor(b + "attn_q_norm.weight", [head_dim], 0.2, 1.0)
            tensor(b + "attn_k_norm.weight", [head_dim], 0.2, 1.0)
        if f["gemma2"]:
            tensor(b + "post_attention_norm.weight", [d], 0.1, 1.0)
            tensor(b + "post_ffw_norm.weight", [d], 0.1, 1.0)
    tensor("output_norm.weight", [d], 0.1, 1.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_llama3(path: Path, source: Path) -> None:
    """Llama 3's graph: rope_freqs frequency factors, base 500,000, its pre-tokenizer."""
    write_decoder(path, source, pre="llama-bpe", family="llama3")


def write_qwen2_tokenizer(path: Path, source: Path) -> None:
    """The same model, its words split by Qwen 2's pre-tokenizer (one digit at a time, and
    merges applied even to words the vocabulary holds whole)."""
    write_decoder(path, source, pre="qwen2", family="llama3")


def write_qwen2(path: Path, source: Path) -> None:
    """Qwen 2's graph: biases on the query, key and value projections, NeoX rotation."""
    write_decoder(path, source, pre="qwen2", family="qwen2")


def write_qwen3(path: Path, source: Path) -> None:
    """Qwen 3's graph: per-head RMS norms on queries and keys, heads wider than width / heads."""
    write_decoder(path, source, pre="qwen2", family="qwen3")


def write_phi3(path: Path, source: Path) -> None:
    """Phi 3's graph (as Phi-4-mini has it): fused tensors, partial rotation, long rope."""
    write_decoder(path, source, pre="llama-bpe", family="phi3")


def write_gemma2(path: Path, source: Path) -> None:
    """Gemma 2's graph: post-norms, soft caps, alternating sliding windows."""
    write_decoder(path, source, pre="llama-bpe", family="gemma2")


def write_llama3_bf16(path: Path, source: Path) -> None:
    write_decoder(path, source, "llama-bpe", "llama3-bf16")


def write_llama3_q3k(path: Path, source: Path) -> None:
    write_decoder(path, source, "llama-bpe", "llama3-q3k")


def write_llama3_q2k(path: Path, source: Path) -> None:
    write_decoder(path, source, "llama-bpe", "llama3-q2k")


def write_llama3_q5k(path: Path, source: Path) -> None:
    write_decoder(path, source, "llama-bpe", "llama3-q5k")


def write_llama3_iq4nl(path: Path, source: Path) -> None:
    write_decoder(path, source, "llama-bpe", "llama3-iq4nl")


def write_granite(path: Path, source: Path) -> None:
    """Granite 3's graph: the LLaMA graph scaled at its embedding, residuals, scores and logits."""
    write_decoder(path, source, pre="llama-bpe", family="granite")
