"""Embeddings through the real SDKs: the `openai` SDK's `embeddings.create` (which asks
for base64 by default) and boto3's `invoke_model` with the Amazon Titan text embeddings v2
and Cohere embed bodies, all on all-MiniLM-L6-v2, all agreeing with each other."""

from __future__ import annotations

import json
import math

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY_ID, MINILM, SECRET_ACCESS_KEY

PAIR = ["A man is eating food.", "A man is eating a piece of bread."]


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture()
def runtime(server):
    return boto3.client("bedrock-runtime", endpoint_url=server.base_url, region_name="us-east-1",
                        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
                        config=Config(retries={"max_attempts": 1}))


def test_openai_embeddings(client):
    r = client.embeddings.create(model=MINILM, input=PAIR)
    assert [d.index for d in r.data] == [0, 1]
    a, b = r.data[0].embedding, r.data[1].embedding
    assert len(a) == 384
    assert abs(cosine(a, b) - 0.755) < 0.001
    assert abs(math.sqrt(sum(x * x for x in a)) - 1.0) < 1e-4
    assert r.usage.prompt_tokens == r.usage.total_tokens == 19
    floats = client.embeddings.create(model=MINILM, input=PAIR[0], encoding_format="float")
    assert max(abs(x - y) for x, y in zip(floats.data[0].embedding, a)) < 1e-6
    assert MINILM in {m.id for m in client.models.list()}


def test_titan_and_cohere_bodies(runtime, client):
    reference = client.embeddings.create(model=MINILM, input=PAIR[0], encoding_format="float").data[0].embedding
    r = runtime.invoke_model(modelId=MINILM, body=json.dumps({"inputText": PAIR[0], "dimensions": 384, "normalize": True}))
    titan = json.loads(r["body"].read())
    assert titan["inputTextTokenCount"] == 8
    assert max(abs(x - y) for x, y in zip(titan["embedding"], reference)) < 1e-6

    r = runtime.invoke_model(modelId=MINILM, body=json.dumps({"texts": PAIR, "input_type": "search_document"}))
    cohere = json.loads(r["body"].read())
    assert cohere["response_type"] == "embeddings_floats" and cohere["texts"] == PAIR
    assert abs(cosine(*cohere["embeddings"]) - 0.755) < 0.001

    with pytest.raises(ClientError) as e:
        runtime.invoke_model(modelId=MINILM, body=json.dumps({"inputText": "x", "dimensions": 1024}))
    assert e.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as e:
        runtime.invoke_model(modelId=MINILM, body=json.dumps({"texts": ["word " * 400], "input_type": "search_query", "truncate": "NONE"}))
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_embedding_models_are_in_the_catalog(server):
    bedrock = boto3.client("bedrock", endpoint_url=server.base_url, region_name="us-east-1",
                           aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY)
    models = bedrock.list_foundation_models(byOutputModality="EMBEDDING")["modelSummaries"]
    assert [m["modelId"] for m in models] == [MINILM]
    assert models[0]["inputModalities"] == ["TEXT"] and models[0]["responseStreamingSupported"] is False
