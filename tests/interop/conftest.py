"""Starts a real `basalt serve` process for the interoperability suite.

The binary comes from $BASALT_BIN (`make test` builds it and sets it); models come from the
usual model store ($BASALT_MODELS_DIR or the default), which `make test` fills first. The
server runs with keys, so every SDK authenticates the way it would against the real service:
an API key (OpenAI bearer, Anthropic `x-api-key`, Bedrock bearer) or an AWS access key pair
(SigV4).
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

import pytest

SMOL = "huggingface.smollm2-135m-instruct-v1:0"
GEMMA = "google.gemma-3-270m-v1:0"
MINILM = "sentence-transformers.all-minilm-l6-v2-v1:0"
DCGAN = "basalt.dcgan-faces-v1:0"
DEFAULT_MODELS = [SMOL, GEMMA, MINILM, DCGAN]

API_KEY = "sk-basalt-interop-3f9a"
ACCESS_KEY_ID = "AKIDBASALTINTEROP"
SECRET_ACCESS_KEY = "interop/Secret+Key/0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OPERATOR_KEYS = ["--api-key", API_KEY, "--aws-access-key", f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}"]

# A test certificate authority and a certificate for 127.0.0.1 it signed (test material,
# shared with the Rust listener tests).
TLS_DIR = pathlib.Path(__file__).resolve().parents[2] / "crates/server/tests/fixtures/tls"
TLS_CA = str(TLS_DIR / "ca.pem")
TLS_ARGS = ["--tls-cert", str(TLS_DIR / "cert.pem"), "--tls-key", str(TLS_DIR / "key.pem")]


class Server:
    """`basalt serve` on a free port. By default with operator keys; `args` replaces them
    (the platform suite runs with an admin token and tenants instead), `data_dir` reuses a
    data directory (to restart on the same database), `models` and `models_dir` choose
    another set of models or another model store, `tls` serves HTTPS with the test CA's
    certificate, `env` adds environment variables."""

    def __init__(self, args: list[str] | None = None, data_dir: str | None = None,
                 models: list[str] | None = None, models_dir: str | None = None,
                 tls: bool = False, env: dict[str, str] | None = None) -> None:
        self.binary = os.environ.get("BASALT_BIN", "target/debug/basalt")
        self.port = free_port()
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="basalt-serve-", suffix=".log", delete=False)
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="basalt-data-")
        model_args = [a for m in (models or DEFAULT_MODELS) for a in ("--model", m)]
        store_args = ["--models-dir", models_dir] if models_dir else []
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--port", str(self.port), "--data-dir", self.data_dir,
             *model_args, *store_args, "--shutdown-grace-secs", "20",
             *(TLS_ARGS if tls else []), *(OPERATOR_KEYS if args is None else args)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
        deadline = time.time() + 60
        context = ssl.create_default_context(cafile=TLS_CA) if tls else None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"basalt serve exited early:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=1, context=context) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"basalt serve did not become healthy:\n{self.logs()}")

    def logs(self) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    code = s.stop()
    assert code == 0, f"basalt serve exited with {code}:\n{s.logs()}"


@pytest.fixture(scope="session")
def tls_server():
    """SmolLM2 over HTTPS, with the operator keys."""
    s = Server(models=[SMOL], tls=True)
    yield s
    code = s.stop()
    assert code == 0, f"basalt serve exited with {code}:\n{s.logs()}"


@pytest.fixture()
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
