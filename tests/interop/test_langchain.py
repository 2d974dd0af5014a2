"""LangChain's Bedrock chat class (`langchain_aws.ChatBedrockConverse`) against Basalt with
only the endpoint changed: invoke, stream, structured output and tool calls.

LangChain decides per model id what a Bedrock model can do; for ids it does not know it
assumes no tool choice and no streaming, so the test declares them, as a user would."""

from __future__ import annotations

from langchain_aws import ChatBedrockConverse
from pydantic import BaseModel, Field

from conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY, SMOL


class Weather(BaseModel):
    """The weather in a city."""

    city: str = Field(description="the city")
    unit: str = Field(description="celsius or fahrenheit")


def chat(server) -> ChatBedrockConverse:
    return ChatBedrockConverse(
        model=SMOL, endpoint_url=server.base_url, region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
        temperature=0, max_tokens=64, supports_tool_choice_values=("auto", "any", "tool"),
        disable_streaming=False,
    )


def test_invoke_and_stream(server):
    llm = chat(server)
    r = llm.invoke([("system", "You are a helpful assistant."), ("human", "What is the capital of France?")])
    assert "Paris" in r.text
    assert r.usage_metadata["input_tokens"] > 0 and r.usage_metadata["output_tokens"] > 0
    chunks = list(llm.stream("Say hello."))
    assert len(chunks) > 3 and "".join(c.text for c in chunks).strip()


def test_structured_output_and_tool_calls(server):
    llm = chat(server)
    weather = llm.with_structured_output(Weather).invoke("What's the weather in Paris?")
    assert isinstance(weather, Weather) and weather.city
    message = llm.bind_tools([Weather], tool_choice="Weather").invoke("What's the weather in Oslo?")
    call = message.tool_calls[0]
    assert call["name"] == "Weather"
    Weather(**call["args"])
