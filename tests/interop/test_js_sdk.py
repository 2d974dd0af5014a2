"""The AWS SDK for JavaScript v3 against a running Basalt. Its Bedrock Runtime client speaks
HTTP/2 only: before Basalt served HTTP/2, `ConverseCommand` with an endpoint override got
`read ECONNRESET`. Here it runs Converse, ConverseStream and an unknown model through
cleartext HTTP/2 (prior knowledge) and through HTTPS (HTTP/2 chosen by ALPN), SigV4-signed
over `:authority` as that SDK signs."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

from conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SMOL, TLS_CA

SCRIPT = pathlib.Path(__file__).resolve().parent / "js" / "converse.mjs"


def converse(endpoint: str, **env: str) -> dict:
    out = subprocess.run(
        ["node", str(SCRIPT), endpoint, SMOL],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
             "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, **env},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def check(result: dict) -> None:
    assert "Paris" in result["converse"], result
    assert result["stopReason"] == "end_turn", result
    assert result["stream"] == result["converse"], result
    assert result["streamUsage"]["outputTokens"] > 0, result
    assert result["missing"] == "ResourceNotFoundException", result


def test_converse_over_cleartext_http2(server):
    check(converse(server.base_url))


def test_converse_over_https_with_alpn_http2(tls_server):
    check(converse(tls_server.base_url, NODE_EXTRA_CA_CERTS=TLS_CA))
