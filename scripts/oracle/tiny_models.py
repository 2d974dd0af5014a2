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


def _field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


def write_llama3(path: Path, source: Path, pre: str = "llama-bpe") -> None:
    """A two-layer Llama 3 graph (grouped-query attention, rope_freqs, base 500,000) over the
    vocabulary and merges of `source`, declared with pre-tokenizer `pre`."""
    src = gguf.GGUFReader(str(source))
    tokens = _field(src, "tokenizer.ggml.tokens")
    d, kv = LLAMA3_DIM, LLAMA3_DIM // LLAMA3_HEADS * LLAMA3_KV_HEADS
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.name", "tiny-llama3")
    for key, value in [("context_length", 512), ("embedding_length", d), ("block_count", LLAMA3_LAYERS),
                       ("feed_forward_length", LLAMA3_FFN), ("attention.head_count", LLAMA3_HEADS),
                       ("attention.head_count_kv", LLAMA3_KV_HEADS), ("rope.dimension_count", d // LLAMA3_HEADS)]:
        w.add_uint32(f"llama.{key}", value)
    w.add_float32("llama.rope.freq_base", 500_000.0)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
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
        values = weights(seed, int(np.prod(dims)), scale, offset)
        # GGUF lists dimensions innermost first; numpy's shape is the other way round.
        w.add_tensor(name, values.reshape(dims[::-1]))

    tensor("token_embd.weight", [d, len(tokens)], 1.0, 0.0)
    w.add_tensor("rope_freqs.weight", np.array(LLAMA3_ROPE_FACTORS, dtype=np.float32))
    for layer in range(LLAMA3_LAYERS):
        b = f"blk.{layer}."
        tensor(b + "attn_norm.weight", [d], 0.1, 1.0)
        tensor(b + "attn_q.weight", [d, d], 0.3, 0.0)
        tensor(b + "attn_k.weight", [d, kv], 0.3, 0.0)
        tensor(b + "attn_v.weight", [d, kv], 0.3, 0.0)
        tensor(b + "attn_output.weight", [d, d], 0.3, 0.0)
        tensor(b + "ffn_norm.weight", [d], 0.1, 1.0)
        tensor(b + "ffn_gate.weight", [d, LLAMA3_FFN], 0.3, 0.0)
        tensor(b + "ffn_up.weight", [d, LLAMA3_FFN], 0.3, 0.0)
        tensor(b + "ffn_down.weight", [LLAMA3_FFN, d], 0.2, 0.0)
    tensor("output_norm.weight", [d], 0.1, 1.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_qwen2_tokenizer(path: Path, source: Path) -> None:
    """The same model, its words split by Qwen 2's pre-tokenizer (one digit at a time, and
    merges applied even to words the vocabulary holds whole)."""
    write_llama3(path, source, pre="qwen2")
