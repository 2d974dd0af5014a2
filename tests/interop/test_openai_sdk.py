"""The official `openai` Python SDK against a running Basalt: model listing, chat (plain and
streaming), completions (plain and streaming), errors, and graceful shutdown."""

from __future__ import annotations

import threading

import openai
import pytest

from conftest import API_KEY, GEMMA, SMOL, Server

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_lists_models(client):
    ids = {m.id for m in client.models.list()}
    assert {SMOL, GEMMA} <= ids
    assert client.models.retrieve(SMOL).owned_by == "Hugging Face"


def test_chat(client):
    r = client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0, max_tokens=32)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0


def test_chat_stream(client):
    stream = client.chat.completions.create(
        model=SMOL, messages=QUESTION, temperature=0, max_tokens=32, stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert "Paris" in text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_completion(client):
    r = client.completions.create(model=GEMMA, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.choices[0].text.strip()
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8


def test_completion_stream_with_logprobs(client):
    stream = client.completions.create(
        model=GEMMA, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True, logprobs=2,
    )
    pieces = [c.choices[0].text for c in stream if c.choices]
    assert "".join(pieces).strip()


def test_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope.nothing-v1:0", messages=QUESTION)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=GEMMA, messages=QUESTION)
    assert "chat template" in e.value.body["message"]


def test_sigterm_lets_in_flight_streams_finish():
    from openai import OpenAI

    s = Server()
    try:
        c = OpenAI(base_url=s.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
        stream = c.chat.completions.create(
            model=SMOL, messages=[{"role": "user", "content": "Write a long poem."}], max_tokens=64,
            temperature=0.7, seed=1, stream=True,
        )
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        threading.Timer(0.05, lambda: s.proc.send_signal(15)).start()
        finish = None
        for chunk in stream:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
        assert finish in ("stop", "length")
        assert s.proc.wait(timeout=30) == 0, s.logs()
    finally:
        s.stop()


def test_repeated_prompts_report_cached_tokens(client):
    # A system prompt long enough to span several 16-token KV blocks.
    messages = [{"role": "system", "content": "You are a terse assistant for a paint shop. You answer questions "
                                              "about colours, pigments and mixing in a few words, never more."},
                {"role": "user", "content": "Name three primary colours."}]
    first = client.chat.completions.create(model=SMOL, messages=messages, max_tokens=8, temperature=0)
    second = client.chat.completions.create(model=SMOL, messages=messages, max_tokens=8, temperature=0)
    assert second.choices[0].message.content == first.choices[0].message.content
    cached = second.usage.prompt_tokens_details.cached_tokens
    # Whole blocks, short of the one holding the last prompt token (its logits start the answer).
    assert cached == (second.usage.prompt_tokens - 1) // 16 * 16, second.usage
    assert cached >= 32
