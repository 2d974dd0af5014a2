#!/usr/bin/env python3
"""Reference images for Basalt's Stable Diffusion fidelity test, made once with diffusers.

Builds a tiny Stable Diffusion pipeline with random weights (fixed torch seed) in diffusers'
own classes, saves it in the diffusers layout Basalt imports, and runs diffusers'
`StableDiffusionPipeline` on it with the same starting latents Basalt draws for a seed
(Basalt's SplitMix64 + Box-Muller noise, reimplemented below). Needs PyTorch, transformers
and diffusers:

    /var/tmp/basalt-oracle/st-venv/bin/pip install diffusers
    /var/tmp/basalt-oracle/st-venv/bin/python scripts/oracle/make_diffusion_fixtures.py

Writes crates/diffusion/tests/fixtures/tiny-sd/ (the model, well under a megabyte) and
crates/diffusion/tests/fixtures/tiny-sd.json (prompts, settings, token ids, and the
reference pixels in [0, 1]). The Rust tests read only those files.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/diffusion/tests/fixtures"
MODEL = OUT / "tiny-sd"
MAX_LEN = 16
SIZE = 32

MASK64 = (1 << 64) - 1


def basalt_noise(seed: int, n: int) -> np.ndarray:
    """basalt_image::noise: SplitMix64 uniforms through Box-Muller, f64 then f32."""
    state = seed & MASK64
    out = np.empty(n, dtype=np.float32)

    def next_uniform() -> float:
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        return ((z >> 11) + 0.5) / float(1 << 53)

    for i in range(n):
        u1, u2 = next_uniform(), next_uniform()
        out[i] = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
    return out


def byte_chars() -> list[str]:
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(0xA1, 0xAC + 1))
        + list(range(0xAE, 0xFF + 1))
    )
    shifted = 0
    chars = []
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + shifted))
            shifted += 1
    return chars


def write_tokenizer(folder: Path) -> CLIPTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    chars = byte_chars()
    merges = ["c a", "ca t</w>", "d o", "do g</w>", "r e", "re d</w>"]
    vocab = chars + [c + "</w>" for c in chars]
    vocab += ["ca", "cat</w>", "do", "dog</w>", "re", "red</w>", "<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_LEN
    )


def main() -> None:
    torch.manual_seed(1234)
    shutil.rmtree(MODEL, ignore_errors=True)
    tokenizer = write_tokenizer(MODEL / "tokenizer")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_LEN,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        attention_head_dim=2,
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=SIZE,
    )
    ddim = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        set_alpha_to_one=False,
        clip_sample=False,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=ddim,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # The weights are stored as half precision (diffusers' `fp16` variant, which Basalt
    # reads too); the reference runs in f32 on exactly those rounded values.
    with torch.no_grad():
        for module in (text_encoder, unet, vae):
            for p in module.parameters():
                p.copy_(p.half().float())
    euler_config = EulerDiscreteScheduler.from_config(
        ddim.config, timestep_spacing="trailing"
    ).config

    cases = []
    for name, scheduler, prompt, negative, seed, steps, guidance in [
        ("ddim-guided", "ddim", "a red cat", "a dog", 42, 4, 7.5),
        ("ddim-unguided", "ddim", "a dog", None, 7, 2, 0.0),
        ("euler-trailing", "euler", "a red dog", None, 3, 2, 1.0),
    ]:
        pipe.scheduler = (
            DDIMScheduler.from_config(ddim.config)
            if scheduler == "ddim"
            else EulerDiscreteScheduler.from_config(euler_config)
        )
        latents = torch.from_numpy(basalt_noise(seed, 4 * (SIZE // 2) ** 2)).reshape(
            1, 4, SIZE // 2, SIZE // 2
        )
        # The pipeline multiplies by the scheduler's initial sigma itself, as Basalt does.
        image = pipe(
            prompt,
            negative_prompt=negative,
            height=SIZE,
            width=SIZE,
            num_inference_steps=steps,
            guidance_scale=guidance,
            latents=latents,
            output_type="np",
        ).images[0]
        cases.append(
            {
                "name": name,
                "scheduler": scheduler,
                "prompt": prompt,
                "negative_prompt": negative,
                "seed": seed,
                "steps": steps,
                "guidance": guidance,
                # (height, width, channel) in [0, 1].
                "pixels": [round(float(v), 6) for v in image.reshape(-1)],
            }
        )
    pipe.scheduler = ddim
    pipe.to(torch.float16)
    pipe.save_pretrained(MODEL, safe_serialization=True, variant="fp16")
    # Basalt reads vocab.json and merges.txt; the fast tokenizer's file is not needed.
    (MODEL / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    tokens = {
        text: tokenizer(text, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        for text in ["a red cat", "A  Red\tDOG!", "cat's 42 dogs", "", "red " * 20]
    }
    fixture = {
        "size": SIZE,
        "euler_scheduler_config": dict(euler_config),
        "cases": cases,
        "tokens": tokens,
        "diffusers": __import__("diffusers").__version__,
        "torch": torch.__version__,
    }
    (OUT / "tiny-sd.json").write_text(json.dumps(fixture, indent=1, default=str) + "\n")
    print(f"wrote {MODEL} and {OUT / 'tiny-sd.json'}")


if __name__ == "__main__":
    main()
