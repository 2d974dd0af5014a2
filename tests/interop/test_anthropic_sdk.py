"""The official `anthropic` Python SDK against a running Basalt: messages (plain and
streaming), count_tokens, and errors.

The 2.x SDK no longer takes `temperature` as an argument; it still goes on the wire through
`extra_body`, which is how these tests make decoding greedy and the answers deterministic."""

from __future__ import annotations

import anthropic
import pytest

from conftest import API_KEY, GEMMA, SMOL

SYSTEM = "You are a helpful assistant."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture()
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)


def test_message(claude):
    m = claude.messages.create(model=SMOL, max_tokens=32, system=SYSTEM, messages=QUESTION, extra_body={"temperature": 0})
    assert m.role == "assistant"
    assert "Paris" in m.content[0].text
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


def test_message_stream(claude):
    with claude.messages.stream(model=SMOL, max_tokens=32, system=SYSTEM, messages=QUESTION, extra_body={"temperature": 0}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Paris" in text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_stop_sequences_and_max_tokens(claude):
    m = claude.messages.create(model=SMOL, max_tokens=4, messages=[{"role": "user", "content": "Tell me a long story."}])
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 4


def test_count_tokens(claude, server):
    counted = claude.messages.count_tokens(model=SMOL, system=SYSTEM, messages=QUESTION)
    m = claude.messages.create(model=SMOL, max_tokens=1, system=SYSTEM, messages=QUESTION)
    assert counted.input_tokens == m.usage.input_tokens


def test_cache_control_writes_then_reads_the_prompt_cache(claude):
    system = [{"type": "text", "cache_control": {"type": "ephemeral"},
               "text": "You answer questions about the Anthropic cache test. " + " ".join(
                   f"Guideline {i}: keep answers short." for i in range(12))}]
    first = claude.messages.create(model=SMOL, max_tokens=4, system=system, messages=QUESTION).usage
    assert first.cache_creation_input_tokens >= 64 and first.cache_read_input_tokens == 0, first
    again = [{"role": "user", "content": "And the capital of Spain?"}]
    second = claude.messages.create(model=SMOL, max_tokens=4, system=system, messages=again).usage
    assert second.cache_creation_input_tokens == 0, second
    assert second.cache_read_input_tokens >= first.cache_creation_input_tokens, (first, second)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model=SMOL, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral", "ttl": "2d"}}]}])


def test_errors(claude):
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="nope.nothing-v1:0", max_tokens=4, messages=QUESTION)
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model=GEMMA, max_tokens=4, messages=QUESTION)
    assert "chat template" in str(e.value)
