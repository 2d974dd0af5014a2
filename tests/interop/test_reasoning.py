"""A thinking model's reasoning, through the three APIs with their own SDKs.

The model: SmolLM2 with a DeepSeek-R1-style chat template (made with gguf's own
`gguf-new-metadata`, the tool users change templates with) that opens a `<think>` block at
the end of the prompt unless `enable_thinking` is false, as Qwen 3's does. The answer then
starts inside the block: all of SmolLM2's greedy text is reasoning, which each API must
return in its reasoning field (OpenAI's `reasoning_content`, Anthropic's `thinking`
blocks, Bedrock's `reasoningContent`) and never as the answer. Where the block closes and
the answer begins is covered by the engine's unit tests (`crates/engine/src/reasoning.rs`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import anthropic
import boto3
import pytest
from botocore.config import Config
from openai import BadRequestError, OpenAI

from conftest import ACCESS_KEY_ID, API_KEY, SECRET_ACCESS_KEY, SMOL, Server

THINKER = "test.smollm2-thinking-v1:0"
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)
ALWAYS = "test.smollm2-always-thinks-v1:0"
# DeepSeek-R1's way: the block is opened whatever the caller asked, and past reasoning is cut
# from earlier answers at `</think>`.
ALWAYS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'].split('</think>')[-1] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
QUESTION = "What is the capital of France?"


def models_root() -> Path:
    if os.environ.get("BASALT_MODELS_DIR"):
        return Path(os.environ["BASALT_MODELS_DIR"])
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local/share")
    return Path(data) / "basalt/models"


@pytest.fixture(scope="module")
def thinker():
    work = Path(tempfile.mkdtemp(prefix="basalt-thinker-"))
    source = models_root() / "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    store = work / "models"
    for model_id, text in ((THINKER, TEMPLATE), (ALWAYS, ALWAYS_TEMPLATE)):
        template = work / f"{model_id}.jinja"
        template.write_text(text)
        gguf_file = work / f"{model_id}.gguf"
        subprocess.run(
            [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(source), str(gguf_file),
             "--chat-template-file", str(template), "--force"],
            check=True, capture_output=True,
        )
        subprocess.run(
            [os.environ.get("BASALT_BIN", "target/debug/basalt"), "models", "import",
             str(gguf_file), "--id", model_id, "--provider", "Test", "--models-dir", str(store)],
            check=True, capture_output=True,
        )
    s = Server(models=[THINKER, ALWAYS], models_dir=str(store))
    yield s
    s.stop()


def openai_client(server) -> OpenAI:
    return OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY)


def test_openai_returns_reasoning_apart_from_the_answer(thinker):
    client = openai_client(thinker)
    messages = [{"role": "user", "content": QUESTION}]
    r = client.chat.completions.create(model=THINKER, messages=messages, max_tokens=24,
                                       temperature=0)
    message = r.choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    assert reasoning.strip(), r
    assert message.content == ""
    assert "<think>" not in reasoning
    # The block never closed, so every token was reasoning (the end token too).
    assert r.usage.completion_tokens_details.reasoning_tokens == r.usage.completion_tokens > 0

    # Streamed, the same greedy text arrives as reasoning deltas.
    streamed, content = "", ""
    for chunk in client.chat.completions.create(model=THINKER, messages=messages, max_tokens=24,
                                                temperature=0, stream=True):
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            streamed += extra.get("reasoning_content") or ""
            content += choice.delta.content or ""
    assert streamed == reasoning
    assert content == ""


def test_reasoning_switched_off_leaves_an_answer(thinker):
    client = openai_client(thinker)
    messages = [{"role": "user", "content": QUESTION}]
    for extra in ({"reasoning_effort": "none"},
                  {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}):
        r = client.chat.completions.create(model=THINKER, messages=messages, max_tokens=16,
                                           temperature=0, **extra)
        message = r.choices[0].message
        assert (message.model_extra or {}).get("reasoning_content") is None, extra
        assert message.content.strip(), extra
        assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_anthropic_returns_thinking_blocks(thinker):
    client = anthropic.Anthropic(base_url=thinker.base_url, api_key=API_KEY)
    # The 2.x SDK takes `temperature` only through `extra_body`.
    kwargs = dict(model=THINKER, max_tokens=24, extra_body={"temperature": 0},
                  messages=[{"role": "user", "content": QUESTION}],
                  thinking={"type": "enabled", "budget_tokens": 1024})
    m = client.messages.create(**kwargs)
    assert m.content[0].type == "thinking"
    thinking = m.content[0].thinking
    assert thinking.strip()
    assert all(b.type != "text" or b.text == "" for b in m.content[1:])

    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking"
    assert final.content[0].thinking == thinking

    # The thinking block sent back with the next turn, as Anthropic asks, is accepted.
    follow = client.messages.create(
        model=THINKER, max_tokens=4, extra_body={"temperature": 0},
        thinking={"type": "disabled"},
        messages=[{"role": "user", "content": QUESTION},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "thinking": thinking, "signature": ""},
                      {"type": "text", "text": "Paris."}]},
                  {"role": "user", "content": "And of Italy?"}])
    assert follow.content[0].type == "text"


def bedrock(server):
    return boto3.client(
        "bedrock-runtime", endpoint_url=server.base_url, region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 0}),
    )


def test_bedrock_converse_returns_reasoning_content(thinker):
    client = bedrock(thinker)
    kwargs = dict(modelId=THINKER,
                  messages=[{"role": "user", "content": [{"text": QUESTION}]}],
                  inferenceConfig={"maxTokens": 24, "temperature": 0})
    r = client.converse(**kwargs)
    blocks = r["output"]["message"]["content"]
    reasoning = blocks[0]["reasoningContent"]["reasoningText"]["text"]
    assert reasoning.strip()

    streamed = ""
    for event in client.converse_stream(**kwargs)["stream"]:
        delta = event.get("contentBlockDelta", {}).get("delta", {})
        streamed += delta.get("reasoningContent", {}).get("text", "")
        assert "text" not in delta or delta["text"] == ""
    assert streamed == reasoning

    off = client.converse(**kwargs, additionalModelRequestFields={"thinking": {"type": "disabled"}})
    content = off["output"]["message"]["content"]
    assert "reasoningContent" not in content[0]
    assert content[0]["text"].strip()

    # Reasoning sent back in the conversation is accepted.
    again = client.converse(
        modelId=THINKER, inferenceConfig={"maxTokens": 4},
        messages=[{"role": "user", "content": [{"text": QUESTION}]},
                  {"role": "assistant", "content": [
                      {"reasoningContent": {"reasoningText": {"text": reasoning}}},
                      {"text": "Paris."}]},
                  {"role": "user", "content": [{"text": "And of Italy?"}]}])
    assert again["stopReason"] in ("max_tokens", "end_turn")


def test_a_model_that_does_not_think_refuses_to(client):
    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model=SMOL, max_tokens=4, reasoning_effort="high",
                                       messages=[{"role": "user", "content": "hi"}])
    assert "does not think" in str(e.value)


def test_a_template_that_always_thinks_still_gives_reasoning_apart(thinker):
    """Switched off, a template that opens the block regardless still makes the model
    think: its reasoning must not land in the answer."""
    r = openai_client(thinker).chat.completions.create(
        model=ALWAYS, messages=[{"role": "user", "content": QUESTION}], max_tokens=16,
        temperature=0, reasoning_effort="none")
    message = r.choices[0].message
    assert message.model_extra["reasoning_content"].strip()
    assert message.content == ""
