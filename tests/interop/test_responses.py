"""OpenAI's Responses API through the official `openai` SDK: plain and streamed answers,
conversations continued with `previous_response_id`, function tools and their outputs,
structured output, storage (retrieve, input items, delete, `store: false`), truncation, and
Bedrock's `/openai/v1` and `/anthropic/v1` prefixes with the official SDKs."""

from __future__ import annotations

import json
import re
import time

import anthropic
import httpx
import openai
import pytest

from conftest import API_KEY, GEMMA, SMOL

ASK = "What is the capital of France?"
SYSTEM = "You are a helpful assistant."
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}


def test_a_plain_response(client):
    r = client.responses.create(model=SMOL, input=ASK, instructions=SYSTEM, temperature=0, max_output_tokens=32)
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert "Paris" in r.output_text
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.instructions == SYSTEM and r.store is True
    # The stored response is the one returned.
    assert client.responses.retrieve(r.id).model_dump() == r.model_dump()


def test_a_streamed_response_tells_the_same_answer(client):
    stream = client.responses.create(model=SMOL, input=ASK, instructions=SYSTEM, temperature=0,
                                     max_output_tokens=32, stream=True)
    events = list(stream)
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert "Paris" in deltas and final.output_text == deltas and final.status == "completed"
    assert client.responses.retrieve(final.id).output_text == deltas


def test_the_sdk_stream_helper(client):
    with client.responses.stream(model=SMOL, input=ASK, instructions=SYSTEM, temperature=0,
                                 max_output_tokens=32) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert "Paris" in text and final.output_text == text


def test_previous_response_id_continues_the_conversation(client):
    first = client.responses.create(model=SMOL, input="My name is Ada. Remember it.", instructions=SYSTEM,
                                    temperature=0, max_output_tokens=24)
    second = client.responses.create(model=SMOL, input="What is my name?", previous_response_id=first.id,
                                     temperature=0, max_output_tokens=24)
    assert second.previous_response_id == first.id
    # (SmolLM2-135M is too small to be relied on to recall the name; what it read is checked.)
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    # The second response's model read the first exchange, then the new question.
    items = client.responses.input_items.list(second.id, order="asc")
    texts = [c.text for i in items.data for c in i.content]
    assert texts[0] == "My name is Ada. Remember it." and texts[-1] == "What is my name?"
    assert first.output_text in texts
    newest = client.responses.input_items.list(second.id, limit=1)
    assert newest.data[0].content[0].text == "What is my name?" and newest.has_more


def test_a_function_call_and_its_output(client):
    r = client.responses.create(model=SMOL, input="What is the weather in Paris?", tools=[WEATHER],
                                tool_choice={"type": "function", "name": "get_weather"}, temperature=0)
    call = r.output[-1]
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id
    assert isinstance(json.loads(call.arguments)["city"], str)
    follow = client.responses.create(
        model=SMOL, previous_response_id=r.id, tools=[WEATHER], tool_choice="none", temperature=0,
        max_output_tokens=40,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature_c": 18}'}])
    assert follow.status == "completed" and follow.output[0].type == "message" and follow.output_text


def test_a_streamed_function_call(client):
    events = list(client.responses.create(model=SMOL, input="Weather in Rome?", tools=[WEATHER],
                                          tool_choice="required", temperature=0, stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == args and json.loads(args)["city"]
    assert events[-1].response.output[-1].type == "function_call"


def test_structured_output_follows_the_schema(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    r = client.responses.create(model=SMOL, input="Name the capital of France as JSON.", temperature=0,
                                text={"format": {"type": "json_schema", "name": "capital", "schema": schema}})
    assert set(json.loads(r.output_text)) == {"city", "country"}
    assert r.text.format.type == "json_schema"


def test_length_limits_and_storage(client):
    r = client.responses.create(model=SMOL, input=ASK, max_output_tokens=2, temperature=0)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    unstored = client.responses.create(model=SMOL, input=ASK, max_output_tokens=4, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model=SMOL, input="x", previous_response_id=r.id)
    assert e.value.body["param"] == "previous_response_id"


def test_truncation_auto_drops_the_oldest_items(client):
    # SmolLM2's window is 8,192 tokens and each filler message is ~8,500 on its own: only
    # the question fits, so truncation must drop both fillers (and the prefill stays short).
    filler = [{"role": "user", "content": "lorem ipsum dolor sit amet " * 850} for _ in range(2)]
    conversation = filler + [{"role": "user", "content": ASK}]
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=SMOL, input=conversation, max_output_tokens=16)
    assert e.value.code == "context_length_exceeded"
    r = client.responses.create(model=SMOL, input=conversation, max_output_tokens=16, truncation="auto",
                                temperature=0)
    assert r.status in ("completed", "incomplete") and r.truncation == "auto"
    kept = client.responses.input_items.list(r.id, limit=100).data
    assert [k.content[0].text for k in kept] == [ASK]


def running_sequences(server) -> int:
    metrics = httpx.get(server.base_url + "/metrics", headers={"authorization": f"Bearer {API_KEY}"}).text
    return sum(int(float(v)) for v in re.findall(r"^basalt_running_sequences\{[^}]*\} (\S+)$", metrics, re.M))


def test_a_client_that_leaves_mid_stream_cancels_its_response(client, server):
    stream = client.responses.create(model=SMOL, input="Write a very long story about the sea.",
                                     max_output_tokens=2000, stream=True)
    response_id, deltas = None, 0
    for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        deltas += event.type == "response.output_text.delta"
        if deltas == 3:
            break
    stream.close()
    assert response_id
    # The generation stops with the connection (2000 tokens would run for many seconds).
    deadline = time.time() + 10
    while running_sequences(server) > 0:
        assert time.time() < deadline, "the generation kept running after the client left"
        time.sleep(0.1)
    # Nothing half-finished is stored, and the server serves the next request.
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response_id)
    assert client.responses.create(model=SMOL, input=ASK, max_output_tokens=4).status == "incomplete"


def test_bad_requests_are_openai_errors(client):
    for kwargs, param in [
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]},
         "input[0].content[0]"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "temperature": 5}, "temperature"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ]:
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model=SMOL, **kwargs)
        assert e.value.body["param"] == param, kwargs
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_missing")


def test_bedrock_compatibility_prefixes(server):
    oai = openai.OpenAI(base_url=server.base_url + "/openai/v1", api_key=API_KEY, max_retries=0, timeout=120)
    chat = oai.chat.completions.create(model=SMOL, temperature=0, max_tokens=24, messages=[
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}])
    assert "Paris" in chat.choices[0].message.content
    assert "Paris" in oai.responses.create(model=SMOL, input=ASK, instructions=SYSTEM, temperature=0,
                                           max_output_tokens=24).output_text
    assert {SMOL, GEMMA} <= {m.id for m in oai.models.list()}
    claude = anthropic.Anthropic(base_url=server.base_url + "/anthropic", api_key=API_KEY, max_retries=0,
                                 timeout=120)
    msg = claude.messages.create(model=SMOL, max_tokens=24, system=SYSTEM, extra_body={"temperature": 0},
                                 messages=[{"role": "user", "content": ASK}])
    assert "Paris" in msg.content[0].text
