"""Tool use and structured output through the real SDKs: OpenAI (`tools`, `tool_choice`,
`response_format: json_schema`), Anthropic (`tools`, `tool_choice`, `tool_use` /
`tool_result`, `input_json_delta`) and boto3 Converse (`toolConfig`, `outputConfig`).

SmolLM2-135M is tiny; what makes its calls and JSON parse and validate every time is
constrained decoding, which is what these tests check, at several temperatures."""

from __future__ import annotations

import json

import anthropic
import boto3
import jsonschema
import pytest
from botocore.config import Config

from conftest import ACCESS_KEY_ID, API_KEY, SECRET_ACCESS_KEY, SMOL

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}
WEATHER_QUESTION = "What's the weather in Paris right now?"


def valid_call(name: str, arguments: dict) -> None:
    assert name in SCHEMAS, name
    jsonschema.validate(arguments, SCHEMAS[name])


# --- OpenAI -------------------------------------------------------------------------------

OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": ADD}},
]


@pytest.mark.parametrize("temperature,seed", [(0, 1), (1.0, 2), (1.0, 3)])
def test_openai_required_tool_call(client, temperature, seed):
    r = client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": WEATHER_QUESTION}], tools=OPENAI_TOOLS,
        tool_choice="required", temperature=temperature, seed=seed, max_tokens=120,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    valid_call(call.function.name, json.loads(call.function.arguments))


def test_openai_named_tool_streams_deltas_and_round_trips(client):
    stream = client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "What is 2 plus 40?"}], tools=OPENAI_TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}}, temperature=0, max_tokens=80, stream=True,
    )
    name, call_id, arguments, finish = None, None, "", None
    for chunk in stream:
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                assert d.index == 0
                name = name or (d.function.name if d.function else None)
                call_id = call_id or d.id
                arguments += (d.function.arguments or "") if d.function else ""
            finish = c.finish_reason or finish
    assert finish == "tool_calls" and name == "add" and call_id
    args = json.loads(arguments)
    valid_call("add", args)

    # The tool's result goes back and the model answers in text.
    r = client.chat.completions.create(
        model=SMOL, temperature=0, max_tokens=30, tools=OPENAI_TOOLS,
        messages=[
            {"role": "user", "content": "What is 2 plus 40?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "add", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "42"},
        ],
        tool_choice="none",
    )
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.choices[0].message.content


@pytest.mark.parametrize("temperature,seed", [(0, 1), (1.0, 5)])
def test_openai_json_schema_response_format(client, temperature, seed):
    r = client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Invent a person."}], temperature=temperature, seed=seed,
        max_tokens=150, response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    )
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)


# --- Anthropic ----------------------------------------------------------------------------

ANTHROPIC_TOOLS = [
    {"name": "get_weather", "description": "Current weather in a city", "input_schema": WEATHER},
    {"name": "add", "description": "Add two integers", "input_schema": ADD},
]


@pytest.fixture()
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)


