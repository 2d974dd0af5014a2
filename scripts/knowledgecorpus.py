"""A real text corpus for the knowledge-base benchmarks, from Debian's documentation packages.

Sentences of the Python 3.11 documentation (package python3-doc, its reStructuredText sources)
and of Perl's (package perl-doc, its POD files): about 112,000 distinct sentences of six
words or more, in a fixed order. `sentences()` returns them; `embeddings()` returns their
all-MiniLM-L6-v2 vectors from sentence-transformers, computed once and cached, since
embedding a hundred thousand sentences takes a quarter of an hour on two cores.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

PYTHON_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
PERL_DOCS = Path("/usr/share/perl/5.36/pod")
CACHE = Path(os.environ.get("BASALT_BENCH_CACHE", "/var/tmp/basalt-bench-knowledge"))
MIN_WORDS = 6
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
POD_CODE = re.compile(r"[A-Z]<+([^<>]*)>+")


def install() -> None:
    """Installs the two documentation packages if they are missing (needs root and apt)."""
    missing = [pkg for pkg, path in (("python3-doc", PYTHON_DOCS), ("perl-doc", PERL_DOCS))
               if not path.is_dir()]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _paragraphs(path: Path, pod: bool) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    out = []
    for para in re.split(r"\n\s*\n", text):
        # Code blocks and directives are not prose: indented in POD, `..`/`>>>` in reST.
        if pod and para.startswith((" ", "\t", "=")):
            continue
        para = " ".join(para.split())
        if not pod and para.startswith(("..", ">>>")):
            continue
        out.append(POD_CODE.sub(r"\1", para) if pod else para)
    return out


def sentences() -> list[str]:
    install()
    files = [(p, False) for p in sorted(PYTHON_DOCS.rglob("*.txt"))]
    files += [(p, True) for p in sorted(PERL_DOCS.glob("*.pod"))]
    seen, out = set(), []
    for path, pod in files:
        for para in _paragraphs(path, pod):
            for s in SENTENCE_END.split(para):
                if len(s.split()) >= MIN_WORDS and s not in seen:
                    seen.add(s)
                    out.append(s)
    return out


def embeddings(texts: list[str]):
    """all-MiniLM-L6-v2 vectors (unit length, float32) for `texts`, cached by their hash."""
    import numpy as np

    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"minilm-{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = reference_model().encode(texts, batch_size=64, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False).astype("float32")
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def model_dir() -> Path:
    """The embedding model as Basalt's store holds it (scripts/fetch-models puts it there)."""
    if d := os.environ.get("BASALT_MODELS_DIR"):
        return Path(d) / "all-minilm-l6-v2"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "basalt" / "models" / "all-minilm-l6-v2"


def reference_model():
    """sentence-transformers loading the very files Basalt serves (its pooling config linked
    to where sentence-transformers looks for it), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    source, ref = model_dir(), CACHE / "st-model"
    (ref / "1_Pooling").mkdir(parents=True, exist_ok=True)
    links = [(f, ref / f.name) for f in source.iterdir() if f.is_file()]
    links.append((source / "pooling.json", ref / "1_Pooling" / "config.json"))
    for target, link in links:
        if not link.exists():
            link.symlink_to(target)
    return SentenceTransformer(str(ref), device="cpu")
