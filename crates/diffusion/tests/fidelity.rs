//! Fidelity against diffusers: a tiny random-weight pipeline made by diffusers' own classes
//! and the images diffusers' `StableDiffusionPipeline` drew from it, starting from the
//! latents Basalt draws for the same seed (`scripts/oracle/make_diffusion_fixtures.py`
//! wrote both). Checks the tokenizer's ids, and every pixel of DDIM with and without
//! classifier-free guidance and of Euler with trailing timesteps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use basalt_diffusion::{ClipTokenizer, Defaults, StableDiffusion};
use basalt_image::{ImageJob, Step};
use serde_json::Value;

fn fixtures() -> PathBuf {
    // The package directory as cargo gives it when it runs the test, not as compiled in: a
    // build directory shared by several checkouts can hold a binary compiled in another.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/fixtures")
}

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("tiny-sd.json")).unwrap())
        .unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn token_ids_match_clip_tokenizer() {
    let f = fixture();
    let tokenizer = ClipTokenizer::load(&fixtures().join("tiny-sd/tokenizer"), 16).unwrap();
    for (text, ids) in f["tokens"].as_object().unwrap() {
        let expected: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tokenizer.encode(text).ids, expected, "{text:?}");
    }
}

#[test]
fn images_match_diffusers() {
    let f = fixture();
    let size = f["size"].as_u64().unwrap() as u32;
    // The Euler case needs the model with diffusers' Euler scheduler config.
    let euler_dir = std::env::temp_dir().join(format!("basalt-sd-euler-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&euler_dir);
    copy_tree(&fixtures().join("tiny-sd"), &euler_dir);
    std::fs::write(
        euler_dir.join("scheduler/scheduler_config.json"),
        f["euler_scheduler_config"].to_string(),
    )
    .unwrap();
    let ddim = StableDiffusion::load(&fixtures().join("tiny-sd"), Defaults::default()).unwrap();
    let euler = StableDiffusion::load(&euler_dir, Defaults::default()).unwrap();

    for case in f["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let model = if case["scheduler"] == "ddim" {
            &ddim
        } else {
            &euler
        };
        let job = ImageJob {
            negative_prompt: case["negative_prompt"].as_str().map(str::to_string),
            steps: Some(case["steps"].as_u64().unwrap() as u32),
            guidance: Some(case["guidance"].as_f64().unwrap() as f32),
            ..ImageJob::new(
                case["prompt"].as_str().unwrap(),
                case["seed"].as_u64().unwrap(),
            )
        };
        let (w, h, planes) = model.run(&job, &mut |_, _| Step::Continue).unwrap();
        assert_eq!((w, h), (size, size));
        let expected = case["pixels"].as_array().unwrap();
        assert_eq!(expected.len(), (w * h * 3) as usize);
        let (mut worst, mut total) = (0f32, 0f32);
        for (i, want) in expected.iter().enumerate() {
            let (pixel, channel) = (i / 3, i % 3);
            let got = ((planes[channel][pixel] + 1.0) / 2.0).clamp(0.0, 1.0);
            let diff = (got - want.as_f64().unwrap() as f32).abs();
            worst = worst.max(diff);
            total += diff;
        }
        let mean = total / expected.len() as f32;
        eprintln!("{name}: pixel difference worst {worst:.2e}, mean {mean:.2e}");
        // f32 rounding differences between PyTorch and candle, amplified by the first
        // Euler step's sigma (14.6) and the VAE; a wrong formula shows up as 1e-2 or more.
        // One 8-bit level is 3.9e-3.
        assert!(
            worst < 3e-3 && mean < 3e-4,
            "{name}: worst {worst}, mean {mean}"
        );
    }
    let _ = std::fs::remove_dir_all(&euler_dir);
}
