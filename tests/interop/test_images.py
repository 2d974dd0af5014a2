"""Image generation through the real SDKs: the `openai` SDK's `images.generate` and boto3's
`invoke_model` with the Amazon Titan image body and the Stability body, on the DCGAN face
model. Every image is a valid PNG whose pixels are not constant and differ between seeds."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import boto3
from botocore.config import Config

from conftest import ACCESS_KEY_ID, DCGAN, SECRET_ACCESS_KEY


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and raw RGB of an 8-bit RGB PNG with unfiltered rows (checks CRCs)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    row = width * 3 + 1
    assert len(raw) == row * height
    return width, height, b"".join(raw[i * row + 1:(i + 1) * row] for i in range(height))


def test_openai_images_generate(client):
    r = client.images.generate(model=DCGAN, prompt="a face", n=2, size="128x128", extra_body={"seed": 11})
    images = [decode_png(base64.b64decode(d.b64_json)) for d in r.data]
    for w, h, px in images:
        assert (w, h) == (128, 128)
        assert max(px) - min(px) > 50
    assert images[0][2] != images[1][2]
    again = client.images.generate(model=DCGAN, prompt="a face", size="128x128", extra_body={"seed": 11})
    assert decode_png(base64.b64decode(again.data[0].b64_json))[2] == images[0][2]


def test_bedrock_titan_and_stability_bodies(server):
    brt = boto3.client("bedrock-runtime", endpoint_url=server.base_url, region_name="us-east-1",
                       aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
                       config=Config(retries={"max_attempts": 1}))
    titan = json.loads(brt.invoke_model(modelId=DCGAN, body=json.dumps({
        "taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a face"},
        "imageGenerationConfig": {"numberOfImages": 2, "width": 64, "height": 64, "seed": 5, "cfgScale": 8.0},
    }))["body"].read())
    a, b = (decode_png(base64.b64decode(i)) for i in titan["images"])
    assert a[2] != b[2] and max(a[2]) - min(a[2]) > 50
    stability = json.loads(brt.invoke_model(modelId=DCGAN, body=json.dumps({
        "text_prompts": [{"text": "a face", "weight": 1.0}], "seed": 5, "cfg_scale": 7, "steps": 30,
    }))["body"].read())
    art = stability["artifacts"][0]
    assert stability["result"] == "success" and art["finishReason"] == "SUCCESS" and art["seed"] == 5
    assert decode_png(base64.b64decode(art["base64"]))[2] == a[2]
