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
