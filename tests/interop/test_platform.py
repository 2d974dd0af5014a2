"""The multi-tenant platform through the real SDKs: tenants and keys from the admin API,
rejection of missing, revoked, expired and wrong credentials on every surface, per-tenant
model access, exact metering of complete and cancelled streams, usage isolation, quotas
under parallel load, and a database that survives `kill -9` during load."""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import subprocess
import time

import anthropic
import boto3
import httpx
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import DCGAN, GEMMA, MINILM, SMOL, Server

ADMIN = "adm-interop-7d1c"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "user", "content": "Write a long story about a lighthouse."}]


def admin(server: Server, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(method, server.base_url + path, json=body,
                         headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)


@pytest.fixture(scope="module")
def platform():
    s = Server(args=["--admin-token", ADMIN])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tenants(platform):
    """alpha may use SmolLM2 only; beta every model."""
    assert admin(platform, "POST", "/admin/tenants", {"name": "alpha", "models": [SMOL]}).status_code == 201
    assert admin(platform, "POST", "/admin/tenants", {"name": "beta", "models": ["*"]}).status_code == 201
    key = lambda t, body=None: admin(platform, "POST", f"/admin/tenants/{t}/keys", body or {"name": "k"}).json()
    revoked = key("alpha")
    assert admin(platform, "DELETE", f"/admin/tenants/alpha/keys/{revoked['id']}").status_code == 204
    expired = key("alpha", {"name": "short", "expires_at": int(time.time()) + 1})
    aws = admin(platform, "POST", "/admin/tenants/alpha/access-keys").json()
    revoked_aws = admin(platform, "POST", "/admin/tenants/alpha/access-keys").json()
    admin(platform, "DELETE", f"/admin/tenants/alpha/access-keys/{revoked_aws['access_key_id']}")
    time.sleep(1.2)  # let the short-lived key expire
    return {
        "alpha": key("alpha")["key"], "beta": key("beta")["key"], "revoked": revoked["key"],
        "expired": expired["key"], "aws": aws, "revoked_aws": revoked_aws,
    }


def oai(server, key):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=120)


def claude(server, key):
    return anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)


def bedrock(server, key_id, secret, service="bedrock-runtime"):
    return boto3.client(service, endpoint_url=server.base_url, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}, read_timeout=120))


def test_the_admin_api_needs_its_token(platform):
    assert httpx.get(platform.base_url + "/admin/tenants").status_code == 401
    assert httpx.get(platform.base_url + "/admin/tenants", headers={"authorization": "Bearer nope"}).status_code == 401
    assert admin(platform, "GET", "/admin/tenants").status_code == 200


