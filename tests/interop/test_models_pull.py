"""`basalt models pull` end to end, against a local stand-in for the Hugging Face hub.

No hub is reachable here, so a small HTTP server speaks the hub's file API the way the real
one does (the repository listing with LFS SHA-256s and the card's licence, `resolve`
answered by a redirect to a CDN on another origin, byte ranges): the real SmolLM2 GGUF from
the model store is "published" there. The binary pulls it (its real code path: only
HF_ENDPOINT differs), is interrupted mid-download and resumes, and the pulled model then
serves a chat completion through the OpenAI SDK.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pathlib
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import Server

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
PULLED_ID = "huggingface.smollm2-pulled-v1:0"


def store_dir() -> pathlib.Path:
    if os.environ.get("BASALT_MODELS_DIR"):
        return pathlib.Path(os.environ["BASALT_MODELS_DIR"])
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return pathlib.Path(data) / "basalt" / "models"


class StandIn:
    """The hub on one port, its CDN on another; `slow` throttles the CDN's answers."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.ranges: list[str | None] = []
        self.slow = False
        stand_in = self

        class Hub(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                if path.startswith(f"/api/models/{REPO}/revision/"):
                    siblings = []
                    for name, data in stand_in.files.items():
                        entry = {"rfilename": name, "size": len(data)}
                        if name.endswith(".gguf"):
                            entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(),
                                            "size": len(data), "pointerSize": 134}
                        siblings.append(entry)
                    body = json.dumps({"id": REPO, "siblings": siblings,
                                       "cardData": {"license": "apache-2.0"}}).encode()
                    return self.answer(200, body, {"Content-Type": "application/json"})
                prefix = f"/{REPO}/resolve/main/"
                if path.startswith(prefix) and path[len(prefix):] in stand_in.files:
                    location = f"{stand_in.cdn_url}/cdn/{path[len(prefix):]}"
                    return self.answer(302, b"", {"Location": location})
                if path.startswith("/cdn/"):
                    data = stand_in.files[path[len("/cdn/"):]]
                    wanted = self.headers.get("Range")
                    stand_in.ranges.append(wanted)
                    start = int(wanted[len("bytes="):].rstrip("-")) if wanted else 0
                    status = 206 if start else 200
                    headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
                    return self.answer(status, data[start:], headers, slow=stand_in.slow)
                return self.answer(404, b"{}")

            def answer(self, status, body, headers=None, slow=False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = 256 << 10
                for i in range(0, len(body), step):
                    try:
                        self.wfile.write(body[i:i + step])
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    if slow:
                        time.sleep(0.05)

        self.hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
        self.cdn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
        self.url = f"http://127.0.0.1:{self.hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self.cdn.server_address[1]}"
        for server in (self.hub, self.cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.hub.shutdown()
        self.cdn.shutdown()


@pytest.fixture(scope="module")
def hub():
    source = store_dir() / "smollm2-135m-instruct"
    gguf = next(source.glob("*.gguf"))
    stand_in = StandIn({gguf.name: gguf.read_bytes(), "LICENSE": (source / "LICENSE").read_bytes(),
                        "README.md": b"# SmolLM2"})
    yield stand_in
    stand_in.stop()


def test_a_model_is_pulled_resumed_checked_and_served(hub):
    models = tempfile.mkdtemp(prefix="basalt-pulled-")
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    env.pop("HF_TOKEN", None)
    pull = [os.environ.get("BASALT_BIN", "target/debug/basalt"), "models", "pull", REPO,
            "--models-dir", models, "--id", PULLED_ID]

    # Interrupted partway: the throttled CDN leaves it time to be killed mid-file.
    hub.slow = True
    proc = subprocess.Popen(pull, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = list(pathlib.Path(models).glob(".downloads/**/*.part"))
    deadline = time.time() + 60
    while not (partial and partial[0].stat().st_size > 4 << 20):
        assert time.time() < deadline and proc.poll() is None, "the download never started"
        time.sleep(0.1)
        partial = list(pathlib.Path(models).glob(".downloads/**/*.part"))
    proc.kill()
    proc.wait()
    kept = partial[0].stat().st_size
    assert kept > 0

    # Run again: it asks only for the rest, checks the hash, imports.
    hub.slow = False
    done = subprocess.run(pull, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"pulled {PULLED_ID}" in done.stdout
    assert any(r and int(r[len("bytes="):].rstrip("-")) >= kept for r in hub.ranges), hub.ranges
    assert "MB/s" in done.stderr  # the progress bar
    listed = subprocess.run([pull[0], "models", "show", PULLED_ID, "--models-dir", models],
                            env=env, capture_output=True, text=True, check=True).stdout
    assert 'license = "apache-2.0"' in listed and 'license_file = "LICENSE"' in listed
    assert not list(pathlib.Path(models).glob(".downloads/**/*"))

    # The pulled model serves.
    from openai import OpenAI

    server = Server(models=[PULLED_ID], models_dir=models)
    try:
        client = OpenAI(base_url=server.base_url + "/v1", api_key="sk-basalt-interop-3f9a", max_retries=0)
        reply = client.chat.completions.create(model=PULLED_ID, max_tokens=8, temperature=0,
                                               messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content
    finally:
        assert server.stop() == 0


def test_pull_errors_are_clear(hub):
    models = tempfile.mkdtemp(prefix="basalt-pulled-")
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    binary = os.environ.get("BASALT_BIN", "target/debug/basalt")
    for source, message in [
        ("nobody/nothing", "no model repository"),
        (f"{REPO}:IQ2_XS", "no GGUF file for quant IQ2_XS"),
        ("not a repo", "is not a repository id"),
        ("https://elsewhere.test/a/b/resolve/main/x.gguf", "is not on the hub"),
    ]:
        done = subprocess.run([binary, "models", "pull", source, "--models-dir", models],
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, source
        assert message in done.stderr, (source, done.stderr)
