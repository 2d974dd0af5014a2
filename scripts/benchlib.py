"""What the HTTP-level benchmark harnesses share: naming the CPU, starting `basalt serve`,
JSON over HTTP, and writing a harness's section of docs/BENCHMARKS.md with one table per
CPU (a run on another CPU adds its table and keeps the others)."""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def cpu() -> str:
    """The CPU's model name and the SIMD extensions that matter here."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni") if f in flags]
    return f"{model} ({' '.join(shown) or 'no AVX2'})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, token: str | None = None,
         timeout: float = 30) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json",
                                          **({"authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        text = r.read()
    return json.loads(text) if text else {}


def start_basalt(binary: Path, args: list[str], what: str,
                 data: str | None = None) -> tuple[subprocess.Popen, str]:
    """A `basalt serve` on a free port and `data` (a fresh directory if not given) as its
    data directory, once it is ready."""
    port = free_port()
    data = data or tempfile.mkdtemp(prefix=f"basalt-{what}-")
    proc = subprocess.Popen([str(binary), "serve", "--port", str(port), "--data-dir", data, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what}: basalt serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"{what}: basalt serve did not become ready")


def replace_section(doc: Path, marker: str, intro: str, table: str) -> None:
    """Puts `table` (which starts with `### <cpu>`) in the section between `<!-- marker -->`
    and `<!-- /marker -->`, replacing that CPU's table and keeping every other CPU's. The
    intro is written when the section is new."""
    begin, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        old, after = rest.split(end, 1)
        heading = table.split("\n", 1)[0][4:]
        kept = [t for t in old.split("\n### ")[1:] if not t.startswith(heading)]
        head = old.split("\n### ")[0].strip("\n")
        tables = "".join("\n### " + t.rstrip("\n") + "\n" for t in kept)
        text = f"{before}{begin}\n{head}\n{tables}\n{table}\n{end}{after}"
    else:
        text = text.rstrip("\n") + f"\n\n{begin}\n{intro}\n{table}\n{end}\n"
    doc.write_text(text)
