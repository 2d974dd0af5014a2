"""boto3 against a running Basalt: the Bedrock Runtime (converse, converse_stream,
invoke_model, invoke_model_with_response_stream, count_tokens) and the control plane's
model catalog, signed with SigV4 as boto3 does by default, and with Bedrock API keys
(`AWS_BEARER_TOKEN_BEDROCK`) over HTTPS. Wrong keys and tampered signatures are rejected."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY_ID, API_KEY, GEMMA, MINILM, SECRET_ACCESS_KEY, SMOL, TLS_CA

SYSTEM = [{"text": "You are a helpful assistant."}]
QUESTION = [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]
GREEDY = {"maxTokens": 32, "temperature": 0}
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120)


def client(server, service="bedrock-runtime", secret=SECRET_ACCESS_KEY, key_id=ACCESS_KEY_ID):
    return boto3.client(
        service, endpoint_url=server.base_url, region_name="us-west-2",
        aws_access_key_id=key_id, aws_secret_access_key=secret, config=NO_RETRIES,
    )


@pytest.fixture()
def runtime(server):
    return client(server)


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_converse(runtime):
    r = runtime.converse(modelId=SMOL, system=SYSTEM, messages=QUESTION, inferenceConfig=GREEDY)
    assert r["output"]["message"]["role"] == "assistant"
    assert "Paris" in r["output"]["message"]["content"][0]["text"]
    assert r["stopReason"] == "end_turn"
    u = r["usage"]
    assert u["inputTokens"] > 0 and u["outputTokens"] > 0
    assert u["totalTokens"] == u["inputTokens"] + u["outputTokens"]
    assert r["metrics"]["latencyMs"] >= 0


def test_cache_points_write_then_read_the_prompt_cache(runtime):
    # A system prompt of many blocks (the cache keeps whole blocks of 16 tokens), unique to
    # this test so no earlier request cached it.
    system = [{"text": "You answer questions about the Basalt cache test. " + " ".join(
        f"Rule {i}: answer in one short sentence." for i in range(12))}, {"cachePoint": {"type": "default"}}]
    first = runtime.converse(modelId=SMOL, system=system, messages=QUESTION, inferenceConfig=GREEDY)["usage"]
    assert first["cacheWriteInputTokens"] >= 64, first
    assert first["cacheReadInputTokens"] == 0, first
    # Another question behind the same cached system prompt reads it.
    again = [{"role": "user", "content": [{"text": "And the capital of Italy?"}]}]
    second = runtime.converse(modelId=SMOL, system=system, messages=again, inferenceConfig=GREEDY)["usage"]
    assert second["cacheWriteInputTokens"] == 0, second
    assert second["cacheReadInputTokens"] >= first["cacheWriteInputTokens"], (first, second)
    # A point after the user turn covers it too; a 1-hour TTL is accepted.
    long_question = [{"role": "user", "content": [
        {"text": "Tell me about Paris. " * 20}, {"cachePoint": {"type": "default", "ttl": "1h"}}]}]
    third = runtime.converse(modelId=SMOL, system=system[:1], messages=long_question,
                             inferenceConfig={"maxTokens": 4})["usage"]
    assert third["cacheWriteInputTokens"] >= 64 and third["cacheReadInputTokens"] >= 64, third
    with pytest.raises(ClientError) as e:
        runtime.converse(modelId=SMOL, messages=[{"role": "user", "content": [
            {"text": "Hi"}, {"cachePoint": {"type": "default", "ttl": "2d"}}]}])
    assert error_code(e) == "ValidationException"


def test_converse_stream(runtime):
    r = runtime.converse_stream(modelId=SMOL, system=SYSTEM, messages=QUESTION, inferenceConfig=GREEDY)
    events = list(r["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert "Paris" in text
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"]["outputTokens"] > 0


def test_converse_stream_stops_early_when_the_client_leaves(runtime):
    r = runtime.converse_stream(modelId=SMOL, messages=[{"role": "user", "content": [{"text": "Write a long poem."}]}],
                                inferenceConfig={"maxTokens": 200})
    stream = r["stream"]
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    # The server is unharmed and serves the next request.
    assert runtime.converse(modelId=SMOL, messages=QUESTION, inferenceConfig={"maxTokens": 2})["usage"]["outputTokens"] == 2


def test_invoke_model_and_stream(runtime):
    body = json.dumps({"prompt": "The capital of France is", "max_gen_len": 8, "temperature": 0})
    r = runtime.invoke_model(modelId=GEMMA, body=body, contentType="application/json", accept="application/json")
    whole = json.loads(r["body"].read())
    assert whole["generation_token_count"] == 8 and whole["stop_reason"] == "length"
    assert whole["generation"].strip()

    r = runtime.invoke_model_with_response_stream(modelId=GEMMA, body=body)
    chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    assert "".join(c["generation"] for c in chunks) == whole["generation"]
    assert chunks[0]["prompt_token_count"] == whole["prompt_token_count"]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["inputTokenCount"] == whole["prompt_token_count"]
    assert metrics["outputTokenCount"] == 8


def test_count_tokens(runtime):
    counted = runtime.count_tokens(modelId=SMOL, input={"converse": {"messages": QUESTION, "system": SYSTEM}})
    r = runtime.converse(modelId=SMOL, system=SYSTEM, messages=QUESTION, inferenceConfig={"maxTokens": 1})
    assert counted["inputTokens"] == r["usage"]["inputTokens"]
    body = json.dumps({"prompt": "The capital of France is", "max_gen_len": 1})
    counted = runtime.count_tokens(modelId=GEMMA, input={"invokeModel": {"body": body}})
    invoked = json.loads(runtime.invoke_model(modelId=GEMMA, body=body)["body"].read())
    assert counted["inputTokens"] == invoked["prompt_token_count"]


def test_model_arns_resolve(runtime):
    arn = f"arn:aws:bedrock:us-west-2::foundation-model/{SMOL}"
    r = runtime.converse(modelId=arn, messages=QUESTION, inferenceConfig={"maxTokens": 2})
    assert r["usage"]["outputTokens"] == 2


def test_control_plane_lists_the_catalog(server):
    bedrock = client(server, service="bedrock")
    models = bedrock.list_foundation_models()["modelSummaries"]
    ids = {m["modelId"] for m in models}
    assert {SMOL, GEMMA} <= ids
    assert all(m["modelLifecycle"]["status"] == "ACTIVE" for m in models)
    assert [m["modelId"] for m in bedrock.list_foundation_models(byOutputModality="EMBEDDING")["modelSummaries"]] == [MINILM]
    google = bedrock.list_foundation_models(byProvider="google")["modelSummaries"]
    assert [m["modelId"] for m in google] == [GEMMA]
    details = bedrock.get_foundation_model(modelIdentifier=SMOL)["modelDetails"]
    assert details["outputModalities"] == ["TEXT"] and details["responseStreamingSupported"] is True
    with pytest.raises(ClientError) as e:
        bedrock.get_foundation_model(modelIdentifier="nope.nothing-v1:0")
    assert error_code(e) == "ResourceNotFoundException"


def test_errors(runtime):
    with pytest.raises(ClientError) as e:
        runtime.converse(modelId="nope.nothing-v1:0", messages=QUESTION)
    assert error_code(e) == "ResourceNotFoundException"
    image = {"image": {"format": "png", "source": {"bytes": b"\x89PNG"}}}
    with pytest.raises(ClientError) as e:
        runtime.converse(modelId=SMOL, messages=[{"role": "user", "content": [{"text": "What is this?"}, image]}])
    assert error_code(e) == "ValidationException"
    assert "messages.0.content.1" in str(e.value)
    with pytest.raises(ClientError) as e:
        runtime.invoke_model(modelId=SMOL, body=json.dumps({"prompt": "x", "topP": 0.5}))
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        runtime.converse(modelId=SMOL, messages=[{"role": "user", "content": [{"text": "word " * 10000}]}])
    assert error_code(e) == "ValidationException"


def test_sigv4_rejects_wrong_secrets_unknown_keys_and_tampering(server):
    with pytest.raises(ClientError) as e:
        client(server, secret="not-the-secret").converse(modelId=SMOL, messages=QUESTION)
    assert error_code(e) == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as e:
        client(server, key_id="AKIDNOBODY").converse(modelId=SMOL, messages=QUESTION)
    assert error_code(e) == "UnrecognizedClientException"

    tampering = client(server)

    def change_body_after_signing(request, **_):
        request.body = request.body.replace(b"France", b"Frapce")

    tampering.meta.events.register("before-send.bedrock-runtime.Converse", change_body_after_signing)
    with pytest.raises(ClientError) as e:
        tampering.converse(modelId=SMOL, messages=QUESTION)
    assert error_code(e) == "InvalidSignatureException"


def test_bearer_api_keys_over_basalts_own_https(tls_server, monkeypatch):
    """botocore sends API keys only over HTTPS: Basalt serves it itself (--tls-cert)."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", API_KEY)
    bearer = boto3.client("bedrock-runtime", endpoint_url=tls_server.base_url, region_name="us-east-1",
                          verify=TLS_CA, config=NO_RETRIES)
    r = bearer.converse(modelId=SMOL, system=SYSTEM, messages=QUESTION, inferenceConfig=GREEDY)
    assert "Paris" in r["output"]["message"]["content"][0]["text"]
    events = list(bearer.converse_stream(modelId=SMOL, messages=QUESTION, inferenceConfig={"maxTokens": 3})["stream"])
    assert "metadata" in events[-1]

    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "sk-wrong")
    wrong = boto3.client("bedrock-runtime", endpoint_url=tls_server.base_url, region_name="us-east-1",
                         verify=TLS_CA, config=NO_RETRIES)
    with pytest.raises(ClientError) as e:
        wrong.converse(modelId=SMOL, messages=QUESTION)
    assert error_code(e) == "UnrecognizedClientException"
