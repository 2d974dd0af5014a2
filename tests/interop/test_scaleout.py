"""Many Basalt replicas acting as one platform: three `basalt serve` processes sharing one
PostgreSQL database (tenants, keys, grants, quotas, usage) and one Redis (quota counts),
driven through the real OpenAI SDK and plain HTTP the way a load balancer would spread
clients over them.

PostgreSQL and Redis come from `scripts/with-services` (which `make test` runs the suite
under): real servers on loopback ports, thrown away after. Each test module gets a database
of its own.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import subprocess
import time

import httpx
import openai
import pytest

import boto3
from botocore.config import Config

from conftest import GEMMA, SMOL, Server, free_port

ADMIN = "adm-scaleout-51b2"
SECRET_KEY = "5e" * 32
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "user", "content": "Write a long story about a lighthouse."}]


def services() -> tuple[str, str]:
    pg, redis = os.environ.get("BASALT_TEST_POSTGRES_URL"), os.environ.get("BASALT_TEST_REDIS_URL")
    if not (pg and redis):
        if os.environ.get("BASALT_REQUIRE_SERVICES"):
            pytest.fail("BASALT_REQUIRE_SERVICES is set but PostgreSQL/Redis are not: run under scripts/with-services")
        pytest.skip("no PostgreSQL and Redis (run under scripts/with-services)")
    return pg, redis


def fresh_database(admin_url: str) -> str:
    name = f"basalt_{secrets.token_hex(5)}"
    subprocess.run(["psql", admin_url, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    return admin_url.rsplit("/", 1)[0] + "/" + name


def replica(name: str, database: str, redis: str, *extra: str, models: list[str] | None = None) -> Server:
    return Server(models=models or [SMOL], args=[
        "--admin-token", ADMIN, "--database-url", database, "--redis-url", redis,
        "--replica-id", name, "--secret-key", SECRET_KEY, *extra])


def admin(server: Server, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(method, server.base_url + path, json=body,
                         headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)


def oai(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=120)


def new_tenant(server: Server, name: str) -> str:
    """A tenant that may use SmolLM2, and a key of it."""
    assert admin(server, "POST", "/admin/tenants", {"name": name, "models": [SMOL]}).status_code == 201
    return admin(server, "POST", f"/admin/tenants/{name}/keys").json()["key"]


@pytest.fixture(scope="module")
def cluster():
    pg, redis = services()
    database = fresh_database(pg)
    replicas = []
    try:
        for name in ("a", "b"):
            replicas.append(replica(name, database, redis))
        # Only C holds Gemma.
        replicas.append(replica("c", database, redis, models=[SMOL, GEMMA]))
        yield {"replicas": replicas, "database": database, "redis": redis}
    finally:
        for r in replicas:
            r.stop()


def test_replicas_see_each_other(cluster):
    a, b, c = cluster["replicas"]
    seen = wait_for_replicas(b, {"a", "b", "c"})
    assert {r["id"] for r in seen} == {"a", "b", "c"}, seen
    by_id = {r["id"]: r for r in seen}
    assert by_id["a"]["address"] == a.base_url
    assert SMOL in by_id["c"]["models"]


def test_a_model_only_one_replica_holds_is_served_through_any(cluster):
    a, b, c = cluster["replicas"]
    assert admin(a, "POST", "/admin/tenants", {"name": "far", "models": ["*"]}).status_code == 201
    key = admin(a, "POST", "/admin/tenants/far/keys").json()["key"]
    pair = admin(a, "POST", "/admin/tenants/far/access-keys").json()
    wait_for_replicas(a, {"a", "b", "c"})
    # Streamed through A, token by token, from C.
    prompt = "The capital of France is"
    direct = oai(c, key).completions.create(model=GEMMA, prompt=prompt, max_tokens=8, temperature=0)
    chunks = list(oai(a, key).completions.create(
        model=GEMMA, prompt=prompt, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == direct.choices[0].text
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].text]) > 1
    assert chunks[-1].usage.completion_tokens == direct.usage.completion_tokens
    # A SigV4-signed Bedrock stream through B: the signature still verifies on C.
    runtime = boto3.client("bedrock-runtime", endpoint_url=b.base_url, region_name="us-east-1",
                           aws_access_key_id=pair["access_key_id"],
                           aws_secret_access_key=pair["secret_access_key"],
                           config=Config(retries={"max_attempts": 1}, read_timeout=120))
    body = json.dumps({"prompt": prompt, "max_gen_len": 8, "temperature": 0})
    events = runtime.invoke_model_with_response_stream(modelId=GEMMA, body=body)["body"]
    streamed = "".join(json.loads(e["chunk"]["bytes"])["generation"] for e in events)
    assert streamed == direct.choices[0].text
    # Bedrock's OpenAI-compatible path, SigV4-signed, through A: forwarded with the path
    # the client signed (prefix included), so C verifies the signature.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = a.base_url + "/openai/v1/completions"
    payload = json.dumps({"model": GEMMA, "prompt": prompt, "max_tokens": 8, "temperature": 0})
    signed = AWSRequest(method="POST", url=url, data=payload, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(pair["access_key_id"], pair["secret_access_key"]), "bedrock", "us-east-1").add_auth(signed)
    r = httpx.post(url, content=payload, headers=dict(signed.headers.items()), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == direct.choices[0].text
    # Metered once, by the replica that served it.
    records = admin(a, "GET", "/admin/usage?tenant=far").json()["records"]
    assert len(records) == 4 and {r["model_id"] for r in records} == {GEMMA}
    # Every replica lists every model the platform serves, whoever holds it.
    assert GEMMA in {m.id for m in oai(a, key).models.list()}
    assert oai(b, key).models.retrieve(GEMMA).owned_by == "Google"
    control = boto3.client("bedrock", endpoint_url=a.base_url, region_name="us-east-1",
                           aws_access_key_id=pair["access_key_id"],
                           aws_secret_access_key=pair["secret_access_key"])
    listed = {m["modelId"] for m in control.list_foundation_models()["modelSummaries"]}
    assert {SMOL, GEMMA} <= listed
    assert control.get_foundation_model(modelIdentifier=GEMMA)["modelDetails"]["providerName"]
    # A model no replica holds is still an ordinary unknown model.
    with pytest.raises(openai.NotFoundError):
        oai(a, key).chat.completions.create(model="nobody.has-this-v1:0", messages=QUESTION, max_tokens=1)


def test_a_dead_replica_in_the_registry_is_passed_over(cluster):
    """A replica killed a moment ago is still in the registry (until its heartbeat times
    out): a request it was chosen for goes to another replica serving the model."""
    a, _, c = cluster["replicas"]
    assert admin(a, "POST", "/admin/tenants", {"name": "passover", "models": ["*"]}).status_code == 201
    key = admin(a, "POST", "/admin/tenants/passover/keys").json()["key"]
    # "0-gone" sorts before "c": at equal load A tries it first.
    gone = replica("0-gone", cluster["database"], cluster["redis"], models=[SMOL, GEMMA])
    try:
        wait_for_replicas(a, {"0-gone", "c"})
        time.sleep(2.5)  # A's next heartbeat reads the registry with it in
        gone.proc.kill()
        gone.proc.wait()
        r = oai(a, key).completions.create(model=GEMMA, prompt="The capital of France is", max_tokens=2)
        assert r.choices[0].text
        assert "forwarding failed" in a.logs()
    finally:
        if gone.proc.poll() is None:
            gone.proc.kill()


def wait_for_replicas(server: Server, ids: set[str]) -> list[dict]:
    deadline = time.time() + 10
    while True:
        seen = admin(server, "GET", "/admin/replicas").json()["replicas"]
        if {r["id"] for r in seen} >= ids or time.time() > deadline:
            return seen
        time.sleep(0.2)


def test_an_rpm_quota_holds_exactly_across_replicas(cluster):
    replicas = cluster["replicas"]
    key = new_tenant(replicas[0], "quota")
    # Set through another replica than the one that created the tenant.
    r = admin(replicas[1], "PUT", f"/admin/tenants/quota/quotas/{SMOL}", {"requests_per_minute": 10})
    assert r.status_code == 204

    def call(i):
        server = replicas[i % 3]
        return httpx.post(server.base_url + "/v1/chat/completions", timeout=120,
                          headers={"authorization": f"Bearer {key}"},
                          json={"model": SMOL, "messages": QUESTION, "max_tokens": 1})

    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        responses = list(pool.map(call, range(30)))
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 10 and codes.count(429) == 20, codes
    # Each replica refused some: the limit is one, not three of ten.
    refused_on = {i % 3 for i, r in enumerate(responses) if r.status_code == 429}
    assert refused_on == {0, 1, 2}
    throttled = next(r for r in responses if r.status_code == 429)
    assert "10 requests per minute" in throttled.json()["error"]["message"]
    assert int(throttled.headers["retry-after"]) >= 1


def test_a_key_revoked_on_one_replica_is_refused_by_all_within_a_second(cluster):
    a, b, c = cluster["replicas"]
    key = new_tenant(a, "revoke")
    key_id = admin(a, "GET", "/admin/tenants/revoke/keys").json()["keys"][0]["id"]
    headers = {"authorization": f"Bearer {key}"}
    # B and C have the key cached as valid.
    for server in (b, c):
        assert httpx.get(server.base_url + "/v1/models", headers=headers).status_code == 200
    assert admin(a, "DELETE", f"/admin/tenants/revoke/keys/{key_id}").status_code == 204
    revoked_at = time.monotonic()
    pending = {b.base_url, c.base_url}
    while pending and time.monotonic() - revoked_at < 1.0:
        for url in list(pending):
            if httpx.get(url + "/v1/models", headers=headers).status_code == 401:
                pending.discard(url)
        time.sleep(0.02)
    assert not pending, f"still accepted after a second by {pending}"


def test_usage_from_any_replica_is_the_sum_of_all(cluster):
    replicas = cluster["replicas"]
    key = new_tenant(replicas[2], "meter")
    served = {}
    for i, server in enumerate(replicas):
        for _ in range(i + 1):  # 1, 2 and 3 requests
            r = oai(server, key).chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=3)
            served[r.id] = r.usage
    expected_tokens = sum(u.prompt_tokens + u.completion_tokens for u in served.values())
    for server in replicas:
        usage = admin(server, "GET", "/admin/usage?tenant=meter").json()
        assert usage["totals"]["requests"] == 6
        totals = usage["totals"]
        assert totals["input_tokens"] + totals["output_tokens"] == expected_tokens
        assert {r["request_id"] for r in usage["records"]} == set(served)


def test_killing_a_replica_under_load_loses_nothing_the_others_answered(cluster):
    a, _, c = cluster["replicas"]
    b = replica("b-doomed", cluster["database"], cluster["redis"])
    try:
        key = new_tenant(a, "crash")
        answered: list[str] = []
        stop = time.time() + 5.0

        def worker(server):
            client = oai(server, key)
            while time.time() < stop:
                try:
                    r = client.chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=3)
                except Exception:
                    if server is b:
                        return  # b is the one that dies
                    raise
                answered.append(r.id)

        # A stream in flight on B when it dies: metered as far as B got, marked interrupted.
        stream = oai(b, key).chat.completions.create(model=SMOL, messages=LONG, max_tokens=400, stream=True)
        doomed = next(iter(stream)).id
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(worker, s) for s in (a, b, c, a, b, c)]
            time.sleep(2.0)
            b.proc.kill()  # SIGKILL: B flushes nothing
            b.proc.wait()
            for f in futures:
                f.result()  # A's and C's workers never failed
        after = oai(a, key).chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=2)
        answered.append(after.id)
        assert len(answered) >= 6
        # A survivor's heartbeat notices B stopped and marks its unfinished requests.
        deadline = time.time() + 30
        while time.time() < deadline:
            records = admin(c, "GET", "/admin/usage?tenant=crash&limit=10000").json()["records"]
            status = {r["request_id"]: r["status"] for r in records}
            if status.get(doomed) == "interrupted":
                break
            time.sleep(0.5)
        assert status.get(doomed) == "interrupted", status.get(doomed)
        assert not [r for r in records if r["status"] == "in_progress"]
        missing = [r for r in answered if r not in status]
        assert not missing, f"{len(missing)} answered requests missing from usage"
        doomed_record = next(r for r in records if r["request_id"] == doomed)
        assert doomed_record["input_tokens"] > 10
    finally:
        if b.proc.poll() is None:
            b.proc.kill()


def test_without_redis_quotas_fail_closed_or_open_as_chosen(cluster):
    a = cluster["replicas"][0]
    key = new_tenant(a, "redisless")
    assert admin(a, "PUT", f"/admin/tenants/redisless/quotas/{SMOL}", {"requests_per_minute": 100}).status_code == 204
    nowhere = f"redis://127.0.0.1:{free_port()}"
    closed = replica("closed", cluster["database"], nowhere)
    opened = replica("open", cluster["database"], nowhere, "--redis-fail-open")
    try:
        r = httpx.post(closed.base_url + "/v1/chat/completions", timeout=60,
                       headers={"authorization": f"Bearer {key}"},
                       json={"model": SMOL, "messages": QUESTION, "max_tokens": 1})
        assert r.status_code == 503, r.text
        assert "quota service" in r.json()["error"]["message"]
        assert int(r.headers["retry-after"]) >= 1
        # Bedrock clients see their own exception.
        r = httpx.post(f"{closed.base_url}/model/{SMOL}/converse", timeout=60,
                       headers={"authorization": f"Bearer {key}"},
                       json={"messages": [{"role": "user", "content": [{"text": "hi"}]}],
                             "inferenceConfig": {"maxTokens": 1}})
        assert r.status_code == 503 and r.headers["x-amzn-errortype"] == "ServiceUnavailableException"
        reply = oai(opened, key).chat.completions.create(model=SMOL, messages=QUESTION, max_tokens=1)
        assert reply.choices[0].message.content is not None
        assert "cannot be reached" in opened.logs()
    finally:
        closed.stop()
        opened.stop()


def test_without_redis_the_database_counts_quotas_exactly(cluster):
    """Replicas sharing PostgreSQL but no Redis still hold a limit together."""
    pg, _ = services()
    database = fresh_database(pg)
    pair = []
    try:
        for name in ("x", "y"):
            pair.append(Server(models=[SMOL], args=[
                "--admin-token", ADMIN, "--database-url", database, "--replica-id", name,
                "--secret-key", SECRET_KEY]))
        x, y = pair
        key = new_tenant(x, "dbquota")
        assert admin(y, "PUT", f"/admin/tenants/dbquota/quotas/{SMOL}", {"requests_per_minute": 5}).status_code == 204

        def call(i):
            return httpx.post(pair[i % 2].base_url + "/v1/chat/completions", timeout=120,
                              headers={"authorization": f"Bearer {key}"},
                              json={"model": SMOL, "messages": QUESTION, "max_tokens": 1})

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            codes = [r.status_code for r in pool.map(call, range(16))]
        assert codes.count(200) == 5 and codes.count(429) == 11, codes
        assert "counted in the shared database" in x.logs()
    finally:
        for s in pair:
            s.stop()
