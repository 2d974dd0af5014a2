"""Memory planning at start-up: a model whose KV cache cannot fit is refused with the
numbers and what to change, and the server exits cleanly instead of being killed later."""

from __future__ import annotations

import os
import subprocess
import tempfile

from conftest import SMOL, free_port


def test_a_kv_budget_beyond_memory_is_refused_at_start():
    binary = os.environ.get("BASALT_BIN", "target/debug/basalt")
    done = subprocess.run(
        [binary, "serve", "--port", str(free_port()), "--data-dir", tempfile.mkdtemp(),
         "--model", SMOL, "--kv-cache-mb", str(100 << 20)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert f"model `{SMOL}` cannot be served: not enough memory" in done.stderr, done.stderr
    assert "KV cache" in done.stderr and "--kv-cache-mb" in done.stderr
