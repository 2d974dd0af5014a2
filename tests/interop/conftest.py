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


class Balancer:
    """A round-robin TCP load balancer on a free port: each new connection goes to the next
    backend, bytes piped both ways untouched (as a cloud's layer-4 balancer does)."""

    def __init__(self, backends: list[int]) -> None:
        import asyncio
        import itertools
        import threading

        self.port = free_port()
        self._next = itertools.cycle(backends)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def accept(client_reader, client_writer):
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", next(self._next))
            except OSError:
                client_writer.close()
                return
            await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))

        async def serve():
            self._server = await asyncio.start_server(accept, "127.0.0.1", self.port)
            ready.set()

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        import asyncio

        async def shutdown():
            self._server.close()
            pipes = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class ReplicaSet:
    """Three `basalt serve` replicas sharing a fresh PostgreSQL database and a Redis (from
    `scripts/with-services`), with the operator keys, behind a round-robin balancer: what
    the session's `server` is when BASALT_TOPOLOGY=replicas, so the SDK suites run against a
    scaled-out deployment unchanged."""

    SECRET_KEY = "a7" * 32

    def __init__(self) -> None:
        pg, redis = os.environ.get("BASALT_TEST_POSTGRES_URL"), os.environ.get("BASALT_TEST_REDIS_URL")
        if not (pg and redis):
            raise RuntimeError("BASALT_TOPOLOGY=replicas needs scripts/with-services (PostgreSQL and Redis)")
        name = "basalt_suite_" + os.urandom(4).hex()
        subprocess.run(["psql", pg, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
        database = pg.rsplit("/", 1)[0] + "/" + name
        self.replicas = [
            Server(args=[*OPERATOR_KEYS, "--database-url", database, "--redis-url", redis,
                         "--replica-id", replica, "--secret-key", self.SECRET_KEY])
            for replica in ("a", "b", "c")
        ]
        self.balancer = Balancer([r.port for r in self.replicas])
        self.base_url = f"http://127.0.0.1:{self.balancer.port}"
        self.binary = self.replicas[0].binary
        self.data_dir = self.replicas[0].data_dir

    def logs(self) -> str:
        return "\n".join(f"--- replica {i}\n{r.logs()}" for i, r in enumerate(self.replicas))

    def answered(self) -> list[int]:
        """How many HTTP responses each replica has sent, from its metrics."""
        counts = []
        for r in self.replicas:
            with urllib.request.urlopen(r.base_url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
            counts.append(sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                              if line.startswith("basalt_http_responses_total")))
        return counts

    def stop(self) -> int:
        self.balancer.stop()
        codes = [r.stop() for r in self.replicas]
        return max(codes, key=abs)


@pytest.fixture(scope="session")
def server():
    s = ReplicaSet() if os.environ.get("BASALT_TOPOLOGY") == "replicas" else Server()
    yield s
    if isinstance(s, ReplicaSet):
        answered = s.answered()
        assert all(answered), f"the balancer left a replica idle: {answered} responses"
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
