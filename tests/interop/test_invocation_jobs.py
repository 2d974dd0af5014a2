"""Bedrock batch inference through boto3's `bedrock` client: a model invocation job over
JSONL records in the tenant's local bucket (InvokeModel and Converse bodies), with Bedrock's
statuses, counts, `<input>.jsonl.out` lines and `manifest.json.out`; bad records failing
alone; stopping; listing; URIs that try to leave the tenant's buckets; and the same job over
an S3-compatible store (moto's server, driven by boto3's `s3` client)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import OPERATOR_KEYS, SMOL
from test_bedrock_boto3 import client, error_code

SYSTEM = [{"text": "You are a helpful assistant."}]


@pytest.fixture(scope="module")
def control(server):
    return client(server, service="bedrock")


def bucket(server, name: str) -> pathlib.Path:
    # The operator keys' tenant is `operator`: its buckets live under the data directory.
    path = pathlib.Path(server.data_dir) / "buckets" / "operator" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait(control, arn: str, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = control.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in ("Completed", "PartiallyCompleted", "Failed", "Stopped"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {arn} still {job['status']}")


def create(control, name: str, input_uri: str, output_uri: str, **extra) -> str:
    return control.create_model_invocation_job(
        jobName=name, roleArn="arn:aws:iam::123456789012:role/batch", modelId=SMOL,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": input_uri, "s3InputFormat": "JSONL"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": output_uri}}, **extra)["jobArn"]


def test_an_invoke_model_job_end_to_end(server, control):
    data = bucket(server, "batch-in")
    records = [{"recordId": f"REC{i:08d}", "modelInput": {"prompt": f"Say the number {i}.", "max_gen_len": 8,
                                                       "temperature": 0}} for i in range(5)]
    lines = [json.dumps(r) for r in records[:3]] + ["{broken", json.dumps({"recordId": "BAD", "modelInput": 7})] \
        + [json.dumps(r) for r in records[3:]]
    (data / "part-1.jsonl").write_text("\n".join(lines) + "\n")
    (data / "part-2.jsonl").write_text(json.dumps({"recordId": "LAST", "modelInput": records[0]["modelInput"]}) + "\n")
    (data / "notes.txt").write_text("not an input file")
    arn = create(control, "interop-invoke", "s3://batch-in/", "s3://batch-out/results/")
    assert arn.startswith("arn:aws:bedrock:us-east-1:") and ":model-invocation-job/" in arn
    job = wait(control, arn)
    assert job["status"] == "PartiallyCompleted", job
    assert (job["totalRecordCount"], job["processedRecordCount"], job["successRecordCount"],
            job["errorRecordCount"]) == (8, 8, 6, 2)
    assert job["jobName"] == "interop-invoke" and job["modelInvocationType"] == "InvokeModel"
    assert job["submitTime"] <= job["endTime"]
    out = bucket(server, "batch-out") / "results" / arn.rsplit("/", 1)[1]
    first = [json.loads(l) for l in (out / "part-1.jsonl.out").read_text().splitlines()]
    assert [r["recordId"] for r in first] == ["REC00000000", "REC00000001", "REC00000002", None, "BAD",
                                              "REC00000003", "REC00000004"]
    assert first[0]["modelInput"] == records[0]["modelInput"]
    assert first[0]["modelOutput"]["generation_token_count"] > 0 and "generation" in first[0]["modelOutput"]
    assert first[3]["error"]["errorCode"] == 400 and "modelOutput" not in first[3]
    second = [json.loads(l) for l in (out / "part-2.jsonl.out").read_text().splitlines()]
    assert second[0]["recordId"] == "LAST" and second[0]["modelOutput"]["generation"] == first[0]["modelOutput"]["generation"]
    manifest = json.loads((out / "manifest.json.out").read_text())
    assert manifest["totalRecordCount"] == 8 and manifest["successRecordCount"] == 6
    assert manifest["errorRecordCount"] == 2 and manifest["outputTokenCount"] > 0 and manifest["inputTokenCount"] > 0
    listed = control.list_model_invocation_jobs(nameContains="interop-invoke")["invocationJobSummaries"]
    assert [j["jobArn"] for j in listed] == [arn]


def test_a_converse_job_and_stopping_one(server, control):
    data = bucket(server, "converse-in")
    records = [{"recordId": f"C{i}", "modelInput": {"system": SYSTEM, "inferenceConfig": {"maxTokens": 12, "temperature": 0},
                                                   "messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]}}
               for i in range(2)]
    (data / "input.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    arn = create(control, "interop-converse", "s3://converse-in/input.jsonl", "s3://converse-out/",
                 modelInvocationType="Converse")
    job = wait(control, arn)
    assert job["status"] == "Completed" and job["successRecordCount"] == 2
    out = bucket(server, "converse-out") / arn.rsplit("/", 1)[1]
    lines = [json.loads(l) for l in (out / "input.jsonl.out").read_text().splitlines()]
    assert "Paris" in lines[0]["modelOutput"]["output"]["message"]["content"][0]["text"]

    long = [{"recordId": f"L{i}", "modelInput": {"prompt": "Tell a long story.", "max_gen_len": 200}} for i in range(40)]
    (bucket(server, "long-in") / "long.jsonl").write_text("\n".join(json.dumps(r) for r in long) + "\n")
    arn = create(control, "interop-stop", "s3://long-in/", "s3://long-out/")
    time.sleep(1)
    control.stop_model_invocation_job(jobIdentifier=arn)
    job = wait(control, arn, timeout=30)
    assert job["status"] == "Stopped" and job["processedRecordCount"] < 40
    with pytest.raises(ClientError) as e:
        control.stop_model_invocation_job(jobIdentifier=arn)
    assert error_code(e) == "ValidationException"


def test_bad_jobs_are_validation_errors(server, control):
    bucket(server, "empty-bucket")
    for input_uri in ["s3://no-such-bucket/in/", "s3://empty-bucket/", "s3://batch-in/../../other/",
                      "https://example.com/x.jsonl", "s3://UPPER/x"]:
        with pytest.raises(ClientError) as e:
            create(control, "interop-bad", input_uri, "s3://batch-out/")
        assert error_code(e) == "ValidationException", input_uri
    with pytest.raises(ClientError) as e:
        control.create_model_invocation_job(
            jobName="interop-bad", roleArn="r", modelId="no-such-model",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://batch-in/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://batch-out/"}})
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        control.get_model_invocation_job(jobIdentifier="abcdefghijkl")
    assert error_code(e) == "ResourceNotFoundException"


def test_a_job_survives_kill_9_of_its_server():
    from conftest import Server
    first = Server(models=[SMOL])
    try:
        bedrock = client(first, service="bedrock")
        data = bucket(first, "resume-in")
        records = [{"recordId": f"K{i:02d}", "modelInput": {"prompt": f"Count from {i}.", "max_gen_len": 24,
                                                          "temperature": 0}} for i in range(24)]
        (data / "k.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
        arn = create(bedrock, "interop-resume", "s3://resume-in/", "s3://resume-out/")
        deadline = time.time() + 120
        while bedrock.get_model_invocation_job(jobIdentifier=arn)["processedRecordCount"] < 3:
            assert time.time() < deadline, "the job made no progress"
            time.sleep(0.1)
    finally:
        first.proc.kill()  # SIGKILL: records in flight are lost mid-generation
        first.proc.wait()
    second = Server(models=[SMOL], data_dir=first.data_dir)
    try:
        job = wait(client(second, service="bedrock"), arn)
        assert job["status"] == "Completed" and job["successRecordCount"] == 24
        out = bucket(second, "resume-out") / arn.rsplit("/", 1)[1] / "k.jsonl.out"
        assert [json.loads(l)["recordId"] for l in out.read_text().splitlines()] == [r["recordId"] for r in records]
    finally:
        assert second.stop() == 0


@pytest.fixture(scope="module")
def s3_endpoint():
    """An S3-compatible server on a loopback port, for as long as this module runs."""
    from conftest import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, "moto's server did not start"
            time.sleep(0.2)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=30)


def test_a_job_over_an_s3_compatible_store(s3_endpoint):
    import boto3
    from conftest import Server
    credentials = {"AWS_ACCESS_KEY_ID": "s3-test-key", "AWS_SECRET_ACCESS_KEY": "s3-test-secret",
                   "AWS_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket="basalt-root")
    records = [{"recordId": f"S{i}", "modelInput": {"prompt": f"Say the number {i}.", "max_gen_len": 8,
                                                   "temperature": 0}} for i in range(3)]
    # The operator keys' tenant is `operator`: its buckets are under `<root prefix>/operator/`.
    s3.put_object(Bucket="basalt-root", Key="jobs/operator/s3-in/records/a.jsonl",
                  Body=("\n".join(json.dumps(r) for r in records) + "\n{broken\n").encode())
    s3.put_object(Bucket="basalt-root", Key="jobs/operator/s3-in/records/skip.txt", Body=b"not input")
    server = Server(models=[SMOL], args=["--buckets", "s3://basalt-root/jobs", *OPERATOR_KEYS],
                    env={**credentials, "AWS_ENDPOINT_URL": s3_endpoint})
    try:
        bedrock = client(server, service="bedrock")
        arn = create(bedrock, "interop-s3", "s3://s3-in/records/", "s3://s3-out/done/")
        job = wait(bedrock, arn)
        assert job["status"] == "PartiallyCompleted", job
        assert (job["successRecordCount"], job["errorRecordCount"]) == (3, 1)
        prefix = f"jobs/operator/s3-out/done/{arn.rsplit('/', 1)[1]}/"
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="basalt-root", Prefix=prefix)["Contents"])
        assert keys == [prefix + "a.jsonl.out", prefix + "manifest.json.out"]
        body = s3.get_object(Bucket="basalt-root", Key=prefix + "a.jsonl.out")["Body"].read().decode()
        lines = [json.loads(l) for l in body.splitlines()]
        assert [l["recordId"] for l in lines] == ["S0", "S1", "S2", None]
        assert all(l["modelOutput"]["generation"] for l in lines[:3]) and lines[3]["error"]["errorCode"] == 400
        manifest = json.loads(s3.get_object(Bucket="basalt-root", Key=prefix + "manifest.json.out")["Body"].read())
        assert manifest["successRecordCount"] == 3 and manifest["errorRecordCount"] == 1
        # Nothing outside the tenant's namespace, nothing that is not there.
        for input_uri in ["s3://s3-in/../../jobs/", "s3://missing-bucket/"]:
            with pytest.raises(ClientError) as e:
                create(bedrock, "interop-s3-bad", input_uri, "s3://s3-out/")
            assert error_code(e) == "ValidationException", input_uri
    finally:
        assert server.stop() == 0, server.logs()
