"""Bedrock Guardrails through boto3: the control plane (`bedrock` client: create, get, list,
update, version, delete), `apply_guardrail`, and `guardrailConfig` on `converse` and
`converse_stream` (sync and async), with the traces boto3 users read."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from test_bedrock_boto3 import GREEDY, QUESTION, SYSTEM, client, error_code
from conftest import SMOL

BLOCKED_IN = "Sorry, I cannot help with that."
BLOCKED_OUT = "Sorry, the answer was withheld."


def definition(name: str, **policies) -> dict:
    return {"name": name, "blockedInputMessaging": BLOCKED_IN,
            "blockedOutputsMessaging": BLOCKED_OUT, **policies}


PII_AND_WORDS = {
    "wordPolicyConfig": {"wordsConfig": [{"text": "project phoenix"}]},
    "sensitiveInformationPolicyConfig": {
        "piiEntitiesConfig": [
            {"type": "EMAIL", "action": "ANONYMIZE"},
            {"type": "CREDIT_DEBIT_CARD_NUMBER", "action": "BLOCK"},
        ],
        "regexesConfig": [{"name": "ticket", "pattern": r"TCK-\d{4}", "action": "ANONYMIZE"}],
    },
}
# Masks the city the model names, on output only: greedy SmolLM2 answers the QUESTION with it.
CITY_ON_OUTPUT = {
    "sensitiveInformationPolicyConfig": {
        "regexesConfig": [{"name": "city", "pattern": "Paris", "action": "ANONYMIZE",
                           "inputEnabled": False}],
    },
}


@pytest.fixture(scope="module")
def control(server):
    return client(server, service="bedrock")


@pytest.fixture()
def runtime(server):
    return client(server)


@pytest.fixture(scope="module")
def pii_guardrail(control):
    g = control.create_guardrail(**definition("interop-pii", **PII_AND_WORDS))
    yield g
    control.delete_guardrail(guardrailIdentifier=g["guardrailId"])


@pytest.fixture(scope="module")
def city_guardrail(control):
    g = control.create_guardrail(**definition("interop-city", **CITY_ON_OUTPUT))
    yield g
    control.delete_guardrail(guardrailIdentifier=g["guardrailId"])


def test_guardrail_lifecycle(control):
    created = control.create_guardrail(**definition("interop-lifecycle", description="first", **PII_AND_WORDS))
    gid = created["guardrailId"]
    assert created["version"] == "DRAFT"
    assert created["guardrailArn"].endswith(f":guardrail/{gid}")
    got = control.get_guardrail(guardrailIdentifier=created["guardrailArn"])
    assert got["status"] == "READY" and got["name"] == "interop-lifecycle"
    assert got["sensitiveInformationPolicy"]["piiEntities"][0] == {"type": "EMAIL", "action": "ANONYMIZE"}
    assert got["wordPolicy"]["words"] == [{"text": "project phoenix"}]
    assert got["blockedOutputsMessaging"] == BLOCKED_OUT

    assert control.create_guardrail_version(guardrailIdentifier=gid, description="v1")["version"] == "1"
    control.update_guardrail(guardrailIdentifier=gid, **definition("interop-lifecycle", **CITY_ON_OUTPUT))
    # Version 1 is a snapshot; the draft changed.
    assert "wordPolicy" in control.get_guardrail(guardrailIdentifier=gid, guardrailVersion="1")
    assert "wordPolicy" not in control.get_guardrail(guardrailIdentifier=gid)
    versions = control.list_guardrails(guardrailIdentifier=gid)["guardrails"]
    assert [v["version"] for v in versions] == ["DRAFT", "1"]
    assert gid in {g["id"] for g in control.list_guardrails()["guardrails"]}

    control.delete_guardrail(guardrailIdentifier=gid, guardrailVersion="1")
    with pytest.raises(ClientError) as e:
        control.get_guardrail(guardrailIdentifier=gid, guardrailVersion="1")
    assert error_code(e) == "ResourceNotFoundException"
    control.delete_guardrail(guardrailIdentifier=gid)
    with pytest.raises(ClientError) as e:
        control.get_guardrail(guardrailIdentifier=gid)
    assert error_code(e) == "ResourceNotFoundException"


def test_bad_guardrails_are_validation_errors(control):
    for policies in [
        {"sensitiveInformationPolicyConfig": {"regexesConfig": [{"name": "r", "pattern": "(", "action": "BLOCK"}]}},
        {"contentPolicyConfig": {"filtersConfig": [{"type": "HATE", "inputStrength": "HIGH", "outputStrength": "HIGH"}]}},
        {"sensitiveInformationPolicyConfig": {"piiEntitiesConfig": [{"type": "NAME", "action": "ANONYMIZE"}]}},
    ]:
        with pytest.raises(ClientError) as e:
            control.create_guardrail(**definition("interop-bad", **policies))
        assert error_code(e) == "ValidationException", policies
    control.create_guardrail(**definition("interop-dupe"))
    with pytest.raises(ClientError) as e:
        control.create_guardrail(**definition("interop-dupe"))
    assert error_code(e) == "ValidationException"


def test_apply_guardrail(runtime, pii_guardrail):
    apply = lambda text, source="INPUT": runtime.apply_guardrail(
        guardrailIdentifier=pii_guardrail["guardrailId"], guardrailVersion="DRAFT",
        source=source, content=[{"text": {"text": text}}])
    masked = apply("Write to jane.doe@example.com about TCK-1234.")
    assert masked["action"] == "GUARDRAIL_INTERVENED"
    assert masked["outputs"] == [{"text": "Write to {EMAIL} about {ticket}."}]
    pii = masked["assessments"][0]["sensitiveInformationPolicy"]
    assert pii["piiEntities"] == [{"match": "jane.doe@example.com", "type": "EMAIL", "action": "ANONYMIZED", "detected": True}]
    assert pii["regexes"][0]["match"] == "TCK-1234"
    assert masked["usage"]["sensitiveInformationPolicyUnits"] == 1

    blocked = apply("My card is 4111 1111 1111 1111, and Project Phoenix ships.", source="OUTPUT")
    assert blocked["action"] == "GUARDRAIL_INTERVENED"
    assert blocked["outputs"] == [{"text": BLOCKED_OUT}]
    words = blocked["assessments"][0]["wordPolicy"]["customWords"]
    assert words == [{"match": "Project Phoenix", "action": "BLOCKED", "detected": True}]

    clean = apply("What is the capital of France?")
    assert clean["action"] == "NONE" and clean["outputs"] == []

    with pytest.raises(ClientError) as e:
        runtime.apply_guardrail(guardrailIdentifier="nosuchguardrail", guardrailVersion="DRAFT",
                                source="INPUT", content=[{"text": {"text": "x"}}])
    assert error_code(e) == "ResourceNotFoundException"


def test_converse_input_is_blocked_before_the_model(runtime, pii_guardrail):
    r = runtime.converse(
        modelId=SMOL, messages=[{"role": "user", "content": [{"text": "Tell me about Project Phoenix."}]}],
        inferenceConfig=GREEDY,
        guardrailConfig={"guardrailIdentifier": pii_guardrail["guardrailArn"], "guardrailVersion": "DRAFT",
                         "trace": "enabled"})
    assert r["stopReason"] == "guardrail_intervened"
    assert r["output"]["message"]["content"] == [{"text": BLOCKED_IN}]
    assert r["usage"]["outputTokens"] == 0
    assessment = r["trace"]["guardrail"]["inputAssessment"][pii_guardrail["guardrailId"]]
    assert assessment["wordPolicy"]["customWords"][0]["action"] == "BLOCKED"


def test_converse_output_is_masked(runtime, city_guardrail):
    config = {"guardrailIdentifier": city_guardrail["guardrailId"], "guardrailVersion": "DRAFT",
              "trace": "enabled_full"}
    r = runtime.converse(modelId=SMOL, system=SYSTEM, messages=QUESTION, inferenceConfig=GREEDY,
                         guardrailConfig=config)
    text = r["output"]["message"]["content"][0]["text"]
    assert "{city}" in text and "Paris" not in text
    assert r["stopReason"] == "guardrail_intervened"
    trace = r["trace"]["guardrail"]
    assert "Paris" in trace["modelOutput"][0]
    assert trace["outputAssessments"][city_guardrail["guardrailId"]][0]["sensitiveInformationPolicy"]["regexes"][0]["match"] == "Paris"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_converse_stream_with_a_guardrail(runtime, city_guardrail, mode):
    config = {"guardrailIdentifier": city_guardrail["guardrailId"], "guardrailVersion": "DRAFT",
              "trace": "enabled", "streamProcessingMode": mode}
    r = runtime.converse_stream(modelId=SMOL, system=SYSTEM, messages=QUESTION, inferenceConfig=GREEDY,
                                guardrailConfig=config)
    events = list(r["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    if mode == "sync":
        # Held until checked: the city never leaves the server.
        assert "{city}" in text and "Paris" not in text
    else:
        # Released as generated; the verdict comes at the end.
        assert "Paris" in text
    assert events[-2]["messageStop"]["stopReason"] == "guardrail_intervened"
    assert city_guardrail["guardrailId"] in events[-1]["metadata"]["trace"]["guardrail"]["outputAssessments"]


def test_a_guardrail_that_finds_nothing_changes_nothing(runtime, pii_guardrail):
    r = runtime.converse(modelId=SMOL, system=SYSTEM, messages=QUESTION, inferenceConfig=GREEDY,
                         guardrailConfig={"guardrailIdentifier": pii_guardrail["guardrailId"],
                                          "guardrailVersion": "DRAFT"})
    assert r["stopReason"] == "end_turn"
    assert "Paris" in r["output"]["message"]["content"][0]["text"]
    assert "trace" not in r


# The same guardrails on the OpenAI and Anthropic surfaces, selected as InvokeModel selects
# them (Bedrock's guardrail headers) or by a `guardrailConfig` body field (LiteLLM's
# pass-through of Bedrock's Converse field).
CHAT = [{"role": "system", "content": SYSTEM[0]["text"]},
        {"role": "user", "content": QUESTION[0]["content"][0]["text"]}]


def headers(guardrail: dict, trace: str = "ENABLED") -> dict:
    return {"X-Amzn-Bedrock-GuardrailIdentifier": guardrail["guardrailId"],
            "X-Amzn-Bedrock-GuardrailVersion": "DRAFT", "X-Amzn-Bedrock-Trace": trace}


def test_openai_chat_with_a_guardrail(client, city_guardrail, pii_guardrail):
    r = client.chat.completions.create(model=SMOL, messages=CHAT, max_tokens=32, temperature=0,
                                       extra_headers=headers(city_guardrail))
    choice = r.choices[0]
    assert choice.finish_reason == "content_filter"
    assert "{city}" in choice.message.content and "Paris" not in choice.message.content
    extra = r.model_extra
    assert extra["amazon-bedrock-guardrailAction"] == "INTERVENED"
    assert city_guardrail["guardrailId"] in extra["amazon-bedrock-trace"]["guardrail"]["outputAssessments"]

    blocked = client.chat.completions.create(
        model=SMOL, max_tokens=32, temperature=0,
        messages=[{"role": "user", "content": "Tell me about Project Phoenix."}],
        extra_body={"guardrailConfig": {"guardrailIdentifier": pii_guardrail["guardrailArn"],
                                        "guardrailVersion": "DRAFT"}})
    assert blocked.choices[0].message.content == BLOCKED_IN
    assert blocked.choices[0].finish_reason == "content_filter"
    assert blocked.usage.completion_tokens == 0

    clean = client.chat.completions.create(model=SMOL, messages=CHAT, max_tokens=32, temperature=0,
                                           extra_headers=headers(pii_guardrail))
    assert clean.choices[0].finish_reason in ("stop", "length") and "Paris" in clean.choices[0].message.content
    assert clean.model_extra["amazon-bedrock-guardrailAction"] == "NONE"


def test_openai_stream_with_a_guardrail_never_sends_the_masked_text(client, city_guardrail):
    stream = client.chat.completions.create(model=SMOL, messages=CHAT, max_tokens=32, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_headers=headers(city_guardrail))
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "{city}" in text and "Paris" not in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"
    assert chunks[-1].usage.completion_tokens > 0


def test_anthropic_messages_with_a_guardrail(server, city_guardrail, pii_guardrail):
    import anthropic
    from conftest import API_KEY
    claude = anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)
    question = [{"role": "user", "content": QUESTION[0]["content"][0]["text"]}]
    r = claude.messages.create(model=SMOL, system=SYSTEM[0]["text"], messages=question, max_tokens=32,
                               extra_body={"temperature": 0}, extra_headers=headers(city_guardrail))
    assert r.stop_reason == "refusal"
    assert "{city}" in r.content[0].text and "Paris" not in r.content[0].text

    with claude.messages.stream(model=SMOL, system=SYSTEM[0]["text"], messages=question, max_tokens=32,
                                extra_body={"temperature": 0}, extra_headers=headers(city_guardrail)) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "{city}" in text and "Paris" not in text
    assert final.stop_reason == "refusal"

    blocked = claude.messages.create(
        model=SMOL, max_tokens=32, messages=[{"role": "user", "content": "Tell me about Project Phoenix."}],
        extra_body={"guardrailConfig": {"guardrailIdentifier": pii_guardrail["guardrailId"],
                                        "guardrailVersion": "DRAFT"}})
    assert blocked.content[0].text == BLOCKED_IN and blocked.stop_reason == "refusal"
    assert blocked.usage.output_tokens == 0


def test_openai_and_anthropic_guardrail_errors(client, server):
    import openai
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=SMOL, messages=CHAT, max_tokens=4,
                                       extra_headers={"X-Amzn-Bedrock-GuardrailIdentifier": "nosuchguard1",
                                                      "X-Amzn-Bedrock-GuardrailVersion": "DRAFT"})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=SMOL, messages=CHAT, max_tokens=4,
                                       extra_headers={"X-Amzn-Bedrock-GuardrailIdentifier": "nosuchguard1"})


def test_invoke_model_with_guardrail_headers(runtime, city_guardrail, pii_guardrail):
    import json
    body = json.dumps({"prompt": "Q: What is the capital of France?\nA: The capital of France is",
                       "max_gen_len": 8, "temperature": 0})
    plain = json.loads(runtime.invoke_model(modelId=SMOL, body=body)["body"].read())
    assert "Paris" in plain["generation"] and "amazon-bedrock-guardrailAction" not in plain

    r = runtime.invoke_model(modelId=SMOL, body=body, guardrailIdentifier=city_guardrail["guardrailId"],
                             guardrailVersion="DRAFT", trace="ENABLED")
    out = json.loads(r["body"].read())
    assert "{city}" in out["generation"] and "Paris" not in out["generation"]
    assert out["amazon-bedrock-guardrailAction"] == "INTERVENED"
    assert city_guardrail["guardrailId"] in out["amazon-bedrock-trace"]["guardrail"]["outputAssessments"]

    stream = runtime.invoke_model_with_response_stream(
        modelId=SMOL, body=body, guardrailIdentifier=city_guardrail["guardrailId"], guardrailVersion="DRAFT")
    text = "".join(json.loads(e["chunk"]["bytes"])["generation"] for e in stream["body"])
    assert "{city}" in text and "Paris" not in text

    blocked = json.loads(runtime.invoke_model(
        modelId=SMOL, body=json.dumps({"prompt": "Project Phoenix status?", "max_gen_len": 8}),
        guardrailIdentifier=pii_guardrail["guardrailId"], guardrailVersion="DRAFT")["body"].read())
    assert blocked["generation"] == BLOCKED_IN and blocked["generation_token_count"] == 0
    assert blocked["amazon-bedrock-guardrailAction"] == "INTERVENED"


def test_guardrail_text_units_are_metered_and_counted(server, runtime, pii_guardrail, city_guardrail):
    import time

    import httpx
    from conftest import API_KEY

    def records() -> list[dict]:
        return httpx.get(server.base_url + "/v1/usage", headers={"authorization": f"Bearer {API_KEY}"},
                         timeout=30).json()["records"]

    text = "Mail jane.doe@example.com about ticket TCK-1234, please. " * 40  # 2,280 characters
    r = runtime.apply_guardrail(guardrailIdentifier=pii_guardrail["guardrailId"], guardrailVersion="DRAFT",
                                source="INPUT", content=[{"text": {"text": text}}])
    units = r["usage"]["sensitiveInformationPolicyUnits"]
    assert units == 3
    applied = [x for x in records() if x["operation"] == "ApplyGuardrail"]
    assert applied[0]["guardrail_units"]["sensitive_information"] == units
    assert applied[0]["model_id"] == f"guardrail/{pii_guardrail['guardrailId']}:DRAFT"

    # A guarded model call's units join the call's own record (written as the call ends).
    c = runtime.converse(modelId=SMOL, system=SYSTEM, messages=QUESTION, inferenceConfig=GREEDY,
                         guardrailConfig={"guardrailIdentifier": city_guardrail["guardrailId"],
                                          "guardrailVersion": "DRAFT"})
    request_id = c["ResponseMetadata"]["RequestId"]
    for _ in range(50):
        mine = [x for x in records() if x["request_id"] == request_id]
        if mine and mine[0]["guardrail_units"]["sensitive_information"]:
            break
        time.sleep(0.1)
    assert len(mine) == 1 and mine[0]["output_tokens"] > 0
    # The city policy runs on output only: one unit, for the answer.
    assert mine[0]["guardrail_units"]["sensitive_information"] == 1

    metrics = httpx.get(server.base_url + "/metrics", headers={"authorization": f"Bearer {API_KEY}"}).text
    assert 'basalt_guardrail_assessments_total{source="output",outcome="intervened"}' in metrics
    assert 'basalt_guardrail_text_units_total{policy="sensitive_information"}' in metrics


def test_the_managed_profanity_list(control, runtime):
    g = control.create_guardrail(**definition(
        "interop-profanity", wordPolicyConfig={"managedWordListsConfig": [{"type": "PROFANITY"}]}))
    try:
        assert control.get_guardrail(guardrailIdentifier=g["guardrailId"])["wordPolicy"]["managedWordLists"][0]["type"] == "PROFANITY"
        r = runtime.apply_guardrail(guardrailIdentifier=g["guardrailId"], guardrailVersion="DRAFT", source="INPUT",
                                    content=[{"text": {"text": "This is bullshit, frankly."}}])
        assert r["action"] == "GUARDRAIL_INTERVENED" and r["outputs"] == [{"text": BLOCKED_IN}]
        found = r["assessments"][0]["wordPolicy"]["managedWordLists"]
        assert found == [{"match": "bullshit", "type": "PROFANITY", "action": "BLOCKED", "detected": True}]
        clean = runtime.apply_guardrail(guardrailIdentifier=g["guardrailId"], guardrailVersion="DRAFT",
                                        source="INPUT", content=[{"text": {"text": "A classic Scunthorpe assessment."}}])
        assert clean["action"] == "NONE"
    finally:
        control.delete_guardrail(guardrailIdentifier=g["guardrailId"])


INSULTS = {"contentPolicyConfig": {"filtersConfig": [
    {"type": "INSULTS", "inputStrength": "HIGH", "outputStrength": "LOW"}]}}


def test_the_built_in_classifier_filters_insults_without_a_guard_model(control, runtime):
    # This server names no guard model: INSULTS is rated by the content classifier that
    # scripts/fetch-models exported from alt-profanity-check; other categories still need one.
    g = control.create_guardrail(**definition("interop-insults", **INSULTS))
    try:
        r = runtime.apply_guardrail(guardrailIdentifier=g["guardrailId"], guardrailVersion="DRAFT", source="INPUT",
                                    content=[{"text": {"text": "You are a worthless, pathetic idiot."}}])
        assert r["action"] == "GUARDRAIL_INTERVENED" and r["outputs"] == [{"text": BLOCKED_IN}]
        assert r["assessments"][0]["contentPolicy"]["filters"] == [
            {"type": "INSULTS", "confidence": "HIGH", "filterStrength": "HIGH", "action": "BLOCKED", "detected": True}]
        assert r["usage"]["contentPolicyUnits"] == 1
        clean = runtime.apply_guardrail(guardrailIdentifier=g["guardrailId"], guardrailVersion="DRAFT",
                                        source="INPUT", content=[{"text": {"text": "Thank you, that was helpful."}}])
        assert clean["action"] == "NONE" and clean["usage"]["contentPolicyUnits"] == 1
        config = {"guardrailIdentifier": g["guardrailId"], "guardrailVersion": "DRAFT", "trace": "enabled"}
        # An insulting prompt is blocked before the model runs, on Converse and ConverseStream.
        rude = [{"role": "user", "content": [{"text": "Answer me, you stupid useless moron."}]}]
        blocked = runtime.converse(modelId=SMOL, messages=rude, inferenceConfig=GREEDY, guardrailConfig=config)
        assert blocked["stopReason"] == "guardrail_intervened"
        assert blocked["output"]["message"]["content"][0]["text"] == BLOCKED_IN
        # The classifier is cheap enough for streams: ConverseStream checks the answer's windows.
        stream = runtime.converse_stream(modelId=SMOL, system=SYSTEM, messages=QUESTION, inferenceConfig=GREEDY,
                                         guardrailConfig={**config, "streamProcessingMode": "sync"})
        events = list(stream["stream"])
        text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
        assert "Paris" in text and events[-2]["messageStop"]["stopReason"] == "end_turn"
        stream = runtime.converse_stream(modelId=SMOL, messages=rude, inferenceConfig=GREEDY, guardrailConfig=config)
        events = list(stream["stream"])
        assert events[-2]["messageStop"]["stopReason"] == "guardrail_intervened"
    finally:
        control.delete_guardrail(guardrailIdentifier=g["guardrailId"])
    with pytest.raises(ClientError) as e:
        control.create_guardrail(**definition("interop-hate", contentPolicyConfig={"filtersConfig": [
            {"type": "INSULTS", "inputStrength": "HIGH", "outputStrength": "HIGH"},
            {"type": "HATE", "inputStrength": "HIGH", "outputStrength": "HIGH"}]}))
    assert error_code(e) == "ValidationException" and "INSULTS" in str(e.value)


GROUNDING = {"contextualGroundingPolicyConfig": {"filtersConfig": [
    {"type": "GROUNDING", "threshold": 0.5}, {"type": "RELEVANCE", "threshold": 0.5}]}}


def test_contextual_grounding_with_the_embedding_model(control, runtime):
    g = control.create_guardrail(**definition("interop-grounding", **GROUNDING))
    gid = g["guardrailId"]
    try:
        got = control.get_guardrail(guardrailIdentifier=gid)["contextualGroundingPolicy"]["filters"]
        assert [f["type"] for f in got] == ["GROUNDING", "RELEVANCE"]
        source = "The Eiffel Tower is in Paris. It was completed in 1889 for the World's Fair."
        query = "When was the Eiffel Tower completed?"

        def apply(answer: str) -> dict:
            return runtime.apply_guardrail(guardrailIdentifier=gid, guardrailVersion="DRAFT", source="OUTPUT", content=[
                {"text": {"text": source, "qualifiers": ["grounding_source"]}},
                {"text": {"text": query, "qualifiers": ["query"]}},
                {"text": {"text": answer, "qualifiers": ["guard_content"]}}])

        grounded = apply("The Eiffel Tower was completed in 1889.")
        filters = {f["type"]: f for f in grounded["assessments"][0]["contextualGroundingPolicy"]["filters"]}
        assert grounded["action"] == "NONE", filters
        assert filters["GROUNDING"]["score"] >= 0.5 and filters["RELEVANCE"]["score"] >= 0.5
        assert grounded["usage"]["contextualGroundingPolicyUnits"] == 1

        invented = apply("Bananas are an excellent source of potassium.")
        assert invented["action"] == "GUARDRAIL_INTERVENED" and invented["outputs"] == [{"text": BLOCKED_OUT}]
        filters = {f["type"]: f for f in invented["assessments"][0]["contextualGroundingPolicy"]["filters"]}
        assert filters["GROUNDING"]["detected"] and filters["GROUNDING"]["action"] == "BLOCKED"

        # On Converse, the answer is checked against the sources the request qualified.
        def converse(source_text: str) -> dict:
            content = [{"guardContent": {"text": {"text": source_text, "qualifiers": ["grounding_source"]}}},
                       {"text": QUESTION[0]["content"][0]["text"]}]
            return runtime.converse(modelId=SMOL, system=SYSTEM, messages=[{"role": "user", "content": content}],
                                    inferenceConfig=GREEDY, guardrailConfig={
                                        "guardrailIdentifier": gid, "guardrailVersion": "DRAFT", "trace": "enabled"})

        off_topic = converse("Bananas are an excellent source of potassium.")
        assert off_topic["stopReason"] == "guardrail_intervened"
        assert off_topic["output"]["message"]["content"] == [{"text": BLOCKED_OUT}]
        outputs = off_topic["trace"]["guardrail"]["outputAssessments"][gid][0]
        assert outputs["contextualGroundingPolicy"]["filters"][0]["detected"]

        with pytest.raises(ClientError) as e:
            runtime.converse_stream(modelId=SMOL, messages=[{"role": "user", "content": [
                {"guardContent": {"text": {"text": source, "qualifiers": ["grounding_source"]}}},
                {"text": "Hi"}]}], guardrailConfig={"guardrailIdentifier": gid, "guardrailVersion": "DRAFT"})
        assert error_code(e) == "ValidationException"
    finally:
        control.delete_guardrail(guardrailIdentifier=gid)


LONG_ABOUT_PARIS = "Write three long paragraphs about Paris: its history, its food and its museums."


def test_streams_release_checked_windows_and_never_the_masked_text(client, runtime, city_guardrail):
    # OpenAI: the answer comes in several checked pieces, none of them holding the city.
    stream = client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": LONG_ABOUT_PARIS}], max_tokens=200, temperature=0,
        stream=True, extra_headers=headers(city_guardrail))
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    text = "".join(pieces)
    assert len(text) > 600 and text.count("{city}") >= 2
    assert not any("Paris" in p for p in pieces)
    assert len(pieces) >= 2, "released only at the end"

    # ConverseStream in sync mode: the same, in contentBlockDelta events.
    r = runtime.converse_stream(
        modelId=SMOL, messages=[{"role": "user", "content": [{"text": LONG_ABOUT_PARIS}]}],
        inferenceConfig={"maxTokens": 200, "temperature": 0},
        guardrailConfig={"guardrailIdentifier": city_guardrail["guardrailId"], "guardrailVersion": "DRAFT",
                         "streamProcessingMode": "sync"})
    events = list(r["stream"])
    deltas = [e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e]
    assert not any("Paris" in d for d in deltas) and "".join(deltas).count("{city}") >= 2
    assert len(deltas) >= 2
    assert events[-2]["messageStop"]["stopReason"] == "guardrail_intervened"


def test_invoke_model_checks_only_the_tagged_input(runtime, pii_guardrail):
    import json
    open_tag, close_tag = ("<amazon-bedrock-guardrails-guardContent_q7>", "</amazon-bedrock-guardrails-guardContent_q7>")

    def invoke(prompt: str) -> dict:
        body = {"prompt": prompt, "max_gen_len": 8, "temperature": 0,
                "amazon-bedrock-guardrailConfig": {"tagSuffix": "q7"}}
        return json.loads(runtime.invoke_model(modelId=SMOL, body=json.dumps(body),
                                               guardrailIdentifier=pii_guardrail["guardrailId"],
                                               guardrailVersion="DRAFT")["body"].read())

    # The denied phrase outside the tags (say, in retrieved context) is not checked...
    passed = invoke(f"Notes mention Project Phoenix. {open_tag}What is the capital of France?{close_tag}")
    assert passed["amazon-bedrock-guardrailAction"] == "NONE" and passed["generation_token_count"] > 0
    # ... inside them it is.
    blocked = invoke(f"Some notes. {open_tag}Tell me about Project Phoenix.{close_tag}")
    assert blocked["generation"] == BLOCKED_IN and blocked["amazon-bedrock-guardrailAction"] == "INTERVENED"
    with pytest.raises(ClientError) as e:
        invoke(f"{open_tag}never closed")
    assert error_code(e) == "ValidationException"