def test_bad_credentials_are_rejected_on_every_surface(platform, tenants):
    for key in ["", "bsk-not-a-key", tenants["revoked"], tenants["expired"]]:
        with pytest.raises(openai.AuthenticationError):
            oai(platform, key or "x").chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=2)
        with pytest.raises(anthropic.AuthenticationError):
            claude(platform, key or "x").messages.create(model=SMOL, max_tokens=2, messages=QUESTION)
    # Bedrock: no credentials at all, a wrong secret, a revoked access key.
    r = httpx.post(f"{platform.base_url}/model/{SMOL}/converse", json={"messages": []})
    assert r.status_code == 403 and r.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    aws = tenants["aws"]
    for key_id, secret, code in [
        (aws["access_key_id"], "wrong-secret", "InvalidSignatureException"),
        (tenants["revoked_aws"]["access_key_id"], tenants["revoked_aws"]["secret_access_key"], "UnrecognizedClientException"),
    ]:
        with pytest.raises(ClientError) as e:
            bedrock(platform, key_id, secret).converse(
                modelId=SMOL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
        assert e.value.response["Error"]["Code"] == code
    # And the good ones work.
    r = bedrock(platform, aws["access_key_id"], aws["secret_access_key"]).converse(
        modelId=SMOL, messages=[{"role": "user", "content": [{"text": "hi"}]}], inferenceConfig={"maxTokens": 2})
    assert r["usage"]["outputTokens"] == 2


def test_model_access_is_per_tenant(platform, tenants):
    alpha, beta = tenants["alpha"], tenants["beta"]
    assert [m.id for m in oai(platform, alpha).models.list()] == [SMOL]
    assert {m.id for m in oai(platform, beta).models.list()} == {SMOL, GEMMA, MINILM, DCGAN}
    with pytest.raises(openai.PermissionDeniedError):
        oai(platform, alpha).completions.create(model=GEMMA, prompt="Hello", max_tokens=2)
    with pytest.raises(anthropic.PermissionDeniedError):
        claude(platform, alpha).messages.create(model=GEMMA, max_tokens=2, messages=QUESTION)
    aws = tenants["aws"]
    with pytest.raises(ClientError) as e:
        bedrock(platform, aws["access_key_id"], aws["secret_access_key"]).invoke_model(
            modelId=GEMMA, body=json.dumps({"prompt": "Hello", "max_gen_len": 2}))
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    listed = bedrock(platform, aws["access_key_id"], aws["secret_access_key"], "bedrock").list_foundation_models()
    assert [m["modelId"] for m in listed["modelSummaries"]] == [SMOL]
    # beta may use the base model.
    assert oai(platform, beta).completions.create(model=GEMMA, prompt="Hello", max_tokens=2).usage.completion_tokens == 2


def usage_of(platform, key, request_id, timeout=15.0) -> dict:
    """The tenant's own final usage record for a request (it is `in_progress` from admission
    until the request ends; metering of a cancelled stream lands moments after the client
    leaves)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = httpx.get(platform.base_url + "/v1/usage", headers={"authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200, r.text
        for rec in r.json()["records"]:
            if rec["request_id"] == request_id and rec["status"] != "in_progress":
                return rec
        time.sleep(0.2)
    raise AssertionError(f"no usage record for {request_id}")


def test_metering_is_exact_for_complete_and_cancelled_streams(platform, tenants):
    key = tenants["beta"]
    # OpenAI, complete: the usage chunk and the record agree, and the answer was already in
    # the store when the response ended.
    stream = oai(platform, key).chat.completions.create(
        model=SMOL, messages=QUESTION, max_tokens=12, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    rec = usage_of(platform, key, chunks[0].id, timeout=0.5)
    assert (rec["input_tokens"], rec["output_tokens"], rec["status"]) == (
        chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens, "ok")
    assert rec["surface"] == "openai" and rec["time_to_first_token_ms"] is not None

    # OpenAI, cancelled after three chunks: billed for what the engine computed.
    stream = oai(platform, key).chat.completions.create(model=SMOL, messages=LONG, max_tokens=300, stream=True)
    seen = []
    for c in stream:
        seen.append(c)
        if len(seen) == 4:
            break
    stream.close()
    rec = usage_of(platform, key, seen[0].id)
    assert rec["status"] == "cancelled"
    assert 3 <= rec["output_tokens"] < 300

    # Anthropic, complete and cancelled.
    with claude(platform, key).messages.stream(model=SMOL, max_tokens=10, messages=QUESTION) as s:
        final = s.get_final_message()
    rec = usage_of(platform, key, final.id, timeout=0.5)
    assert (rec["input_tokens"], rec["output_tokens"]) == (final.usage.input_tokens, final.usage.output_tokens)
    with claude(platform, key).messages.stream(model=SMOL, max_tokens=300, messages=LONG) as s:
        events = iter(s)
        first = next(events)
        msg_id = first.message.id
        for _ in range(4):
            next(events)
    rec = usage_of(platform, key, msg_id)
    assert rec["status"] == "cancelled" and 1 <= rec["output_tokens"] < 300

    # Bedrock, complete and cancelled (the request id is boto3's RequestId).
    aws_keys = admin(platform, "POST", "/admin/tenants/beta/access-keys").json()
    brt = bedrock(platform, aws_keys["access_key_id"], aws_keys["secret_access_key"])
    r = brt.converse_stream(modelId=SMOL, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
                            inferenceConfig={"maxTokens": 10})
    events = list(r["stream"])
    rec = usage_of(platform, key, r["ResponseMetadata"]["RequestId"], timeout=0.5)
    assert rec["output_tokens"] == events[-1]["metadata"]["usage"]["outputTokens"]
    assert rec["operation"] == "ConverseStream"
    r = brt.converse_stream(modelId=SMOL, messages=[{"role": "user", "content": [{"text": "Tell a long story."}]}],
                            inferenceConfig={"maxTokens": 300})
    stream = r["stream"]
    for i, _ in enumerate(stream):
        if i == 4:
            break
    stream.close()
    rec = usage_of(platform, key, r["ResponseMetadata"]["RequestId"])
    assert rec["status"] == "cancelled" and 1 <= rec["output_tokens"] < 300


def test_tenants_see_only_their_own_usage(platform, tenants):
    alpha = oai(platform, tenants["alpha"]).chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=2)
    mine = httpx.get(platform.base_url + "/v1/usage", headers={"authorization": f"Bearer {tenants['alpha']}"}).json()
    theirs = httpx.get(platform.base_url + "/v1/usage", headers={"authorization": f"Bearer {tenants['beta']}"}).json()
    alpha_id = admin(platform, "GET", "/admin/tenants/alpha").json()["id"]
    assert {r["tenant_id"] for r in mine["records"]} == {alpha_id}
    assert alpha.id in {r["request_id"] for r in mine["records"]}
    assert alpha.id not in {r["request_id"] for r in theirs["records"]}
    assert alpha_id not in {r["tenant_id"] for r in theirs["records"]}
    # Asking for another tenant's usage with one's own key is refused.
    r = httpx.get(platform.base_url + f"/v1/usage?tenant={alpha_id}", headers={"authorization": f"Bearer {tenants['beta']}"})
    assert r.status_code == 403
    # The admin sees it, filtered by tenant and model.
    report = admin(platform, "GET", f"/admin/usage?tenant=alpha&model={SMOL}").json()
    assert report["totals"]["requests"] == len(mine["records"]) and report["totals"]["requests"] >= 1


def test_stored_responses_are_each_tenants_own(platform, tenants):
    alpha, beta = oai(platform, tenants["alpha"]), oai(platform, tenants["beta"])
    r = alpha.responses.create(model=SMOL, input="Hello", max_output_tokens=4)
    assert alpha.responses.retrieve(r.id).id == r.id
    # Another tenant's id is not found on every route that takes one, not forbidden.
    for attempt in (lambda: beta.responses.retrieve(r.id),
                    lambda: beta.responses.input_items.list(r.id),
                    lambda: beta.responses.delete(r.id),
                    lambda: beta.responses.create(model=SMOL, input="Hi", previous_response_id=r.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert alpha.responses.retrieve(r.id).id == r.id
    # The usage record of a response carries its id.
    mine = httpx.get(platform.base_url + "/v1/usage", headers={"authorization": f"Bearer {tenants['alpha']}"}).json()
    assert r.id in {u["request_id"] for u in mine["records"]}


def test_files_and_batches_are_each_tenants_own_and_metered_as_batch(platform, tenants):
    alpha, beta = oai(platform, tenants["alpha"]), oai(platform, tenants["beta"])
    line = {"custom_id": "one", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": SMOL, "messages": QUESTION, "max_tokens": 2}}
    f = alpha.files.create(file=("in.jsonl", json.dumps(line).encode() + b"\n"), purpose="batch")
    b = alpha.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    for attempt in (lambda: beta.files.retrieve(f.id), lambda: beta.files.content(f.id),
                    lambda: beta.files.delete(f.id), lambda: beta.batches.retrieve(b.id),
                    lambda: beta.batches.cancel(b.id),
                    lambda: beta.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert f.id not in {x.id for x in beta.files.list()}
    deadline = time.time() + 120
    while (b := alpha.batches.retrieve(b.id)).status != "completed":
        assert time.time() < deadline and b.status not in ("failed", "cancelled"), b
        time.sleep(0.2)
    out = json.loads(alpha.files.content(b.output_file_id).text)
    # The record is in the tenant's usage, marked as batch work.
    mine = httpx.get(platform.base_url + "/v1/usage", headers={"authorization": f"Bearer {tenants['alpha']}"}).json()
    record = next(r for r in mine["records"] if r["request_id"] == out["response"]["request_id"])
    assert record["surface"] == "openai.batch" and record["output_tokens"] == 2


def test_invocation_jobs_read_only_the_tenants_own_buckets(platform, tenants):
    alpha_id = admin(platform, "GET", "/admin/tenants/alpha").json()["id"]
    aws = tenants["aws"]  # alpha's key pair
    alpha = bedrock(platform, aws["access_key_id"], aws["secret_access_key"], "bedrock")
    beta_aws = admin(platform, "POST", "/admin/tenants/beta/access-keys").json()
    beta = bedrock(platform, beta_aws["access_key_id"], beta_aws["secret_access_key"], "bedrock")
    inbox = pathlib.Path(platform.data_dir) / "buckets" / alpha_id / "alpha-in"
    inbox.mkdir(parents=True)
    (inbox / "r.jsonl").write_text(json.dumps({"recordId": "A1", "modelInput": {"prompt": "Hi", "max_gen_len": 2}}) + "\n")
    job = dict(jobName="iso", roleArn="r", modelId=SMOL,
               inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://alpha-in/"}},
               outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://alpha-out/"}})
    arn = alpha.create_model_invocation_job(**job)["jobArn"]
    # The same URI from another tenant names that tenant's (empty) bucket, not alpha's.
    with pytest.raises(ClientError) as e:
        beta.create_model_invocation_job(**job)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    for attempt in (lambda: beta.get_model_invocation_job(jobIdentifier=arn),
                    lambda: beta.stop_model_invocation_job(jobIdentifier=arn)):
        with pytest.raises(ClientError) as e:
            attempt()
        assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert arn not in {j["jobArn"] for j in beta.list_model_invocation_jobs()["invocationJobSummaries"]}
    deadline = time.time() + 120
    while alpha.get_model_invocation_job(jobIdentifier=arn)["status"] not in ("Completed", "PartiallyCompleted"):
        assert time.time() < deadline
        time.sleep(0.2)
    mine = httpx.get(platform.base_url + "/v1/usage", headers={"authorization": f"Bearer {tenants['alpha']}"}).json()
    assert any(r["surface"] == "bedrock.batch" for r in mine["records"])


def test_quotas_hold_under_parallel_load(platform):
    assert admin(platform, "POST", "/admin/tenants", {"name": "gamma", "models": [SMOL]}).status_code == 201
    key = admin(platform, "POST", "/admin/tenants/gamma/keys").json()["key"]
    assert admin(platform, "PUT", f"/admin/tenants/gamma/quotas/{SMOL}", {"requests_per_minute": 4}).status_code == 204

    def call(_):
        return httpx.post(platform.base_url + "/v1/chat/completions", timeout=120,
                          headers={"authorization": f"Bearer {key}"},
                          json={"model": SMOL, "messages": QUESTION, "max_tokens": 2})

    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(call, range(12)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 4 and codes.count(429) == 8, codes
    throttled = next(r for r in responses if r.status_code == 429)
    assert int(throttled.headers["retry-after"]) >= 1
    assert "requests per minute" in throttled.json()["error"]["message"]
    # Bedrock says it its own way.
    admin(platform, "POST", "/admin/tenants/gamma/access-keys")
    r = httpx.post(f"{platform.base_url}/model/{SMOL}/converse", headers={"authorization": f"Bearer {key}"},
                   json={"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
    assert r.status_code == 429 and r.headers["x-amzn-errortype"] == "ThrottlingException"


def test_invocation_logging_is_opt_in(platform, tenants):
    alpha_id = admin(platform, "GET", "/admin/tenants/alpha").json()["id"]
    beta_id = admin(platform, "GET", "/admin/tenants/beta").json()["id"]
    assert admin(platform, "PATCH", "/admin/tenants/alpha", {"log_invocations": True}).json()["log_invocations"]
    r = oai(platform, tenants["alpha"]).chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Remember the word zanzibar."}], max_tokens=4)
    oai(platform, tenants["beta"]).chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Secret word: quokka."}], max_tokens=4)
    logs = pathlib.Path(platform.data_dir) / "invocation-logs"
    lines = [json.loads(l) for f in sorted((logs / alpha_id).glob("*.jsonl")) for l in f.read_text().splitlines()]
    entry = next(e for e in lines if e["requestId"] == r.id)
    assert entry["schemaType"] == "ModelInvocationLog" and entry["operation"] == "chat.completions"
    assert entry["modelId"] == SMOL and entry["accountId"] == alpha_id
    assert "zanzibar" in json.dumps(entry["input"]["inputBodyJson"])
    assert entry["output"]["outputBodyJson"]["choices"][0]["message"]["content"] == r.choices[0].message.content
    assert entry["input"]["inputTokenCount"] == r.usage.prompt_tokens
    assert entry["output"]["outputTokenCount"] == r.usage.completion_tokens
    # Converse's requestMetadata is kept beside the input, as Bedrock's log has it; a flex
    # request is answered (in the background lane), metered as flex, and its tier echoed.
    aws = tenants["aws"]
    flex = bedrock(platform, aws["access_key_id"], aws["secret_access_key"]).converse(
        modelId=SMOL, messages=[{"role": "user", "content": [{"text": "Hi"}]}],
        inferenceConfig={"maxTokens": 2}, requestMetadata={"team": "search"},
        serviceTier={"type": "flex"}, performanceConfig={"latency": "standard"})
    assert flex["serviceTier"] == {"type": "flex"} and flex["performanceConfig"] == {"latency": "standard"}
    flex_id = flex["ResponseMetadata"]["RequestId"]
    lines = [json.loads(l) for f in sorted((logs / alpha_id).glob("*.jsonl")) for l in f.read_text().splitlines()]
    assert next(e for e in lines if e["requestId"] == flex_id)["requestMetadata"] == {"team": "search"}
    mine = httpx.get(platform.base_url + "/v1/usage", headers={"authorization": f"Bearer {tenants['alpha']}"}).json()
    assert next(u for u in mine["records"] if u["request_id"] == flex_id)["surface"] == "bedrock.flex"
    # Tenants that did not opt in leave no text anywhere under the logs.
    assert not (logs / beta_id).exists()
    assert all("quokka" not in f.read_text() for f in logs.rglob("*.jsonl"))
    admin(platform, "PATCH", "/admin/tenants/alpha", {"log_invocations": False})


def test_the_invocation_log_records_what_the_guardrail_returned(platform, tenants):
    alpha = {"authorization": f"Bearer {tenants['alpha']}"}
    alpha_id = admin(platform, "GET", "/admin/tenants/alpha").json()["id"]
    admin(platform, "PATCH", "/admin/tenants/alpha", {"log_invocations": True})
    created = httpx.post(platform.base_url + "/guardrails", headers=alpha, timeout=30, json={
        "name": "logged-city", "blockedInputMessaging": "no", "blockedOutputsMessaging": "no",
        "sensitiveInformationPolicyConfig": {"regexesConfig": [
            {"name": "city", "pattern": "Paris", "action": "ANONYMIZE", "inputEnabled": False}]}})
    gid = created.json()["guardrailId"]
    messages = [{"role": "system", "content": "You are a helpful assistant."}, *QUESTION]
    r = oai(platform, tenants["alpha"]).chat.completions.create(
        model=SMOL, messages=messages, max_tokens=32, temperature=0,
        extra_headers={"X-Amzn-Bedrock-GuardrailIdentifier": gid, "X-Amzn-Bedrock-GuardrailVersion": "DRAFT"})
    assert "{city}" in r.choices[0].message.content
    logs = pathlib.Path(platform.data_dir) / "invocation-logs" / alpha_id
    entry = None
    for _ in range(50):  # a guarded call's log is written once the verdict is in
        lines = [json.loads(l) for f in sorted(logs.glob("*.jsonl")) for l in f.read_text().splitlines()]
        entry = next((e for e in lines if e["requestId"] == r.id), None)
        if entry:
            break
        time.sleep(0.1)
    body = entry["output"]["outputBodyJson"]
    assert body["choices"][0]["message"]["content"] == r.choices[0].message.content
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["amazon-bedrock-guardrailAction"] == "INTERVENED"
    regexes = body["amazon-bedrock-trace"]["guardrail"]["outputAssessments"][gid][0]["sensitiveInformationPolicy"]["regexes"]
    assert regexes[0]["match"] == "Paris"
    admin(platform, "PATCH", "/admin/tenants/alpha", {"log_invocations": False})
    httpx.delete(f"{platform.base_url}/guardrails/{gid}", headers=alpha, timeout=30)


def test_an_operator_enforces_a_guardrail_on_every_call_of_a_tenant(platform, tenants):
    beta = {"authorization": f"Bearer {tenants['beta']}"}
    # beta's own guardrail: the city the model names is masked on output.
    created = httpx.post(platform.base_url + "/guardrails", headers=beta, timeout=30, json={
        "name": "enforced-city", "blockedInputMessaging": "no", "blockedOutputsMessaging": "no",
        "sensitiveInformationPolicyConfig": {"regexesConfig": [
            {"name": "city", "pattern": "Paris", "action": "ANONYMIZE", "inputEnabled": False}]}})
    assert created.status_code == 202, created.text
    gid = created.json()["guardrailId"]
    enforce = {"guardrailIdentifier": gid, "guardrailVersion": "DRAFT"}
    # Only the tenant's own guardrail can be enforced on it.
    assert admin(platform, "PUT", "/admin/tenants/alpha/guardrail", enforce).status_code == 404
    r = admin(platform, "PUT", "/admin/tenants/beta/guardrail", enforce)
    assert r.status_code == 200 and r.json()["enforced_guardrail"] == {"id": gid, "version": "DRAFT"}

    def ask(key: str):
        messages = [{"role": "system", "content": "You are a helpful assistant."}, *QUESTION]
        return oai(platform, key).chat.completions.create(model=SMOL, messages=messages, max_tokens=32,
                                                          temperature=0).choices[0]

    enforced = ask(tenants["beta"])  # the request names no guardrail
    assert "{city}" in enforced.message.content and enforced.finish_reason == "content_filter"
    assert "Paris" in ask(tenants["alpha"]).message.content
    # The enforced guardrail cannot be deleted from under the operator.
    assert httpx.delete(f"{platform.base_url}/guardrails/{gid}", headers=beta, timeout=30).status_code == 400

    assert admin(platform, "DELETE", "/admin/tenants/beta/guardrail").json()["enforced_guardrail"] is None
    assert "Paris" in ask(tenants["beta"]).message.content
    assert httpx.delete(f"{platform.base_url}/guardrails/{gid}", headers=beta, timeout=30).status_code == 202


def test_usage_survives_kill_9_during_load():
    """Every request that got an answer is in the usage records after a `kill -9`."""
    s = Server(args=["--admin-token", ADMIN])
    try:
        assert admin(s, "POST", "/admin/tenants", {"name": "delta", "models": ["*"]}).status_code == 201
        key = admin(s, "POST", "/admin/tenants/delta/keys").json()["key"]
        answered: list[str] = []
        stop = time.time() + 4.0

        def worker(_):
            client = oai(s, key)
            while time.time() < stop:
                try:
                    r = client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=3)
                except Exception:
                    return
                answered.append(r.id)

        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(worker, i) for i in range(6)]
            time.sleep(2.5)
            s.proc.kill()  # SIGKILL: no chance to flush anything
            s.proc.wait()
            for f in futures:
                f.result()
        assert len(answered) >= 3, "the load produced too few answers to mean anything"
        out = subprocess.run([s.binary, "usage", "--records", "--data-dir", s.data_dir],
                             capture_output=True, text=True, check=True)
        recorded = {r["request_id"] for r in json.loads(out.stdout)["records"]}
        missing = [a for a in answered if a not in recorded]
        assert not missing, f"{len(missing)} answered requests missing from usage"
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


def test_requests_in_flight_at_a_crash_are_recorded_as_interrupted():
    """A request is recorded when it is admitted: `kill -9` in the middle of its stream
    leaves an `interrupted` record with its input tokens, not nothing (under-billing)."""
    s = Server(args=["--admin-token", ADMIN])
    try:
        assert admin(s, "POST", "/admin/tenants", {"name": "eps", "models": ["*"]}).status_code == 201
        key = admin(s, "POST", "/admin/tenants/eps/keys").json()["key"]
        stream = oai(s, key).chat.completions.create(model=SMOL, messages=LONG, max_tokens=400,
                                                     stream=True)
        first = next(iter(stream))
        s.proc.kill()  # SIGKILL mid-stream
        s.proc.wait()
        restarted = Server(args=["--admin-token", ADMIN], data_dir=s.data_dir)
        try:
            usage = admin(restarted, "GET", "/admin/usage?tenant=eps").json()
            record = next(r for r in usage["records"] if r["request_id"] == first.id)
            assert record["status"] == "interrupted", record
            assert record["input_tokens"] > 10, record
            assert "interrupted" in restarted.logs()
        finally:
            restarted.stop()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
