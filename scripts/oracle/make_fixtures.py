#!/usr/bin/env python3
"""Make Basalt's fidelity fixtures with an independent implementation: llama.cpp, through
llama-cpp-python.

The fixtures record, for a dozen prompts per model, llama.cpp's prompt token ids, its greedy
continuation, and the top logits at every step; plus token ids for a set of tokenizer test
strings. Basalt's tests compare against these files and never need llama.cpp installed.

Set-up (once, outside the repository; building llama.cpp takes ~10 minutes on 2 cores):
    python3 -m venv /var/tmp/basalt-oracle/venv
    CMAKE_ARGS="-DGGML_NATIVE=ON" /var/tmp/basalt-oracle/venv/bin/pip install llama-cpp-python==0.3.36 numpy gguf==0.19.0
Run:
    /var/tmp/basalt-oracle/venv/bin/python scripts/oracle/make_fixtures.py [--models-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from llama_cpp import Llama, __version__ as llama_cpp_version

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "engine" / "tests" / "fixtures"
STEPS = 24
TOP = 5

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(user: str, system: str = SMOL_SYSTEM) -> str:
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


MODELS = {
    "smollm2": {
        "file": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        "prompts": [
            (chatml("What is the capital of France?"), True),
            (chatml("What is the capital of France?", "You are a helpful assistant."), True),
            (chatml("Write a haiku about the sea."), True),
            (chatml("List three primary colors."), True),
            (chatml("Translate 'good morning' into Spanish."), True),
            (chatml("Write a Python function that adds two numbers."), True),
            (chatml("What is 12 times 12?"), True),
            (chatml("Explain photosynthesis in one sentence."), True),
            ("The quick brown fox", False),
            ("def fibonacci(n):\n", False),
            ("Once upon a time, in a land far away,", False),
            ("Les élèves étudient 数学 and emoji 🎉:", False),
        ],
    },
    "gemma3": {
        "file": "gemma-3-270m/gemma-3-270m-q4_k_m.gguf",
        "prompts": [
            ("The capital of France is", False),
            ("Once upon a time", False),
            ("def quicksort(arr):\n", False),
            ("The three primary colors are", False),
            ("In 1969, the first humans", False),
            ("Water boils at", False),
            ("Translate to French: good morning ->", False),
            ("1, 2, 3, 4, 5,", False),
            ("The best way to learn a language is", False),
            ("Les élèves étudient 数学 and emoji 🎉:", False),
            ("<start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n", True),
            ("Question: What is the largest planet?\nAnswer:", False),
        ],
    },
}

# Tiny random-weight models (scripts/oracle/tiny_models.py; the tests write the same file):
# a graph and a tokenizer to check where no real model of the family can be had here.
TINY = {
    "llama3-tiny": {
        "build": "write_llama3",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        "prompts": [
            ("The quick brown fox", False),
            ("In 2024, 1234567 people said: I'LL GO!", False),
            ("def f(x):\n    return x ** 2\n\n\n", False),
            ("Les élèves étudient 数学 and emoji 🎉:", False),
            ("<|im_start|>user\nhi<|im_end|>", True),
            ("a long line " * 30, False),
        ],
    },
    "qwen2-pre-tiny": {
        "build": "write_qwen2_tokenizer",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "qwen2-tiny": {
        "build": "write_qwen2",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "qwen3-tiny": {
        "build": "write_qwen3",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "phi3-tiny": {
        "build": "write_phi3",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "gemma2-tiny": {
        "build": "write_gemma2",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "granite-tiny": {
        "build": "write_granite",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "llama3-bf16-tiny": {
        "build": "write_llama3_bf16",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "llama3-q3k-tiny": {
        "build": "write_llama3_q3k",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "llama3-q2k-tiny": {
        "build": "write_llama3_q2k",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "llama3-q5k-tiny": {
        "build": "write_llama3_q5k",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    "llama3-iq4nl-tiny": {
        "build": "write_llama3_iq4nl",
        "source": "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
}
for _name in ("qwen2-pre-tiny", "qwen2-tiny", "qwen3-tiny", "phi3-tiny", "gemma2-tiny", "granite-tiny",
              "llama3-bf16-tiny", "llama3-q3k-tiny", "llama3-q2k-tiny", "llama3-q5k-tiny",
              "llama3-iq4nl-tiny"):
    TINY[_name]["prompts"] = TINY["llama3-tiny"]["prompts"]

TOKENIZER_STRINGS = [
    "Hello world",
    " Hello world",
    "Hello  world",
    "   leading and trailing   ",
    "tabs\tand\nnewlines\n\n\nend",
    "Numbers: 1234567890 and 3.14159, 1e-9",
    "can't won't I'm you're they've we'll he'd",
    "CamelCaseIdentifiersAndsnake_case_names",
    "Ünïcödé façade naïve café résumé",
    "日本語のテキストと中文文本",
    "Русский текст и ελληνικά",
    "emoji 🎉🚀👍🏽 and flags 🇫🇷 and zwj 👨‍👩‍👧",
    "def f(x):\n    return x ** 2  # square\n",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "<html><body><p>Hi &amp; bye</p></body></html>",
    "a" * 40,
    "!!!???...,,,;;;",
    "    \n    \n",
    "<|im_start|>user\nhi<|im_end|>",
    "<start_of_turn>user\nhi<end_of_turn>",
    "mixed: ñ 中 🎉 \u00a0nbsp\u2003emspace",
    "",
]


def top_logits(logits: np.ndarray) -> list[list[float]]:
    idx = np.argsort(-logits, kind="stable")[:TOP]
    return [[int(i), float(logits[i])] for i in idx]


def run_model(name: str, spec: dict, models_dir: Path, path: Path | None = None) -> dict:
    path = path or models_dir / spec["file"]
    llm = Llama(model_path=str(path), n_ctx=1024, n_threads=2, logits_all=True, verbose=False, seed=0)
    cases = []
    for text, special in spec["prompts"]:
        prompt = llm.tokenize(text.encode(), add_bos=True, special=special)
        llm.reset()
        llm.eval(prompt)
        generated, steps = [], []
        for _ in range(STEPS):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            steps.append(top_logits(logits))
            token = int(np.argmax(logits))
            generated.append(token)
            if token == llm.token_eos():
                break
            llm.eval([token])
        # llama.cpp's own numerical noise: the same tokens evaluated one at a time give
        # logits that differ from the batched evaluation (different kernels and activation
        # blocking). Greedy choices closer than this are ties even for llama.cpp.
        llm.reset()
        for t in prompt[:-1]:
            llm.eval([t])
        noise = 0.0
        for step, t in enumerate([prompt[-1]] + generated[:-1]):
            llm.eval([t])
            sequential = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            noise = max(noise, max(abs(float(sequential[i]) - l) for i, l in steps[step]))
        cases.append({
            "text": text, "special": special, "prompt": prompt, "generated": generated,
            "top": steps, "oracle_noise": noise,
        })
    tokens = []
    for s in TOKENIZER_STRINGS:
        tokens.append({
            "text": s,
            "plain": llm.tokenize(s.encode(), add_bos=False, special=False),
            "special": llm.tokenize(s.encode(), add_bos=False, special=True),
        })
    return {
        "model_file": spec.get("file", f"{name} (written by the test)"),
        "oracle_noise": max(c["oracle_noise"] for c in cases),
        "oracle": f"llama-cpp-python {llama_cpp_version}",
        "cases": cases,
        "tokenizer": tokens,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    default = os.environ.get("BASALT_MODELS_DIR") or str(
        Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "basalt/models"
    )
    p.add_argument("--models-dir", type=Path, default=Path(default))
    p.add_argument("--only", help="make only this fixture (e.g. llama3-tiny)")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, spec in {**MODELS, **TINY}.items():
        if args.only and name != args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = None
            if "build" in spec:
                path = Path(tmp) / f"{name}.gguf"
                getattr(tiny_models, spec["build"])(path, args.models_dir / spec["source"])
            data = run_model(name, spec, args.models_dir, path)
        (OUT / f"{name}.json").write_text(json.dumps(data, ensure_ascii=False) + "\n")
        print(f"wrote {OUT / (name + '.json')}: {len(data['cases'])} cases")


if __name__ == "__main__":
    main()
