"""Stable Diffusion through the real SDKs, on the tiny diffusers pipeline of the fidelity
fixtures (`scripts/oracle/make_diffusion_fixtures.py`): imported with `basalt models import`
into a fresh model store, served, and called with the `openai` SDK's `images.generate` and
boto3's `invoke_model` (Stability and Titan bodies). The pixels must be diffusers' own for
the same seed, prompt, negative prompt, steps and guidance; every image is metered per image
and per step."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from openai import BadRequestError, OpenAI

from conftest import ACCESS_KEY_ID, API_KEY, SECRET_ACCESS_KEY, Server
from test_images import decode_png

TINY_SD = "stability.tiny-sd-test-v1:0"
FIXTURES = Path(__file__).resolve().parents[2] / "crates/diffusion/tests/fixtures"


@pytest.fixture(scope="module")
def sd_server():
    models_dir = tempfile.mkdtemp(prefix="basalt-sd-models-")
    bin_path = os.environ.get("BASALT_BIN", "target/debug/basalt")
    subprocess.run(
        [bin_path, "models", "import", str(FIXTURES / "tiny-sd"), "--id", TINY_SD,
         "--provider", "Stability AI", "--name", "Tiny SD (test)", "--models-dir", models_dir],
        check=True, capture_output=True,
    )
    s = Server(models=[TINY_SD], models_dir=models_dir)
    yield s
    assert s.stop() == 0, s.logs()


@pytest.fixture(scope="module")
def reference():
    return json.loads((FIXTURES / "tiny-sd.json").read_text())


def case(reference, name):
    return next(c for c in reference["cases"] if c["name"] == name)


def assert_matches_diffusers(png: bytes, expected: dict) -> None:
    w, h, px = decode_png(png)
    assert (w, h) == (32, 32)
    want = [round(v * 255) for v in expected["pixels"]]
    # Basalt rounds [-1, 1] to 8 bits as diffusers' numpy_to_pil does; float noise may move
    # a value across a rounding boundary, never further.
    worst = max(abs(a - b) for a, b in zip(px, want))
    assert worst <= 1, f"{expected['name']}: a pixel differs by {worst} levels"


def brt(server):
    return boto3.client("bedrock-runtime", endpoint_url=server.base_url, region_name="us-east-1",
                        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
                        config=Config(retries={"max_attempts": 1}))


def test_openai_images_generate_draws_what_diffusers_draws(sd_server, reference):
    client = OpenAI(base_url=sd_server.base_url + "/v1", api_key=API_KEY, max_retries=0)
    guided = case(reference, "ddim-guided")
    r = client.images.generate(
        model=TINY_SD, prompt=guided["prompt"], size="32x32",
        extra_body={"seed": guided["seed"], "steps": guided["steps"],
                    "guidance_scale": guided["guidance"], "negative_prompt": guided["negative_prompt"]},
    )
    png = base64.b64decode(r.data[0].b64_json)
    assert_matches_diffusers(png, guided)
    # The same request again is the same image; another seed is another image.
    again = client.images.generate(
        model=TINY_SD, prompt=guided["prompt"], size="32x32",
        extra_body={"seed": guided["seed"], "steps": guided["steps"],
                    "guidance_scale": guided["guidance"], "negative_prompt": guided["negative_prompt"]},
    )
    assert base64.b64decode(again.data[0].b64_json) == png
    unguided = case(reference, "ddim-unguided")
    r = client.images.generate(
        model=TINY_SD, prompt=unguided["prompt"], n=2,
        extra_body={"seed": unguided["seed"], "steps": unguided["steps"], "guidance_scale": 0.0},
    )
    first, second = (base64.b64decode(d.b64_json) for d in r.data)
    assert_matches_diffusers(first, unguided)
    assert decode_png(first)[2] != decode_png(second)[2]


def test_bedrock_stability_and_titan_bodies(sd_server, reference):
    guided = case(reference, "ddim-guided")
    body = {
        "text_prompts": [{"text": guided["prompt"], "weight": 1.0},
                         {"text": guided["negative_prompt"], "weight": -1.0}],
        "seed": guided["seed"], "steps": guided["steps"], "cfg_scale": guided["guidance"],
        "width": 32, "height": 32,
    }
    out = json.loads(brt(sd_server).invoke_model(modelId=TINY_SD, body=json.dumps(body))["body"].read())
    art = out["artifacts"][0]
    assert out["result"] == "success" and art["seed"] == guided["seed"]
    assert_matches_diffusers(base64.b64decode(art["base64"]), guided)

    titan = json.loads(brt(sd_server).invoke_model(modelId=TINY_SD, body=json.dumps({
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": guided["prompt"], "negativeText": guided["negative_prompt"]},
        "imageGenerationConfig": {"numberOfImages": 1, "seed": guided["seed"], "cfgScale": guided["guidance"]},
    }))["body"].read())
    w, h, px = decode_png(base64.b64decode(titan["images"][0]))
    assert (w, h) == (32, 32) and max(px) - min(px) > 50


def test_bad_requests_get_the_surfaces_errors(sd_server):
    client = OpenAI(base_url=sd_server.base_url + "/v1", api_key=API_KEY, max_retries=0)
    for extra, size, param in [({}, "30x30", "size"), ({"steps": 0}, "32x32", "steps"),
                               ({"guidance_scale": 99}, "32x32", "cfg_scale")]:
        with pytest.raises(BadRequestError) as e:
            client.images.generate(model=TINY_SD, prompt="a cat", size=size, extra_body=extra)
        assert e.value.body["param"] == param
    with pytest.raises(ClientError) as e:
        brt(sd_server).invoke_model(modelId=TINY_SD, body=json.dumps(
            {"text_prompts": [{"text": "a cat"}], "steps": 500}))
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_images_are_metered_per_image_and_step(sd_server):
    client = OpenAI(base_url=sd_server.base_url + "/v1", api_key=API_KEY, max_retries=0)
    r = client.images.generate(model=TINY_SD, prompt="a red dog", n=2, extra_body={"steps": 3, "seed": 1})
    assert len(r.data) == 2
    out = subprocess.run([sd_server.binary, "usage", "--records", "--data-dir", sd_server.data_dir],
                         capture_output=True, text=True, check=True)
    records = [rec for rec in json.loads(out.stdout)["records"] if rec["model_id"] == TINY_SD]
    # Two images of three steps each: six units, on the request's own record.
    assert any(rec["output_tokens"] == 6 and rec["input_tokens"] == 0 for rec in records), records


def test_a_client_that_leaves_stops_the_generation_and_pays_for_its_steps(sd_server):
    import time

    import httpx

    # 150 steps of the tiny model take several seconds; the client gives up after one.
    with pytest.raises(httpx.TimeoutException):
        httpx.post(sd_server.base_url + "/v1/images/generations",
                   headers={"authorization": f"Bearer {API_KEY}"},
                   json={"model": TINY_SD, "prompt": "a slow cat", "steps": 150, "seed": 99},
                   timeout=1.0)
    deadline = time.time() + 20
    while time.time() < deadline:
        out = subprocess.run([sd_server.binary, "usage", "--records", "--data-dir", sd_server.data_dir],
                             capture_output=True, text=True, check=True)
        cancelled = [r for r in json.loads(out.stdout)["records"]
                     if r["model_id"] == TINY_SD and r["status"] == "cancelled"]
        if cancelled:
            assert 0 < cancelled[0]["output_tokens"] < 150, cancelled
            return
        time.sleep(0.2)
    raise AssertionError("the abandoned generation was never recorded as cancelled")