def test_anthropic_tool_use_and_result(claude):
    m = claude.messages.create(
        model=SMOL, max_tokens=120, tools=ANTHROPIC_TOOLS, tool_choice={"type": "any"},
        messages=[{"role": "user", "content": WEATHER_QUESTION}], extra_body={"temperature": 0},
    )
    assert m.stop_reason == "tool_use"
    use = next(b for b in m.content if b.type == "tool_use")
    valid_call(use.name, use.input)

    follow = claude.messages.create(
        model=SMOL, max_tokens=30, tools=ANTHROPIC_TOOLS, tool_choice={"type": "none"}, extra_body={"temperature": 0},
        messages=[
            {"role": "user", "content": WEATHER_QUESTION},
            {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 degrees, sunny"}]},
        ],
    )
    assert follow.content[0].type == "text" and follow.content[0].text


def test_anthropic_streams_input_json_deltas(claude):
    with claude.messages.stream(
        model=SMOL, max_tokens=120, tools=ANTHROPIC_TOOLS, tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": WEATHER_QUESTION}], extra_body={"temperature": 1.0},
    ) as stream:
        partial = "".join(e.partial_json for e in stream if e.type == "input_json")
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    use = final.content[0]
    assert use.type == "tool_use" and use.name == "get_weather"
    assert json.loads(partial) == use.input
    valid_call("get_weather", use.input)


def test_anthropic_count_tokens_counts_the_tools(claude):
    plain = claude.messages.count_tokens(model=SMOL, messages=[{"role": "user", "content": WEATHER_QUESTION}])
    with_tools = claude.messages.count_tokens(model=SMOL, tools=ANTHROPIC_TOOLS, messages=[{"role": "user", "content": WEATHER_QUESTION}])
    assert with_tools.input_tokens > plain.input_tokens + 50


# --- Bedrock Converse ---------------------------------------------------------------------

BEDROCK_TOOLS = {
    "tools": [
        {"toolSpec": {"name": "get_weather", "description": "Current weather in a city", "inputSchema": {"json": WEATHER}}},
        {"toolSpec": {"name": "add", "description": "Add two integers", "inputSchema": {"json": ADD}}},
    ],
    "toolChoice": {"any": {}},
}


@pytest.fixture()
def runtime(server):
    return boto3.client(
        "bedrock-runtime", endpoint_url=server.base_url, region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}, read_timeout=120),
    )


def test_converse_tool_use_round_trip(runtime):
    question = [{"role": "user", "content": [{"text": WEATHER_QUESTION}]}]
    r = runtime.converse(modelId=SMOL, messages=question, toolConfig=BEDROCK_TOOLS,
                         inferenceConfig={"maxTokens": 120, "temperature": 0})
    assert r["stopReason"] == "tool_use"
    use = next(b["toolUse"] for b in r["output"]["message"]["content"] if "toolUse" in b)
    valid_call(use["name"], use["input"])

    follow = runtime.converse(
        modelId=SMOL, toolConfig={"tools": BEDROCK_TOOLS["tools"]}, inferenceConfig={"maxTokens": 30, "temperature": 0},
        messages=question + [
            {"role": "assistant", "content": [{"toolUse": use}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": use["toolUseId"], "content": [{"json": {"temp_c": 21}}]}}]},
        ],
    )
    assert follow["stopReason"] in ("end_turn", "max_tokens", "tool_use")


def test_converse_stream_tool_use_deltas(runtime):
    r = runtime.converse_stream(
        modelId=SMOL, messages=[{"role": "user", "content": [{"text": "Add 7 and 8."}]}],
        toolConfig={**BEDROCK_TOOLS, "toolChoice": {"tool": {"name": "add"}}},
        inferenceConfig={"maxTokens": 80, "temperature": 1.0},
    )
    events = list(r["stream"])
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "add" and start["start"]["toolUse"]["toolUseId"]
    partial = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e)
    valid_call("add", json.loads(partial))
    assert next(e["messageStop"] for e in events if "messageStop" in e)["stopReason"] == "tool_use"


def test_converse_output_config_json_schema(runtime):
    r = runtime.converse(
        modelId=SMOL, messages=[{"role": "user", "content": [{"text": "Invent a person."}]}],
        inferenceConfig={"maxTokens": 150, "temperature": 1.0},
        outputConfig={"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": json.dumps(PERSON), "name": "person"}}}},
    )
    jsonschema.validate(json.loads(r["output"]["message"]["content"][0]["text"]), PERSON)


def test_count_tokens_includes_tool_config(runtime):
    question = [{"role": "user", "content": [{"text": WEATHER_QUESTION}]}]
    plain = runtime.count_tokens(modelId=SMOL, input={"converse": {"messages": question}})["inputTokens"]
    with_tools = runtime.count_tokens(modelId=SMOL, input={"converse": {"messages": question, "toolConfig": BEDROCK_TOOLS}})["inputTokens"]
    r = runtime.converse(modelId=SMOL, messages=question, toolConfig=BEDROCK_TOOLS, inferenceConfig={"maxTokens": 100})
    assert with_tools > plain
    assert r["usage"]["inputTokens"] == with_tools
