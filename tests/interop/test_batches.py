"""OpenAI files and batches through the official `openai` SDK: uploads, listing, content and
deletion; a batch run end to end (chat completions and embeddings) with its output and error
files; bad lines failing alone; cancelling; and a job that survives `kill -9` of its server
with every record answered exactly once."""

from __future__ import annotations

import json
import time

import openai
import pytest

from conftest import API_KEY, OPERATOR_KEYS, SMOL, Server

EMBED = "sentence-transformers.all-minilm-l6-v2-v1:0"
SYSTEM = "You are a helpful assistant."


def chat_line(custom_id: str, question: str, max_tokens: int = 16) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": SMOL, "temperature": 0, "max_tokens": max_tokens,
                     "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]}}


def jsonl(lines: list) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def wait(client, batch_id: str, done=("completed", "failed", "cancelled"), timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.status in done:
            return b
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} still {b.status}")


def lines_of(client, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(l) for l in client.files.content(file_id).text.splitlines() if l.strip()]


def test_files_round_trip(client):
    data = jsonl([chat_line("a", "Hi")])
    f = client.files.create(file=("input.jsonl", data), purpose="batch")
    assert (f.object, f.purpose, f.bytes, f.filename) == ("file", "batch", len(data), "input.jsonl")
    assert f.id.startswith("file-") and f.status == "processed"
    assert client.files.retrieve(f.id).model_dump() == f.model_dump()
    assert client.files.content(f.id).content == data
    assert f.id in {x.id for x in client.files.list(purpose="batch")}
    assert f.id not in {x.id for x in client.files.list(purpose="user_data")}
    assert client.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(f.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("x.txt", b"hello"), purpose="no-such-purpose")
    assert e.value.body["param"] == "purpose"


def test_a_batch_of_chat_completions_end_to_end(client):
    records = [chat_line(f"q{i}", q) for i, q in enumerate(
        ["What is the capital of France?", "What is 2 + 2?", "Name a colour.", "Say hello."])]
    bad = [b"{not json", json.dumps({**chat_line("wrong-url", "x"), "url": "/v1/embeddings"}).encode(),
           json.dumps({**chat_line("streams", "x"), "body": {**chat_line("s", "x")["body"], "stream": True}}).encode(),
           json.dumps(chat_line("q0", "a duplicate id")).encode(),
           json.dumps({**chat_line("no-model", "x"), "body": {**chat_line("m", "x")["body"], "model": "nope"}}).encode()]
    f = client.files.create(file=("batch.jsonl", jsonl(records[:2] + bad + records[2:])), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                              metadata={"job": "interop"})
    assert b.status in ("validating", "in_progress") and b.metadata == {"job": "interop"}
    b = wait(client, b.id)
    assert b.status == "completed", b
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (9, 4, 5)
    assert b.completed_at and b.in_progress_at and b.finalizing_at
    out = lines_of(client, b.output_file_id)
    assert [o["custom_id"] for o in out] == ["q0", "q1", "q2", "q3"]
    for o in out:
        assert o["response"]["status_code"] == 200 and o["error"] is None
        assert o["response"]["body"]["object"] == "chat.completion"
        assert o["response"]["request_id"] == o["response"]["body"]["id"]
    assert "Paris" in out[0]["response"]["body"]["choices"][0]["message"]["content"]
    errors = lines_of(client, b.error_file_id)
    assert len(errors) == 5
    by_id = {e["custom_id"]: e for e in errors}
    assert by_id[None]["error"]["code"] == "invalid_request"
    assert "endpoint" in by_id["wrong-url"]["error"]["message"]
    assert "stream" in by_id["streams"]["error"]["message"]
    assert by_id["q0"]["error"]["code"] == "duplicate_custom_id"
    assert by_id["no-model"]["response"]["status_code"] == 404
    assert by_id["no-model"]["response"]["body"]["error"]["code"] == "model_not_found"
    assert client.files.retrieve(b.output_file_id).purpose == "batch_output"
    assert b.id in {x.id for x in client.batches.list()}


def test_a_batch_of_embeddings(client):
    records = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
                "body": {"model": EMBED, "input": text}} for i, text in enumerate(["a cat", "a dog", "a car"])]
    f = client.files.create(file=("emb.jsonl", jsonl(records)), purpose="batch")
    b = wait(client, client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings",
                                           completion_window="24h").id)
    assert b.status == "completed" and b.request_counts.completed == 3
    out = lines_of(client, b.output_file_id)
    assert [len(o["response"]["body"]["data"][0]["embedding"]) for o in out] == [384] * 3


def test_bad_batches_are_refused(client):
    f = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    for kwargs, param in [
        ({"input_file_id": f.id, "endpoint": "/v1/chat/completions"}, "input_file_id"),
        ({"input_file_id": f.id, "endpoint": "/v1/images/generations"}, "endpoint"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            client.batches.create(completion_window="24h", **kwargs)
        assert e.value.body["param"] == param
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")


def test_a_cancelled_batch_stops_and_keeps_what_finished(client):
    records = [chat_line(f"c{i}", "Tell me a long story about the sea.", max_tokens=200) for i in range(40)]
    f = client.files.create(file=("long.jsonl", jsonl(records)), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait(client, b.id, done=("in_progress",))
    started = time.time()
    assert client.batches.cancel(b.id).status == "cancelling"
    b = wait(client, b.id, done=("cancelled",), timeout=30)
    assert time.time() - started < 10
    assert b.request_counts.total == 40 and b.request_counts.completed < 40 and b.cancelled_at
    assert len(lines_of(client, b.output_file_id)) == b.request_counts.completed
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(b.id)


def test_a_batch_survives_kill_9_of_its_server():
    first = Server(models=[SMOL])
    oai = lambda s: openai.OpenAI(base_url=s.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
    client = oai(first)
    records = [chat_line(f"k{i}", f"Count from {i} to {i + 5}.", max_tokens=24) for i in range(24)]
    f = client.files.create(file=("k.jsonl", jsonl(records)), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.time() + 120
    while client.batches.retrieve(b.id).request_counts.completed < 3:
        assert time.time() < deadline, "the batch made no progress"
        time.sleep(0.1)
    first.proc.kill()  # SIGKILL: no shutdown, records in flight are lost mid-generation
    first.proc.wait()
    second = Server(models=[SMOL], data_dir=first.data_dir)
    try:
        client = oai(second)
        b = wait(client, b.id)
        assert b.status == "completed", b
        assert (b.request_counts.total, b.request_counts.completed) == (24, 24)
        out = lines_of(client, b.output_file_id)
        assert sorted(o["custom_id"] for o in out) == sorted(r["custom_id"] for r in records)
        assert [o["custom_id"] for o in out] == [r["custom_id"] for r in records]  # input order
    finally:
        assert second.stop() == 0


def test_an_upload_over_the_file_limit_is_refused():
    server = Server(models=[SMOL], args=[*OPERATOR_KEYS, "--max-file-mb", "1"])
    try:
        c = openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as e:
            c.files.create(file=("big.jsonl", b"x" * (3 << 20)), purpose="batch")
        assert e.value.status_code == 413, e.value
        assert "larger than the server accepts (1024 KiB)" in e.value.message, e.value.message
        # Nothing of it was kept, and a file under the limit still goes in.
        assert [f.filename for f in c.files.list()] == []
        small = c.files.create(file=("small.jsonl", jsonl([chat_line("a", "Hi")])), purpose="batch")
        assert [f.id for f in c.files.list()] == [small.id]
    finally:
        assert server.stop() == 0, server.logs()
